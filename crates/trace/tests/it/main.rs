//! ferry-trace end to end: the real IBM sample reads completely, every input form of the same
//! records reads as the same requests, and damaged input is reported with positions. One test
//! binary for the crate (modules below).

mod read;
