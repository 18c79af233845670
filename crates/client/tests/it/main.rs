//! ferry-client against real and scripted registries on 127.0.0.1.

mod common;
mod download;
mod upload;
