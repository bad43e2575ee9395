//! Reads: the bytes `[offset, offset + length)` of an object from its blocks.
//!
//! - `ec`: only the stripes the range touches are fetched, and of those only the data blocks
//!   whose columns meet the range ([`EcLayout::block_ranges`]). Every frame's checksum is
//!   verified. When a data block cannot be opened, fails mid-way, ends early or returns a
//!   corrupt piece, the stripe is rebuilt from any `k` good pieces (other data blocks first,
//!   then parity); a block that failed with an I/O error is not asked again during this read,
//!   one with a corrupt piece is. Fewer than `k` good pieces in a stripe is
//!   [`Error::NotEnoughBlocks`].
//! - `none` / `rep`: the range is streamed from the first replica that opens; when it fails
//!   mid-way the read continues from the next replica at the same offset. Replicas are plain
//!   shards without per-chunk checksums, so corruption is found by the block's SHA-256 (scrub,
//!   or a full read checked by the caller), not by a ranged read.

use std::collections::VecDeque;
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use reed_solomon_simd::ReedSolomonDecoder;
use snafu::{ResultExt, ensure};

use crate::error::{
    BadRangeSnafu, BlockCountSnafu, DecodeStripeSnafu, Error, JoinCoderSnafu, NotEnoughBlocksSnafu,
    ReplicasExhaustedSnafu, Result,
};
use crate::layout::{CHECKSUM_LEN, EcLayout, piece_checksum};
use crate::policy::Policy;

/// Bytes of each piece decoded at once. Each decode call has a fixed cost (the codec
/// evaluates the erasure pattern over its whole field), so slices are larger than the
/// encoder's; 256 KiB measured best (docs/performance.md).
const DECODE_SLICE: usize = 256 * 1024;

/// A stream of stored bytes, as a user space's agent returns them.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// The object bytes a read returns.
pub type ObjectStream = BoxStream<'static, Result<Bytes>>;

/// One stored block that can be read by range (in production: an agent's `GetShard` with a
/// ticket; in tests: memory).
#[async_trait]
pub trait BlockSource: Send + Sync {
    /// Streams the stored bytes `range` of the block.
    async fn open(&self, range: Range<u64>) -> io::Result<ByteStream>;
}

pub type BlockSourceRef = Arc<dyn BlockSource>;

/// Counters a read updates, for the caller to log or to queue a repair.
#[derive(Debug, Default)]
pub struct ReadStats {
    /// ec stripes rebuilt from parity or other data blocks.
    pub degraded_stripes: AtomicU64,
    /// ec pieces whose checksum did not match.
    pub corrupt_pieces: AtomicU64,
    /// Blocks (or replicas) that could not be opened or failed mid-way.
    pub failed_blocks: AtomicU64,
    /// Stored bytes fetched from blocks.
    pub bytes_fetched: AtomicU64,
}

impl ReadStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Streams `[offset, offset + length)` (to the end when `length` is `None`; clipped to the
/// object) of an object of `size` bytes stored under `policy`. `blocks` has one slot per block
/// of the policy, `None` for a block known to be missing.
pub fn read_range(
    policy: Policy,
    size: u64,
    blocks: Vec<Option<BlockSourceRef>>,
    offset: u64,
    length: Option<u64>,
    stats: Arc<ReadStats>,
) -> Result<ObjectStream> {
    policy.validate()?;
    ensure!(
        blocks.len() == policy.block_count(),
        BlockCountSnafu {
            kind: policy.kind(),
            expected: policy.block_count(),
            got: blocks.len(),
        }
    );
    ensure!(
        offset <= size,
        BadRangeSnafu {
            offset,
            length,
            size
        }
    );
    let end = match length {
        Some(len) => offset.saturating_add(len).min(size),
        None => size,
    };
    Ok(match EcLayout::of(&policy) {
        Some(layout) => {
            let reader = EcReader::new(layout, blocks, offset, end, stats);
            futures::stream::try_unfold(reader, |mut r| async move {
                Ok(r.next_chunk().await?.map(|b| (b, r)))
            })
            .boxed()
        }
        None => {
            let reader = RepReader {
                replicas: blocks,
                current: 0,
                stream: None,
                pos: offset,
                end,
                stats,
            };
            futures::stream::try_unfold(reader, |mut r| async move {
                Ok(r.next_chunk().await?.map(|b| (b, r)))
            })
            .boxed()
        }
    })
}

struct RepReader {
    replicas: Vec<Option<BlockSourceRef>>,
    current: usize,
    stream: Option<ByteStream>,
    pos: u64,
    end: u64,
    stats: Arc<ReadStats>,
}

impl RepReader {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        while self.pos < self.end {
            if self.current >= self.replicas.len() {
                return ReplicasExhaustedSnafu {
                    offset: self.pos,
                    tried: self.replicas.len(),
                }
                .fail();
            }
            let Some(source) = self.replicas[self.current].clone() else {
                self.current += 1;
                continue;
            };
            if self.stream.is_none() {
                match source.open(self.pos..self.end).await {
                    Ok(s) => self.stream = Some(s),
                    Err(error) => {
                        self.fail(error);
                        continue;
                    }
                }
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            match stream.next().await {
                Some(Ok(mut chunk)) => {
                    chunk.truncate((self.end - self.pos) as usize);
                    if chunk.is_empty() {
                        continue;
                    }
                    self.pos += chunk.len() as u64;
                    ReadStats::add(&self.stats.bytes_fetched, chunk.len() as u64);
                    return Ok(Some(chunk));
                }
                Some(Err(error)) => self.fail(error),
                None => self.fail(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "replica ended early",
                )),
            }
        }
        Ok(None)
    }

    fn fail(&mut self, error: io::Error) {
        tracing::warn!(replica = self.current, offset = self.pos, %error, "replica failed, trying the next one");
        ReadStats::add(&self.stats.failed_blocks, 1);
        self.stream = None;
        self.current += 1;
    }
}

/// Why a frame could not be used.
enum FrameError {
    /// The block is gone for this read (no source, open failed, stream failed or ended early).
    Dead,
    /// The piece failed its checksum; the block stays aligned and usable for other stripes.
    Corrupt,
}

enum Slot {
    Idle,
    Open {
        stream: ByteStream,
        /// Stripe of the next frame the stream yields.
        next: u64,
        /// Stripe (exclusive) where the opened range stops.
        until: u64,
        leftover: Bytes,
    },
    Dead,
}

struct Block {
    source: Option<BlockSourceRef>,
    slot: Slot,
}

struct EcReader {
    layout: EcLayout,
    blocks: Vec<Block>,
    pos: u64,
    end: u64,
    /// Per data block, the last stripe (exclusive) a healthy read needs: where a fresh stream
    /// for that block ends.
    healthy_end: Vec<u64>,
    out: VecDeque<Bytes>,
    decoder: Option<ReedSolomonDecoder>,
    stats: Arc<ReadStats>,
}

impl EcReader {
    fn new(
        layout: EcLayout,
        sources: Vec<Option<BlockSourceRef>>,
        pos: u64,
        end: u64,
        stats: Arc<ReadStats>,
    ) -> EcReader {
        let healthy_end = layout
            .needed_stripes(pos, end)
            .into_iter()
            .map(|r| r.map_or(0, |r| r.end))
            .collect();
        let blocks = sources
            .into_iter()
            .map(|source| Block {
                slot: if source.is_some() {
                    Slot::Idle
                } else {
                    Slot::Dead
                },
                source,
            })
            .collect();
        EcReader {
            layout,
            blocks,
            pos,
            end,
            healthy_end,
            out: VecDeque::new(),
            decoder: None,
            stats,
        }
    }

    fn last_stripe_end(&self) -> u64 {
        self.layout.stripe_count(self.end)
    }

    async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if self.out.is_empty() && self.pos < self.end {
            self.read_stripe().await?;
        }
        Ok(self.out.pop_front())
    }

    /// Reads the stripe holding `pos` and queues the object bytes of `[pos, end)` it holds.
    async fn read_stripe(&mut self) -> Result<()> {
        let l = self.layout;
        let stripe = self.pos / l.stripe_len();
        let Some((c0, c1)) = l.columns(stripe, self.pos, self.end) else {
            return Ok(());
        };
        let mut pieces: Vec<Option<Bytes>> = vec![None; l.n];
        let mut tried = vec![false; l.n];
        let wanted: Vec<usize> = (c0..=c1).collect();
        let mut good = self.fetch(stripe, &wanted, &mut pieces, &mut tried).await;
        let missing: Vec<usize> = wanted
            .iter()
            .copied()
            .filter(|&j| pieces[j].is_none())
            .collect();
        if !missing.is_empty() {
            ReadStats::add(&self.stats.degraded_stripes, 1);
            // Other data blocks first (no decoding cost for them), then parity.
            let mut candidates: VecDeque<usize> = (0..l.n)
                .filter(|&i| !tried[i] && !matches!(self.blocks[i].slot, Slot::Dead))
                .collect();
            while good < l.k && !candidates.is_empty() {
                let take: Vec<usize> = (0..(l.k - good))
                    .filter_map(|_| candidates.pop_front())
                    .collect();
                good += self.fetch(stripe, &take, &mut pieces, &mut tried).await;
            }
            ensure!(
                good >= l.k,
                NotEnoughBlocksSnafu {
                    stripe,
                    usable: good,
                    needed: l.k,
                }
            );
            self.rebuild(stripe, &mut pieces, &missing).await?;
        }
        let stripe_start = stripe * l.stripe_len();
        let cs = l.chunk_size as u64;
        for (j, piece) in pieces.iter().enumerate().take(c1 + 1).skip(c0) {
            let Some(piece) = piece else {
                continue;
            };
            let col_start = stripe_start + j as u64 * cs;
            let a = self.pos.max(col_start) - col_start;
            let b = self.end.min(col_start + cs) - col_start;
            self.out.push_back(piece.slice(a as usize..b as usize));
            self.pos = col_start + b;
        }
        Ok(())
    }

    /// Reads the frame of `stripe` from each block of `which` concurrently; returns how many
    /// good pieces it added to `pieces`.
    async fn fetch(
        &mut self,
        stripe: u64,
        which: &[usize],
        pieces: &mut [Option<Bytes>],
        tried: &mut [bool],
    ) -> usize {
        let layout = self.layout;
        let read_end = self.last_stripe_end();
        let stats = self.stats.clone();
        let futures = self
            .blocks
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| which.contains(i))
            .map(|(i, block)| {
                // A block read for a healthy range stops where that range stops needing it; a
                // block read to rebuild stripes keeps going to the end of the read.
                let end = if i < layout.k && self.healthy_end[i] > stripe {
                    self.healthy_end[i]
                } else {
                    read_end
                };
                let stats = stats.clone();
                async move { (i, read_frame(layout, i, block, stripe, end, &stats).await) }
            });
        let results = futures::future::join_all(futures).await;
        let mut good = 0;
        for (i, result) in results {
            tried[i] = true;
            match result {
                Ok(piece) => {
                    pieces[i] = Some(piece);
                    good += 1;
                }
                Err(FrameError::Corrupt) => {
                    ReadStats::add(&self.stats.corrupt_pieces, 1);
                    tracing::warn!(block = i, stripe, "corrupt stripe piece, rebuilding");
                }
                Err(FrameError::Dead) => {}
            }
        }
        good
    }

    /// Fills the `missing` data pieces of `stripe` from the good pieces (at least `k`).
    async fn rebuild(
        &mut self,
        stripe: u64,
        pieces: &mut [Option<Bytes>],
        missing: &[usize],
    ) -> Result<()> {
        let l = self.layout;
        let decoder = match self.decoder.take() {
            Some(d) => d,
            None => ReedSolomonDecoder::new(l.k, l.n - l.k, DECODE_SLICE.min(l.chunk_size))
                .context(DecodeStripeSnafu { stripe })?,
        };
        // Exactly k pieces: the data pieces we have, then parity.
        let chosen: Vec<(usize, Bytes)> = pieces
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.clone().map(|p| (i, p)))
            .take(l.k)
            .collect();
        let missing = missing.to_vec();
        let (decoder, restored) = tokio::task::spawn_blocking(move || {
            let mut decoder = decoder;
            let restored = decode_pieces(&mut decoder, l, stripe, &chosen, &missing);
            (decoder, restored)
        })
        .await
        .context(JoinCoderSnafu)?;
        self.decoder = Some(decoder);
        for (j, piece) in restored? {
            pieces[j] = Some(piece);
        }
        Ok(())
    }
}

fn decode_pieces(
    decoder: &mut ReedSolomonDecoder,
    l: EcLayout,
    stripe: u64,
    chosen: &[(usize, Bytes)],
    missing: &[usize],
) -> Result<Vec<(usize, Bytes)>, Error> {
    let (k, m, cs) = (l.k, l.n - l.k, l.chunk_size);
    let mut out: Vec<(usize, BytesMut)> = missing
        .iter()
        .map(|&j| (j, BytesMut::with_capacity(cs)))
        .collect();
    // Slice by slice (the codec's 64-byte lanes are independent).
    let mut at = 0;
    while at < cs {
        let len = DECODE_SLICE.min(cs - at);
        decoder
            .reset(k, m, len)
            .context(DecodeStripeSnafu { stripe })?;
        for (i, piece) in chosen {
            let part = &piece[at..at + len];
            if *i < k {
                decoder.add_original_shard(*i, part)
            } else {
                decoder.add_recovery_shard(*i - k, part)
            }
            .context(DecodeStripeSnafu { stripe })?;
        }
        let result = decoder.decode().context(DecodeStripeSnafu { stripe })?;
        for (j, buf) in &mut out {
            let restored = result
                .restored_original(*j)
                .ok_or(reed_solomon_simd::Error::NotEnoughShards {
                    original_count: k,
                    original_received_count: 0,
                    recovery_received_count: 0,
                })
                .context(DecodeStripeSnafu { stripe })?;
            buf.extend_from_slice(restored);
        }
        at += len;
    }
    Ok(out.into_iter().map(|(j, b)| (j, b.freeze())).collect())
}

/// Reads the frame of `stripe` from block `index`, opening (or re-opening) its stream at that
/// stripe when needed, and verifies the checksum.
async fn read_frame(
    layout: EcLayout,
    index: usize,
    block: &mut Block,
    stripe: u64,
    end: u64,
    stats: &ReadStats,
) -> Result<Bytes, FrameError> {
    let Some(source) = block.source.clone() else {
        return Err(FrameError::Dead);
    };
    let positioned =
        matches!(&block.slot, Slot::Open { next, until, .. } if *next == stripe && stripe < *until);
    if matches!(block.slot, Slot::Dead) {
        return Err(FrameError::Dead);
    }
    if !positioned {
        let until = end.max(stripe + 1);
        match source.open(layout.frames(stripe..until)).await {
            Ok(stream) => {
                block.slot = Slot::Open {
                    stream,
                    next: stripe,
                    until,
                    leftover: Bytes::new(),
                }
            }
            Err(error) => {
                tracing::warn!(block = index, stripe, %error, "block cannot be opened");
                ReadStats::add(&stats.failed_blocks, 1);
                block.slot = Slot::Dead;
                return Err(FrameError::Dead);
            }
        }
    }
    let Slot::Open {
        stream,
        next,
        leftover,
        ..
    } = &mut block.slot
    else {
        return Err(FrameError::Dead);
    };
    let frame_len = layout.frame_len() as usize;
    // The frame's bytes as they arrived: usually the piece in one chunk (an agent sends a
    // frame read from its start in chunks of up to 1 MiB, the default piece size) and the
    // checksum in the next, so the piece is handed on without a copy.
    let mut parts: Vec<Bytes> = Vec::with_capacity(2);
    let mut have = 0;
    if !leftover.is_empty() {
        let take = leftover.len().min(frame_len);
        have += take;
        parts.push(leftover.split_to(take));
    }
    while have < frame_len {
        match stream.try_next().await {
            Ok(Some(mut chunk)) => {
                let need = frame_len - have;
                if chunk.len() > need {
                    *leftover = chunk.split_off(need);
                }
                have += chunk.len();
                parts.push(chunk);
            }
            Ok(None) | Err(_) => {
                tracing::warn!(block = index, stripe, "block failed mid-way");
                ReadStats::add(&stats.failed_blocks, 1);
                block.slot = Slot::Dead;
                return Err(FrameError::Dead);
            }
        }
    }
    ReadStats::add(&stats.bytes_fetched, frame_len as u64);
    *next = stripe + 1;
    let cs = layout.chunk_size;
    let (piece, stored) = match parts.first() {
        Some(first) if first.len() >= cs => {
            let mut stored = [0u8; CHECKSUM_LEN];
            let mut at = 0;
            let tail = std::iter::once(&first[cs..]).chain(parts[1..].iter().map(|p| &p[..]));
            for bytes in tail {
                stored[at..at + bytes.len()].copy_from_slice(bytes);
                at += bytes.len();
            }
            (first.slice(..cs), stored)
        }
        _ => {
            let mut frame = BytesMut::with_capacity(frame_len);
            parts.iter().for_each(|p| frame.extend_from_slice(p));
            let mut stored = [0u8; CHECKSUM_LEN];
            stored.copy_from_slice(&frame[cs..]);
            frame.truncate(cs);
            (frame.freeze(), stored)
        }
    };
    if u32::from_le_bytes(stored) != piece_checksum(index, stripe, &piece) {
        return Err(FrameError::Corrupt);
    }
    Ok(piece)
}
