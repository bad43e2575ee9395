//! Plain files of a user space, for package import and export (ListFiles, ImportFile,
//! ExportFile): the space's storage **root**, working dir *not* prepended (a ticket's
//! `file_path` is "the path within the user's storage space").
//!
//! - Paths are relative, `/`-separated, without `.`/`..`/empty segments ([`check_path`]).
//! - Listings are recursive and streamed, in byte order of the paths (one directory listed
//!   and sorted at a time, depth first: memory is one directory's entries per depth),
//!   regular files only, and
//!   skip JCS's own data: `<working_dir>/shards/`, `<working_dir>/tmp/`, export temp files
//!   (`.jcs-tmp-*`) and TestStorage probes (`.jcs-probe-*`).
//! - Reads go ≤ [`proto::CHUNK_SIZE`] bytes at a time.
//! - Writes are atomic and verified: the bytes are hashed while streaming and the file only
//!   appears (or replaces the previous one) when size and SHA-256 match. On a filesystem
//!   (rename) through `<dir>/.jcs-tmp-<uuid>` then a rename; on object stores straight to
//!   the key, whose upload only becomes visible when the writer is closed (aborted on a
//!   mismatch).

use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;
use common::shard_hash;
use futures::{Stream, TryStreamExt};
use snafu::{ResultExt, ensure};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::error::{
    ContentMismatchSnafu, Error, FileNotFoundSnafu, InvalidFilePathSnafu, ListFilesSnafu,
    NotAFileSnafu, ReadFileSnafu, ReservedPathSnafu, Result, WriteFileSnafu,
};
use crate::probe::PROBE_PREFIX;
use crate::store::{hash_chunk, unix_ms};

/// Name prefix of the temp file an export writes next to its target on a filesystem.
pub const TMP_PREFIX: &str = ".jcs-tmp-";

/// One regular file found by [`FileRoot::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the listed path (for a listed file: its base name).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, Unix ms; 0 when the backend reports none.
    pub modified_ms: i64,
    /// Path from the storage root (what a READ_FILE ticket takes).
    pub full_path: String,
}

/// A stream of the files below a path, in byte order of their path.
pub type FileList = Pin<Box<dyn Stream<Item = Result<FileEntry>> + Send + 'static>>;

/// One entry of [`FileRoot::walk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Listed {
    File(FileEntry),
    /// A directory, relative to the walked path, without a trailing `/`.
    Dir(String),
}

/// A stream of files (and directories) below a path, files in byte order of their path.
pub(crate) type Walk = Pin<Box<dyn Stream<Item = Result<Listed>> + Send + 'static>>;

/// A stream of file bytes, each chunk at most [`proto::CHUNK_SIZE`] bytes.
pub type FileStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send + 'static>>;

/// Check a ticket's `file_path`: relative (no leading `/`), `/`-separated, no empty, `.` or
/// `..` segment, no `\` or NUL. `dir` (listing): `""` is the root and one trailing `/` is
/// allowed (and dropped). Returns the path to use; `InvalidFilePath` (`BadArgument`) else.
pub fn check_path(path: &str, dir: bool) -> Result<&str> {
    let trimmed = match path.strip_suffix('/') {
        Some(rest) if dir && !rest.is_empty() => rest,
        _ => path,
    };
    let reason = if trimmed.is_empty() {
        if dir {
            return Ok("");
        }
        "it must not be empty"
    } else if trimmed.starts_with('/') {
        "it must be relative to the storage root (no leading '/')"
    } else if trimmed.contains('\\') || trimmed.contains('\0') {
        "it must not contain '\\' or NUL"
    } else if trimmed.split('/').any(str::is_empty) {
        "it must not contain empty segments ('//' or a trailing '/')"
    } else if trimmed.split('/').any(|s| s == "." || s == "..") {
        "it must not contain '.' or '..' segments"
    } else {
        return Ok(trimmed);
    };
    InvalidFilePathSnafu { path, reason }.fail()
}

/// Whether a storage error means "no such path" (also a path through a file on a
/// filesystem, `ENOTDIR`).
pub(crate) fn is_missing(err: &opendal::Error) -> bool {
    err.kind() == opendal::ErrorKind::NotFound
        || std::error::Error::source(err)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .is_some_and(|e| e.kind() == std::io::ErrorKind::NotADirectory)
}

/// Base name of `path` (after its last `/`).
fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The files of a space: an operator rooted at the storage root, the space's working dir
/// (whose `shards/` and `tmp/` are JCS's) and the space's label for messages. Cheap to
/// clone.
#[derive(Clone, Debug)]
pub struct FileRoot {
    op: opendal::Operator,
    /// `<working_dir>/shards` and `<working_dir>/tmp` (no leading or trailing `/`).
    internal: [String; 2],
    label: String,
    /// Where the storage root is on this machine, for a local filesystem (listed with
    /// `std::fs`, see [`read_local_dir`]); `None` for object stores.
    local_root: Option<std::path::PathBuf>,
    /// On a local filesystem, list a symlink to a file as that file (a sync's `copyLinks`).
    follow_file_links: bool,
}

impl FileRoot {
    /// Files of the storage `op` is rooted at, where the space's shard store lives under
    /// `working_dir` (`""` = the root itself).
    pub fn new(op: opendal::Operator, working_dir: &str) -> FileRoot {
        let dir = working_dir.trim_matches('/');
        let internal = ["shards", "tmp"].map(|d| {
            if dir.is_empty() {
                d.to_owned()
            } else {
                format!("{dir}/{d}")
            }
        });
        let info = op.info();
        let local_root = (info.scheme() == "fs").then(|| std::path::PathBuf::from(info.root()));
        FileRoot {
            op,
            internal,
            label: String::new(),
            local_root,
            follow_file_links: false,
        }
    }

    /// The same files, listing a symlink to a file on a local filesystem as that file
    /// (its size and mtime) when `follow`; links to directories stay out of listings.
    pub fn following_file_links(mut self, follow: bool) -> FileRoot {
        self.follow_file_links = follow;
        self
    }

    /// The same files, named `label` in messages (`user space N`).
    pub fn with_label(mut self, label: String) -> FileRoot {
        self.label = label;
        self
    }

    /// Where directory `dir` (a storage path, `""` or ending in `/`) is on this machine,
    /// when the storage is a local filesystem (`None` for object stores).
    fn local_dir(&self, dir: &str) -> Option<std::path::PathBuf> {
        self.local_root.as_ref().map(|root| root.join(dir))
    }

    /// Whether `path` is (under) the space's `shards/` or `tmp/` directory.
    pub fn is_reserved(&self, path: &str) -> bool {
        self.internal.iter().any(|dir| {
            path.strip_prefix(dir.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    /// Whether a listing leaves `path` out: JCS's own data (see the module doc).
    pub(crate) fn is_hidden(&self, path: &str) -> bool {
        let name = base_name(path);
        self.is_reserved(path) || name.starts_with(TMP_PREFIX) || name.starts_with(PROBE_PREFIX)
    }

    fn not_found<T>(&self, path: &str) -> Result<T> {
        FileNotFoundSnafu {
            path,
            space: &self.label,
        }
        .fail()
    }

    /// What `path` (not the root) names: `Ok(Ok("path/"))` a directory (on object stores:
    /// a key prefix, asked first as a prefix may share its name with a key), `Ok(Err(_))`
    /// a file (as listed), else `FileNotFound`.
    async fn dir_or_file(&self, path: &str) -> Result<Result<String, FileEntry>> {
        let dir = format!("{path}/");
        match self.op.stat(&dir).await {
            Ok(meta) if meta.is_dir() => return Ok(Ok(dir)),
            Ok(_) => {}
            // On a filesystem `file/` is ENOTDIR: not a directory, maybe a file.
            Err(e) if is_missing(&e) => {}
            Err(source) => return Err(source).context(ListFilesSnafu { path }),
        }
        match self.op.stat(path).await {
            Ok(meta) if meta.is_file() => {
                let modified = meta.last_modified();
                Ok(Err(FileEntry {
                    path: base_name(path).to_owned(),
                    size: meta.content_length(),
                    modified_ms: modified.map_or(0, |m| unix_ms(SystemTime::from(m))),
                    full_path: path.to_owned(),
                }))
            }
            Ok(meta) if meta.is_dir() => Ok(Ok(dir)),
            // Neither file nor directory (a socket, a device…): nothing to import.
            Ok(_) => self.not_found(path),
            Err(e) if is_missing(&e) => self.not_found(path),
            Err(source) => Err(source).context(ListFilesSnafu { path }),
        }
    }

    /// Every regular file below `path` (a checked path, `""` = the root), recursively; or
    /// the file `path` itself (its `path` is then its base name). `FileNotFound` when
    /// nothing exists at `path`. Streamed, never the whole listing in memory.
    pub async fn list(&self, path: &str) -> Result<FileList> {
        let walk = self.walk(path, false).await?;
        Ok(Box::pin(walk.try_filter_map(|listed| async move {
            Ok(match listed {
                Listed::File(file) => Some(file),
                Listed::Dir(_) => None,
            })
        })))
    }

    /// Like [`FileRoot::list`], and with `dirs` also every directory below `path` (what
    /// the backend lists as one: fs directories, object-store keys ending in `/`), hidden
    /// ones excepted.
    pub(crate) async fn walk(&self, path: &str, dirs: bool) -> Result<Walk> {
        let dir = if path.is_empty() {
            String::new()
        } else {
            match self.dir_or_file(path).await? {
                Ok(dir) => dir,
                Err(file) => {
                    return Ok(Box::pin(futures::stream::once(async {
                        Ok(Listed::File(file))
                    })));
                }
            }
        };
        let first = match list_dir(self, &dir, &dir).await {
            Ok(items) => items,
            Err(Error::ListFiles { source, .. }) if is_missing(&source) => {
                return self.not_found(path);
            }
            Err(err) => return Err(err),
        };
        let state = WalkState {
            root: self.clone(),
            dir,
            dirs,
            stack: vec![first.into_iter()],
        };
        Ok(Box::pin(futures::stream::try_unfold(state, walk_next)))
    }

    /// Depth of the working dir below the storage root (`""` → 0, `"a/b"` → 2).
    pub(crate) fn working_dir_depth(&self) -> usize {
        self.internal[0].split('/').count() - 1
    }

    /// The operator on the storage root.
    pub(crate) fn operator(&self) -> &opendal::Operator {
        &self.op
    }

    /// How messages name the space (`user space N`).
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    /// Size and bytes of file `path` (a checked path), read ≤ [`proto::CHUNK_SIZE`] at a
    /// time. `FileNotFound` when missing, `NotAFile` for a directory; a file that shrinks
    /// while being read ends the stream with `FileChanged`.
    pub async fn read(&self, path: &str) -> Result<(u64, FileStream)> {
        let meta = match self.op.stat(path).await {
            Ok(meta) => meta,
            Err(e) if is_missing(&e) => return self.not_found(path),
            Err(source) => return Err(source).context(ReadFileSnafu { path }),
        };
        ensure!(
            meta.is_file(),
            NotAFileSnafu {
                path,
                space: &self.label,
            }
        );
        let size = meta.content_length();
        if size == 0 {
            return Ok((0, Box::pin(futures::stream::empty())));
        }
        let reader = self.op.reader(path).await.context(ReadFileSnafu { path })?;
        Ok((
            size,
            Box::pin(crate::store::chunked(
                reader,
                crate::store::Source::File(path.to_owned()),
                0,
                size,
            )),
        ))
    }

    /// Whether writes go through a temp file renamed into place (a filesystem) rather
    /// than straight to the key (object stores).
    pub(crate) fn staged(&self) -> bool {
        self.op.info().capability().rename
    }

    /// Refuse to write `path` when it is JCS's own data (`ReservedPath`) or, on a
    /// filesystem, an existing directory (`NotAFile`; object stores have no directories: a
    /// key may share its name with a prefix).
    pub async fn check_writable(&self, path: &str) -> Result<()> {
        ensure!(
            !self.is_reserved(path),
            ReservedPathSnafu {
                path,
                space: &self.label,
            }
        );
        if !self.staged() {
            return Ok(());
        }
        match self.op.stat(path).await {
            Ok(meta) if meta.is_dir() => NotAFileSnafu {
                path,
                space: &self.label,
            }
            .fail(),
            Ok(_) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(source) => Err(source).context(WriteFileSnafu { path }),
        }
    }

    /// Write `chunks` as file `path` (a checked path), replacing any file there, atomically:
    /// the file appears only when exactly `size` bytes with SHA-256 `sha256` (lower-case
    /// hex) arrived. Otherwise (`ContentMismatch`, a failed chunk, `cancel`) the previous
    /// file, if any, is left intact and no temp file remains. Returns the size written.
    pub async fn write<S>(
        &self,
        path: &str,
        chunks: S,
        size: u64,
        sha256: &str,
        cancel: &CancellationToken,
    ) -> Result<u64>
    where
        S: Stream<Item = Result<Bytes>> + Unpin + Send,
    {
        self.check_writable(path).await?;
        // A filesystem renames a complete temp file into place; object stores make an
        // upload visible only on close, so they write the key directly.
        let staged = self.staged();
        let target = if staged {
            let tmp = format!("{TMP_PREFIX}{}", uuid::Uuid::new_v4());
            match path.rsplit_once('/') {
                Some((parent, _)) => format!("{parent}/{tmp}"),
                None => tmp,
            }
        } else {
            path.to_owned()
        };
        let mut writer = self
            .op
            .writer(&target)
            .await
            .context(WriteFileSnafu { path })?;
        let written = match self
            .stream_verified(&mut writer, chunks, path, size, sha256, cancel)
            .await
        {
            Ok(()) => writer
                .close()
                .await
                .map(drop)
                .context(WriteFileSnafu { path }),
            Err(err) => Err(err),
        };
        let placed = match written {
            Ok(()) if staged => self
                .op
                .rename(&target, path)
                .await
                .context(WriteFileSnafu { path }),
            Ok(()) => Ok(()),
            Err(err) => {
                // Object stores: drop the multipart upload (the fs writer cannot abort).
                if let Err(e) = writer.abort().await {
                    debug!(space = %self.label, path = %target, error = %e, "failed to abort file write");
                }
                Err(err)
            }
        };
        if let Err(err) = placed {
            if staged && let Err(e) = self.op.delete(&target).await {
                warn!(space = %self.label, path = %target, error = %e, "failed to remove temp file");
            }
            return Err(err);
        }
        debug!(space = %self.label, path, size, "file written");
        Ok(size)
    }

    /// Write the data of `chunks` to `writer` while hashing it; check the total against
    /// `size` (as soon as it exceeds it) and the content against the shard name `sha256`
    /// (hashed with the algorithm the name says) at the end.
    async fn stream_verified<S>(
        &self,
        writer: &mut opendal::Writer,
        mut chunks: S,
        path: &str,
        size: u64,
        sha256: &str,
        cancel: &CancellationToken,
    ) -> Result<()>
    where
        S: Stream<Item = Result<Bytes>> + Unpin + Send,
    {
        let mismatch = |detail: String| {
            ContentMismatchSnafu {
                path,
                space: &self.label,
                detail,
            }
            .build()
        };
        let algorithm = shard_hash::Algorithm::of(sha256).unwrap_or_default();
        let mut hasher = shard_hash::Hasher::new(algorithm);
        let mut written = 0u64;
        loop {
            let next = tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(Error::TransferInterrupted),
                next = chunks.try_next() => next?,
            };
            let Some(data) = next else { break };
            if data.is_empty() {
                continue;
            }
            written += data.len() as u64;
            if written > size {
                return Err(mismatch(format!("more than the expected {size} bytes")));
            }
            let (hashed, wrote) =
                tokio::join!(hash_chunk(hasher, data.clone()), writer.write(data));
            hasher = hashed?;
            wrote.context(WriteFileSnafu { path })?;
        }
        if written != size {
            return Err(mismatch(format!("{written} bytes, expected {size}")));
        }
        let got = hasher.finish();
        if got != sha256 {
            return Err(mismatch(format!(
                "{} {got}, expected {sha256}",
                algorithm.as_str()
            )));
        }
        Ok(())
    }
}

/// One entry of a directory listing, before the walk goes into it.
enum Item {
    /// Full path, ending in `/`.
    Dir(String),
    File(FileEntry),
}

/// Progress of a sorted recursive walk of directory `dir` (`""` or ending in `/`): the
/// entries still to visit of each open directory, deepest last.
struct WalkState {
    root: FileRoot,
    dir: String,
    /// Also yield directories.
    dirs: bool,
    stack: Vec<std::vec::IntoIter<Item>>,
}

/// The entries of directory `dir` (`""` or ending in `/`, not recursive) in byte order of
/// their full path (directories with their trailing `/`), hidden ones left out; file paths
/// relative to `base`. A depth-first walk over them visits the files in byte order of
/// their path, as an object store's flat listing would. Holds one directory's entries.
async fn list_dir(root: &FileRoot, dir: &str, base: &str) -> Result<Vec<Item>> {
    let entries = match root.local_dir(dir) {
        Some(path) => {
            let dir = dir.to_owned();
            let follow = root.follow_file_links;
            tokio::task::spawn_blocking(move || read_local_dir(&path, &dir, follow))
                .await
                .context(crate::error::ListTaskSnafu)?
        }
        None => read_dir_entries(root, dir).await,
    }
    .context(ListFilesSnafu { path: dir })?;
    let mut items = Vec::with_capacity(entries.len());
    for entry in entries {
        let name = entry.full.trim_end_matches('/');
        // The listed directory itself (the root may come back as "/").
        if name == dir.trim_end_matches('/') || root.is_hidden(name) {
            continue;
        }
        match entry.kind {
            RawKind::Dir => {
                let full = if entry.full.ends_with('/') {
                    entry.full
                } else {
                    format!("{}/", entry.full)
                };
                items.push(Item::Dir(full));
            }
            // Symlinks, sockets… are not files to copy.
            RawKind::Other => {}
            RawKind::File { size, modified } => {
                let Some(rel) = entry.full.strip_prefix(base) else {
                    continue;
                };
                if rel.is_empty() {
                    continue;
                }
                // The fs and S3 listers report size and mtime; other backends may need a
                // stat.
                let (size, modified) = match modified {
                    Some(modified) => (size, Some(modified)),
                    None => match root.op.stat(&entry.full).await {
                        Ok(meta) => (
                            meta.content_length(),
                            meta.last_modified().map(SystemTime::from),
                        ),
                        // Removed meanwhile.
                        Err(e) if is_missing(&e) => continue,
                        Err(source) => {
                            return Err(source).context(ListFilesSnafu { path: &entry.full });
                        }
                    },
                };
                items.push(Item::File(FileEntry {
                    path: rel.to_owned(),
                    size,
                    modified_ms: modified.map_or(0, unix_ms),
                    full_path: entry.full,
                }));
            }
        }
    }
    items.sort_unstable_by(|a, b| item_key(a).cmp(item_key(b)));
    Ok(items)
}

/// One entry of a directory as the storage lists it, before filtering.
#[derive(Debug)]
struct RawEntry {
    /// Path from the storage root (a directory's may end in `/`).
    full: String,
    kind: RawKind,
}

#[derive(Debug)]
enum RawKind {
    Dir,
    /// `modified` is `None` when the listing does not say (the caller stats the file).
    File {
        size: u64,
        modified: Option<SystemTime>,
    },
    Other,
}

/// Directory `dir` through the operator's lister.
async fn read_dir_entries(root: &FileRoot, dir: &str) -> opendal::Result<Vec<RawEntry>> {
    let mut lister = root.op.lister(dir).await?;
    let mut out = Vec::new();
    while let Some(entry) = lister.try_next().await? {
        let meta = entry.metadata();
        let kind = if meta.mode().is_dir() {
            RawKind::Dir
        } else if meta.mode().is_file() {
            RawKind::File {
                size: meta.content_length(),
                modified: meta.last_modified().map(SystemTime::from),
            }
        } else {
            RawKind::Other
        };
        out.push(RawEntry {
            full: entry.path().to_owned(),
            kind,
        });
    }
    Ok(out)
}

/// Directory `dir` (the storage path, at `path` on this machine) of a Local space with
/// `std::fs`, on the calling (blocking-pool) thread: one task per directory. The fs
/// operator's lister takes a blocking-pool round trip for every entry's metadata, which
/// was most of a no-change re-sync's time (docs/performance.md). The same entries as the
/// lister: names as lossy UTF-8, symlinks not followed (they are `Other`), an entry
/// removed between the listing and its `lstat` left out. With `follow_file_links`, a
/// symlink whose target is a regular file is that file (the target's size and mtime);
/// other links (to directories, broken) stay `Other`.
fn read_local_dir(
    path: &std::path::Path,
    dir: &str,
    follow_file_links: bool,
) -> opendal::Result<Vec<RawEntry>> {
    let io = |e: std::io::Error| {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => opendal::ErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => opendal::ErrorKind::PermissionDenied,
            _ => opendal::ErrorKind::Unexpected,
        };
        opendal::Error::new(kind, "list a local directory").set_source(e)
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io)? {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(e)),
        };
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(e)),
        };
        let meta = if follow_file_links && meta.is_symlink() {
            match std::fs::metadata(entry.path()) {
                Ok(target) if target.is_file() => target,
                _ => meta,
            }
        } else {
            meta
        };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let kind = if meta.is_dir() {
            RawKind::Dir
        } else if meta.is_file() {
            RawKind::File {
                size: meta.len(),
                modified: Some(meta.modified().map_err(io)?),
            }
        } else {
            RawKind::Other
        };
        out.push(RawEntry {
            full: format!("{dir}{name}"),
            kind,
        });
    }
    Ok(out)
}

fn item_key(item: &Item) -> &str {
    match item {
        Item::Dir(full) => full,
        Item::File(file) => &file.full_path,
    }
}

async fn walk_next(mut st: WalkState) -> Result<Option<(Listed, WalkState)>> {
    loop {
        let Some(top) = st.stack.last_mut() else {
            return Ok(None);
        };
        match top.next() {
            None => {
                st.stack.pop();
            }
            Some(Item::File(file)) => return Ok(Some((Listed::File(file), st))),
            Some(Item::Dir(full)) => {
                let items = match list_dir(&st.root, &full, &st.dir).await {
                    Ok(items) => items,
                    // Removed meanwhile.
                    Err(Error::ListFiles { source, .. }) if is_missing(&source) => Vec::new(),
                    Err(err) => return Err(err),
                };
                st.stack.push(items.into_iter());
                if st.dirs {
                    let rel = full
                        .strip_prefix(st.dir.as_str())
                        .unwrap_or_default()
                        .trim_end_matches('/')
                        .to_owned();
                    if !rel.is_empty() {
                        return Ok(Some((Listed::Dir(rel), st)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use common::{CodedError, ErrorCode};
    use futures::StreamExt;

    use super::*;

    fn fs_root(dir: &std::path::Path, working_dir: &str) -> FileRoot {
        let op =
            opendal::Operator::new(opendal::services::Fs::default().root(dir.to_str().unwrap()))
                .unwrap();
        FileRoot::new(op, working_dir).with_label("user space 1".into())
    }

    fn sha_hex(data: &[u8]) -> String {
        shard_hash::name_of(shard_hash::Algorithm::Sha256, data)
    }

    fn chunks(data: &[u8], size: usize) -> impl Stream<Item = Result<Bytes>> + Unpin + Send {
        let parts: Vec<Result<Bytes>> = data
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures::stream::iter(parts)
    }

    fn entries_of(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn paths_are_relative_and_contained() {
        assert_eq!(check_path("a/b.txt", false).unwrap(), "a/b.txt");
        assert_eq!(check_path("", true).unwrap(), "");
        assert_eq!(check_path("a/b/", true).unwrap(), "a/b");
        assert_eq!(check_path("a b/ü.txt", false).unwrap(), "a b/ü.txt");
        for (bad, dir) in [
            ("", false),
            ("/", true),
            ("/a", true),
            ("/a", false),
            ("a/", false),
            ("a//b", true),
            ("a//", true),
            ("../x", false),
            ("a/../x", true),
            ("./a", false),
            ("a/.", true),
            ("..", true),
            ("a\\b", false),
            ("a\0b", false),
        ] {
            let err = check_path(bad, dir).unwrap_err();
            assert_eq!(err.code(), ErrorCode::BadArgument, "{bad:?}: {err}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn internals_are_reserved_and_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs_root(dir.path(), "/jcs/w/");
        assert!(root.is_reserved("jcs/w/shards"));
        assert!(root.is_reserved("jcs/w/shards/ab/cd"));
        assert!(root.is_reserved("jcs/w/tmp/x"));
        assert!(!root.is_reserved("jcs/w/shardsx"));
        assert!(!root.is_reserved("shards/ab"));
        assert!(!root.is_reserved("jcs/w/other"));
        assert!(root.is_hidden("a/.jcs-tmp-123"));
        assert!(root.is_hidden("jcs/w/.jcs-probe-1"));
        assert!(!root.is_hidden("a/jcs-tmp"));
        let bare = fs_root(dir.path(), "");
        assert!(bare.is_reserved("shards/ab/x") && bare.is_reserved("tmp"));
        assert!(!bare.is_reserved("data/shards/x"));
    }

    /// The local fast path lists what the fs operator's lister does (files with size and
    /// mtime, directories, sockets as neither, names under the directory's prefix), except
    /// that it does not follow symlinks.
    #[tokio::test]
    async fn local_listing_matches_the_operator_lister() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs_root(dir.path(), "");
        let d = dir.path().join("top/sub");
        std::fs::create_dir_all(d.join("inner")).unwrap();
        std::fs::write(d.join("a.bin"), b"12345").unwrap();
        std::fs::write(d.join("é ü.txt"), b"x").unwrap();
        std::fs::write(d.join(".jcs-tmp-1"), b"t").unwrap();
        std::os::unix::fs::symlink(d.join("a.bin"), d.join("link")).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(d.join("sock")).unwrap();
        let flat = |entries: Vec<RawEntry>| {
            let mut v: Vec<_> = entries
                .into_iter()
                .map(|e| {
                    let kind = match e.kind {
                        RawKind::Dir => "dir".to_owned(),
                        RawKind::File { size, modified } => {
                            format!("file {size} {:?}", modified.map(unix_ms))
                        }
                        RawKind::Other => "other".to_owned(),
                    };
                    (e.full.trim_end_matches('/').to_owned(), kind)
                })
                .filter(|(full, _)| full != "top/sub")
                .collect();
            v.sort();
            v
        };
        let local =
            read_local_dir(&root.local_dir("top/sub/").unwrap(), "top/sub/", false).unwrap();
        let listed = read_dir_entries(&root, "top/sub/").await.unwrap();
        let local = flat(local);
        // The one difference: the operator follows a symlink to a file (its listing says
        // "unknown" and opendal stats the target); the local listing skips symlinks, as
        // rclone does without --copy-links (docs/api.md, sync tasks).
        let but_links = |v: &[(String, String)]| -> Vec<(String, String)> {
            v.iter()
                .filter(|(f, _)| !f.ends_with("/link"))
                .cloned()
                .collect()
        };
        assert_eq!(but_links(&local), but_links(&flat(listed)));
        let kinds: Vec<(&str, &str)> = local
            .iter()
            .map(|(full, k)| (&full["top/sub/".len()..], k.split(' ').next().unwrap()))
            .collect();
        assert_eq!(
            kinds,
            [
                (".jcs-tmp-1", "file"),
                ("a.bin", "file"),
                ("inner", "dir"),
                ("link", "other"),
                ("sock", "other"),
                ("é ü.txt", "file"),
            ]
        );
        assert!(local[1].1.starts_with("file 5 Some("), "{local:?}");

        let missing =
            read_local_dir(&root.local_dir("nope/").unwrap(), "nope/", false).unwrap_err();
        assert!(is_missing(&missing), "{missing}");
        let through_file = read_local_dir(&d.join("a.bin"), "top/sub/a.bin/", false).unwrap_err();
        assert!(is_missing(&through_file), "{through_file}");
    }

    /// `copyLinks`: a link to a file lists as that file (the target's size and mtime, the
    /// link's name); links to directories and broken links stay out, and so do links in a
    /// root that does not follow them.
    #[tokio::test]
    async fn a_root_following_file_links_lists_their_targets() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("src");
        std::fs::create_dir_all(d.join("inner")).unwrap();
        std::fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
        std::fs::write(dir.path().join("elsewhere/target.bin"), b"1234567").unwrap();
        std::fs::write(d.join("inner/x"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere/target.bin"), d.join("link"))
            .unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), d.join("dirlink")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone"), d.join("broken")).unwrap();
        let listed = |root: FileRoot| async move {
            let mut v: Vec<(String, u64)> = root
                .list("src")
                .await
                .unwrap()
                .map_ok(|f| (f.path, f.size))
                .try_collect()
                .await
                .unwrap();
            v.sort();
            v
        };
        let following = fs_root(dir.path(), "").following_file_links(true);
        assert_eq!(
            listed(following).await,
            [("inner/x".to_owned(), 1), ("link".to_owned(), 7)]
        );
        assert_eq!(
            listed(fs_root(dir.path(), "")).await,
            [("inner/x".to_owned(), 1)]
        );
    }

    #[tokio::test]
    async fn list_read_and_missing_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs_root(dir.path(), "");
        std::fs::create_dir_all(dir.path().join("d/e")).unwrap();
        std::fs::create_dir_all(dir.path().join("empty")).unwrap();
        std::fs::create_dir_all(dir.path().join("shards/ab")).unwrap();
        std::fs::write(dir.path().join("d/one"), b"1").unwrap();
        std::fs::write(dir.path().join("d/e/two"), b"22").unwrap();
        std::fs::write(dir.path().join("shards/ab/x"), b"s").unwrap();
        std::fs::write(dir.path().join("d/.jcs-tmp-x"), b"t").unwrap();

        let mut all: Vec<FileEntry> = root.list("").await.unwrap().try_collect().await.unwrap();
        all.sort_by(|a, b| a.path.cmp(&b.path));
        let names: Vec<(&str, &str, u64)> = all
            .iter()
            .map(|e| (e.path.as_str(), e.full_path.as_str(), e.size))
            .collect();
        assert_eq!(names, [("d/e/two", "d/e/two", 2), ("d/one", "d/one", 1)]);
        assert!(all.iter().all(|e| e.modified_ms > 0));

        let mut sub: Vec<FileEntry> = root.list("d").await.unwrap().try_collect().await.unwrap();
        sub.sort_by(|a, b| a.path.cmp(&b.path));
        let names: Vec<(&str, &str)> = sub
            .iter()
            .map(|e| (e.path.as_str(), e.full_path.as_str()))
            .collect();
        assert_eq!(names, [("e/two", "d/e/two"), ("one", "d/one")]);

        let one: Vec<FileEntry> = root
            .list("d/e/two")
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].path.as_str(), one[0].size), ("two", 2));
        assert!(root.list("empty").await.unwrap().next().await.is_none());

        for missing in ["nope", "d/one/x", "d/nope/x"] {
            let err = root.list(missing).await.err().unwrap();
            assert_eq!(err.code(), ErrorCode::NotFound, "{missing}: {err}");
            assert_eq!(
                err.to_string(),
                format!("path {missing:?} does not exist in user space 1")
            );
            let err = root.read(missing).await.err().unwrap();
            assert_eq!(err.code(), ErrorCode::NotFound, "{missing}: {err}");
        }
        let err = root.read("d").await.err().unwrap();
        assert!(matches!(err, Error::NotAFile { .. }), "{err}");

        let (size, data) = root.read("d/e/two").await.unwrap();
        assert_eq!(size, 2);
        let data: Vec<Bytes> = data.try_collect().await.unwrap();
        assert_eq!(data.concat(), b"22");
    }

    #[tokio::test]
    async fn walks_are_in_byte_order_of_the_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs_root(dir.path(), "");
        for f in ["a/x", "a.txt", "a0", "a/b/y", "a-", "b", "a/b.c", "A"] {
            let path = dir.path().join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"1").unwrap();
        }
        std::fs::create_dir_all(dir.path().join("a/empty")).unwrap();
        let walked: Vec<Listed> = root
            .walk("", true)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let names: Vec<String> = walked
            .iter()
            .map(|l| match l {
                Listed::File(f) => f.path.clone(),
                Listed::Dir(d) => format!("{d}/"),
            })
            .collect();
        assert_eq!(
            names,
            [
                "A", "a-", "a.txt", "a/", "a/b.c", "a/b/", "a/b/y", "a/empty/", "a/x", "a0", "b"
            ]
        );
        let files: Vec<String> = names.into_iter().filter(|n| !n.ends_with('/')).collect();
        let mut sorted = files.clone();
        sorted.sort();
        assert_eq!(files, sorted);
    }

    #[tokio::test]
    async fn writes_are_atomic_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs_root(dir.path(), "w");
        let cancel = CancellationToken::new();
        let data: Vec<u8> = (0..3 * proto::CHUNK_SIZE + 17)
            .map(|i| (i % 253) as u8)
            .collect();
        let sha = sha_hex(&data);
        let n = data.len() as u64;
        let size = root
            .write(
                "x/y/f.bin",
                chunks(&data, proto::CHUNK_SIZE),
                n,
                &sha,
                &cancel,
            )
            .await
            .unwrap();
        assert_eq!(size, n);
        let file = dir.path().join("x/y/f.bin");
        assert_eq!(std::fs::read(&file).unwrap(), data);

        // Wrong size (short, long) or hash: the previous file stays, no temp remains.
        let other = b"other content".to_vec();
        let cases = [
            (other.len() as u64 + 1, sha_hex(&other)),
            (other.len() as u64 - 1, sha_hex(&other)),
            (other.len() as u64, sha_hex(b"something else")),
        ];
        for (size, sha) in cases {
            let err = root
                .write("x/y/f.bin", chunks(&other, 4), size, &sha, &cancel)
                .await
                .unwrap_err();
            assert!(matches!(err, Error::ContentMismatch { .. }), "{err}");
            assert_eq!(err.code(), ErrorCode::BadArgument);
            assert_eq!(std::fs::read(&file).unwrap(), data);
            assert_eq!(entries_of(&dir.path().join("x/y")), ["f.bin"]);
        }
        // A failing source: same.
        let failing = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"abc")),
            Err(Error::TransferInterrupted),
        ]);
        let err = root
            .write("x/y/f.bin", failing, 10, &sha, &cancel)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::TransferInterrupted), "{err}");
        assert_eq!(entries_of(&dir.path().join("x/y")), ["f.bin"]);

        // Replacing works, also with an empty file; at the root too.
        root.write(
            "x/y/f.bin",
            chunks(&other, 5),
            other.len() as u64,
            &sha_hex(&other),
            &cancel,
        )
        .await
        .unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), other);
        let empty = futures::stream::iter(Vec::<Result<Bytes>>::new());
        root.write("top", empty, 0, &sha_hex(b""), &cancel)
            .await
            .unwrap();
        assert_eq!(std::fs::read(dir.path().join("top")).unwrap(), b"");

        // Cancelled before anything arrived: nothing written.
        let cancelled = CancellationToken::new();
        cancelled.cancel();
        let err = root
            .write(
                "new.bin",
                chunks(&other, 5),
                other.len() as u64,
                &sha_hex(&other),
                &cancelled,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unavailable);
        assert_eq!(entries_of(dir.path()), ["top", "x"]);

        // JCS's own data and directories cannot be written.
        for reserved in ["w/shards", "w/shards/ab/cd", "w/tmp/x"] {
            let err = root.check_writable(reserved).await.unwrap_err();
            assert!(matches!(err, Error::ReservedPath { .. }), "{err}");
            assert_eq!(err.code(), ErrorCode::BadArgument);
        }
        let err = root.check_writable("x/y").await.unwrap_err();
        assert!(matches!(err, Error::NotAFile { .. }), "{err}");
        root.check_writable("shards/x").await.unwrap();
    }
}
