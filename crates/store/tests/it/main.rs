//! Store tests through the public API, on a temp directory.

use bytes::Bytes;
use ferry_oci::{Digest, Manifest, MediaType, RepoName, Tag};
use ferry_store::{LockMode, Store, StoreError, StoreOptions};
use ferry_testkit::image::image;

fn body(bytes: &[u8]) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    futures_util::stream::iter(vec![Ok(Bytes::copy_from_slice(bytes))])
}

fn repo(s: &str) -> RepoName {
    RepoName::new(s).unwrap()
}

async fn put(store: &std::sync::Arc<Store>, r: &str, bytes: &[u8]) -> Digest {
    let d = Digest::sha256(bytes);
    store
        .put_blob(&repo(r), &d, Some(bytes.len() as u64), body(bytes))
        .await
        .unwrap();
    d
}

/// Stores `img`'s blobs and manifest in `r` as a push would, tagged `tag`.
async fn push_image(
    store: &std::sync::Arc<Store>,
    r: &str,
    img: &ferry_testkit::image::Image,
    tag: &str,
) {
    for b in img.blobs() {
        put(store, r, &b.bytes).await;
    }
    let m = Manifest::parse(img.manifest.bytes.clone(), None).unwrap();
    store
        .put_manifest(&repo(r), &m, &[Tag::new(tag).unwrap()], true)
        .await
        .unwrap();
}

#[tokio::test]
async fn fsck_reports_then_quarantines_corrupt_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    let store = Store::open(&root, StoreOptions::default()).await.unwrap();
    let good = put(&store, "a", b"good content").await;
    let bad = put(&store, "a", b"content that will rot").await;
    let clean = store.fsck(false).await.unwrap();
    assert!(clean.is_clean());
    assert_eq!(clean.blobs_checked, 2);
    drop(store);

    let path = root
        .join("blobs/sha256")
        .join(&bad.hex()[..2])
        .join(bad.hex());
    std::fs::write(&path, b"bit rot").unwrap();

    // Report-only needs no lock and changes nothing.
    let store = Store::open_with(&root, StoreOptions::default(), LockMode::Shared)
        .await
        .unwrap();
    let r = store.fsck(false).await.unwrap();
    assert_eq!(r.corrupt.len(), 1);
    assert_eq!(r.corrupt[0].expected, bad);
    assert_eq!(r.corrupt[0].actual, Digest::sha256(b"bit rot"));
    assert!(path.exists());
    drop(store);

    let store = Store::open(&root, StoreOptions::default()).await.unwrap();
    let r = store.fsck(true).await.unwrap();
    assert_eq!(r.corrupt.len(), 1);
    assert!(!path.exists(), "corrupt blob still servable");
    assert!(root.join("quarantine").read_dir().unwrap().count() == 1);
    assert!(matches!(
        store.open_blob(&repo("a"), &bad),
        Err(StoreError::BlobUnknown(_))
    ));
    assert!(store.open_blob(&repo("a"), &good).is_ok());
    // The quarantined blob's link now points at nothing: reported, and dropped on request.
    let after = store.fsck(false).await.unwrap();
    assert!(after.corrupt.is_empty());
    assert_eq!(after.dangling.len(), 1, "{:?}", after.dangling);
    assert!(after.dangling[0].contains(&bad.to_string()));
    assert_eq!(store.drop_dangling_names().await.unwrap().len(), 1);
    assert!(store.fsck(false).await.unwrap().is_clean());
}

#[tokio::test]
async fn gc_removes_only_unreferenced_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), StoreOptions::default())
        .await
        .unwrap();
    let img = image(1, 2, 100, "amd64");
    for b in img.blobs() {
        put(&store, "app", &b.bytes).await;
    }
    let m = Manifest::parse(img.manifest.bytes.clone(), Some(MediaType::OCI_MANIFEST)).unwrap();
    store
        .put_manifest(&repo("app"), &m, &[Tag::new("v1").unwrap()], true)
        .await
        .unwrap();
    let orphan = put(&store, "app", b"nobody references me").await;

    let dry = store.gc(true).await.unwrap();
    assert_eq!(dry.digests, vec![orphan.clone()]);
    assert_eq!(dry.kept, 4, "manifest, config and two layers");
    assert!(store.has_blob(&repo("app"), &orphan));

    let r = store.gc(false).await.unwrap();
    assert_eq!(r.removed, 1);
    assert_eq!(r.bytes_freed, 20);
    assert!(!store.has_blob(&repo("app"), &orphan));
    for b in img.blobs() {
        assert!(store.open_blob(&repo("app"), &b.digest).is_ok());
    }
    assert!(store.gc(false).await.unwrap().digests.is_empty());
}

#[tokio::test]
async fn one_owner_per_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let first = Store::open(tmp.path(), StoreOptions::default())
        .await
        .unwrap();
    let err = Store::open(tmp.path(), StoreOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Locked(_)), "{err}");
    assert!(err.to_string().contains("in use by another ferry process"));
    assert!(
        Store::open_with(tmp.path(), StoreOptions::default(), LockMode::Shared)
            .await
            .is_ok()
    );
    drop(first);
    assert!(
        Store::open(tmp.path(), StoreOptions::default())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn open_wipes_stale_temp_files_and_expired_uploads() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), StoreOptions::default())
        .await
        .unwrap();
    let s = store.start_upload(&repo("u")).await.unwrap();
    drop(store);
    std::fs::write(tmp.path().join("tmp/half-written"), b"partial").unwrap();
    // A zero TTL expires every session at the next open.
    let opts = StoreOptions {
        upload_ttl: std::time::Duration::ZERO,
        ..StoreOptions::default()
    };
    let store = Store::open(tmp.path(), opts).await.unwrap();
    assert_eq!(
        std::fs::read_dir(tmp.path().join("tmp")).unwrap().count(),
        0
    );
    assert!(matches!(
        store.upload_status(&repo("u"), &s.id).await,
        Err(StoreError::UploadUnknown(_))
    ));
}

#[tokio::test]
async fn index_rebuilds_from_files_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(2, 1, 100, "amd64");
    {
        let store = Store::open(tmp.path(), StoreOptions::default())
            .await
            .unwrap();
        push_image(&store, "deep/name/space/x", &img, "t").await;
    }
    let store = Store::open(tmp.path(), StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(
        store.repositories(None, None).await.unwrap(),
        ["deep/name/space/x"]
    );
    assert_eq!(
        store.tags(&repo("deep/name/space/x"), None, None).unwrap(),
        ["t"]
    );
    let got = store
        .get_manifest(&repo("deep/name/space/x"), &"t".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(got.bytes.as_ref(), &img.manifest.bytes[..]);
    assert_eq!(got.head.digest, img.manifest.digest);
}

#[tokio::test]
async fn a_dropped_request_still_applies_its_chunk_consistently() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), StoreOptions::default())
        .await
        .unwrap();
    let r = repo("c");
    let s = store.start_upload(&r).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let body =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    tx.send(Ok(Bytes::from_static(b"first half ")))
        .await
        .unwrap();
    // The client goes away while its chunk is still arriving: the caller's future is dropped.
    let call = store.append_upload(&r, &s.id, Some(0), None, Box::pin(body));
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(50), call)
            .await
            .is_err()
    );
    tx.send(Ok(Bytes::from_static(b"second half")))
        .await
        .unwrap();
    drop(tx);
    // The chunk is applied whole once its body ends, and offset, hash and data agree.
    let whole = b"first half second half";
    let done = store
        .finish_upload(&r, &s.id, &Digest::sha256(whole), None, None, body_of(b""))
        .await
        .unwrap();
    assert_eq!(done, whole.len() as u64);
    let got = store.open_blob(&r, &Digest::sha256(whole)).unwrap();
    assert_eq!(got.len, whole.len() as u64);
}

fn body_of(
    bytes: &'static [u8],
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Unpin + Send + 'static {
    futures_util::stream::iter(vec![Ok(Bytes::from_static(bytes))])
}

#[tokio::test]
async fn fsck_reports_dangling_links_and_tags() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(3, 1, 100, "amd64");
    {
        let store = Store::open(tmp.path(), StoreOptions::default())
            .await
            .unwrap();
        push_image(&store, "d", &img, "t").await;
    }
    let d = &img.manifest.digest;
    std::fs::remove_file(
        tmp.path()
            .join("blobs/sha256")
            .join(&d.hex()[..2])
            .join(d.hex()),
    )
    .unwrap();
    let store = Store::open_with(tmp.path(), StoreOptions::default(), LockMode::Shared)
        .await
        .unwrap();
    let r = store.fsck(false).await.unwrap();
    assert!(!r.is_clean());
    assert!(
        r.dangling.iter().any(|p| p.contains("has no content")),
        "{:?}",
        r.dangling
    );
    assert!(
        r.dangling.iter().any(|p| p.contains("d:t points at")),
        "{:?}",
        r.dangling
    );
}

#[tokio::test]
async fn tools_refuse_a_directory_that_is_not_a_store() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("typo");
    for mode in [LockMode::Shared, LockMode::ExistingExclusive] {
        let err = Store::open_with(&missing, StoreOptions::default(), mode)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotAStore(_)), "{err}");
    }
    assert!(
        !missing.exists(),
        "inspecting a mistyped path must not create it"
    );
}

#[tokio::test]
async fn a_stray_file_in_the_data_directory_does_not_stop_start_up() {
    let tmp = tempfile::tempdir().unwrap();
    drop(
        Store::open(tmp.path(), StoreOptions::default())
            .await
            .unwrap(),
    );
    std::fs::write(tmp.path().join("repos/README"), b"notes").unwrap();
    std::fs::create_dir_all(tmp.path().join("repos/x/_tags")).unwrap();
    std::fs::write(tmp.path().join("repos/x/_tags/t"), [0xff, 0xfe]).unwrap();
    let store = Store::open(tmp.path(), StoreOptions::default())
        .await
        .unwrap();
    assert!(store.repositories(None, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_ingest_becomes_visible_only_verified_and_linked() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), StoreOptions::default())
        .await
        .unwrap();
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let d = Digest::sha256(&bytes);
    let mut ingest = store.begin_ingest(&d).await.unwrap();
    for chunk in bytes.chunks(70_000) {
        ingest.write(chunk).await.unwrap();
        assert!(!store.has_content_now(&d), "visible before it was verified");
    }
    assert_eq!(ingest.written(), bytes.len() as u64);
    let followed = std::fs::read(ingest.path()).unwrap();
    assert_eq!(followed, bytes, "followers read what was written so far");
    ingest.commit(&store, &repo("m/app")).await.unwrap();
    assert!(store.has_blob(&repo("m/app"), &d));
    assert_eq!(std::fs::read(store.blob_path(&d)).unwrap(), bytes);

    // Wrong bytes never become content, and leave no temp file behind.
    let claimed = Digest::sha256(b"what the upstream promised");
    let mut bad = store.begin_ingest(&claimed).await.unwrap();
    bad.write(b"what it sent").await.unwrap();
    let temp = bad.path().to_owned();
    assert!(matches!(
        bad.commit(&store, &repo("m/app")).await,
        Err(StoreError::DigestMismatch { .. })
    ));
    assert!(!store.has_content_now(&claimed));
    assert!(!temp.exists(), "temp file left after a mismatch");

    // An empty blob has no chunks at all.
    let empty = Digest::sha256(b"");
    let ingest = store.begin_ingest(&empty).await.unwrap();
    ingest.commit(&store, &repo("m/app")).await.unwrap();
    assert!(store.has_blob(&repo("m/app"), &empty));

    // Links written without fsync are still files the next start reads.
    drop(store);
    let store = Store::open(tmp.path(), StoreOptions::default())
        .await
        .unwrap();
    assert!(store.has_blob(&repo("m/app"), &d));
    assert!(store.has_blob(&repo("m/app"), &empty));
}

/// What a power loss may do to a cache's unsynced names (an empty tag, an empty manifest link, a
/// vanished blob link): the store still opens, skips them, keeps the content, and the mirror's next
/// write of the same names restores them without new content.
#[tokio::test]
async fn a_cache_that_lost_its_newest_names_opens_and_relinks() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(4, 1, 100, "amd64");
    let key = repo("mirror.test/o/app");
    let m = Manifest::parse(img.manifest.bytes.clone(), None).unwrap();
    let tag = Tag::new("v1").unwrap();
    {
        let store = Store::open(tmp.path(), StoreOptions::default())
            .await
            .unwrap();
        for b in img.blobs() {
            let mut ingest = store.begin_ingest(&b.digest).await.unwrap();
            ingest.write(&b.bytes).await.unwrap();
            ingest.commit(&store, &key).await.unwrap();
        }
        store
            .cache_manifest(&key, &m, std::slice::from_ref(&tag))
            .await
            .unwrap();
        assert_eq!(store.tags(&key, None, None).unwrap(), ["v1"]);
    }
    let repo_dir = tmp.path().join("repos/mirror.test/o/app");
    let hex = img.manifest.digest.hex();
    std::fs::write(repo_dir.join("_tags/v1"), b"").unwrap();
    std::fs::write(repo_dir.join("_manifests/sha256").join(hex), b"").unwrap();
    let layer = &img.layers[0].digest;
    std::fs::remove_file(repo_dir.join("_blobs/sha256").join(layer.hex())).unwrap();

    let store = Store::open(tmp.path(), StoreOptions::default())
        .await
        .unwrap();
    assert!(store.tags(&key, None, None).unwrap_or_default().is_empty());
    assert!(
        store
            .resolve_manifest(&key, &"v1".parse().unwrap())
            .is_err()
    );
    // An empty manifest link names no media type: skipped, not served with an empty one.
    let by_digest = img.manifest.digest.to_string().parse().unwrap();
    assert!(store.resolve_manifest(&key, &by_digest).is_err());
    assert!(!store.has_blob(&key, layer));
    assert!(store.has_content_now(layer), "content lost with its name");
    store.blobs_counted().await;
    let blobs_before = store.stats().blobs;

    store.link_cached_blob(&key, layer).await.unwrap();
    store
        .cache_manifest(&key, &m, std::slice::from_ref(&tag))
        .await
        .unwrap();
    assert!(store.has_blob(&key, layer));
    let got = store
        .get_manifest(&key, &"v1".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(got.bytes.as_ref(), &img.manifest.bytes[..]);
    assert_eq!(
        store.stats().blobs,
        blobs_before,
        "content was written again"
    );
}

#[tokio::test]
async fn fsck_drops_dangling_names_and_keeps_content() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(5, 2, 100, "amd64");
    {
        let store = Store::open(tmp.path(), StoreOptions::default())
            .await
            .unwrap();
        push_image(&store, "d", &img, "t").await;
    }
    // A tag emptied and a blob link whose content is gone: names pointing at nothing.
    std::fs::write(tmp.path().join("repos/d/_tags/t"), b"").unwrap();
    let gone = &img.layers[0].digest;
    std::fs::remove_file(
        tmp.path()
            .join("blobs/sha256")
            .join(&gone.hex()[..2])
            .join(gone.hex()),
    )
    .unwrap();
    let store = Store::open_with(
        tmp.path(),
        StoreOptions::default(),
        LockMode::ExistingExclusive,
    )
    .await
    .unwrap();
    let mut r = store.fsck(false).await.unwrap();
    assert_eq!(r.dangling.len(), 2, "{:?}", r.dangling);
    assert!(!r.is_clean());
    r.dropped = store.drop_dangling_names().await.unwrap();
    assert_eq!(r.dropped.len(), 2);
    assert!(r.is_clean());
    drop(store);

    let store = Store::open(tmp.path(), StoreOptions::default())
        .await
        .unwrap();
    let r = store.fsck(false).await.unwrap();
    assert!(r.is_clean(), "{r:?}");
    // Content and every other name are untouched.
    // One layer's file removed above, the manifest's own file counted.
    assert_eq!(r.blobs_checked, img.blobs().count() as u64);
    let m = store
        .get_manifest(
            &repo("d"),
            &img.manifest.digest.to_string().parse().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(m.bytes.as_ref(), &img.manifest.bytes[..]);
    assert!(store.has_blob(&repo("d"), &img.layers[1].digest));
}

mod index;

/// Found by pushing 100,000 images: the sweep took a session whose directory was made but whose
/// `data` file was not yet, and the client's POST failed with 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_never_takes_a_session_being_started() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), StoreOptions::default())
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sweeper = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut sweeps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                store.sweep().await.unwrap();
                sweeps += 1;
                tokio::task::yield_now().await;
            }
            sweeps
        })
    };
    let r = repo("sweep/race");
    let starts = (0..8).map(|_| {
        let (store, r) = (store.clone(), r.clone());
        tokio::spawn(async move {
            for _ in 0..300 {
                let s = store.start_upload(&r).await.unwrap();
                store.cancel_upload(&r, &s.id).await.unwrap();
            }
        })
    });
    for s in starts.collect::<Vec<_>>() {
        s.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(sweeper.await.unwrap() > 0);
}
