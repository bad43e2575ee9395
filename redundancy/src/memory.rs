//! In-memory [`BlockSource`]s for tests and benchmarks, with fault injection: a block that
//! cannot be opened, one that fails after some bytes, one that serves corrupt bytes. Not for
//! production data (it holds the whole block).

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::decode::{BlockSource, BlockSourceRef, ByteStream};

/// What a [`MemoryBlock`] does wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// `open` fails (the space or its agent is down).
    Unreachable,
    /// The stream fails once this many bytes of the block (absolute offset) were served.
    FailAt(u64),
}

/// A stored block in memory, served in chunks of `chunk` bytes.
#[derive(Debug)]
pub struct MemoryBlock {
    data: Bytes,
    chunk: usize,
    fault: Fault,
    opens: AtomicU64,
    requested: AtomicU64,
}

impl MemoryBlock {
    pub fn new(data: Bytes, chunk: usize, fault: Fault) -> Arc<MemoryBlock> {
        Arc::new(MemoryBlock {
            data,
            chunk: chunk.max(1),
            fault,
            opens: AtomicU64::new(0),
            requested: AtomicU64::new(0),
        })
    }

    /// Collects a block stream (from an encoder) into memory.
    pub async fn collect(stream: impl futures::Stream<Item = Bytes> + Unpin) -> Bytes {
        let chunks: Vec<Bytes> = stream.collect().await;
        let mut out = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
        for c in chunks {
            out.extend_from_slice(&c);
        }
        Bytes::from(out)
    }

    /// Times `open` was called.
    pub fn opens(&self) -> u64 {
        self.opens.load(Ordering::Relaxed)
    }

    /// Bytes of all the ranges opened so far.
    pub fn requested(&self) -> u64 {
        self.requested.load(Ordering::Relaxed)
    }

    pub fn as_source(self: &Arc<Self>) -> BlockSourceRef {
        self.clone()
    }
}

#[async_trait]
impl BlockSource for MemoryBlock {
    async fn open(&self, range: Range<u64>) -> io::Result<ByteStream> {
        self.opens.fetch_add(1, Ordering::Relaxed);
        if self.fault == Fault::Unreachable {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "block unreachable",
            ));
        }
        let len = self.data.len() as u64;
        let (start, end) = (range.start.min(len), range.end.min(len));
        let fail_at = match self.fault {
            Fault::FailAt(at) => Some(at),
            Fault::None | Fault::Unreachable => None,
        };
        let data = self.data.clone();
        let chunk = self.chunk as u64;
        let parts = futures::stream::iter((start..end).step_by(self.chunk).map(move |at| {
            let stop = (at + chunk).min(end);
            match fail_at {
                Some(f) if f < stop => Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "block stream failed",
                )),
                _ => Ok(data.slice(at as usize..stop as usize)),
            }
        }));
        self.requested.fetch_add(end - start, Ordering::Relaxed);
        Ok(parts.boxed())
    }
}
