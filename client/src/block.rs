//! A stored block on an agent as a [`redundancy::BlockSource`]: the gateway reads rep/ec
//! objects through it, an agent rebuilding blocks (`RebuildBlocks`) reads the surviving
//! blocks from other agents through it.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use futures::StreamExt;
use proto::agent::put_shard_request::Msg;
use proto::agent::{Finish, GetShardRequest, PutShardRequest};
use proto::common::Ticket;
use redundancy::{BlockSource, ByteStream};

use crate::AgentClient;

/// One stored block on an agent, read by range with `GetShard`.
///
/// An ec read asks for one frame (stripe piece + checksum) per `GetShard` call, the next
/// only once the previous one was consumed. The blocks of one object often share an
/// HTTP/2 connection (one agent serving several spaces), whose flow-control window is
/// shared by its streams: a block streamed ahead of the reader would fill that window
/// with bytes nobody reads yet and starve the block the reader waits for (a deadlock seen
/// with 1 MiB pieces on a multi-threaded runtime, test
/// `ec_with_all_blocks_on_one_agent_and_1_mib_pieces`). With one frame in flight per block,
/// every byte received belongs to the stripe being read, which reads all its blocks at once.
pub struct AgentBlock {
    agent: AgentClient,
    ticket: Ticket,
    /// Bytes per `GetShard` call (`u64::MAX`: the whole range in one call).
    step: u64,
}

impl AgentBlock {
    /// The block `ticket` (a GET ticket) names, on the agent behind `agent`, read `step`
    /// bytes per call.
    pub fn new(agent: AgentClient, ticket: Ticket, step: u64) -> Self {
        AgentBlock {
            agent,
            ticket,
            step: step.max(1),
        }
    }

    async fn get(
        &self,
        offset: u64,
        length: u64,
    ) -> io::Result<tonic::Streaming<proto::agent::Chunk>> {
        Ok(self
            .agent
            .clone()
            .get_shard(GetShardRequest {
                ticket: Some(self.ticket.clone()),
                offset,
                length,
            })
            .await
            .map_err(|s| get_error(&s))?
            .into_inner())
    }
}

fn get_error(s: &tonic::Status) -> io::Error {
    io::Error::other(format!("GetShard: {}", s.message()))
}

#[async_trait::async_trait]
impl BlockSource for AgentBlock {
    async fn open(&self, range: Range<u64>) -> io::Result<ByteStream> {
        if range.end <= range.start {
            // GetShard reads `length = 0` as "to the end".
            return Ok(futures::stream::empty().boxed());
        }
        let step = self.step;
        let first_len = (range.end - range.start).min(step);
        // The first call is made here, so a missing block or a down agent fails the open.
        let first = self.get(range.start, first_len).await?;
        let this = AgentBlock {
            agent: self.agent.clone(),
            ticket: self.ticket.clone(),
            step,
        };
        let state = (this, Some(first), range.start + first_len, range.end);
        Ok(
            futures::stream::try_unfold(state, |(this, mut current, mut next, end)| async move {
                loop {
                    if let Some(stream) = current.as_mut()
                        && let Some(chunk) = stream.message().await.map_err(|s| get_error(&s))?
                    {
                        return Ok(Some((chunk.data, (this, current, next, end))));
                    }
                    if next >= end {
                        return Ok(None);
                    }
                    let len = (end - next).min(this.step);
                    current = Some(this.get(next, len).await?);
                    next += len;
                }
            })
            .boxed(),
        )
    }
}

/// The request stream of one block's `PutShard`: the ticket, the block's bytes, then
/// `finish` only once `done` says the whole encode succeeded (`Some(true)`); otherwise the
/// stream ends without it and the agent discards what it received. `finish` carries the
/// CRC32C of the bytes sent, so the agent refuses a block damaged in transit (its SHA-256
/// answer then always describes what was sent). Shared by the gateway's
/// rep/ec uploads and the agent's `RebuildBlocks`.
pub fn put_block_requests(
    ticket: Ticket,
    data: impl futures::Stream<Item = bytes::Bytes> + Send + 'static,
    mut done: tokio::sync::watch::Receiver<Option<bool>>,
) -> impl futures::Stream<Item = PutShardRequest> + Send + 'static {
    // The stream's items are produced one after another, so the running CRC needs no lock;
    // the atomic only lets the `finish` future read what the data closure wrote.
    let crc = Arc::new(AtomicU32::new(0));
    let sent = crc.clone();
    let finish = futures::stream::once(async move {
        let ok = done
            .wait_for(Option::is_some)
            .await
            .map(|v| *v == Some(true))
            .unwrap_or(false);
        ok.then(|| PutShardRequest {
            msg: Some(Msg::Finish(Finish {
                crc32c: Some(sent.load(Ordering::Acquire)),
            })),
        })
    })
    .filter_map(futures::future::ready);
    futures::stream::once(futures::future::ready(PutShardRequest {
        msg: Some(Msg::Ticket(ticket)),
    }))
    .chain(data.map(move |data| {
        let next = crc32c::crc32c_append(crc.load(Ordering::Acquire), &data);
        crc.store(next, Ordering::Release);
        PutShardRequest {
            msg: Some(Msg::Data(data)),
        }
    }))
    .chain(finish)
}

/// Checks an agent's `PutShard` answer for one block against what the encoder sent: the
/// sizes must match, and the SHA-256s too when the encoder hashed the block (rep/none
/// blocks always; ec blocks only with `EncodeOptions::hash_blocks`). Otherwise the agent's
/// hash is the block's: its `finish` carried the CRC32C of the bytes sent, so the agent
/// hashed exactly those. `Err` describes the mismatch.
pub fn check_stored_block(
    sent: &redundancy::BlockSummary,
    stored: &proto::agent::PutShardResponse,
) -> Result<(), String> {
    let sent_sha = sent.sha256.map(hex::encode);
    if stored.size == sent.size && sent_sha.as_ref().is_none_or(|sha| *sha == stored.sha256) {
        return Ok(());
    }
    Err(format!(
        "block {} was stored as {} bytes {} but {} bytes {} were sent",
        sent.index,
        stored.size,
        stored.sha256,
        sent.size,
        sent_sha.as_deref().unwrap_or("(not hashed)")
    ))
}

#[cfg(test)]
mod tests {
    use proto::agent::PutShardResponse;
    use redundancy::BlockSummary;

    use super::check_stored_block;

    #[test]
    fn stored_blocks_must_match_what_was_sent() {
        let stored = PutShardResponse {
            size: 10,
            sha256: "ab".repeat(32),
        };
        let hashed = |sha: [u8; 32], size| BlockSummary {
            index: 3,
            size,
            sha256: Some(sha),
        };
        assert!(check_stored_block(&hashed([0xab; 32], 10), &stored).is_ok());
        let err = check_stored_block(&hashed([0xcd; 32], 10), &stored).unwrap_err();
        assert!(
            err.contains("block 3") && err.contains(&"cd".repeat(32)),
            "{err}"
        );
        assert!(check_stored_block(&hashed([0xab; 32], 11), &stored).is_err());
        // Not hashed by the encoder: the size decides, the agent's hash is taken.
        let unhashed = |size| BlockSummary {
            index: 0,
            size,
            sha256: None,
        };
        assert!(check_stored_block(&unhashed(10), &stored).is_ok());
        let err = check_stored_block(&unhashed(9), &stored).unwrap_err();
        assert!(err.contains("(not hashed)"), "{err}");
    }
}
