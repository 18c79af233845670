//! A small client of Quay's REST API (`/api/v1`), for what the registry API cannot say: which
//! repositories a namespace has (Quay serves no `_catalog`) and which tags are active.
//!
//! The shapes follow Quay's own API source (quay/quay, `endpoints/api/repository.py`
//! `RepositoryList.get`, `endpoints/api/tag.py` `ListRepositoryTags.get`, and the `page_support`
//! decorator in `endpoints/api/__init__.py`), which is what docs.quay.io/api/swagger documents:
//!
//! - `GET /api/v1/repository?namespace=NS[&next_page=TOKEN]` → `{"repositories": [{"namespace",
//!   "name", …}], "next_page": TOKEN}`; `next_page` is present only while more pages follow and is
//!   passed back verbatim.
//! - `GET /api/v1/repository/NS/REPO/tag/?onlyActiveTags=true&limit=100&page=N[&specificTag=T]` →
//!   `{"tags": [{"name", "manifest_digest", …}], "page": N, "has_additional": bool}`; `limit` is at
//!   most 100 and pages count from 1.
//!
//! Anonymous requests see public repositories; a bearer token (an OAuth application token or a
//! robot's) sees what it is allowed to. Every listing is bounded in total bytes, and a listing
//! whose pages do not move on is an error, not a hang.

use std::time::Duration;

use reqwest::header;

use crate::error::{ClientError, ErrorKind};
use crate::registry::{check, read_bounded};

/// How to reach a Quay instance's REST API.
#[derive(Clone)]
pub struct QuayOptions {
    /// `scheme://host[:port]`, e.g. `https://quay.io`.
    pub endpoint: String,
    /// A bearer token (`Authorization: Bearer …`); `None` is anonymous.
    pub token: Option<String>,
    /// Accept any certificate (testing only).
    pub insecure_skip_verify: bool,
    /// Connection establishment limit.
    pub connect_timeout: Duration,
    /// Whole-request limit for each page.
    pub request_timeout: Duration,
    /// Largest page body read.
    pub max_page_bytes: usize,
    /// Largest listing (all pages together) read.
    pub max_total_bytes: usize,
    /// Attempts per page (1 = no retries): connection failures, 429 and 502/503/504 are retried,
    /// as the registry client retries them.
    pub attempts: u32,
    /// A `Retry-After` longer than this is not waited for; the error goes to the caller.
    pub max_retry_after: Duration,
}

impl Default for QuayOptions {
    fn default() -> QuayOptions {
        QuayOptions {
            endpoint: "https://quay.io".to_owned(),
            token: None,
            insecure_skip_verify: false,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_page_bytes: 16 << 20,
            max_total_bytes: 256 << 20,
            attempts: 3,
            max_retry_after: Duration::from_secs(5),
        }
    }
}

impl std::fmt::Debug for QuayOptions {
    // Never print the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuayOptions")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "****"))
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .finish_non_exhaustive()
    }
}

/// A tag as Quay's tag list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuayTag {
    /// The tag.
    pub name: String,
    /// The digest of the manifest it points at, as Quay reports it.
    pub manifest_digest: Option<String>,
}

/// A client of one Quay instance's REST API.
#[derive(Debug)]
pub struct Quay {
    options: QuayOptions,
    http: reqwest::Client,
}

/// Tags per page: Quay's maximum.
const TAG_PAGE: usize = 100;

impl Quay {
    /// Builds a client; fails on an endpoint that is not `http(s)://host[:port]`.
    pub fn new(mut options: QuayOptions) -> Result<Quay, ClientError> {
        let bad = |m: String| ClientError::new(ErrorKind::Request, m);
        let ep = options.endpoint.trim_end_matches('/').to_owned();
        if !(ep.starts_with("http://") || ep.starts_with("https://"))
            || ep
                .split("://")
                .nth(1)
                .is_none_or(|h| h.is_empty() || h.contains('/'))
        {
            return Err(bad(format!(
                "Quay endpoint {:?} must be http(s)://host[:port]",
                options.endpoint
            )));
        }
        options.endpoint = ep;
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(options.insecure_skip_verify)
            .build()
            .map_err(|e| bad(format!("HTTP client: {e}")))?;
        Ok(Quay { options, http })
    }

    /// The endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.options.endpoint
    }

    /// One page of JSON from `path` with `query`, retried while a retry may help (Quay's API
    /// rate-limits with 429 and `Retry-After`).
    async fn get_page<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        what: &str,
    ) -> Result<(T, usize), ClientError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.get_page_once(path, query, what).await {
                Err(e) if e.retryable() && attempt < self.options.attempts.max(1) => {
                    let wait = e
                        .retry_after
                        .unwrap_or(Duration::from_millis(100 << attempt.min(4)));
                    if wait > self.options.max_retry_after {
                        return Err(e);
                    }
                    tokio::time::sleep(wait).await;
                }
                done => return done,
            }
        }
    }

    async fn get_page_once<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        what: &str,
    ) -> Result<(T, usize), ClientError> {
        let url = format!("{}{path}", self.options.endpoint);
        let mut req = self
            .http
            .get(&url)
            .query(query)
            .header(header::ACCEPT, "application/json");
        if let Some(t) = &self.options.token {
            req = req.bearer_auth(t);
        }
        let r = req
            .send()
            .await
            .map_err(|e| ClientError::from_reqwest(&e, &format!("GET {url}")))?;
        check(&r, what)?;
        let body = read_bounded(r, self.options.max_page_bytes, what).await?;
        let parsed = serde_json::from_slice(&body)
            .map_err(|e| ClientError::new(ErrorKind::Protocol, format!("{what}: {e}")))?;
        Ok((parsed, body.len()))
    }

    /// The names (`namespace/name`) of every repository of `namespace` the caller may see,
    /// following `next_page`.
    pub async fn repositories(&self, namespace: &str) -> Result<Vec<String>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Repo {
            namespace: Option<String>,
            name: String,
        }
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            repositories: Vec<Repo>,
            next_page: Option<String>,
        }
        let what = format!("Quay repository list of {namespace}");
        let mut names = Vec::new();
        let mut total = 0usize;
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("namespace", namespace)];
            if let Some(t) = &token {
                query.push(("next_page", t));
            }
            let (page, bytes): (Page, usize) =
                self.get_page("/api/v1/repository", &query, &what).await?;
            total += bytes;
            if total > self.options.max_total_bytes {
                return Err(ClientError::new(
                    ErrorKind::Protocol,
                    format!(
                        "{what} is larger than {} bytes",
                        self.options.max_total_bytes
                    ),
                ));
            }
            let empty = page.repositories.is_empty();
            names.extend(
                page.repositories
                    .into_iter()
                    .map(|r| format!("{}/{}", r.namespace.as_deref().unwrap_or(namespace), r.name)),
            );
            match page.next_page {
                // A page with nothing on it cannot be a reason to ask for another.
                Some(_) if empty => return Ok(names),
                Some(next) if token.as_ref() == Some(&next) => {
                    return Err(ClientError::new(
                        ErrorKind::Protocol,
                        format!("{what} does not move past its page token"),
                    ));
                }
                Some(next) => token = Some(next),
                None => return Ok(names),
            }
        }
    }

    /// The active tags of `repository` (`namespace/name`), following `has_additional`; only
    /// `specific` if given (Quay filters by `specificTag`).
    pub async fn tags(
        &self,
        repository: &str,
        specific: Option<&str>,
    ) -> Result<Vec<QuayTag>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Tag {
            name: String,
            manifest_digest: Option<String>,
        }
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Vec<Tag>,
            #[serde(default)]
            has_additional: bool,
        }
        let what = format!("Quay tag list of {repository}");
        let path = format!("/api/v1/repository/{repository}/tag/");
        let limit = TAG_PAGE.to_string();
        let mut tags = Vec::new();
        let mut total = 0usize;
        for page_number in 1usize.. {
            let page_text = page_number.to_string();
            let mut query = vec![
                ("onlyActiveTags", "true"),
                ("limit", limit.as_str()),
                ("page", page_text.as_str()),
            ];
            if let Some(t) = specific {
                query.push(("specificTag", t));
            }
            let (page, bytes): (Page, usize) = self.get_page(&path, &query, &what).await?;
            total += bytes;
            if total > self.options.max_total_bytes {
                return Err(ClientError::new(
                    ErrorKind::Protocol,
                    format!(
                        "{what} is larger than {} bytes",
                        self.options.max_total_bytes
                    ),
                ));
            }
            let empty = page.tags.is_empty();
            tags.extend(page.tags.into_iter().map(|t| QuayTag {
                name: t.name,
                manifest_digest: t.manifest_digest,
            }));
            if !page.has_additional || empty {
                break;
            }
        }
        Ok(tags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Quay on 127.0.0.1 whose every answer is `page(n)` for the n-th request: it never says
    /// it is done.
    async fn endless(page: fn(usize) -> String, max_total_bytes: usize) -> Quay {
        serve(page, |_| 200, max_total_bytes).await
    }

    /// A Quay on 127.0.0.1 that answers the n-th request with `status(n)` and `page(n)`.
    async fn serve(
        page: fn(usize) -> String,
        status: fn(usize) -> u16,
        max_total_bytes: usize,
    ) -> Quay {
        let addr = crate::scripted::serve(move |n, _| {
            let body = page(n);
            format!(
                "HTTP/1.1 {} X\r\ncontent-type: application/json\r\nretry-after: 0\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                status(n),
                body.len()
            )
        })
        .await;
        Quay::new(QuayOptions {
            endpoint: format!("http://{addr}"),
            max_total_bytes,
            ..Default::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn listings_that_never_end_are_cut_off() {
        let within = std::time::Duration::from_secs(20);
        let repos = endless(
            |n| format!(r#"{{"repositories":[{{"namespace":"org","name":"r{n:09}"}}],"next_page":"t{n}"}}"#),
            4096,
        )
        .await;
        let e = tokio::time::timeout(within, repos.repositories("org"))
            .await
            .expect("cut off")
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Protocol, "{e}");
        assert!(e.to_string().contains("larger than 4096 bytes"), "{e}");

        let stuck = endless(
            |_| {
                r#"{"repositories":[{"namespace":"org","name":"r"}],"next_page":"same"}"#.to_owned()
            },
            1 << 20,
        )
        .await;
        let e = tokio::time::timeout(within, stuck.repositories("org"))
            .await
            .expect("cut off")
            .unwrap_err();
        assert!(e.to_string().contains("does not move past"), "{e}");

        let tags = endless(
            |n| format!(r#"{{"tags":[{{"name":"t{n:09}"}}],"page":{n},"has_additional":true}}"#),
            4096,
        )
        .await;
        let e = tokio::time::timeout(within, tags.tags("org/r", None))
            .await
            .expect("cut off")
            .unwrap_err();
        assert!(e.to_string().contains("larger than 4096 bytes"), "{e}");
    }

    #[tokio::test]
    async fn rate_limits_and_unavailability_are_retried_and_other_refusals_are_not() {
        let flaky = serve(
            |_| r#"{"tags":[{"name":"v1"}],"page":1,"has_additional":false}"#.to_owned(),
            |n| [429, 503, 200][n.min(2)],
            1 << 20,
        )
        .await;
        let tags = flaky.tags("org/r", Some("v1")).await.unwrap();
        assert_eq!(tags.len(), 1);
        assert_eq!(tags[0].name, "v1");

        let refused = serve(|_| "{}".to_owned(), |n| [403, 200][n.min(1)], 1 << 20).await;
        let e = refused.repositories("org").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Denied, "{e}");
    }

    #[test]
    fn endpoints_are_checked_and_tokens_never_printed() {
        for bad in ["", "quay.io", "http://", "https://quay.io/api"] {
            let o = QuayOptions {
                endpoint: bad.into(),
                ..Default::default()
            };
            assert!(Quay::new(o).is_err(), "{bad}");
        }
        let o = QuayOptions {
            token: Some("s3cret".into()),
            ..Default::default()
        };
        assert!(!format!("{o:?}").contains("s3cret"));
        assert_eq!(Quay::new(o).unwrap().endpoint(), "https://quay.io");
    }
}
