use std::time::Duration;

/// What kind of failure; decides the status ferry answers with and whether to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The upstream does not have it (404).
    NotFound,
    /// Credentials missing or refused (401 after the auth dance).
    Unauthorized,
    /// Authenticated but not allowed (403).
    Denied,
    /// Rate limited (429); see [`ClientError::retry_after`].
    TooManyRequests,
    /// The upstream answered 5xx.
    Unavailable,
    /// No answer in time.
    Timeout,
    /// Could not connect (refused, DNS, TLS).
    Connect,
    /// The upstream answered something that breaks the protocol (bad digest, bad length, bad JSON).
    Protocol,
    /// Our request was wrong (a bug or bad configuration).
    Request,
    /// A local file could not be read or written (permissions, a full disk): this machine's to
    /// fix, not the registry's.
    Local,
}

/// A failed registry request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    /// What kind.
    pub kind: ErrorKind,
    /// HTTP status, if the upstream answered.
    pub status: Option<u16>,
    /// `Retry-After` the upstream sent, if any.
    pub retry_after: Option<Duration>,
    /// For a person.
    pub message: String,
}

impl ClientError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ClientError {
        ClientError {
            kind,
            status: None,
            retry_after: None,
            message: message.into(),
        }
    }

    /// Whether another attempt may succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Unavailable
                | ErrorKind::Timeout
                | ErrorKind::Connect
                | ErrorKind::TooManyRequests
        )
    }

    /// A local file error about `path`.
    pub(crate) fn local(what: &str, path: &std::path::Path, e: &std::io::Error) -> ClientError {
        ClientError::new(
            ErrorKind::Local,
            format!("cannot {what} {}: {e}", path.display()),
        )
    }

    pub(crate) fn from_status(
        status: u16,
        retry_after: Option<Duration>,
        what: &str,
    ) -> ClientError {
        let kind = match status {
            404 => ErrorKind::NotFound,
            401 => ErrorKind::Unauthorized,
            403 => ErrorKind::Denied,
            429 => ErrorKind::TooManyRequests,
            500..=599 => ErrorKind::Unavailable,
            _ => ErrorKind::Protocol,
        };
        ClientError {
            kind,
            status: Some(status),
            retry_after,
            message: format!("{what}: upstream answered {status}"),
        }
    }

    pub(crate) fn from_reqwest(e: &reqwest::Error, what: &str) -> ClientError {
        let kind = if e.is_timeout() {
            ErrorKind::Timeout
        } else if e.is_connect() {
            ErrorKind::Connect
        } else if e.is_builder() {
            ErrorKind::Request
        } else {
            // Body and decode errors: the connection broke mid-transfer.
            ErrorKind::Unavailable
        };
        ClientError::new(kind, format!("{what}: {}", with_causes(e)))
    }
}

/// `e` followed by each cause in its source chain that its text does not already say: reqwest's
/// own text ("error sending request for url …") leaves out why (e.g. "Connection refused").
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !t.is_empty() && !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_says_so() {
        // A port just released: nothing listens on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://127.0.0.1:{port}/v2/"))
            .send()
            .await
            .unwrap_err();
        let c = ClientError::from_reqwest(&e, "GET /v2/");
        assert_eq!(c.kind, ErrorKind::Connect);
        assert!(
            c.message.to_lowercase().contains("refused"),
            "{}",
            c.message
        );
    }
}
