//! Behaviour of the redundancy engine against plain bytes: encode, then read back whole, by
//! range, with blocks missing, failing mid-way or corrupt (one test binary, STYLE.md §7.11).

// Test-only binary: helpers outside `#[test]` fns may panic on broken fixtures.
#![allow(clippy::unwrap_used)]

mod encode;
mod reads;

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use redundancy::memory::{Fault, MemoryBlock};
use redundancy::{BlockSourceRef, EncodeOptions, EncodeSummary, Policy, ReadStats};
use sha2::{Digest, Sha256};

/// Deterministic pseudo-random bytes (xorshift), different for every `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    common::testing::pseudo_random(seed, len)
}

pub fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Encodes `data` fed in chunks of `input_chunk` bytes with the default options; returns the
/// summary and the stored blocks.
pub async fn encode(
    policy: Policy,
    data: &[u8],
    input_chunk: usize,
) -> (EncodeSummary, Vec<Bytes>) {
    encode_with(policy, EncodeOptions::default(), data, input_chunk).await
}

/// [`encode`] with `opts`.
pub async fn encode_with(
    policy: Policy,
    opts: EncodeOptions,
    data: &[u8],
    input_chunk: usize,
) -> (EncodeSummary, Vec<Bytes>) {
    let (encoder, streams) = redundancy::encoder(policy, opts).unwrap();
    let chunks: Vec<io::Result<Bytes>> = data
        .chunks(input_chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let collectors = futures::future::join_all(streams.into_iter().map(MemoryBlock::collect));
    let (summary, blocks) = tokio::join!(encoder.run(futures::stream::iter(chunks)), collectors);
    (summary.unwrap(), blocks)
}

/// Sources over stored blocks, with a fault per block; `None` in `faults` = block missing.
pub fn sources(
    blocks: &[Bytes],
    faults: &[Option<Fault>],
    serve_chunk: usize,
) -> Vec<Option<BlockSourceRef>> {
    blocks
        .iter()
        .zip(faults)
        .map(|(b, f)| f.map(|f| MemoryBlock::new(b.clone(), serve_chunk, f).as_source()))
        .collect()
}

pub async fn read(
    policy: Policy,
    size: u64,
    sources: Vec<Option<BlockSourceRef>>,
    offset: u64,
    length: Option<u64>,
) -> redundancy::Result<(Vec<u8>, Arc<ReadStats>)> {
    let stats = Arc::new(ReadStats::default());
    let stream = redundancy::read_range(policy, size, sources, offset, length, stats.clone())?;
    let chunks: Vec<Bytes> = stream.try_collect().await?;
    assert!(
        chunks.iter().all(|c| c.len() <= 1 << 20),
        "output chunks are at most 1 MiB"
    );
    Ok((chunks.concat(), stats))
}

pub fn healthy(n: usize) -> Vec<Option<Fault>> {
    vec![Some(Fault::None); n]
}

/// Flips one byte of `block` at `at`.
pub fn corrupt(block: &Bytes, at: usize) -> Bytes {
    let mut v = block.to_vec();
    v[at] ^= 0x5a;
    Bytes::from(v)
}

/// Reads a block stream to its end; returns how many bytes it carried.
pub async fn drain(stream: impl futures::Stream<Item = Bytes> + Unpin) -> usize {
    stream
        .map(|b| b.len())
        .fold(0, |a, b| async move { a + b })
        .await
}
