//! The index: loaded one repository at a time on first use, bounded, never older than the files.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ferry_oci::{Digest, ManifestRef};
use ferry_store::{Store, StoreOptions};
use ferry_testkit::image::image;

use super::{push_image, put, repo};

fn tag(t: &str) -> ManifestRef {
    ManifestRef::Tag(t.parse().unwrap())
}

#[tokio::test]
async fn a_store_opens_without_loading_a_repository_and_loads_each_on_first_use() {
    let tmp = tempfile::tempdir().unwrap();
    let images: Vec<_> = (0..3).map(|i| image(i, 2, 300, "amd64")).collect();
    {
        let store = Store::open(tmp.path(), StoreOptions::default())
            .await
            .unwrap();
        for (i, img) in images.iter().enumerate() {
            push_image(&store, &format!("team/app-{i}"), img, "v1").await;
        }
    }
    let store = Store::open(tmp.path(), StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(
        store.stats().repositories_loaded,
        0,
        "open read a repository"
    );

    let head = store
        .resolve_manifest(&repo("team/app-1"), &tag("v1"))
        .unwrap();
    assert_eq!(head.digest, images[1].manifest.digest);
    assert_eq!(store.stats().repositories_loaded, 1);
    // config + 2 layers linked, 1 manifest, 1 tag.
    assert_eq!(store.stats().index_entries, 5);

    store.blobs_counted().await;
    let s = store.stats();
    assert!(s.counted);
    assert_eq!(s.repositories, 3);
    // Each image: config, 2 layers and the manifest, all distinct.
    assert_eq!(s.blobs, 12);
    let bytes: usize = images
        .iter()
        .flat_map(|i| i.blobs().chain([&i.manifest]))
        .map(|b| b.bytes.len())
        .sum();
    assert_eq!(s.blob_bytes, bytes as u64);
    assert!(
        store
            .resolve_manifest(&repo("team/none"), &tag("v1"))
            .is_err()
    );
    assert_eq!(
        store.stats().repositories_loaded,
        1,
        "a repository that does not exist was kept"
    );
}

#[tokio::test]
async fn the_index_stays_within_its_budget_and_answers_for_what_it_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        index_entries: 20,
        ..StoreOptions::default()
    };
    let store = Store::open(tmp.path(), options).await.unwrap();
    let images: Vec<_> = (0..12).map(|i| image(100 + i, 2, 300, "amd64")).collect();
    for (i, img) in images.iter().enumerate() {
        push_image(&store, &format!("many/r{i}"), img, "v1").await;
    }
    // Two rounds over every repository: the second finds most of them dropped and reads them
    // again; every answer is right either way.
    for _ in 0..2 {
        for (i, img) in images.iter().enumerate() {
            let r = repo(&format!("many/r{i}"));
            let head = store.resolve_manifest(&r, &tag("v1")).unwrap();
            assert_eq!(head.digest, img.manifest.digest);
            for b in img.blobs() {
                assert!(store.has_blob(&r, &b.digest), "r{i} lost {}", b.digest);
            }
            assert_eq!(store.tags(&r, None, None).unwrap(), ["v1"]);
            let s = store.stats();
            assert!(
                s.index_entries <= 20,
                "{} entries loaded over a budget of 20",
                s.index_entries
            );
        }
    }
    assert!(store.stats().repositories_loaded < 12);

    // A change to a repository that is not loaded is seen when it is loaded again.
    let first = repo("many/r0");
    store
        .delete_tag(&first, &"v1".parse().unwrap())
        .await
        .unwrap();
    for (i, _) in images.iter().enumerate().skip(1) {
        store
            .resolve_manifest(&repo(&format!("many/r{i}")), &tag("v1"))
            .unwrap();
    }
    assert!(store.resolve_manifest(&first, &tag("v1")).is_err());
    assert!(store.tags(&first, None, None).unwrap().is_empty());
}

/// Loads run beside changes and evictions all the time here (a budget of 8 entries, four
/// repositories of up to 6 links): whatever the interleaving, the index ends agreeing with the
/// files, link by link.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn loads_racing_changes_never_keep_a_picture_older_than_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        index_entries: 8,
        ..StoreOptions::default()
    };
    let store = Store::open(tmp.path(), options.clone()).await.unwrap();
    let mut contents = Vec::new();
    for i in 0..6u8 {
        contents.push(put(&store, "source", &[i; 100]).await);
    }
    let contents: Arc<Vec<Digest>> = Arc::new(contents);
    let repos: Vec<String> = (0..4).map(|i| format!("race/r{i}")).collect();

    let mut writers = Vec::new();
    for (w, name) in repos.iter().enumerate() {
        let (store, contents, name) = (store.clone(), contents.clone(), name.clone());
        writers.push(tokio::spawn(async move {
            let r = repo(&name);
            let mut linked = HashSet::new();
            let mut rng = ferry_testkit::image::Rng::new(w as u64 + 1);
            for _ in 0..300 {
                let d = &contents[(rng.next_u64() % contents.len() as u64) as usize];
                if linked.contains(d) {
                    store.delete_blob(&r, d).await.unwrap();
                    linked.remove(d);
                } else {
                    store.link_blob(&r, d).await.unwrap();
                    linked.insert(d.clone());
                }
            }
            (name, linked)
        }));
    }
    let mut readers = Vec::new();
    for k in 0..3u64 {
        let (store, contents, repos) = (store.clone(), contents.clone(), repos.clone());
        readers.push(tokio::task::spawn_blocking(move || {
            let mut rng = ferry_testkit::image::Rng::new(100 + k);
            for _ in 0..3000 {
                let r = repo(&repos[(rng.next_u64() % repos.len() as u64) as usize]);
                let d = &contents[(rng.next_u64() % contents.len() as u64) as usize];
                let _ = store.has_blob(&r, d);
            }
        }));
    }
    let mut expected: HashMap<String, HashSet<Digest>> = HashMap::new();
    for w in writers {
        let (name, linked) = w.await.unwrap();
        expected.insert(name, linked);
    }
    for r in readers {
        r.await.unwrap();
    }
    for (name, linked) in &expected {
        for d in contents.iter() {
            assert_eq!(
                store.has_blob(&repo(name), d),
                linked.contains(d),
                "{name} {d}: the index disagrees with what was written last"
            );
        }
    }
    // And the files say the same.
    drop(store);
    let fresh = Store::open(tmp.path(), options).await.unwrap();
    for (name, linked) in &expected {
        for d in contents.iter() {
            assert_eq!(fresh.has_blob(&repo(name), d), linked.contains(d));
        }
    }
}

/// The catalog's walk of `repos/` is kept while nothing changes (a directory made behind the
/// store's back shows that no walk ran), and every push or delete makes the next page walk again.
#[tokio::test]
async fn the_catalog_reuses_its_walk_until_a_change_and_never_answers_older_than_one() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), StoreOptions::default())
        .await
        .unwrap();
    let a = put(&store, "team/a", b"a").await;
    assert_eq!(store.repositories(None, None).await.unwrap(), ["team/a"]);

    // Made without the store: a walk would list it, the kept walk does not.
    let hidden = tmp.path().join("repos/team/hidden/_blobs/sha256");
    std::fs::create_dir_all(&hidden).unwrap();
    std::fs::write(hidden.join(a.hex()), b"").unwrap();
    assert_eq!(
        store.repositories(None, None).await.unwrap(),
        ["team/a"],
        "the catalog walked again though nothing changed"
    );

    put(&store, "team/b", b"b").await;
    assert_eq!(
        store.repositories(None, None).await.unwrap(),
        ["team/a", "team/b", "team/hidden"]
    );
    assert_eq!(
        store.repositories(Some("team/a"), Some(1)).await.unwrap(),
        ["team/b"]
    );

    store.delete_blob(&repo("team/a"), &a).await.unwrap();
    assert_eq!(
        store.repositories(None, None).await.unwrap(),
        ["team/b", "team/hidden"]
    );
}
