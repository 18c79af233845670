//! Counts in sentences a person reads: "1 manifest", "2 manifests".

/// `n` followed by `one` when it is 1, else by `many`.
pub fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular() {
        assert_eq!(count(1u64, "batch", "batches"), "1 batch");
        assert_eq!(count(0u64, "batch", "batches"), "0 batches");
        assert_eq!(count(2u64, "manifest", "manifests"), "2 manifests");
    }
}
