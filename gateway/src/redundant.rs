//! Bytes of rep/ec objects (issue 8, `docs/redundancy.md`). Uploads: the body goes through
//! `redundancy::encoder` and each block is streamed to its own agent with `PutShard` (one
//! ticket per block); each block's size must equal the encoder's, and its hash is the one
//! its agent computed while storing it (the encoder hashes only the object). Downloads:
//! `redundancy::read_range` over one [`AgentBlock`] (ranged `GetShard`) per block, so a
//! missing, unreachable or corrupt block is rebuilt from the others (degraded read).
//!
//! Memory: the encoder's bound (`Encoder::memory_bound`, 22 MiB for ec(4,6) with 1 MiB
//! pieces) plus, per block, the gRPC stream's own buffering; reads hold a stripe.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use client::AgentBlock;
use futures::StreamExt;
use proto::coordinator::{self as pb, BeginUploadResponse};
use redundancy::{BlockSourceRef, Policy, ReadStats};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::state::AppState;

/// What a rep/ec upload stored, for `CommitUpload`.
#[derive(Debug)]
pub(crate) struct StoredBlocks {
    pub size: u64,
    pub sha256: String,
    pub blocks: Vec<pb::StoredBlock>,
}

fn policy_of(json: &str) -> Result<Policy, ApiError> {
    serde_json::from_str(json)
        .map_err(|e| ApiError::internal(format!("coordinator sent a bad redundancy {json:?}: {e}")))
}

fn encode_error(err: redundancy::Error, what: &str) -> ApiError {
    match err {
        redundancy::Error::ReadInput { source } => {
            ApiError::bad_argument(format!("failed to read the body of {what}: {source}"))
        }
        other => ApiError::new(
            common::CodedError::code(&other),
            format!(
                "failed to encode {what}: {}",
                common::error::ErrorChain(&other)
            ),
        ),
    }
}

/// Encode the bytes of `input` under the policy of `begin` and store every block on its
/// agent. Any failure stores nothing that gets committed (blocks already written are
/// reclaimed by shard GC, like any uncommitted upload).
pub(crate) async fn put_blocks(
    state: &AppState,
    begin: &BeginUploadResponse,
    input: futures::stream::BoxStream<'_, io::Result<bytes::Bytes>>,
    what: &str,
) -> Result<StoredBlocks, ApiError> {
    let policy = policy_of(&begin.redundancy_json)?;
    if begin.blocks.len() != policy.block_count() {
        return Err(ApiError::internal(format!(
            "coordinator placed {} blocks for a {} upload of {} blocks",
            begin.blocks.len(),
            policy.kind(),
            policy.block_count()
        )));
    }
    // The agents hash what they store and answer with it; hashing ec blocks here as well
    // would cost a SHA-256 pass over n/k of the object (the CRC32C of every piece still
    // catches damage on read). rep/none blocks are the object, whose hash is computed anyway.
    let opts = redundancy::EncodeOptions {
        hash_blocks: false,
        ..redundancy::EncodeOptions::default()
    };
    let (encoder, streams) =
        redundancy::encoder(policy, opts).map_err(|e| encode_error(e, what))?;
    // Each block's request stream ends with `finish` only once the whole body was encoded
    // successfully; otherwise it ends without it and the agent discards the bytes.
    let (done_tx, done_rx) = watch::channel(None::<bool>);
    let mut calls = Vec::with_capacity(streams.len());
    for (stream, target) in streams.into_iter().zip(&begin.blocks) {
        let mut agent = state.agents().get(&target.agent_address)?;
        let ticket = target
            .ticket
            .clone()
            .ok_or_else(|| ApiError::internal("coordinator sent a block without a ticket"))?;
        let requests = client::put_block_requests(ticket, stream, done_rx.clone());
        calls.push(async move { agent.put_shard(requests).await });
    }
    let encode = async {
        let res = encoder.run(input).await;
        let _ = done_tx.send(Some(res.is_ok()));
        res
    };
    let (summary, answers) = tokio::join!(encode, futures::future::join_all(calls));
    // An agent's refusal explains a failed encode (its block consumer went away) better,
    // and the first block whose consumer went away is the cause: the other agents then
    // only saw their streams end without `finish`.
    let cause = match summary {
        Err(redundancy::Error::SendBlock { index }) => Some(index),
        _ => None,
    };
    let mut stored = Vec::with_capacity(answers.len());
    let mut failed = None;
    for (i, answer) in answers.into_iter().enumerate() {
        match answer {
            Ok(resp) => stored.push(resp.into_inner()),
            Err(status) => {
                if summary.is_ok() || !matches!(summary, Err(redundancy::Error::ReadInput { .. })) {
                    tracing::warn!(block = i, agent = %begin.blocks[i].agent_address, error = %status.message(), "block write failed");
                    if failed.is_none() || cause == Some(i) {
                        failed = Some(status);
                    }
                }
            }
        }
    }
    if let Some(status) = failed {
        return Err(ApiError::from(status));
    }
    let summary = summary.map_err(|e| encode_error(e, what))?;
    let mut blocks = Vec::with_capacity(stored.len());
    for (resp, block) in stored.into_iter().zip(&summary.blocks) {
        client::check_stored_block(block, &resp)
            .map_err(|m| ApiError::internal(format!("{what}: {m}")))?;
        blocks.push(pb::StoredBlock {
            size: resp.size,
            sha256: resp.sha256,
        });
    }
    common::metrics::metrics()
        .gateway_bytes
        .with_label_values(&["in"])
        .inc_by(summary.size);
    Ok(StoredBlocks {
        size: summary.size,
        sha256: hex::encode(summary.sha256),
        blocks,
    })
}

/// The object bytes `[start, start + len)` of a rep/ec object as a body stream. Errors
/// known before the first byte (too few reachable blocks, a first stripe that cannot be
/// rebuilt) are returned as an envelope; later ones abort the body, never wrong bytes.
pub(crate) async fn read_blocks(
    state: &AppState,
    object: &pb::Object,
    sources: Vec<pb::BlockSource>,
    start: u64,
    len: u64,
) -> Result<impl futures::Stream<Item = Result<Bytes, io::Error>> + Send + use<>, ApiError> {
    let policy = policy_of(&object.redundancy)?;
    if sources.len() != policy.block_count() {
        return Err(ApiError::internal(format!(
            "coordinator resolved {} blocks of a {} object of {} blocks",
            sources.len(),
            policy.kind(),
            policy.block_count()
        )));
    }
    let step = redundancy::EcLayout::of(&policy).map_or(u64::MAX, |l| l.frame_len());
    let mut blocks: Vec<Option<BlockSourceRef>> = Vec::with_capacity(sources.len());
    for s in sources {
        blocks.push(match (s.agent_address.is_empty(), s.ticket) {
            (false, Some(ticket)) => Some(Arc::new(AgentBlock::new(
                state.agents().get(&s.agent_address)?,
                ticket,
                step,
            )) as BlockSourceRef),
            _ => None,
        });
    }
    let reachable = blocks.iter().filter(|b| b.is_some()).count();
    let object_id = object.object_id;
    if reachable < policy.min_blocks() {
        return Err(ApiError::new(
            common::ErrorCode::Unavailable,
            format!(
                "object {object_id} cannot be read: {reachable} of its {} blocks are reachable, {} needed",
                policy.block_count(),
                policy.min_blocks()
            ),
        ));
    }
    let stats = Arc::new(ReadStats::default());
    let mut stream =
        redundancy::read_range(policy, object.size, blocks, start, Some(len), stats.clone())
            .map_err(|e| ApiError::new(common::CodedError::code(&e), e.to_string()))?;
    let first = match stream.next().await {
        Some(Ok(b)) => b,
        Some(Err(e)) => {
            return Err(ApiError::new(
                common::CodedError::code(&e),
                format!("object {object_id} cannot be read: {e}"),
            ));
        }
        None => Bytes::new(),
    };
    let metrics = common::metrics::metrics();
    // Reported when the body is dropped: after the last byte, or when the client stops
    // early (a degraded stripe already read is damage all the same).
    let report = ReadReport {
        stats,
        coordinator: state.coordinator(),
        object_id,
    };
    Ok(futures::stream::once(futures::future::ready(Ok(first)))
        .chain(stream)
        .map(move |r| {
            let _report = &report; // owned by the body: dropped (and sent) with it
            match r {
                Ok(b) => {
                    metrics
                        .gateway_bytes
                        .with_label_values(&["out"])
                        .inc_by(b.len() as u64);
                    Ok(b)
                }
                Err(e) => {
                    tracing::warn!(object_id, error = %e, "download aborted mid-stream");
                    Err(io::Error::other(e.to_string()))
                }
            }
        }))
}

/// What a finished read saw: counted in `jcs_gateway_read_damage_total`, logged, and, when
/// anything was degraded, reported to the coordinator.
struct ReadReport {
    stats: Arc<ReadStats>,
    coordinator: client::CoordinatorClient,
    object_id: u64,
}

impl Drop for ReadReport {
    fn drop(&mut self) {
        let stats = &self.stats;
        let degraded = ReadStats::get(&stats.degraded_stripes);
        let corrupt = ReadStats::get(&stats.corrupt_pieces);
        let failed = ReadStats::get(&stats.failed_blocks);
        let metrics = common::metrics::metrics();
        for (kind, n) in [
            ("degraded_stripes", degraded),
            ("corrupt_pieces", corrupt),
            ("failed_blocks", failed),
        ] {
            metrics.read_damage.with_label_values(&[kind]).inc_by(n);
        }
        if degraded + corrupt + failed > 0 {
            tracing::warn!(
                object_id = self.object_id,
                degraded_stripes = degraded,
                corrupt_pieces = corrupt,
                failed_blocks = failed,
                "degraded read"
            );
            // hyper drops the body inside the runtime; outside one (a body dropped after
            // shutdown) there is nothing to send the report with.
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => report_damage(
                    &runtime,
                    self.coordinator.clone(),
                    self.object_id,
                    corrupt > 0,
                ),
                Err(_) => tracing::debug!(
                    object_id = self.object_id,
                    "no runtime to report the damage with"
                ),
            }
        }
    }
}

/// Queue `object_id` for repair (`ReportDamage`), fire-and-forget: the download never
/// waits for it and a failure is only logged.
fn report_damage(
    runtime: &tokio::runtime::Handle,
    mut coordinator: client::CoordinatorClient,
    object_id: u64,
    corrupt: bool,
) {
    runtime.spawn(async move {
        if let Err(status) = coordinator
            .report_damage(pb::ReportDamageRequest { object_id, corrupt })
            .await
        {
            tracing::debug!(object_id, error = %status.message(), "damage report failed");
        }
    });
}
