//! Re-encode on policy change (leader only; docs/redundancy.md, "Re-encode on policy
//! change"). `UpdatePackage` writes the package's policy and a job `v1/job/reencode/{package}`
//! in one transaction; the leader's scrub loop ([`crate::scrub::run`]) calls
//! [`Scrubber::reencode_step`] after each scrub step:
//!
//! 1. **Queue**: objects in `v1/job/reencode-object/` (stored `none` by a multipart
//!    completion or an import into a rep/ec package) are converted to their package's
//!    policy, then dequeued; one that fails stays queued for the next step, and with too
//!    few live user spaces for the policy the step waits (nothing is tried or dequeued).
//! 2. **Walk**: the first running job gets one page of `objects_per_step` objects after its
//!    path cursor; each object whose storage differs from the job's policy is re-encoded;
//!    then cursor and counters are written back, compared on the job key's revision (a
//!    newer `UpdatePackage` restarts the walk and wins; a new leader resumes at the cursor).
//!
//! **One object**: sources are its current blocks (a plain object is one block of policy
//! `none`: its shard), those on live agents with GET tickets; targets are
//! `block_count` distinct live spaces (`placement::choose_distinct`, block 0's current
//! space preferred) with PUT tickets. One `RebuildBlocks` with `target_policy_json` goes to
//! the agent of target 0: it reads the object with `read_range` (degraded reads included)
//! and encodes every target block with the new policy (bounded memory). The leader checks
//! the object SHA-256 the agent read against the row's, then [`Catalog::swap_encoding`]
//! replaces row + blocks key + shard references in one transaction compared on the row's
//! and blocks key's revisions: a concurrent overwrite, move or delete wins (`superseded`;
//! the new shards are left to shard GC, as are the old ones after a swap).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use common::{ObjectId, PackageId};
use proto::coordinator as pb;
use redundancy::Policy;

use crate::catalog::blocks::{BlockRow, BlocksRow, POLICY_CACHE_TTL, block_len};
use crate::catalog::reencode::ReencodeJob;
use crate::catalog::repair::RepairLogRow;
use crate::catalog::rows::{ObjectRow, UploadRow};
use crate::catalog::{Catalog, Versioned};
use crate::error::Result;
use crate::scrub::{RebuildInto, Scrubber, TICKET_TTL_MS};

/// Most jobs the status lists.
const STATUS_JOBS: usize = 100;

/// How long after the leader first sees a new job its walk starts. Every coordinator
/// caches package policies for up to [`POLICY_CACHE_TTL`]; a commit on another
/// coordinator whose cache still held the old policy converges nothing (reencode.rs
/// `converge_policy`), but it happened before the settle ended, so the walk (which starts
/// after it) sees and converts its object. Commits after that read the new policy and
/// queue themselves.
pub(crate) const REENCODE_SETTLE: std::time::Duration = POLICY_CACHE_TTL.saturating_mul(2);

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Already stored under the policy (or a multipart upload still in progress).
    Unchanged,
    Reencoded,
    /// Overwritten, moved or deleted meanwhile: the change won.
    Superseded,
}

/// How a pass over the re-encode queue ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueStep {
    /// Every object looked at left the queue.
    Done,
    /// Too few live user spaces: nothing tried, nothing dequeued.
    Waiting,
    /// Some objects failed and stay queued.
    Failed,
}

impl Scrubber {
    /// One step of the re-encode work; `true` when more is waiting.
    pub async fn reencode_step(&self) -> Result<bool> {
        let queued = self
            .catalog
            .reencode_queue(self.config.objects_per_step)
            .await?;
        if !queued.is_empty() {
            match self.reencode_queued(queued).await? {
                QueueStep::Done => return Ok(true),
                QueueStep::Waiting => return Ok(false),
                // Failed objects stay queued for the next step; the walk goes on meanwhile.
                QueueStep::Failed => {}
            }
        }
        let Some((package, job)) = self.running_job().await? else {
            return Ok(false);
        };
        if let Err(e) = self.catalog.get_package(package).await {
            if common::error::CodedError::code(&e) == common::ErrorCode::NotFound {
                tracing::info!(package_id = %package, "package deleted: re-encode job dropped");
                self.catalog.delete_reencode_job(package, job.rev).await?;
                return Ok(true);
            }
            return Err(e);
        }
        if !self.settled(package, &job.row) {
            return Ok(false);
        }
        let mut state = job.row.clone();
        if !state.counted {
            state.total = self.catalog.count_objects(package).await?;
            state.counted = true;
        }
        // Too few live spaces for the new policy (e.g. a new leader that has not heard
        // from the agents yet): wait rather than fail every object.
        let live = self.registry.live_spaces().len();
        let needed = state.policy.block_count();
        if live < needed {
            let waiting =
                format!("waiting for {needed} live user spaces with a shard store ({live} live)");
            if state.last_error != waiting {
                state.last_error = waiting;
                self.catalog
                    .put_reencode_job(package, job.rev, &state)
                    .await?;
            }
            return Ok(false);
        }
        if state.last_error.starts_with("waiting for ") {
            state.last_error.clear();
        }
        let limit = self.config.objects_per_step.max(1);
        let page = self
            .catalog
            .objects_after(package, &state.cursor, limit)
            .await?;
        for o in &page {
            state.checked += 1;
            match self.reencode_object(o, state.policy).await {
                Ok(Outcome::Unchanged) => {}
                Ok(Outcome::Reencoded) => state.reencoded += 1,
                Ok(Outcome::Superseded) => state.superseded += 1,
                Err(e) => {
                    state.failed += 1;
                    state.last_error = format!("{}: {e}", o.row.path);
                }
            }
            state.cursor = o.row.path.clone();
        }
        if page.len() < limit {
            state.running = false;
            state.finished_ms = common::time::now_ms();
            tracing::info!(
                package_id = %package,
                policy = state.policy.kind(),
                checked = state.checked,
                reencoded = state.reencoded,
                superseded = state.superseded,
                failed = state.failed,
                "re-encode job finished"
            );
        }
        if !self
            .catalog
            .put_reencode_job(package, job.rev, &state)
            .await?
        {
            tracing::info!(package_id = %package, "re-encode job restarted by a newer policy change");
        }
        Ok(true)
    }

    /// Whether the walk of `job` (of `package`) may go on: it has begun, or this leader
    /// first saw the job at least [`REENCODE_SETTLE`] ago (see there).
    fn settled(&self, package: PackageId, job: &ReencodeJob) -> bool {
        if job.checked > 0 || !job.cursor.is_empty() {
            return true;
        }
        let now = std::time::Instant::now();
        let mut seen = self
            .reencode_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *seen {
            Some((p, started, at)) if p == package && started == job.started_ms => {
                now.duration_since(at) >= REENCODE_SETTLE
            }
            _ => {
                *seen = Some((package, job.started_ms, now));
                tracing::debug!(package_id = %package, "re-encode walk starts once every coordinator's policy cache has expired");
                false
            }
        }
    }

    /// Convert the queued objects (see the module doc). An object leaves the queue once it
    /// is converted, already converted, superseded or gone; one that failed stays queued.
    /// With fewer live spaces than an object's policy needs (e.g. a new leader that has not
    /// heard from the agents yet) the step waits instead of failing.
    async fn reencode_queued(&self, queued: Vec<ObjectId>) -> Result<QueueStep> {
        let live = self.registry.live_spaces().len();
        let mut failed = false;
        for id in queued {
            let Some(o) = self.catalog.get_object(id).await? else {
                self.catalog.dequeue_reencode(id).await?;
                continue;
            };
            let policy = self
                .catalog
                .effective_policy(o.row.package_id, self.default_redundancy)
                .await?;
            let needed = policy.block_count();
            if live < needed {
                tracing::debug!(object_id = %id, needed, live, "queued re-encode waits for live user spaces");
                return Ok(QueueStep::Waiting);
            }
            match self.reencode_object(&o, policy).await {
                Ok(_) => self.catalog.dequeue_reencode(id).await?,
                Err(e) => {
                    failed = true;
                    tracing::warn!(object_id = %id, error = %e, "re-encode of a queued object failed; it stays queued");
                }
            }
        }
        Ok(if failed {
            QueueStep::Failed
        } else {
            QueueStep::Done
        })
    }

    /// The first running job (pages through every job, finished ones included).
    async fn running_job(&self) -> Result<Option<(PackageId, Versioned<ReencodeJob>)>> {
        let mut after = None;
        loop {
            let page = self.catalog.reencode_jobs(after, STATUS_JOBS).await?;
            let full = page.len() == STATUS_JOBS;
            after = page.last().map(|(p, _)| *p);
            if let Some(found) = page.into_iter().find(|(_, j)| j.row.running) {
                return Ok(Some(found));
            }
            if !full {
                return Ok(None);
            }
        }
    }

    /// Convert one object to `target` if it is stored otherwise (see the module doc).
    async fn reencode_object(
        &self,
        o: &Versioned<ObjectRow>,
        target: Policy,
    ) -> Result<Outcome, String> {
        let row = &o.row;
        if row.is_multipart() {
            return Ok(Outcome::Unchanged);
        }
        let id = row.object_id;
        let (source_policy, old) = match row.block_policy() {
            Some(_) => {
                let Some(b) = self
                    .catalog
                    .get_blocks(id)
                    .await
                    .map_err(|e| e.to_string())?
                else {
                    return Ok(Outcome::Superseded);
                };
                (b.row.policy, Some(b))
            }
            None => (Policy::None, None),
        };
        if source_policy == target {
            return Ok(Outcome::Unchanged);
        }
        let old_blocks: Vec<BlockRow> = match &old {
            Some(b) => b.row.blocks.clone(),
            None => vec![BlockRow {
                index: 0,
                space_id: row.space_id,
                sha256: row.sha256.clone(),
                size: row.size,
            }],
        };
        let mut entry = RepairLogRow {
            v: 1,
            object_id: id.0,
            blocks: (0..target.block_count() as u32).collect(),
            from_spaces: old_blocks.iter().map(|b| b.space_id.0).collect(),
            reason: format!("reencode {}→{}", source_policy.kind(), target.kind()),
            time_ms: common::time::now_ms(),
            ..RepairLogRow::default()
        };
        let result = self
            .reencode_blocks(
                o,
                old.as_ref(),
                source_policy,
                &old_blocks,
                target,
                &mut entry,
            )
            .await;
        entry.result = match &result {
            Ok(Outcome::Reencoded) => "reencoded".into(),
            Ok(_) => "superseded".into(),
            Err(e) => format!("failed: {e}"),
        };
        match &result {
            Ok(Outcome::Reencoded) => {
                tracing::info!(object_id = %id, from = source_policy.kind(), to = target.kind(), spaces = ?entry.to_spaces, "object re-encoded")
            }
            Ok(_) => tracing::info!(object_id = %id, "re-encode superseded by a concurrent change"),
            Err(e) => tracing::warn!(object_id = %id, error = %e, "re-encode failed"),
        }
        // Only failures go to the repair log: the job's counters record the conversions,
        // and logging each of a large package's objects would push real repairs out of the
        // log's bounded window.
        if result.is_err() {
            entry.time_ms = common::time::now_ms();
            self.log(&entry).await;
        }
        result
    }

    async fn reencode_blocks(
        &self,
        o: &Versioned<ObjectRow>,
        old: Option<&Versioned<BlocksRow>>,
        source_policy: Policy,
        old_blocks: &[BlockRow],
        target: Policy,
        entry: &mut RepairLogRow,
    ) -> Result<Outcome, String> {
        let row = &o.row;
        let expires = common::time::now_ms() + TICKET_TTL_MS;
        // Sources: every block whose agent is alive; the reader copes with missing ones.
        let mut spaces = BTreeMap::new();
        let mut sources = Vec::new();
        for b in old_blocks {
            if let std::collections::btree_map::Entry::Vacant(slot) = spaces.entry(b.space_id) {
                slot.insert(self.space_at(b.space_id).await.map_err(|e| e.to_string())?);
            }
            let Some(Some(at)) = spaces.get(&b.space_id) else {
                continue;
            };
            if at.down.is_some() {
                continue;
            }
            sources.push(self.rebuild_source(b, at, expires));
        }
        if sources.len() < source_policy.min_blocks() {
            return Err(format!(
                "only {} of {} blocks are on live agents, {} needed",
                sources.len(),
                old_blocks.len(),
                source_policy.min_blocks()
            ));
        }
        // Targets: distinct live spaces, block 0's current space first.
        let live = self.registry.live_spaces();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let count = target.block_count();
        let targets = crate::placement::choose_live(&live, Some(row.space_id), turn, count)
            .map_err(|missing| {
                format!(
                    "a {} object needs {count} distinct live user spaces with a shard store, {} are live ({missing} missing)",
                    target.kind(),
                    live.len()
                )
            })?;
        entry.to_spaces = targets.iter().map(|t| t.space.0).collect();
        let size = block_len(&target, row.size);
        let into: Vec<_> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| RebuildInto {
                index: i as u32,
                at: t,
                size,
            })
            .collect();
        let new = self
            .rebuild(row, source_policy, Some(target), sources, &into, expires)
            .await
            .map_err(|e| common::error::ErrorChain(&e).to_string())?;
        entry.bytes += new.iter().map(|b| b.size).sum::<u64>();
        let swapped = self
            .catalog
            .swap_encoding(o, old, target, &new)
            .await
            .map_err(|e| e.to_string())?;
        Ok(if swapped {
            Outcome::Reencoded
        } else {
            Outcome::Superseded
        })
    }
}

/// Most jobs the status reads (running ones are listed first).
const STATUS_SCAN: usize = 10_000;

/// The API form of the re-encode jobs: running ones first, then finished ones, at most
/// [`STATUS_JOBS`], each group by package id.
pub(crate) async fn status(catalog: &Catalog) -> Result<Vec<pb::ReencodeStatus>> {
    let (mut running, mut finished) = (Vec::new(), Vec::new());
    let mut after = None;
    for _ in 0..STATUS_SCAN / STATUS_JOBS {
        let page = catalog.reencode_jobs(after, STATUS_JOBS).await?;
        let full = page.len() == STATUS_JOBS;
        after = page.last().map(|(p, _)| *p);
        for (package, j) in page {
            if j.row.running {
                running.push(job_pb(package, j.row));
            } else if finished.len() < STATUS_JOBS {
                finished.push(job_pb(package, j.row));
            }
        }
        if !full {
            break;
        }
    }
    running.extend(finished);
    running.truncate(STATUS_JOBS);
    Ok(running)
}

fn job_pb(package: PackageId, j: ReencodeJob) -> pb::ReencodeStatus {
    pb::ReencodeStatus {
        package_id: package.0,
        policy_json: serde_json::to_string(&j.policy).unwrap_or_default(),
        running: j.running,
        total: j.total,
        checked: j.checked,
        reencoded: j.reencoded,
        failed: j.failed,
        superseded: j.superseded,
        last_error: j.last_error,
        started_ms: j.started_ms,
        finished_ms: j.finished_ms,
        cursor: j.cursor,
    }
}

impl crate::service::Service {
    /// Queue an object just committed (every upload commit that did not choose its own
    /// redundancy, multipart completion, import) for conversion to its package's policy
    /// when it is stored otherwise (a policy set after the upload was reserved, or a
    /// completion or import stored `none` in a rep/ec package), and wake the leader if it
    /// is this node. Cheap when they agree: the effective policy is cached, nothing is
    /// written. The object is already committed: a failure is logged, not returned.
    pub(crate) async fn converge_policy(&self, o: &ObjectRow) {
        let queued = async {
            let policy = self.effective_policy(o.package_id).await?;
            if policy != o.block_policy().unwrap_or(Policy::None) {
                self.catalog.queue_reencode(o.object_id).await?;
                return Ok::<bool, crate::error::Error>(true);
            }
            Ok(false)
        };
        match queued.await {
            Ok(true) => {
                self.scrub_wakeup.notify_one();
                tracing::debug!(object_id = %o.object_id, "object queued for re-encoding to its package's policy");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(object_id = %o.object_id, error = %common::error::ErrorChain(&e), "cannot queue the object for re-encoding")
            }
        }
    }

    /// [`Self::converge_policy`] of the object committed for upload `up`, unless the upload
    /// chose its own redundancy (`UploadRow::policy_chosen`): that choice is kept.
    pub(crate) async fn converge_upload(&self, up: &UploadRow, o: &ObjectRow) {
        if !up.policy_chosen {
            self.converge_policy(o).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use common::{SpaceId, UserId};

    use super::*;
    use crate::config::ScrubConfig;

    fn scrubber(catalog: Catalog) -> Scrubber {
        Scrubber::for_test(catalog, ScrubConfig::default())
    }

    #[tokio::test]
    async fn queued_objects_wait_for_spaces_and_stay_queued_on_failure() {
        let c = Catalog::new(Arc::new(meta::MemoryStore::new()));
        let b = c.create_bucket(UserId(1), "b").await.unwrap();
        let p = c.create_package(b.bucket_id, "p").await.unwrap().package_id;
        c.set_package_policy(p, Policy::rep(2).unwrap(), false)
            .await
            .unwrap();
        let up = c.begin_upload(p, "x", SpaceId(1), i64::MAX).await.unwrap();
        let o = c.commit_upload(&up, 100, &"f".repeat(64)).await.unwrap();
        c.queue_reencode(o.object_id).await.unwrap();
        let s = scrubber(c.clone());

        // A new leader that has heard from no agent: the step waits, the object stays.
        assert!(!s.reencode_step().await.unwrap());
        assert_eq!(c.reencode_queue(10).await.unwrap(), vec![o.object_id]);

        // Two live spaces, but the object's own space has no agent: the re-encode fails
        // and the object stays queued for the next step.
        s.registry.record(
            "fp".into(),
            common::AgentId(1),
            "127.0.0.1:1".into(),
            vec![(SpaceId(2), 1), (SpaceId(3), 1)],
            proto::coordinator::RegisterAgentResponse::default(),
        );
        assert!(!s.reencode_step().await.unwrap());
        assert_eq!(c.reencode_queue(10).await.unwrap(), vec![o.object_id]);

        // Gone objects leave the queue.
        c.delete_objects(&[o.object_id]).await.unwrap();
        assert!(s.reencode_step().await.unwrap());
        assert!(c.reencode_queue(10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_running_job_after_many_finished_ones_is_found_and_waits_for_spaces() {
        let c = Catalog::new(Arc::new(meta::MemoryStore::new()));
        let b = c.create_bucket(UserId(1), "b").await.unwrap();
        let ec = Policy::ec(2, 3, 64).unwrap();
        let mut last = None;
        for i in 0..(STATUS_JOBS + 5) {
            let p = c
                .create_package(b.bucket_id, &format!("p{i}"))
                .await
                .unwrap();
            c.set_package_policy(p.package_id, ec, true).await.unwrap();
            last = Some(p.package_id);
        }
        let last = last.unwrap();
        // Every job but the last has finished.
        for (p, j) in c.reencode_jobs(None, 1000).await.unwrap() {
            if p != last {
                let mut done = j.row.clone();
                done.running = false;
                assert!(c.put_reencode_job(p, j.rev, &done).await.unwrap());
            }
        }
        let s = scrubber(c.clone());
        let (found, job) = s.running_job().await.unwrap().unwrap();
        assert_eq!(found, last);
        // The walk waits for every coordinator's policy cache to expire first: nothing is
        // looked at, not even the live spaces.
        assert!(!s.reencode_step().await.unwrap());
        let st = status(&c).await.unwrap();
        assert_eq!(st[0].package_id, last.0);
        assert_eq!(
            (st[0].checked, st[0].last_error.as_str()),
            (0, ""),
            "walked before the policy caches expired"
        );
        // As if REENCODE_SETTLE had passed since the leader first saw the job.
        {
            let mut seen = s.reencode_seen.lock().unwrap();
            let (p, started, at) = seen.expect("the job was seen");
            assert_eq!((p, started), (last, job.row.started_ms));
            *seen = Some((p, started, at - REENCODE_SETTLE));
        }
        // No live space known (no agent heard from): the job waits, nothing is counted.
        assert!(!s.reencode_step().await.unwrap());
        let st = status(&c).await.unwrap();
        assert_eq!(st.len(), STATUS_JOBS);
        assert_eq!(st[0].package_id, last.0, "running jobs first");
        assert!(st[0].running);
        assert_eq!((st[0].checked, st[0].failed), (0, 0));
        assert!(
            st[0].last_error.starts_with("waiting for 3 live"),
            "{}",
            st[0].last_error
        );
    }
}
