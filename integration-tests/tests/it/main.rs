//! End-to-end tests: real coordinator, agents and gateway in-process, talking gRPC and HTTP
//! over loopback. One test binary for the crate (STYLE.md §7.11).

#![allow(clippy::unwrap_used)]

mod auth;
mod bad_input;
mod cluster;
mod disconnect;
mod object_api;
mod objects;
mod ops;
mod races;
mod redundancy;
mod reencode;
mod repair;
mod sync;
mod tls;
mod user_spaces;

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    common::testing::pseudo_random(seed, len)
}
