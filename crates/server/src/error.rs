//! [`ApiError`]: an OCI error envelope with its status and extra headers.

use axum::response::{IntoResponse, Response};
use ferry_oci::{ErrorCode, OciError, RouteError};
use ferry_store::StoreError;
use http::{HeaderName, HeaderValue, StatusCode, header};

/// An error answered to the client as `{"errors":[…]}`.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The envelope's one error.
    pub error: OciError,
    /// Extra headers (e.g. `Range` on a 416 upload chunk).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// For the server log only: what the store said when it found the storage full.
    full_storage_cause: Option<String>,
}

/// Marks a response that says the storage is full (carrying the store's words for the log), so
/// the dispatcher counts it and logs the episode.
#[derive(Debug, Clone)]
pub(crate) struct StorageFullAnswer(pub Option<String>);

impl ApiError {
    /// An error with the code's default status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(code.default_status()).unwrap_or(StatusCode::BAD_REQUEST),
            error: OciError::new(code, message),
            headers: Vec::new(),
            full_storage_cause: None,
        }
    }

    /// Overrides the status.
    pub fn status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: HeaderName, value: &str) -> ApiError {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    /// For the log only: why the storage counts as full (see [`StorageFullAnswer`]).
    pub(crate) fn full_storage_cause(mut self, cause: String) -> ApiError {
        self.full_storage_cause = Some(cause);
        self
    }

    /// Adds structured detail.
    pub fn detail(mut self, detail: serde_json::Value) -> ApiError {
        self.error.detail = Some(detail);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.error.to_json();
        let mut res = (self.status, body).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (k, v) in self.headers {
            h.insert(k, v);
        }
        if self.error.code == ErrorCode::StorageFull {
            res.extensions_mut()
                .insert(StorageFullAnswer(self.full_storage_cause));
        }
        res
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        use ErrorCode as C;
        let msg = e.to_string();
        match e {
            StoreError::BlobUnknown(d) => {
                ApiError::new(C::BlobUnknown, msg).detail(serde_json::json!({ "digest": d }))
            }
            StoreError::ManifestUnknown(r) => {
                ApiError::new(C::ManifestUnknown, msg).detail(serde_json::json!({ "reference": r }))
            }
            StoreError::NameUnknown(n) => {
                ApiError::new(C::NameUnknown, msg).detail(serde_json::json!({ "name": n.as_str() }))
            }
            StoreError::UploadUnknown(_) => ApiError::new(C::BlobUploadUnknown, msg),
            StoreError::DigestMismatch { expected, actual } => ApiError::new(C::DigestInvalid, msg)
                .detail(serde_json::json!({ "expected": expected, "actual": actual })),
            StoreError::SizeMismatch { .. } => ApiError::new(C::SizeInvalid, msg),
            StoreError::OutOfOrder { offset, .. } => ApiError::new(C::BlobUploadInvalid, msg)
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::RANGE, &crate::api::upload_range(offset)),
            StoreError::ManifestBlobUnknown(d) => ApiError::new(C::ManifestBlobUnknown, msg)
                .detail(serde_json::json!({ "digest": d })),
            StoreError::TooLarge(_) => {
                ApiError::new(C::SizeInvalid, msg).status(StatusCode::PAYLOAD_TOO_LARGE)
            }
            StoreError::Body(_) => ApiError::new(C::BlobUploadInvalid, msg),
            StoreError::TooManyUploads(_) | StoreError::TooManyUploadsFromClient(_) => {
                ApiError::new(C::TooManyRequests, msg).header(header::RETRY_AFTER, "60")
            }
            // Logged once per episode by the dispatcher, not once per request.
            StoreError::Full { .. } => ApiError::new(
                C::StorageFull,
                "the registry's storage is full: nothing was stored; retry once space is freed",
            )
            .full_storage_cause(msg),
            StoreError::Locked(_)
            | StoreError::Io { .. }
            | StoreError::Task(_)
            | StoreError::NotAStore(_)
            | StoreError::CaseInsensitive(_) => {
                tracing::error!(error = %msg, "internal error");
                ApiError::new(C::Internal, "internal storage error; see the server log")
            }
        }
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> ApiError {
        let msg = e.to_string();
        match e {
            RouteError::NotFound(_) => ApiError::new(ErrorCode::NotFound, msg),
            RouteError::Name(_) => ApiError::new(ErrorCode::NameInvalid, msg),
            RouteError::Tag(_) => ApiError::new(ErrorCode::TagInvalid, msg),
            RouteError::Digest(_) => ApiError::new(ErrorCode::DigestInvalid, msg),
            RouteError::UploadId(_) => ApiError::new(ErrorCode::BlobUploadUnknown, msg),
        }
    }
}
