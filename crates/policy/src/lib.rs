//! # ferry-policy
//!
//! Every decision about which stored images to drop: pinning by pattern, selecting images by age
//! and name, the whole-manifest-versus-tag rule of a prune, the cache's standing prune rules, and
//! least-recently-used eviction under a byte budget. The server turns its inventory into
//! [`Image`]s, asks for a plan and carries it out; the trace lab's cache simulator calls the same
//! functions, so a simulated hit ratio predicts the server's.
//!
//! Architecture invariant: pure and deterministic — no I/O, no clock (times are passed in as
//! seconds), ties broken by key, results independent of the inventory's order, so the same input
//! always gives the same answer.

mod budget;
pub mod cache;
mod glob;
mod image;
mod prune;
#[cfg(test)]
mod test_inventory;

pub use budget::{
    CacheBudget, CacheState, ExpiryRule, Item, UnknownPolicy, evictable_units, lru_victims,
};
pub use glob::{glob_match, has_wildcard, wildcard_match};
pub use image::{Image, ManifestKey, image_name};
pub use prune::{PrunePlan, PruneRule, Selection, is_pinned, prune_plan};
