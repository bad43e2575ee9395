//! RunSync: one pass of a sync task (`/v1/spaceSyncer`), executed on this agent between
//! storages described by full `SpaceSpec`s (the spaces need not be served here otherwise).
//!
//! Paths are plain storage paths (working dir not prepended, like package import/export):
//! the source tree is `srcPath` of the source's storage root, destination `i` is
//! `destPathes[i]` of its storage root. JCS's own data (`<wd>/shards/`, `<wd>/tmp/`,
//! `.jcs-tmp-*`, `.jcs-probe-*`) is never listed, written or deleted.
//!
//! One pass: list the source recursively (streamed), filter each file (all filters must
//! pass, else it is *skipped*), decide per destination by the mode (Full: always; Diff:
//! missing, size, recorded source mtime at second granularity), copy (streamed ≤ 1 MiB
//! chunks, atomic, size re-checked, source mtime kept), [`PARALLEL_FILES`] files at a time,
//! temporary errors retried ([`ATTEMPTS`] attempts). Then `deleteSource` (per file, once
//! every destination holds it) and `deleteExtraneous` (after the pass, only if nothing
//! failed, at most `maxDelete` deletions in total). See AGENTS.md for the exact rules.

use std::cmp::Ordering as Order;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::secret::Secret;
use common::sync::{Filter, Mode, TaskSpec};
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use prost::Message;
use proto::agent::sync_write_request::Msg as WriteMsg;
use proto::agent::{
    FileBatch, RunSyncRequest, SyncDestRequest, SyncProgress, SyncWriteFinish, SyncWriteHeader,
    SyncWriteRequest,
};
use proto::common::ticket_body::Kind;
use proto::common::{SpaceSpec, Ticket, TicketBody};
use sha2::{Digest, Sha256};
use snafu::{ResultExt, ensure};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};
use tracing::{debug, warn};

use crate::error::{
    BadRequestSnafu, BadTicketSnafu, BuildTaskSnafu, ChunkTooLargeSnafu, ContentMismatchSnafu,
    DeleteFileSnafu, Error, InvalidSpecSnafu, NotAFileSnafu, ReceivePutSnafu, RemoteAgentSnafu,
    ReservedPathSnafu, Result, SetModifiedSnafu, SetModifiedTaskSnafu, ShuttingDownSnafu,
    StatFileSnafu, StreamAbortedSnafu, WriteFileSnafu,
};
use crate::files::{self, FileEntry, FileList, FileRoot, FileStream, Listed, TMP_PREFIX, Walk};
use crate::store::SpaceStore;
use crate::store::unix_ms;
use crate::{backend, ticket};

/// Files copied at the same time.
pub const PARALLEL_FILES: usize = 8;
/// Attempts of one file towards one destination when the storage says the error is
/// temporary.
pub const ATTEMPTS: u32 = 3;
/// Wait before the second attempt; doubled before each further one.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// How often a progress message is sent while the pass runs.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);
/// Error strings carried by one progress message.
pub const ERRORS_PER_MESSAGE: usize = 5;
/// Error strings waiting to be sent; more are counted and summarized.
const MAX_PENDING_ERRORS: usize = 100;
/// Longest error string sent.
const MAX_ERROR_LEN: usize = 1000;
/// Progress messages buffered towards the caller.
const PROGRESS_CHANNEL_CAPACITY: usize = 4;
/// Messages (chunks ≤ 1 MiB) buffered towards another agent's SyncWriteFile.
const REMOTE_WRITE_CAPACITY: usize = 4;
/// User metadata key holding the source's modification time (Unix ms, decimal) on object
/// stores.
pub const MTIME_KEY: &str = "jcs-mtime";

/// The ticket digest of a RunSync request: lower-case hex SHA-256 of `task_json` followed
/// by the prost encoding of `source` and of each destination, in order.
pub fn request_digest(task_json: &str, source: &SpaceSpec, destinations: &[SpaceSpec]) -> String {
    let mut h = Sha256::new();
    h.update(task_json.as_bytes());
    h.update(source.encode_to_vec());
    for dest in destinations {
        h.update(dest.encode_to_vec());
    }
    hex::encode(h.finalize())
}

/// One side of a sync: a storage root and the tree's path in it.
#[derive(Clone)]
pub(crate) struct Side {
    files: FileRoot,
    /// Normalized path of the tree (`""` = the storage root).
    base: String,
    /// Local directory of the storage root (Local storages), to set mtimes.
    local: Option<PathBuf>,
    space_id: u64,
}

impl Side {
    /// Storage path of `rel` (relative to the tree).
    fn full(&self, rel: &str) -> String {
        if self.base.is_empty() {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.base)
        }
    }

    fn op(&self) -> &opendal::Operator {
        self.files.operator()
    }

    /// Whether the destination keeps the source mtime as user metadata (object stores
    /// that support it); fs destinations set the file's mtime instead.
    fn has_user_metadata(&self) -> bool {
        !self.files.staged() && self.op().info().capability().write_with_user_metadata
    }
}

/// A destination of a pass: reached by this agent itself, or through the agent that serves
/// it (a Local directory on another machine).
enum Dest {
    Direct(Side),
    Remote(Remote),
}

/// A destination served by another agent (see `SyncListDest` in the proto).
struct Remote {
    client: client::AgentClient,
    address: String,
    ticket: Ticket,
    /// Normalized destination folder (for messages; the ticket names it).
    base: String,
    label: String,
    /// Set once a copy failed because the agent could not be reached, even after the
    /// retries: later files fail at once instead of waiting for retries each.
    down: Mutex<Option<String>>,
}

impl Remote {
    fn error(&self, status: Status) -> Error {
        Error::RemoteAgent {
            role: "destination",
            address: self.address.clone(),
            source: client::Error::from(status),
        }
    }

    fn request(&self, path: &str, mkdir: bool) -> SyncDestRequest {
        SyncDestRequest {
            ticket: Some(self.ticket.clone()),
            path: path.to_owned(),
            mkdir,
        }
    }
}

impl Dest {
    fn label(&self) -> &str {
        match self {
            Dest::Direct(side) => side.files.label(),
            Dest::Remote(remote) => &remote.label,
        }
    }

    fn base(&self) -> &str {
        match self {
            Dest::Direct(side) => &side.base,
            Dest::Remote(remote) => &remote.base,
        }
    }

    /// Storage path of `rel` (relative to the tree).
    fn full(&self, rel: &str) -> String {
        if self.base().is_empty() {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.base())
        }
    }

    /// Whether Diff decides from the destination's listing (filesystems, here or on
    /// another agent: a listing carries the mtime a copy set) rather than by a stat of
    /// each file (object stores: the recorded mtime is user metadata).
    fn diff_by_listing(&self) -> bool {
        match self {
            Dest::Direct(side) => side.files.staged(),
            Dest::Remote(_) => true,
        }
    }

    /// The files of the destination tree in byte order of their relative path; `None`
    /// when nothing exists there.
    async fn listing(&self) -> Result<Option<FileList>> {
        match self {
            Dest::Direct(side) => match side.files.list(&side.base).await {
                Ok(list) => Ok(Some(list)),
                Err(Error::FileNotFound { .. }) => Ok(None),
                Err(err) => Err(err),
            },
            Dest::Remote(remote) => {
                let mut client = remote.client.clone();
                let batches = match client.sync_list_dest(remote.request("", false)).await {
                    Ok(answer) => answer.into_inner(),
                    Err(status) if status.code() == tonic::Code::NotFound => return Ok(None),
                    Err(status) => return Err(remote.error(status)),
                };
                let address = remote.address.clone();
                let base = remote.base.clone();
                let list = batches
                    .map_err(move |status| Error::RemoteAgent {
                        role: "destination",
                        address: address.clone(),
                        source: client::Error::from(status),
                    })
                    .map_ok(move |batch: FileBatch| {
                        let base = base.clone();
                        futures::stream::iter(batch.files.into_iter().map(move |f| {
                            Ok(FileEntry {
                                full_path: if base.is_empty() {
                                    f.path.clone()
                                } else {
                                    format!("{base}/{}", f.path)
                                },
                                path: f.path,
                                size: f.size,
                                modified_ms: f.modified_ms,
                            })
                        }))
                    })
                    .try_flatten();
                Ok(Some(Box::pin(list)))
            }
        }
    }
}

/// A position in a sorted listing (byte order of the relative paths), advanced by
/// [`Cursor::seek`] with non-decreasing paths: the merge of two sorted listings holds one
/// entry of each (plus the listing's own buffer), whatever the number of files.
struct Cursor {
    list: Option<FileList>,
    next: Option<FileEntry>,
    /// The listing failed: every later seek fails with this message.
    failed: Option<String>,
}

impl Cursor {
    fn new(list: Option<FileList>) -> Cursor {
        Cursor {
            list,
            next: None,
            failed: None,
        }
    }

    fn broken(message: String) -> Cursor {
        Cursor {
            list: None,
            next: None,
            failed: Some(message),
        }
    }

    /// The entry at `rel`, if listed; entries before it are passed to `skipped`.
    async fn seek(
        &mut self,
        rel: &str,
        mut skipped: impl FnMut(FileEntry),
    ) -> Result<Option<FileEntry>, String> {
        loop {
            if let Some(message) = &self.failed {
                return Err(message.clone());
            }
            if self.next.is_none() {
                let Some(list) = self.list.as_mut() else {
                    return Ok(None);
                };
                match list.try_next().await {
                    Ok(Some(entry)) => self.next = Some(entry),
                    Ok(None) => {
                        self.list = None;
                        return Ok(None);
                    }
                    Err(err) => {
                        self.list = None;
                        self.failed = Some(common::error::ErrorChain(&err).to_string());
                        continue;
                    }
                }
            }
            let Some(next) = self.next.take() else {
                continue;
            };
            match next.path.as_str().cmp(rel) {
                Order::Less => skipped(next),
                Order::Equal => return Ok(Some(next)),
                Order::Greater => {
                    self.next = Some(next);
                    return Ok(None);
                }
            }
        }
    }
}

/// What is known of a file's destination before deciding.
enum Known {
    /// Nothing: Diff stats the destination file.
    Unknown,
    /// The destination listing's entry at that path (`None`: missing).
    Listed(Option<FileEntry>),
    /// The destination listing failed.
    Failed(String),
}

/// Build the side of `spec` (`what` names it in messages) on the blocking pool (a Local
/// root is created when missing).
async fn open_side(what: String, spec: SpaceSpec, base: String) -> Result<Side> {
    tokio::task::spawn_blocking(move || {
        let named = |e: Error| match e {
            Error::InvalidSpec { message } => Error::InvalidSpec {
                message: format!("{what}: {message}"),
            },
            e => e,
        };
        let (storage, credential) = backend::parse_spec(&spec).map_err(named)?;
        common::space::validate_working_dir(&spec.working_dir).map_err(|message| {
            InvalidSpecSnafu {
                message: format!("{what}: {message}"),
            }
            .build()
        })?;
        let op = backend::operator(&storage, &credential, "").map_err(named)?;
        Ok(Side {
            files: FileRoot::new(op, &spec.working_dir)
                .with_label(format!("user space {}", spec.space_id)),
            base,
            local: backend::local_root(&storage, ""),
            space_id: spec.space_id,
        })
    })
    .await
    .context(BuildTaskSnafu)?
}

/// A task path (`srcPath`, `destPathes[i]`) as a storage path.
fn task_path(field: &str, path: &str) -> Result<String> {
    let normalized = common::sync::normalize_path(field, path)
        .map_err(|message| BadRequestSnafu { message }.build())?;
    files::check_path(&normalized, true)?;
    Ok(normalized)
}

/// The filters of a task, compiled.
#[derive(Debug)]
struct Filters(Vec<Compiled>);

#[derive(Debug)]
enum Compiled {
    Size(Option<u64>, Option<u64>),
    /// Lower-case extensions without the dot.
    Extension(Vec<String>, Vec<String>),
    /// Include (`None`: no include pattern), exclude.
    Path(Option<GlobSet>, GlobSet),
    /// Unix ms, inclusive.
    ModTime(Option<i64>, Option<i64>),
}

fn glob_set(field: &str, patterns: &[String]) -> Result<GlobSet> {
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        let glob = GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| {
                BadRequestSnafu {
                    message: format!("{field}: invalid glob {p:?}: {e}"),
                }
                .build()
            })?;
        set.add(glob);
    }
    set.build().map_err(|e| {
        BadRequestSnafu {
            message: format!("{field}: {e}"),
        }
        .build()
    })
}

fn extensions(list: &[String]) -> Vec<String> {
    list.iter()
        .map(|e| e.trim_start_matches('.').to_lowercase())
        .collect()
}

/// Extension of the base name of `path` (after its last `.`, not for a leading dot),
/// lower-case.
fn extension_of(path: &str) -> Option<String> {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => Some(ext.to_lowercase()),
        _ => None,
    }
}

impl Filters {
    fn compile(filters: &[Filter]) -> Result<Filters> {
        let mut out = Vec::with_capacity(filters.len());
        for (i, f) in filters.iter().enumerate() {
            out.push(match f {
                Filter::Size { min_size, max_size } => Compiled::Size(*min_size, *max_size),
                Filter::Extension { include, exclude } => {
                    Compiled::Extension(extensions(include), extensions(exclude))
                }
                Filter::Path { include, exclude } => {
                    let field = format!("filters[{i}]");
                    let inc = if include.is_empty() {
                        None
                    } else {
                        Some(glob_set(&field, include)?)
                    };
                    Compiled::Path(inc, glob_set(&field, exclude)?)
                }
                Filter::ModTime { after, before } => {
                    let parse = |name: &str, v: &Option<String>| {
                        v.as_deref()
                            .map(|s| {
                                common::sync::parse_rfc3339_ms(&format!("filters[{i}].{name}"), s)
                            })
                            .transpose()
                            .map_err(|message| BadRequestSnafu { message }.build())
                    };
                    Compiled::ModTime(parse("after", after)?, parse("before", before)?)
                }
            });
        }
        Ok(Filters(out))
    }

    fn has_mod_time(&self) -> bool {
        self.0.iter().any(|f| matches!(f, Compiled::ModTime(..)))
    }

    /// Whether a file at `rel` (relative to the tree) of `size` bytes modified at
    /// `mtime_ms` passes every filter.
    fn pass(&self, rel: &str, size: u64, mtime_ms: i64) -> bool {
        self.0.iter().all(|f| match f {
            Compiled::Size(min, max) => {
                min.is_none_or(|m| size >= m) && max.is_none_or(|m| size <= m)
            }
            Compiled::Extension(include, exclude) => {
                let ext = extension_of(rel);
                let is = |list: &Vec<String>| ext.as_ref().is_some_and(|e| list.contains(e));
                (include.is_empty() || is(include)) && !is(exclude)
            }
            Compiled::Path(include, exclude) => {
                include.as_ref().is_none_or(|set| set.is_match(rel)) && !exclude.is_match(rel)
            }
            Compiled::ModTime(after, before) => {
                after.is_none_or(|a| mtime_ms >= a) && before.is_none_or(|b| mtime_ms <= b)
            }
        })
    }
}

/// Whole seconds of a Unix ms time (floored).
fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

fn system_time(ms: i64) -> SystemTime {
    let d = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

fn modified_ms(meta: &opendal::Metadata) -> Option<i64> {
    meta.last_modified().map(|m| unix_ms(SystemTime::from(m)))
}

/// Whether retrying may help: the storage called the failure temporary.
fn is_temporary(err: &Error) -> bool {
    match err {
        Error::ReadFile { source, .. }
        | Error::WriteFile { source, .. }
        | Error::ListFiles { source, .. }
        | Error::StatFile { source, .. }
        | Error::DeleteFile { source, .. } => source.is_temporary(),
        // Another agent: unreachable, or its storage said temporary.
        Error::RemoteAgent { source, .. } => {
            matches!(
                source,
                client::Error::Remote {
                    retryable: true,
                    ..
                }
            )
        }
        _ => false,
    }
}

/// Whether `err` says another agent could not be reached (or went away).
fn is_unreachable(err: &Error) -> bool {
    matches!(
        err,
        Error::RemoteAgent {
            source: client::Error::Remote {
                code: common::ErrorCode::Unavailable,
                ..
            },
            ..
        }
    )
}

/// Counters and pending error strings of a pass, shared by its workers and the reporter.
#[derive(Default)]
struct Progress {
    scanned: AtomicU64,
    copied: AtomicU64,
    skipped: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
    deleted: AtomicU64,
    /// Every failure reported (files, directories, source deletions, listings): any one
    /// forbids `deleteExtraneous`.
    problems: AtomicU64,
    errors: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    errors: std::collections::VecDeque<String>,
    /// Errors not kept (the queue was full).
    dropped: u64,
}

impl Progress {
    /// Report a failure.
    fn error(&self, message: String) {
        self.problems.fetch_add(1, Ordering::Relaxed);
        self.note(message);
    }

    /// Report something to the caller that is not a failure.
    fn note(&self, mut message: String) {
        if message.len() > MAX_ERROR_LEN {
            let mut end = MAX_ERROR_LEN;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        let mut pending = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if pending.errors.len() < MAX_PENDING_ERRORS {
            pending.errors.push_back(message);
        } else {
            pending.dropped += 1;
        }
    }

    fn pending_errors(&self) -> usize {
        let pending = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        pending.errors.len() + usize::from(pending.dropped > 0)
    }

    /// The counters so far and up to [`ERRORS_PER_MESSAGE`] pending errors (taken).
    fn message(&self, done: bool) -> SyncProgress {
        let errors = {
            let mut pending = self.errors.lock().unwrap_or_else(|e| e.into_inner());
            let n = pending.errors.len().min(ERRORS_PER_MESSAGE);
            let mut errors: Vec<String> = pending.errors.drain(..n).collect();
            if errors.len() < ERRORS_PER_MESSAGE && pending.errors.is_empty() && pending.dropped > 0
            {
                errors.push(format!("{} more errors were not reported", pending.dropped));
                pending.dropped = 0;
            }
            errors
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SyncProgress {
            files_scanned: get(&self.scanned),
            files_copied: get(&self.copied),
            files_skipped: get(&self.skipped),
            files_failed: get(&self.failed),
            bytes_copied: get(&self.bytes),
            files_deleted: get(&self.deleted),
            errors,
            done,
        }
    }
}

/// A checked RunSync request whose source listing is open: errors so far were the call's.
pub struct SyncRun {
    ctx: Ctx,
    listing: Walk,
}

/// Check the request (ticket of kind SYNC issued for exactly this request, task, specs),
/// build the operators and open the source listing (its first entry is read here, so an
/// unreachable or missing source is the call's error too).
pub async fn prepare(
    secret: &Secret,
    agents: &client::AgentPool,
    req: RunSyncRequest,
) -> Result<SyncRun> {
    let body = ticket::verify(
        secret,
        req.ticket.as_ref(),
        Kind::Sync,
        common::time::now_ms(),
    )?;
    let Some(source) = req.source else {
        return BadRequestSnafu {
            message: "source is missing",
        }
        .fail();
    };
    ensure!(
        request_digest(&req.task_json, &source, &req.destinations) == body.shard_hash,
        BadTicketSnafu {
            reason: "the ticket was not issued for this sync request",
        }
    );
    let task: TaskSpec = serde_json::from_str(&req.task_json).map_err(|e| {
        BadRequestSnafu {
            message: format!("invalid task_json: {e}"),
        }
        .build()
    })?;
    task.validate().map_err(|m| {
        BadRequestSnafu {
            message: format!("invalid task: {m}"),
        }
        .build()
    })?;
    ensure!(
        body.space_id == source.space_id && task.src_user_space_id == source.space_id,
        BadRequestSnafu {
            message: format!(
                "source is user space {} but the ticket names {} and the task {}",
                source.space_id, body.space_id, task.src_user_space_id
            ),
        }
    );
    let dest_ids: Vec<u64> = req.destinations.iter().map(|d| d.space_id).collect();
    ensure!(
        dest_ids == task.dest_user_space_ids,
        BadRequestSnafu {
            message: format!(
                "destinations are user spaces {dest_ids:?} but the task names {:?}",
                task.dest_user_space_ids
            ),
        }
    );
    let filters = Filters::compile(&task.filters)?;
    let src_base = task_path("srcPath", &task.src_path)?;
    let mut source = open_side("source".into(), source, src_base).await?;
    source.files = source.files.following_file_links(task.options.copy_links);
    ensure!(
        req.remotes.is_empty() || req.remotes.len() == req.destinations.len(),
        BadRequestSnafu {
            message: format!(
                "{} remotes for {} destinations",
                req.remotes.len(),
                req.destinations.len()
            ),
        }
    );
    let mut remotes = req.remotes.into_iter();
    let mut dests = Vec::with_capacity(req.destinations.len());
    for (i, (spec, path)) in req
        .destinations
        .into_iter()
        .zip(&task.dest_pathes)
        .enumerate()
    {
        let base = task_path(&format!("destPathes[{i}]"), path)?;
        let remote = remotes.next().filter(|r| !r.agent_address.is_empty());
        dests.push(match remote {
            // Served by another agent: never opened here (a Local path names a directory
            // of that agent's machine).
            Some(remote) => {
                let address = remote.agent_address;
                let Some(ticket) = remote.ticket else {
                    return BadTicketSnafu {
                        reason: format!("remotes[{i}] has no ticket"),
                    }
                    .fail();
                };
                let client = agents.get(&address).context(RemoteAgentSnafu {
                    role: "destination",
                    address: &address,
                })?;
                Dest::Remote(Remote {
                    client,
                    label: format!("user space {} (agent {address})", spec.space_id),
                    address,
                    ticket,
                    base,
                    down: Mutex::new(None),
                })
            }
            None => Dest::Direct(open_side(format!("destinations[{i}]"), spec, base).await?),
        });
    }
    let mut listing = source
        .files
        .walk(&source.base, !task.options.no_empty_directories)
        .await?;
    let first = listing.try_next().await?;
    let listing: Walk = Box::pin(futures::stream::iter(first.map(Ok)).chain(listing));
    Ok(SyncRun {
        ctx: Ctx {
            task,
            filters,
            source,
            dests,
            progress: Progress::default(),
            cancel: CancellationToken::new(),
        },
        listing,
    })
}

/// The destination folder a cross-agent SYNC ticket was issued for (see `SyncListDest` in
/// the proto), normalized.
pub(crate) fn dest_folder(body: &TicketBody) -> Result<String> {
    let Some(folder) = body
        .shard_hash
        .strip_prefix(common::sync::DEST_TICKET_PREFIX)
    else {
        return BadTicketSnafu {
            reason: "the ticket was not issued for a sync destination",
        }
        .fail();
    };
    task_path("destination folder", folder)
}

/// Check a cross-agent destination ticket (kind SYNC, `dest:<folder>`) and open the
/// destination it names on this agent.
pub(crate) async fn open_dest(
    secret: &Secret,
    spaces: &crate::registry::SpaceRegistry,
    ticket: Option<&Ticket>,
) -> Result<Side> {
    let body = ticket::verify(secret, ticket, Kind::Sync, common::time::now_ms())?;
    let folder = dest_folder(&body)?;
    let store = spaces
        .resolve(common::SpaceId(body.space_id), body.space_revision)
        .await?;
    Ok(dest_side(&store, body.space_id, folder))
}

/// The destination side of a cross-agent pass on this agent: `store`'s files below
/// `folder`.
pub(crate) fn dest_side(store: &SpaceStore, space_id: u64, folder: String) -> Side {
    let files = store.files();
    // The store's local root is its working dir; files address the storage root.
    let local = store
        .local_root()
        .and_then(|root| root.ancestors().nth(files.working_dir_depth()))
        .map(Path::to_path_buf);
    Side {
        files,
        base: folder,
        local,
        space_id,
    }
}

/// SyncListDest: the files below the destination folder, sorted (`FileNotFound` when
/// nothing is there).
pub(crate) async fn dest_list(side: &Side) -> Result<FileList> {
    side.files.list(&side.base).await
}

/// SyncDestOp: create directory `rel` (filesystems only; a no-op elsewhere) or delete
/// file `rel` below the destination folder. Returns whether something was done.
pub(crate) async fn dest_op(side: &Side, rel: &str, mkdir: bool) -> Result<bool> {
    let rel = files::check_path(rel, false)?;
    let full = side.full(rel);
    ensure!(
        !side.files.is_hidden(&full),
        ReservedPathSnafu {
            path: &full,
            space: side.files.label(),
        }
    );
    if mkdir {
        if !side.files.staged() {
            return Ok(false);
        }
        side.op()
            .create_dir(&format!("{full}/"))
            .await
            .context(WriteFileSnafu { path: &full })?;
        return Ok(true);
    }
    match side.op().stat(&full).await {
        Ok(meta) if meta.is_dir() => {
            return NotAFileSnafu {
                path: &full,
                space: side.files.label(),
            }
            .fail();
        }
        Ok(_) => {}
        Err(e) if files::is_missing(&e) => return Ok(false),
        Err(source) => return Err(source).context(StatFileSnafu { path: &full }),
    }
    side.op()
        .delete(&full)
        .await
        .context(DeleteFileSnafu { path: &full })?;
    debug!(path = %full, space = side.space_id, "extraneous file deleted for another agent");
    Ok(true)
}

/// SyncWriteFile after its header: write the data messages of `stream` as file
/// `header.path` below the destination folder, atomically, keeping `header.modified_ms`.
/// Nothing is written unless exactly `header.size` bytes and then `finish` arrived.
pub(crate) async fn dest_write(
    side: Side,
    header: SyncWriteHeader,
    stream: Streaming<SyncWriteRequest>,
    cancel: CancellationToken,
) -> Result<u64> {
    let rel = files::check_path(&header.path, false)?;
    let target = side.full(rel);
    side.files.check_writable(&target).await?;
    ensure!(
        !side.files.is_hidden(&target),
        ReservedPathSnafu {
            path: &target,
            space: side.files.label(),
        }
    );
    let chunks = futures::stream::try_unfold(Some(stream), |stream| async move {
        let Some(mut stream) = stream else {
            return Ok(None);
        };
        match stream.message().await.context(ReceivePutSnafu)? {
            Some(SyncWriteRequest {
                msg: Some(WriteMsg::Data(data)),
            }) => {
                ensure!(
                    data.len() <= proto::CHUNK_SIZE,
                    ChunkTooLargeSnafu {
                        size: data.len(),
                        limit: proto::CHUNK_SIZE,
                    }
                );
                Ok(Some((data, Some(stream))))
            }
            Some(SyncWriteRequest {
                msg: Some(WriteMsg::Finish(_)),
            }) => Ok(None),
            Some(_) => BadRequestSnafu {
                message: "only data and then finish may follow the header",
            }
            .fail(),
            None => StreamAbortedSnafu.fail(),
        }
    });
    // Runs as its own task so that an interrupted write (shutdown, caller gone: the guard
    // cancels it) still aborts the upload and removes its temp file.
    let cancel = cancel.child_token();
    let _cancel_on_drop = cancel.clone().drop_guard();
    let (size, mtime) = (header.size, header.modified_ms);
    tokio::spawn(async move {
        let written = copy(&side, &target, size, Box::pin(chunks), mtime, &cancel).await?;
        Ok(written)
    })
    .await
    .context(crate::error::WriterTaskSnafu)?
}

impl SyncRun {
    /// Run the pass in its own task; progress comes out of the returned stream (the last
    /// message has `done`; a pass that breaks off ends with an error status instead).
    /// Dropping the stream, or `shutdown`, cancels the pass: in-flight copies are
    /// aborted, their temp files removed, and no delete is applied any more.
    pub fn start(
        self,
        shutdown: &CancellationToken,
    ) -> ReceiverStream<Result<SyncProgress, Status>> {
        let (tx, rx) = mpsc::channel(PROGRESS_CHANNEL_CAPACITY);
        let SyncRun { mut ctx, listing } = self;
        ctx.cancel = shutdown.child_token();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let ctx = Arc::new(ctx);
            let stop = CancellationToken::new();
            let reporter = tokio::spawn(report(ctx.clone(), tx.clone(), stop.clone()));
            let end = ctx.clone().run(listing).await;
            stop.cancel();
            let _ = reporter.await;
            let end = if shutdown.is_cancelled() {
                Err(ShuttingDownSnafu.build())
            } else if ctx.cancel.is_cancelled() {
                // The caller is gone: nobody to tell.
                debug!(
                    source = ctx.source.space_id,
                    "sync pass cancelled by the caller"
                );
                return;
            } else {
                end
            };
            finish(&ctx.progress, &tx, end).await;
        });
        ReceiverStream::new(rx)
    }
}

/// Send progress every [`PROGRESS_INTERVAL`] (the first at once) until `stop`; a caller
/// that went away cancels the pass.
async fn report(
    ctx: Arc<Ctx>,
    tx: mpsc::Sender<Result<SyncProgress, Status>>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = tx.closed() => {
                ctx.cancel.cancel();
                return;
            }
            _ = tick.tick() => {}
        }
        // Errors are taken only once there is room, so none is lost.
        let permit = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            permit = tx.reserve() => match permit {
                Ok(permit) => permit,
                Err(_) => {
                    ctx.cancel.cancel();
                    return;
                }
            },
        };
        permit.send(Ok(ctx.progress.message(false)));
    }
}

/// The last messages of a pass: the remaining errors, then `done` (or the error that
/// broke the pass off).
async fn finish(
    progress: &Progress,
    tx: &mpsc::Sender<Result<SyncProgress, Status>>,
    end: Result<()>,
) {
    while progress.pending_errors() > ERRORS_PER_MESSAGE {
        if tx.send(Ok(progress.message(false))).await.is_err() {
            return;
        }
    }
    let last = match end {
        Ok(()) => Ok(progress.message(true)),
        Err(err) => {
            if progress.pending_errors() > 0 && tx.send(Ok(progress.message(false))).await.is_err()
            {
                return;
            }
            Err(Status::from(err))
        }
    };
    let _ = tx.send(last).await;
}

type Work = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Everything a pass needs, shared by its workers.
struct Ctx {
    task: TaskSpec,
    filters: Filters,
    source: Side,
    dests: Vec<Dest>,
    progress: Progress,
    cancel: CancellationToken,
}

impl Ctx {
    /// The whole pass: copy, then the extraneous deletes. `Err` only when it broke off (the
    /// source listing failed).
    async fn run(self: Arc<Self>, mut listing: Walk) -> Result<()> {
        // Diff against a destination's listing: one sorted merge per such destination.
        let mut cursors = Vec::with_capacity(self.dests.len());
        for dest in &self.dests {
            cursors.push(
                if matches!(self.task.mode, Mode::Diff { .. }) && dest.diff_by_listing() {
                    Some(match dest.listing().await {
                        Ok(list) => Cursor::new(list),
                        Err(err) => Cursor::broken(format!(
                            "list {:?} in {}: {}",
                            dest.base(),
                            dest.label(),
                            common::error::ErrorChain(&err)
                        )),
                    })
                } else {
                    None
                },
            );
        }
        let mut inflight: FuturesUnordered<Work> = FuturesUnordered::new();
        let mut listed_all = false;
        let mut broke = None;
        loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled(), if !listed_all => listed_all = true,
                Some(()) = inflight.next(), if !inflight.is_empty() => {}
                next = listing.try_next(), if !listed_all && inflight.len() < PARALLEL_FILES => {
                    match next {
                        Ok(Some(Listed::File(entry))) => {
                            self.progress.scanned.fetch_add(1, Ordering::Relaxed);
                            if self.filters.pass(&entry.path, entry.size, entry.modified_ms) {
                                let mut known = Vec::with_capacity(cursors.len());
                                for cursor in &mut cursors {
                                    known.push(match cursor {
                                        None => Known::Unknown,
                                        Some(c) => match c.seek(&entry.path, drop).await {
                                            Ok(found) => Known::Listed(found),
                                            Err(message) => Known::Failed(message),
                                        },
                                    });
                                }
                                inflight.push(Box::pin(self.clone().file(entry, known)));
                            } else {
                                self.progress.skipped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(Some(Listed::Dir(rel))) => {
                            inflight.push(Box::pin(self.clone().dir(rel)));
                        }
                        Ok(None) => listed_all = true,
                        Err(err) => {
                            listed_all = true;
                            broke = Some(err);
                        }
                    }
                }
                else => break,
            }
        }
        drop(cursors);
        if let Some(err) = broke {
            return Err(err);
        }
        if self.cancel.is_cancelled() {
            return Ok(());
        }
        if self.task.options.delete_extraneous {
            let problems = self.progress.problems.load(Ordering::Relaxed);
            if problems == 0 {
                self.delete_extraneous().await;
            } else {
                self.progress.note(format!(
                    "deleteExtraneous skipped: this run had {problems} failures"
                ));
            }
        }
        Ok(())
    }

    /// Recreate source directory `rel` on every filesystem destination (object stores have
    /// no directories).
    async fn dir(self: Arc<Self>, rel: String) {
        for dest in &self.dests {
            if self.cancel.is_cancelled() {
                continue;
            }
            let full = dest.full(&rel);
            let made = match dest {
                Dest::Direct(side) => {
                    if !side.files.staged() || side.files.is_reserved(&full) {
                        continue;
                    }
                    side.op()
                        .create_dir(&format!("{full}/"))
                        .await
                        .map_err(|e| common::error::ErrorChain(&e).to_string())
                }
                Dest::Remote(remote) => {
                    let mut client = remote.client.clone();
                    client
                        .sync_dest_op(remote.request(&rel, true))
                        .await
                        .map(drop)
                        .map_err(|s| common::error::ErrorChain(&remote.error(s)).to_string())
                }
            };
            if let Err(e) = made {
                self.progress.failed.fetch_add(1, Ordering::Relaxed);
                self.progress.error(format!(
                    "create directory {full:?} in {}: {e}",
                    dest.label(),
                ));
            }
        }
    }

    /// Sync one source file (it passed the filters) to every destination, then delete it
    /// from the source when asked and every destination holds it. `known`: what the
    /// destinations' listings say of it, one per destination.
    async fn file(self: Arc<Self>, entry: FileEntry, known: Vec<Known>) {
        let mut ok = true;
        let mut copied = false;
        // Every destination holds this file's content (as far as size tells).
        let mut held = true;
        for (dest, known) in self.dests.iter().zip(&known) {
            if self.cancel.is_cancelled() {
                ok = false;
                break;
            }
            let target = dest.full(&entry.path);
            match self.sync_to(dest, &entry, &target, known).await {
                Ok(Synced::Copied(bytes)) => {
                    copied = true;
                    self.progress.bytes.fetch_add(bytes, Ordering::Relaxed);
                }
                Ok(Synced::Current { same_size }) => held &= same_size,
                Err(err) => {
                    ok = false;
                    if !self.cancel.is_cancelled() {
                        self.progress.error(format!(
                            "copy {:?} to {:?} in {}: {}",
                            entry.full_path,
                            target,
                            dest.label(),
                            common::error::ErrorChain(&err)
                        ));
                    }
                }
            }
        }
        if ok && self.task.options.delete_source && !self.cancel.is_cancelled() {
            if !held {
                // Diff without includeSize left a destination file of another size in
                // place: it is not a copy of this one, so the source stays.
                self.progress.note(format!(
                    "source {:?} kept: a destination holds a file of another size",
                    entry.full_path
                ));
            } else if let Err(message) = self.delete_source(&entry).await {
                ok = false;
                self.progress.error(message);
            }
        }
        let counter = match (ok, copied) {
            (false, _) => &self.progress.failed,
            (true, true) => &self.progress.copied,
            (true, false) => &self.progress.skipped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// [`Ctx::sync_once`] with retries of temporary failures.
    async fn sync_to(
        &self,
        dest: &Dest,
        entry: &FileEntry,
        target: &str,
        known: &Known,
    ) -> Result<Synced> {
        let remote = match dest {
            Dest::Remote(remote) => Some(remote),
            Dest::Direct(_) => None,
        };
        if let Some(remote) = remote
            && let Some(message) = remote
                .down
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        {
            return Err(Error::RemoteAgent {
                role: "destination",
                address: remote.address.clone(),
                source: client::Error::Remote {
                    code: common::ErrorCode::Unavailable,
                    message,
                    retryable: false,
                },
            });
        }
        let mut attempt = 1;
        loop {
            match self.sync_once(dest, entry, target, known).await {
                Err(err) if attempt >= ATTEMPTS && remote.is_some() && is_unreachable(&err) => {
                    if let Some(remote) = remote {
                        *remote.down.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
                            "not tried: an earlier copy failed ({})",
                            common::error::ErrorChain(&err)
                        ));
                    }
                    return Err(err);
                }
                Err(err) if attempt < ATTEMPTS && is_temporary(&err) => {
                    let wait = RETRY_BACKOFF * 2u32.pow(attempt - 1);
                    debug!(path = %target, attempt, error = %common::error::ErrorChain(&err), "sync copy failed, retrying");
                    tokio::select! {
                        () = self.cancel.cancelled() => return Err(err),
                        () = tokio::time::sleep(wait) => {}
                    }
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Decide (Diff: from the destination's listing, or one stat of the destination file)
    /// and copy when needed.
    async fn sync_once(
        &self,
        dest: &Dest,
        entry: &FileEntry,
        target: &str,
        known: &Known,
    ) -> Result<Synced> {
        if let Dest::Direct(side) = dest {
            ensure!(
                !side.files.is_reserved(target),
                ReservedPathSnafu {
                    path: target,
                    space: side.files.label(),
                }
            );
        }
        if let Mode::Diff {
            include_size,
            include_mod_time,
        } = self.task.mode
        {
            let decided = match known {
                Known::Listed(found) => {
                    listed_current(found.as_ref(), entry, include_size, include_mod_time)
                }
                Known::Failed(message) => {
                    return BadRequestSnafu {
                        message: format!("the destination listing failed: {message}"),
                    }
                    .fail();
                }
                Known::Unknown => match dest {
                    Dest::Direct(side) => {
                        current(side, entry, target, include_size, include_mod_time).await?
                    }
                    Dest::Remote(_) => None,
                },
            };
            if let Some(current) = decided {
                return Ok(current);
            }
        }
        let side = match dest {
            Dest::Direct(side) => side,
            Dest::Remote(remote) => {
                return self.copy_remote(remote, entry).await.map(Synced::Copied);
            }
        };
        if let (Some(src_root), Some(dst_root)) = (&self.source.local, &side.local) {
            // Both ends are local directories: one blocking copy (copy_file_range) instead
            // of a streamed read and write.
            if self.cancel.is_cancelled() {
                return Err(Error::TransferInterrupted);
            }
            return copy_local(
                src_root.join(&entry.full_path),
                dst_root.join(target),
                entry.size,
                entry.modified_ms,
            )
            .await
            .map(Synced::Copied);
        }
        let (size, chunks) = self.source.files.read(&entry.full_path).await?;
        copy(side, target, size, chunks, entry.modified_ms, &self.cancel)
            .await
            .map(Synced::Copied)
    }

    /// Stream source file `entry` to the agent serving `remote` (SyncWriteFile: header,
    /// ≤ 1 MiB chunks through a bounded channel, then `finish` only once the whole file
    /// was read). Returns the bytes the destination wrote.
    async fn copy_remote(&self, remote: &Remote, entry: &FileEntry) -> Result<u64> {
        let (size, mut chunks) = self.source.files.read(&entry.full_path).await?;
        let (tx, rx) = mpsc::channel(REMOTE_WRITE_CAPACITY);
        let header = SyncWriteRequest {
            msg: Some(WriteMsg::Header(SyncWriteHeader {
                ticket: Some(remote.ticket.clone()),
                path: entry.path.clone(),
                size,
                modified_ms: entry.modified_ms,
            })),
        };
        let feed = async move {
            if tx.send(header).await.is_err() {
                return Ok(());
            }
            loop {
                let next = tokio::select! {
                    biased;
                    () = self.cancel.cancelled() => return Err(Error::TransferInterrupted),
                    next = chunks.try_next() => next?,
                };
                let Some(data) = next else { break };
                let msg = SyncWriteRequest {
                    msg: Some(WriteMsg::Data(data)),
                };
                // The call ended (its status says why).
                if tx.send(msg).await.is_err() {
                    return Ok(());
                }
            }
            let finish = SyncWriteRequest {
                msg: Some(WriteMsg::Finish(SyncWriteFinish {})),
            };
            let _ = tx.send(finish).await;
            Ok(())
        };
        let mut client = remote.client.clone();
        let call = client.sync_write_file(ReceiverStream::new(rx));
        // A failed or cancelled read drops the sender before `finish`: the destination
        // writes nothing.
        let (fed, answer) = tokio::join!(feed, call);
        fed?;
        let written = answer.map_err(|s| remote.error(s))?.into_inner().size;
        ensure!(
            written == size,
            ContentMismatchSnafu {
                path: remote_target(remote, &entry.path),
                space: &remote.label,
                detail: format!("{written} bytes written, expected {size}"),
            }
        );
        Ok(size)
    }

    /// Delete a source file whose copies are all in place, unless it changed since it was
    /// listed (size, or mtime at second granularity). `Err`: the message to report.
    async fn delete_source(&self, entry: &FileEntry) -> Result<(), String> {
        let op = self.source.op();
        let path = &entry.full_path;
        let label = self.source.files.label();
        let meta = op.stat(path).await.map_err(|e| {
            format!(
                "delete source {path:?} in {label}: {}",
                common::error::ErrorChain(&e)
            )
        })?;
        let same = meta.content_length() == entry.size
            && modified_ms(&meta).map(secs) == Some(secs(entry.modified_ms));
        if !same {
            return Err(format!(
                "delete source {path:?} in {label}: it changed during the run; kept"
            ));
        }
        op.delete(path).await.map_err(|e| {
            format!(
                "delete source {path:?} in {label}: {}",
                common::error::ErrorChain(&e)
            )
        })
    }

    /// Delete the files of every destination tree whose path is not in the source tree
    /// and that pass the filters, at most `maxDelete` in total. Bounded memory: the source
    /// and each destination are listed again, both in byte order of their paths, and
    /// merged.
    async fn delete_extraneous(&self) {
        let mut budget = self.task.options.max_delete;
        for dest in &self.dests {
            let mut walk = match dest.listing().await {
                Ok(Some(walk)) => walk,
                Ok(None) => continue,
                Err(err) => {
                    self.progress.error(format!(
                        "list {:?} in {} for deleteExtraneous: {}",
                        dest.base(),
                        dest.label(),
                        common::error::ErrorChain(&err)
                    ));
                    continue;
                }
            };
            let mut source = match self.source.files.list(&self.source.base).await {
                Ok(list) => Cursor::new(Some(list)),
                Err(err) => {
                    self.progress.error(format!(
                        "list {:?} in {} for deleteExtraneous: {}",
                        self.source.base,
                        self.source.files.label(),
                        common::error::ErrorChain(&err)
                    ));
                    return;
                }
            };
            loop {
                if self.cancel.is_cancelled() {
                    return;
                }
                let entry = match walk.try_next().await {
                    Ok(Some(entry)) => entry,
                    Ok(None) => break,
                    Err(err) => {
                        self.progress.error(format!(
                            "list {:?} in {} for deleteExtraneous: {}",
                            dest.base(),
                            dest.label(),
                            common::error::ErrorChain(&err)
                        ));
                        break;
                    }
                };
                // The tree path names a file, not a directory: nothing is extraneous.
                if entry.full_path == dest.base() {
                    continue;
                }
                match source.seek(&entry.path, drop).await {
                    Ok(Some(_)) => continue,
                    Ok(None) => {}
                    Err(message) => {
                        self.progress.error(format!(
                            "list {:?} in {} for deleteExtraneous: {message}",
                            self.source.base,
                            self.source.files.label(),
                        ));
                        return;
                    }
                }
                let mtime = match self.recorded_mtime_for_filters(dest, &entry).await {
                    Ok(mtime) => mtime,
                    Err(err) => {
                        self.progress.error(format!(
                            "stat {:?} in {}: {}",
                            entry.full_path,
                            dest.label(),
                            common::error::ErrorChain(&err)
                        ));
                        continue;
                    }
                };
                if !self.filters.pass(&entry.path, entry.size, mtime) {
                    continue;
                }
                if budget == 0 {
                    self.progress.note(format!(
                        "maxDelete ({}) reached: further extraneous files were kept",
                        self.task.options.max_delete
                    ));
                    return;
                }
                budget -= 1;
                let deleted = match dest {
                    Dest::Direct(side) => {
                        side.op()
                            .delete(&entry.full_path)
                            .await
                            .context(DeleteFileSnafu {
                                path: &entry.full_path,
                            })
                    }
                    Dest::Remote(remote) => {
                        let mut client = remote.client.clone();
                        client
                            .sync_dest_op(remote.request(&entry.path, false))
                            .await
                            .map(drop)
                            .map_err(|s| remote.error(s))
                    }
                };
                match deleted {
                    Ok(()) => {
                        self.progress.deleted.fetch_add(1, Ordering::Relaxed);
                        debug!(path = %entry.full_path, space = %dest.label(), "extraneous file deleted");
                    }
                    Err(err) => self.progress.error(format!(
                        "delete extraneous {:?} in {}: {}",
                        entry.full_path,
                        dest.label(),
                        common::error::ErrorChain(&err)
                    )),
                }
            }
        }
    }

    /// The source mtime a destination file records, for the ModTime filter (only asked
    /// when there is one): its `jcs-mtime` on object stores (one stat), else its mtime.
    async fn recorded_mtime_for_filters(&self, dest: &Dest, entry: &FileEntry) -> Result<i64> {
        let side = match dest {
            Dest::Direct(side) if self.filters.has_mod_time() && side.has_user_metadata() => side,
            _ => return Ok(entry.modified_ms),
        };
        let meta = side
            .op()
            .stat(&entry.full_path)
            .await
            .context(StatFileSnafu {
                path: &entry.full_path,
            })?;
        Ok(recorded_mtime(&meta).unwrap_or(entry.modified_ms))
    }
}

/// How messages name file `rel` of a remote destination.
fn remote_target(remote: &Remote, rel: &str) -> String {
    if remote.base.is_empty() {
        rel.to_owned()
    } else {
        format!("{}/{rel}", remote.base)
    }
}

/// Diff from a listing (a filesystem destination: the copy set the file's mtime): `Some`
/// when `found` is current for `entry`, `None` when it must be copied.
fn listed_current(
    found: Option<&FileEntry>,
    entry: &FileEntry,
    include_size: bool,
    include_mod_time: bool,
) -> Option<Synced> {
    let found = found?;
    let same_size = found.size == entry.size;
    if include_size && !same_size {
        return None;
    }
    if include_mod_time && secs(found.modified_ms) != secs(entry.modified_ms) {
        return None;
    }
    Some(Synced::Current { same_size })
}

/// The source mtime recorded as user metadata on an object.
fn recorded_mtime(meta: &opendal::Metadata) -> Option<i64> {
    meta.user_metadata()?.get(MTIME_KEY)?.trim().parse().ok()
}

/// What became of one file at one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Synced {
    /// Copied, this many bytes.
    Copied(u64),
    /// Up to date by the mode's rules; `same_size`: the destination file has the source's
    /// size (required before `deleteSource` removes the source).
    Current { same_size: bool },
}

/// Diff mode: `Some` when `target` of `dest` is current for `entry` (one stat), `None`
/// when it must be copied: missing, or differing in an included attribute.
async fn current(
    dest: &Side,
    entry: &FileEntry,
    target: &str,
    include_size: bool,
    include_mod_time: bool,
) -> Result<Option<Synced>> {
    let meta = match dest.op().stat(target).await {
        Ok(meta) => meta,
        Err(e) if files::is_missing(&e) => return Ok(None),
        Err(source) => return Err(source).context(StatFileSnafu { path: target }),
    };
    ensure!(
        !meta.is_dir(),
        NotAFileSnafu {
            path: target,
            space: dest.files.label(),
        }
    );
    let same_size = meta.content_length() == entry.size;
    if include_size && !same_size {
        return Ok(None);
    }
    if include_mod_time {
        let src = secs(entry.modified_ms);
        let same = if dest.files.staged() {
            // fs: the copy got the source's mtime.
            modified_ms(&meta).map(secs) == Some(src)
        } else if dest.has_user_metadata() {
            recorded_mtime(&meta).map(secs) == Some(src)
        } else {
            // No user metadata: a copy made after the source's last change is current.
            modified_ms(&meta).is_some_and(|m| secs(m) >= src)
        };
        if !same {
            return Ok(None);
        }
    }
    Ok(Some(Synced::Current { same_size }))
}

/// Copy `size` bytes of `chunks` to `target` of `dest` atomically (fs: `.jcs-tmp-<uuid>`
/// next to it, then rename; object stores: the key, visible when the upload completes),
/// keeping `mtime_ms` (fs: the file's mtime; object stores: `jcs-mtime` user metadata).
/// The written size is checked (bytes streamed, then a stat). Returns the bytes copied.
async fn copy(
    dest: &Side,
    target: &str,
    size: u64,
    mut chunks: FileStream,
    mtime_ms: i64,
    cancel: &CancellationToken,
) -> Result<u64> {
    let op = dest.op();
    let staged = dest.files.staged();
    let write_to = if staged {
        let tmp = format!("{TMP_PREFIX}{}", uuid::Uuid::new_v4());
        match target.rsplit_once('/') {
            Some((parent, _)) => format!("{parent}/{tmp}"),
            None => tmp,
        }
    } else {
        target.to_owned()
    };
    let keep_mtime = mtime_ms != 0;
    let writer = if keep_mtime && dest.has_user_metadata() {
        op.writer_with(&write_to)
            .user_metadata([(MTIME_KEY.to_owned(), mtime_ms.to_string())])
            .await
    } else {
        op.writer(&write_to).await
    };
    let mut writer = writer.context(WriteFileSnafu { path: target })?;
    let mismatch = |detail: String| {
        ContentMismatchSnafu {
            path: target,
            space: dest.files.label(),
            detail,
        }
        .build()
    };
    let streamed = async {
        let mut written = 0u64;
        loop {
            let next = tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(Error::TransferInterrupted),
                next = chunks.try_next() => next?,
            };
            let Some(data) = next else { break };
            written += data.len() as u64;
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(Error::TransferInterrupted),
                wrote = writer.write(data) => wrote.context(WriteFileSnafu { path: target })?,
            }
        }
        ensure!(
            written == size,
            ContentMismatchSnafu {
                path: target,
                space: dest.files.label(),
                detail: format!("{written} bytes read, expected {size}"),
            }
        );
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(Error::TransferInterrupted),
            closed = writer.close() => closed.map(drop).context(WriteFileSnafu { path: target }),
        }
    }
    .await;
    if let Err(err) = streamed {
        // Object stores: drop the multipart upload (the fs writer cannot abort).
        if let Err(e) = writer.abort().await {
            debug!(path = %write_to, error = %e, "failed to abort sync write");
        }
        if staged {
            remove_temp(op, &write_to).await;
        }
        return Err(err);
    }
    let placed = async {
        let meta = op
            .stat(&write_to)
            .await
            .context(WriteFileSnafu { path: target })?;
        if meta.content_length() != size {
            return Err(mismatch(format!(
                "{} bytes stored, expected {size}",
                meta.content_length()
            )));
        }
        if staged {
            if keep_mtime && let Some(local) = &dest.local {
                set_mtime(local.join(&write_to), mtime_ms).await?;
            }
            op.rename(&write_to, target)
                .await
                .context(WriteFileSnafu { path: target })?;
        }
        Ok(())
    }
    .await;
    if let Err(err) = placed {
        if staged {
            remove_temp(op, &write_to).await;
        } else if matches!(err, Error::ContentMismatch { .. }) {
            // A wrong object is already visible: remove it so the next run copies again.
            let _ = op.delete(&write_to).await;
        }
        return Err(err);
    }
    debug!(path = %target, space = dest.space_id, size, "file synced");
    Ok(size)
}

/// Copy local file `from` to `to` atomically (a `.jcs-tmp-<uuid>` sibling, size checked,
/// mtime set, then renamed over `to`), on the blocking pool. Returns the bytes copied.
async fn copy_local(from: PathBuf, to: PathBuf, size: u64, mtime_ms: i64) -> Result<u64> {
    tokio::task::spawn_blocking(move || {
        let parent = to.parent().map(Path::to_path_buf).unwrap_or_default();
        let tmp = parent.join(format!("{TMP_PREFIX}{}", uuid::Uuid::new_v4()));
        let fail = |source: std::io::Error| Error::CopyLocal {
            from: from.clone(),
            to: to.clone(),
            source,
        };
        std::fs::create_dir_all(&parent).map_err(fail)?;
        let result = (|| {
            // One handle for the copy and the mtime (`io::copy` between files uses
            // copy_file_range on Linux): no second open of the temporary file.
            let mut source = std::fs::File::open(&from)?;
            let mut out = std::fs::File::options()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            let copied = std::io::copy(&mut source, &mut out)?;
            if copied != size {
                return Err(std::io::Error::other(format!(
                    "{copied} bytes copied, expected {size} (the source changed)"
                )));
            }
            if mtime_ms != 0 {
                out.set_modified(system_time(mtime_ms))?;
            }
            drop(out);
            std::fs::rename(&tmp, &to)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(fail(e));
        }
        Ok(size)
    })
    .await
    .context(SetModifiedTaskSnafu)?
}

async fn remove_temp(op: &opendal::Operator, path: &str) {
    if let Err(e) = op.delete(path).await {
        warn!(path, error = %e, "failed to remove sync temp file");
    }
}

/// Set the mtime of local file `path` to `ms` (blocking pool).
async fn set_mtime(path: PathBuf, ms: i64) -> Result<()> {
    let at = path.clone();
    tokio::task::spawn_blocking(move || {
        std::fs::File::options()
            .write(true)
            .open(&at)?
            .set_modified(system_time(ms))
    })
    .await
    .context(SetModifiedTaskSnafu)?
    .context(SetModifiedSnafu { path })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(json: serde_json::Value) -> Filters {
        let parsed: Vec<Filter> = serde_json::from_value(json).unwrap();
        Filters::compile(&parsed).unwrap()
    }

    #[test]
    fn size_bounds_are_inclusive() {
        let f = filters(serde_json::json!([{"type": "Size", "minSize": 10, "maxSize": 20}]));
        assert!(!f.pass("a", 9, 0));
        assert!(f.pass("a", 10, 0));
        assert!(f.pass("a", 20, 0));
        assert!(!f.pass("a", 21, 0));
    }

    #[test]
    fn extensions_ignore_case_and_dots() {
        let f = filters(serde_json::json!([
            {"type": "Extension", "include": ["JPG", ".png"], "exclude": []}
        ]));
        assert!(f.pass("d/x.jpg", 1, 0));
        assert!(f.pass("x.PNG", 1, 0));
        assert!(!f.pass("x.gif", 1, 0));
        assert!(!f.pass("jpg", 1, 0));
        assert!(!f.pass(".jpg", 1, 0));
        assert!(!f.pass("d.jpg/x", 1, 0));
        let f = filters(serde_json::json!([{"type": "Extension", "exclude": ["tmp"]}]));
        assert!(f.pass("x.txt", 1, 0));
        assert!(f.pass("noext", 1, 0));
        assert!(!f.pass("a/b.TMP", 1, 0));
        assert_eq!(extension_of("a.tar.gz").as_deref(), Some("gz"));
    }

    #[test]
    fn path_globs_stop_at_slashes_unless_double_star() {
        let f = filters(serde_json::json!([
            {"type": "Path", "include": ["*.txt", "docs/**"], "exclude": ["**/secret*"]}
        ]));
        assert!(f.pass("a.txt", 1, 0));
        assert!(!f.pass("d/a.txt", 1, 0));
        assert!(f.pass("docs/x/y.bin", 1, 0));
        assert!(!f.pass("docs/x/secret.bin", 1, 0));
        assert!(!f.pass("secret.txt", 1, 0));
        let f = filters(serde_json::json!([{"type": "Path", "include": ["**/*.log"]}]));
        assert!(f.pass("a.log", 1, 0) && f.pass("x/y/a.log", 1, 0));
        assert!(!f.pass("a.log.1", 1, 0));
        let bad: Vec<Filter> =
            serde_json::from_value(serde_json::json!([{"type": "Path", "include": ["a[b"]}]))
                .unwrap();
        let err = Filters::compile(&bad).unwrap_err();
        assert!(err.to_string().contains("filters[0]"), "{err}");
    }

    #[test]
    fn mod_time_bounds_are_inclusive() {
        let f = filters(serde_json::json!([{
            "type": "ModTime", "after": "2024-01-01T00:00:00Z", "before": "2024-01-02T00:00:00Z"
        }]));
        let day = 1_704_067_200_000;
        assert!(!f.pass("a", 1, day - 1));
        assert!(f.pass("a", 1, day));
        assert!(f.pass("a", 1, day + 86_400_000));
        assert!(!f.pass("a", 1, day + 86_400_001));
        assert!(f.has_mod_time());
    }

    #[test]
    fn all_filters_must_pass() {
        let f = filters(serde_json::json!([
            {"type": "Size", "maxSize": 5},
            {"type": "Extension", "include": ["txt"]}
        ]));
        assert!(f.pass("a.txt", 5, 0));
        assert!(!f.pass("a.txt", 6, 0));
        assert!(!f.pass("a.bin", 5, 0));
    }

    #[test]
    fn progress_sends_a_few_errors_at_a_time() {
        let p = Progress::default();
        for i in 0..(MAX_PENDING_ERRORS + 3) {
            p.error(format!("e{i}"));
        }
        p.note("x".repeat(MAX_ERROR_LEN + 10));
        assert_eq!(
            p.problems.load(Ordering::Relaxed),
            MAX_PENDING_ERRORS as u64 + 3
        );
        let mut all = Vec::new();
        loop {
            let m = p.message(false);
            assert!(m.errors.len() <= ERRORS_PER_MESSAGE);
            if m.errors.is_empty() {
                break;
            }
            all.extend(m.errors);
        }
        assert_eq!(all.len(), MAX_PENDING_ERRORS + 1);
        assert_eq!(all[0], "e0");
        assert_eq!(all.last().unwrap(), "4 more errors were not reported");
    }

    #[test]
    fn times_round_to_seconds_and_back() {
        assert_eq!(secs(1999), 1);
        assert_eq!(secs(-1), -1);
        assert_eq!(unix_ms(system_time(1_234_567)), 1_234_567);
        assert_eq!(unix_ms(system_time(-1500)), -1500);
    }
}
