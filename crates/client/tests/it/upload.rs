//! Uploads: streamed, from a file, chunked (honouring `OCI-Chunk-Min-Length`), and mounts.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ferry_client::ErrorKind;
use ferry_oci::{Digest, RepoName};
use ferry_testkit::peers::DockerRegistry;

use crate::common::{Reply, Scripted, client, content};

/// What the registry at `endpoint` holds as `digest` in `repo`.
async fn read_back(endpoint: &str, repo: &RepoName, digest: &Digest) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("back");
    client(endpoint, 1)
        .fetch_blob_to(repo, digest, None, &path)
        .await
        .unwrap();
    std::fs::read(path).unwrap()
}

fn chunks_of(
    bytes: &[u8],
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let parts: Vec<Result<Bytes, std::io::Error>> = bytes
        .chunks(7_000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures_util::stream::iter(parts)
}

#[tokio::test]
async fn streamed_file_and_chunked_uploads_store_the_blob() {
    let Some(registry) = DockerRegistry::start() else {
        return;
    };
    let endpoint = format!("http://{}", registry.host());
    let c = client(&endpoint, 3);
    let repo = RepoName::new("team/up").unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (i, n) in [0usize, 1, 65_536, 200_001].into_iter().enumerate() {
        let streamed = content(n, 1 + i as u8);
        let d = Digest::sha256(&streamed);
        c.push_blob_stream(&repo, &d, n as u64, chunks_of(&streamed))
            .await
            .unwrap_or_else(|e| panic!("stream {n}: {e}"));
        assert!(
            read_back(&endpoint, &repo, &d).await == streamed,
            "stream {n}"
        );

        let from_file = content(n, 50 + i as u8);
        let d = Digest::sha256(&from_file);
        let path = dir.path().join(format!("file{i}"));
        std::fs::write(&path, &from_file).unwrap();
        c.push_blob_file(&repo, &d, n as u64, &path)
            .await
            .unwrap_or_else(|e| panic!("file {n}: {e}"));
        assert!(
            read_back(&endpoint, &repo, &d).await == from_file,
            "file {n}"
        );

        let chunked = content(n, 100 + i as u8);
        let d = Digest::sha256(&chunked);
        let path = dir.path().join(format!("chunked{i}"));
        std::fs::write(&path, &chunked).unwrap();
        c.push_blob_chunked(&repo, &d, n as u64, &path, 64 * 1024)
            .await
            .unwrap_or_else(|e| panic!("chunked {n}: {e}"));
        assert!(
            read_back(&endpoint, &repo, &d).await == chunked,
            "chunked {n}"
        );
    }
}

#[tokio::test]
async fn a_mount_is_true_when_the_source_has_the_blob_and_false_otherwise() {
    let Some(registry) = DockerRegistry::start() else {
        return;
    };
    let endpoint = format!("http://{}", registry.host());
    let c = client(&endpoint, 3);
    let (src, dst) = (
        RepoName::new("team/src").unwrap(),
        RepoName::new("team/dst").unwrap(),
    );
    let blob = content(10_000, 5);
    let d = Digest::sha256(&blob);
    c.push_blob(&src, &d, Bytes::from(blob.clone()))
        .await
        .unwrap();
    assert!(!c.blob_exists(&dst, &d).await.unwrap());
    assert!(c.mount_blob(&dst, &d, &src).await.unwrap());
    assert!(c.blob_exists(&dst, &d).await.unwrap());
    let absent = Digest::sha256(b"not pushed anywhere");
    assert!(!c.mount_blob(&dst, &absent, &src).await.unwrap());
}

/// A registry of upload sessions only: it asks for chunks of at least `min` bytes, moves the
/// session to a new `Location` after every chunk and checks the final digest.
async fn chunk_registry(min: u64) -> Scripted {
    let held: Arc<Mutex<Vec<u8>>> = Arc::default();
    Scripted::start(move |rq| {
        let mut held = held.lock().unwrap();
        match rq.method.as_str() {
            "POST" => Reply::new(202)
                .header("location", "/v2/r/blobs/uploads/s?step=0")
                .header("oci-chunk-min-length", min),
            "PATCH" => {
                held.extend_from_slice(&rq.body);
                let step: u32 = rq.target.rsplit('=').next().unwrap().parse().unwrap();
                Reply::new(202)
                    .header(
                        "location",
                        format!("/v2/r/blobs/uploads/s?step={}", step + 1),
                    )
                    .header("range", format!("0-{}", held.len().saturating_sub(1)))
            }
            "PUT" => {
                held.extend_from_slice(&rq.body);
                let want = format!(
                    "digest={}",
                    Digest::sha256(&held).as_str().replace(':', "%3A")
                );
                if rq.target.contains(&want) {
                    Reply::new(201)
                } else {
                    Reply::new(400)
                }
            }
            _ => Reply::new(405),
        }
    })
    .await
}

#[tokio::test]
async fn chunks_are_never_smaller_than_the_registry_asks_and_follow_each_location() {
    let server = chunk_registry(100_000).await;
    let blob = content(250_000, 9);
    let d = Digest::sha256(&blob);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    std::fs::write(&path, &blob).unwrap();
    let repo = RepoName::new("r").unwrap();
    client(&server.url(), 1)
        .push_blob_chunked(&repo, &d, blob.len() as u64, &path, 10_000)
        .await
        .unwrap();
    let seen = server.requests();
    let patches: Vec<_> = seen.iter().filter(|r| r.method == "PATCH").collect();
    let sizes: Vec<usize> = patches.iter().map(|r| r.body.len()).collect();
    assert_eq!(sizes, [100_000, 100_000, 50_000]);
    let ranges: Vec<_> = patches
        .iter()
        .map(|r| r.header("content-range").unwrap())
        .collect();
    assert_eq!(ranges, ["0-99999", "100000-199999", "200000-249999"]);
    let targets: Vec<_> = seen
        .iter()
        .skip(1)
        .map(|r| r.target.split('&').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        targets,
        (0..4)
            .map(|i| format!("/v2/r/blobs/uploads/s?step={i}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(seen.last().unwrap().method, "PUT");
}

#[tokio::test]
async fn a_streamed_put_carries_content_length_and_is_not_retried() {
    let puts = Arc::new(Mutex::new(0));
    let count = puts.clone();
    let server = Scripted::start(move |rq| match rq.method.as_str() {
        "POST" => Reply::new(202).header("location", "/v2/r/blobs/uploads/s"),
        "PUT" => {
            *count.lock().unwrap() += 1;
            Reply::new(503)
        }
        _ => Reply::new(405),
    })
    .await;
    let blob = content(30_000, 2);
    let d = Digest::sha256(&blob);
    let repo = RepoName::new("r").unwrap();
    let e = client(&server.url(), 3)
        .push_blob_stream(&repo, &d, blob.len() as u64, chunks_of(&blob))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
    assert_eq!(*puts.lock().unwrap(), 1);
    let put = server
        .requests()
        .into_iter()
        .find(|r| r.method == "PUT")
        .unwrap();
    assert_eq!(put.header("content-length"), Some("30000"));
    assert_eq!(put.header("transfer-encoding"), None);
    assert!(put.body == blob);

    // A file can be read again: the whole upload is retried, up to the attempts.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    std::fs::write(&path, &blob).unwrap();
    *puts.lock().unwrap() = 0;
    let e = client(&server.url(), 3)
        .push_blob_file(&repo, &d, blob.len() as u64, &path)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
    assert_eq!(*puts.lock().unwrap(), 3);
}
