//! Selecting images and turning a selection into deletions: shared by `ferry prune`, the admin
//! API and the cache budget's standing rules.

use std::collections::BTreeMap;

use ferry_oci::RepoName;

use crate::glob::glob_match;
use crate::image::{Image, ManifestKey};

/// Criteria for pruning (all given criteria must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneRule {
    /// Last accessed before this time (seconds); never-accessed items count by creation time.
    pub accessed_before: Option<u64>,
    /// Created before this time (seconds).
    pub created_before: Option<u64>,
}

impl PruneRule {
    /// Whether an item created at `created` and last accessed at `accessed` is pruned.
    pub fn matches(&self, created: u64, accessed: Option<u64>) -> bool {
        let accessed_ok = self
            .accessed_before
            .is_none_or(|t| accessed.unwrap_or(created) < t);
        let created_ok = self.created_before.is_none_or(|t| created < t);
        accessed_ok && created_ok
    }
}

/// Whether `repository:tag` of `image` (`repository:` when untagged) matches one of the `pinned`
/// patterns (`*` wildcard).
pub fn is_pinned(pinned: &[String], image: &Image) -> bool {
    let name = format!(
        "{}:{}",
        image.repository,
        image.tag.as_deref().unwrap_or("")
    );
    pinned.iter().any(|p| glob_match(p, &name))
}

/// What to prune.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Age criteria.
    pub rule: PruneRule,
    /// `repository:tag` (or `repository@digest`) must match.
    pub pattern: Option<regex_lite::Regex>,
    /// Only images of this repository.
    pub repository: Option<RepoName>,
    /// `repository:tag` patterns (`*` wildcard) of images never selected: the cache's pinned images.
    pub pinned: Vec<String>,
}

impl Selection {
    /// Whether `image` is protected by a pinned pattern.
    pub fn is_pinned(&self, image: &Image) -> bool {
        is_pinned(&self.pinned, image)
    }

    /// Whether `image` is selected.
    pub fn matches(&self, image: &Image) -> bool {
        !self.is_pinned(image)
            && self.rule.matches(image.created, image.last_pulled)
            && self
                .pattern
                .as_ref()
                .is_none_or(|r| r.is_match(&image.name()))
            && self
                .repository
                .as_ref()
                .is_none_or(|r| r.as_str() == image.repository)
    }
}

/// The deletions that carry out a prune.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrunePlan {
    /// Names of the selected images, by repository, tag (untagged first), then digest: what
    /// disappears from the inventory.
    pub images: Vec<String>,
    /// Manifests every name of which is selected: deleted whole. Sorted.
    pub manifests: Vec<ManifestKey>,
    /// `(repository, tag)` of selected tags whose manifest keeps a name that is not selected:
    /// only the tag goes. Sorted.
    pub tags: Vec<(String, String)>,
}

/// Plans deleting the images of `inventory` that `selected` picks: a manifest goes when every image
/// naming it is selected, otherwise only the selected tags (a manifest must not vanish under a
/// name the selection spared). Blobs are left to the caller's garbage collection.
pub fn prune_plan(inventory: &[Image], selected: impl Fn(&Image) -> bool) -> PrunePlan {
    // Per manifest: whether every name of it is selected.
    let mut whole: BTreeMap<ManifestKey, bool> = BTreeMap::new();
    let mut chosen: Vec<&Image> = Vec::new();
    for i in inventory {
        let s = selected(i);
        *whole.entry(i.manifest()).or_insert(true) &= s;
        if s {
            chosen.push(i);
        }
    }
    chosen.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let mut tags: Vec<(String, String)> = chosen
        .iter()
        .filter(|i| !whole[&i.manifest()])
        .filter_map(|i| Some((i.repository.clone(), i.tag.clone()?)))
        .collect();
    tags.sort();
    tags.dedup();
    PrunePlan {
        images: chosen.iter().map(|i| i.name()).collect(),
        manifests: whole
            .into_iter()
            .filter_map(|(k, all)| all.then_some(k))
            .collect(),
        tags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_inventory::{digest, image, inventory, inventory_and_shuffled};
    use proptest::prelude::*;

    #[test]
    fn prune_rules() {
        let r = PruneRule {
            accessed_before: Some(100),
            created_before: None,
        };
        assert!(r.matches(10, Some(50)));
        assert!(!r.matches(10, Some(150)));
        assert!(r.matches(10, None));
        assert!(!r.matches(200, None));
        let both = PruneRule {
            accessed_before: Some(100),
            created_before: Some(20),
        };
        assert!(both.matches(10, Some(50)) && !both.matches(30, Some(50)));
        assert!(PruneRule::default().matches(1, None));
    }

    #[test]
    fn a_manifest_goes_whole_only_when_every_name_is_selected() {
        let inv = [
            image("r", Some("a"), 1),
            image("r", Some("b"), 1),
            image("r", Some("c"), 2),
            image("r", None, 3),
        ];
        let plan = prune_plan(&inv, |i| i.tag.as_deref() != Some("b"));
        let mut whole = vec![inv[2].manifest(), inv[3].manifest()];
        whole.sort();
        assert_eq!(plan.manifests, whole);
        assert_eq!(plan.tags, vec![("r".to_owned(), "a".to_owned())]);
        assert_eq!(
            plan.images,
            vec![
                format!("r@{}", digest(3)),
                "r:a".to_owned(),
                "r:c".to_owned()
            ]
        );
    }

    #[test]
    fn selections_honour_pins_patterns_and_repositories() {
        let sel = Selection {
            pattern: Some(regex_lite::Regex::new(":v").unwrap()),
            repository: Some(RepoName::new("docker.io/app").unwrap()),
            pinned: vec!["docker.io/app:v1*".into()],
            ..Selection::default()
        };
        assert!(sel.matches(&image("docker.io/app", Some("v2"), 1)));
        assert!(
            !sel.matches(&image("docker.io/app", Some("v10"), 1)),
            "pinned"
        );
        assert!(!sel.matches(&image("docker.io/app", Some("latest"), 1)));
        assert!(!sel.matches(&image("docker.io/other", Some("v2"), 1)));
        assert!(is_pinned(
            &["docker.io/*".into()],
            &image("docker.io/app", None, 1)
        ));
    }

    proptest! {
        #[test]
        fn plans_spare_pinned_images_and_delete_whole_iff_every_name_is_selected(
            inv in inventory(),
            pinned_digit in 0u8..4,
            accessed_before in 0u64..120,
        ) {
            let sel = Selection {
                rule: PruneRule { accessed_before: Some(accessed_before), created_before: None },
                pinned: vec![format!("*:t{pinned_digit}*")],
                ..Selection::default()
            };
            let plan = prune_plan(&inv, |i| sel.matches(i));
            for i in &inv {
                let names: Vec<&Image> = inv.iter().filter(|o| o.manifest() == i.manifest()).collect();
                let gone_whole = plan.manifests.contains(&i.manifest());
                prop_assert_eq!(gone_whole, names.iter().all(|o| sel.matches(o)));
                if sel.is_pinned(i) {
                    prop_assert!(!gone_whole);
                    prop_assert!(!plan.images.contains(&i.name()));
                    if let Some(t) = &i.tag {
                        prop_assert!(!plan.tags.contains(&(i.repository.clone(), t.clone())));
                    }
                }
                let tag_alone = i.tag.as_ref().is_some_and(|t| plan.tags.contains(&(i.repository.clone(), t.clone())));
                prop_assert_eq!(tag_alone, sel.matches(i) && i.tag.is_some() && !gone_whole);
                prop_assert_eq!(plan.images.contains(&i.name()), sel.matches(i));
            }
        }

        #[test]
        fn plans_do_not_depend_on_inventory_order((inv, shuffled) in inventory_and_shuffled(), cut in 0u64..120) {
            let selected = |i: &Image| i.last_access() < cut;
            prop_assert_eq!(prune_plan(&inv, selected), prune_plan(&shuffled, selected));
        }
    }
}
