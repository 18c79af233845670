//! ferry-client against real and scripted registries on loopback addresses.

mod auth;
mod common;
mod connections;
mod download;
mod http2;
mod redirects;
mod retries;
mod upload;
