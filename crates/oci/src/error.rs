//! The OCI error envelope: `{"errors":[{"code":…,"message":…,"detail":…}]}`.

use serde::Serialize;

/// Error codes from the OCI Distribution Spec (plus the de-facto ones clients know).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    RangeInvalid,
    TagInvalid,
    /// Not in the spec's table; used for routes that do not exist so that every response carries an
    /// envelope.
    NotFound,
    /// Our own bug or an unreadable disk: the only code that maps to 500.
    Internal,
    /// The upstream registry failed (pull-through).
    Unavailable,
    /// Not in the spec's table (it has no code for this): the registry's storage is full, answered
    /// 507 Insufficient Storage.
    StorageFull,
}

impl ErrorCode {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BlobUnknown => "BLOB_UNKNOWN",
            BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            DigestInvalid => "DIGEST_INVALID",
            ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ManifestInvalid => "MANIFEST_INVALID",
            ManifestUnknown => "MANIFEST_UNKNOWN",
            NameInvalid => "NAME_INVALID",
            NameUnknown => "NAME_UNKNOWN",
            SizeInvalid => "SIZE_INVALID",
            Unauthorized => "UNAUTHORIZED",
            Denied => "DENIED",
            Unsupported => "UNSUPPORTED",
            TooManyRequests => "TOOMANYREQUESTS",
            RangeInvalid => "RANGE_INVALID",
            TagInvalid => "TAG_INVALID",
            NotFound => "NOT_FOUND",
            Internal => "INTERNAL_ERROR",
            Unavailable => "UNAVAILABLE",
            StorageFull => "STORAGE_FULL",
        }
    }

    /// The status this code is answered with unless a handler has a more specific one.
    pub fn default_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            BlobUnknown | BlobUploadUnknown | ManifestUnknown | NameUnknown | NotFound => 404,
            BlobUploadInvalid | DigestInvalid | ManifestBlobUnknown | ManifestInvalid
            | NameInvalid | SizeInvalid | TagInvalid => 400,
            Unauthorized => 401,
            Denied => 403,
            Unsupported => 405,
            TooManyRequests => 429,
            RangeInvalid => 416,
            Internal => 500,
            Unavailable => 502,
            StorageFull => 507,
        }
    }

    /// The spec's short description.
    pub fn description(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BlobUnknown => "blob unknown to registry",
            BlobUploadInvalid => "blob upload invalid",
            BlobUploadUnknown => "blob upload unknown to registry",
            DigestInvalid => "provided digest did not match uploaded content",
            ManifestBlobUnknown => "manifest references a manifest or blob unknown to registry",
            ManifestInvalid => "manifest invalid",
            ManifestUnknown => "manifest unknown to registry",
            NameInvalid => "invalid repository name",
            NameUnknown => "repository name not known to registry",
            SizeInvalid => "provided length did not match content length",
            Unauthorized => "authentication required",
            Denied => "requested access to the resource is denied",
            Unsupported => "the operation is unsupported",
            TooManyRequests => "too many requests",
            RangeInvalid => "invalid content range",
            TagInvalid => "invalid tag",
            NotFound => "no such endpoint",
            Internal => "internal server error",
            Unavailable => "upstream registry unavailable",
            StorageFull => "the registry's storage is full",
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One error: a code, a human message and optional structured detail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OciError {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
    /// Structured context (e.g. the offending digest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

impl OciError {
    /// An error with a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> OciError {
        OciError {
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// Adds structured detail.
    pub fn with_detail(mut self, detail: serde_json::Value) -> OciError {
        self.detail = Some(detail);
        self
    }

    /// The envelope JSON for this single error.
    pub fn to_json(&self) -> Vec<u8> {
        let env = ErrorEnvelope {
            errors: std::slice::from_ref(self),
        };
        serde_json::to_vec(&env).unwrap_or_else(|_| br#"{"errors":[]}"#.to_vec())
    }
}

/// The response body shape.
#[derive(Debug, Serialize)]
pub struct ErrorEnvelope<'a> {
    /// The errors.
    pub errors: &'a [OciError],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_shape() {
        let e = OciError::new(ErrorCode::BlobUnknown, "no such blob")
            .with_detail(serde_json::json!({"digest": "sha256:x"}));
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"errors":[{"code":"BLOB_UNKNOWN","message":"no such blob","detail":{"digest":"sha256:x"}}]})
        );
        assert_eq!(ErrorCode::RangeInvalid.default_status(), 416);
    }
}
