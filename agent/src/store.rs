//! Content-addressed shard store of one user space, over an opendal operator.
//!
//! Layout under the space directory:
//! - `shards/<hash[0..2]>/<hash>`: shard bytes; `hash` is the lower-case hex SHA-256.
//! - `tmp/<uuid>`: uploads in progress; renamed into `shards/` once complete, removed on
//!   any failure, and swept at start-up when left over by a crash.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::SpaceId;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use snafu::{ResultExt, ensure};
use tracing::{debug, info, warn};

use crate::error::{
    HashChunkSnafu, InvalidShardHashSnafu, NotRegisteredSnafu, OpenSpaceSnafu,
    RangeOutOfBoundsSnafu, ReadShardSnafu, Result, ShardNotFoundSnafu, ShardTruncatedSnafu,
    SpacePathSnafu, StreamAbortedSnafu, UnknownSpaceSnafu, WriteShardSnafu,
};

/// Chunks at least this large are hashed on the blocking pool; smaller ones inline
/// (64 KiB hash in about 30 µs, well inside the runtime's budget).
const INLINE_HASH_LIMIT: usize = 64 * 1024;

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
    /// Lower-case hex SHA-256 of the bytes, which is also the shard's address.
    pub sha256: String,
}

/// A stream of shard bytes, each chunk at most [`proto::CHUNK_SIZE`] bytes.
pub type ShardStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send + 'static>>;

/// Shard store of one `Local` user space. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SpaceStore {
    name: String,
    root: PathBuf,
    op: opendal::Operator,
}

impl SpaceStore {
    /// Open (and create when missing) the space directory at `root`.
    pub fn open_local(name: &str, root: &Path) -> Result<SpaceStore> {
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
        Ok(SpaceStore {
            name: name.to_owned(),
            root,
            op,
        })
    }

    /// Name of the space (from the config).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Absolute path of the space directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Write one shard from `chunks`. The bytes go to a temp file while being hashed; on
    /// [`PutItem::Finish`] the temp file becomes `shards/<hash[0..2]>/<hash>` (or is dropped
    /// when that shard already exists). On any error, or when `chunks` ends without
    /// `Finish`, the temp file is removed and nothing appears under `shards/`.
    pub async fn put<S>(&self, chunks: S) -> Result<Stored>
    where
        S: Stream<Item = PutItem> + Unpin + Send,
    {
        let tmp = format!("tmp/{}", uuid::Uuid::new_v4());
        match self.put_via(&tmp, chunks).await {
            Ok(stored) => Ok(stored),
            Err(err) => {
                if let Err(e) = self.op.delete(&tmp).await {
                    warn!(space = %self.name, path = %tmp, error = %e, "failed to remove temp file");
                }
                Err(err)
            }
        }
    }

    async fn put_via<S>(&self, tmp: &str, mut chunks: S) -> Result<Stored>
    where
        S: Stream<Item = PutItem> + Unpin + Send,
    {
        let space = self.name.as_str();
        let mut writer = self
            .op
            .writer(tmp)
            .await
            .context(WriteShardSnafu { space })?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        loop {
            match chunks.next().await {
                Some(PutItem::Data(data)) => {
                    if data.is_empty() {
                        continue;
                    }
                    size += data.len() as u64;
                    let (hashed, written) =
                        tokio::join!(hash_chunk(hasher, data.clone()), writer.write(data));
                    hasher = hashed?;
                    written.context(WriteShardSnafu { space })?;
                }
                Some(PutItem::Finish) => break,
                None => return StreamAbortedSnafu.fail(),
            }
        }
        writer.close().await.context(WriteShardSnafu { space })?;

        let sha256 = hex::encode(hasher.finalize());
        let path = shard_path(&sha256);
        let exists = self
            .op
            .exists(&path)
            .await
            .context(WriteShardSnafu { space })?;
        if exists {
            debug!(space, hash = %sha256, "shard already stored");
            if let Err(e) = self.op.delete(tmp).await {
                warn!(space, path = %tmp, error = %e, "failed to remove temp file");
            }
        } else {
            // The fs backend creates the parent directory before renaming.
            self.op
                .rename(tmp, &path)
                .await
                .context(WriteShardSnafu { space })?;
        }
        Ok(Stored { size, sha256 })
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
    pub async fn read(&self, hash: &str, offset: u64, length: u64) -> Result<ShardStream> {
        let size = self
            .stat(hash)
            .await?
            .ok_or_else(|| ShardNotFoundSnafu { hash }.build())?;
        ensure!(offset <= size, RangeOutOfBoundsSnafu { offset, size });
        let end = if length == 0 {
            size
        } else {
            offset.saturating_add(length).min(size)
        };
        if offset == end {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let reader = self
            .op
            .reader(&shard_path(hash))
            .await
            .context(ReadShardSnafu { hash })?;
        let state = ReadState {
            reader,
            hash: hash.to_owned(),
            pos: offset,
            end,
        };
        Ok(Box::pin(futures::stream::try_unfold(state, read_next)))
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

/// The stores this agent serves, by the space ids the coordinator assigned at registration.
/// `None` until the first registration succeeds. Cheap to clone; clones share the map.
#[derive(Clone, Debug, Default)]
pub struct SpaceRegistry {
    inner: Arc<RwLock<Option<HashMap<SpaceId, SpaceStore>>>>,
}

impl SpaceRegistry {
    /// The store of space `id`: `NotRegistered` before the first registration,
    /// `UnknownSpace` for an id this agent does not serve.
    pub fn get(&self, id: SpaceId) -> Result<SpaceStore> {
        let guard = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let Some(map) = guard.as_ref() else {
            return NotRegisteredSnafu.fail();
        };
        map.get(&id)
            .cloned()
            .ok_or_else(|| UnknownSpaceSnafu { space_id: id }.build())
    }

    /// Replace the id → store mapping (after a registration or heartbeat).
    pub fn set(&self, map: HashMap<SpaceId, SpaceStore>) {
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = Some(map);
    }
}

/// Progress of a ranged read.
struct ReadState {
    reader: opendal::Reader,
    hash: String,
    pos: u64,
    end: u64,
}

async fn read_next(mut st: ReadState) -> Result<Option<(Bytes, ReadState)>> {
    if st.pos >= st.end {
        return Ok(None);
    }
    let want = (st.end - st.pos).min(proto::CHUNK_SIZE as u64);
    let buf = st
        .reader
        .read(st.pos..st.pos + want)
        .await
        .context(ReadShardSnafu { hash: &st.hash })?;
    ensure!(
        !buf.is_empty(),
        ShardTruncatedSnafu {
            hash: &st.hash,
            at: st.pos,
            expected: st.end,
        }
    );
    let mut bytes = buf.to_bytes();
    // A backend could return more than asked for; never exceed the wire chunk size.
    bytes.truncate(want as usize);
    st.pos += bytes.len() as u64;
    Ok(Some((bytes, st)))
}

/// Feed `data` to `hasher`, on the blocking pool unless the chunk is small.
async fn hash_chunk(mut hasher: Sha256, data: Bytes) -> Result<Sha256> {
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

/// Whether `hash` is 64 lower-case hex digits.
pub fn is_valid_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_hash(hash: &str) -> Result<()> {
    ensure!(is_valid_hash(hash), InvalidShardHashSnafu { hash });
    Ok(())
}

/// Path of shard `hash` inside the space (`hash` must be valid).
fn shard_path(hash: &str) -> String {
    format!("shards/{}/{hash}", &hash[..2])
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
        hex::encode(Sha256::digest(data))
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
        store.put(futures::stream::iter(items(data, chunk))).await
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
        assert_eq!(stored.sha256, sha_hex(&data));

        let on_disk = store
            .root()
            .join("shards")
            .join(&stored.sha256[..2])
            .join(&stored.sha256);
        assert_eq!(std::fs::read(on_disk).unwrap(), data);
        assert!(files_under(&store.root().join("tmp")).is_empty());
        assert_eq!(
            store.stat(&stored.sha256).await.unwrap(),
            Some(data.len() as u64)
        );

        let chunks = read_chunks(&store, &stored.sha256, 0, 0).await;
        assert!(chunks.iter().all(|c| c.len() <= proto::CHUNK_SIZE));
        assert_eq!(chunks.len(), 4);
        assert_eq!(chunks.concat(), data);
    }

    #[tokio::test]
    async fn ranged_reads_return_the_requested_slice() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let data = pattern(2 * proto::CHUNK_SIZE + 100);
        let hash = put_all(&store, &data, proto::CHUNK_SIZE)
            .await
            .unwrap()
            .sha256;
        let size = data.len() as u64;

        let cases: [(u64, u64, std::ops::Range<usize>); 6] = [
            (10, 20, 10..30),
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
        let hash = put_all(&store, &data, 100).await.unwrap().sha256;

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
        assert_eq!(files_under(&store.root().join("shards")).len(), 1);
        assert!(files_under(&store.root().join("tmp")).is_empty());
    }

    #[tokio::test]
    async fn empty_shard_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let stored = put_all(&store, &[], 10).await.unwrap();
        assert_eq!(stored.size, 0);
        assert_eq!(stored.sha256, sha_hex(b""));
        assert!(read_chunks(&store, &stored.sha256, 0, 0).await.is_empty());
    }

    #[tokio::test]
    async fn aborted_put_leaves_no_shard_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let (tx, rx) = mpsc::channel(4);
        let writer = tokio::spawn({
            let store = store.clone();
            async move { store.put(ReceiverStream::new(rx)).await }
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
        assert!(files_under(&store.root().join("shards")).is_empty());
        assert!(files_under(&store.root().join("tmp")).is_empty());
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
        let stored = store.put(stream).await.unwrap();
        assert_eq!(stored.sha256, sha_hex(b"abc"));
    }

    #[tokio::test]
    async fn sweep_removes_only_old_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let tmp = store.root().join("tmp");
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
    fn registry_refuses_until_registered_then_maps_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let reg = SpaceRegistry::default();
        assert!(matches!(reg.get(SpaceId(1)), Err(Error::NotRegistered)));
        reg.set(HashMap::from([(SpaceId(1), store)]));
        assert_eq!(reg.get(SpaceId(1)).unwrap().name(), "test");
        let err = reg.get(SpaceId(2)).unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound);
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
}
