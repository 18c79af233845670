//! Replaying a trace against real registries: `warmup` pushes every object the trace GETs (seeded
//! content, real manifests) and writes a map of them, `run` replays the GETs through the map on
//! the load lab's HTTP driver, open loop on the trace's timestamps or as fast as allowed, over
//! one registry or several (consistent hashing), and reports latency and schedule lag by kind in
//! the report crate's results schema.
//!
//! Unlike the readers, this part talks to registries: over `ferry-client` to push, over
//! `ferry-load`'s driver to measure.

pub mod content;
pub mod map;
pub mod pace;
pub mod ring;
pub mod run;
pub mod warmup;
