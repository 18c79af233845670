//! Per-client request rates: a token bucket per user (when authenticated) or per address (its
//! /64 for IPv6), so one client cannot take the server's whole capacity. The buckets are
//! `ferry-auth`'s (pure, bounded in count); this is the HTTP side.

use std::net::IpAddr;

use ferry_auth::{Rate, RateLimiter};
use ferry_oci::ErrorCode;

use crate::ApiError;

/// Keys kept at most per kind; beyond, clients share one overflow bucket (counted).
const MAX_KEYS: usize = 65_536;

/// The buckets of one server.
#[derive(Debug)]
pub struct RateLimits {
    users: RateLimiter<String>,
    addresses: RateLimiter<IpAddr>,
}

/// Whose bucket a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum By {
    User,
    Address,
}

impl By {
    pub(crate) fn label(self) -> &'static str {
        match self {
            By::User => "user",
            By::Address => "address",
        }
    }
}

/// A request over its client's rate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limited {
    pub by: By,
    pub retry_secs: u64,
}

impl Limited {
    /// 429 `TOOMANYREQUESTS` with `Retry-After`.
    pub(crate) fn answer(self) -> ApiError {
        ApiError::new(
            ErrorCode::TooManyRequests,
            format!(
                "too many requests from this {}; retry in {} s",
                self.by.label(),
                self.retry_secs
            ),
        )
        .header(http::header::RETRY_AFTER, &self.retry_secs.to_string())
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl RateLimits {
    /// `per_sec` requests a second on average per client, bursts up to `burst`.
    pub fn new(per_sec: f64, burst: f64) -> RateLimits {
        let rate = Rate { per_sec, burst };
        RateLimits {
            users: RateLimiter::new(rate, MAX_KEYS),
            addresses: RateLimiter::new(rate, MAX_KEYS),
        }
    }

    /// Takes one request from the user's bucket, else the address's; when it is empty, whose
    /// bucket it was and how long until it holds a request again.
    pub(crate) fn check(&self, user: Option<&str>, address: Option<IpAddr>) -> Result<(), Limited> {
        let now = now_ms();
        let (checked, by) = match (user, address) {
            (Some(u), _) => (self.users.check(&u.to_owned(), 1.0, now), By::User),
            (None, Some(ip)) => (self.addresses.check(&ip, 1.0, now), By::Address),
            (None, None) => return Ok(()),
        };
        checked.map_err(|retry| Limited {
            by,
            retry_secs: retry.0,
        })
    }

    /// Drops buckets that have refilled (housekeeping).
    pub fn sweep(&self) {
        let now = now_ms();
        self.users.sweep(now);
        self.addresses.sweep(now);
    }
}
