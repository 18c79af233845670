//! ferry-trace end to end: the real IBM sample reads completely, every input form of the same
//! records reads as the same requests, damaged input is reported with positions, and traces replay
//! against a real registry. One test binary for the crate (modules below).

mod read;
mod replay;
