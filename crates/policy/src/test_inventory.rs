//! Inventories for the tests: shaped like a store's (a tag names one manifest per repository, an
//! untagged image only for a manifest without tags, every name of a manifest agrees on its size and
//! times), in cached and pushed repositories.

use ferry_oci::Digest;
use proptest::prelude::*;

use crate::image::Image;

pub(crate) const REPOSITORIES: [&str; 3] = ["docker.io/library/a", "docker.io/b", "local/c"];

pub(crate) fn digest(n: u8) -> Digest {
    Digest::sha256(&[n])
}

/// An image with no pulls, stored at time 0, of 10 bytes.
pub(crate) fn image(repository: &str, tag: Option<&str>, n: u8) -> Image {
    Image {
        repository: repository.to_owned(),
        tag: tag.map(str::to_owned),
        digest: digest(n),
        bytes: 10,
        created: 0,
        last_pulled: None,
    }
}

/// `(repository, digest, bytes, created, last pull, tag bitmask)` per manifest.
type Manifest = (usize, u8, u64, u64, Option<u64>, u8);

fn images(manifests: Vec<Manifest>) -> Vec<Image> {
    let mut out: Vec<Image> = Vec::new();
    for (r, d, bytes, created, last_pulled, tags) in manifests {
        let repository = REPOSITORIES[r];
        let d = digest(d);
        if out
            .iter()
            .any(|i| i.repository == repository && i.digest == d)
        {
            continue;
        }
        let base = Image {
            repository: repository.to_owned(),
            tag: None,
            digest: d,
            bytes,
            created,
            last_pulled,
        };
        let free: Vec<String> = (0..5)
            .filter(|t| tags & (1 << t) != 0)
            .map(|t| format!("t{t}"))
            .filter(|t| {
                !out.iter()
                    .any(|i| i.repository == repository && i.tag.as_ref() == Some(t))
            })
            .collect();
        if free.is_empty() {
            out.push(base);
        } else {
            out.extend(free.into_iter().map(|t| Image {
                tag: Some(t),
                ..base.clone()
            }));
        }
    }
    out
}

pub(crate) fn inventory() -> impl Strategy<Value = Vec<Image>> {
    proptest::collection::vec(
        (
            0..REPOSITORIES.len(),
            0u8..4,
            1u64..1000,
            0u64..100,
            proptest::option::of(0u64..120),
            any::<u8>(),
        ),
        0..10,
    )
    .prop_map(images)
}

/// An inventory and the same images in another order.
pub(crate) fn inventory_and_shuffled() -> impl Strategy<Value = (Vec<Image>, Vec<Image>)> {
    inventory().prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
}
