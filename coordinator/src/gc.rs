//! Shard garbage collection (leader only). A shard is deleted only when no object or part
//! references it (`v1/shard-ref/…`) and it has not been written or touched (dedup) for the
//! grace period. The grace is at least `upload_expiry`, which protects shards of uploads
//! that are written but not yet committed: they can only commit before their upload
//! expires.
//!
//! Per candidate: put the `v1/shard-gc/{space}/{hash}` marker (commits that would reference
//! the shard compare its absence), re-check the references, ask the agent to delete the
//! shard if it is still untouched since the cutoff (the agent serializes this with dedup
//! touches of the same shard), then remove the marker.

use std::sync::Arc;
use std::time::Duration;

use client::AgentPool;
use common::SpaceId;
use meta::{Compare, Op, Txn};
use proto::agent::{DeleteShardRequest, ListShardsRequest};

use crate::catalog::{Catalog, keys};
use crate::error::{Error, Result};
use crate::registry::{Liveness, Registry};
use crate::tickets::TicketSigner;

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub spaces: usize,
    pub scanned: usize,
    pub deleted: usize,
    pub referenced: usize,
    pub recent: usize,
    pub skipped_spaces: usize,
}

#[derive(Clone)]
pub struct Gc {
    pub(crate) catalog: Catalog,
    pub(crate) registry: Arc<Registry>,
    pub(crate) signer: TicketSigner,
    pub(crate) agents: AgentPool,
}

const TICKET_TTL_MS: i64 = 10 * 60 * 1000;

impl Gc {
    /// One pass over every user space whose agent is live; shards untouched for `grace`
    /// and referenced by nothing are deleted.
    pub async fn collect(&self, grace: Duration) -> Result<GcReport> {
        let mut report = GcReport::default();
        let now = common::time::now_ms();
        let cutoff = now - i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        for space in self.catalog.list_spaces().await? {
            let Some(agent) = self.catalog.get_agent(space.agent_id).await? else {
                report.skipped_spaces += 1;
                continue;
            };
            if self.registry.liveness(agent.agent_id) != Liveness::Alive || !space.stores_shards() {
                report.skipped_spaces += 1;
                continue;
            }
            let space_ref = (space.space_id, space.revision);
            report.spaces += 1;
            let mut client = self
                .agents
                .get(&agent.address)
                .map_err(|source| Error::Agent { source })?;
            let ticket = self.signer.list(space_ref, now + TICKET_TTL_MS);
            let mut stream = client
                .list_shards(ListShardsRequest {
                    ticket: Some(ticket),
                })
                .await
                .map_err(|s| Error::Agent { source: s.into() })?
                .into_inner();
            while let Some(batch) = stream
                .message()
                .await
                .map_err(|s| Error::Agent { source: s.into() })?
            {
                for info in batch.shards {
                    report.scanned += 1;
                    if info.modified_ms >= cutoff {
                        report.recent += 1;
                        continue;
                    }
                    if self.referenced(space.space_id, &info.sha256).await? {
                        report.referenced += 1;
                        continue;
                    }
                    if self
                        .delete_one(&mut client, space_ref, &info.sha256, cutoff)
                        .await?
                    {
                        report.deleted += 1;
                        common::metrics::metrics().gc_shards_deleted.inc();
                    } else {
                        report.referenced += 1;
                    }
                }
            }
        }
        if report.deleted > 0 {
            tracing::info!(?report, "shard gc pass");
        }
        common::metrics::metrics().gc_passes.inc();
        Ok(report)
    }

    async fn referenced(&self, space: SpaceId, hash: &str) -> Result<bool> {
        let page = self
            .catalog
            .meta()
            .range(meta::Range {
                limit: 1,
                keys_only: true,
                ..meta::Range::prefix(keys::shard_ref_prefix(space, hash))
            })
            .await?;
        Ok(!page.kvs.is_empty())
    }

    async fn delete_one(
        &self,
        client: &mut client::AgentClient,
        space_ref: crate::tickets::SpaceRef,
        hash: &str,
        cutoff: i64,
    ) -> Result<bool> {
        let space = space_ref.0;
        let marker = keys::shard_gc(space, hash);
        let meta = self.catalog.meta();
        let placed = meta
            .txn(Txn {
                when: vec![Compare::Absent(marker.clone())],
                then: vec![Op::Put(marker.clone(), Vec::new())],
                otherwise: vec![],
            })
            .await?;
        if !placed.succeeded {
            return Ok(false);
        }
        let result = async {
            // A commit that raced the marker is visible now; one after it will fail.
            if self.referenced(space, hash).await? {
                return Ok(false);
            }
            let ticket = self.signer.delete(
                space_ref,
                hash,
                cutoff,
                common::time::now_ms() + TICKET_TTL_MS,
            );
            let resp = client
                .delete_shard(DeleteShardRequest {
                    ticket: Some(ticket),
                })
                .await
                .map_err(|s| Error::Agent { source: s.into() })?;
            Ok(resp.into_inner().deleted)
        }
        .await;
        meta.delete(&marker).await?;
        result
    }
}

/// Run [`Gc::collect`] every `interval` until `shutdown`.
pub async fn run(
    gc: Gc,
    interval: Duration,
    grace: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if let Err(e) = gc.collect(grace).await {
            tracing::warn!(error = %common::error::ErrorChain(&e), "shard gc pass failed");
        }
    }
}
