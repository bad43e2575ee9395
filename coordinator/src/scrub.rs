//! Repair and scrub of rep/ec objects (leader only; docs/redundancy.md, "Repair and
//! scrub"). The leader decides and records; agents move the bytes.
//!
//! Each step of the job (run by the leader's per-term task, [`run`], every write through
//! the term's fenced catalogue):
//! 1. **Queue**: objects in `v1/repair/` (reported by gateways after a degraded read) are
//!    checked (deeply when the read saw corrupt pieces) and repaired first, then dequeued.
//! 2. **Start**: a pending `v1/job/scrub-request` (admin API / CLI, any coordinator) or a
//!    due schedule (`[scrub] interval`; every `deep_every`-th scheduled run deep) starts a
//!    run: counters reset, cursor at the start.
//! 3. **Walk**: one page of `objects_per_step` blocks keys after the persisted cursor.
//!    Blocks are grouped by space and checked with one `StatShards` (`VerifyShards` when
//!    deep) call per space; the cursor and counters are saved after the page, so a new
//!    leader resumes there.
//!
//! Per object: a block is **bad** when its agent says it is missing, corrupt (deep) or of
//! the wrong size, or when its agent has been down for at least `repair_after_down`; a
//! block on an agent down for less (or an agent that did not answer) is **unavailable**
//! and not rebuilt. Repair picks live spaces holding no block of the object
//! (`placement::choose_distinct`), sends `RebuildBlocks` to the agent of the first target
//! (sources: the good blocks with GET tickets; targets: PUT tickets), checks the object
//! hash the agent read, then swaps placements and references (`Catalog::swap_blocks`,
//! compared on the blocks key's revision) and logs the attempt in `v1/repair-log/`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use client::AgentPool;
use common::{ObjectId, SpaceId, UploadId};
use proto::agent::{RebuildBlocksRequest, RebuildSource, RebuildTarget, StatShardsRequest};
use proto::coordinator as pb;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::catalog::blocks::{BlockRow, BlocksRow};
use crate::catalog::repair::{RepairLogRow, ScrubRequest, ScrubState};
use crate::catalog::rows::ObjectRow;
use crate::catalog::{Catalog, Versioned};
use crate::config::ScrubConfig;
use crate::error::{Error, Result};
use crate::registry::{LiveSpace, Liveness, Registry};
use crate::tickets::TicketSigner;

/// How often an idle leader looks for a request or queued repairs (a local request or
/// report wakes it at once).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Lifetime of the tickets a step signs.
pub(crate) const TICKET_TTL_MS: i64 = 60 * 60 * 1000;
/// Hashes per StatShards / VerifyShards call (the agent accepts up to 1000).
const CHECK_BATCH: usize = 500;

/// The job's dependencies; one per leader term (its catalogue is fenced).
#[derive(Clone)]
pub struct Scrubber {
    pub(crate) catalog: Catalog,
    pub(crate) registry: Arc<Registry>,
    pub(crate) signer: TicketSigner,
    pub(crate) agents: AgentPool,
    pub(crate) config: ScrubConfig,
    pub(crate) wakeup: Arc<Notify>,
    pub(crate) turn: Arc<AtomicU64>,
    /// The cluster's `default_redundancy` (re-encode of objects in packages without a
    /// policy of their own).
    pub(crate) default_redundancy: redundancy::Policy,
    /// A repair-log entry was written since the log was last trimmed.
    pub(crate) log_written: Arc<AtomicBool>,
    /// The re-encode job whose walk waits to start: package, job start time, when this
    /// leader first saw it (reencode.rs, [`crate::reencode::REENCODE_SETTLE`]).
    pub(crate) reencode_seen:
        Arc<std::sync::Mutex<Option<(common::PackageId, i64, std::time::Instant)>>>,
}

#[cfg(test)]
impl Scrubber {
    /// A scrubber over `catalog` for unit tests: no agent heard from, cluster default
    /// `none`.
    pub(crate) fn for_test(catalog: Catalog, config: ScrubConfig) -> Scrubber {
        Scrubber {
            catalog,
            registry: Arc::new(Registry::new(Duration::from_secs(10))),
            signer: TicketSigner::new(common::secret::Secret::new("k")),
            agents: AgentPool::default(),
            config,
            wakeup: Arc::default(),
            turn: Arc::default(),
            default_redundancy: redundancy::Policy::None,
            log_written: Arc::default(),
            reencode_seen: Arc::default(),
        }
    }
}

/// One block a `RebuildBlocks` call writes: its index, the live space it goes to and the
/// size it must have.
pub(crate) struct RebuildInto<'a> {
    pub index: u32,
    pub at: &'a LiveSpace,
    pub size: u64,
}

impl Scrubber {
    /// Append `entry` to the repair log (a failure is logged, not returned); the log is
    /// trimmed once per round of [`run`] ([`Scrubber::trim_log`]).
    pub(crate) async fn log(&self, entry: &RepairLogRow) {
        match self.catalog.log_repair(entry).await {
            Ok(()) => self.log_written.store(true, Ordering::Relaxed),
            Err(e) => {
                tracing::warn!(error = %common::error::ErrorChain(&e), "cannot write the repair log")
            }
        }
    }

    /// Trim the repair log if an entry was written since the last trim.
    async fn trim_log(&self) {
        if self.log_written.swap(false, Ordering::Relaxed)
            && let Err(e) = self.catalog.trim_repair_log().await
        {
            tracing::warn!(error = %common::error::ErrorChain(&e), "cannot trim the repair log");
        }
    }

    /// The source of block `b` for a rebuild: its space's agent with a GET ticket.
    pub(crate) fn rebuild_source(&self, b: &BlockRow, at: &SpaceAt, expires: i64) -> RebuildSource {
        RebuildSource {
            index: b.index,
            agent_address: at.address.clone(),
            ticket: Some(
                self.signer
                    .get((b.space_id, at.revision), &b.sha256, expires),
            ),
        }
    }

    /// One `RebuildBlocks` on the agent of the first target (repair and re-encode): it reads
    /// `object` (stored under `policy`) from `sources` and writes the `targets` blocks, under
    /// `target_policy` when given (re-encode), else `policy` (repair). The answer must carry
    /// the object's SHA-256 and every target block at its size; the new blocks come back in
    /// target order.
    pub(crate) async fn rebuild(
        &self,
        object: &ObjectRow,
        policy: redundancy::Policy,
        target_policy: Option<redundancy::Policy>,
        sources: Vec<RebuildSource>,
        targets: &[RebuildInto<'_>],
        expires: i64,
    ) -> Result<Vec<BlockRow>> {
        let Some(first) = targets.first() else {
            return Err(Error::RebuildMismatch {
                reason: "no target space".into(),
            });
        };
        let req = RebuildBlocksRequest {
            policy_json: serde_json::to_string(&policy).unwrap_or_default(),
            object_size: object.size,
            sources,
            targets: targets
                .iter()
                .map(|t| RebuildTarget {
                    index: t.index,
                    space_id: t.at.space.0,
                    agent_address: t.at.address.clone(),
                    ticket: Some(self.signer.put(
                        (t.at.space, t.at.revision),
                        UploadId(0),
                        t.size,
                        target_policy.unwrap_or(policy).block_hash(),
                        expires,
                    )),
                })
                .collect(),
            target_policy_json: target_policy
                .map(|p| serde_json::to_string(&p).unwrap_or_default())
                .unwrap_or_default(),
        };
        let address = &first.at.address;
        let at = |source: client::Error| Error::AgentAt {
            address: address.clone(),
            source,
        };
        let resp = self
            .agents
            .get(address)
            .map_err(at)?
            .rebuild_blocks(req)
            .await
            .map_err(|s| at(s.into()))?
            .into_inner();
        if resp.object_sha256 != object.sha256 {
            return Err(Error::RebuildMismatch {
                reason: format!(
                    "the sources read as an object with SHA-256 {}, the object has {}: a source block is corrupt",
                    resp.object_sha256, object.sha256
                ),
            });
        }
        let mut out = Vec::with_capacity(targets.len());
        for t in targets {
            let Some(r) = resp.blocks.iter().find(|r| r.index == t.index) else {
                return Err(Error::RebuildMismatch {
                    reason: format!("the agent did not write block {}", t.index),
                });
            };
            if r.size != t.size {
                return Err(Error::RebuildMismatch {
                    reason: format!(
                        "block {} was written with {} bytes, it has {}",
                        t.index, r.size, t.size
                    ),
                });
            }
            out.push(BlockRow {
                index: t.index,
                space_id: t.at.space,
                sha256: r.sha256.clone(),
                size: r.size,
            });
        }
        Ok(out)
    }
}

/// What the check of one block found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BlockState {
    Good,
    Missing,
    Corrupt,
    /// Present and intact as far as checked, this size (compared with the block's below).
    Present(u64),
    WrongSize,
    /// Agent down for this long (`None`: did not answer / state unknown).
    Unavailable(Option<Duration>),
}

/// Outcome of one object.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    checked: u64,
    damaged: u64,
    repaired: u64,
    failed: u64,
    unavailable: u64,
}

impl Tally {
    /// Add to a run's counters (the persisted form of a tally).
    fn add_to(self, s: &mut ScrubState) {
        let mut sum = Tally {
            checked: s.checked,
            damaged: s.damaged,
            repaired: s.repaired,
            failed: s.failed,
            unavailable: s.unavailable,
        };
        sum.add(self);
        (s.checked, s.damaged, s.repaired, s.failed, s.unavailable) = (
            sum.checked,
            sum.damaged,
            sum.repaired,
            sum.failed,
            sum.unavailable,
        );
    }

    fn add(&mut self, o: Tally) {
        self.checked += o.checked;
        self.damaged += o.damaged;
        self.repaired += o.repaired;
        self.failed += o.failed;
        self.unavailable += o.unavailable;
    }
}

/// Where a space is served now.
pub(crate) struct SpaceAt {
    pub(crate) revision: u64,
    pub(crate) address: String,
    /// `Some` when its agent is down (for how long, if known).
    pub(crate) down: Option<Option<Duration>>,
}

impl Scrubber {
    /// One step (see the module doc); `true` when more work is waiting.
    pub async fn step(&self) -> Result<bool> {
        let now = common::time::now_ms();
        let queued = self
            .catalog
            .repair_queue(self.config.objects_per_step)
            .await?;
        let (mut state, mut changed) = match self.catalog.scrub_state().await? {
            Some(s) => (s.row, false),
            // First step ever: the schedule counts from now.
            None => (
                ScrubState {
                    v: 1,
                    last_scheduled_ms: now,
                    ..ScrubState::default()
                },
                true,
            ),
        };
        if !queued.is_empty() {
            for deep in [false, true] {
                let mut page = Vec::new();
                for (id, _) in queued.iter().filter(|(_, d)| *d == deep) {
                    if let Some(b) = self.catalog.get_blocks(*id).await? {
                        page.push((*id, b));
                    }
                }
                if page.is_empty() {
                    continue;
                }
                let (_, err) = self.check_page(&page, deep).await;
                if let Some(e) = err {
                    state.last_error = e;
                    changed = true;
                }
            }
            if changed {
                self.catalog.put_scrub_state(&state).await?;
            }
            for (id, _) in queued {
                self.catalog.dequeue_repair(id).await?;
            }
            return Ok(true);
        }
        if let Some(req) = self.catalog.take_scrub_request().await? {
            start_run(&mut state, req.deep, req.package_id, now);
            tracing::info!(
                deep = req.deep,
                package_id = req.package_id,
                "scrub run started on demand"
            );
            changed = true;
        } else if !state.running
            && !self.config.interval.is_zero()
            && now.saturating_sub(state.last_scheduled_ms)
                >= crate::service::ms(self.config.interval)
        {
            let deep = self.config.deep_every > 0
                && (state.runs + 1) % u64::from(self.config.deep_every) == 0;
            start_run(&mut state, deep, 0, now);
            state.last_scheduled_ms = now;
            tracing::info!(deep, "scheduled scrub run started");
            changed = true;
        }
        if !state.running {
            if changed {
                self.catalog.put_scrub_state(&state).await?;
            }
            return Ok(false);
        }
        let limit = self.config.objects_per_step;
        let after = (state.cursor > 0).then_some(ObjectId(state.cursor));
        let listed = self.catalog.list_blocks(after, limit).await?;
        let (listed_len, last) = (listed.len(), listed.last().map(|(id, _)| *id));
        let mut page = Vec::with_capacity(listed_len);
        for (id, blocks) in listed {
            if state.package_id != 0 {
                match self.catalog.get_object(id).await? {
                    Some(o) if o.row.package_id.0 == state.package_id => {}
                    _ => continue,
                }
            }
            page.push((id, blocks));
        }
        let (tally, err) = self.check_page(&page, state.deep).await;
        tally.add_to(&mut state);
        if let Some(e) = err {
            state.last_error = e;
        }
        if let Some(last) = last {
            state.cursor = last.0;
        }
        if listed_len < limit {
            state.running = false;
            state.last_finished_ms = common::time::now_ms();
            state.runs += 1;
            tracing::info!(
                checked = state.checked,
                damaged = state.damaged,
                repaired = state.repaired,
                failed = state.failed,
                unavailable = state.unavailable,
                "scrub run finished"
            );
        }
        self.catalog.put_scrub_state(&state).await?;
        Ok(state.running)
    }

    /// Check (and repair) the objects of one page; the tally and the last error.
    async fn check_page(
        &self,
        page: &[(ObjectId, Versioned<BlocksRow>)],
        deep: bool,
    ) -> (Tally, Option<String>) {
        let mut last_error = None;
        // Space → the distinct shards to check there.
        let mut by_space: BTreeMap<SpaceId, BTreeSet<String>> = BTreeMap::new();
        for (_, b) in page {
            for block in &b.row.blocks {
                by_space
                    .entry(block.space_id)
                    .or_default()
                    .insert(block.sha256.clone());
            }
        }
        // (space, sha) → present size / missing / corrupt; absent = unavailable.
        let mut found: BTreeMap<(SpaceId, String), BlockState> = BTreeMap::new();
        let mut spaces: BTreeMap<SpaceId, Option<SpaceAt>> = BTreeMap::new();
        for (space, hashes) in by_space {
            let at = match self.space_at(space).await {
                Ok(at) => at,
                Err(e) => {
                    last_error = Some(format!("user space {space}: {e}"));
                    spaces.insert(space, None);
                    continue;
                }
            };
            let Some(at) = at else {
                // The space is gone: its blocks are lost.
                for h in hashes {
                    found.insert((space, h), BlockState::Missing);
                }
                spaces.insert(space, None);
                continue;
            };
            if let Some(down) = at.down {
                for h in hashes {
                    found.insert((space, h), BlockState::Unavailable(down));
                }
                spaces.insert(space, Some(at));
                continue;
            }
            let hashes: Vec<String> = hashes.into_iter().collect();
            for batch in hashes.chunks(CHECK_BATCH) {
                match self.check_shards(space, &at, batch, deep).await {
                    Ok(checks) => {
                        for c in checks {
                            let state = if !c.error.is_empty() {
                                BlockState::Unavailable(None)
                            } else if !c.present {
                                BlockState::Missing
                            } else if c.corrupt {
                                BlockState::Corrupt
                            } else {
                                // Size compared per block below.
                                BlockState::Present(c.size)
                            };
                            found.insert((space, c.sha256), state);
                        }
                    }
                    Err(e) => {
                        last_error = Some(format!(
                            "checking user space {space}: {}",
                            common::error::ErrorChain(&e)
                        ));
                    }
                }
            }
            spaces.insert(space, Some(at));
        }
        let mut tally = Tally::default();
        for (id, blocks) in page {
            let states: Vec<BlockState> = blocks
                .row
                .blocks
                .iter()
                .map(|b| match found.get(&(b.space_id, b.sha256.clone())) {
                    Some(BlockState::Present(size)) if *size == b.size => BlockState::Good,
                    Some(BlockState::Present(_)) => BlockState::WrongSize,
                    Some(s) => s.clone(),
                    None => BlockState::Unavailable(None),
                })
                .collect();
            let outcome = self.handle_object(*id, blocks, &states, &spaces).await;
            if let Err(e) = &outcome.1 {
                last_error = Some(format!("object {id}: {e}"));
            }
            tally.add(outcome.0);
        }
        (tally, last_error)
    }

    /// Decide about one object and repair it if needed.
    async fn handle_object(
        &self,
        id: ObjectId,
        blocks: &Versioned<BlocksRow>,
        states: &[BlockState],
        spaces: &BTreeMap<SpaceId, Option<SpaceAt>>,
    ) -> (Tally, Result<(), String>) {
        let mut tally = Tally {
            checked: 1,
            ..Tally::default()
        };
        let after = self.config.repair_after_down;
        let mut bad = Vec::new();
        let mut reasons = Vec::new();
        let mut unavailable = false;
        for (b, s) in blocks.row.blocks.iter().zip(states) {
            let reason = match s {
                // `Present` is resolved to Good or WrongSize per block before this.
                BlockState::Good | BlockState::Present(_) => continue,
                BlockState::Missing => "missing",
                BlockState::Corrupt => "corrupt",
                BlockState::WrongSize => "wrong size",
                BlockState::Unavailable(Some(d)) if *d >= after => "down",
                BlockState::Unavailable(_) => {
                    unavailable = true;
                    continue;
                }
            };
            bad.push(b.clone());
            reasons.push(reason);
        }
        if bad.is_empty() {
            if unavailable {
                tally.unavailable = 1;
            }
            return (tally, Ok(()));
        }
        tally.damaged = 1;
        let good: Vec<&BlockRow> = blocks
            .row
            .blocks
            .iter()
            .zip(states)
            .filter(|(_, s)| **s == BlockState::Good)
            .map(|(b, _)| b)
            .collect();
        let mut entry = RepairLogRow {
            v: 1,
            object_id: id.0,
            blocks: bad.iter().map(|b| b.index).collect(),
            from_spaces: bad.iter().map(|b| b.space_id.0).collect(),
            reason: reasons.join(","),
            time_ms: common::time::now_ms(),
            ..RepairLogRow::default()
        };
        let result = self
            .repair(id, blocks, &bad, &good, spaces, &mut entry)
            .await;
        match &result {
            Ok(true) => {
                tally.repaired = 1;
                entry.result = "repaired".into();
                tracing::info!(object_id = %id, blocks = ?entry.blocks, from = ?entry.from_spaces, to = ?entry.to_spaces, reason = %entry.reason, "blocks repaired");
            }
            Ok(false) => entry.result = "superseded".into(),
            Err(e) => {
                tally.failed = 1;
                entry.result = format!("failed: {e}");
                tracing::warn!(object_id = %id, error = %e, "repair failed");
            }
        }
        entry.time_ms = common::time::now_ms();
        let result_kind = match &result {
            Ok(true) => "repaired",
            Ok(false) => "superseded",
            Err(_) => "failed",
        };
        common::metrics::metrics()
            .repairs
            .with_label_values(&[result_kind])
            .inc();
        self.log(&entry).await;
        (tally, result.map(|_| ()).map_err(|e| e.to_string()))
    }

    /// Rebuild `bad` blocks of `id` from `good` ones; `Ok(false)` when the object changed
    /// meanwhile (nothing swapped).
    async fn repair(
        &self,
        id: ObjectId,
        blocks: &Versioned<BlocksRow>,
        bad: &[BlockRow],
        good: &[&BlockRow],
        spaces: &BTreeMap<SpaceId, Option<SpaceAt>>,
        entry: &mut RepairLogRow,
    ) -> Result<bool, String> {
        let policy = blocks.row.policy;
        if good.len() < policy.min_blocks() {
            return Err(format!(
                "only {} good blocks, {} needed",
                good.len(),
                policy.min_blocks()
            ));
        }
        let Some(object) = self
            .catalog
            .get_object(id)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(false);
        };
        let occupied: BTreeSet<SpaceId> = blocks.row.blocks.iter().map(|b| b.space_id).collect();
        let live: Vec<_> = self
            .registry
            .live_spaces()
            .into_iter()
            .filter(|l| !occupied.contains(&l.space))
            .collect();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let targets = crate::placement::choose_live(&live, None, turn, bad.len()).map_err(
            |missing| {
                format!(
                    "no healthy user space to rebuild on: {} needed, {} live spaces hold no block of the object ({missing} missing)",
                    bad.len(),
                    live.len()
                )
            },
        )?;
        entry.to_spaces = targets.iter().map(|t| t.space.0).collect();
        let expires = common::time::now_ms() + TICKET_TTL_MS;
        let sources = good
            .iter()
            .filter_map(|b| match spaces.get(&b.space_id) {
                Some(Some(at)) => Some(self.rebuild_source(b, at, expires)),
                _ => None,
            })
            .collect();
        let into: Vec<_> = bad
            .iter()
            .zip(&targets)
            .map(|(b, t)| RebuildInto {
                index: b.index,
                at: t,
                size: b.size,
            })
            .collect();
        let rebuilt = self
            .rebuild(&object.row, policy, None, sources, &into, expires)
            .await
            .map_err(|e| common::error::ErrorChain(&e).to_string())?;
        entry.bytes += rebuilt.iter().map(|b| b.size).sum::<u64>();
        self.catalog
            .swap_blocks(id, blocks.rev, &blocks.row, &rebuilt, Some(&object))
            .await
            .map_err(|e| e.to_string())
    }

    /// Where `space` is served; `None` when the space no longer exists.
    pub(crate) async fn space_at(&self, space: SpaceId) -> Result<Option<SpaceAt>> {
        let Some(row) = self.catalog.get_space(space).await? else {
            return Ok(None);
        };
        let Some(agent) = self.catalog.get_agent(row.agent_id).await? else {
            return Ok(None);
        };
        let down = match self.registry.liveness(agent.agent_id) {
            Liveness::Alive => None,
            // Not heard from since this coordinator started: do not rebuild yet.
            Liveness::Unknown => Some(None),
            Liveness::Down => Some(self.registry.down_for(agent.agent_id)),
        };
        Ok(Some(SpaceAt {
            revision: row.revision,
            address: agent.address,
            down,
        }))
    }

    async fn check_shards(
        &self,
        space: SpaceId,
        at: &SpaceAt,
        hashes: &[String],
        deep: bool,
    ) -> Result<Vec<proto::agent::ShardCheck>> {
        let mut client = self
            .agents
            .get(&at.address)
            .map_err(|source| Error::Agent { source })?;
        let req = StatShardsRequest {
            ticket: Some(
                self.signer
                    .list((space, at.revision), common::time::now_ms() + TICKET_TTL_MS),
            ),
            sha256: hashes.to_vec(),
        };
        let resp = if deep {
            client.verify_shards(req).await
        } else {
            client.stat_shards(req).await
        };
        Ok(resp
            .map_err(|s| Error::Agent { source: s.into() })?
            .into_inner()
            .shards)
    }
}

fn start_run(state: &mut ScrubState, deep: bool, package_id: u64, now: i64) {
    *state = ScrubState {
        v: 1,
        running: true,
        deep,
        package_id,
        started_ms: now,
        last_finished_ms: state.last_finished_ms,
        last_scheduled_ms: state.last_scheduled_ms,
        runs: state.runs,
        ..ScrubState::default()
    };
}

/// The leader's loop: steps back to back while there is work (with `step_pause` between
/// them), otherwise waits for a wake-up or [`IDLE_POLL`]. Ends with the term.
pub async fn run(scrubber: Scrubber, term: CancellationToken) {
    let mut busy = false;
    loop {
        let wait = if busy {
            scrubber.config.step_pause
        } else {
            IDLE_POLL
        };
        tokio::select! {
            () = term.cancelled() => return,
            () = scrubber.wakeup.notified(), if !busy => {}
            () = tokio::time::sleep(wait) => {}
        }
        busy = false;
        // Scrub and repair first, then re-encoding (reencode.rs), each one step.
        for (what, result) in [
            ("scrub", scrubber.step().await),
            ("re-encode", scrubber.reencode_step().await),
        ] {
            match result {
                Ok(more) => busy |= more,
                Err(e) => {
                    if matches!(&e, Error::Meta { source } if matches!(source, meta::Error::Fenced { .. }))
                    {
                        tracing::warn!(step = what, "step refused: no longer the leader");
                        return;
                    }
                    tracing::warn!(step = what, error = %common::error::ErrorChain(&e), "step failed");
                }
            }
        }
        scrubber.trim_log().await;
    }
}

/// The API form of the job's state.
pub(crate) async fn status(catalog: &Catalog, recent: u32) -> Result<pb::ScrubStatus> {
    let state = catalog
        .scrub_state()
        .await?
        .map(|s| s.row)
        .unwrap_or_default();
    let requested = catalog.scrub_request().await?.is_some();
    let queued = catalog.repair_queue(1000).await?.len() as u64;
    let n = match recent {
        0 => 20,
        n => n.min(1000) as usize,
    };
    let recent = catalog
        .recent_repairs(n)
        .await?
        .into_iter()
        .map(|r| pb::RepairLogEntry {
            object_id: r.object_id,
            blocks: r.blocks,
            from_spaces: r.from_spaces,
            to_spaces: r.to_spaces,
            bytes: r.bytes,
            result: r.result,
            time_ms: r.time_ms,
            reason: r.reason,
        })
        .collect();
    Ok(pb::ScrubStatus {
        running: state.running || requested,
        deep: state.deep,
        package_id: state.package_id,
        cursor: state.cursor,
        objects_checked: state.checked,
        damaged: state.damaged,
        repaired: state.repaired,
        failed: state.failed,
        unavailable: state.unavailable,
        last_error: state.last_error,
        started_ms: state.started_ms,
        last_finished_ms: state.last_finished_ms,
        runs: state.runs,
        requested,
        queued,
        recent,
        reencode: crate::reencode::status(catalog).await?,
        reencode_queued: catalog.reencode_queue(1000).await?.len() as u64,
    })
}

impl crate::service::Service {
    /// `StartScrub`: record the request for the leader and wake it if it is this node.
    pub(crate) async fn start_scrub(&self, r: pb::StartScrubRequest) -> Result<pb::ScrubStatus> {
        if r.package_id != 0 {
            self.catalog
                .get_package(common::PackageId(r.package_id))
                .await?;
        }
        self.catalog
            .request_scrub(&ScrubRequest {
                v: 1,
                package_id: r.package_id,
                deep: r.deep,
                at_ms: common::time::now_ms(),
            })
            .await?;
        self.scrub_wakeup.notify_one();
        tracing::info!(package_id = r.package_id, deep = r.deep, "scrub requested");
        status(&self.catalog, 0).await
    }

    /// `ReportDamage`: queue the object (rep/ec objects only; others are ignored).
    pub(crate) async fn report_damage(&self, r: pb::ReportDamageRequest) -> Result<()> {
        let id = ObjectId(crate::service::id_arg(r.object_id, "objectID")?);
        if self.catalog.get_blocks(id).await?.is_none() {
            return Ok(());
        }
        self.catalog.queue_repair(id, r.corrupt).await?;
        self.scrub_wakeup.notify_one();
        tracing::info!(object_id = %id, "damage reported: object queued for repair");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn scheduled_runs_start_after_the_interval_and_every_nth_is_deep() {
        let (catalog, _) = crate::catalog::testing::setup().await;
        let s = Scrubber::for_test(
            catalog.clone(),
            ScrubConfig {
                interval: Duration::from_secs(3600),
                deep_every: 2,
                ..ScrubConfig::default()
            },
        );
        // The first step only starts the clock.
        assert!(!s.step().await.unwrap());
        let state = catalog.scrub_state().await.unwrap().unwrap().row;
        assert_eq!((state.runs, state.running), (0, false));
        assert!(!s.step().await.unwrap());
        assert_eq!(catalog.scrub_state().await.unwrap().unwrap().row.runs, 0);
        let mut deep = Vec::new();
        for _ in 0..2 {
            // The interval passes: move the schedule back by one interval.
            let mut state = catalog.scrub_state().await.unwrap().unwrap().row;
            state.last_scheduled_ms -= 3_600_000;
            catalog.put_scrub_state(&state).await.unwrap();
            // Nothing to walk: the run starts and ends in one step.
            assert!(!s.step().await.unwrap());
            let state = catalog.scrub_state().await.unwrap().unwrap().row;
            deep.push(state.deep);
        }
        assert_eq!(deep, [false, true]);
        assert_eq!(catalog.scrub_state().await.unwrap().unwrap().row.runs, 2);
    }

    #[tokio::test]
    async fn on_demand_only_without_an_interval() {
        let (catalog, p) = crate::catalog::testing::setup().await;
        let s = Scrubber::for_test(
            catalog.clone(),
            ScrubConfig {
                interval: Duration::ZERO,
                ..ScrubConfig::default()
            },
        );
        for _ in 0..3 {
            assert!(!s.step().await.unwrap());
        }
        assert_eq!(catalog.scrub_state().await.unwrap().unwrap().row.runs, 0);
        catalog
            .request_scrub(&ScrubRequest {
                v: 1,
                package_id: p.0,
                deep: true,
                at_ms: 0,
            })
            .await
            .unwrap();
        assert!(status(&catalog, 0).await.unwrap().running, "requested");
        assert!(!s.step().await.unwrap());
        let st = status(&catalog, 0).await.unwrap();
        assert_eq!(
            (st.running, st.runs, st.deep, st.package_id),
            (false, 1, true, p.0)
        );
    }
}
