//! Content-addressed shard store of one user space, over an opendal operator of any
//! backend (local filesystem, S3, OBS, OSS, COS).
//!
//! Layout under the space's root (its working dir), the same on every backend:
//! - `shards/<hash[0..2]>/<hash>`: shard bytes; `hash` is the lower-case hex SHA-256.
//! - `tmp/<uuid>`: uploads in progress; moved into `shards/` once complete, removed on
//!   any failure, and swept when a store opens when left over by a crash.
//!
//! A shard's modification time is the last time a put or concat produced its content
//! ("finalize", see [`SpaceStore::finalize`]). Garbage collection deletes a shard only when
//! that time is before its cutoff, and finalize and delete of one hash are serialized by
//! [`ShardLocks`], so a shard a put or concat has just returned cannot be deleted by a GC
//! pass that started before it.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex as SyncMutex, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::SpaceId;
use common::shard_hash::{self, Algorithm, Hasher};
use futures::{Stream, StreamExt, TryStreamExt};
use snafu::{ResultExt, ensure};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::{
    BadRequestSnafu, DeleteShardSnafu, Error, HashChunkSnafu, InvalidShardHashSnafu,
    ListShardsSnafu, OpenSpaceSnafu, RangeOutOfBoundsSnafu, ReadLocalShardSnafu, ReadShardSnafu,
    ReaderTaskSnafu, Result, ShardNotFoundSnafu, ShardTooLargeSnafu, ShardTruncatedSnafu,
    SpaceFullSnafu, SpacePathSnafu, StreamAbortedSnafu, TouchShardSnafu, WriteLocalShardSnafu,
    WriteShardSnafu, WriterTaskSnafu,
};
use crate::files::FileRoot;

/// Most small shards of one `PutSmallShards` call stored at the same time (on a local
/// store, one blocking-pool thread each).
pub const SMALL_SHARD_SYNCS: usize = 32;

/// Chunks at least this large are hashed on the blocking pool; smaller ones inline
/// (64 KiB hash in about 30 µs, well inside the runtime's budget).
const INLINE_HASH_LIMIT: usize = 64 * 1024;

/// Object stores report modification times in whole seconds (HTTP dates): the real time
/// may be up to this much later than the one reported, so GC keeps such shards this much
/// longer.
const COARSE_MTIME_SLACK_MS: i64 = 999;

/// Temp files older than this are leftovers of a crash and removed by [`SpaceStore::sweep_tmp`].
pub const TMP_MAX_AGE: Duration = Duration::from_secs(10 * 60);

/// One message of a put stream. Only [`PutItem::Finish`] makes the shard durable: a stream
/// that ends without it is an aborted upload.
#[derive(Debug, Clone)]
pub enum PutItem {
    /// The next bytes of the shard.
    Data(Bytes),
    /// All bytes were sent; store the shard.
    Finish,
}

/// What a completed put stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Number of bytes received.
    pub size: u64,
    /// The shard's name: its content address (common::shard_hash), SHA-256 or BLAKE3 as
    /// the put asked.
    pub hash: String,
}

/// One shard found by [`SpaceStore::list_shards`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardEntry {
    /// The shard's name (common::shard_hash).
    pub hash: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (last write or dedup touch), Unix ms; 0 when the backend reports
    /// none.
    pub modified_ms: i64,
}

/// A stream of shard bytes, each chunk at most [`proto::CHUNK_SIZE`] bytes.
pub type ShardStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send + 'static>>;

/// A stream of the shards of a space, in no particular order.
pub type ShardList = Pin<Box<dyn Stream<Item = Result<ShardEntry>> + Send + 'static>>;

/// Number of lock stripes of [`ShardLocks`].
const LOCK_STRIPES: usize = 64;

/// Striped per-hash locks serializing the short "finalize" step of a put or concat
/// (rename-or-touch) with the "check mtime, then delete" step of a delete. Held only around
/// those steps, never while bytes stream.
pub struct ShardLocks {
    stripes: [Mutex<()>; LOCK_STRIPES],
}

impl ShardLocks {
    fn new() -> ShardLocks {
        ShardLocks {
            stripes: std::array::from_fn(|_| Mutex::new(())),
        }
    }

    /// The lock of `hash` (a valid hash: its first byte picks the stripe).
    fn of(&self, hash: &str) -> &Mutex<()> {
        let byte = u8::from_str_radix(hash.get(..2).unwrap_or("00"), 16).unwrap_or(0);
        &self.stripes[usize::from(byte) % LOCK_STRIPES]
    }
}

impl std::fmt::Debug for ShardLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardLocks")
            .field("stripes", &LOCK_STRIPES)
            .finish()
    }
}

/// How a complete temp file becomes `shards/<hh>/<hash>` on a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Finalize {
    /// Local filesystem: rename into place; a dedup sets the existing shard's mtime with
    /// `std::fs` under `root` (the operator's root directory).
    Rename { root: PathBuf },
    /// Object stores (no rename): server-side copy into place, then delete the temp object.
    /// The copy also refreshes the mtime, so a dedup is the same copy.
    Copy,
    /// Neither rename nor copy: stream the temp file into place, then delete it. Holds the
    /// shard lock while streaming (no backend JCS configures needs it).
    Rewrite,
}

/// What a space allows besides storing shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// False for a space without a shard store: the service refuses puts and concats.
    pub stores_shards: bool,
    /// Most bytes of shards the space may hold; 0 = unlimited.
    pub max_size: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            stores_shards: true,
            max_size: 0,
        }
    }
}

/// State of one storage location, shared by every store over it (a store replaced by a
/// newer revision of its space, a declared and an API space on one directory).
#[derive(Debug)]
struct Shared {
    locks: ShardLocks,
    /// Bytes of shards stored, once counted (see [`SpaceStore::usage`]).
    usage: tokio::sync::OnceCell<SyncMutex<u64>>,
}

/// Handle on the shared state of one storage location (see [`Locations`]).
#[derive(Debug, Clone)]
pub struct SharedState(Arc<Shared>);

impl Default for SharedState {
    fn default() -> Self {
        SharedState(Arc::new(Shared {
            locks: ShardLocks::new(),
            usage: tokio::sync::OnceCell::new(),
        }))
    }
}

/// The shared state of every storage location in use, by location key
/// ([`crate::backend::location_key`]). Stores on one location must share it, or a GC delete
/// could race a finalize (two lock sets) and usage would be counted twice. Entries go away
/// with their last store. Cheap to clone; clones share the table.
#[derive(Debug, Clone, Default)]
pub struct Locations {
    inner: Arc<SyncMutex<HashMap<String, Weak<Shared>>>>,
}

impl Locations {
    /// The state of location `key`, created on first use.
    pub fn get(&self, key: &str) -> SharedState {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, shared| shared.strong_count() > 0);
        if let Some(shared) = map.get(key).and_then(Weak::upgrade) {
            return SharedState(shared);
        }
        let state = SharedState::default();
        map.insert(key.to_owned(), Arc::downgrade(&state.0));
        state
    }
}

/// Shard store of one user space. Cheap to clone; clones share the shard locks and the
/// usage counter.
#[derive(Clone, Debug)]
pub struct SpaceStore {
    name: String,
    id: Option<SpaceId>,
    op: opendal::Operator,
    local_root: Option<PathBuf>,
    finalize: Finalize,
    options: StoreOptions,
    shared: Arc<Shared>,
    /// The storage root without the working dir (package import/export).
    files: Arc<FileRoot>,
}

impl SpaceStore {
    /// Open (and create when missing) the space directory at `root`, with state of its own.
    pub fn open_local(name: &str, root: &Path) -> Result<SpaceStore> {
        SpaceStore::open_local_in(name, root, &Locations::default())
    }

    /// Open (and create when missing) the space directory at `root`, sharing the state of
    /// that location in `locations`. Blocking (the fs builder creates the directory).
    pub fn open_local_in(name: &str, root: &Path, locations: &Locations) -> Result<SpaceStore> {
        let root = std::path::absolute(root).map_err(|e| {
            SpacePathSnafu {
                name,
                path: root.to_owned(),
                reason: e.to_string(),
            }
            .build()
        })?;
        let root_str = root.to_str().ok_or_else(|| {
            SpacePathSnafu {
                name,
                path: root.clone(),
                reason: "not valid UTF-8",
            }
            .build()
        })?;
        // The fs builder creates the root directory when it is missing.
        let op = opendal::Operator::new(opendal::services::Fs::default().root(root_str))
            .context(OpenSpaceSnafu { name })?;
        let shared = locations.get(&crate::backend::local_key(&root));
        Ok(SpaceStore::new(
            name,
            op,
            Some(root),
            StoreOptions::default(),
            shared,
        ))
    }

    /// A store over `op`. `local_root` is the directory of an fs operator (it enables
    /// rename + touch); otherwise temp files are copied into place when the backend copies,
    /// else rewritten.
    pub fn new(
        name: &str,
        op: opendal::Operator,
        local_root: Option<PathBuf>,
        options: StoreOptions,
        shared: SharedState,
    ) -> SpaceStore {
        let info = op.info();
        let cap = info.capability();
        let finalize = match &local_root {
            Some(root) if cap.rename && info.scheme() == "fs" => {
                Finalize::Rename { root: root.clone() }
            }
            _ if cap.copy => Finalize::Copy,
            _ => Finalize::Rewrite,
        };
        SpaceStore {
            name: name.to_owned(),
            id: None,
            files: Arc::new(FileRoot::new(op.clone(), "")),
            op,
            local_root,
            finalize,
            options,
            shared: shared.0,
        }
    }

    /// The same store, whose files (ListFiles / ImportFile / ExportFile) are those of
    /// `files` rather than of the store's own root. Needed when the store's root is a
    /// working dir inside the storage; a store built by [`SpaceStore::new`] treats its
    /// root as the storage root (declared `Local` spaces: the configured directory).
    pub fn with_files(mut self, files: FileRoot) -> SpaceStore {
        self.files = Arc::new(files);
        self
    }

    /// The plain files of the space's storage (root without the working dir), named like
    /// the space in messages.
    pub fn files(&self) -> FileRoot {
        FileRoot::clone(&self.files).with_label(self.label())
    }

    /// The same store, known by space id `id` (used in messages).
    pub fn with_id(mut self, id: SpaceId) -> SpaceStore {
        self.id = Some(id);
        self
    }

    /// Name of the space (from the config or the coordinator).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How messages name the space: `user space <id>` (or `<name>` before an id is known).
    pub fn label(&self) -> String {
        match self.id {
            Some(id) => format!("user space {id}"),
            None => format!("user space {}", self.name),
        }
    }

    /// Directory of the space on this machine, for `Local` spaces.
    pub fn local_root(&self) -> Option<&Path> {
        self.local_root.as_deref()
    }

    /// Whether the space has a shard store (puts and concats are allowed).
    pub fn stores_shards(&self) -> bool {
        self.options.stores_shards
    }

    /// Most bytes of shards the space may hold; 0 = unlimited.
    pub fn max_size(&self) -> u64 {
        self.options.max_size
    }

    /// Opendal scheme of the backend (`fs`, `s3`, …).
    pub fn scheme(&self) -> &'static str {
        self.op.info().scheme()
    }

    /// Write one shard from `chunks`, named by `algorithm` (common::shard_hash), refusing
    /// more than `max_size` bytes (`ShardTooLarge`). The bytes go to a temp file while being
    /// hashed; on [`PutItem::Finish`] the temp file becomes `shards/<d[0..2]>/<name>` (or is
    /// dropped when that shard already exists) and the shard's mtime is set to now. On any
    /// error, or when `chunks` ends without `Finish`, the temp file is removed and nothing
    /// appears under `shards/`. On a local store, a shard of one chunk (the first item is
    /// data, the second `Finish`) is written and finalized by [`SpaceStore::put_small`] in
    /// one blocking-pool hop; longer streams are written with `std::fs`
    /// ([`SpaceStore::write_shard`]).
    pub async fn put<S>(
        &self,
        mut chunks: S,
        max_size: Option<u64>,
        algorithm: Algorithm,
    ) -> Result<Stored>
    where
        S: Stream<Item = PutItem> + Unpin + Send,
    {
        if !matches!(self.finalize, Finalize::Rename { .. }) {
            return self.write_shard(chunks.map(Ok), max_size, algorithm).await;
        }
        let first = match chunks.next().await {
            Some(PutItem::Data(data)) => data,
            Some(PutItem::Finish) => {
                return self.put_small(Bytes::new(), max_size, algorithm).await;
            }
            None => return StreamAbortedSnafu.fail(),
        };
        if let Some(max_size) = max_size {
            ensure!(
                first.len() as u64 <= max_size,
                ShardTooLargeSnafu { max_size }
            );
        }
        match chunks.next().await {
            Some(PutItem::Finish) => self.put_small(first, max_size, algorithm).await,
            None => StreamAbortedSnafu.fail(),
            Some(second) => {
                let head = futures::stream::iter([PutItem::Data(first), second]);
                self.write_shard(head.chain(chunks).map(Ok), max_size, algorithm)
                    .await
            }
        }
    }

    /// Store `data` (one chunk, ≤ [`proto::CHUNK_SIZE`] bytes, or more: it is written as
    /// it is) as a shard, with the guarantees of [`SpaceStore::put`]. On a local store the
    /// hash, the temp file (written and synced), and the finalize (under the shard lock:
    /// rename, or touch of an existing shard) all run in one blocking-pool task; the temp
    /// file is removed on any error, also when the caller goes away meanwhile. Other
    /// backends go through the operator.
    pub async fn put_small(
        &self,
        data: Bytes,
        max_size: Option<u64>,
        algorithm: Algorithm,
    ) -> Result<Stored> {
        if let Some(max_size) = max_size {
            ensure!(
                data.len() as u64 <= max_size,
                ShardTooLargeSnafu { max_size }
            );
        }
        let Finalize::Rename { root } = &self.finalize else {
            let items = futures::stream::iter([PutItem::Data(data), PutItem::Finish]);
            return self.write_shard(items.map(Ok), max_size, algorithm).await;
        };
        // Counted (a listing, the first time) before the blocking task takes the lock.
        self.usage().await?;
        let store = self.clone();
        let root = root.clone();
        tokio::task::spawn_blocking(move || store.put_small_blocking(&root, &data, algorithm))
            .await
            .context(WriterTaskSnafu)?
    }

    /// The blocking part of [`SpaceStore::put_small`] on a local store rooted at `root`:
    /// hash; when the shard is already stored, refresh it and write nothing; else write a
    /// temp file, sync it (its bytes are durable before its name points at them), finalize
    /// it, then sync the directories that got a new entry. The temp file is removed on any
    /// error.
    fn put_small_blocking(&self, root: &Path, data: &[u8], algorithm: Algorithm) -> Result<Stored> {
        use std::io::Write as _;
        let space = self.name.as_str();
        let stored = Stored {
            size: data.len() as u64,
            hash: shard_hash::name_of(algorithm, data),
        };
        let hash = stored.hash.as_str();
        let touched = {
            let _guard = self.shared.locks.of(hash).blocking_lock();
            touch_if_stored(space, &local_shard_path(root, hash), hash)?
        };
        if touched {
            debug!(space, hash, "shard already stored; touched");
            return Ok(stored);
        }
        let tmp = root.join("tmp").join(uuid::Uuid::new_v4().to_string());
        let placed = new_temp_file(&tmp)
            .and_then(|mut file| {
                file.write_all(data)?;
                file.sync_all()
            })
            .context(WriteLocalShardSnafu { space })
            .and_then(|()| self.finalize_blocking(root, &tmp, hash, stored.size));
        let placed = match placed {
            Ok(placed) => placed,
            Err(e) => {
                remove_tmp(space, &tmp);
                return Err(e);
            }
        };
        for dir in placed.dirs_to_sync(root, hash) {
            sync_dir(&dir).context(WriteLocalShardSnafu { space })?;
        }
        Ok(stored)
    }

    /// [`SpaceStore::finalize`] of a local store, on a blocking-pool thread: under the
    /// hash's lock, touch the shard when it exists (then remove `tmp`), else reserve its
    /// size and rename `tmp` into place. The rename is durable only once the caller has
    /// synced [`Placed::dirs_to_sync`].
    fn finalize_blocking(&self, root: &Path, tmp: &Path, hash: &str, size: u64) -> Result<Placed> {
        let space = self.name.as_str();
        let path = local_shard_path(root, hash);
        let placed = {
            let _guard = self.shared.locks.of(hash).blocking_lock();
            if touch_if_stored(space, &path, hash)? {
                Placed::Touched
            } else {
                let usage = self.shared.usage.get();
                self.reserve(usage, size)?;
                let mut new_dir = false;
                let moved = std::fs::rename(tmp, &path).or_else(|e| {
                    let parent = path.parent();
                    match parent {
                        Some(parent) if e.kind() == std::io::ErrorKind::NotFound => {
                            std::fs::create_dir_all(parent)?;
                            new_dir = true;
                            std::fs::rename(tmp, &path)
                        }
                        _ => Err(e),
                    }
                });
                if let Err(source) = moved {
                    release(usage, size);
                    return Err(source).context(WriteLocalShardSnafu { space });
                }
                Placed::Renamed { new_dir }
            }
        };
        if placed == Placed::Touched {
            debug!(space, hash, "shard already stored; touched");
            remove_tmp(space, tmp);
        }
        Ok(placed)
    }

    /// Write one new shard that is the concatenation of the stored shards `sources`, in
    /// order (duplicates allowed), through the same path as [`SpaceStore::put`]. Each
    /// source is read ≤ [`proto::CHUNK_SIZE`] bytes at a time.
    ///
    /// Checked before anything is written: `sources` is not empty (`BadRequest`), every
    /// hash is valid (`InvalidShardHash`), every source exists (`ShardNotFound` naming the
    /// first missing one) and the total fits `max_size` (`ShardTooLarge`). `max_size` is
    /// enforced again while streaming. When `cancel` fires the concat stops with
    /// `Interrupted`; on any error the temp file is removed.
    pub async fn concat(
        &self,
        sources: &[String],
        max_size: Option<u64>,
        cancel: &CancellationToken,
    ) -> Result<Stored> {
        ensure!(
            !sources.is_empty(),
            BadRequestSnafu {
                message: "concat needs at least one source shard",
            }
        );
        for hash in sources {
            check_hash(hash)?;
        }
        let mut sizes: HashMap<&str, u64> = HashMap::new();
        let mut total = 0u64;
        for hash in sources {
            let size = match sizes.get(hash.as_str()) {
                Some(size) => *size,
                None => {
                    let size = self
                        .stat(hash)
                        .await?
                        .ok_or_else(|| ShardNotFoundSnafu { hash }.build())?;
                    sizes.insert(hash, size);
                    size
                }
            };
            total = total.saturating_add(size);
        }
        if let Some(max_size) = max_size {
            ensure!(total <= max_size, ShardTooLargeSnafu { max_size });
        }

        let state = ConcatState {
            store: self.clone(),
            sources: sources.iter().cloned().collect(),
            current: None,
        };
        let data = futures::stream::try_unfold(state, concat_next)
            .map_ok(PutItem::Data)
            .chain(futures::stream::once(async { Ok(PutItem::Finish) }));
        // The writer stops at `Finish`, so the never-ending cancel arm is not waited for.
        let interrupted = futures::stream::once(cancel.clone().cancelled_owned())
            .map(|()| Err(Error::Interrupted));
        let items = futures::stream::select(data, interrupted);
        self.write_shard(Box::pin(items), max_size, Algorithm::Sha256)
            .await
    }

    /// Stream `items` into a temp file, then finalize it as a shard; removes the temp file
    /// on any error. Local stores write the file with `std::fs` (`write_local`), other
    /// backends through the operator's writer.
    async fn write_shard<S>(
        &self,
        items: S,
        max_size: Option<u64>,
        algorithm: Algorithm,
    ) -> Result<Stored>
    where
        S: Stream<Item = Result<PutItem>> + Unpin + Send,
    {
        let tmp = format!("tmp/{}", uuid::Uuid::new_v4());
        if let Finalize::Rename { root } = &self.finalize {
            let path = root.join(&tmp);
            let stored = match self.write_local(&path, items, max_size, algorithm).await {
                Ok((hasher, size)) => {
                    let hash = hasher.finish();
                    self.finalize(&tmp, &hash, size)
                        .await
                        .map(|()| Stored { size, hash })
                }
                Err(err) => Err(err),
            };
            if stored.is_err() {
                let space = self.name.clone();
                let _ = tokio::task::spawn_blocking(move || remove_tmp(&space, &path)).await;
            }
            return stored;
        }
        match self.write_via(&tmp, items, max_size, algorithm).await {
            Ok(stored) => Ok(stored),
            Err(err) => {
                if let Err(e) = self.op.delete(&tmp).await {
                    warn!(space = %self.name, path = %tmp, error = %e, "failed to remove temp file");
                }
                Err(err)
            }
        }
    }

    /// Write the data of `items` to the new local file `path` while hashing it, up to
    /// `Finish`, then sync it; returns the hasher and the size (the caller finalizes, or
    /// removes `path` on an error). Every chunk is written from the request's own buffer
    /// on a blocking-pool thread while another hashes it: the operator's writer
    /// (`tokio::fs::File`) copied each chunk into a buffer of its own first.
    async fn write_local<S>(
        &self,
        path: &Path,
        items: S,
        max_size: Option<u64>,
        algorithm: Algorithm,
    ) -> Result<(Hasher, u64)>
    where
        S: Stream<Item = Result<PutItem>> + Unpin + Send,
    {
        let space = self.name.as_str();
        let open = path.to_owned();
        let file = tokio::task::spawn_blocking(move || new_temp_file(&open))
            .await
            .context(WriterTaskSnafu)?
            .context(WriteLocalShardSnafu { space })?;
        let file = Arc::new(file);
        let mut sink = LocalSink {
            file: file.clone(),
            space,
        };
        let (hasher, size) = stream_into(&mut sink, items, max_size, algorithm).await?;
        tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .context(WriterTaskSnafu)?
            .context(WriteLocalShardSnafu { space })?;
        Ok((hasher, size))
    }

    async fn write_via<S>(
        &self,
        tmp: &str,
        items: S,
        max_size: Option<u64>,
        algorithm: Algorithm,
    ) -> Result<Stored>
    where
        S: Stream<Item = Result<PutItem>> + Unpin + Send,
    {
        let space = self.name.as_str();
        let mut writer = self
            .op
            .writer(tmp)
            .await
            .context(WriteShardSnafu { space })?;
        let mut sink = OperatorSink {
            writer: &mut writer,
            space,
        };
        let written = match stream_into(&mut sink, items, max_size, algorithm).await {
            Ok(written) => writer
                .close()
                .await
                .context(WriteShardSnafu { space })
                .map(|_| written),
            Err(err) => Err(err),
        };
        let (hasher, size) = match written {
            Ok(written) => written,
            Err(err) => {
                // Object stores: drop the multipart upload instead of leaving it behind.
                if let Err(e) = writer.abort().await {
                    debug!(space, path = %tmp, error = %e, "failed to abort temp write");
                }
                return Err(err);
            }
        };
        let hash = hasher.finish();
        self.finalize(tmp, &hash, size).await?;
        Ok(Stored { size, hash })
    }

    /// Make the complete temp file `tmp` (of `size` bytes) shard `hash`, so that its mtime
    /// is now: on the filesystem rename it into place, or touch the shard when it already
    /// exists; on object stores copy it into place either way (the copy is the touch); then
    /// remove the temp file. Runs under the hash's lock, so a concurrent
    /// [`SpaceStore::delete_if_unmodified`] either ran before (a fresh shard arrives) or sees
    /// the fresh mtime and refuses. A new shard counts against `max_size` (checked and
    /// reserved before it is moved into place: `SpaceFull`, nothing stored).
    ///
    /// On the filesystem this is the small puts' finalize ([`SpaceStore::finalize_blocking`])
    /// on a blocking-pool thread, followed by a sync of every directory that got a new
    /// entry ([`Placed::dirs_to_sync`]): the shard's name is durable before the caller
    /// commits the object (the temp file's bytes were synced by its writer).
    async fn finalize(&self, tmp: &str, hash: &str, size: u64) -> Result<()> {
        let space = self.name.as_str();
        // Counted (a listing, the first time) before taking the lock.
        let usage = self.usage().await?;
        if let Finalize::Rename { root } = &self.finalize {
            let (store, root, hash) = (self.clone(), root.clone(), hash.to_owned());
            let tmp = root.join(tmp);
            return tokio::task::spawn_blocking(move || {
                let placed = store.finalize_blocking(&root, &tmp, &hash, size)?;
                for dir in placed.dirs_to_sync(&root, &hash) {
                    sync_dir(&dir).context(WriteLocalShardSnafu {
                        space: store.name.as_str(),
                    })?;
                }
                Ok(())
            })
            .await
            .context(WriterTaskSnafu)?;
        }
        let path = shard_path(hash);
        {
            let _guard = self.shared.locks.of(hash).lock().await;
            let exists = self
                .op
                .exists(&path)
                .await
                .context(WriteShardSnafu { space })?;
            if !exists {
                self.reserve(usage, size)?;
            }
            // A deduplicated shard may be arbitrarily old: the copy refreshes it so GC
            // keeps it.
            let moved = match &self.finalize {
                Finalize::Copy => self.copy_into_place(tmp, &path).await,
                _ => self.rewrite(tmp, &path, size).await,
            };
            if let Err(err) = moved {
                if !exists {
                    release(usage, size);
                }
                return Err(err);
            }
            if exists {
                debug!(space, hash, "shard already stored; refreshed");
            }
        }
        if let Err(e) = self.op.delete(tmp).await {
            warn!(space, path = %tmp, error = %e, "failed to remove temp file");
        }
        Ok(())
    }

    /// Server-side copy of `tmp` to shard path `path` (a new object, so a fresh mtime).
    async fn copy_into_place(&self, tmp: &str, path: &str) -> Result<()> {
        self.op
            .copy(tmp, path)
            .await
            .map(drop)
            .context(WriteShardSnafu { space: &self.name })
    }

    /// Stream `from` (`size` bytes) into `to`, ≤ [`proto::CHUNK_SIZE`] bytes at a time: the
    /// finalize of a backend that can neither rename nor copy.
    async fn rewrite(&self, from: &str, to: &str, size: u64) -> Result<()> {
        let space = self.name.as_str();
        let reader = self
            .op
            .reader(from)
            .await
            .context(WriteShardSnafu { space })?;
        let mut writer = self
            .op
            .writer(to)
            .await
            .context(WriteShardSnafu { space })?;
        let copied = copy_range(&reader, &mut writer, from, size, space).await;
        if copied.is_err()
            && let Err(e) = writer.abort().await
        {
            warn!(space, path = %to, error = %e, "failed to abort shard rewrite");
        }
        copied
    }

    /// The usage counter of the space's location. A space with a max size counts it on
    /// first use (one listing of `shards/`); a space without one uses it only when already
    /// counted (by another store of the location), so it stays right if a max size is set
    /// later.
    ///
    /// Approximate by design: it is per agent process and only knows the changes this
    /// process made after the listing (shards written or removed by other agents serving
    /// the same storage, or by hand, are not seen until a restart or a change of location).
    /// Within one process every finalize reserves its size under the counter before the
    /// shard becomes visible, so concurrent writers cannot overshoot together.
    async fn usage(&self) -> Result<Option<&SyncMutex<u64>>> {
        if self.options.max_size == 0 {
            return Ok(self.shared.usage.get());
        }
        let counter = self
            .shared
            .usage
            .get_or_try_init(|| async {
                let used = self
                    .list_shards()
                    .try_fold(0u64, |sum, shard| async move {
                        Ok(sum.saturating_add(shard.size))
                    })
                    .await?;
                info!(
                    space = %self.name,
                    used,
                    max_size = self.options.max_size,
                    "usage of space counted"
                );
                Ok::<_, Error>(SyncMutex::new(used))
            })
            .await?;
        Ok(Some(counter))
    }

    /// Add `size` new bytes to `usage`, or refuse with `SpaceFull` when that exceeds
    /// `max_size`.
    fn reserve(&self, usage: Option<&SyncMutex<u64>>, size: u64) -> Result<()> {
        let Some(usage) = usage else {
            return Ok(());
        };
        let mut used = usage.lock().unwrap_or_else(PoisonError::into_inner);
        let wanted = used.saturating_add(size);
        let max_size = self.options.max_size;
        if max_size > 0 && wanted > max_size {
            return SpaceFullSnafu {
                space: self.label(),
                size,
                wanted,
                max_size,
            }
            .fail();
        }
        *used = wanted;
        Ok(())
    }

    /// Delete shard `hash` when it exists and its mtime is before `not_modified_since_ms`
    /// (Unix ms); `Ok(false)` when it is missing, as new or newer than the cutoff, or its
    /// mtime is unknown. On object stores, whose mtimes are whole seconds, the shard must
    /// be older than the cutoff by the rest of its second. The check and the delete run under the hash's lock (see
    /// [`SpaceStore::finalize`]). The emptied `shards/<hh>/` directory is left in place.
    pub async fn delete_if_unmodified(
        &self,
        hash: &str,
        not_modified_since_ms: i64,
    ) -> Result<bool> {
        check_hash(hash)?;
        let usage = self.usage().await?;
        let path = shard_path(hash);
        let _guard = self.shared.locks.of(hash).lock().await;
        let meta = match self.op.stat(&path).await {
            Ok(meta) => meta,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(source).context(DeleteShardSnafu { hash }),
        };
        let Some(modified) = meta.last_modified() else {
            warn!(space = %self.name, hash, "shard has no modification time; not deleting");
            return Ok(false);
        };
        let modified_ms = unix_ms(SystemTime::from(modified));
        let slack = match self.finalize {
            Finalize::Rename { .. } => 0,
            Finalize::Copy | Finalize::Rewrite => COARSE_MTIME_SLACK_MS,
        };
        if modified_ms.saturating_add(slack) >= not_modified_since_ms {
            debug!(
                space = %self.name,
                hash,
                modified_ms,
                not_modified_since_ms,
                "shard modified since cutoff; kept"
            );
            return Ok(false);
        }
        self.op
            .delete(&path)
            .await
            .context(DeleteShardSnafu { hash })?;
        release(usage, meta.content_length());
        debug!(
            space = %self.name,
            hash,
            modified_ms,
            not_modified_since_ms,
            "shard deleted"
        );
        Ok(true)
    }

    /// Every shard of the space (`shards/<hh>/<hash>`), streamed in no particular order: one
    /// directory listing at a time, never the whole list in memory. Entries that are not
    /// valid shards (bad names, files in the wrong directory, non-files) are skipped; a
    /// shard deleted while listing may or may not appear.
    pub fn list_shards(&self) -> ShardList {
        let state = ListState {
            op: self.op.clone(),
            space: self.name.clone(),
            outer: None,
            inner: None,
            started: false,
        };
        Box::pin(futures::stream::try_unfold(state, list_next))
    }

    /// Size of shard `hash`, or `None` when it is not stored.
    pub async fn stat(&self, hash: &str) -> Result<Option<u64>> {
        check_hash(hash)?;
        match self.op.stat(&shard_path(hash)).await {
            Ok(meta) => Ok(Some(meta.content_length())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(source).context(ReadShardSnafu { hash }),
        }
    }

    /// Stream `length` bytes of shard `hash` from `offset` (`length` 0 = to the end; a length
    /// past the end is clamped). Chunks are at most [`proto::CHUNK_SIZE`] bytes and are read
    /// one at a time, never the whole shard. `offset == size` gives an empty stream;
    /// `offset > size` is [`crate::Error::RangeOutOfBounds`].
    ///
    /// On a local store the file is opened and sized, and a range of at most one chunk
    /// read, in one blocking-pool task (the operator's stat, open and read were a hop
    /// each); a longer range then streams through the operator.
    pub async fn read(&self, hash: &str, offset: u64, length: u64) -> Result<ShardStream> {
        let size = match &self.finalize {
            Finalize::Rename { root } => {
                check_hash(hash)?;
                let path = local_shard_path(root, hash);
                let head = tokio::task::spawn_blocking(move || local_head(&path, offset, length))
                    .await
                    .context(ReaderTaskSnafu)?
                    .context(ReadLocalShardSnafu { hash })?;
                match head {
                    LocalHead::Missing => return ShardNotFoundSnafu { hash }.fail(),
                    LocalHead::Whole(data) if data.is_empty() => {
                        return Ok(Box::pin(futures::stream::empty()));
                    }
                    LocalHead::Whole(data) => {
                        return Ok(Box::pin(futures::stream::once(async { Ok(data) })));
                    }
                    LocalHead::Size(size) => size,
                }
            }
            _ => self
                .stat(hash)
                .await?
                .ok_or_else(|| ShardNotFoundSnafu { hash }.build())?,
        };
        ensure!(offset <= size, RangeOutOfBoundsSnafu { offset, size });
        let end = range_end(size, offset, length);
        if offset == end {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let reader = self
            .op
            .reader(&shard_path(hash))
            .await
            .context(ReadShardSnafu { hash })?;
        Ok(Box::pin(chunked(
            reader,
            Source::Shard(hash.to_owned()),
            offset,
            end,
        )))
    }

    /// Remove temp files older than `max_age` (leftovers of a crash); returns how many.
    pub async fn sweep_tmp(&self, max_age: Duration) -> Result<usize> {
        let space = self.name.as_str();
        let entries = self
            .op
            .list("tmp/")
            .await
            .context(WriteShardSnafu { space })?;
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries {
            let path = entry.path();
            if path.ends_with('/') {
                continue;
            }
            let meta = match self.op.stat(path).await {
                Ok(meta) => meta,
                // Finished or aborted meanwhile.
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => continue,
                Err(source) => return Err(source).context(WriteShardSnafu { space }),
            };
            let Some(modified) = meta.last_modified() else {
                continue;
            };
            let age = now
                .duration_since(SystemTime::from(modified))
                .unwrap_or_default();
            if age >= max_age {
                self.op
                    .delete(path)
                    .await
                    .context(WriteShardSnafu { space })?;
                removed += 1;
            }
        }
        if removed > 0 {
            info!(space, removed, "removed leftover temp files");
        }
        Ok(removed)
    }
}

/// Progress of a shard listing: the lister of `shards/` and that of the current
/// `shards/<hh>/` directory.
struct ListState {
    op: opendal::Operator,
    space: String,
    outer: Option<opendal::Lister>,
    /// The current directory's two-hex-digit prefix and its lister.
    inner: Option<(String, opendal::Lister)>,
    started: bool,
}

async fn list_next(mut st: ListState) -> Result<Option<(ShardEntry, ListState)>> {
    let space = st.space.as_str();
    if !st.started {
        st.started = true;
        st.outer = Some(
            st.op
                .lister("shards/")
                .await
                .context(ListShardsSnafu { space })?,
        );
    }
    loop {
        if let Some((prefix, inner)) = &mut st.inner {
            match inner.try_next().await.context(ListShardsSnafu { space })? {
                Some(entry) => {
                    if let Some(found) = shard_entry(&st.op, space, prefix, entry).await? {
                        return Ok(Some((found, st)));
                    }
                }
                None => st.inner = None,
            }
            continue;
        }
        let Some(outer) = &mut st.outer else {
            return Ok(None);
        };
        let Some(entry) = outer.try_next().await.context(ListShardsSnafu { space })? else {
            st.outer = None;
            return Ok(None);
        };
        let Some(prefix) = entry
            .name()
            .strip_suffix('/')
            .filter(|p| p.len() == 2 && shard_hash::is_lower_hex(p))
        else {
            continue;
        };
        if !entry.metadata().mode().is_dir() || entry.path() != format!("shards/{prefix}/") {
            continue;
        }
        let prefix = prefix.to_owned();
        match st.op.lister(entry.path()).await {
            Ok(lister) => st.inner = Some((prefix, lister)),
            // Removed meanwhile.
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => {}
            Err(source) => return Err(source).context(ListShardsSnafu { space }),
        }
    }
}

/// The shard `entry` of directory `shards/<prefix>/` is, or `None` when it is not a valid
/// shard (or vanished before it could be stated).
async fn shard_entry(
    op: &opendal::Operator,
    space: &str,
    prefix: &str,
    entry: opendal::Entry,
) -> Result<Option<ShardEntry>> {
    let name = entry.name();
    if !is_valid_hash(name) || shard_dir_of(name) != prefix || entry.path() != shard_path(name) {
        return Ok(None);
    }
    let listed = entry.metadata();
    if !listed.mode().is_file() {
        return Ok(None);
    }
    // The fs lister reports size and mtime; other backends may need a stat.
    let (size, modified) = match listed.last_modified() {
        Some(modified) => (listed.content_length(), Some(modified)),
        None => match op.stat(entry.path()).await {
            Ok(meta) => (meta.content_length(), meta.last_modified()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(source).context(ListShardsSnafu { space }),
        },
    };
    Ok(Some(ShardEntry {
        hash: name.to_owned(),
        size,
        modified_ms: modified.map_or(0, |m| unix_ms(SystemTime::from(m))),
    }))
}

/// `t` in Unix milliseconds, rounded down (so `unix_ms(t) < cutoff` ⇔ `t < cutoff` for an
/// integer cutoff).
pub fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(before) => {
            let d = before.duration();
            let ceil = d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 != 0);
            i64::try_from(ceil).map_or(i64::MIN, |ms| -ms)
        }
    }
}

/// Progress of a concat: the sources still to read and the one being read.
struct ConcatState {
    store: SpaceStore,
    sources: VecDeque<String>,
    current: Option<ShardStream>,
}

async fn concat_next(mut st: ConcatState) -> Result<Option<(Bytes, ConcatState)>> {
    loop {
        if let Some(current) = &mut st.current {
            match current.try_next().await? {
                Some(data) => return Ok(Some((data, st))),
                None => st.current = None,
            }
        }
        let Some(hash) = st.sources.pop_front() else {
            return Ok(None);
        };
        st.current = Some(st.store.read(&hash, 0, 0).await?);
    }
}

/// What a chunked read reads, to name it in errors.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A shard, by hash.
    Shard(String),
    /// A plain file of a space, by path.
    File(String),
}

impl Source {
    fn read_failed(&self, source: opendal::Error) -> Error {
        match self {
            Source::Shard(hash) => Error::ReadShard {
                hash: hash.clone(),
                source,
            },
            Source::File(path) => Error::ReadFile {
                path: path.clone(),
                source,
            },
        }
    }

    fn came_up_short(&self, at: u64, expected: u64) -> Error {
        match self {
            Source::Shard(hash) => Error::ShardTruncated {
                hash: hash.clone(),
                at,
                expected,
            },
            Source::File(path) => Error::FileChanged {
                path: path.clone(),
                at,
                expected,
            },
        }
    }
}

/// The bytes `start..end` of `reader` as a stream of chunks of at most
/// [`proto::CHUNK_SIZE`]; one read in flight, never more in memory.
pub(crate) fn chunked(
    reader: opendal::Reader,
    what: Source,
    start: u64,
    end: u64,
) -> impl futures::Stream<Item = Result<Bytes>> + Send + 'static {
    futures::stream::try_unfold(
        ReadState {
            reader,
            what,
            pos: start,
            end,
        },
        read_next,
    )
}

/// Progress of a chunked read.
struct ReadState {
    reader: opendal::Reader,
    what: Source,
    pos: u64,
    end: u64,
}

async fn read_next(mut st: ReadState) -> Result<Option<(Bytes, ReadState)>> {
    if st.pos >= st.end {
        return Ok(None);
    }
    let want = (st.end - st.pos).min(proto::CHUNK_SIZE as u64);
    let buf = match st.reader.read(st.pos..st.pos + want).await {
        Ok(buf) => buf,
        Err(e) => return Err(st.what.read_failed(e)),
    };
    if buf.is_empty() {
        return Err(st.what.came_up_short(st.pos, st.end));
    }
    let mut bytes = buf.to_bytes();
    // A backend could return more than asked for; never exceed the wire chunk size.
    bytes.truncate(want as usize);
    st.pos += bytes.len() as u64;
    Ok(Some((bytes, st)))
}

/// Feed `data` to `hasher`, on the blocking pool unless the chunk is small.
pub(crate) async fn hash_chunk(mut hasher: Hasher, data: Bytes) -> Result<Hasher> {
    if data.len() < INLINE_HASH_LIMIT {
        hasher.update(&data);
        return Ok(hasher);
    }
    tokio::task::spawn_blocking(move || {
        hasher.update(&data);
        hasher
    })
    .await
    .context(HashChunkSnafu)
}

/// Whether `hash` is a shard name (common::shard_hash).
pub fn is_valid_hash(hash: &str) -> bool {
    shard_hash::is_valid(hash)
}

fn check_hash(hash: &str) -> Result<()> {
    ensure!(is_valid_hash(hash), InvalidShardHashSnafu { hash });
    Ok(())
}

/// Where [`stream_into`] writes a shard's chunks.
trait ChunkSink {
    async fn write(&mut self, data: Bytes) -> Result<()>;
}

/// A backend's writer, through the operator.
struct OperatorSink<'a> {
    writer: &'a mut opendal::Writer,
    space: &'a str,
}

impl ChunkSink for OperatorSink<'_> {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let space = self.space;
        self.writer
            .write(data)
            .await
            .context(WriteShardSnafu { space })
    }
}

/// A local file, written with `std::fs` on the blocking pool from the chunk's own buffer.
struct LocalSink<'a> {
    file: Arc<std::fs::File>,
    space: &'a str,
}

impl ChunkSink for LocalSink<'_> {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let space = self.space;
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            (&*file).write_all(&data)
        })
        .await
        .context(WriterTaskSnafu)?
        .context(WriteLocalShardSnafu { space })
    }
}

/// Write the data of `items` to `sink` while hashing it (each chunk's hash and write run
/// at once), up to `Finish`; returns the hasher and the size. `max_size` bounds the size;
/// a stream without `Finish` is aborted.
async fn stream_into<S>(
    sink: &mut impl ChunkSink,
    mut items: S,
    max_size: Option<u64>,
    algorithm: Algorithm,
) -> Result<(Hasher, u64)>
where
    S: Stream<Item = Result<PutItem>> + Unpin + Send,
{
    let mut hasher = Hasher::new(algorithm);
    let mut size = 0u64;
    loop {
        match items.next().await.transpose()? {
            Some(PutItem::Data(data)) => {
                if data.is_empty() {
                    continue;
                }
                size += data.len() as u64;
                if let Some(max_size) = max_size {
                    ensure!(size <= max_size, ShardTooLargeSnafu { max_size });
                }
                let (hashed, written) =
                    tokio::join!(hash_chunk(hasher, data.clone()), sink.write(data));
                hasher = hashed?;
                written?;
            }
            Some(PutItem::Finish) => return Ok((hasher, size)),
            None => return StreamAbortedSnafu.fail(),
        }
    }
}

/// Under shard `hash`'s lock: when the shard is stored at `path`, refresh its mtime (a
/// deduplicated shard may be arbitrarily old; GC keeps what was touched within its grace)
/// and say so.
fn touch_if_stored(space: &str, path: &Path, hash: &str) -> Result<bool> {
    if !path.try_exists().context(WriteLocalShardSnafu { space })? {
        return Ok(false);
    }
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|file| file.set_modified(SystemTime::now()))
        .context(TouchShardSnafu { hash })?;
    Ok(true)
}

/// Give back `size` bytes to `usage` (a removed shard, or a reservation whose move failed).
fn release(usage: Option<&SyncMutex<u64>>, size: u64) {
    if let Some(usage) = usage {
        let mut used = usage.lock().unwrap_or_else(PoisonError::into_inner);
        *used = used.saturating_sub(size);
    }
}

/// Run `op` on `path`; when it fails with `NotFound`, create the parent directory of
/// `path` and run it once more.
fn create_parent_and<T>(
    path: &Path,
    mut op: impl FnMut(&Path) -> std::io::Result<T>,
) -> std::io::Result<T> {
    match op(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            op(path)
        }
        other => other,
    }
}

/// How [`SpaceStore::finalize_blocking`] placed a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placed {
    /// The shard existed; its mtime was refreshed.
    Touched,
    /// The temp file was renamed to the shard's path; `new_dir` when its `shards/<hh>`
    /// directory was created for it.
    Renamed { new_dir: bool },
}

impl Placed {
    /// The directories to sync for the new name of shard `hash` under `root` to be durable:
    /// `shards/<hh>`, and when that was created, `shards` and the root too (which may
    /// just have got `shards`; at most 256 times per store).
    fn dirs_to_sync(self, root: &Path, hash: &str) -> Vec<PathBuf> {
        match self {
            Placed::Touched => Vec::new(),
            Placed::Renamed { new_dir } => {
                let shard_dir = root.join("shards").join(shard_dir_of(hash));
                if new_dir {
                    vec![shard_dir, root.join("shards"), root.to_path_buf()]
                } else {
                    vec![shard_dir]
                }
            }
        }
    }
}

/// Sync directory `dir`, making the entries created in it durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Remove temp file `tmp` of space `space`, logging (not failing) when that fails.
fn remove_tmp(space: &str, tmp: &Path) {
    if let Err(e) = std::fs::remove_file(tmp)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(space, path = %tmp.display(), error = %e, "failed to remove temp file");
    }
}

/// Create the new temp file `path` for writing (its directory too when missing).
fn new_temp_file(path: &Path) -> std::io::Result<std::fs::File> {
    create_parent_and(path, |p| {
        std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(p)
    })
}

/// End of the range `[offset, offset + length)` of a shard of `size` bytes: `length` 0
/// means to the end, and a range past the end is clamped to it.
fn range_end(size: u64, offset: u64, length: u64) -> u64 {
    if length == 0 {
        size
    } else {
        offset.saturating_add(length).min(size)
    }
}

/// What [`local_head`] found.
enum LocalHead {
    Missing,
    /// The whole requested range (at most one chunk).
    Whole(Bytes),
    /// The shard's size: the range is longer than a chunk, or starts past the end.
    Size(u64),
}

/// Open local shard file `path`, size it, and read `[offset, offset + length)` (`length`
/// 0 = to the end, clamped to the size) when that is at most [`proto::CHUNK_SIZE`] bytes
/// (blocking). A file shorter than its own size when read is `UnexpectedEof`.
fn local_head(path: &Path, offset: u64, length: u64) -> std::io::Result<LocalHead> {
    use std::os::unix::fs::FileExt as _;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LocalHead::Missing),
        Err(e) => return Err(e),
    };
    let size = file.metadata()?.len();
    let end = range_end(size, offset, length);
    if offset > size || end - offset > proto::CHUNK_SIZE as u64 {
        return Ok(LocalHead::Size(size));
    }
    let mut buf = vec![0; (end - offset) as usize];
    file.read_exact_at(&mut buf, offset)?;
    Ok(LocalHead::Whole(Bytes::from(buf)))
}

/// Local path of shard `hash` (a valid hash) under fs root `root`.
fn local_shard_path(root: &Path, hash: &str) -> PathBuf {
    root.join("shards").join(shard_dir_of(hash)).join(hash)
}

/// The directory below `shards/` of shard `hash` (a valid name): the first two hex digits
/// of its digest, whatever its algorithm, so BLAKE3 names spread like SHA-256 ones.
fn shard_dir_of(hash: &str) -> &str {
    &shard_hash::digest_hex(hash)[..2]
}

/// Copy `size` bytes of `reader` (of path `from`) to `writer`, one chunk at a time, and
/// close the writer.
async fn copy_range(
    reader: &opendal::Reader,
    writer: &mut opendal::Writer,
    from: &str,
    size: u64,
    space: &str,
) -> Result<()> {
    let mut pos = 0u64;
    while pos < size {
        let want = (size - pos).min(proto::CHUNK_SIZE as u64);
        let buf = reader
            .read(pos..pos + want)
            .await
            .context(WriteShardSnafu { space })?;
        ensure!(
            !buf.is_empty(),
            ShardTruncatedSnafu {
                hash: from,
                at: pos,
                expected: size,
            }
        );
        pos += buf.len() as u64;
        writer.write(buf).await.context(WriteShardSnafu { space })?;
    }
    writer.close().await.context(WriteShardSnafu { space })?;
    Ok(())
}

/// Path of shard `hash` inside the space (`hash` must be valid).
fn shard_path(hash: &str) -> String {
    format!("shards/{}/{hash}", shard_dir_of(hash))
}

#[cfg(test)]
mod tests {
    use common::{CodedError, ErrorCode};
    use futures::TryStreamExt;
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;

    use super::*;
    use crate::Error;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn sha_hex(data: &[u8]) -> String {
        shard_hash::name_of(Algorithm::Sha256, data)
    }

    fn items(data: &[u8], chunk: usize) -> Vec<PutItem> {
        let mut out: Vec<PutItem> = data
            .chunks(chunk)
            .map(|c| PutItem::Data(Bytes::copy_from_slice(c)))
            .collect();
        out.push(PutItem::Finish);
        out
    }

    async fn put_all(store: &SpaceStore, data: &[u8], chunk: usize) -> Result<Stored> {
        store
            .put(
                futures::stream::iter(items(data, chunk)),
                None,
                Algorithm::Sha256,
            )
            .await
    }

    async fn read_chunks(store: &SpaceStore, hash: &str, offset: u64, len: u64) -> Vec<Bytes> {
        store
            .read(hash, offset, len)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    }

    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(dir) else {
            return out;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    fn root(store: &SpaceStore) -> &Path {
        store.local_root().unwrap()
    }

    fn open(dir: &tempfile::TempDir) -> SpaceStore {
        SpaceStore::open_local("test", &dir.path().join("space")).unwrap()
    }

    #[tokio::test]
    async fn put_then_read_back_is_byte_identical() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let data = pattern(3 * proto::CHUNK_SIZE + 12345);
        let stored = put_all(&store, &data, 256 * 1024 + 7).await.unwrap();
        assert_eq!(stored.size, data.len() as u64);
        assert_eq!(stored.hash, sha_hex(&data));

        let on_disk = root(&store)
            .join("shards")
            .join(&stored.hash[..2])
            .join(&stored.hash);
        assert_eq!(std::fs::read(on_disk).unwrap(), data);
        assert!(files_under(&root(&store).join("tmp")).is_empty());
        assert_eq!(
            store.stat(&stored.hash).await.unwrap(),
            Some(data.len() as u64)
        );

        let chunks = read_chunks(&store, &stored.hash, 0, 0).await;
        assert!(chunks.iter().all(|c| c.len() <= proto::CHUNK_SIZE));
        assert_eq!(chunks.len(), 4);
        assert_eq!(chunks.concat(), data);
    }

    /// A put that asks for BLAKE3 names the shard `b3-` + its BLAKE3 and files it under
    /// the digest's first two digits, streamed or in one chunk; the same content as
    /// SHA-256 is another shard; both read back, and a repeat put finds the stored one.
    #[tokio::test]
    async fn blake3_shards_are_named_and_filed_by_their_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        for (data, chunk) in [
            (pattern(3 * proto::CHUNK_SIZE + 5), 256 * 1024),
            (pattern(100), 100),
            (Vec::new(), 1),
        ] {
            let put =
                |algorithm| store.put(futures::stream::iter(items(&data, chunk)), None, algorithm);
            let stored = put(Algorithm::Blake3).await.unwrap();
            let want = shard_hash::name_of(Algorithm::Blake3, &data);
            assert!(want.starts_with("b3-"));
            assert_eq!(
                stored,
                Stored {
                    size: data.len() as u64,
                    hash: want.clone()
                }
            );
            let on_disk = root(&store).join("shards").join(&want[3..5]).join(&want);
            assert_eq!(std::fs::read(&on_disk).unwrap(), data);
            assert_eq!(read_chunks(&store, &want, 0, 0).await.concat(), data);

            let sha = put(Algorithm::Sha256).await.unwrap();
            assert_eq!(sha.hash, sha_hex(&data));
            assert_eq!(read_chunks(&store, &sha.hash, 0, 0).await.concat(), data);

            let again = store
                .put_small(Bytes::from(data.clone()), None, Algorithm::Blake3)
                .await
                .unwrap();
            assert_eq!(again.hash, want);
        }
        assert!(files_under(&root(&store).join("tmp")).is_empty());
    }

    #[tokio::test]
    async fn ranged_reads_return_the_requested_slice() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let data = pattern(2 * proto::CHUNK_SIZE + 100);
        let hash = put_all(&store, &data, proto::CHUNK_SIZE)
            .await
            .unwrap()
            .hash;
        let size = data.len() as u64;

        let cs = proto::CHUNK_SIZE;
        let cases: [(u64, u64, std::ops::Range<usize>); 8] = [
            (10, 20, 10..30),
            // Exactly one chunk (read whole on a local store), and one byte more.
            (1, cs as u64, 1..cs + 1),
            (1, cs as u64 + 1, 1..cs + 2),
            (
                proto::CHUNK_SIZE as u64 - 5,
                10,
                proto::CHUNK_SIZE - 5..proto::CHUNK_SIZE + 5,
            ),
            (100, 0, 100..data.len()),
            (size - 3, 1000, data.len() - 3..data.len()),
            (0, size + 10, 0..data.len()),
            (size, 0, data.len()..data.len()),
        ];
        for (offset, len, want) in cases {
            let chunks = read_chunks(&store, &hash, offset, len).await;
            assert!(
                chunks
                    .iter()
                    .all(|c| c.len() <= proto::CHUNK_SIZE && !c.is_empty())
            );
            assert_eq!(
                chunks.concat(),
                &data[want.clone()],
                "offset {offset} len {len}"
            );
        }
    }

    #[tokio::test]
    async fn range_errors_and_missing_shards() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let data = pattern(1000);
        let hash = put_all(&store, &data, 100).await.unwrap().hash;

        let err = store.read(&hash, 1001, 0).await.err().unwrap();
        assert!(matches!(
            err,
            Error::RangeOutOfBounds {
                offset: 1001,
                size: 1000
            }
        ));
        assert_eq!(err.code(), ErrorCode::BadArgument);

        let missing = sha_hex(b"never stored");
        let err = store.read(&missing, 0, 0).await.err().unwrap();
        assert_eq!(err.code(), ErrorCode::NotFound);
        assert_eq!(store.stat(&missing).await.unwrap(), None);

        for bad in ["", "../etc/passwd", &hash.to_uppercase(), &hash[..63]] {
            let err = store.read(bad, 0, 0).await.err().unwrap();
            assert!(
                matches!(err, Error::InvalidShardHash { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn same_content_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let data = pattern(5000);
        let a = put_all(&store, &data, 1000).await.unwrap();
        let b = put_all(&store, &data, 777).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(files_under(&root(&store).join("shards")).len(), 1);
        assert!(files_under(&root(&store).join("tmp")).is_empty());
    }

    #[tokio::test]
    async fn empty_shard_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let stored = put_all(&store, &[], 10).await.unwrap();
        assert_eq!(stored.size, 0);
        assert_eq!(stored.hash, sha_hex(b""));
        assert!(read_chunks(&store, &stored.hash, 0, 0).await.is_empty());
    }

    #[tokio::test]
    async fn aborted_put_leaves_no_shard_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let (tx, rx) = mpsc::channel(4);
        let writer = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .put(ReceiverStream::new(rx), None, Algorithm::Sha256)
                    .await
            }
        });
        for chunk in pattern(3 * 1024 * 1024).chunks(proto::CHUNK_SIZE) {
            tx.send(PutItem::Data(Bytes::copy_from_slice(chunk)))
                .await
                .unwrap();
        }
        // The sender goes away without `Finish`: an aborted upload.
        drop(tx);
        let err = writer.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::StreamAborted), "{err}");
        assert!(files_under(&root(&store).join("shards")).is_empty());
        assert!(files_under(&root(&store).join("tmp")).is_empty());
    }

    #[tokio::test]
    async fn items_after_finish_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let stream = futures::stream::iter(vec![
            PutItem::Data(Bytes::from_static(b"abc")),
            PutItem::Finish,
            PutItem::Data(Bytes::from_static(b"def")),
        ]);
        let stored = store.put(stream, None, Algorithm::Sha256).await.unwrap();
        assert_eq!(stored.hash, sha_hex(b"abc"));
    }

    #[tokio::test]
    async fn sweep_removes_only_old_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let tmp = root(&store).join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let old = tmp.join("old");
        std::fs::write(&old, b"x").unwrap();
        let f = std::fs::File::options().write(true).open(&old).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        std::fs::write(tmp.join("fresh"), b"y").unwrap();

        assert_eq!(store.sweep_tmp(TMP_MAX_AGE).await.unwrap(), 1);
        assert!(!old.exists());
        assert!(tmp.join("fresh").exists());
    }

    #[tokio::test]
    async fn sweep_without_tmp_dir_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        assert_eq!(store.sweep_tmp(TMP_MAX_AGE).await.unwrap(), 0);
    }

    #[test]
    fn hash_validation() {
        assert!(is_valid_hash(&"a".repeat(64)));
        assert!(is_valid_hash(&sha_hex(b"x")));
        assert!(!is_valid_hash(&"A".repeat(64)));
        assert!(!is_valid_hash(&"g".repeat(64)));
        assert!(!is_valid_hash(&"a".repeat(65)));
        assert_eq!(
            shard_path(&"ab".repeat(32)),
            format!("shards/ab/{}", "ab".repeat(32))
        );
    }

    fn set_mtime(path: &Path, t: SystemTime) {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    fn mtime_ms(path: &Path) -> i64 {
        unix_ms(std::fs::metadata(path).unwrap().modified().unwrap())
    }

    async fn concat(store: &SpaceStore, sources: &[&str], max: Option<u64>) -> Result<Stored> {
        let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
        store.concat(&sources, max, &CancellationToken::new()).await
    }

    #[tokio::test]
    async fn concat_streams_the_sources_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let a = pattern(2 * proto::CHUNK_SIZE + 500);
        let b = b"second part".to_vec();
        let ha = put_all(&store, &a, proto::CHUNK_SIZE).await.unwrap().hash;
        let hb = put_all(&store, &b, 4).await.unwrap().hash;
        let he = put_all(&store, &[], 1).await.unwrap().hash;

        let stored = concat(&store, &[&ha, &he, &hb, &ha, &he], None)
            .await
            .unwrap();
        let want = [a.as_slice(), &b, &a].concat();
        assert_eq!(stored.size, want.len() as u64);
        assert_eq!(stored.hash, sha_hex(&want));
        assert_eq!(read_chunks(&store, &stored.hash, 0, 0).await.concat(), want);
        assert_eq!(files_under(&root(&store).join("shards")).len(), 4);
        assert!(files_under(&root(&store).join("tmp")).is_empty());

        // Only empty sources: a valid, empty shard. One source: the same shard again.
        let empty = concat(&store, &[&he, &he], None).await.unwrap();
        assert_eq!((empty.size, empty.hash.as_str()), (0, he.as_str()));
        let same = concat(&store, &[&hb], Some(b.len() as u64)).await.unwrap();
        assert_eq!(same.hash, hb);
        assert_eq!(files_under(&root(&store).join("shards")).len(), 4);
    }

    #[tokio::test]
    async fn concat_refuses_before_writing_anything() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let data = pattern(1000);
        let h = put_all(&store, &data, 100).await.unwrap().hash;
        let missing = sha_hex(b"never stored");

        let err = concat(&store, &[&h, &missing, &h], None).await.unwrap_err();
        assert!(
            matches!(&err, Error::ShardNotFound { hash } if *hash == missing),
            "{err}"
        );
        assert_eq!(err.code(), ErrorCode::NotFound);
        assert!(err.to_string().contains(&missing), "{err}");

        let upper = h.to_uppercase();
        let err = concat(&store, &[&h, &upper], None).await.unwrap_err();
        assert!(matches!(err, Error::InvalidShardHash { .. }), "{err}");
        // Hashes are all checked before any source is looked up.
        let err = concat(&store, &[&missing, "nope"], None).await.unwrap_err();
        assert!(matches!(err, Error::InvalidShardHash { .. }), "{err}");

        let err = concat(&store, &[], None).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadArgument, "{err}");

        let err = concat(&store, &[&h, &h], Some(1999)).await.unwrap_err();
        assert!(
            matches!(err, Error::ShardTooLarge { max_size: 1999 }),
            "{err}"
        );
        let ok = concat(&store, &[&h, &h], Some(2000)).await.unwrap();
        assert_eq!(ok.size, 2000);

        assert_eq!(files_under(&root(&store).join("shards")).len(), 2);
        assert!(files_under(&root(&store).join("tmp")).is_empty());
    }

    #[tokio::test]
    async fn interrupted_concat_removes_its_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let h = put_all(&store, &pattern(3 * proto::CHUNK_SIZE), proto::CHUNK_SIZE)
            .await
            .unwrap()
            .hash;
        let cancel = CancellationToken::new();
        cancel.cancel();
        let err = store
            .concat(&[h.clone(), h.clone()], None, &cancel)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Interrupted), "{err}");
        assert_eq!(err.code(), ErrorCode::Unavailable);
        assert_eq!(files_under(&root(&store).join("shards")).len(), 1);
        assert!(files_under(&root(&store).join("tmp")).is_empty());
    }

    #[tokio::test]
    async fn list_yields_exactly_the_valid_shards() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        assert!(
            store
                .list_shards()
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
                .is_empty()
        );

        let mut want = Vec::new();
        for len in [0, 1, 100, 70_000] {
            let stored = put_all(&store, &pattern(len), 1000).await.unwrap();
            let path = local_shard_path(root(&store), &stored.hash);
            want.push(ShardEntry {
                hash: stored.hash,
                size: len as u64,
                modified_ms: mtime_ms(&path),
            });
        }
        let data = Bytes::from(pattern(300));
        let b3 = store
            .put_small(data, None, Algorithm::Blake3)
            .await
            .unwrap();
        let path = local_shard_path(root(&store), &b3.hash);
        want.push(ShardEntry {
            hash: b3.hash.clone(),
            size: 300,
            modified_ms: mtime_ms(&path),
        });
        // A BLAKE3 name filed under its own first two characters ("b3") is junk.
        let misfiled = root(&store).join("shards").join("b3");
        std::fs::create_dir_all(&misfiled).unwrap();
        std::fs::write(misfiled.join(&b3.hash), b"x").unwrap();
        // Junk that must be skipped: a bad name, a shard in the wrong directory, a
        // directory named like a shard, a non-hex directory, a stray file, a temp file.
        let shards = root(&store).join("shards");
        let good = &want[1].hash;
        std::fs::write(shards.join(&good[..2]).join("junk"), b"x").unwrap();
        let wrong_dir = shards.join(if &good[..2] == "00" { "01" } else { "00" });
        std::fs::create_dir_all(&wrong_dir).unwrap();
        std::fs::write(wrong_dir.join(good), b"x").unwrap();
        std::fs::create_dir_all(shards.join("ff").join(format!("ff{}", &good[2..]))).unwrap();
        std::fs::create_dir_all(shards.join("zz")).unwrap();
        std::fs::write(shards.join("zz").join(good), b"x").unwrap();
        std::fs::write(shards.join("README"), b"x").unwrap();
        std::fs::create_dir_all(root(&store).join("tmp")).unwrap();
        std::fs::write(root(&store).join("tmp").join(good), b"x").unwrap();

        let mut got: Vec<ShardEntry> = store.list_shards().try_collect().await.unwrap();
        got.sort_by(|a, b| a.hash.cmp(&b.hash));
        want.sort_by(|a, b| a.hash.cmp(&b.hash));
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn delete_only_shards_older_than_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let h = put_all(&store, &pattern(100), 10).await.unwrap().hash;
        let path = local_shard_path(root(&store), &h);
        let written = mtime_ms(&path);

        // Written at or after the cutoff: kept.
        assert!(!store.delete_if_unmodified(&h, written).await.unwrap());
        assert!(
            !store
                .delete_if_unmodified(&h, written - 1000)
                .await
                .unwrap()
        );
        assert!(path.exists());
        // Written before the cutoff: deleted, once.
        assert!(store.delete_if_unmodified(&h, written + 1).await.unwrap());
        assert!(!path.exists());
        assert!(!store.delete_if_unmodified(&h, written + 1).await.unwrap());

        let err = store
            .delete_if_unmodified("abc", i64::MAX)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidShardHash { .. }), "{err}");
        // The shard can be stored again after a delete.
        let again = put_all(&store, &pattern(100), 10).await.unwrap();
        assert_eq!(again.hash, h);
        assert!(path.exists());
    }

    #[tokio::test]
    async fn concurrent_small_puts_store_each_shard_durably_with_its_own_result() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        // As PutSmallShards stores a batch: one shard stored before (an hour old: it must be
        // touched), several new ones (written concurrently, some in the same `shards/<hh>`),
        // the same content twice at once, and one over its ticket's size limit.
        let old = pattern(777);
        let old_hash = put_all(&store, &old, 100).await.unwrap().hash;
        let old_path = local_shard_path(root(&store), &old_hash);
        set_mtime(&old_path, SystemTime::now() - Duration::from_secs(3600));
        let before = common::time::now_ms();
        let mut datas: Vec<Vec<u8>> = (0..19)
            .map(|i| format!("small shard {i}").repeat(i + 1).into_bytes())
            .collect();
        datas.push(datas[1].clone());
        datas.push(old.clone());
        let mut items: Vec<(SpaceStore, Bytes, Option<u64>)> = datas
            .iter()
            .map(|d| (store.clone(), Bytes::from(d.clone()), None))
            .collect();
        items.push((store.clone(), Bytes::from_static(b"too large"), Some(3)));

        let results: Vec<Result<Stored>> = futures::future::join_all(items.into_iter().map(
            |(store, data, max_size)| async move {
                store.put_small(data, max_size, Algorithm::Sha256).await
            },
        ))
        .await;
        assert_eq!(results.len(), datas.len() + 1);
        for (data, result) in datas.iter().zip(&results) {
            let stored = result.as_ref().unwrap();
            assert_eq!(stored.hash, sha_hex(data));
            assert_eq!(stored.size, data.len() as u64);
            let path = local_shard_path(root(&store), &stored.hash);
            assert_eq!(&std::fs::read(path).unwrap(), data);
        }
        let err = results.last().unwrap().as_ref().unwrap_err();
        assert!(matches!(err, Error::ShardTooLarge { .. }), "{err}");
        assert!(
            mtime_ms(&old_path) >= before,
            "the existing shard was not touched"
        );
        assert!(files_under(&root(&store).join("tmp")).is_empty());
        let listed: Vec<ShardEntry> = store.list_shards().try_collect().await.unwrap();
        assert_eq!(listed.len(), datas.len() - 1, "stored once per content");
        let bytes: u64 = datas[..datas.len() - 2]
            .iter()
            .map(|d| d.len() as u64)
            .sum();
        let listed_bytes: u64 = listed.iter().map(|e| e.size).sum();
        assert_eq!(listed_bytes, bytes + old.len() as u64);
    }

    #[tokio::test]
    async fn dedup_touches_the_existing_shard() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let data = pattern(5000);
        let h = put_all(&store, &data, 1000).await.unwrap().hash;
        let path = local_shard_path(root(&store), &h);
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let cutoff = unix_ms(SystemTime::now() - Duration::from_secs(1800));

        for second in ["put", "concat"] {
            set_mtime(&path, hour_ago);
            assert!(mtime_ms(&path) < cutoff);
            let before = common::time::now_ms();
            let stored = match second {
                "put" => put_all(&store, &data, 333).await.unwrap(),
                _ => concat(&store, &[&h], None).await.unwrap(),
            };
            assert_eq!(stored.hash, h);
            assert!(mtime_ms(&path) >= before, "{second} did not touch");
            assert!(
                !store.delete_if_unmodified(&h, cutoff).await.unwrap(),
                "{second}"
            );
            assert!(path.exists());
        }
        // Without a touch the same cutoff deletes it.
        set_mtime(&path, hour_ago);
        assert!(store.delete_if_unmodified(&h, cutoff).await.unwrap());
    }

    #[tokio::test]
    async fn listed_mtime_is_the_last_touch() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let data = pattern(10);
        let h = put_all(&store, &data, 10).await.unwrap().hash;
        let old = SystemTime::now() - Duration::from_secs(7200);
        set_mtime(&local_shard_path(root(&store), &h), old);
        let listed: Vec<ShardEntry> = store.list_shards().try_collect().await.unwrap();
        assert_eq!(listed[0].modified_ms, unix_ms(old));
        let before = common::time::now_ms();
        put_all(&store, &data, 3).await.unwrap();
        let listed: Vec<ShardEntry> = store.list_shards().try_collect().await.unwrap();
        assert!(listed[0].modified_ms >= before);
    }

    #[tokio::test]
    async fn delete_waits_for_the_shard_lock() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let h = put_all(&store, &pattern(10), 10).await.unwrap().hash;
        let guard = store.shared.locks.of(&h).lock().await;
        let delete = tokio::spawn({
            let store = store.clone();
            let h = h.clone();
            async move { store.delete_if_unmodified(&h, i64::MAX).await }
        });
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(!delete.is_finished());
        assert!(local_shard_path(root(&store), &h).exists());
        drop(guard);
        assert!(delete.await.unwrap().unwrap());
    }

    #[test]
    fn unix_ms_rounds_down() {
        let at = |ms: u64, ns: u32| {
            UNIX_EPOCH + Duration::from_millis(ms) + Duration::from_nanos(u64::from(ns))
        };
        assert_eq!(unix_ms(at(1500, 0)), 1500);
        assert_eq!(unix_ms(at(1500, 999_999)), 1500);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_nanos(1)), -1);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_millis(2)), -2);
    }

    #[test]
    fn lock_stripes_follow_the_first_byte() {
        let locks = ShardLocks::new();
        let a = "ab".repeat(32);
        let b = format!("ab{}", "0".repeat(62));
        let c = format!("ac{}", "0".repeat(62));
        assert!(std::ptr::eq(locks.of(&a), locks.of(&b)));
        assert!(!std::ptr::eq(locks.of(&a), locks.of(&c)));
    }

    fn memory_store(options: StoreOptions) -> SpaceStore {
        let op = opendal::Operator::new(opendal::services::Memory::default()).unwrap();
        SpaceStore::new("mem", op, None, options, SharedState::default())
    }

    async fn object_count(store: &SpaceStore, dir: &str) -> usize {
        let entries = store
            .op
            .list_with(dir)
            .recursive(true)
            .await
            .unwrap_or_default();
        entries.iter().filter(|e| e.metadata().is_file()).count()
    }

    #[tokio::test]
    async fn backend_without_rename_or_copy_rewrites_into_place() {
        let store = memory_store(StoreOptions::default());
        assert_eq!(store.finalize, Finalize::Rewrite);
        let a = pattern(2 * proto::CHUNK_SIZE + 7);
        let ha = put_all(&store, &a, 100_000).await.unwrap().hash;
        assert_eq!(read_chunks(&store, &ha, 0, 0).await.concat(), a);
        // Dedup rewrites the same bytes; concat goes through the same finalize.
        assert_eq!(put_all(&store, &a, 4096).await.unwrap().hash, ha);
        let both = concat(&store, &[&ha, &ha], None).await.unwrap();
        assert_eq!(both.hash, sha_hex(&[a.as_slice(), &a].concat()));
        let listed: Vec<ShardEntry> = store.list_shards().try_collect().await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(object_count(&store, "tmp/").await, 0);
        assert_eq!(object_count(&store, "shards/").await, 2);
    }

    #[tokio::test]
    async fn max_size_counts_existing_shards_and_refuses_what_does_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("space");
        // 1000 bytes stored before the space got a limit.
        let before = open(&dir);
        let old = put_all(&before, &pattern(1000), 100).await.unwrap().hash;
        drop(before);

        let op =
            opendal::Operator::new(opendal::services::Fs::default().root(path.to_str().unwrap()))
                .unwrap();
        let options = StoreOptions {
            stores_shards: true,
            max_size: 2500,
        };
        let store = SpaceStore::new(
            "lim",
            op,
            Some(path.clone()),
            options,
            SharedState::default(),
        )
        .with_id(SpaceId(42));

        let err = put_all(&store, &pattern(1501), 500).await.unwrap_err();
        assert!(matches!(err, Error::SpaceFull { .. }), "{err}");
        assert_eq!(err.code(), ErrorCode::BadArgument);
        assert_eq!(
            err.to_string(),
            "user space 42 is full: storing 1501 more bytes would use 2501 of max 2500 bytes"
        );
        assert_eq!(files_under(&path.join("shards")).len(), 1);
        assert!(files_under(&path.join("tmp")).is_empty());

        // Exactly full is fine; then a dedup (no new bytes) still succeeds, a new byte not.
        let h = put_all(&store, &pattern(1500), 500).await.unwrap().hash;
        put_all(&store, &pattern(1500), 700).await.unwrap();
        concat(&store, &[&old], None).await.unwrap();
        let err = put_all(&store, b"x", 1).await.unwrap_err();
        assert!(matches!(err, Error::SpaceFull { .. }), "{err}");
        let err = concat(&store, &[&old, &old], None).await.unwrap_err();
        assert!(matches!(err, Error::SpaceFull { .. }), "{err}");
        assert!(files_under(&path.join("tmp")).is_empty());

        // GC gives the room back.
        assert!(store.delete_if_unmodified(&h, i64::MAX).await.unwrap());
        put_all(&store, &pattern(1499), 500).await.unwrap();
        assert_eq!(files_under(&path.join("shards")).len(), 2);
    }

    #[test]
    fn stores_of_one_location_share_locks() {
        let locations = Locations::default();
        let a = locations.get("Local|/x");
        let b = locations.get("Local|/x");
        let c = locations.get("Local|/y");
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert!(!Arc::ptr_eq(&a.0, &c.0));
        drop((a, b));
        // Forgotten with its last store.
        let again = locations.get("Local|/x");
        assert_eq!(Arc::strong_count(&again.0), 1);
    }
}
