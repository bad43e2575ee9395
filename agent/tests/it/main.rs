//! Integration tests of the agent: the real gRPC server on a pre-bound `127.0.0.1:0`
//! listener, registering with a fake coordinator (one test binary, STYLE.md §7.11).

// Test-only binary: helpers outside `#[test]` fns may panic on broken fixtures.
#![allow(clippy::unwrap_used)]

mod files;
mod grpc;
mod harness;
mod s3;
mod shards;
mod spaces;
mod sync;
