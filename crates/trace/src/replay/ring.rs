//! Consistent hashing of objects over registries, as the FAST'18 trace player spreads a replay
//! over several registries: each registry owns [`VIRTUAL_NODES`] points on a ring of 64-bit
//! hashes, and an object goes to the owner of the first point at or after its own hash. A
//! point depends only on its registry's name, so removing a registry moves only its objects.

use super::content::hash64;

/// Points per registry: enough that each registry's share stays within a few percent of even.
pub const VIRTUAL_NODES: usize = 160;

/// A ring over a set of registries.
#[derive(Debug, Clone)]
pub struct Ring {
    /// (point, registry index), sorted.
    points: Vec<(u64, usize)>,
    nodes: Vec<String>,
}

impl Ring {
    /// A ring over `nodes` (registry URLs), [`VIRTUAL_NODES`] points each. Panics on no node.
    pub fn new(nodes: Vec<String>) -> Ring {
        Ring::with_virtual_nodes(nodes, VIRTUAL_NODES)
    }

    /// A ring with `virtual_nodes` points per node.
    pub fn with_virtual_nodes(nodes: Vec<String>, virtual_nodes: usize) -> Ring {
        assert!(!nodes.is_empty(), "a ring needs at least one node");
        let mut points: Vec<(u64, usize)> = nodes
            .iter()
            .enumerate()
            .flat_map(|(i, n)| {
                (0..virtual_nodes.max(1)).map(move |v| (hash64(&format!("{n}#{v}")), i))
            })
            .collect();
        // Ties (improbable) go to the smaller name, whatever the order nodes were given in.
        points.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| nodes[a.1].cmp(&nodes[b.1])));
        Ring { points, nodes }
    }

    /// The nodes, as given.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// Index (into [`Ring::nodes`]) of the node that owns `key`.
    pub fn pick(&self, key: &str) -> usize {
        let h = hash64(key);
        let i = self.points.partition_point(|p| p.0 < h);
        self.points[if i == self.points.len() { 0 } else { i }].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("http://127.0.0.1:{}", 5000 + i))
            .collect()
    }

    #[test]
    fn objects_spread_over_every_registry() {
        let ring = Ring::new(names(4));
        let mut per = [0usize; 4];
        for k in 0..20_000 {
            per[ring.pick(&format!("v2/r/blobs/{k:08x}"))] += 1;
        }
        for n in per {
            assert!((3_500..6_500).contains(&n), "{per:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn removing_a_registry_moves_only_its_objects(
            n in 2usize..6,
            removed in 0usize..6,
            // Object paths from numbers: cheaper to draw than strings.
            numbers in proptest::collection::vec(any::<u64>(), 1..100),
        ) {
            let keys: Vec<String> = numbers.iter().map(|n| format!("v2/r/blobs/{n:x}")).collect();
            let removed = removed % n;
            // The rings depend on (n, removed) only: built once, the cases vary the keys.
            static RINGS: std::sync::OnceLock<Vec<(Ring, Ring, Ring)>> = std::sync::OnceLock::new();
            let rings = RINGS.get_or_init(|| {
                (2..6usize)
                    .flat_map(|n| {
                        (0..n).map(move |removed| {
                            let mut rest = names(n);
                            rest.remove(removed);
                            (Ring::new(names(n)), Ring::new(rest), Ring::new(names(n)))
                        })
                    })
                    .collect()
            });
            let at = (2..n).sum::<usize>() + removed;
            let (ring, smaller, again) = &rings[at];
            let all = names(n);
            for k in &keys {
                let before = &all[ring.pick(k)];
                let after = &smaller.nodes()[smaller.pick(k)];
                // Deterministic: the same ring picks the same node.
                prop_assert_eq!(ring.pick(k), again.pick(k));
                if *before != all[removed] {
                    prop_assert_eq!(before, after);
                }
            }
        }
    }
}
