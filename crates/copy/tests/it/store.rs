//! Copies into ferry's own store (`ferry-store:`): what is copied is in the store under the name
//! the caller's naming gives, an index keeps its digest whatever platforms are taken, and a
//! corrupt source leaves nothing behind.

use std::path::Path;
use std::sync::Arc;

use ferry_copy::{
    Copier, CopyError, CopyOptions, Location, NamingError, Platform, PlatformChoice, Silent,
    StoreName, StoreTarget,
};
use ferry_oci::{ManifestRef, RepoName, Tag};
use ferry_store::{Store, StoreOptions};
use ferry_testkit::image::{image, index, write_layout};

/// A copier into the store at `data`, naming every image `cached/app:v1` (or refusing, when
/// `refuse` says why).
async fn copier_into(
    data: &Path,
    platforms: PlatformChoice,
    refuse: Option<&str>,
) -> (Copier, Arc<Store>) {
    let store = Store::open(data, StoreOptions::default()).await.unwrap();
    let refuse = refuse.map(str::to_owned);
    let target = StoreTarget {
        store: store.clone(),
        naming: Box::new(move |names| match &refuse {
            Some(why) => Err(NamingError(why.clone())),
            None => {
                assert_eq!(
                    names.tag_only.map(Tag::as_str),
                    Some("v1"),
                    "a layout's bare ref.name is offered as a tag"
                );
                Ok(StoreName {
                    repo: RepoName::new("cached/app").unwrap(),
                    tags: vec![Tag::new("v1").unwrap()],
                })
            }
        }),
    };
    let options = CopyOptions {
        platforms,
        ..CopyOptions::default()
    };
    let copier = Copier::new(
        options,
        Box::new(|_| panic!("no registry is involved")),
        Arc::new(Silent),
    )
    .with_store(data.to_owned(), target);
    (copier, store)
}

fn layout_source(dir: &Path) -> Location {
    Location::OciLayout {
        dir: dir.to_owned(),
        reference: Some("v1".to_owned()),
    }
}

#[tokio::test]
async fn an_index_copied_into_a_store_keeps_its_digest_with_the_chosen_platforms() {
    let tmp = tempfile::tempdir().unwrap();
    let (amd, arm) = (image(141, 2, 3000, "amd64"), image(142, 1, 3000, "arm64"));
    let idx = index(&[(&amd, "amd64"), (&arm, "arm64")]);
    let layout = tmp.path().join("layout");
    let blobs: Vec<_> = amd
        .blobs()
        .chain(arm.blobs())
        .chain([&amd.manifest, &arm.manifest])
        .collect();
    write_layout(&layout, &blobs, &[("v1", &idx)]).unwrap();
    let data = tmp.path().join("data");
    let arm64: Platform = "linux/arm64".parse().unwrap();
    let (copier, store) = copier_into(&data, PlatformChoice::Only(vec![arm64]), None).await;
    let into = Location::FerryStore {
        data_dir: data.clone(),
    };

    let copied = copier.copy(&layout_source(&layout), &into).await.unwrap();
    assert_eq!(copied.digest, idx.digest, "the index as the source has it");
    assert_eq!(copied.manifests_written, 2);
    assert_eq!(copied.blobs_copied, 2, "arm64's config and layer");
    let repo = RepoName::new("cached/app").unwrap();
    let tagged = store
        .resolve_manifest(&repo, &ManifestRef::Tag(Tag::new("v1").unwrap()))
        .unwrap();
    assert_eq!(tagged.digest, idx.digest);
    for b in arm.blobs() {
        assert!(store.has_blob(&repo, &b.digest), "{}", b.digest);
    }
    for b in amd.blobs() {
        assert!(!store.has_content_now(&b.digest), "amd64 was left out");
    }

    // Again: everything is there.
    let again = copier.copy(&layout_source(&layout), &into).await.unwrap();
    assert_eq!((again.blobs_copied, again.blobs_present), (0, 2));
}

#[tokio::test]
async fn a_corrupt_source_blob_leaves_nothing_in_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(143, 2, 3000, "amd64");
    let layout = tmp.path().join("layout");
    let blobs: Vec<_> = img.blobs().collect();
    write_layout(&layout, &blobs, &[("v1", &img.manifest)]).unwrap();
    // One byte of the second layer changes; its size stays.
    let bad = &img.layers[1];
    let path = layout.join("blobs/sha256").join(bad.digest.hex());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let data = tmp.path().join("data");
    let (copier, store) = copier_into(&data, PlatformChoice::Host, None).await;
    let into = Location::FerryStore {
        data_dir: data.clone(),
    };

    let err = copier
        .copy(&layout_source(&layout), &into)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(bad.digest.as_str()),
        "the error names the blob: {err}"
    );
    assert!(!store.has_content_now(&bad.digest));
    let repo = RepoName::new("cached/app").unwrap();
    assert!(
        store
            .resolve_manifest(&repo, &ManifestRef::Tag(Tag::new("v1").unwrap()))
            .is_err(),
        "no manifest names blobs that are not there"
    );
    // No file of the store is named after the corrupt blob (its content may only ever live under
    // a temp name, which the store wipes when it opens).
    let hex = bad.digest.hex().to_owned();
    let mut dirs = vec![data.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains(&hex))
            {
                panic!("{} is named after the corrupt blob", path.display());
            }
        }
    }
}

#[tokio::test]
async fn an_image_the_naming_refuses_is_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(144, 1, 1000, "amd64");
    let layout = tmp.path().join("layout");
    let blobs: Vec<_> = img.blobs().collect();
    write_layout(&layout, &blobs, &[("v1", &img.manifest)]).unwrap();
    let data = tmp.path().join("data");
    let (copier, store) =
        copier_into(&data, PlatformChoice::Host, Some("give one with --name")).await;
    let into = Location::FerryStore { data_dir: data };
    let err = copier
        .copy(&layout_source(&layout), &into)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CopyError::Destination { why, .. } if why.contains("give one with --name")),
        "{err}"
    );
    for b in img.blobs() {
        assert!(!store.has_content_now(&b.digest), "nothing was copied");
    }
}
