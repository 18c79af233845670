//! The load lab behind `ferry load`: generate many seeded images ([`generate`], [`image`]), push them or
//! write them as archives, then drive a registry or mirror with scaling pullers and report rates
//! and latency percentiles.
//!
//! It talks to registries over HTTP only: it never links the server it measures.

pub mod generate;
pub mod http;
pub mod image;
pub mod run;
pub mod schedule;
