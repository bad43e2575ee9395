//! Throughput of the redundancy engine on one machine, next to a plain SHA-256 pass over the
//! same bytes in the same run (the work the `none` upload path already does per byte).
//!
//!   cargo run --release -p redundancy --example ec_bench -- [SIZE_MIB] [K] [N] [CHUNK_KIB]
//!   (defaults: 1024 4 6 1024)
//!
//! The object is streamed in 1 MiB chunks. Its content repeats with a period of one stripe
//! (random bytes), so the stored blocks of a read can be served from memory without holding
//! the whole encoded object: every stored frame is real (piece plus its own checksum), and
//! every byte the reader returns is compared with the expected content.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use redundancy::layout::{EcLayout, piece_checksum};
use redundancy::{
    BlockSource, BlockSourceRef, ByteStream, EncodeOptions, Policy, ReadStats, StripeEncoder,
};
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;

/// A stored block of a periodic object: the same piece in every stripe, its checksum per stripe.
struct PeriodicBlock {
    piece: Bytes,
    checksums: Arc<Vec<Bytes>>,
    chunk_size: usize,
}

#[async_trait]
impl BlockSource for PeriodicBlock {
    async fn open(&self, range: Range<u64>) -> io::Result<ByteStream> {
        let frame = (self.chunk_size + 4) as u64;
        let (piece, sums) = (self.piece.clone(), self.checksums.clone());
        let stripes = range.start / frame..range.end / frame;
        Ok(futures::stream::iter(stripes)
            .flat_map(move |s| {
                futures::stream::iter([Ok(piece.clone()), Ok(sums[s as usize].clone())])
            })
            .boxed())
    }
}

fn random(len: usize) -> Vec<u8> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

fn mibps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / MIB as f64 / secs
}

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric arguments"))
        .collect();
    let arg = |i: usize, d: u64| args.get(i).copied().unwrap_or(d);
    let (size_mib, k, n, chunk_kib) = (arg(0, 1024), arg(1, 4), arg(2, 6), arg(3, 1024));
    let policy = Policy::ec(k as u32, n as u32, (chunk_kib * 1024) as u32).unwrap();
    let layout = EcLayout::of(&policy).unwrap();
    let stripe = layout.stripe_len() as usize;
    let size = size_mib * MIB as u64;
    assert!(
        stripe.is_multiple_of(MIB) && size.is_multiple_of(stripe as u64),
        "pick k * chunk size a multiple of 1 MiB, and a size of whole stripes"
    );
    let period = stripe.max(MIB);
    let unit = Bytes::from(random(period));
    let chunks = move || {
        let unit = unit.clone();
        futures::stream::iter((0..size / MIB as u64).map(move |i| {
            let at = (i as usize * MIB) % period;
            Ok::<_, io::Error>(unit.slice(at..at + MIB))
        }))
    };
    println!(
        "redundancy bench: {size_mib} MiB in 1 MiB chunks, ec({k},{n}) chunk {chunk_kib} KiB, {} cores",
        std::thread::available_parallelism().map_or(1, |p| p.get())
    );

    // Baseline: one SHA-256 pass over the same stream.
    let t = Instant::now();
    let mut h = Sha256::new();
    let mut s = chunks();
    while let Some(c) = s.next().await {
        h.update(c.unwrap());
    }
    let _ = h.finalize();
    let base = mibps(size, t.elapsed().as_secs_f64());
    println!("sha256 baseline       {base:>8.0} MiB/s");

    // Encode, blocks drained by n concurrent readers: with block hashes (`hash_blocks`, what
    // hashing ec blocks would cost) and without (the default, as the gateway's uploads and the
    // agent's RebuildBlocks run: both take the hashes the agents' PutShard answers with).
    for hash_blocks in [true, false] {
        let opts = EncodeOptions {
            hash_blocks,
            ..EncodeOptions::default()
        };
        let (encoder, streams) = redundancy::encoder(policy, opts).unwrap();
        let bound = encoder.memory_bound();
        let t = Instant::now();
        let drains: Vec<_> = streams
            .into_iter()
            .map(|s| {
                tokio::spawn(
                    s.map(|b| b.len() as u64)
                        .fold(0u64, |a, b| async move { a + b }),
                )
            })
            .collect();
        let summary = encoder.run(chunks()).await.unwrap();
        let mut stored = 0;
        for d in drains {
            stored += d.await.unwrap();
        }
        let enc = mibps(size, t.elapsed().as_secs_f64());
        assert_eq!(summary.size, size);
        assert_eq!(stored, n * layout.block_len(size));
        let what = if hash_blocks {
            "encode (sha256 object + blocks, rs, crc)"
        } else {
            "encode (sha256 object, rs, crc)         "
        };
        println!(
            "{what} {enc:>8.0} MiB/s  {:.2}x sha256   memory bound {} MiB",
            enc / base,
            bound / MIB as u64
        );
    }

    // Stored blocks of the periodic object: one stripe encoded, checksums for every stripe.
    let stripes = layout.stripe_count(size);
    let per_stripe = period / stripe;
    let mut first = StripeEncoder::new(layout).unwrap();
    let period_bytes = Bytes::from(random(period));
    assert_eq!(
        per_stripe, 1,
        "degraded/healthy read bench needs stripes of at least 1 MiB"
    );
    let frames = first.encode(period_bytes.slice(..stripe)).unwrap();
    let blocks: Vec<BlockSourceRef> = frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let sums = (0..stripes)
                .map(|s| Bytes::copy_from_slice(&piece_checksum(i, s, &f.piece).to_le_bytes()))
                .collect();
            Arc::new(PeriodicBlock {
                piece: f.piece.clone(),
                checksums: Arc::new(sums),
                chunk_size: layout.chunk_size,
            }) as BlockSourceRef
        })
        .collect();

    let read = |lost: usize| {
        let srcs: Vec<Option<BlockSourceRef>> = blocks
            .iter()
            .enumerate()
            .map(|(i, b)| (i >= lost).then(|| b.clone()))
            .collect();
        let expected = period_bytes.clone();
        async move {
            let stats = Arc::new(ReadStats::default());
            let t = Instant::now();
            let mut out =
                redundancy::read_range(policy, size, srcs, 0, None, stats.clone()).unwrap();
            let mut pos = 0usize;
            while let Some(c) = out.try_next().await.unwrap() {
                let at = pos % period;
                assert!(c[..] == expected[at..at + c.len()], "wrong bytes at {pos}");
                pos += c.len();
            }
            assert_eq!(pos as u64, size);
            (
                mibps(size, t.elapsed().as_secs_f64()),
                ReadStats::get(&stats.degraded_stripes),
            )
        }
    };
    let (healthy, _) = read(0).await;
    println!(
        "healthy read (crc, compare)              {healthy:>8.0} MiB/s  {:.2}x sha256",
        healthy / base
    );
    let lost = (n - k) as usize;
    let (degraded, rebuilt) = read(lost).await;
    assert_eq!(rebuilt, stripes);
    println!(
        "degraded read, {lost} data blocks lost (rs)  {degraded:>8.0} MiB/s  {:.2}x sha256  {:.2}x healthy",
        degraded / base,
        degraded / healthy
    );
}
