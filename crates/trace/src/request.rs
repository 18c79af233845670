//! One request of a trace, typed: what a registry was asked, by whom, when, and what it answered.

use std::sync::Arc;

/// An HTTP method as traces record them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// POST
    Post,
    /// DELETE
    Delete,
    /// Anything else.
    Other,
}

impl Method {
    /// The method named `s` (case-insensitive).
    pub fn parse(s: &str) -> Method {
        match s.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "POST" => Method::Post,
            "DELETE" => Method::Delete,
            _ => Method::Other,
        }
    }

    /// As HTTP spells it (`OTHER` for the rest).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            Method::Other => "OTHER",
        }
    }
}

/// What a request's URI addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `v2/<repo>/blobs/<digest>`
    Blob,
    /// `v2/<repo>/manifests/<reference>`
    Manifest,
    /// `v2` or `v2/`: the API version check.
    Ping,
    /// `v2/<repo>/blobs/uploads/[<session>]`
    Upload,
    /// `v2/<repo>/tags/list`
    Tags,
    /// `v2/_catalog`
    Catalog,
    /// Anything else.
    Other,
}

impl Kind {
    /// Lower-case name, as reports print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Blob => "blob",
            Kind::Manifest => "manifest",
            Kind::Ping => "ping",
            Kind::Upload => "upload",
            Kind::Tags => "tags",
            Kind::Catalog => "catalog",
            Kind::Other => "other",
        }
    }
}

/// What a URI addresses: its kind, repository and reference (a digest, tag or upload session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The kind.
    pub kind: Kind,
    /// The repository, for kinds that have one.
    pub repo: Option<String>,
    /// The digest (blobs), tag or digest (manifests), session (uploads).
    pub reference: Option<String>,
}

/// Classifies a registry URI, as traces record them (`v2/4715bf52/437c49db/blobs/93054319`, no
/// leading slash) or as servers see them (`/v2/library/alpine/manifests/3.20?ns=docker.io`).
/// Repository names contain slashes, so the path is read from its end, as registries route it.
/// Never fails: what is not a registry API path is [`Kind::Other`].
pub fn classify(uri: &str) -> Target {
    let path = uri.split(['?', '#']).next().unwrap_or("");
    let path = path.trim_start_matches('/');
    let other = Target {
        kind: Kind::Other,
        repo: None,
        reference: None,
    };
    let Some(rest) = path.strip_prefix("v2") else {
        return other;
    };
    if rest.is_empty() || rest == "/" {
        return Target {
            kind: Kind::Ping,
            repo: None,
            reference: None,
        };
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return other;
    };
    if rest.trim_end_matches('/') == "_catalog" {
        return Target {
            kind: Kind::Catalog,
            repo: None,
            reference: None,
        };
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let n = segments.len();
    let repo = |end: usize| -> Option<String> {
        let r = &segments[..end];
        (!r.is_empty() && r.iter().all(|s| !s.is_empty())).then(|| r.join("/"))
    };
    let target = |kind, end, reference: Option<&str>| match repo(end) {
        Some(repo) => Target {
            kind,
            repo: Some(repo),
            reference: reference.filter(|r| !r.is_empty()).map(str::to_owned),
        },
        None => Target {
            kind: Kind::Other,
            repo: None,
            reference: None,
        },
    };
    // Uploads: <repo>/blobs/uploads/ or <repo>/blobs/uploads/<session>.
    if n >= 3 && segments[n - 2] == "uploads" && segments[n - 3] == "blobs" {
        return target(Kind::Upload, n - 3, Some(segments[n - 1]));
    }
    if n >= 3 && segments[n - 1] == "uploads" && segments[n - 2] == "blobs" {
        return target(Kind::Upload, n - 2, None);
    }
    if n >= 3 && segments[n - 2] == "tags" && segments[n - 1] == "list" {
        return target(Kind::Tags, n - 2, None);
    }
    if n >= 3 && !segments[n - 1].is_empty() {
        match segments[n - 2] {
            "blobs" => return target(Kind::Blob, n - 2, Some(segments[n - 1])),
            "manifests" => return target(Kind::Manifest, n - 2, Some(segments[n - 1])),
            _ => {}
        }
    }
    other
}

/// One request of a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// When it arrived, in microseconds since the Unix epoch; `None` in a URI list, which has
    /// only the order.
    pub time_us: Option<i64>,
    /// Who sent it (the trace's anonymized `http.request.remoteaddr`).
    pub client: Option<Arc<str>>,
    /// The registry host that logged it (the trace's `host`).
    pub host: Option<Arc<str>>,
    /// The method (a URI list's requests are GETs).
    pub method: Method,
    /// The URI as recorded.
    pub uri: String,
    /// What the URI addresses.
    pub kind: Kind,
    /// Its repository.
    pub repo: Option<String>,
    /// Its digest, tag or session.
    pub reference: Option<String>,
    /// Bytes the response carried (`http.response.written`).
    pub size: Option<u64>,
    /// The response status.
    pub status: Option<u16>,
    /// How long the registry took, in seconds.
    pub duration_s: Option<f64>,
}

impl Request {
    /// A request of `method` for `uri`, classified, with nothing else known.
    pub fn new(method: Method, uri: String) -> Request {
        let Target {
            kind,
            repo,
            reference,
        } = classify(&uri);
        Request {
            time_us: None,
            client: None,
            host: None,
            method,
            uri,
            kind,
            repo,
            reference,
            size: None,
            status: None,
            duration_s: None,
        }
    }

    /// Whether a cache would serve it: a GET of a blob or manifest.
    pub fn is_cacheable(&self) -> bool {
        self.method == Method::Get && matches!(self.kind, Kind::Blob | Kind::Manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(uri: &str, kind: Kind, repo: Option<&str>, reference: Option<&str>) {
        let t = classify(uri);
        assert_eq!(
            (t.kind, t.repo.as_deref(), t.reference.as_deref()),
            (kind, repo, reference),
            "{uri}"
        );
    }

    #[test]
    fn trace_and_server_paths_are_classified() {
        check(
            "v2/4715bf52/437c49db/blobs/93054319",
            Kind::Blob,
            Some("4715bf52/437c49db"),
            Some("93054319"),
        );
        check(
            "/v2/library/alpine/manifests/3.20?ns=docker.io",
            Kind::Manifest,
            Some("library/alpine"),
            Some("3.20"),
        );
        check("v2", Kind::Ping, None, None);
        check("/v2/", Kind::Ping, None, None);
        check("/v2/_catalog?n=10", Kind::Catalog, None, None);
        check("/v2/a/b/tags/list", Kind::Tags, Some("a/b"), None);
        check("/v2/a/blobs/uploads/", Kind::Upload, Some("a"), None);
        check(
            "/v2/a/blobs/uploads/6f1c",
            Kind::Upload,
            Some("a"),
            Some("6f1c"),
        );
        // A repository may be called `blobs`.
        check(
            "v2/blobs/blobs/sha256:ab",
            Kind::Blob,
            Some("blobs"),
            Some("sha256:ab"),
        );
        check("v2//blobs/x", Kind::Other, None, None);
        check("v2/blobs/x", Kind::Other, None, None);
        check("v1/_ping", Kind::Other, None, None);
        check("v2x/a/blobs/b", Kind::Other, None, None);
        check("", Kind::Other, None, None);
    }

    fn segment() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9._-]{0,8}"
    }

    proptest! {
        #[test]
        fn classify_never_panics(uri in ".{0,200}") {
            let _ = classify(&uri);
        }

        #[test]
        fn blob_and_manifest_paths_round_trip(
            repo in proptest::collection::vec(segment(), 1..5),
            reference in "[a-zA-Z0-9:._-]{1,40}",
            manifest in any::<bool>(),
            slash in any::<bool>(),
        ) {
            let repo = repo.join("/");
            // The two spellings that mean something else: an upload and a tag list.
            prop_assume!(reference != "uploads" && !(reference == "list" && repo.ends_with("tags")));
            let what = if manifest { "manifests" } else { "blobs" };
            let uri = format!("{}v2/{repo}/{what}/{reference}", if slash { "/" } else { "" });
            let t = classify(&uri);
            prop_assert_eq!(t.kind, if manifest { Kind::Manifest } else { Kind::Blob });
            prop_assert_eq!(t.repo.as_deref(), Some(repo.as_str()));
            prop_assert_eq!(t.reference.as_deref(), Some(reference.as_str()));
        }
    }
}
