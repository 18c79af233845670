//! The index's collections, kept small: a repository's links, manifests and tags are sorted
//! vectors of 32-byte keys rather than hash sets of digest strings. A loaded repository of one
//! small image (5 layers, a config, a manifest, a tag) takes about 600 bytes instead of about 2 KB;
//! lookups are binary searches over a repository's own entries.

use std::borrow::Cow;

use ferry_oci::{Digest, MediaType};

/// A digest as the index keeps it: the 32 bytes of a SHA-256 (nearly all content), the parsed
/// digest otherwise.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Sha256([u8; 32]),
    Other(Box<Digest>),
}

impl Key {
    fn of(d: &Digest) -> Key {
        match d.sha256_bytes() {
            Some(b) => Key::Sha256(b),
            None => Key::Other(Box::new(d.clone())),
        }
    }

    fn digest(&self) -> Digest {
        match self {
            Key::Sha256(b) => Digest::from_sha256_bytes(*b),
            Key::Other(d) => (**d).clone(),
        }
    }
}

/// The blobs linked into a repository.
#[derive(Debug, Default)]
pub(crate) struct DigestSet(Vec<Key>);

impl DigestSet {
    pub fn contains(&self, d: &Digest) -> bool {
        self.0.binary_search(&Key::of(d)).is_ok()
    }

    pub fn insert(&mut self, d: Digest) {
        let k = Key::of(&d);
        if let Err(i) = self.0.binary_search(&k) {
            self.0.insert(i, k);
        }
    }

    pub fn remove(&mut self, d: &Digest) {
        if let Ok(i) = self.0.binary_search(&Key::of(d)) {
            self.0.remove(i);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Digest> + '_ {
        self.0.iter().map(Key::digest)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn shrink(&mut self) {
        self.0.shrink_to_fit();
    }
}

/// What the index knows of a stored manifest.
#[derive(Debug, Clone)]
pub(crate) struct ManifestEntry {
    /// The media type it was pushed with; the common ones borrowed, not allocated.
    pub media_type: Cow<'static, str>,
    pub size: u64,
    /// For manifests with a subject: the subject and the descriptor a referrers listing shows.
    pub referrer: Option<Box<(Digest, ferry_oci::Descriptor)>>,
}

impl ManifestEntry {
    pub fn new(media_type: &str, size: u64) -> ManifestEntry {
        const KNOWN: [&str; 4] = [
            MediaType::OCI_MANIFEST,
            MediaType::OCI_INDEX,
            MediaType::DOCKER_MANIFEST,
            MediaType::DOCKER_MANIFEST_LIST,
        ];
        let media_type = match KNOWN.iter().find(|k| **k == media_type) {
            Some(k) => Cow::Borrowed(*k),
            None => Cow::Owned(media_type.to_owned()),
        };
        ManifestEntry {
            media_type,
            size,
            referrer: None,
        }
    }

    /// The entry of a parsed manifest.
    pub fn of(m: &ferry_oci::Manifest, media_type: &str) -> ManifestEntry {
        ManifestEntry {
            referrer: m
                .subject
                .as_ref()
                .map(|s| Box::new((s.digest.clone(), m.referrer_descriptor()))),
            ..ManifestEntry::new(media_type, m.bytes().len() as u64)
        }
    }
}

/// A repository's manifests by digest.
#[derive(Debug, Default)]
pub(crate) struct ManifestMap(Vec<(Key, ManifestEntry)>);

impl ManifestMap {
    fn find(&self, d: &Digest) -> Result<usize, usize> {
        let k = Key::of(d);
        self.0.binary_search_by(|(x, _)| x.cmp(&k))
    }

    pub fn contains_key(&self, d: &Digest) -> bool {
        self.find(d).is_ok()
    }

    pub fn get(&self, d: &Digest) -> Option<&ManifestEntry> {
        self.find(d).ok().map(|i| &self.0[i].1)
    }

    pub fn insert(&mut self, d: &Digest, e: ManifestEntry) {
        match self.find(d) {
            Ok(i) => self.0[i].1 = e,
            Err(i) => self.0.insert(i, (Key::of(d), e)),
        }
    }

    pub fn remove(&mut self, d: &Digest) -> Option<ManifestEntry> {
        self.find(d).ok().map(|i| self.0.remove(i).1)
    }

    pub fn keys(&self) -> impl Iterator<Item = Digest> + '_ {
        self.0.iter().map(|(k, _)| k.digest())
    }

    pub fn iter(&self) -> impl Iterator<Item = (Digest, &ManifestEntry)> + '_ {
        self.0.iter().map(|(k, e)| (k.digest(), e))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn shrink(&mut self) {
        self.0.shrink_to_fit();
    }
}

/// A repository's tags, in lexical order.
#[derive(Debug, Default)]
pub(crate) struct TagMap(Vec<(Box<str>, Key)>);

impl TagMap {
    fn find(&self, tag: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(t, _)| (**t).cmp(tag))
    }

    pub fn get(&self, tag: &str) -> Option<Digest> {
        self.find(tag).ok().map(|i| self.0[i].1.digest())
    }

    pub fn contains_key(&self, tag: &str) -> bool {
        self.find(tag).is_ok()
    }

    pub fn insert(&mut self, tag: String, d: Digest) {
        let k = Key::of(&d);
        match self.find(&tag) {
            Ok(i) => self.0[i].1 = k,
            Err(i) => self.0.insert(i, (tag.into_boxed_str(), k)),
        }
    }

    pub fn remove(&mut self, tag: &str) {
        if let Ok(i) = self.find(tag) {
            self.0.remove(i);
        }
    }

    /// Drops the tags pointing at `d`.
    pub fn remove_pointing_at(&mut self, d: &Digest) {
        let k = Key::of(d);
        self.0.retain(|(_, x)| *x != k);
    }

    /// The tags pointing at `d`.
    pub fn pointing_at(&self, d: &Digest) -> Vec<String> {
        let k = Key::of(d);
        self.0
            .iter()
            .filter(|(_, x)| *x == k)
            .map(|(t, _)| t.to_string())
            .collect()
    }

    /// At most `n` tags after `last`, in order.
    pub fn page(&self, last: Option<&str>, n: Option<usize>) -> Vec<String> {
        let start = match last {
            Some(l) => match self.find(l) {
                Ok(i) => i + 1,
                Err(i) => i,
            },
            None => 0,
        };
        self.0[start..]
            .iter()
            .take(n.unwrap_or(usize::MAX))
            .map(|(t, _)| t.to_string())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn shrink(&mut self) {
        self.0.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn digest(i: u8, sha512: bool) -> Digest {
        let alg = if sha512 {
            ferry_oci::Algorithm::Sha512
        } else {
            ferry_oci::Algorithm::Sha256
        };
        Digest::of(alg, &[i])
    }

    proptest! {
        /// The compact collections answer as the standard ones do, whatever the operations.
        #[test]
        fn they_behave_as_the_standard_collections(
            ops in proptest::collection::vec((0u8..4, 0u8..24, any::<bool>(), 0u8..6), 0..200),
            last in proptest::option::of(0u8..6),
        ) {
            let (mut set, mut manifests, mut tags) =
                (DigestSet::default(), ManifestMap::default(), TagMap::default());
            let (mut set2, mut manifests2, mut tags2) =
                (BTreeSet::new(), BTreeMap::new(), BTreeMap::new());
            for (op, i, long, t) in ops {
                let d = digest(i, long);
                let tag = format!("v{t}");
                match op {
                    0 => { set.insert(d.clone()); set2.insert(d.clone()); }
                    1 => { set.remove(&d); set2.remove(&d); }
                    2 => {
                        manifests.insert(&d, ManifestEntry::new("application/x", u64::from(i)));
                        manifests2.insert(d.clone(), u64::from(i));
                        tags.insert(tag.clone(), d.clone());
                        tags2.insert(tag, d.clone());
                    }
                    _ => {
                        manifests.remove(&d);
                        manifests2.remove(&d);
                        tags.remove_pointing_at(&d);
                        tags2.retain(|_, x| *x != d);
                    }
                }
                prop_assert_eq!(set.contains(&d), set2.contains(&d));
                prop_assert_eq!(manifests.get(&d).map(|e| e.size), manifests2.get(&d).copied());
            }
            prop_assert_eq!(set.iter().collect::<BTreeSet<_>>(), set2);
            prop_assert_eq!(manifests.keys().collect::<BTreeSet<_>>(), manifests2.keys().cloned().collect::<BTreeSet<_>>());
            for (t, d) in &tags2 {
                prop_assert_eq!(tags.get(t), Some(d.clone()));
                let mut pointing: Vec<String> =
                    tags2.iter().filter(|(_, x)| *x == d).map(|(t, _)| t.clone()).collect();
                pointing.sort();
                prop_assert_eq!(tags.pointing_at(d), pointing);
            }
            let last = last.map(|l| format!("v{l}"));
            let expected: Vec<String> = tags2
                .keys()
                .filter(|t| last.as_ref().is_none_or(|l| *t > l))
                .take(3)
                .cloned()
                .collect();
            prop_assert_eq!(tags.page(last.as_deref(), Some(3)), expected);
            prop_assert_eq!(tags.len(), tags2.len());
        }
    }
}
