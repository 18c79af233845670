//! Blob uploads: monolithic (from memory, a stream or a file), chunked, and cross-repository
//! mounts.

use std::path::Path;
use std::sync::Mutex;

use bytes::Bytes;
use ferry_oci::{Digest, RepoName};
use futures_util::Stream;
use reqwest::{Method, StatusCode, header};

use crate::error::{ClientError, ErrorKind};
use crate::registry::{Access, Payload, Registry, Request, backoff, check};

/// An upload session the registry opened.
#[derive(Debug)]
struct Session {
    /// Where the next request of the session goes.
    url: reqwest::Url,
    /// `OCI-Chunk-Min-Length`: the smallest chunk the registry accepts (but for the last).
    chunk_min: Option<u64>,
}

/// An upload session a registry opened (`POST …/blobs/uploads/`), waiting for the blob's bytes:
/// [`Registry::start_upload`] opens it, [`Registry::finish_upload_stream`] sends them. Opening it
/// while the bytes are still being fetched from elsewhere takes the `POST`'s round trip off the
/// copy's path. An upload never finished is left for the registry to expire.
#[derive(Debug)]
pub struct Upload {
    session: Session,
}

impl Registry {
    /// Opens an upload session in `repo` (`POST`), for [`Registry::finish_upload_stream`].
    pub async fn start_upload(&self, repo: &RepoName) -> Result<Upload, ClientError> {
        Ok(Upload {
            session: self.open_upload(repo).await?,
        })
    }

    /// Sends `size` bytes from `body` as the blob `digest` into `upload`, a session of `repo`,
    /// in one streaming `PUT` with `Content-Length`; the registry checks the digest. The body
    /// can be sent once only, so nothing is retried here: on a retryable error the caller opens
    /// its source and a new upload again.
    pub async fn finish_upload_stream<S>(
        &self,
        repo: &RepoName,
        upload: Upload,
        digest: &Digest,
        size: u64,
        body: S,
    ) -> Result<(), ClientError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let body = Payload::Once(Mutex::new(Some(reqwest::Body::wrap_stream(body))), size);
        self.put_upload(repo, upload.session, digest, body).await
    }

    /// Uploads a blob held in memory: `POST` to open an upload, then one `PUT` with the bytes and
    /// the digest (the form every registry supports).
    pub async fn push_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        bytes: Bytes,
    ) -> Result<(), ClientError> {
        let session = self.open_upload(repo).await?;
        let url = with_digest(session.url, digest);
        let r = self
            .send_with(Request {
                whole: false,
                access: Access::Push,
                payload: Payload::Bytes("application/octet-stream", bytes),
                ..Request::new(Method::PUT, url.as_str(), repo)
            })
            .await?;
        check(&r, "upload PUT")
    }

    /// Uploads `size` bytes from `body` as the blob `digest`: `POST`, then one streaming `PUT`
    /// with `Content-Length`. The body can be sent once only, so the `PUT` is not retried here: on
    /// a retryable error the caller opens its source again and calls again.
    pub async fn push_blob_stream<S>(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        body: S,
    ) -> Result<(), ClientError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    {
        let body = Payload::Once(Mutex::new(Some(reqwest::Body::wrap_stream(body))), size);
        self.upload_once(repo, digest, body).await
    }

    /// Uploads the first `size` bytes of the file at `path` as the blob `digest` (`POST`, then one
    /// `PUT` with `Content-Length`). The file can be read again, so a failure a retry may fix
    /// starts a new upload, up to the client's `attempts`.
    pub async fn push_blob_file(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        path: &Path,
    ) -> Result<(), ClientError> {
        let attempts = self.options.attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.push_file_once(repo, digest, size, path).await;
            match result {
                Err(e) if e.retryable() && attempt < attempts => {
                    tracing::debug!(%digest, "upload failed, starting it again: {e}");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn push_file_once(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        path: &Path,
    ) -> Result<(), ClientError> {
        let body = Payload::File {
            path,
            offset: 0,
            len: size,
        };
        self.upload_once(repo, digest, body).await
    }

    /// One monolithic upload: `POST` a session, then one `PUT` of `body` with the digest. The
    /// `PUT` is not retried on its own: a failed one may have ended the session, so a caller that
    /// can read its body again retries the whole upload.
    async fn upload_once(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: Payload<'_>,
    ) -> Result<(), ClientError> {
        let session = self.open_upload(repo).await?;
        self.put_upload(repo, session, digest, body).await
    }

    /// The `PUT` that ends a monolithic upload: `body` with the digest, not retried on its own.
    async fn put_upload(
        &self,
        repo: &RepoName,
        session: Session,
        digest: &Digest,
        body: Payload<'_>,
    ) -> Result<(), ClientError> {
        let url = with_digest(session.url, digest);
        let r = self
            .send_with(Request {
                whole: false,
                access: Access::Push,
                payload: body,
                retry: false,
                ..Request::new(Method::PUT, url.as_str(), repo)
            })
            .await?;
        check(&r, "upload PUT")
    }

    /// Asks the registry to mount the blob `digest` of `from` into `repo`
    /// (`POST …/blobs/uploads/?mount=<digest>&from=<from>`, with a token that may pull from
    /// `from`). `true` when the blob is now in `repo` (201); `false` when the registry opened an
    /// upload instead (202: it will not mount, e.g. `from` is not readable), and the caller
    /// uploads the blob.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: &RepoName,
    ) -> Result<bool, ClientError> {
        let mut url = reqwest::Url::parse(&format!("{}/v2/{repo}/blobs/uploads/", self.endpoint()))
            .map_err(|e| ClientError::new(ErrorKind::Request, e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("mount", digest.as_str())
            .append_pair("from", from.as_str());
        let r = self
            .send_with(Request {
                access: Access::Mount(from),
                ..Request::new(Method::POST, url.as_str(), repo)
            })
            .await?;
        match r.status() {
            StatusCode::CREATED => Ok(true),
            // The session the registry opened is left to expire: a later upload opens its own.
            StatusCode::ACCEPTED => Ok(false),
            _ => check(&r, "mount POST").map(|()| false),
        }
    }

    /// Uploads the first `size` bytes of the file at `path` in chunks: `POST`, then one `PATCH`
    /// per chunk of `chunk` bytes (never smaller than the registry's `OCI-Chunk-Min-Length`, but
    /// for the last) with `Content-Range`, each sent to the `Location` of the previous answer,
    /// then a `PUT` with the digest. A chunk is retried like any request; when the registry
    /// refuses one (416: it holds another length), the upload continues from what it says it has.
    pub async fn push_blob_chunked(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        path: &Path,
        chunk: u64,
    ) -> Result<(), ClientError> {
        let session = self.open_upload(repo).await?;
        let chunk = chunk.max(session.chunk_min.unwrap_or(0)).max(1);
        let mut url = session.url;
        let mut offset = 0u64;
        let mut refused = 0;
        while offset < size {
            let len = chunk.min(size - offset);
            let r = self
                .send_with(Request {
                    whole: false,
                    access: Access::Push,
                    payload: Payload::File { path, offset, len },
                    headers: vec![(
                        header::CONTENT_RANGE,
                        format!("{offset}-{}", offset + len - 1),
                    )],
                    ..Request::new(Method::PATCH, url.as_str(), repo)
                })
                .await?;
            if r.status() == StatusCode::RANGE_NOT_SATISFIABLE && refused < 3 {
                // A retried chunk the registry had already taken, for instance.
                refused += 1;
                (url, offset) = self.upload_status(repo, url).await?;
                continue;
            }
            check(&r, "upload PATCH")?;
            url = self.location(&r, "upload PATCH")?;
            offset += len;
        }
        let url = with_digest(url, digest);
        let r = self
            .send_with(Request {
                access: Access::Push,
                payload: Payload::Bytes("application/octet-stream", Bytes::new()),
                ..Request::new(Method::PUT, url.as_str(), repo)
            })
            .await?;
        check(&r, "upload PUT")
    }

    /// `GET` of an upload session: where it goes on and how many bytes the registry holds.
    async fn upload_status(
        &self,
        repo: &RepoName,
        url: reqwest::Url,
    ) -> Result<(reqwest::Url, u64), ClientError> {
        let r = self
            .send_with(Request {
                access: Access::Push,
                ..Request::new(Method::GET, url.as_str(), repo)
            })
            .await?;
        check(&r, "upload status")?;
        let held = r
            .headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().strip_prefix("bytes=").or(Some(v.trim())))
            .and_then(|v| v.split_once('-'))
            .and_then(|(_, end)| end.parse::<u64>().ok())
            .map_or(0, |end| end + 1);
        let next = match r.headers().get(header::LOCATION) {
            Some(_) => self.location(&r, "upload status")?,
            None => url,
        };
        Ok((next, held))
    }

    /// `POST /v2/<repo>/blobs/uploads/`: a new session.
    async fn open_upload(&self, repo: &RepoName) -> Result<Session, ClientError> {
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.endpoint());
        let r = self
            .send_with(Request {
                access: Access::Push,
                ..Request::new(Method::POST, &url, repo)
            })
            .await?;
        check(&r, "upload POST")?;
        let chunk_min = r
            .headers()
            .get("oci-chunk-min-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        Ok(Session {
            url: self.location(&r, "upload POST")?,
            chunk_min,
        })
    }

    /// The `Location` of an upload answer, as a URL.
    fn location(&self, r: &reqwest::Response, what: &str) -> Result<reqwest::Url, ClientError> {
        let location = r
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ClientError::new(ErrorKind::Protocol, format!("{what} without Location"))
            })?;
        self.resolve(location)
    }
}

/// `url` with `digest=<digest>` added to its query (a session URL may have a query already).
fn with_digest(mut url: reqwest::Url, digest: &Digest) -> reqwest::Url {
    url.query_pairs_mut().append_pair("digest", digest.as_str());
    url
}
