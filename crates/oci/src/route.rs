//! The `/v2` path router: turns a raw request path into a typed [`Route`].
//!
//! Repository names contain slashes and may themselves have components called `manifests` or
//! `blobs`, so the path is split from the right: the endpoint is decided by the last one to three
//! segments and everything before them is the repository name.

use crate::digest::{Digest, DigestError};
use crate::reference::{ManifestRef, NameError, RepoName};

/// Longest upload session id accepted in a path.
const MAX_UPLOAD_ID_LEN: usize = 128;

/// A parsed `/v2` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the API version check.
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/<name>/manifests/<reference>`.
    Manifest {
        /// Repository.
        repo: RepoName,
        /// Tag or digest.
        reference: ManifestRef,
    },
    /// `/v2/<name>/blobs/<digest>`.
    Blob {
        /// Repository.
        repo: RepoName,
        /// Blob digest.
        digest: Digest,
    },
    /// `/v2/<name>/blobs/uploads/`.
    UploadStart {
        /// Repository.
        repo: RepoName,
    },
    /// `/v2/<name>/blobs/uploads/<id>`.
    Upload {
        /// Repository.
        repo: RepoName,
        /// Session id.
        id: String,
    },
    /// `/v2/<name>/tags/list`.
    TagsList {
        /// Repository.
        repo: RepoName,
    },
    /// `/v2/<name>/referrers/<digest>`.
    Referrers {
        /// Repository.
        repo: RepoName,
        /// Subject digest.
        digest: Digest,
    },
}

/// Why a path is not a valid `/v2` route. Each maps to one OCI error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Not under `/v2`, or no endpoint matches.
    #[error("no such endpoint: {0}")]
    NotFound(String),
    /// The repository name is invalid.
    #[error(transparent)]
    Name(NameError),
    /// The manifest tag is invalid.
    #[error(transparent)]
    Tag(NameError),
    /// A digest in the path is invalid.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// The upload id cannot be one ferry issued.
    #[error("upload session {0:?} is unknown")]
    UploadId(String),
}

impl Route {
    /// Parses the raw (not percent-decoded) request path. Percent-escapes are never decoded, so
    /// `%2e%2e` is simply an invalid name, not a way to climb directories.
    pub fn parse(path: &str) -> Result<Route, RouteError> {
        let not_found = || RouteError::NotFound(path.chars().take(300).collect());
        let rest = match path.strip_prefix("/v2") {
            Some("" | "/") => return Ok(Route::Base),
            Some(r) => r.strip_prefix('/').ok_or_else(not_found)?,
            None => return Err(not_found()),
        };
        if rest == "_catalog" {
            return Ok(Route::Catalog);
        }
        let segs: Vec<&str> = rest.split('/').collect();
        let n = segs.len();
        let seg = |i: usize| if i <= n && i > 0 { segs[n - i] } else { "" };
        let repo_of = |keep: usize| -> Result<RepoName, RouteError> {
            if n <= keep {
                return Err(not_found());
            }
            RepoName::new(&segs[..n - keep].join("/")).map_err(RouteError::Name)
        };

        if seg(2) == "tags" && seg(1) == "list" {
            return Ok(Route::TagsList { repo: repo_of(2)? });
        }
        if seg(3) == "blobs" && seg(2) == "uploads" && seg(1).is_empty() {
            return Ok(Route::UploadStart { repo: repo_of(3)? });
        }
        if seg(2) == "blobs" && seg(1) == "uploads" {
            return Ok(Route::UploadStart { repo: repo_of(2)? });
        }
        if seg(3) == "blobs" && seg(2) == "uploads" {
            let repo = repo_of(3)?;
            let id = seg(1);
            let ok = id.len() <= MAX_UPLOAD_ID_LEN
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(RouteError::UploadId(id.chars().take(140).collect()));
            }
            return Ok(Route::Upload {
                repo,
                id: id.to_owned(),
            });
        }
        match seg(2) {
            "blobs" if n >= 3 => {
                let repo = repo_of(2)?;
                Ok(Route::Blob {
                    repo,
                    digest: seg(1).parse()?,
                })
            }
            "manifests" if n >= 3 => {
                let repo = repo_of(2)?;
                let reference = seg(1).parse::<ManifestRef>().map_err(|e| match e {
                    NameError::Digest(d) => RouteError::Digest(d),
                    other => RouteError::Tag(other),
                })?;
                Ok(Route::Manifest { repo, reference })
            }
            "referrers" if n >= 3 => {
                let repo = repo_of(2)?;
                Ok(Route::Referrers {
                    repo,
                    digest: seg(1).parse()?,
                })
            }
            _ => Err(not_found()),
        }
    }

    /// The repository, for routes that have one.
    pub fn repo(&self) -> Option<&RepoName> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Manifest { repo, .. }
            | Route::Blob { repo, .. }
            | Route::UploadStart { repo }
            | Route::Upload { repo, .. }
            | Route::TagsList { repo }
            | Route::Referrers { repo, .. } => Some(repo),
        }
    }

    /// A short endpoint name for logs and metrics.
    pub fn endpoint(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Manifest { .. } => "manifest",
            Route::Blob { .. } => "blob",
            Route::UploadStart { .. } | Route::Upload { .. } => "upload",
            Route::TagsList { .. } => "tags",
            Route::Referrers { .. } => "referrers",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(path: &str, expect: &str) {
        let got = match Route::parse(path) {
            Ok(r) => format!("{r:?}"),
            Err(e) => format!("Err({e:?})"),
        };
        assert!(got.starts_with(expect), "{path}: {got}");
    }

    #[test]
    fn endpoints() {
        let d = Digest::sha256(b"");
        check("/v2/", "Base");
        check("/v2", "Base");
        check("/v2/_catalog", "Catalog");
        check(
            "/v2/a/b/c/d/e/manifests/latest",
            "Manifest { repo: RepoName(a/b/c/d/e), reference: Tag(",
        );
        check(
            &format!("/v2/a/manifests/{d}"),
            "Manifest { repo: RepoName(a), reference: Digest(",
        );
        check(&format!("/v2/a/blobs/{d}"), "Blob { repo: RepoName(a)");
        check("/v2/a/blobs/uploads/", "UploadStart { repo: RepoName(a) }");
        check("/v2/a/blobs/uploads", "UploadStart { repo: RepoName(a) }");
        check(
            "/v2/a/blobs/uploads/abc-123",
            "Upload { repo: RepoName(a), id: \"abc-123\"",
        );
        check("/v2/a/tags/list", "TagsList { repo: RepoName(a) }");
        check(
            &format!("/v2/a/referrers/{d}"),
            "Referrers { repo: RepoName(a)",
        );
        // Components named like endpoints belong to the repository.
        check(
            "/v2/manifests/blobs/manifests/v1",
            "Manifest { repo: RepoName(manifests/blobs)",
        );
        check(
            &format!("/v2/x/blobs/y/blobs/{d}"),
            "Blob { repo: RepoName(x/blobs/y)",
        );
        check(
            "/v2/tags/list/tags/list",
            "TagsList { repo: RepoName(tags/list) }",
        );
    }

    #[test]
    fn refusals() {
        let d = Digest::sha256(b"");
        check("/", "Err(NotFound");
        check("/v22/", "Err(NotFound");
        check("/v2/a", "Err(NotFound");
        check("/v2/manifests/latest", "Err(NotFound");
        check("/v2/../etc/manifests/x", "Err(Name");
        check("/v2/%2e%2e/manifests/x", "Err(Name");
        check("/v2/a//b/manifests/x", "Err(Name");
        check("/v2/A/manifests/x", "Err(Name");
        check("/v2/a\0b/manifests/x", "Err(Name");
        check(&format!("/v2/{}/manifests/x", "a".repeat(256)), "Err(Name");
        check(&format!("/v2/a/manifests/{}", "t".repeat(300)), "Err(Tag");
        check("/v2/a/manifests/..", "Err(Tag");
        check("/v2/a/manifests/sha256:abc", "Err(Digest");
        check("/v2/a/blobs/latest", "Err(Digest");
        check("/v2/a/blobs/uploads/../x", "Err(NotFound");
        check("/v2/a/blobs/uploads/a.b", "Err(UploadId");
        check(&format!("/v2/a/referrers/{d}x"), "Err(Digest");
    }

    proptest! {
        #[test]
        fn never_panics(s in "/v2/\\PC{0,300}") {
            let _ = Route::parse(&s);
        }

        #[test]
        fn traversal_never_yields_a_route(
            prefix in "[a-z]{1,5}",
            evil in prop_oneof![Just(".."), Just("%2e%2e"), Just("."), Just(""), Just("a\0"), Just("A"), Just("%2F")],
            endpoint in prop_oneof![Just("manifests/latest"), Just("tags/list"), Just("blobs/uploads/")],
        ) {
            let path = format!("/v2/{prefix}/{evil}/{endpoint}");
            prop_assert!(Route::parse(&path).is_err(), "{}", path);
        }

        #[test]
        fn repo_roundtrips(parts in proptest::collection::vec("[a-z0-9]{1,6}", 1..8), tag in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}") {
            let name = parts.join("/");
            let r = Route::parse(&format!("/v2/{name}/manifests/{tag}")).unwrap();
            prop_assert_eq!(r.repo().unwrap().as_str(), name.as_str());
        }
    }
}
