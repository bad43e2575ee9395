//! End-to-end tests: real coordinator, agents and gateway in-process, talking gRPC and HTTP
//! over loopback. One test binary for the crate (STYLE.md §7.11).

#![allow(clippy::unwrap_used)]

mod bad_input;
mod cluster;
mod disconnect;
mod object_api;
mod objects;
mod ops;
mod races;
mod sync;
mod user_spaces;

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
