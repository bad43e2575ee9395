//! Sync tasks: persisted specs (`v1/sync-task/{id}`) and status (`v1/sync-status/{id}`),
//! validation against the spaces that exist, and the scheduler (leader only; a single
//! coordinator is always the leader) that fires triggers and runs each pass on an agent
//! through `RunSync`, recording progress. Runs of one task never overlap; missed ticks are
//! not replayed; a run interrupted by a coordinator restart is marked failed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::sync::{RunCounters, RunRecord, TaskSpec, TaskState, Trigger};
use common::{AgentId, SpaceId};
use meta::{Compare, Op, Txn};
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, decode, encode};
use crate::error::{Error, Result, bad, not_found};
use crate::service::Service;

/// Runs kept in a task's status.
const KEEP_RUNS: usize = 10;
/// Errors kept in a task's status.
const KEEP_ERRORS: usize = 20;
/// How often the scheduler looks for due tasks.
const TICK: Duration = Duration::from_millis(250);
/// Created tasks waiting for the scheduler's direct start (`Runs::created`).
const MAX_CREATED_QUEUE: usize = 64;
/// How often a running pass's counters are persisted.
const PERSIST_EVERY: Duration = Duration::from_secs(1);
/// Shortest validity of the tickets a pass gives the agents of its remote destinations
/// (they are used for as long as the pass runs).
const DEST_TICKET_TTL: Duration = Duration::from_secs(24 * 3600);

/// Who runs a pass: the agent that runs it, and for each destination the agent serving
/// it when that is another one (a Local directory on another machine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyncPlan {
    pub runner: AgentId,
    pub remotes: Vec<Option<AgentId>>,
}

fn task_key(id: u64) -> Vec<u8> {
    format!("v1/sync-task/{id:020}").into_bytes()
}

fn status_key(id: u64) -> Vec<u8> {
    format!("v1/sync-status/{id:020}").into_bytes()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRow {
    #[serde(default = "one")]
    pub v: u32,
    pub task_id: u64,
    pub spec: TaskSpec,
    pub create_time_ms: i64,
    #[serde(default)]
    pub cancelled: bool,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRow {
    pub state: TaskState,
    #[serde(default)]
    pub runs: Vec<RunRecord>,
    #[serde(default)]
    pub last_errors: Vec<String>,
}

impl StatusRow {
    fn last_start(&self) -> Option<i64> {
        self.runs.last().map(|r| r.start_time_ms)
    }

    fn push_errors(&mut self, errors: impl IntoIterator<Item = String>) {
        self.last_errors.extend(errors);
        let n = self.last_errors.len();
        if n > KEEP_ERRORS {
            self.last_errors.drain(..n - KEEP_ERRORS);
        }
    }
}

/// The task as `getTask` shows it.
pub fn task_json(task: &TaskRow, status: &StatusRow) -> serde_json::Value {
    let mut v = serde_json::to_value(&task.spec).unwrap_or_default();
    let runs: Vec<serde_json::Value> = status
        .runs
        .iter()
        .map(|r| {
            serde_json::json!({
                "runID": r.run_id,
                "startTime": common::time::rfc3339_ms(r.start_time_ms),
                "endTime": r.end_time_ms.map(common::time::rfc3339_ms),
                "result": r.result,
                "filesScanned": r.counters.files_scanned,
                "filesCopied": r.counters.files_copied,
                "filesSkipped": r.counters.files_skipped,
                "filesFailed": r.counters.files_failed,
                "bytesCopied": r.counters.bytes_copied.to_string(),
                "filesDeleted": r.counters.files_deleted,
            })
        })
        .collect();
    if let Some(obj) = v.as_object_mut() {
        let mut out = serde_json::Map::new();
        out.insert("taskID".into(), task.task_id.into());
        out.extend(std::mem::take(obj));
        out.insert(
            "status".into(),
            serde_json::json!({
                "state": status.state,
                "runs": runs,
                "lastErrors": status.last_errors,
            }),
        );
        return serde_json::Value::Object(out);
    }
    v
}

impl Catalog {
    pub async fn create_sync_task(&self, spec: TaskSpec) -> Result<(TaskRow, StatusRow)> {
        let id = self.ids.next("sync-task").await?;
        let task = TaskRow {
            v: 1,
            task_id: id,
            spec,
            create_time_ms: common::time::now_ms(),
            cancelled: false,
        };
        let status = StatusRow {
            state: TaskState::Pending,
            runs: Vec::new(),
            last_errors: Vec::new(),
        };
        self.meta
            .txn(Txn {
                when: vec![Compare::Absent(task_key(id))],
                then: vec![
                    Op::Put(task_key(id), encode(&task)),
                    Op::Put(status_key(id), encode(&status)),
                ],
                otherwise: vec![],
            })
            .await?;
        Ok((task, status))
    }

    pub async fn get_sync_task(&self, id: u64) -> Result<(TaskRow, StatusRow)> {
        let task = self
            .get_row::<TaskRow>(&task_key(id))
            .await?
            .ok_or_else(|| not_found(format!("sync task {id}")))?
            .row;
        let status = self
            .get_row::<StatusRow>(&status_key(id))
            .await?
            .map(|s| s.row)
            .unwrap_or(StatusRow {
                state: TaskState::Pending,
                runs: Vec::new(),
                last_errors: Vec::new(),
            });
        Ok((task, status))
    }

    pub async fn list_sync_tasks(&self) -> Result<Vec<TaskRow>> {
        self.scan(b"v1/sync-task/".to_vec())
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    pub async fn put_sync_status(&self, id: u64, status: &StatusRow) -> Result<()> {
        self.meta.put(status_key(id), encode(status)).await?;
        Ok(())
    }

    /// Mark a task cancelled (idempotent); NotFound for unknown ids.
    pub async fn cancel_sync_task(&self, id: u64) -> Result<()> {
        let (mut task, mut status) = self.get_sync_task(id).await?;
        if !task.cancelled {
            task.cancelled = true;
            self.meta.put(task_key(id), encode(&task)).await?;
        }
        status.state = TaskState::Cancelled;
        self.put_sync_status(id, &status).await
    }
}

/// Running passes, by task id.
pub struct Runs {
    running: Mutex<HashMap<u64, CancellationToken>>,
    /// Tasks created on this coordinator since the scheduler last looked: it starts them
    /// straight away instead of scanning every task (bounded; the periodic scan finds
    /// any that did not fit, and a follower's entries are simply never taken).
    created: Mutex<std::collections::VecDeque<(TaskRow, StatusRow)>>,
    /// Bumped whenever this coordinator records a run's start or end (long polls of
    /// `GetSyncTask` wake on it).
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for Runs {
    fn default() -> Self {
        Runs {
            running: Mutex::default(),
            created: Mutex::default(),
            changed: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Runs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, CancellationToken>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wake the long polls: a task's status was written here.
    pub fn status_written(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes after this call are seen by the receiver.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Hand a just-created task to the scheduler (`take_created`).
    pub fn created(&self, task: TaskRow, status: StatusRow) {
        let mut q = self.created.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= MAX_CREATED_QUEUE {
            q.pop_front();
        }
        q.push_back((task, status));
    }

    fn take_created(&self) -> Vec<(TaskRow, StatusRow)> {
        self.created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect()
    }

    pub fn cancel(&self, id: u64) {
        if let Some(t) = self.lock().get(&id) {
            t.cancel();
        }
    }
}

impl Service {
    /// Check a new task against the spaces that exist; returns who runs its passes: the
    /// agent of a Local source (else of the first Local destination, else the source's),
    /// and the agents of Local destinations served elsewhere, reached through their agent.
    pub(crate) async fn validate_sync_task(&self, spec: &TaskSpec) -> Result<SyncPlan> {
        spec.validate().map_err(bad)?;
        let src_path = common::sync::normalize_path("srcPath", &spec.src_path).map_err(bad)?;
        let src = self
            .catalog
            .get_space(SpaceId(spec.src_user_space_id))
            .await?
            .ok_or_else(|| {
                bad(format!(
                    "srcUserSpaceID {} is not a user space",
                    spec.src_user_space_id
                ))
            })?;
        let is_local = |row: &crate::catalog::rows::SpaceRow| {
            row.declared || matches!(row.storage, Some(common::space::Storage::Local { .. }))
        };
        let mut runner = is_local(&src).then_some(src.agent_id);
        // (agent, Local) of each destination.
        let mut dests = Vec::with_capacity(spec.dest_user_space_ids.len());
        for (i, (id, path)) in spec
            .dest_user_space_ids
            .iter()
            .zip(&spec.dest_pathes)
            .enumerate()
        {
            let dest =
                self.catalog.get_space(SpaceId(*id)).await?.ok_or_else(|| {
                    bad(format!("destUserSpaceIDs[{i}] {id} is not a user space"))
                })?;
            let dest_path =
                common::sync::normalize_path(&format!("destPathes[{i}]"), path).map_err(bad)?;
            if *id == spec.src_user_space_id
                && (src_path.is_empty()
                    || dest_path == src_path
                    || dest_path.starts_with(&format!("{src_path}/")))
            {
                return Err(bad(format!(
                    "destPathes[{i}] {path:?} is the source or inside it (srcPath {:?} of the same user space)",
                    spec.src_path
                )));
            }
            let local = is_local(&dest);
            if local && runner.is_none() {
                runner = Some(dest.agent_id);
            }
            dests.push((dest.agent_id, local));
        }
        let runner = runner.unwrap_or(src.agent_id);
        let remotes = dests
            .into_iter()
            .map(|(agent, local)| (local && agent != runner).then_some(agent))
            .collect();
        Ok(SyncPlan { runner, remotes })
    }

    /// One pass of task `task`: returns the final counters and errors, or an error when
    /// the pass could not run at all.
    async fn run_pass(
        &self,
        task: &TaskRow,
        on_progress: &mut (dyn FnMut(RunCounters, Vec<String>) + Send),
        cancel: &CancellationToken,
    ) -> Result<bool> {
        let spec = &task.spec;
        let plan = self.validate_sync_task(spec).await?;
        let agent_id = plan.runner;
        let agent = self
            .catalog
            .get_agent(agent_id)
            .await?
            .ok_or_else(|| not_found(format!("agent {agent_id}")))?;
        if self.registry.liveness(agent_id) == crate::registry::Liveness::Down {
            return Err(Error::AgentDown {
                agent: agent.name,
                space: spec.src_user_space_id,
            });
        }
        let mut specs = Vec::new();
        for id in
            std::iter::once(spec.src_user_space_id).chain(spec.dest_user_space_ids.iter().copied())
        {
            let row = self
                .catalog
                .get_space(SpaceId(id))
                .await?
                .ok_or_else(|| not_found(format!("user space {id}")))?;
            let owner = self
                .catalog
                .get_agent(row.agent_id)
                .await?
                .map(|a| a.name)
                .unwrap_or_default();
            specs.push(self.spec(&row, &owner)?);
        }
        let task_json = serde_json::to_string(spec).map_err(|e| bad(e.to_string()))?;
        let mut h = sha2::Sha256::new();
        h.update(task_json.as_bytes());
        for s in &specs {
            h.update(s.encode_to_vec());
        }
        let source = specs.remove(0);
        let mut remotes = Vec::with_capacity(specs.len());
        let dest_expiry =
            common::time::now_ms() + crate::service::ms(self.ticket_ttl.max(DEST_TICKET_TTL));
        for (i, (remote, dest)) in plan.remotes.iter().zip(&specs).enumerate() {
            let Some(remote) = remote else {
                remotes.push(proto::agent::SyncRemote::default());
                continue;
            };
            let row = self
                .catalog
                .get_agent(*remote)
                .await?
                .ok_or_else(|| not_found(format!("agent {remote}")))?;
            if self.registry.liveness(*remote) == crate::registry::Liveness::Down {
                return Err(Error::AgentDown {
                    agent: row.name,
                    space: dest.space_id,
                });
            }
            let folder = common::sync::normalize_path(
                &format!("destPathes[{i}]"),
                spec.dest_pathes.get(i).map_or("", String::as_str),
            )
            .map_err(bad)?;
            remotes.push(proto::agent::SyncRemote {
                agent_address: row.address,
                ticket: Some(self.signer.sync(
                    (SpaceId(dest.space_id), dest.revision),
                    &common::sync::dest_ticket_hash(&folder),
                    dest_expiry,
                )),
            });
        }
        if remotes.iter().all(|r| r.agent_address.is_empty()) {
            remotes.clear();
        }
        let ticket = self.signer.sync(
            (SpaceId(source.space_id), source.revision),
            &hex::encode(h.finalize()),
            common::time::now_ms() + crate::service::ms(self.ticket_ttl),
        );
        let mut client = self
            .agents
            .get(&agent.address)
            .map_err(|source| Error::Agent { source })?;
        let mut stream = client
            .run_sync(proto::agent::RunSyncRequest {
                ticket: Some(ticket),
                task_json,
                source: Some(source),
                destinations: specs,
                remotes,
            })
            .await
            .map_err(|s| Error::Agent { source: s.into() })?
            .into_inner();
        loop {
            let msg = tokio::select! {
                _ = cancel.cancelled() => return Ok(false),
                m = stream.message() => m.map_err(|s| Error::Agent { source: s.into() })?,
            };
            let Some(p) = msg else {
                return Err(Error::Agent {
                    source: client::Error::Remote {
                        code: common::ErrorCode::Unavailable,
                        message: "the agent ended the run without a final report".into(),
                        retryable: true,
                    },
                });
            };
            let counters = RunCounters {
                files_scanned: p.files_scanned,
                files_copied: p.files_copied,
                files_skipped: p.files_skipped,
                files_failed: p.files_failed,
                bytes_copied: p.bytes_copied,
                files_deleted: p.files_deleted,
            };
            on_progress(counters, p.errors);
            if p.done {
                return Ok(true);
            }
        }
    }
}

/// Whether `task` should start a pass now.
fn due(task: &TaskRow, status: &StatusRow, now_ms: i64) -> bool {
    let last = status.last_start();
    match &task.spec.trigger {
        Trigger::Once {} => last.is_none(),
        Trigger::Interval { interval } => last.is_none_or(|l| {
            now_ms - l >= i64::try_from(*interval).unwrap_or(i64::MAX / 1000) * 1000
        }),
        Trigger::Schedule { start, end } => {
            let (Ok(s), Ok(e)) = (
                common::sync::parse_hhmm("start", start),
                common::sync::parse_hhmm("end", end),
            ) else {
                return false;
            };
            let minute = u32::try_from(now_ms.rem_euclid(86_400_000) / 60_000).unwrap_or(0);
            let inside = if s <= e {
                minute >= s && minute < e
            } else {
                minute >= s || minute < e
            };
            // At most one run per window: none in the last 20 hours.
            inside && last.is_none_or(|l| now_ms - l >= 20 * 3_600_000)
        }
    }
}

/// The scheduler loop of one leader term. Every status write goes through `catalog`, the
/// term's fenced catalogue, so a deposed leader's late write is refused (`leader.rs`).
pub async fn run_scheduler(service: Arc<Service>, catalog: Catalog, shutdown: CancellationToken) {
    recover(&catalog).await;
    // Tasks queued before this term began may predate a leader change: the scan decides.
    drop(service.sync_runs.take_created());
    loop {
        let woken = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(TICK) => false,
            _ = service.sync_wakeup.notified() => true,
        };
        // A task created here starts at once, without scanning every task and status.
        let created = service.sync_runs.take_created();
        if woken && !created.is_empty() {
            let now = common::time::now_ms();
            for (task, status) in created {
                start_if_due(&service, &catalog, &shutdown, task, status, now);
            }
            continue;
        }
        if let Err(e) = tick(&service, &catalog, &shutdown).await {
            tracing::warn!(error = %common::error::ErrorChain(&e), "sync scheduler tick failed");
        }
    }
    // Stop running passes; their status is finalized by the run tasks.
    for token in service.sync_runs.lock().values() {
        token.cancel();
    }
}

/// A run left `Running` by a previous coordinator is marked failed.
async fn recover(catalog: &Catalog) {
    let tasks = match catalog.list_sync_tasks().await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %common::error::ErrorChain(&e), "cannot list sync tasks");
            return;
        }
    };
    for task in tasks {
        let Ok((_, mut status)) = catalog.get_sync_task(task.task_id).await else {
            continue;
        };
        if status.state != TaskState::Running {
            continue;
        }
        if let Some(run) = status.runs.last_mut()
            && run.end_time_ms.is_none()
        {
            run.end_time_ms = Some(common::time::now_ms());
            run.result = "Failed".into();
        }
        status.push_errors(["the run was interrupted: the coordinator restarted".to_owned()]);
        status.state = if task.cancelled {
            TaskState::Cancelled
        } else if matches!(task.spec.trigger, Trigger::Once {}) {
            TaskState::Failed
        } else {
            TaskState::Idle
        };
        if let Err(e) = catalog.put_sync_status(task.task_id, &status).await {
            tracing::warn!(error = %common::error::ErrorChain(&e), task = task.task_id, "cannot mark interrupted run");
        }
    }
}

async fn tick(
    service: &Arc<Service>,
    catalog: &Catalog,
    shutdown: &CancellationToken,
) -> Result<()> {
    let now = common::time::now_ms();
    for task in catalog.list_sync_tasks().await? {
        if task.cancelled || service.sync_runs.lock().contains_key(&task.task_id) {
            continue;
        }
        let (_, status) = catalog.get_sync_task(task.task_id).await?;
        start_if_due(service, catalog, shutdown, task, status, now);
    }
    Ok(())
}

/// Start a pass of `task` unless it is cancelled, already running, or not due.
fn start_if_due(
    service: &Arc<Service>,
    catalog: &Catalog,
    shutdown: &CancellationToken,
    task: TaskRow,
    status: StatusRow,
    now: i64,
) {
    if task.cancelled || !due(&task, &status, now) {
        return;
    }
    let token = shutdown.child_token();
    {
        let mut running = service.sync_runs.lock();
        if running.contains_key(&task.task_id) {
            return;
        }
        running.insert(task.task_id, token.clone());
    }
    let service = service.clone();
    let catalog = catalog.clone();
    tokio::spawn(async move {
        let id = task.task_id;
        run_one(&service, &catalog, task, status, token).await;
        service.sync_runs.lock().remove(&id);
    });
}

async fn run_one(
    service: &Service,
    catalog: &Catalog,
    task: TaskRow,
    mut status: StatusRow,
    cancel: CancellationToken,
) {
    let id = task.task_id;
    let run_id = status.runs.last().map_or(1, |r| r.run_id + 1);
    status.runs.push(RunRecord {
        run_id,
        start_time_ms: common::time::now_ms(),
        end_time_ms: None,
        result: "Running".into(),
        counters: RunCounters::default(),
    });
    if status.runs.len() > KEEP_RUNS {
        status.runs.remove(0);
    }
    status.state = TaskState::Running;
    if let Err(e) = catalog.put_sync_status(id, &status).await {
        tracing::warn!(error = %common::error::ErrorChain(&e), task = id, "cannot record run start");
    }
    service.sync_runs.status_written();
    tracing::info!(task = id, run = run_id, "sync run started");
    common::metrics::metrics()
        .sync_runs
        .with_label_values(&["started"])
        .inc();
    let shared = Arc::new(Mutex::new(status));
    let mut last_persist = std::time::Instant::now();
    let (persist_tx, mut persist_rx) = tokio::sync::mpsc::channel::<StatusRow>(1);
    let persister = {
        let catalog = catalog.clone();
        tokio::spawn(async move {
            while let Some(s) = persist_rx.recv().await {
                let _ = catalog.put_sync_status(id, &s).await;
            }
        })
    };
    let mut on_progress = {
        let shared = shared.clone();
        move |counters: RunCounters, errors: Vec<String>| {
            let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(run) = s.runs.last_mut() {
                run.counters = counters;
            }
            s.push_errors(errors);
            if last_persist.elapsed() >= PERSIST_EVERY {
                last_persist = std::time::Instant::now();
                let _ = persist_tx.try_send(s.clone());
            }
        }
    };
    let outcome = service.run_pass(&task, &mut on_progress, &cancel).await;
    drop(on_progress);
    let _ = persister.await;
    let mut status = shared.lock().unwrap_or_else(|p| p.into_inner()).clone();
    // A cancel may have been recorded meanwhile: re-read the task's flag.
    let cancelled = cancel.is_cancelled()
        || catalog
            .get_sync_task(id)
            .await
            .map(|(t, _)| t.cancelled)
            .unwrap_or(false);
    let once = matches!(task.spec.trigger, Trigger::Once {});
    let result = match &outcome {
        Ok(true)
            if status
                .runs
                .last()
                .is_some_and(|r| r.counters.files_failed == 0) =>
        {
            "Succeeded"
        }
        Ok(true) => "Failed",
        Ok(false) => "Cancelled",
        Err(e) => {
            status.push_errors([format!("the run failed: {}", common::error::ErrorChain(e))]);
            "Failed"
        }
    };
    if let Some(run) = status.runs.last_mut() {
        run.end_time_ms = Some(common::time::now_ms());
        run.result = result.into();
    }
    status.state = if cancelled {
        TaskState::Cancelled
    } else if once && result == "Failed" {
        TaskState::Failed
    } else {
        TaskState::Idle
    };
    tracing::info!(task = id, run = run_id, result, "sync run finished");
    let event = match result {
        "Succeeded" => "finished",
        "Cancelled" => "cancelled",
        _ => "failed",
    };
    common::metrics::metrics()
        .sync_runs
        .with_label_values(&[event])
        .inc();
    if let Err(e) = catalog.put_sync_status(id, &status).await {
        tracing::warn!(error = %common::error::ErrorChain(&e), task = id, "cannot record run end");
    }
    service.sync_runs.status_written();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(trigger: Trigger) -> TaskRow {
        TaskRow {
            v: 1,
            task_id: 1,
            spec: TaskSpec {
                trigger,
                mode: common::sync::Mode::Full {},
                filters: vec![],
                options: Default::default(),
                src_user_space_id: 1,
                src_path: String::new(),
                dest_user_space_ids: vec![2],
                dest_pathes: vec!["d".into()],
            },
            create_time_ms: 0,
            cancelled: false,
        }
    }

    fn status(last_start: Option<i64>) -> StatusRow {
        StatusRow {
            state: TaskState::Idle,
            runs: last_start
                .map(|s| RunRecord {
                    run_id: 1,
                    start_time_ms: s,
                    end_time_ms: Some(s),
                    result: "Succeeded".into(),
                    counters: RunCounters::default(),
                })
                .into_iter()
                .collect(),
            last_errors: vec![],
        }
    }

    #[test]
    fn triggers_fire_when_due_and_never_replay_missed_ticks() {
        let once = task(Trigger::Once {});
        assert!(due(&once, &status(None), 0));
        assert!(!due(&once, &status(Some(0)), 1_000_000));
        let every = task(Trigger::Interval { interval: 30 });
        assert!(due(&every, &status(None), 5));
        assert!(!due(&every, &status(Some(1000)), 30_999));
        assert!(due(&every, &status(Some(1000)), 31_000));
        // Ten missed ticks still mean one run now (the next is measured from its start).
        assert!(due(&every, &status(Some(0)), 300_000));
        let window = task(Trigger::Schedule {
            start: "23:00".into(),
            end: "01:00".into(),
        });
        let day = 86_400_000;
        assert!(due(
            &window,
            &status(None),
            10 * day + 23 * 3_600_000 + 60_000
        ));
        assert!(due(&window, &status(None), 10 * day + 30 * 60_000));
        assert!(!due(&window, &status(None), 10 * day + 12 * 3_600_000));
        assert!(!due(
            &window,
            &status(Some(10 * day + 23 * 3_600_000)),
            10 * day + 23 * 3_600_000 + 600_000
        ));
    }

    #[test]
    fn task_json_has_the_spec_the_id_and_the_status() {
        let v = task_json(&task(Trigger::Once {}), &status(Some(0)));
        assert_eq!(v["taskID"], 1);
        assert_eq!(v["trigger"]["type"], "Once");
        assert_eq!(v["destPathes"][0], "d");
        assert_eq!(v["status"]["state"], "Idle");
        assert_eq!(
            v["status"]["runs"][0]["startTime"],
            "1970-01-01T00:00:00.000Z"
        );
    }
}
