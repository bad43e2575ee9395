//! Streaming encoders: the input is a stream of byte chunks of any size, the output one bounded
//! channel per block. `ec` stripes and Reed–Solomon-encodes (see [`crate::layout`] for the
//! stored format); `rep` and `none` fan the same chunks out to every replica. Every encoder
//! hashes the whole object (SHA-256) while streaming, and each ec block only when
//! [`EncodeOptions::hash_blocks`] is on (rep/none blocks are the object: they take its hash).
//!
//! Memory: an `ec` encoder holds the stripe it is filling (`k * chunk_size`), the stripe being
//! encoded and its parity, and what the block channels hold (`channel_capacity` frames per
//! block); [`Encoder::memory_bound`] gives the total. A block consumer that stops reading stalls
//! the encoder, which then stops reading its input. Stripe and parity buffers are reused once
//! every consumer has dropped its frames (never more of them than the bound counts).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use reed_solomon_simd::ReedSolomonEncoder;
use sha2::{Digest, Sha256};
use snafu::ResultExt;
use tokio::sync::mpsc;

use crate::error::{
    EncodeStripeSnafu, JoinCoderSnafu, ReadInputSnafu, Result, SendBlockSnafu, ValidatePolicySnafu,
};
use crate::layout::{EcLayout, piece_checksum};
use crate::policy::{MAX_CHUNK_SIZE, Policy};

/// Bytes of each piece the codec processes at once (see [`StripeEncoder::encode`]).
pub(crate) const CODEC_SLICE: usize = 32 * 1024;

/// Frames (ec) or chunks (rep/none) each block channel holds by default.
pub const DEFAULT_CHANNEL_CAPACITY: usize = 2;

/// Knobs of an encoder.
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions {
    /// Frames (ec) or chunks (rep/none) each block channel buffers before the encoder waits.
    pub channel_capacity: usize,
    /// Compute each block's SHA-256 (`BlockSummary::sha256`); off by default. An ec block
    /// costs a SHA-256 pass over `n / k` of the object on top of the object's own; the
    /// production callers (gateway uploads, the agent's RebuildBlocks) leave it off and take
    /// the hash the agent's `PutShard` answers with. Every stored piece still carries its
    /// CRC32C, so damage is found on read whatever this says. These are SHA-256s, while
    /// agents name ec blocks by BLAKE3 (`Policy::block_hash`): for tests and the codec
    /// bench, not to compare with an ec block's shard name.
    pub hash_blocks: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            channel_capacity: DEFAULT_CHANNEL_CAPACITY,
            hash_blocks: false,
        }
    }
}

/// One stored block as the encoder produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSummary {
    /// Position in the policy: data blocks `0..k`, parity `k..n`; replica number for rep.
    pub index: usize,
    /// Stored bytes (frames included for ec).
    pub size: u64,
    /// SHA-256 of the stored bytes; `None` when the encoder was told not to hash blocks.
    pub sha256: Option<[u8; 32]>,
}

/// What an encoder produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeSummary {
    pub policy: Policy,
    /// Real object size (the padding of the last stripe is not counted).
    pub size: u64,
    /// SHA-256 of the object bytes.
    pub sha256: [u8; 32],
    pub blocks: Vec<BlockSummary>,
}

impl EncodeSummary {
    /// The API's `fileHash`: `Full` + upper-case hex SHA-256 of the object.
    pub fn file_hash(&self) -> String {
        common::hash::file_hash(self.sha256)
    }
}

/// The stored bytes of one block, in chunks of at most 1 MiB.
#[derive(Debug)]
pub struct BlockStream {
    index: usize,
    rx: mpsc::Receiver<Bytes>,
}

impl BlockStream {
    /// The block's position in the policy.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Chunks waiting in the channel (for tests of the memory bound).
    pub fn queued(&self) -> usize {
        self.rx.len()
    }

    /// Capacity of the channel in chunks.
    pub fn capacity(&self) -> usize {
        self.rx.max_capacity()
    }
}

impl Stream for BlockStream {
    type Item = Bytes;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.rx.poll_recv(cx)
    }
}

/// Drives one encoding; see the module doc.
#[derive(Debug)]
pub struct Encoder {
    policy: Policy,
    opts: EncodeOptions,
    txs: Vec<mpsc::Sender<Bytes>>,
}

/// An encoder for `policy` and its block streams, in block order. Read every stream
/// concurrently with [`Encoder::run`]; dropping one makes `run` fail.
pub fn encoder(policy: Policy, opts: EncodeOptions) -> Result<(Encoder, Vec<BlockStream>)> {
    policy.validate()?;
    snafu::ensure!(
        opts.channel_capacity >= 1,
        ValidatePolicySnafu {
            reason: "channel_capacity must be at least 1".to_owned()
        }
    );
    // ec sends a piece and its 4-byte checksum as two chunks.
    let per_block = match policy {
        Policy::Ec { .. } => 2 * opts.channel_capacity,
        Policy::None | Policy::Rep { .. } => opts.channel_capacity,
    };
    let (txs, streams) = (0..policy.block_count())
        .map(|index| {
            let (tx, rx) = mpsc::channel(per_block);
            (tx, BlockStream { index, rx })
        })
        .unzip();
    Ok((Encoder { policy, opts, txs }, streams))
}

impl Encoder {
    /// Most object-derived bytes the encoder and its channels hold at once, assuming input
    /// chunks of at most 1 MiB. ec: the stripe being filled, the one being encoded or sent,
    /// and `channel_capacity` frames of every block. rep/none: the chunk being sent and
    /// `channel_capacity` chunks per replica (the replicas share them).
    pub fn memory_bound(&self) -> u64 {
        let c = self.opts.channel_capacity as u64;
        match EcLayout::of(&self.policy) {
            Some(l) => l.stripe_len() + (c + 1) * l.n as u64 * l.frame_len(),
            None => (c + 1) * u64::from(MAX_CHUNK_SIZE),
        }
    }

    /// Reads `input` to its end and returns the sizes and hashes. The block streams end when
    /// this returns.
    pub async fn run<S>(self, input: S) -> Result<EncodeSummary>
    where
        S: Stream<Item = io::Result<Bytes>> + Send + Unpin,
    {
        match EcLayout::of(&self.policy) {
            Some(layout) => {
                let enc = if self.opts.hash_blocks {
                    StripeEncoder::new(layout)?
                } else {
                    StripeEncoder::without_block_hashes(layout)?
                };
                let in_flight = self.opts.channel_capacity + 1;
                run_ec(self.policy, enc, self.txs, in_flight, input).await
            }
            None => run_fanout(self.policy, self.txs, input).await,
        }
    }
}

/// One stripe piece of one block and its checksum.
#[derive(Debug, Clone)]
pub struct Frame {
    pub piece: Bytes,
    pub checksum: u32,
}

/// The synchronous core of the ec encoder: one full stripe in, `n` frames out, block hashes
/// kept. CPU-heavy: call it from `spawn_blocking`.
pub struct StripeEncoder {
    layout: EcLayout,
    rs: ReedSolomonEncoder,
    /// Empty when blocks are not hashed.
    hashes: Vec<Sha256>,
    sizes: Vec<u64>,
    stripe: u64,
}

impl StripeEncoder {
    /// An encoder that also hashes every block.
    pub fn new(layout: EcLayout) -> Result<StripeEncoder> {
        let mut enc = StripeEncoder::without_block_hashes(layout)?;
        enc.hashes = vec![Sha256::new(); layout.n];
        Ok(enc)
    }

    /// An encoder whose [`finish`](Self::finish) reports no block hashes.
    pub fn without_block_hashes(layout: EcLayout) -> Result<StripeEncoder> {
        let slice = CODEC_SLICE.min(layout.chunk_size);
        let rs = ReedSolomonEncoder::new(layout.k, layout.n - layout.k, slice)
            .context(EncodeStripeSnafu { stripe: 0u64 })?;
        Ok(StripeEncoder {
            layout,
            rs,
            hashes: Vec::new(),
            sizes: vec![0; layout.n],
            stripe: 0,
        })
    }

    /// Encodes the next stripe; `data` is exactly `k * chunk_size` bytes (pad the last one with
    /// zeros). Returns the frames of blocks `0..n`.
    pub fn encode(&mut self, data: Bytes) -> Result<Vec<Frame>> {
        let m = self.layout.n - self.layout.k;
        let parity = (0..m)
            .map(|_| BytesMut::with_capacity(self.layout.chunk_size))
            .collect();
        self.encode_into(data, parity)
    }

    /// [`encode`](Self::encode) writing the `n - k` parity pieces into the given buffers
    /// (cleared first), so that a caller can hand the same memory back stripe after stripe.
    pub fn encode_into(&mut self, data: Bytes, mut parity: Vec<BytesMut>) -> Result<Vec<Frame>> {
        let cs = self.layout.chunk_size;
        let stripe = self.stripe;
        debug_assert_eq!(data.len(), self.layout.k * cs);
        let (k, m) = (self.layout.k, self.layout.n - self.layout.k);
        debug_assert_eq!(parity.len(), m);
        let mut pieces: Vec<Bytes> = (0..k).map(|j| data.slice(j * cs..(j + 1) * cs)).collect();
        parity.iter_mut().for_each(BytesMut::clear);
        // The codec works on 64-byte lanes independently, so coding the pieces slice by slice
        // gives the same parity as coding them whole, with a working set that fits the cache.
        let mut at = 0;
        while at < cs {
            let len = CODEC_SLICE.min(cs - at);
            self.rs
                .reset(k, m, len)
                .context(EncodeStripeSnafu { stripe })?;
            for p in &pieces {
                self.rs
                    .add_original_shard(&p[at..at + len])
                    .context(EncodeStripeSnafu { stripe })?;
            }
            let result = self.rs.encode().context(EncodeStripeSnafu { stripe })?;
            for (out, rec) in parity.iter_mut().zip(result.recovery_iter()) {
                out.extend_from_slice(rec);
            }
            at += len;
        }
        pieces.extend(parity.into_iter().map(BytesMut::freeze));
        let mut frames = Vec::with_capacity(self.layout.n);
        for (i, piece) in pieces.into_iter().enumerate() {
            let checksum = piece_checksum(i, stripe, &piece);
            if let Some(h) = self.hashes.get_mut(i) {
                h.update(&piece);
                h.update(checksum.to_le_bytes());
            }
            self.sizes[i] += self.layout.frame_len();
            frames.push(Frame { piece, checksum });
        }
        self.stripe += 1;
        Ok(frames)
    }

    /// Stripes encoded so far.
    pub fn stripes(&self) -> u64 {
        self.stripe
    }

    /// Stored size and SHA-256 (if hashed) of every block.
    pub fn finish(self) -> Vec<BlockSummary> {
        let mut hashes = self.hashes.into_iter();
        self.sizes
            .into_iter()
            .enumerate()
            .map(|(index, size)| BlockSummary {
                index,
                size,
                sha256: hashes.next().map(|h| h.finalize().into()),
            })
            .collect()
    }
}

async fn run_ec<S>(
    policy: Policy,
    mut enc: StripeEncoder,
    txs: Vec<mpsc::Sender<Bytes>>,
    in_flight: usize,
    mut input: S,
) -> Result<EncodeSummary>
where
    S: Stream<Item = io::Result<Bytes>> + Send + Unpin,
{
    let stripe_len = enc.layout.stripe_len() as usize;
    // `in_flight` stripes (and their parity) can be in use at once: the one being sent
    // plus the `channel_capacity` frames every block channel holds.
    let mut stripes = Recycler::new(stripe_len, in_flight);
    let m = enc.layout.n - enc.layout.k;
    let mut parities = Recycler::new(enc.layout.chunk_size, in_flight * m);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = stripes.take();
    while let Some(chunk) = input.next().await {
        let chunk = chunk.context(ReadInputSnafu)?;
        size += chunk.len() as u64;
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let take = (stripe_len - buf.len()).min(rest.len());
            buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if buf.len() == stripe_len {
                let data = std::mem::replace(&mut buf, stripes.take()).freeze();
                stripes.give(data.clone());
                let parity = (0..m).map(|_| parities.take()).collect();
                let used;
                (enc, hasher, used) =
                    flush_stripe(enc, hasher, &txs, data, parity, stripe_len).await?;
                used.into_iter().for_each(|p| parities.give(p));
            }
        }
    }
    if !buf.is_empty() {
        let real = buf.len();
        buf.resize(stripe_len, 0);
        let parity = (0..m).map(|_| parities.take()).collect();
        (enc, hasher, _) = flush_stripe(enc, hasher, &txs, buf.freeze(), parity, real).await?;
    }
    Ok(EncodeSummary {
        policy,
        size,
        sha256: hasher.finalize().into(),
        blocks: enc.finish(),
    })
}

/// Buffers of one size that come back for reuse once nothing else refers to them. The
/// encoder's stripes and parity are frozen and sliced into frames that the block consumers
/// drop after sending; taking a fresh allocation for every stripe instead made the
/// allocator hand memory back to the OS and fault it in again (page faults were ~10 % of an
/// ec upload's CPU, docs/performance.md). Holds at most `keep` buffers, so it never keeps
/// more than the encoder's memory bound already counts.
struct Recycler {
    len: usize,
    keep: usize,
    held: std::collections::VecDeque<Bytes>,
}

impl Recycler {
    fn new(len: usize, keep: usize) -> Recycler {
        Recycler {
            len,
            keep,
            held: std::collections::VecDeque::with_capacity(keep),
        }
    }

    /// An empty buffer of capacity `len`: a returned one nobody else refers to any more, or
    /// a new one.
    fn take(&mut self) -> BytesMut {
        if let Some(at) = self.held.iter().position(Bytes::is_unique)
            && let Some(held) = self.held.remove(at)
            && let Ok(mut buf) = held.try_into_mut()
            && buf.capacity() >= self.len
        {
            buf.clear();
            return buf;
        }
        BytesMut::with_capacity(self.len)
    }

    /// Keeps `buf` (a whole buffer, a clone of what is handed on) for a later `take`.
    fn give(&mut self, buf: Bytes) {
        if self.held.len() == self.keep {
            self.held.pop_front();
        }
        self.held.push_back(buf);
    }
}

/// Hashes the real bytes of a stripe and encodes it on two blocking threads, then hands every
/// block its frame (concurrently, so one slow block does not delay the others' delivery).
/// Returns the parity pieces' buffers for reuse.
async fn flush_stripe(
    mut enc: StripeEncoder,
    mut hasher: Sha256,
    txs: &[mpsc::Sender<Bytes>],
    data: Bytes,
    parity: Vec<BytesMut>,
    real: usize,
) -> Result<(StripeEncoder, Sha256, Vec<Bytes>)> {
    let object_bytes = data.slice(..real);
    let hash_task = tokio::task::spawn_blocking(move || {
        hasher.update(&object_bytes);
        hasher
    });
    let encode_task = tokio::task::spawn_blocking(move || {
        let frames = enc.encode_into(data, parity);
        (enc, frames)
    });
    let (hashed, encoded) = tokio::join!(hash_task, encode_task);
    let hasher = hashed.context(JoinCoderSnafu)?;
    let (enc, frames) = encoded.context(JoinCoderSnafu)?;
    let frames = frames?;
    let k = enc.layout.k;
    let parity = frames[k..].iter().map(|f| f.piece.clone()).collect();
    futures::future::try_join_all(txs.iter().zip(frames).enumerate().map(
        |(index, (tx, frame))| async move {
            tx.send(frame.piece)
                .await
                .map_err(|_| SendBlockSnafu { index }.build())?;
            tx.send(Bytes::copy_from_slice(&frame.checksum.to_le_bytes()))
                .await
                .map_err(|_| SendBlockSnafu { index }.build())
        },
    ))
    .await?;
    Ok((enc, hasher, parity))
}

/// `none` and `rep`: every block gets the object's bytes as they are.
async fn run_fanout<S>(
    policy: Policy,
    txs: Vec<mpsc::Sender<Bytes>>,
    mut input: S,
) -> Result<EncodeSummary>
where
    S: Stream<Item = io::Result<Bytes>> + Send + Unpin,
{
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = input.next().await {
        let chunk = chunk.context(ReadInputSnafu)?;
        size += chunk.len() as u64;
        let mut at = 0;
        while at < chunk.len() {
            let end = (at + MAX_CHUNK_SIZE as usize).min(chunk.len());
            let piece = chunk.slice(at..end);
            at = end;
            let to_hash = piece.clone();
            let hash_task = tokio::task::spawn_blocking(move || {
                hasher.update(&to_hash);
                hasher
            });
            let sent = futures::future::try_join_all(txs.iter().enumerate().map(|(index, tx)| {
                let piece = piece.clone();
                async move {
                    tx.send(piece)
                        .await
                        .map_err(|_| SendBlockSnafu { index }.build())
                }
            }))
            .await;
            hasher = hash_task.await.context(JoinCoderSnafu)?;
            sent?;
        }
    }
    let sha256: [u8; 32] = hasher.finalize().into();
    let blocks = (0..txs.len())
        .map(|index| BlockSummary {
            index,
            size,
            sha256: Some(sha256),
        })
        .collect();
    Ok(EncodeSummary {
        policy,
        size,
        sha256,
        blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer comes back only once nothing else refers to it, empty and with its
    /// capacity; the recycler holds at most `keep` of them.
    #[test]
    fn recycler_reuses_a_buffer_only_when_it_is_free() {
        let mut pool = Recycler::new(4096, 2);
        let mut first = pool.take();
        first.extend_from_slice(&[7; 4096]);
        let first = first.freeze();
        let at = first.as_ptr();
        let piece = first.slice(100..200);
        pool.give(first);
        let other = pool.take();
        assert_ne!(
            other.as_ptr(),
            at,
            "handed out while a piece was still alive"
        );
        assert!(other.is_empty() && other.capacity() >= 4096);
        drop(piece);
        let again = pool.take();
        assert_eq!(again.as_ptr(), at, "a free buffer was not reused");
        assert!(again.is_empty() && again.capacity() >= 4096);

        for _ in 0..3 {
            let mut b = BytesMut::with_capacity(4096);
            b.resize(4096, 1);
            pool.give(b.freeze());
        }
        assert_eq!(pool.held.len(), 2);
    }

    /// Recycled stripe and parity buffers must not change a byte of the output: encoding
    /// many stripes through `run` (buffers reused) gives the frames of fresh encoders.
    #[tokio::test]
    async fn recycled_buffers_encode_like_fresh_ones() {
        let layout = EcLayout {
            k: 2,
            n: 4,
            chunk_size: 256,
        };
        let policy = Policy::ec(2, 4, 256).unwrap();
        let stripes = 9;
        let data: Vec<u8> = (0..stripes * 512 + 100)
            .map(|i| (i * 7 % 253) as u8)
            .collect();
        let (encoder, streams) = crate::encoder(policy, EncodeOptions::default()).unwrap();
        let input = futures::stream::iter(
            data.chunks(300)
                .map(|c| Ok::<_, io::Error>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        let collect =
            futures::future::join_all(streams.into_iter().map(crate::memory::MemoryBlock::collect));
        let (summary, blocks) = tokio::join!(encoder.run(input), collect);
        summary.unwrap();
        let mut fresh = StripeEncoder::new(layout).unwrap();
        let mut want = vec![Vec::new(); 4];
        let mut padded = data.clone();
        padded.resize((stripes + 1) * 512, 0);
        for stripe in padded.chunks(512) {
            let frames = fresh.encode(Bytes::copy_from_slice(stripe)).unwrap();
            for (w, f) in want.iter_mut().zip(frames) {
                w.extend_from_slice(&f.piece);
                w.extend_from_slice(&f.checksum.to_le_bytes());
            }
        }
        for (i, (got, want)) in blocks.iter().zip(&want).enumerate() {
            assert_eq!(&got[..], &want[..], "block {i}");
        }
    }

    /// Slice-by-slice coding must give exactly the parity of coding whole pieces, including
    /// a piece size that is not a multiple of the slice.
    #[test]
    fn sliced_parity_equals_whole_piece_parity() {
        for cs in [64, CODEC_SLICE, 2 * CODEC_SLICE + 192] {
            let layout = EcLayout {
                k: 3,
                n: 5,
                chunk_size: cs,
            };
            let data: Vec<u8> = (0..3 * cs).map(|i| (i * 31 % 251) as u8).collect();
            let frames = StripeEncoder::new(layout)
                .unwrap()
                .encode(Bytes::from(data.clone()))
                .unwrap();
            let whole = reed_solomon_simd::encode(3, 2, data.chunks(cs)).unwrap();
            assert_eq!(&frames[3].piece[..], &whole[0][..], "cs {cs}");
            assert_eq!(&frames[4].piece[..], &whole[1][..], "cs {cs}");
        }
    }
}
