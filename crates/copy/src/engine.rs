//! The copy engine: resolves what to copy from a source, moves the blobs that the destination
//! lacks (`layer_jobs` at a time per image, `image_jobs` images at a time), then writes the
//! manifests byte for byte, children before the index, the named manifest last, so a reader never
//! sees a manifest whose blobs are missing.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ferry_client::{ClientError, Registry};
use ferry_oci::{Descriptor, Digest, Manifest};
use futures_util::{StreamExt, TryStreamExt, stream};

use crate::archive::{Archive, ArchiveLimits};
use crate::dest::Dest;
use crate::error::CopyError;
use crate::files::{self, Reporter};
use crate::location::{ArchiveImage, Location};
use crate::platform::{Platform, PlatformChoice, descriptor_platform};
use crate::progress::{BlobOutcome, Event, Progress};
use crate::recompress::{self, Compression, Conversion, NewBlob};
use crate::source::{self, Source};
use crate::store::{SourceNames, StoreTarget};
use crate::tarball;

/// How a copy runs.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Blobs transferred at once per image (`-j`).
    pub layer_jobs: usize,
    /// Images copied at once (`-J`).
    pub image_jobs: usize,
    /// What to take from a multi-platform image.
    pub platforms: PlatformChoice,
    /// Attempts per blob transfer (1 = no retries).
    pub attempts: u32,
    /// A directory of verified blobs (`blobs/<alg>/<hex>`, as in an OCI layout) reused across
    /// copies: a blob found there is not fetched from a registry source, and blobs fetched into
    /// a directory destination are added to it.
    pub layer_cache: Option<PathBuf>,
    /// The compression of the layers written (`--dest-compress`). [`Compression::Keep`] keeps
    /// every digest; another converts the layers stored otherwise and rewrites the manifests
    /// that list them (new digests).
    pub compression: Compression,
    /// What reading an archive source may cost (its unpacked size).
    pub archive_limits: ArchiveLimits,
}

impl Default for CopyOptions {
    fn default() -> CopyOptions {
        CopyOptions {
            layer_jobs: 8,
            image_jobs: 6,
            platforms: PlatformChoice::Host,
            attempts: 3,
            layer_cache: None,
            compression: Compression::Keep,
            archive_limits: ArchiveLimits::default(),
        }
    }
}

/// What one image's copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// The digest of the manifest written at the destination.
    pub digest: Digest,
    /// Manifests written (an index and each of its children count once).
    pub manifests_written: usize,
    /// Blobs transferred.
    pub blobs_copied: usize,
    /// Blobs the destination had already.
    pub blobs_present: usize,
    /// Blobs the destination registry mounted from another repository.
    pub blobs_mounted: usize,
    /// Blobs taken from the layer cache instead of the source.
    pub blobs_cached: usize,
    /// Bytes transferred (not counting bytes kept from an interrupted copy).
    pub bytes_copied: u64,
    /// Bytes of partial blobs kept from an interrupted copy.
    pub bytes_resumed: u64,
    /// Bytes of blobs not transferred because the destination had them.
    pub bytes_present: u64,
    /// Layers converted to another compression (`--dest-compress`); each is also counted as
    /// copied or present, by the source blob's size.
    pub blobs_recompressed: usize,
}

/// Most manifests of one index a copy takes (each is read whole, up to 4 MiB): what a source can
/// make a copy hold stays bounded. Real indexes list a few dozen platforms and attestations.
const MAX_CHILDREN: usize = 1_000;
/// Most layers of one image manifest (real images have tens).
const MAX_LAYERS: usize = 1_000;

/// Refuses an image manifest with more than [`MAX_LAYERS`] layers.
fn check_layers(m: &Manifest, image: &str) -> Result<(), CopyError> {
    if m.layers.len() > MAX_LAYERS {
        return Err(CopyError::malformed(
            image,
            format!(
                "a manifest of {} layers; ferry copies at most {MAX_LAYERS}",
                m.layers.len()
            ),
        ));
    }
    Ok(())
}

/// One blob at the destination: its source size, how it got there, and what it became if it
/// was converted (`--dest-compress`).
type PutBlob = (u64, BlobOutcome, Option<(Digest, NewBlob)>);

/// Builds the client for a registry host (the binary decides schemes, credentials and TLS).
pub type RegistryFactory = dyn Fn(&str) -> Result<Registry, ClientError> + Send + Sync;

/// Copies images. One per process: it holds one client per registry host (so connections and
/// tokens are shared by every copy) and serialises writers of the same blob.
pub struct Copier {
    options: CopyOptions,
    factory: Box<RegistryFactory>,
    progress: Arc<dyn Progress>,
    registries: Mutex<HashMap<String, Arc<Registry>>>,
    /// Stores opened by the caller, by the data directory a `ferry-store:` names.
    stores: HashMap<PathBuf, Arc<StoreTarget>>,
    /// One lock per destination blob file being written by this process.
    writing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Layers converted by this process, by destination, source digest and compression: an
    /// image that shares a layer with one copied before finds it converted.
    converted: Mutex<HashMap<String, NewBlob>>,
}

impl std::fmt::Debug for Copier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Copier")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Copier {
    /// A copier with these options, building registry clients with `factory` and reporting to
    /// `progress`.
    pub fn new(
        options: CopyOptions,
        factory: Box<RegistryFactory>,
        progress: Arc<dyn Progress>,
    ) -> Copier {
        Copier {
            options,
            factory,
            progress,
            registries: Mutex::default(),
            stores: HashMap::new(),
            writing: Mutex::default(),
            converted: Mutex::default(),
        }
    }

    /// Lets copies write into the store opened as `target` where a destination says
    /// `ferry-store:DATA_DIR` (the path as the location gives it).
    pub fn with_store(mut self, data_dir: PathBuf, target: StoreTarget) -> Copier {
        self.stores.insert(data_dir, Arc::new(target));
        self
    }

    fn registry(&self, host: &str) -> Result<Arc<Registry>, CopyError> {
        let mut map = self.registries.lock().expect("registry map poisoned");
        if let Some(r) = map.get(host) {
            return Ok(r.clone());
        }
        let r = Arc::new((self.factory)(host).map_err(|e| CopyError::registry(host, e))?);
        map.insert(host.to_owned(), r.clone());
        Ok(r)
    }

    async fn open_source(&self, location: &Location) -> Result<Source, CopyError> {
        match location {
            Location::Registry { reference } => Ok(Source::Registry {
                registry: self.registry(reference.registry.as_deref().unwrap_or_default())?,
                reference: reference.clone(),
            }),
            Location::OciLayout { dir, reference } => Ok(Source::Layout {
                dir: dir.clone(),
                reference: reference.clone(),
            }),
            Location::Dir {
                dir,
                unique_names: false,
            } => Ok(Source::Dir { dir: dir.clone() }),
            Location::Dir {
                unique_names: true, ..
            } => Err(CopyError::Unsupported(
                "reading from dir:…?unique_names=true is not supported yet; it is a destination",
            )),
            Location::OciArchive { file, reference } => {
                let (file, reference) = (file.clone(), reference.clone());
                let limits = self.options.archive_limits;
                tokio::task::spawn_blocking(move || {
                    source::open_archive(&file, None, reference, &limits)
                })
                .await
                .expect("archive task panicked")
            }
            Location::DockerArchive { file, image } => {
                let (file, image) = (file.clone(), image.clone());
                let limits = self.options.archive_limits;
                tokio::task::spawn_blocking(move || {
                    source::open_archive(&file, image, None, &limits)
                })
                .await
                .expect("archive task panicked")
            }
            Location::FerryStore { .. } => Err(CopyError::Unsupported(
                "ferry-store: is a destination only; read a store's images from its registry API (registry://)",
            )),
            Location::RegistryPattern { .. } | Location::Quay { .. } => {
                Err(CopyError::Unsupported(
                    "a wildcard names many images: the caller resolves it (ferry copy and ferry info do) into one location per image",
                ))
            }
        }
    }

    fn open_dest(&self, location: &Location, source: &Source) -> Result<Dest, CopyError> {
        match location {
            Location::OciLayout { dir, reference } => Ok(Dest::Layout {
                dir: dir.clone(),
                name: reference.clone(),
                image_name: source.image_name(),
            }),
            Location::Dir { dir, unique_names } => Ok(Dest::Dir {
                dir: dir.clone(),
                unique: *unique_names,
                image_name: source.image_name(),
            }),
            // An archive is staged as a layout next to it and written when the copy is done.
            Location::OciArchive { file, reference } => Ok(Dest::Layout {
                dir: tarball::staging(file),
                name: reference.clone(),
                image_name: source.image_name(),
            }),
            Location::DockerArchive { file, image } => Ok(Dest::Layout {
                dir: tarball::staging(file),
                name: None,
                image_name: match image {
                    Some(ArchiveImage::Named(r)) => Some(r.to_string()),
                    _ => source.image_name(),
                },
            }),
            Location::Registry { reference } => Ok(Dest::Registry {
                registry: self.registry(reference.registry.as_deref().unwrap_or_default())?,
                reference: reference.clone(),
            }),
            Location::FerryStore { data_dir } => {
                let target = self.stores.get(data_dir).ok_or(CopyError::Unsupported(
                    "a ferry-store: destination needs its store opened by the caller (Copier::with_store)",
                ))?;
                let (reference, tag_only) = source.names();
                let name = (target.naming)(&SourceNames {
                    reference: reference.as_ref(),
                    tag_only: tag_only.as_ref(),
                })
                .map_err(|e| CopyError::Destination {
                    destination: location.to_string(),
                    why: e.to_string(),
                })?;
                Ok(Dest::Store {
                    store: target.store.clone(),
                    name,
                    label: location.to_string(),
                })
            }
            _ => Err(CopyError::Unsupported(
                "writing to this destination with ferry copy is not supported yet",
            )),
        }
    }

    /// Copies one image.
    pub async fn copy(
        &self,
        source: &Location,
        destination: &Location,
    ) -> Result<Copied, CopyError> {
        let results = self
            .copy_many(&[(source.clone(), destination.clone())])
            .await;
        results.into_iter().next().expect("one result per pair")
    }

    /// Copies each (source, destination) pair, `image_jobs` at a time, then makes the files
    /// written durable (each destination directory fsynced once, at the end). One result per
    /// pair, in order.
    pub async fn copy_many(
        &self,
        pairs: &[(Location, Location)],
    ) -> Vec<Result<Copied, CopyError>> {
        let mut results: Vec<Result<Copied, CopyError>> = stream::iter(pairs)
            .map(|(s, d)| self.copy_one(s, d))
            .buffered(self.options.image_jobs.max(1))
            .collect()
            .await;
        let destinations: Vec<&Location> = pairs.iter().map(|(_, d)| d).collect();
        self.finish(&destinations, &mut results).await;
        results
    }

    /// Copies every image of an opened archive into `destination` (each named by the archive, as
    /// [`destination_for`] would), `image_jobs` at a time; then finishes as
    /// [`Copier::copy_many`] does. One result per image of the archive, in its order, with the
    /// image's label.
    pub async fn copy_archive(
        &self,
        archive: Arc<Archive>,
        destination: &Location,
    ) -> Vec<(String, Result<Copied, CopyError>)> {
        let labels: Vec<String> = archive.images.iter().map(|i| i.label()).collect();
        let mut results: Vec<Result<Copied, CopyError>> = stream::iter(0..archive.images.len())
            .map(|index| {
                let src = Source::Archive {
                    archive: archive.clone(),
                    index,
                };
                let image = format!("{} {}", archive.path.display(), labels[index]);
                async move { self.copy_source(src, Arc::from(image), destination).await }
            })
            .buffered(self.options.image_jobs.max(1))
            .collect()
            .await;
        let destinations = vec![destination; results.len()];
        self.finish(&destinations, &mut results).await;
        labels.into_iter().zip(results).collect()
    }

    /// What follows the copies into `destinations` (one per result): archives written,
    /// directories fsynced.
    async fn finish(&self, destinations: &[&Location], results: &mut [Result<Copied, CopyError>]) {
        // Archives are written once every copy into them is done; not if one failed (its staging
        // layout stays, and the next run resumes from it).
        let files: HashSet<PathBuf> = destinations
            .iter()
            .filter_map(|d| match d {
                Location::OciArchive { file, .. } | Location::DockerArchive { file, .. } => {
                    Some(file.clone())
                }
                _ => None,
            })
            .collect();
        for file in files {
            let into = |d: &Location| matches!(d, Location::OciArchive { file: f, .. } | Location::DockerArchive { file: f, .. } if *f == file);
            if destinations
                .iter()
                .zip(results.iter())
                .any(|(d, r)| into(d) && r.is_err())
            {
                continue;
            }
            let f = file.clone();
            let written = tokio::task::spawn_blocking(move || tarball::finish(&f))
                .await
                .expect("archive task panicked");
            if let Err(e) = written {
                let message = e.to_string();
                for (r, d) in results.iter_mut().zip(destinations) {
                    if into(d) {
                        *r = Err(CopyError::io(&file, std::io::Error::other(message.clone())));
                    }
                }
            }
        }
        let dirs: HashSet<PathBuf> = destinations
            .iter()
            .filter_map(|d| match d {
                Location::OciLayout { dir, .. } | Location::Dir { dir, .. } => Some(dir.clone()),
                _ => None,
            })
            .collect();
        for dir in dirs {
            let _ = tokio::fs::remove_dir(dir.join(files::PARTIAL_DIR)).await;
            if let Err(e) = files::sync_dir(&dir).await {
                // Unsynced content may be lost in a crash: fail every copy into this directory.
                let message = e.to_string();
                for (r, d) in results.iter_mut().zip(destinations) {
                    let into_dir = matches!(d, Location::OciLayout { dir: x, .. } | Location::Dir { dir: x, .. } if *x == dir);
                    if into_dir && r.is_ok() {
                        *r = Err(CopyError::io(
                            &dir,
                            std::io::Error::other(format!("sync failed: {message}")),
                        ));
                    }
                }
            }
        }
    }

    async fn copy_one(
        &self,
        source: &Location,
        destination: &Location,
    ) -> Result<Copied, CopyError> {
        if !source.can_be_source() {
            return Err(CopyError::Unsupported(
                "ferry-store: is a destination only; read a store's images from its registry API (registry://)",
            ));
        }
        let image: Arc<str> = Arc::from(source.to_string());
        let src = self.open_source(source).await?;
        self.copy_source(src, image, destination).await
    }

    /// Copies the image of an opened source, called `image` in progress and errors.
    async fn copy_source(
        &self,
        src: Source,
        image: Arc<str>,
        destination: &Location,
    ) -> Result<Copied, CopyError> {
        let dst = self.open_dest(destination, &src)?;
        let top = src.top().await?;
        // A store keeps an index as its source has it, whatever platforms were taken: a mirror
        // serves the upstream's digest for a tag.
        let keep_index = matches!(dst, Dest::Store { .. });
        let (to_write, images) = self.select(&src, &image, top, keep_index).await?;
        if matches!(destination, Location::DockerArchive { .. }) && to_write.media_type().is_index()
        {
            return Err(CopyError::Destination {
                destination: destination.to_string(),
                why: "a docker-archive holds one platform of an image; name it with --platform, or write an oci-archive".to_owned(),
            });
        }
        let conversions = recompress::plan(self.options.compression, &images);
        if !conversions.is_empty() {
            recompress::check_destination(&dst, destination)?;
        }
        dst.prepare().await?;

        // Distinct blobs of every image, in manifest order.
        let mut seen = HashSet::new();
        let blobs: Vec<Descriptor> = images
            .iter()
            .flat_map(|m| m.blob_references())
            .filter(|d| !d.is_foreign() && seen.insert(d.digest.clone()))
            .cloned()
            .collect();
        self.progress.event(Event::ImageStarted {
            image: &image,
            blobs: blobs.len(),
            bytes: blobs.iter().map(|d| d.size).sum(),
        });
        let reporter = Reporter {
            progress: self.progress.clone(),
            image: image.clone(),
        };
        let outcomes: Vec<PutBlob> = stream::iter(blobs.iter())
            .map(|d| async {
                Ok::<_, CopyError>(match conversions.get(&d.digest) {
                    Some(c) => {
                        let (new, outcome) =
                            self.put_converted(&src, &dst, d, *c, &reporter).await?;
                        (d.size, outcome, Some((d.digest.clone(), new)))
                    }
                    None => (d.size, self.put_blob(&src, &dst, d, &reporter).await?, None),
                })
            })
            .buffer_unordered(self.options.layer_jobs.max(1))
            .try_collect()
            .await?;
        let converted: HashMap<Digest, NewBlob> = outcomes
            .iter()
            .filter_map(|(_, _, new)| new.clone())
            .collect();
        let (to_write, images) = if converted.is_empty() {
            (to_write, images)
        } else {
            recompress::rewrite(&to_write, &images, &converted, &image)?
        };

        for m in &images {
            if m.digest() != to_write.digest() {
                dst.put_manifest(m, false).await?;
            }
        }
        dst.put_manifest(&to_write, true).await?;
        self.progress.event(Event::ImageDone {
            image: &image,
            digest: to_write.digest(),
        });
        let mut copied = Copied {
            digest: to_write.digest().clone(),
            manifests_written: images.len()
                + usize::from(images.iter().all(|m| m.digest() != to_write.digest())),
            blobs_copied: 0,
            blobs_present: 0,
            blobs_mounted: 0,
            blobs_cached: 0,
            bytes_copied: 0,
            bytes_resumed: 0,
            bytes_present: 0,
            blobs_recompressed: converted.len(),
        };
        for (size, outcome, _) in outcomes {
            match outcome {
                BlobOutcome::Copied { resumed_from } => {
                    copied.blobs_copied += 1;
                    copied.bytes_copied += size - resumed_from;
                    copied.bytes_resumed += resumed_from;
                }
                BlobOutcome::Present => {
                    copied.blobs_present += 1;
                    copied.bytes_present += size;
                }
                BlobOutcome::Mounted => copied.blobs_mounted += 1,
                BlobOutcome::Cached => {
                    copied.blobs_cached += 1;
                    copied.bytes_present += size;
                }
            }
        }
        Ok(copied)
    }

    async fn put_blob(
        &self,
        src: &Source,
        dst: &Dest,
        desc: &Descriptor,
        reporter: &Reporter,
    ) -> Result<BlobOutcome, CopyError> {
        // Two images of one copy sharing a layer write it once: the second waits and finds it.
        let key = dst.blob_key(&desc.digest);
        let lock = self
            .writing
            .lock()
            .expect("writer map poisoned")
            .entry(key)
            .or_default()
            .clone();
        let _held = lock.lock().await;
        self.progress.event(Event::BlobStarted {
            image: &reporter.image,
            digest: &desc.digest,
            size: desc.size,
        });
        let outcome = self.put_blob_via_cache(src, dst, desc, reporter).await?;
        self.progress.event(Event::BlobDone {
            image: &reporter.image,
            digest: &desc.digest,
            size: desc.size,
            outcome,
        });
        Ok(outcome)
    }

    /// [`recompress::put_converted`], once per layer, destination and compression in this
    /// process; a registry source's layer is read from the layer cache when it has it.
    async fn put_converted(
        &self,
        src: &Source,
        dst: &Dest,
        desc: &Descriptor,
        conversion: Conversion,
        reporter: &Reporter,
    ) -> Result<(NewBlob, BlobOutcome), CopyError> {
        let key = format!("{} as {:?}", dst.blob_key(&desc.digest), conversion.to);
        let lock = self
            .writing
            .lock()
            .expect("writer map poisoned")
            .entry(key.clone())
            .or_default()
            .clone();
        let _held = lock.lock().await;
        self.progress.event(Event::BlobStarted {
            image: &reporter.image,
            digest: &desc.digest,
            size: desc.size,
        });
        let done = self
            .converted
            .lock()
            .expect("converted map poisoned")
            .get(&key)
            .cloned();
        let (new, outcome) = match done {
            Some(new) => (new, BlobOutcome::Present),
            None => {
                let mut cached = None;
                if let Some(cache) = &self.options.layer_cache
                    && matches!(src, Source::Registry { .. })
                    && files::present(&crate::layout::blob_path(cache, &desc.digest), desc.size)
                        .await
                {
                    cached = Some(Source::Layout {
                        dir: cache.clone(),
                        reference: None,
                    });
                }
                let from = cached.as_ref().unwrap_or(src);
                let attempts = self.options.attempts;
                let (new, outcome) =
                    recompress::put_converted(from, dst, desc, conversion, attempts, reporter)
                        .await?;
                self.converted
                    .lock()
                    .expect("converted map poisoned")
                    .insert(key, new.clone());
                (new, outcome)
            }
        };
        self.progress.event(Event::BlobDone {
            image: &reporter.image,
            digest: &desc.digest,
            size: desc.size,
            outcome,
        });
        Ok((new, outcome))
    }

    /// [`Dest::put_blob`], taking a registry source's blob from the layer cache when it has it,
    /// and adding what was fetched into a directory to the cache.
    async fn put_blob_via_cache(
        &self,
        src: &Source,
        dst: &Dest,
        desc: &Descriptor,
        reporter: &Reporter,
    ) -> Result<BlobOutcome, CopyError> {
        let attempts = self.options.attempts;
        let Some(cache) = self
            .options
            .layer_cache
            .as_ref()
            .filter(|_| matches!(src, Source::Registry { .. }))
        else {
            return dst.put_blob(src, desc, attempts, reporter).await;
        };
        let cached = crate::layout::blob_path(cache, &desc.digest);
        if files::present(&cached, desc.size).await {
            let from = Source::Layout {
                dir: cache.clone(),
                reference: None,
            };
            return Ok(match dst.put_blob(&from, desc, attempts, reporter).await? {
                BlobOutcome::Copied { .. } => BlobOutcome::Cached,
                other => other,
            });
        }
        let outcome = dst.put_blob(src, desc, attempts, reporter).await?;
        if let (BlobOutcome::Copied { .. }, Some(file)) = (outcome, dst.blob_file(&desc.digest)) {
            // A hard link when the cache is on the same file system, else a copy; a failure
            // here costs the cache an entry, not the copy.
            let _ = files::add_to_cache(&file, &cached).await;
        }
        Ok(outcome)
    }

    /// What to write for `top`: the manifest the destination is named with, and the image
    /// manifests whose blobs it needs (for an index copied whole, its children).
    async fn select(
        &self,
        src: &Source,
        image: &str,
        top: Manifest,
        keep_index: bool,
    ) -> Result<(Manifest, Vec<Manifest>), CopyError> {
        if !top.media_type().is_index() {
            check_layers(&top, image)?;
            return Ok((top.clone(), vec![top]));
        }
        if top.manifests.len() > MAX_CHILDREN {
            return Err(CopyError::malformed(
                image,
                format!(
                    "an index of {} manifests; ferry copies at most {MAX_CHILDREN}",
                    top.manifests.len()
                ),
            ));
        }
        let pick = |spec: &Platform| -> Result<Descriptor, CopyError> {
            top.manifests
                .iter()
                .find(|d| d.platform.as_ref().is_some_and(|p| spec.matches(p)))
                .cloned()
                .ok_or_else(|| CopyError::Platform {
                    image: image.to_owned(),
                    wanted: spec.to_string(),
                    available: top
                        .manifests
                        .iter()
                        .map(descriptor_platform)
                        .collect::<Vec<_>>()
                        .join(", "),
                })
        };
        let chosen: Vec<Descriptor> = match &self.options.platforms {
            PlatformChoice::All => top.manifests.clone(),
            PlatformChoice::Host => vec![pick(&Platform::host())?],
            PlatformChoice::Only(specs) => {
                let mut v: Vec<Descriptor> = Vec::new();
                for s in specs {
                    let d = pick(s)?;
                    if !v.contains(&d) {
                        v.push(d);
                    }
                }
                v
            }
        };
        let mut children = Vec::with_capacity(chosen.len());
        for d in &chosen {
            let child = src.child(d).await?;
            if child.media_type().is_index() {
                return Err(CopyError::malformed(
                    image,
                    "an index inside an index is not supported",
                ));
            }
            check_layers(&child, image)?;
            children.push(child);
        }
        let whole = chosen.len() == top.manifests.len();
        match (&self.options.platforms, children.len()) {
            (PlatformChoice::All, _) => Ok((top, children)),
            _ if keep_index => Ok((top, children)),
            (_, 1) if !matches!(self.options.platforms, PlatformChoice::All) => {
                Ok((children[0].clone(), children))
            }
            _ if whole => Ok((top, children)),
            _ => {
                // A subset of platforms: a new index listing just them (a new digest).
                let mut index: serde_json::Value = serde_json::from_slice(top.bytes())
                    .map_err(|e| CopyError::malformed(image, e))?;
                index["manifests"] =
                    serde_json::to_value(&chosen).map_err(|e| CopyError::malformed(image, e))?;
                let bytes =
                    serde_json::to_vec(&index).map_err(|e| CopyError::malformed(image, e))?;
                let sub = Manifest::parse(bytes, Some(top.media_type().as_str()))
                    .map_err(|e| CopyError::malformed(image, e))?;
                Ok((sub, children))
            }
        }
    }
}

/// Where `source` goes when many images are copied into `destination`: an OCI layout or a
/// `dir:…?unique_names=true` names each image by its source's full name; a single-image
/// destination (`dir:` without `unique_names`, an explicitly named layout entry) cannot hold many.
pub fn destination_for(source: &Location, destination: &Location) -> Result<Location, CopyError> {
    let name = match source {
        Location::Registry { reference } => Some(reference.to_string()),
        Location::OciLayout { reference, .. } => reference.clone(),
        _ => None,
    };
    let many = |why: &str| CopyError::Destination {
        destination: destination.to_string(),
        why: why.to_owned(),
    };
    match destination {
        Location::OciLayout {
            dir,
            reference: None,
        } => Ok(Location::OciLayout {
            dir: dir.clone(),
            reference: Some(name.ok_or_else(|| {
                many("the source has no name to record in the layout's index.json")
            })?),
        }),
        Location::OciLayout { .. } => Err(many(
            "names one image; to copy many into a layout write oci:DIR without a name",
        )),
        Location::Dir {
            unique_names: true, ..
        } => Ok(destination.clone()),
        // Many images in one archive: each named after its source.
        Location::OciArchive {
            file,
            reference: None,
        } => Ok(Location::OciArchive {
            file: file.clone(),
            reference: name,
        }),
        Location::DockerArchive { image: None, .. } => Ok(destination.clone()),
        // A store names each image after its source.
        Location::FerryStore { .. } => Ok(destination.clone()),
        Location::Dir { dir, .. } => Err(many(&format!(
            "holds one image; for many write dir:{}?unique_names=true",
            dir.display()
        ))),
        // Many images into a registry: each keeps its repository path under the destination's
        // (`registry://mirror:5000/copies` gets `copies/team/app:v1`) and its tag or digest.
        Location::Registry { reference: to } => match source {
            Location::Registry { reference: from } => {
                let repo = format!("{}/{}", to.repo, from.repo);
                let mut r = ferry_oci::Reference::parse(&format!(
                    "{}/{repo}",
                    to.registry.as_deref().unwrap_or_default()
                ))
                .map_err(|e| many(&format!("{repo}: {e}")))?;
                r.tag = from.tag.clone();
                r.digest = from.digest.clone();
                Ok(Location::Registry { reference: r })
            }
            _ => Err(many(
                "takes many images from registries only (each keeps its repository path)",
            )),
        },
        _ => Err(many("cannot hold many images")),
    }
}
