//! Repair and scrub on the agent side (docs/redundancy.md, "Repair and scrub"): the
//! coordinator's leader decides and records; the agent does the byte work.
//!
//! - [`check_shards`] (`StatShards` / `VerifyShards`): presence, size and, when `verify`,
//!   the SHA-256 of shards of one space (their name), one answer per hash.
//! - [`rebuild`] (`RebuildBlocks`): read a rep/ec object from its good blocks on other
//!   agents (`GetShard` with GET tickets, one ec frame per call as in the gateway), run
//!   `redundancy::read_range` (ec pieces checked by CRC, degraded stripes decoded) into
//!   `redundancy::encoder` (stripe by stripe), and stream the blocks at the target
//!   indexes to their agents' `PutShard` (PUT tickets). The other blocks are computed and
//!   dropped. Memory: the encoder's bound plus one frame per source; nothing is buffered
//!   whole. A target gets `finish` only when the whole object was read and encoded, so a
//!   failed rebuild stores nothing.
//!   With `target_policy_json` (re-encode on a policy change) the sources are read with
//!   `policy_json` (which may be `none`: one plain shard at index 0) and the targets are
//!   encoded with the target policy; the rest is the same.

use std::io;
use std::sync::Arc;

use common::shard_hash;
use futures::{StreamExt, TryStreamExt};
use proto::agent::{RebuildBlocksRequest, RebuildBlocksResponse, RebuiltBlock, ShardCheck};
use proto::common::Ticket;
use proto::common::ticket_body::Kind;
use redundancy::{BlockSourceRef, Policy, ReadStats};
use snafu::{ResultExt, ensure};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::{
    BadRequestSnafu, Error, RebuildSnafu, RemoteAgentSnafu, Result, ShuttingDownSnafu,
    TargetMismatchSnafu,
};
use crate::store::{SpaceStore, hash_chunk, is_valid_hash};

/// Most hashes one StatShards / VerifyShards call may carry.
pub const MAX_CHECK_HASHES: usize = 1000;

/// Presence and size (and, when `verify`, content hash) of `hashes` in `store`.
pub async fn check_shards(
    store: &SpaceStore,
    hashes: Vec<String>,
    verify: bool,
    shutdown: &CancellationToken,
) -> Result<Vec<ShardCheck>> {
    ensure!(
        hashes.len() <= MAX_CHECK_HASHES,
        BadRequestSnafu {
            message: format!(
                "at most {MAX_CHECK_HASHES} hashes per call (got {})",
                hashes.len()
            ),
        }
    );
    if let Some(bad) = hashes.iter().find(|h| !is_valid_hash(h)) {
        return crate::error::InvalidShardHashSnafu { hash: bad.clone() }.fail();
    }
    let mut out = Vec::with_capacity(hashes.len());
    for hash in hashes {
        ensure!(!shutdown.is_cancelled(), ShuttingDownSnafu);
        let mut check = ShardCheck {
            sha256: hash.clone(),
            ..ShardCheck::default()
        };
        match store.stat(&hash).await {
            Ok(None) => {}
            Ok(Some(size)) => {
                check.present = true;
                check.size = size;
                if verify {
                    match hash_shard(store, &hash).await {
                        Ok(actual) => check.corrupt = actual != hash,
                        Err(e) => check.error = common::error::ErrorChain(&e).to_string(),
                    }
                }
            }
            Err(e) => check.error = common::error::ErrorChain(&e).to_string(),
        }
        out.push(check);
    }
    Ok(out)
}

/// The name the content of the stored shard `hash` has, with the algorithm `hash` says
/// (streamed, hashed off the runtime).
async fn hash_shard(store: &SpaceStore, hash: &str) -> Result<String> {
    let algorithm = shard_hash::Algorithm::of(hash).unwrap_or_default();
    let mut chunks = store.read(hash, 0, 0).await?;
    let mut hasher = shard_hash::Hasher::new(algorithm);
    while let Some(chunk) = chunks.try_next().await? {
        hasher = hash_chunk(hasher, chunk).await?;
    }
    Ok(hasher.finish())
}

/// `RebuildBlocks`: see the module doc. `agents` dials the other agents (with the agent's
/// TLS); `secret` checks every ticket before any byte moves.
pub async fn rebuild(
    req: RebuildBlocksRequest,
    secret: &common::secret::Secret,
    agents: &client::AgentPool,
    shutdown: &CancellationToken,
) -> Result<RebuildBlocksResponse> {
    let policy: Policy = serde_json::from_str(&req.policy_json).map_err(|e| Error::BadRequest {
        message: format!("policy_json: {e}"),
    })?;
    // Re-encode: the targets get another policy than the sources.
    let reencode = !req.target_policy_json.is_empty();
    let target_policy: Policy = if reencode {
        serde_json::from_str(&req.target_policy_json).map_err(|e| Error::BadRequest {
            message: format!("target_policy_json: {e}"),
        })?
    } else {
        policy
    };
    ensure!(
        reencode || !matches!(policy, Policy::None),
        BadRequestSnafu {
            message: "only rep and ec objects have blocks to rebuild",
        }
    );
    let n = policy.block_count();
    let target_n = target_policy.block_count();
    ensure!(
        !req.targets.is_empty(),
        BadRequestSnafu {
            message: "targets is empty",
        }
    );
    let now = common::time::now_ms();
    let step = redundancy::EcLayout::of(&policy).map_or(u64::MAX, |l| l.frame_len());
    let mut blocks: Vec<Option<BlockSourceRef>> = vec![None; n];
    for s in &req.sources {
        let i = s.index as usize;
        ensure!(
            i < n && blocks[i].is_none(),
            BadRequestSnafu {
                message: format!("sources: index {i} is out of range or repeated"),
            }
        );
        crate::ticket::verify(secret, s.ticket.as_ref(), Kind::Get, now)?;
        let agent = agents.get(&s.agent_address).context(RemoteAgentSnafu {
            role: "source",
            address: s.agent_address.clone(),
        })?;
        blocks[i] = Some(Arc::new(client::AgentBlock::new(
            agent,
            s.ticket.clone().unwrap_or_default(),
            step,
        )));
    }
    ensure!(
        blocks.iter().flatten().count() >= policy.min_blocks(),
        BadRequestSnafu {
            message: format!(
                "a {} object needs {} sources, got {}",
                policy.kind(),
                policy.min_blocks(),
                req.sources.len()
            ),
        }
    );
    let mut wanted: Vec<Option<(String, Ticket)>> = vec![None; target_n];
    for t in &req.targets {
        let i = t.index as usize;
        // A repair never rewrites a block it reads; a re-encode writes a new set.
        let is_source = !reencode && blocks.get(i).is_some_and(Option::is_some);
        ensure!(
            i < target_n && wanted[i].is_none() && !is_source,
            BadRequestSnafu {
                message: format!("targets: index {i} is out of range, repeated or a source"),
            }
        );
        crate::ticket::verify(secret, t.ticket.as_ref(), Kind::Put, now)?;
        wanted[i] = Some((
            t.agent_address.clone(),
            t.ticket.clone().unwrap_or_default(),
        ));
    }

    let stats = Arc::new(ReadStats::default());
    let object = redundancy::read_range(policy, req.object_size, blocks, 0, None, stats.clone())
        .context(RebuildSnafu)?;
    // The targets hash what they store and `finish` carries the CRC32C of what was sent
    // (`client::put_block_requests`), so the encoder need not hash the ec blocks again.
    let opts = redundancy::EncodeOptions {
        hash_blocks: false,
        ..redundancy::EncodeOptions::default()
    };
    let (encoder, streams) = redundancy::encoder(target_policy, opts).context(RebuildSnafu)?;
    // Each target stream ends with `finish` only once the whole object was re-encoded.
    let (done_tx, done_rx) = watch::channel(None::<bool>);
    let mut puts = Vec::new();
    let mut drains = Vec::new();
    for stream in streams {
        let i = stream.index();
        let Some((address, ticket)) = wanted[i].take() else {
            // Not rebuilt: computed and dropped (the encoder needs every stream read).
            drains.push(stream.for_each(|_| futures::future::ready(())));
            continue;
        };
        let mut dest = agents.get(&address).context(RemoteAgentSnafu {
            role: "target",
            address: address.clone(),
        })?;
        let requests = client::put_block_requests(ticket, stream, done_rx.clone());
        puts.push(async move {
            let answer = dest.put_shard(requests).await;
            (i, address, answer)
        });
    }
    let input = object.map_err(|e| io::Error::other(e.to_string()));
    let encode = async {
        let res = encoder.run(input).await;
        let _ = done_tx.send(Some(res.is_ok()));
        res
    };
    let work = async {
        tokio::join!(
            encode,
            futures::future::join_all(puts),
            futures::future::join_all(drains)
        )
    };
    let (summary, answers, _) = tokio::select! {
        () = shutdown.cancelled() => return ShuttingDownSnafu.fail(),
        r = work => r,
    };
    let summary = summary.context(RebuildSnafu)?;
    let mut out = Vec::with_capacity(answers.len());
    for (i, address, answer) in answers {
        let stored = answer
            .map_err(client::Error::from)
            .context(RemoteAgentSnafu {
                role: "target",
                address: address.clone(),
            })?
            .into_inner();
        client::check_stored_block(&summary.blocks[i], &stored)
            .map_err(|message| TargetMismatchSnafu { address, message }.build())?;
        out.push(RebuiltBlock {
            index: i as u32,
            size: stored.size,
            sha256: stored.sha256,
        });
    }
    tracing::info!(
        policy = policy.kind(),
        target_policy = target_policy.kind(),
        rebuilt = out.len(),
        degraded_stripes = ReadStats::get(&stats.degraded_stripes),
        "blocks rebuilt"
    );
    Ok(RebuildBlocksResponse {
        blocks: out,
        object_sha256: hex::encode(summary.sha256),
        bytes_read: ReadStats::get(&stats.bytes_fetched),
    })
}
