//! A registry's catalog (`GET /v2/_catalog`): the repositories it holds, page by page.
//!
//! Kept apart from `registry.rs` so the listing commands grow here; it uses the same sending,
//! authentication and bounds as the rest of the client.

use reqwest::{Method, header};

use crate::error::{ClientError, ErrorKind};
use ferry_oci::RepoName;

use crate::registry::{Access, Registry, Request, check, read_bounded};

/// One page of a registry's catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogPage {
    /// The repositories on this page, in the registry's order.
    pub repositories: Vec<String>,
    /// Whether the registry announced a next page (a `Link` header).
    pub more: bool,
    /// The size of the page's body, for bounding a whole listing.
    pub bytes: usize,
}

impl Registry {
    /// `GET /v2/_catalog`, one page (`n` repositories after `last`); the body is bounded by
    /// `max` bytes.
    pub async fn catalog_page(
        &self,
        n: Option<usize>,
        last: Option<&str>,
        max: usize,
    ) -> Result<CatalogPage, ClientError> {
        let mut url = reqwest::Url::parse(&format!("{}/v2/_catalog", self.endpoint()))
            .map_err(|e| ClientError::new(ErrorKind::Request, e.to_string()))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(n) = n {
                q.append_pair("n", &n.to_string());
            }
            if let Some(l) = last {
                q.append_pair("last", l);
            }
        }
        let url = url.to_string().trim_end_matches('?').to_owned();
        // Requests are addressed by repository; the catalog's scope names none, so any valid
        // name stands in.
        let anywhere = RepoName::new("catalog").expect("a valid repository name");
        let r = self
            .send_with(Request {
                access: Access::Catalog,
                ..Request::new(Method::GET, &url, &anywhere)
            })
            .await?;
        check(&r, "catalog")?;
        let more = r.headers().contains_key(header::LINK);
        let body = read_bounded(r, max, "the registry's catalog page").await?;
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        let parsed: Page = serde_json::from_slice(&body).map_err(|e| {
            ClientError::new(ErrorKind::Protocol, format!("the registry's catalog: {e}"))
        })?;
        Ok(CatalogPage {
            repositories: parsed.repositories.unwrap_or_default(),
            more,
            bytes: body.len(),
        })
    }

    /// Every repository of the registry, following the catalog's pagination as
    /// [`Registry::all_tags`] follows a tag list's: each page asks for the names after the last
    /// one of the previous page, until a page comes without `Link`. `page_size` is the `n` to ask
    /// for (`None`: the registry's default); each page's body is bounded by `max_page` bytes and
    /// all pages together by `max_total`, and a page must move past the previous one, so a
    /// registry that pages forever or repeats itself is an error, not a hang.
    pub async fn all_repositories(
        &self,
        page_size: Option<usize>,
        max_page: usize,
        max_total: usize,
    ) -> Result<Vec<String>, ClientError> {
        let mut names: Vec<String> = Vec::new();
        let mut total = 0usize;
        loop {
            let before = names.last().cloned();
            let page = self
                .catalog_page(page_size, before.as_deref(), max_page)
                .await?;
            total += page.bytes;
            if total > max_total {
                return Err(ClientError::new(
                    ErrorKind::Protocol,
                    format!("the registry's catalog is larger than {max_total} bytes"),
                ));
            }
            // A page with no names cannot move `last` on: stop rather than ask for it again.
            let empty = page.repositories.is_empty();
            names.extend(page.repositories);
            if !page.more || empty {
                return Ok(names);
            }
            if names.last() == before.as_ref() {
                return Err(ClientError::new(
                    ErrorKind::Protocol,
                    format!(
                        "the registry's catalog does not move past {:?}",
                        before.unwrap_or_default()
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RegistryOptions;

    /// A registry on 127.0.0.1 whose catalog pages always say there is more: `page(n)` is the
    /// body of the n-th page. Also records each request line.
    async fn paging_forever(
        page: fn(usize) -> String,
    ) -> (Registry, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let addr = crate::scripted::serve(move |n, line| {
            log.lock().unwrap().push(line.to_owned());
            crate::scripted::endless_page("/v2/_catalog?last=x", &page(n))
        })
        .await;
        let registry = Registry::new(RegistryOptions {
            endpoint: format!("http://{addr}"),
            attempts: 1,
            ..Default::default()
        })
        .unwrap();
        (registry, seen)
    }

    #[tokio::test]
    async fn a_catalog_that_pages_forever_is_cut_off() {
        let (endless, seen) =
            paging_forever(|n| format!(r#"{{"repositories":["r{n:09}"]}}"#)).await;
        // Without the bounds this call never returns: the timeout turns that into a failure.
        let within = std::time::Duration::from_secs(20);
        let e = tokio::time::timeout(within, endless.all_repositories(Some(1), 1024, 4096))
            .await
            .expect("cut off")
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Protocol, "{e}");
        assert!(e.to_string().contains("larger than 4096 bytes"), "{e}");
        // Each page asks for the names after the last one it has.
        let seen = seen.lock().unwrap().clone();
        assert!(seen[0].starts_with("GET /v2/_catalog?n=1 "), "{seen:?}");
        assert!(
            seen[1].starts_with("GET /v2/_catalog?n=1&last=r000000000 "),
            "{seen:?}"
        );

        let (stuck, _) = paging_forever(|_| r#"{"repositories":["same"]}"#.to_owned()).await;
        let e = tokio::time::timeout(within, stuck.all_repositories(None, 1024, 1 << 20))
            .await
            .expect("cut off")
            .unwrap_err();
        assert!(e.to_string().contains("does not move past"), "{e}");
    }
}
