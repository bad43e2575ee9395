//! Leader election and fencing. Several coordinators may share one etcd; exactly one leads at
//! a time and runs the leader-only work (housekeeping sweeps and resumed deletions, shard GC,
//! repair and scrub, the sync scheduler). Every coordinator serves every RPC (see `docs/architecture.md`,
//! "Coordinators and leadership").
//!
//! - **Election**: a candidate grants a lease of `leader_ttl` and creates `v1/leader`
//!   (value: its advertised address) attached to it, if absent. Whoever creates the key leads
//!   while it keeps the lease alive (every `leader_ttl / 3`); the others retry at that pace.
//! - **Fencing**: the leader's work gets the store wrapped in [`meta::Fenced`] with the
//!   revision of its `v1/leader` key, so each of its writes compares that revision in the
//!   same transaction. Once the lease expired and another node created the key, every write
//!   of the old leader fails with `NotLeader`, even if it has not noticed yet (paused
//!   process, partition).
//! - **Stepping down**: on a refused write, an expired lease, or no successful keep-alive for
//!   two thirds of the TTL, the term's work is cancelled and the node campaigns again.
//! - Each keep-alive round first writes `v1/leader-state` (holder, term, time) through the
//!   fence: a leader-only effect an operator (or a test) can watch.
//!
//! The embedded backends (memory, redb) are served by one process, which always leads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meta::{Fence, Fenced, LeaseId, MetaStoreRef};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::gc::Gc;
use crate::service::Service;

/// The election key (under the cluster root). Its value is the leader's advertised address.
pub const LEADER_KEY: &[u8] = b"v1/leader";
/// Written by the leader through its fence on every keep-alive round ([`LeaderState`]).
pub const LEADER_STATE_KEY: &[u8] = b"v1/leader-state";

/// What this node knows about leadership.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leadership {
    /// Advertised address of the current leader, when known.
    pub leader: Option<String>,
    /// Revision of `v1/leader` while this node leads (its fence); `None` on followers.
    pub term: Option<i64>,
}

impl Leadership {
    pub fn is_leader(&self) -> bool {
        self.term.is_some()
    }
}

/// Value of [`LEADER_STATE_KEY`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderState {
    pub v: u32,
    pub leader: String,
    pub term: i64,
    pub at_ms: i64,
}

/// The leader-only work of one coordinator; started for each term with the fenced store.
pub(crate) struct LeaderWork {
    pub service: Arc<Service>,
    pub gc: Gc,
    pub scrubber: crate::scrub::Scrubber,
    pub gc_interval: Duration,
    pub gc_grace: Duration,
    pub multipart_expiry: Duration,
}

impl LeaderWork {
    fn start(&self, fenced: MetaStoreRef, term: &CancellationToken) -> Vec<JoinHandle<()>> {
        let catalog = Catalog::new(fenced);
        let gc = Gc {
            catalog: catalog.clone(),
            ..self.gc.clone()
        };
        vec![
            tokio::spawn(crate::server::housekeeping(
                catalog.clone(),
                self.multipart_expiry,
                term.clone(),
            )),
            tokio::spawn(crate::gc::run(
                gc,
                self.gc_interval,
                self.gc_grace,
                term.clone(),
            )),
            // Repair and scrub (scrub.rs): state, swaps and log through the fenced catalogue.
            tokio::spawn(crate::scrub::run(
                crate::scrub::Scrubber {
                    catalog: catalog.clone(),
                    ..self.scrubber.clone()
                },
                term.clone(),
            )),
            // Run status writes go through the fenced catalogue; the term token stops the
            // scheduler and its running passes when leadership is lost.
            tokio::spawn(crate::sync::run_scheduler(
                self.service.clone(),
                catalog.clone(),
                term.clone(),
            )),
        ]
    }
}

/// One node's election loop.
pub(crate) struct Election {
    pub meta: MetaStoreRef,
    /// Advertised address (the value of the leader key).
    pub me: String,
    pub ttl: Duration,
    pub state: watch::Sender<Leadership>,
}

impl Election {
    fn round(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(50))
    }

    /// Campaign, lead, step down, campaign again… until `shutdown`; then resign (revoke the
    /// lease, so a follower takes over at once).
    pub(crate) async fn run(self, work: LeaderWork, shutdown: CancellationToken) {
        if self.meta.backend() != "etcd" {
            // One process serves an embedded store: a key left by a previous run is stale.
            if let Err(e) = self.meta.delete(LEADER_KEY).await {
                tracing::warn!(error = %common::error::ErrorChain(&e), "cannot clear the leader key");
            }
        }
        let mut announced: Option<String> = None;
        while !shutdown.is_cancelled() {
            match self.campaign().await {
                Ok(Campaign::Won { lease, revision }) => {
                    self.lead(&work, lease, revision, &shutdown).await;
                    announced = None;
                    continue;
                }
                Ok(Campaign::Lost { leader }) => {
                    if announced != leader {
                        tracing::info!(leader = ?leader, "following the leader coordinator");
                        announced.clone_from(&leader);
                    }
                    self.state.send_replace(Leadership { leader, term: None });
                }
                Err(e) => {
                    tracing::warn!(error = %common::error::ErrorChain(&e), "leader election round failed");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.round()) => {}
            }
        }
    }

    async fn campaign(&self) -> meta::Result<Campaign> {
        let lease = self.meta.lease_grant(self.ttl).await?;
        match self
            .meta
            .create_leased(LEADER_KEY.to_vec(), self.me.clone().into_bytes(), lease)
            .await
        {
            Ok(Some(revision)) => Ok(Campaign::Won { lease, revision }),
            Ok(None) => {
                self.resign(lease).await;
                let leader = self
                    .meta
                    .get(LEADER_KEY)
                    .await?
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                Ok(Campaign::Lost { leader })
            }
            Err(e) => {
                self.resign(lease).await;
                Err(e)
            }
        }
    }

    async fn resign(&self, lease: LeaseId) {
        if let Err(e) = self.meta.lease_revoke(lease).await {
            tracing::debug!(error = %common::error::ErrorChain(&e), "lease revoke failed (it expires by itself)");
        }
    }

    async fn lead(
        &self,
        work: &LeaderWork,
        lease: LeaseId,
        revision: meta::Revision,
        shutdown: &CancellationToken,
    ) {
        let fenced: MetaStoreRef = Arc::new(Fenced::new(
            self.meta.clone(),
            Fence {
                key: LEADER_KEY.to_vec(),
                revision,
            },
        ));
        tracing::info!(term = revision.0, node = %self.me, "became the leader coordinator");
        self.state.send_replace(Leadership {
            leader: Some(self.me.clone()),
            term: Some(revision.0),
        });
        let term = shutdown.child_token();
        let tasks = work.start(fenced.clone(), &term);
        let mut last_renewal = Instant::now();
        let reason = loop {
            tokio::select! {
                () = shutdown.cancelled() => break "shutting down",
                () = tokio::time::sleep(self.round()) => {}
            }
            let state = LeaderState {
                v: 1,
                leader: self.me.clone(),
                term: revision.0,
                at_ms: common::time::now_ms(),
            };
            let bytes = serde_json::to_vec(&state).unwrap_or_default();
            match fenced.put(LEADER_STATE_KEY.to_vec(), bytes).await {
                Ok(_) => {}
                Err(e @ meta::Error::Fenced { .. }) => {
                    tracing::warn!(error = %e, term = revision.0, "deposed: fenced write refused");
                    break "deposed";
                }
                Err(e) => {
                    tracing::warn!(error = %common::error::ErrorChain(&e), "leader state write failed");
                }
            }
            match tokio::time::timeout(self.round(), self.meta.lease_keep_alive(lease)).await {
                Ok(Ok(true)) => last_renewal = Instant::now(),
                Ok(Ok(false)) => break "lease expired",
                Ok(Err(e)) => {
                    tracing::warn!(error = %common::error::ErrorChain(&e), "lease keep-alive failed");
                }
                Err(_) => tracing::warn!("lease keep-alive timed out"),
            }
            if last_renewal.elapsed() >= self.ttl * 2 / 3 {
                break "lease not renewed in time";
            }
        };
        term.cancel();
        self.state.send_replace(Leadership {
            leader: None,
            term: None,
        });
        if reason == "shutting down" {
            tracing::info!(term = revision.0, reason, "leadership ended");
        } else {
            tracing::warn!(term = revision.0, reason, "leadership ended");
        }
        for task in tasks {
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                tracing::warn!("a leader task did not stop within 10 s");
            }
        }
        self.resign(lease).await;
    }
}

enum Campaign {
    Won {
        lease: LeaseId,
        revision: meta::Revision,
    },
    Lost {
        leader: Option<String>,
    },
}
