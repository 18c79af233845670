//! `ferry trace warmup`: makes a registry hold every object a trace GETs. Each distinct blob is
//! pushed at its recorded size with content seeded by its URI ([`Content`]); each distinct
//! manifest becomes a real OCI image manifest (a config and two layers whose sizes sum to the
//! recorded size, the manifest itself padded to it) pushed under a tag. What is already there
//! (a `HEAD` says so) is not pushed again, so a warmup resumes where a broken one stopped.

use std::collections::BTreeMap;

use bytes::Bytes;
use ferry_client::{ClientError, ErrorKind, Registry};
use ferry_oci::{Digest, MediaType, RepoName};
use futures_util::StreamExt;

use super::content::Content;
use super::map::{MapEntry, ObjectKind, object_of, repository_name, tag_name};
use crate::request::Request;

/// The size of an object the trace gives no size for (or 0): small, so a trace without sizes
/// still warms up quickly.
pub const DEFAULT_SIZE: u64 = 1024;
/// The default cap on one blob.
pub const DEFAULT_MAX_BLOB_SIZE: u64 = 1 << 30;
/// The default cap on everything one warmup may push.
pub const DEFAULT_MAX_TOTAL: u64 = 100 << 30;
/// Most bytes of a generated manifest (registries refuse larger ones; 4 MiB is common).
pub const MAX_MANIFEST_SIZE: u64 = 1 << 20;

/// One object a trace GETs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Its key (see [`object_of`]).
    pub key: String,
    /// Blob or manifest.
    pub kind: ObjectKind,
    /// The trace's repository.
    pub repo: String,
    /// The trace's reference.
    pub reference: String,
    /// The largest size the trace recorded for it.
    pub size: Option<u64>,
}

/// The distinct objects of a trace's GETs; memory grows with the distinct objects, not the
/// requests.
#[derive(Debug, Default)]
pub struct Objects {
    objects: BTreeMap<String, Object>,
}

impl Objects {
    /// Counts `r` in, if it GETs a blob or manifest.
    pub fn add(&mut self, r: &Request) {
        let Some((key, kind)) = object_of(r) else {
            return;
        };
        let size = r.size.filter(|&s| s > 0);
        match self.objects.get_mut(&key) {
            Some(o) => o.size = o.size.max(size),
            None => {
                let o = Object {
                    key: key.clone(),
                    kind,
                    repo: r.repo.clone().unwrap_or_default(),
                    reference: r.reference.clone().unwrap_or_default(),
                    size,
                };
                self.objects.insert(key, o);
            }
        }
    }

    /// Distinct objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The objects, by key.
    pub fn iter(&self) -> impl Iterator<Item = &Object> {
        self.objects.values()
    }
}

/// How to warm up.
#[derive(Debug, Clone)]
pub struct WarmupOptions {
    /// Objects pushed at a time.
    pub jobs: usize,
    /// Blobs larger than this are pushed at this size (the map records both sizes).
    pub max_blob_size: u64,
    /// Refuse a trace whose objects would push more than this in all.
    pub max_total: u64,
}

impl Default for WarmupOptions {
    fn default() -> WarmupOptions {
        WarmupOptions {
            jobs: 8,
            max_blob_size: DEFAULT_MAX_BLOB_SIZE,
            max_total: DEFAULT_MAX_TOTAL,
        }
    }
}

/// What a warmup did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WarmupReport {
    /// Distinct blobs of the trace.
    pub blobs: u64,
    /// Distinct manifests.
    pub manifests: u64,
    /// Blobs pushed (manifests' configs and layers included).
    pub pushed_blobs: u64,
    /// Manifests pushed.
    pub pushed_manifests: u64,
    /// Blobs and manifests the registry had already.
    pub present: u64,
    /// Bytes pushed.
    pub bytes_pushed: u64,
    /// Objects pushed smaller than recorded (over `max_blob_size`).
    pub capped: u64,
    /// Objects without a recorded size, pushed at [`DEFAULT_SIZE`].
    pub defaulted: u64,
}

impl WarmupReport {
    fn add(&mut self, o: &WarmupReport) {
        self.blobs += o.blobs;
        self.manifests += o.manifests;
        self.pushed_blobs += o.pushed_blobs;
        self.pushed_manifests += o.pushed_manifests;
        self.present += o.present;
        self.bytes_pushed += o.bytes_pushed;
        self.capped += o.capped;
        self.defaulted += o.defaulted;
    }
}

/// Why a warmup failed.
#[derive(Debug, thiserror::Error)]
pub enum WarmupError {
    /// The trace asks for more than the cap allows.
    #[error(
        "the trace's {objects} objects would push {total} bytes, over the limit of {limit} bytes: raise --max-total, or lower --max-blob-size"
    )]
    TooLarge {
        /// Distinct objects.
        objects: usize,
        /// Bytes they would push.
        total: u64,
        /// The limit.
        limit: u64,
    },
    /// Pushes failed (the others are done: a rerun resumes).
    #[error(
        "{failed} of {objects} objects could not be pushed (run warmup again to resume); the first, {key}"
    )]
    Push {
        /// Objects that failed.
        failed: usize,
        /// Objects in all.
        objects: usize,
        /// The first that failed.
        key: String,
        /// Why.
        #[source]
        source: ClientError,
    },
}

/// The sizes an object is pushed at: the object's (or a manifest's layers' total) and whether
/// it was capped or defaulted.
fn planned_size(o: &Object, max_blob_size: u64) -> (u64, bool, bool) {
    let size = o.size.unwrap_or(DEFAULT_SIZE);
    let cap = match o.kind {
        ObjectKind::Blob => max_blob_size,
        // Two layers, each under the cap.
        ObjectKind::Manifest => max_blob_size.saturating_mul(2),
    };
    (size.min(cap), size > cap, o.size.is_none())
}

/// Pushes every object of `objects` to `registry` (`o.jobs` at a time); the map's entries, and
/// what was done.
pub async fn warmup(
    registry: &Registry,
    objects: &Objects,
    o: &WarmupOptions,
) -> Result<(Vec<MapEntry>, WarmupReport), WarmupError> {
    let total: u64 = objects
        .iter()
        .map(|ob| planned_size(ob, o.max_blob_size).0)
        .fold(0, u64::saturating_add);
    if total > o.max_total {
        return Err(WarmupError::TooLarge {
            objects: objects.len(),
            total,
            limit: o.max_total,
        });
    }
    type Outcome = (String, Result<(MapEntry, WarmupReport), ClientError>);
    let results: Vec<Outcome> = futures_util::stream::iter(objects.iter())
        .map(|ob| async move {
            let r = match ob.kind {
                ObjectKind::Blob => warm_blob(registry, ob, o.max_blob_size).await,
                ObjectKind::Manifest => warm_manifest(registry, ob, o.max_blob_size).await,
            };
            (ob.key.clone(), r)
        })
        .buffer_unordered(o.jobs.max(1))
        .collect()
        .await;
    let mut entries = Vec::with_capacity(results.len());
    let mut report = WarmupReport::default();
    let mut failed = Vec::new();
    for (key, r) in results {
        match r {
            Ok((e, rep)) => {
                entries.push(e);
                report.add(&rep);
            }
            Err(e) => failed.push((key, e)),
        }
    }
    failed.sort_by(|a, b| a.0.cmp(&b.0));
    let n = failed.len();
    if let Some((key, source)) = failed.into_iter().next() {
        return Err(WarmupError::Push {
            failed: n,
            objects: objects.len(),
            key,
            source,
        });
    }
    Ok((entries, report))
}

/// Pushes `content` to `repo` unless it is there; its digest, and whether it was pushed.
async fn push_content(
    registry: &Registry,
    repo: &RepoName,
    content: Content,
) -> Result<(Digest, bool), ClientError> {
    // Hashing a large blob is seconds of CPU: off the async workers.
    let digest = tokio::task::spawn_blocking(move || content.digest())
        .await
        .map_err(|e| ClientError::new(ErrorKind::Local, format!("hashing a blob: {e}")))?;
    if registry.blob_exists(repo, &digest).await? {
        return Ok((digest, false));
    }
    let body = futures_util::stream::iter(content.chunks().map(Ok::<Bytes, std::io::Error>));
    registry
        .push_blob_stream(repo, &digest, content.size(), body)
        .await?;
    Ok((digest, true))
}

async fn warm_blob(
    registry: &Registry,
    ob: &Object,
    max_blob_size: u64,
) -> Result<(MapEntry, WarmupReport), ClientError> {
    let repo = repository_name(&ob.repo);
    let (size, capped, defaulted) = planned_size(ob, max_blob_size);
    let (digest, pushed) = push_content(registry, &repo, Content::new(&ob.key, size)).await?;
    let report = WarmupReport {
        blobs: 1,
        pushed_blobs: pushed as u64,
        present: !pushed as u64,
        bytes_pushed: if pushed { size } else { 0 },
        capped: capped as u64,
        defaulted: defaulted as u64,
        ..WarmupReport::default()
    };
    let entry = MapEntry {
        uri: ob.key.clone(),
        kind: ObjectKind::Blob,
        repository: repo.to_string(),
        reference: digest.to_string(),
        digest,
        size,
        recorded_size: ob.size.filter(|&s| s != size),
    };
    Ok((entry, report))
}

/// The manifest of object `key`: config and layers as given, padded with an annotation to
/// `target` bytes when that is more than it needs (never over [`MAX_MANIFEST_SIZE`]).
fn manifest_bytes(
    key: &str,
    config: (&Digest, u64),
    layers: &[(Digest, u64)],
    target: u64,
) -> Vec<u8> {
    let make = |padding: usize| {
        let layers: Vec<serde_json::Value> = layers
            .iter()
            .map(|(d, s)| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": d.as_str(),
                    "size": s,
                })
            })
            .collect();
        let m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MediaType::OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config.0.as_str(),
                "size": config.1,
            },
            "layers": layers,
            "annotations": {
                "org.ferry.trace.uri": key,
                "org.ferry.trace.padding": "0".repeat(padding),
            },
        });
        serde_json::to_vec(&m).expect("a JSON value serializes")
    };
    let bare = make(0);
    let target = target.min(MAX_MANIFEST_SIZE) as usize;
    if target > bare.len() {
        make(target - bare.len())
    } else {
        bare
    }
}

async fn warm_manifest(
    registry: &Registry,
    ob: &Object,
    max_blob_size: u64,
) -> Result<(MapEntry, WarmupReport), ClientError> {
    let repo = repository_name(&ob.repo);
    let tag = tag_name(&ob.key, &ob.reference);
    let (total, capped, defaulted) = planned_size(ob, max_blob_size);
    let mut report = WarmupReport {
        manifests: 1,
        capped: capped as u64,
        defaulted: defaulted as u64,
        ..WarmupReport::default()
    };
    // Two layers summing to the size (each at least a byte), then a config naming them.
    let sizes = [(total / 2).max(1), (total - total / 2).max(1)];
    let contents: Vec<Content> = sizes
        .iter()
        .enumerate()
        .map(|(i, &s)| Content::new(&format!("{}#layer{i}", ob.key), s))
        .collect();
    let layer_digests: Vec<Digest> = {
        let cs = contents.clone();
        tokio::task::spawn_blocking(move || cs.iter().map(Content::digest).collect())
            .await
            .map_err(|e| ClientError::new(ErrorKind::Local, format!("hashing a blob: {e}")))?
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {
            "type": "layers",
            "diff_ids": layer_digests.iter().map(Digest::as_str).collect::<Vec<_>>(),
        },
        "config": { "Labels": { "org.ferry.trace.uri": &ob.key } },
    }))
    .expect("a JSON value serializes");
    let config_digest = Digest::sha256(&config);
    let layers: Vec<(Digest, u64)> = layer_digests.into_iter().zip(sizes).collect();
    let bytes = manifest_bytes(
        &ob.key,
        (&config_digest, config.len() as u64),
        &layers,
        ob.size.unwrap_or(0),
    );
    let digest = Digest::sha256(&bytes);
    let present = match registry.head_manifest(&repo, &tag).await {
        Ok(h) => h.digest.as_ref() == Some(&digest),
        Err(e) if e.kind == ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    if present {
        report.present += 1;
    } else {
        for c in contents {
            let (_, pushed) = push_content(registry, &repo, c).await?;
            if pushed {
                report.pushed_blobs += 1;
                report.bytes_pushed += c.size();
            }
        }
        if !registry.blob_exists(&repo, &config_digest).await? {
            report.bytes_pushed += config.len() as u64;
            report.pushed_blobs += 1;
            registry
                .push_blob(&repo, &config_digest, Bytes::from(config))
                .await?;
        }
        registry
            .put_manifest(
                &repo,
                &tag,
                MediaType::OCI_MANIFEST,
                Bytes::from(bytes.clone()),
            )
            .await?;
        report.pushed_manifests += 1;
        report.bytes_pushed += bytes.len() as u64;
    }
    let size = bytes.len() as u64;
    let entry = MapEntry {
        uri: ob.key.clone(),
        kind: ObjectKind::Manifest,
        repository: repo.to_string(),
        reference: tag,
        digest,
        size,
        recorded_size: ob.size.filter(|&s| s != size),
    };
    Ok((entry, report))
}
