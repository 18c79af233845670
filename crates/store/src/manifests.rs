//! Manifests (stored as content-addressed bytes plus a per-repository link holding the media
//! type), tags, the catalog and referrers.

use bytes::Bytes;
use ferry_oci::{Descriptor, Digest, Manifest, ManifestRef, RepoName, Tag};

use crate::compact::ManifestEntry;
use std::path::Path;
use std::sync::Arc;

use crate::layout::{fsync_dir, remove_if_exists, write_content, write_replacing};
use crate::{Durability, Store, StoreError};

/// What a HEAD needs: no bytes read.
#[derive(Debug, Clone)]
pub struct ManifestHead {
    /// Content digest.
    pub digest: Digest,
    /// Media type it was pushed with.
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
}

/// A manifest read back: the exact bytes received.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    /// Digest, media type and size.
    pub head: ManifestHead,
    /// The bytes, exactly as pushed.
    pub bytes: Bytes,
}

impl Store {
    /// Resolves a tag or digest to a manifest of `repo` from the index alone.
    pub fn resolve_manifest(
        &self,
        repo: &RepoName,
        reference: &ManifestRef,
    ) -> Result<ManifestHead, StoreError> {
        let unknown = || StoreError::ManifestUnknown(reference.to_string());
        self.with_repo(repo, |r| {
            let digest = match reference {
                ManifestRef::Digest(d) => d.clone(),
                ManifestRef::Tag(t) => r.tags.get(t.as_str()).ok_or_else(unknown)?,
            };
            let e = r.manifests.get(&digest).ok_or_else(unknown)?;
            Ok(ManifestHead {
                media_type: e.media_type.to_string(),
                size: e.size,
                digest,
            })
        })?
        .unwrap_or_else(|| Err(StoreError::NameUnknown(repo.clone())))
    }

    /// Reads a manifest's bytes, checking that they still hash to its digest (manifests are small;
    /// a damaged one is an error, never served).
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &ManifestRef,
    ) -> Result<StoredManifest, StoreError> {
        let mut head = self.resolve_manifest(repo, reference)?;
        if let Some(bytes) = self.small.get(&head.digest) {
            // Verified when it was read into memory.
            head.size = bytes.len() as u64;
            return Ok(StoredManifest { head, bytes });
        }
        let path = self.layout.blob(&head.digest);
        // Small manifests (nearly all) are read on this thread; see `SMALL_BLOB` for why.
        let read = if head.size <= crate::SMALL_BLOB {
            std::fs::read(&path)
        } else {
            tokio::fs::read(&path).await
        };
        let bytes = match read {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::ManifestUnknown(reference.to_string()));
            }
            Err(e) => return Err(StoreError::io(&path)(e)),
        };
        if Digest::of(head.digest.algorithm(), &bytes) != head.digest {
            return Err(StoreError::io(&path)(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "stored manifest does not hash to its name (run ferry fsck)",
            )));
        }
        head.size = bytes.len() as u64;
        let bytes = Bytes::from(bytes);
        if head.size <= crate::SMALL_BLOB {
            self.small.insert(&head.digest, &bytes);
        }
        Ok(StoredManifest { head, bytes })
    }

    /// Stores a manifest in `repo` and points `tags` at it. With `check_refs`, every blob the
    /// manifest names (and every child of an index) must already be in `repo`.
    pub async fn put_manifest(
        self: &Arc<Self>,
        repo: &RepoName,
        manifest: &Manifest,
        tags: &[Tag],
        check_refs: bool,
    ) -> Result<(), StoreError> {
        self.store_manifest(repo, manifest, tags, check_refs, Durability::Full)
            .await
    }

    /// [`Store::put_manifest`] for a cache's repository: the manifest's bytes are fsynced, its link
    /// and tags are not (see [`Durability::Cache`]); references are not checked (a mirror fetches
    /// blobs as clients ask).
    pub async fn cache_manifest(
        self: &Arc<Self>,
        repo: &RepoName,
        manifest: &Manifest,
        tags: &[Tag],
    ) -> Result<(), StoreError> {
        self.store_manifest(repo, manifest, tags, false, Durability::Cache)
            .await
    }

    async fn store_manifest(
        self: &Arc<Self>,
        repo: &RepoName,
        manifest: &Manifest,
        tags: &[Tag],
        check_refs: bool,
        durability: Durability,
    ) -> Result<(), StoreError> {
        if manifest.bytes().len() > self.options.max_manifest_bytes {
            return Err(StoreError::TooLarge(self.options.max_manifest_bytes));
        }
        let (repo, manifest, tags) = (repo.clone(), manifest.clone(), tags.to_vec());
        self.locked(&repo.clone(), move |store| async move {
            if check_refs {
                let missing = store.with_repo(&repo, |r| {
                    manifest
                        .blob_references()
                        .find(|d| {
                            !r.blobs.contains(&d.digest) && !r.manifests.contains_key(&d.digest)
                        })
                        .or_else(|| {
                            manifest
                                .manifests
                                .iter()
                                .find(|d| !r.manifests.contains_key(&d.digest))
                        })
                        .map(|d| d.digest.clone())
                })?;
                let missing = match missing {
                    Some(m) => m,
                    // An empty repository has none of them.
                    None => manifest
                        .blob_references()
                        .chain(&manifest.manifests)
                        .next()
                        .map(|d| d.digest.clone()),
                };
                if let Some(d) = missing {
                    return Err(StoreError::ManifestBlobUnknown(d));
                }
            }
            let digest = manifest.digest().clone();
            let media_type = manifest.media_type().as_str();
            let layout = store.layout.clone();
            let bytes = Bytes::copy_from_slice(manifest.bytes());
            let (repo2, digest2, tags2) = (repo.clone(), digest.clone(), tags.clone());
            let added = bytes.len() as u64;
            let created = tokio::task::spawn_blocking(move || {
                let blob = layout.blob(&digest2);
                // Existing content is marked used, so an online collection does not take it.
                let created = matches!(
                    crate::layout::mark_used(&blob),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound
                );
                if created {
                    // The bytes are always fsynced; only a cache may lose the name.
                    write_content(&layout, &blob, &bytes, durability)?;
                } else if durability == Durability::Full {
                    // Content a cache placed without fsyncing its name: make it durable now.
                    fsync_dir(blob.parent().unwrap_or(layout.root()))?;
                }
                write_replacing(
                    &layout,
                    &layout.manifest_link(&repo2, &digest2),
                    media_type.as_bytes(),
                    durability,
                )?;
                for t in &tags2 {
                    write_replacing(
                        &layout,
                        &layout.tag(&repo2, t),
                        digest2.as_str().as_bytes(),
                        durability,
                    )?;
                }
                Ok::<_, StoreError>(created)
            })
            .await
            .map_err(StoreError::join)??;
            if created {
                store.count_blob(added, true);
            }
            store.journal_manifest(&digest);
            store.update_repo(&repo, |r| {
                r.insert_manifest(&digest, ManifestEntry::of(&manifest, media_type));
                for t in &tags {
                    r.tags.insert(t.as_str().to_owned(), digest.clone());
                }
            });
            Ok(())
        })
        .await
    }

    /// Deletes a manifest and every tag pointing at it.
    pub async fn delete_manifest(
        self: &Arc<Self>,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        let (repo, digest) = (repo.clone(), digest.clone());
        self.locked(&repo.clone(), move |store| async move {
            let tags: Vec<String> = store
                .with_repo(&repo, |r| {
                    if !r.manifests.contains_key(&digest) {
                        return Err(StoreError::ManifestUnknown(digest.to_string()));
                    }
                    Ok(r.tags.pointing_at(&digest))
                })?
                .unwrap_or_else(|| Err(StoreError::NameUnknown(repo.clone())))?;
            let layout = store.layout.clone();
            let (repo2, digest2) = (repo.clone(), digest.clone());
            tokio::task::spawn_blocking(move || {
                for t in &tags {
                    if let Ok(tag) = Tag::new(t) {
                        remove_if_exists(&layout.tag(&repo2, &tag))?;
                    }
                }
                let link = layout.manifest_link(&repo2, &digest2);
                remove_if_exists(&link)?;
                fsync_dir(link.parent().unwrap_or(layout.root()))
            })
            .await
            .map_err(StoreError::join)??;
            store.update_repo(&repo, |r| {
                r.remove_manifest(&digest);
            });
            Ok(())
        })
        .await
    }

    /// How long ago a tag was last written or confirmed ([`Store::touch_tag`]); `None` if unknown.
    /// Its file's modification time is the record, so it survives restarts.
    pub fn tag_age(&self, repo: &RepoName, tag: &Tag) -> Option<std::time::Duration> {
        let modified = std::fs::metadata(self.layout.tag(repo, tag))
            .ok()?
            .modified()
            .ok()?;
        Some(
            std::time::SystemTime::now()
                .duration_since(modified)
                .unwrap_or_default(),
        )
    }

    /// Records that a tag was just confirmed current (a pull-through revalidation).
    pub fn touch_tag(&self, repo: &RepoName, tag: &Tag) -> Result<(), StoreError> {
        let path = self.layout.tag(repo, tag);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(StoreError::io(&path))?;
        f.set_modified(std::time::SystemTime::now())
            .map_err(StoreError::io(&path))
    }

    /// Deletes a tag; the manifest stays.
    pub async fn delete_tag(
        self: &Arc<Self>,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<(), StoreError> {
        let (repo, tag) = (repo.clone(), tag.clone());
        self.locked(&repo.clone(), move |store| async move {
            let known = store
                .with_repo(&repo, |r| r.tags.contains_key(tag.as_str()))?
                .unwrap_or(false);
            if !known {
                return Err(StoreError::ManifestUnknown(tag.to_string()));
            }
            let path = store.layout.tag(&repo, &tag);
            tokio::task::spawn_blocking(move || {
                remove_if_exists(&path)?;
                fsync_dir(path.parent().unwrap_or(Path::new(".")))
            })
            .await
            .map_err(StoreError::join)??;
            store.update_repo(&repo, |r| {
                r.tags.remove(tag.as_str());
            });
            Ok(())
        })
        .await
    }

    /// Tags of `repo` in lexical order, at most `n` after `last`.
    pub fn tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<usize>,
    ) -> Result<Vec<String>, StoreError> {
        self.with_repo(repo, |r| r.tags.page(last, n))?
            .ok_or_else(|| StoreError::NameUnknown(repo.clone()))
    }

    /// Whether `name` is a repository with content in the store.
    pub fn has_repository(&self, name: &str) -> bool {
        RepoName::new(name).is_ok_and(|r| self.ask_repo(&r, |_| true))
    }

    /// Repository names in lexical order, at most `n` after `last`: from the last walk of `repos/`
    /// while no change has run since it started, else from a new walk (one at a time).
    pub async fn repositories(
        &self,
        last: Option<&str>,
        n: Option<usize>,
    ) -> Result<Vec<String>, StoreError> {
        let names = self.repository_names().await?;
        let start = last.map_or(0, |l| names.partition_point(|name| name.as_str() <= l));
        Ok(names[start..]
            .iter()
            .take(n.unwrap_or(usize::MAX))
            .map(|name| name.as_str().to_owned())
            .collect())
    }

    async fn repository_names(&self) -> Result<Arc<Vec<RepoName>>, StoreError> {
        let cached = || {
            let walk = self.catalog.lock().unwrap_or_else(|e| e.into_inner());
            walk.as_ref()
                .filter(|w| self.generations.unchanged_since(w.mark))
                .map(|w| w.names.clone())
        };
        if let Some(names) = cached() {
            return Ok(names);
        }
        let _walking = self.catalog_walking.lock().await;
        if let Some(names) = cached() {
            return Ok(names);
        }
        let mark = self.generations.quiet_mark();
        let layout = self.layout.clone();
        let names = tokio::task::spawn_blocking(move || crate::index::repo_names(&layout))
            .await
            .map_err(StoreError::join)??;
        let names = Arc::new(names);
        self.repo_count
            .store(names.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if let Some(mark) = mark {
            *self.catalog.lock().unwrap_or_else(|e| e.into_inner()) = Some(crate::CatalogWalk {
                mark,
                names: names.clone(),
            });
        }
        Ok(names)
    }

    /// Manifests in `repo` whose subject is `subject`, optionally only those of `artifact_type`.
    pub fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Vec<Descriptor> {
        let found = self.with_repo(repo, |r| {
            let Some(set) = r.referrers.get(subject) else {
                return Vec::new();
            };
            set.iter()
                .filter_map(|d| r.manifests.get(d))
                .filter_map(|e| e.referrer.as_deref().map(|(_, desc)| desc))
                .filter(|desc| {
                    artifact_type.is_none_or(|a| desc.artifact_type.as_deref() == Some(a))
                })
                .cloned()
                .collect()
        });
        match found {
            Ok(list) => list.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(%repo, error = %e, "reading a repository's manifests failed");
                Vec::new()
            }
        }
    }
}
