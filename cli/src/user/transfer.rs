//! `jcs cp`: uploads (single request, or resumable multipart for large files) and
//! downloads (resumable ranged reads into a temp file, then rename), all streamed in
//! chunks of at most 1 MiB.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use super::api::{Api, Object};
use super::error::{Error, Result};
use super::output::Out;

/// Upper bound of one chunk of object bytes in memory.
pub const CHUNK: usize = 1024 * 1024;

/// Knobs of a transfer.
#[derive(Debug, Clone)]
pub struct TransferOptions {
    /// Files (or parts of one large file) in flight at once.
    pub jobs: usize,
    /// Files at least this big go through multipart upload.
    pub multipart_threshold: u64,
    /// How small files are packed into shared upload requests.
    pub pack: PackLimits,
    pub part_size: u64,
    /// Where resumable-upload state files live.
    pub state_dir: PathBuf,
    /// Test hook (`JCS_TEST_ABORT_AFTER_PARTS`): stop after this many parts were uploaded.
    pub abort_after_parts: Option<u64>,
}

/// What one file transfer did.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileReport {
    pub path: String,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(rename = "objectID")]
    pub object_id: Option<u64>,
    /// Multipart only: parts found already uploaded by an earlier run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_parts: Option<u64>,
    /// Multipart only: parts uploaded by this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uploaded_parts: Option<u64>,
    /// Download only: bytes that were already in the partial file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_bytes: Option<u64>,
}

/// Percent-encode an object path for the `filename` of an upload part.
fn encode_path(path: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(path, SET).to_string()
}

fn file_stream(
    file: tokio::fs::File,
    len: u64,
    bar: ProgressBar,
    total: Option<Arc<ProgressBar>>,
) -> reqwest::Body {
    let stream = ReaderStream::with_capacity(file.take(len), CHUNK)
        .inspect_ok(move |b| advance(&bar, total.as_deref(), b.len() as u64));
    reqwest::Body::wrap_stream(stream)
}

/// Upload one local file to `path` in `package_id`.
pub async fn upload_file(
    api: &Api,
    out: &Out,
    opts: &TransferOptions,
    package_id: u64,
    local: &Path,
    path: &str,
    total: Option<Arc<ProgressBar>>,
) -> Result<FileReport> {
    let meta = tokio::fs::metadata(local)
        .await
        .map_err(|e| Error::io("reading", local, e))?;
    let size = meta.len();
    if size >= opts.multipart_threshold && size > 0 {
        return upload_multipart(api, out, opts, package_id, local, path, &meta, total).await;
    }
    let file = tokio::fs::File::open(local)
        .await
        .map_err(|e| Error::io("opening", local, e))?;
    let bar = file_bar(out, size, path, total.as_deref());
    let part = reqwest::multipart::Part::stream_with_length(
        file_stream(file, size, bar.clone(), total),
        size,
    )
    .file_name(encode_path(path));
    let form = reqwest::multipart::Form::new()
        .text("info", json!({ "packageID": package_id }).to_string())
        .part("files", part);
    #[derive(Deserialize)]
    struct D {
        uploadeds: Vec<Object>,
    }
    let d: std::result::Result<D, Error> = api.post_form("object/upload", form).await;
    out.remove(&bar);
    let d = d?;
    Ok(FileReport {
        path: path.to_owned(),
        bytes: size,
        object_id: d.uploadeds.first().map(|o| o.object_id),
        ..Default::default()
    })
}

/// Small files are packed into one `/v1/object/upload` request each (the gateway stores
/// the files of a request concurrently and commits them in shared transactions), which
/// saves a round trip, a begin and a commit per file.
#[derive(Debug, Clone, Copy)]
pub struct PackLimits {
    /// Files at most this big are packed (they are read whole, one at a time, as their part
    /// of the request body is sent: at most one such file per request in memory).
    pub file_max: u64,
    /// At most this many files per request (1: no packing).
    pub files: usize,
    /// At most this many bytes of files per request (a single file may exceed it).
    pub bytes: u64,
}

/// One local file to upload to `path`.
#[derive(Debug, Clone)]
pub struct UploadItem {
    pub local: PathBuf,
    pub path: String,
    pub size: u64,
}

/// The units of work of a multi-file upload: a pack of small files (one request) or one
/// file on its own (single request or multipart).
#[derive(Debug)]
pub enum UploadJob {
    Pack(Vec<UploadItem>),
    One(UploadItem),
}

/// Split `items` (in order) into jobs: consecutive small files are packed within `limits`,
/// every other file is a job of its own.
pub fn plan_uploads(items: Vec<UploadItem>, opts: &TransferOptions) -> Vec<UploadJob> {
    let limits = opts.pack;
    let mut jobs = Vec::new();
    let mut pack: Vec<UploadItem> = Vec::new();
    let mut pack_bytes = 0u64;
    let flush = |pack: &mut Vec<UploadItem>, jobs: &mut Vec<UploadJob>| match pack.len() {
        0 => {}
        1 => jobs.push(UploadJob::One(pack.remove(0))),
        _ => jobs.push(UploadJob::Pack(std::mem::take(pack))),
    };
    for item in items {
        let small = limits.files > 1
            && item.size <= limits.file_max
            && item.size < opts.multipart_threshold;
        if !small {
            jobs.push(UploadJob::One(item));
            continue;
        }
        if !pack.is_empty() && (pack.len() >= limits.files || pack_bytes + item.size > limits.bytes)
        {
            flush(&mut pack, &mut jobs);
            pack_bytes = 0;
        }
        pack_bytes += item.size;
        pack.push(item);
    }
    flush(&mut pack, &mut jobs);
    jobs
}

/// The body of one packed file: read whole when its part is reached (it is at most
/// [`PackLimits::file_max`] bytes), checked against the size announced in the form.
fn small_file_stream(
    local: PathBuf,
    len: u64,
    sent: Arc<AtomicU64>,
    total: Option<Arc<ProgressBar>>,
) -> reqwest::Body {
    let stream = futures::stream::once(async move {
        let bytes = tokio::fs::read(&local).await?;
        if bytes.len() as u64 != len {
            return Err(std::io::Error::other(format!(
                "{} changed size during the upload ({len} -> {} bytes)",
                local.display(),
                bytes.len()
            )));
        }
        sent.fetch_add(len, Ordering::Relaxed);
        if let Some(t) = &total {
            t.inc(len);
        }
        Ok::<_, std::io::Error>(bytes::Bytes::from(bytes))
    });
    reqwest::Body::wrap_stream(stream)
}

/// Upload a pack of small files in one request. When the request fails, the files are
/// uploaded again one by one so that each error names its file. A request fails as a whole
/// before any commit; only a failure during the commit phase can leave some of its files
/// committed, and uploading those again stores the same content at the same path (same
/// object id, same shard: only `updateTime` moves), so nothing is duplicated.
pub async fn upload_pack(
    api: &Api,
    out: &Out,
    opts: &TransferOptions,
    package_id: u64,
    items: &[UploadItem],
    total: Option<Arc<ProgressBar>>,
) -> Vec<std::result::Result<FileReport, (String, Error)>> {
    let sent = Arc::new(AtomicU64::new(0));
    let mut form = reqwest::multipart::Form::new()
        .text("info", json!({ "packageID": package_id }).to_string());
    for item in items {
        let body = small_file_stream(item.local.clone(), item.size, sent.clone(), total.clone());
        let part = reqwest::multipart::Part::stream_with_length(body, item.size)
            .file_name(encode_path(&item.path));
        form = form.part("files", part);
    }
    #[derive(Deserialize)]
    struct D {
        uploadeds: Vec<Object>,
    }
    match api.post_form::<D>("object/upload", form).await {
        Ok(d) if d.uploadeds.len() == items.len() => items
            .iter()
            .zip(d.uploadeds)
            .map(|(item, o)| {
                Ok(FileReport {
                    path: item.path.clone(),
                    bytes: item.size,
                    object_id: Some(o.object_id),
                    ..Default::default()
                })
            })
            .collect(),
        _ => {
            // Count the bytes again as the files are retried one by one.
            if let Some(t) = &total {
                t.dec(sent.load(Ordering::Relaxed));
            }
            let mut reports = Vec::with_capacity(items.len());
            for item in items {
                reports.push(
                    upload_file(
                        api,
                        out,
                        opts,
                        package_id,
                        &item.local,
                        &item.path,
                        total.clone(),
                    )
                    .await
                    .map_err(|e| (item.local.display().to_string(), e)),
                );
            }
            reports
        }
    }
}

/// The persisted state of one resumable multipart upload.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct UploadState {
    url: String,
    package_id: u64,
    path: String,
    /// Where the multipart object lives until it is complete (`path`, or a temp name when
    /// `path` already holds an object to be replaced).
    upload_path: String,
    local: PathBuf,
    size: u64,
    mtime_ns: i128,
    part_size: u64,
    object_id: u64,
    done: BTreeSet<u32>,
}

fn mtime_ns(meta: &std::fs::Metadata) -> i128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn state_file(opts: &TransferOptions, url: &str, package_id: u64, path: &str) -> PathBuf {
    let key = sha2::Sha256::digest(format!("{url}\n{package_id}\n{path}").as_bytes());
    opts.state_dir
        .join("uploads")
        .join(format!("{}.json", hex::encode(&key[..16])))
}

async fn save_state(file: &Path, state: &UploadState) -> Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| Error::io("creating", dir, e))?;
    let tmp = file.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(state)
        .map_err(|e| Error::usage(format!("cannot encode upload state: {e}")))?;
    tokio::fs::write(&tmp, text)
        .await
        .map_err(|e| Error::io("writing", &tmp, e))?;
    tokio::fs::rename(&tmp, file)
        .await
        .map_err(|e| Error::io("renaming", &tmp, e))
}

async fn load_state(file: &Path) -> Option<UploadState> {
    let text = tokio::fs::read(file).await.ok()?;
    serde_json::from_slice(&text).ok()
}

#[allow(clippy::too_many_arguments)]
async fn upload_multipart(
    api: &Api,
    out: &Out,
    opts: &TransferOptions,
    package_id: u64,
    local: &Path,
    path: &str,
    meta: &std::fs::Metadata,
    total: Option<Arc<ProgressBar>>,
) -> Result<FileReport> {
    let size = meta.len();
    let part_size = opts.part_size.max(1);
    let parts = size.div_ceil(part_size);
    if parts > 10_000 {
        return Err(Error::usage(format!(
            "{} needs {parts} parts of {part_size} bytes; at most 10000 are allowed (raise --part-size)",
            local.display()
        )));
    }
    let local_abs = std::fs::canonicalize(local).map_err(|e| Error::io("resolving", local, e))?;
    let url = api.url("");
    let sfile = state_file(opts, &url, package_id, path);
    let mtime = mtime_ns(meta);

    // Resume when the state matches this file and its multipart object still exists.
    let mut state = None;
    if let Some(s) = load_state(&sfile).await {
        let same_file = s.local == local_abs
            && s.size == size
            && s.mtime_ns == mtime
            && s.part_size == part_size;
        let alive = match api.object_at(package_id, &s.upload_path).await? {
            Some(o) => o.object_id == s.object_id && o.is_multipart_pending(),
            None => false,
        };
        if same_file && alive {
            state = Some(s);
        } else {
            if alive {
                api.delete_objects(&[s.object_id]).await?;
            }
            let _ = tokio::fs::remove_file(&sfile).await;
        }
    }
    let mut state = match state {
        Some(s) => s,
        None => {
            let upload_path = match api.object_at(package_id, path).await? {
                Some(_) => format!("{path}.jcs-upload-{:016x}", rand_u64()),
                None => path.to_owned(),
            };
            #[derive(Deserialize)]
            struct D {
                object: Object,
            }
            let d: D = api
                .post(
                    "object/newMultipartUpload",
                    &json!({ "packageID": package_id, "path": upload_path }),
                )
                .await?;
            let s = UploadState {
                url: url.clone(),
                package_id,
                path: path.to_owned(),
                upload_path,
                local: local_abs.clone(),
                size,
                mtime_ns: mtime,
                part_size,
                object_id: d.object.object_id,
                done: BTreeSet::new(),
            };
            save_state(&sfile, &s).await?;
            s
        }
    };
    let resumed = state.done.len() as u64;
    let object_id = state.object_id;

    let bar = file_bar(out, size, path, total.as_deref());
    let already: u64 = state
        .done
        .iter()
        .map(|&i| part_len(size, part_size, i))
        .sum();
    advance(&bar, total.as_deref(), already);

    let todo: Vec<u32> = (1..=parts as u32)
        .filter(|i| !state.done.contains(i))
        .collect();
    let uploaded = Arc::new(AtomicU64::new(0));
    let state_lock = tokio::sync::Mutex::new(&mut state);
    let results = futures::stream::iter(todo)
        .map(|index| {
            let (bar, total, uploaded) = (bar.clone(), total.clone(), uploaded.clone());
            let state_lock = &state_lock;
            let sfile = &sfile;
            let local_abs = &local_abs;
            async move {
                if let Some(limit) = opts.abort_after_parts
                    && uploaded.load(Ordering::SeqCst) >= limit
                {
                    return Err(Error::TestAbort { parts: limit });
                }
                let offset = (index as u64 - 1) * part_size;
                let len = part_len(size, part_size, index);
                let mut file = tokio::fs::File::open(local_abs)
                    .await
                    .map_err(|e| Error::io("opening", local_abs, e))?;
                file.seek(std::io::SeekFrom::Start(offset))
                    .await
                    .map_err(|e| Error::io("seeking", local_abs, e))?;
                let part = reqwest::multipart::Part::stream_with_length(
                    file_stream(file, len, bar, total),
                    len,
                )
                .file_name("part");
                let form = reqwest::multipart::Form::new()
                    .text(
                        "info",
                        json!({ "objectID": object_id, "index": index }).to_string(),
                    )
                    .part("files", part);
                let _: Value = api.post_form("object/uploadPart", form).await?;
                let mut st = state_lock.lock().await;
                st.done.insert(index);
                save_state(sfile, &st).await?;
                uploaded.fetch_add(1, Ordering::SeqCst);
                Ok::<(), Error>(())
            }
        })
        .buffer_unordered(opts.jobs.max(1))
        .collect::<Vec<_>>()
        .await;
    let _ = state_lock.into_inner();
    out.remove(&bar);
    if let Some(e) = results.into_iter().find_map(|r| r.err()) {
        return Err(e);
    }

    let indexes: Vec<u32> = (1..=parts as u32).collect();
    #[derive(Deserialize)]
    struct Done {
        object: Object,
    }
    let done: Done = api
        .post(
            "object/completeMultipartUpload",
            &json!({ "objectID": object_id, "indexes": indexes }),
        )
        .await?;
    if state.upload_path != state.path {
        // Replace the old object: delete it, then move the new one into its place.
        if let Some(old) = api.object_at(package_id, &state.path).await? {
            api.delete_objects(&[old.object_id]).await?;
        }
        #[derive(Deserialize)]
        struct Moved {
            successes: Vec<u64>,
        }
        let m: Moved = api
            .post(
                "object/move",
                &json!({ "movings": [{ "objectID": object_id, "packageID": package_id, "path": state.path }] }),
            )
            .await?;
        if !m.successes.contains(&object_id) {
            return Err(Error::Api {
                endpoint: "object/move".into(),
                status: 409,
                code: "OperationFailed".into(),
                message: format!(
                    "uploaded to {} but could not move it to {}",
                    state.upload_path, state.path
                ),
            });
        }
    }
    let _ = tokio::fs::remove_file(&sfile).await;
    Ok(FileReport {
        path: path.to_owned(),
        bytes: done.object.size(),
        object_id: Some(object_id),
        resumed_parts: Some(resumed),
        uploaded_parts: Some(uploaded.load(Ordering::SeqCst)),
        ..Default::default()
    })
}

fn part_len(size: u64, part_size: u64, index: u32) -> u64 {
    let offset = (index as u64 - 1) * part_size;
    part_size.min(size.saturating_sub(offset))
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    // A failing OS RNG only weakens the uniqueness of a temp name; fall back to the clock.
    if getrandom::fill(&mut b).is_err() {
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

/// The partial file a download of `obj` to `dest` writes before the rename.
fn partial_path(dest: &Path, obj: &Object) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into());
    let tag: String = obj.file_hash.chars().skip(4).take(16).collect();
    dest.with_file_name(format!(".{name}.{tag}.jcs-part"))
}

/// Download `obj` to `dest`, resuming from a partial file of an earlier attempt.
pub async fn download_object(
    api: &Api,
    out: &Out,
    obj: &Object,
    dest: &Path,
    total: Option<Arc<ProgressBar>>,
) -> Result<FileReport> {
    if obj.is_multipart_pending() {
        return Err(Error::Api {
            endpoint: "object/download".into(),
            status: 409,
            code: "OperationFailed".into(),
            message: format!("{} is an unfinished multipart upload", obj.path),
        });
    }
    let size = obj.size();
    if size <= CHUNK as u64 {
        return download_small(api, out, obj, dest, total).await;
    }
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| Error::io("creating", dir, e))?;
    }
    let part = partial_path(dest, obj);
    let mut have = match tokio::fs::metadata(&part).await {
        Ok(m) if m.len() <= size => m.len(),
        _ => 0,
    };
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .read(true)
        .truncate(false)
        .open(&part)
        .await
        .map_err(|e| Error::io("opening", &part, e))?;
    file.set_len(have)
        .await
        .map_err(|e| Error::io("truncating", &part, e))?;
    // Hash what an earlier attempt already wrote.
    let mut hasher = sha2::Sha256::new();
    if have > 0 {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| Error::io("reading", &part, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    let resumed = have;
    let bar = file_bar(out, size, &obj.path, total.as_deref());
    advance(&bar, total.as_deref(), have);
    if have < size {
        let resp = api.download(obj.object_id, have).await?;
        let mut stream = resp.bytes_stream();
        file.seek(std::io::SeekFrom::Start(have))
            .await
            .map_err(|e| Error::io("seeking", &part, e))?;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(_) => break, // cut short: keep the partial file for a resume
            };
            file.write_all(&chunk)
                .await
                .map_err(|e| Error::io("writing", &part, e))?;
            hasher.update(&chunk);
            have += chunk.len() as u64;
            advance(&bar, total.as_deref(), chunk.len() as u64);
        }
    }
    file.flush()
        .await
        .map_err(|e| Error::io("writing", &part, e))?;
    drop(file);
    out.remove(&bar);
    if let Err(e) = check_received(obj, have, hasher.finalize()) {
        // A short file stays for a resume; one with other bytes is of no use.
        if matches!(e, Error::HashMismatch { .. }) {
            let _ = tokio::fs::remove_file(&part).await;
        }
        return Err(e);
    }
    tokio::fs::rename(&part, dest)
        .await
        .map_err(|e| Error::io("renaming", &part, e))?;
    Ok(FileReport {
        path: dest.display().to_string(),
        bytes: size,
        object_id: Some(obj.object_id),
        resumed_bytes: (resumed > 0).then_some(resumed),
        ..Default::default()
    })
}

/// [`download_object`] of an object of at most [`CHUNK`] bytes: the body is received and
/// hash-checked in memory (bounded by the chunk size), then the file is written (to its
/// partial name, then renamed, replacing any partial file of an earlier attempt) in one
/// blocking task instead of a file-system hop per step. There is nothing to resume: a cut
/// download writes nothing.
async fn download_small(
    api: &Api,
    out: &Out,
    obj: &Object,
    dest: &Path,
    total: Option<Arc<ProgressBar>>,
) -> Result<FileReport> {
    let size = obj.size();
    let bar = file_bar(out, size, &obj.path, total.as_deref());
    let mut data = Vec::with_capacity(size as usize);
    let mut got = 0u64;
    if size > 0 {
        let resp = api.download(obj.object_id, 0).await?;
        let mut stream = resp.bytes_stream();
        while let Some(Ok(chunk)) = stream.next().await {
            got += chunk.len() as u64;
            if got > size {
                break; // more than the object has: refused below, nothing kept
            }
            data.extend_from_slice(&chunk);
            advance(&bar, total.as_deref(), chunk.len() as u64);
        }
    }
    out.remove(&bar);
    check_received(obj, got, sha2::Sha256::digest(&data))?;
    let part = partial_path(dest, obj);
    let to = dest.to_path_buf();
    tokio::task::spawn_blocking(move || write_then_rename(&part, &to, &data))
        .await
        .map_err(|e| Error::io("writing", dest, std::io::Error::other(e.to_string())))??;
    Ok(FileReport {
        path: dest.display().to_string(),
        bytes: size,
        object_id: Some(obj.object_id),
        ..Default::default()
    })
}

/// The progress bar of one file of `size` bytes: hidden when the `total` bar of a tree
/// counts its bytes.
fn file_bar(out: &Out, size: u64, path: &str, total: Option<&ProgressBar>) -> ProgressBar {
    if total.is_some() {
        ProgressBar::hidden()
    } else {
        out.bytes_bar(size, path)
    }
}

/// Count `n` more bytes on a file's bar and on the `total` bar of its tree, if any.
fn advance(bar: &ProgressBar, total: Option<&ProgressBar>, n: u64) {
    bar.inc(n);
    if let Some(t) = total {
        t.inc(n);
    }
}

/// Refuse a download of `obj` that received `got` bytes (`ShortDownload` unless exactly
/// its size) or whose content's SHA-256 is not its `fileHash` (`HashMismatch`).
fn check_received(obj: &Object, got: u64, sha256: impl AsRef<[u8]>) -> Result<()> {
    if got != obj.size() {
        return Err(Error::ShortDownload {
            path: obj.path.clone(),
            got,
            expected: obj.size(),
        });
    }
    let hash = common::hash::file_hash(sha256);
    if hash != obj.file_hash {
        return Err(Error::HashMismatch {
            path: obj.path.clone(),
            expected: obj.file_hash.clone(),
            got: hash,
        });
    }
    Ok(())
}

/// Write `data` to `part` (created, or truncated), creating its directory when missing,
/// then rename it to `dest`; `part` is removed when a step fails (blocking).
fn write_then_rename(part: &Path, dest: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let create = || std::fs::File::create(part);
    let file = match create() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = part.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
            }
            create()
        }
        other => other,
    };
    let written = file
        .and_then(|mut file| file.write_all(data))
        .map_err(|e| Error::io("writing", part, e))
        .and_then(|()| std::fs::rename(part, dest).map_err(|e| Error::io("renaming", part, e)));
    if written.is_err() {
        let _ = std::fs::remove_file(part);
    }
    written
}

/// Every regular file under `root`, with its `/`-separated path relative to `root` and its
/// size (blocking: call it from `spawn_blocking`).
pub fn walk(root: &Path) -> Result<Vec<(PathBuf, String, u64)>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("listing", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing", &dir, e))?;
            let p = entry.path();
            let meta = std::fs::metadata(&p).map_err(|e| Error::io("reading", &p, e))?;
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                let rel = p.strip_prefix(root).map_err(|_| {
                    Error::usage(format!("{} is outside {}", p.display(), root.display()))
                })?;
                let parts: Option<Vec<&str>> = rel
                    .components()
                    .map(|c| match c {
                        Component::Normal(s) => s.to_str(),
                        _ => None,
                    })
                    .collect();
                match parts {
                    Some(parts) => out.push((p.clone(), parts.join("/"), meta.len())),
                    None => {
                        return Err(Error::usage(format!("{} is not a UTF-8 path", p.display())));
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// The local file for object path `rel` under `root`, refusing anything that escapes it.
pub fn local_target(root: &Path, rel: &str) -> Result<PathBuf> {
    let mut p = root.to_path_buf();
    for seg in rel.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." || seg.contains('\\') {
            return Err(Error::usage(format!(
                "object path {rel} cannot be written as a local file"
            )));
        }
        p.push(seg);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_lengths_cover_the_file() {
        assert_eq!(part_len(10, 4, 1), 4);
        assert_eq!(part_len(10, 4, 3), 2);
        assert_eq!((1..=3).map(|i| part_len(10, 4, i)).sum::<u64>(), 10);
    }

    fn opts(files: usize, bytes: u64) -> TransferOptions {
        TransferOptions {
            jobs: 1,
            multipart_threshold: 1000,
            pack: PackLimits {
                file_max: 100,
                files,
                bytes,
            },
            part_size: 100,
            state_dir: PathBuf::new(),
            abort_after_parts: None,
        }
    }

    fn shape(jobs: &[UploadJob]) -> Vec<Vec<String>> {
        jobs.iter()
            .map(|j| match j {
                UploadJob::Pack(items) => items.iter().map(|i| i.path.clone()).collect(),
                UploadJob::One(i) => vec![format!("one:{}", i.path)],
            })
            .collect()
    }

    #[test]
    fn small_files_are_packed_within_the_limits() {
        let items = |sizes: &[u64]| -> Vec<UploadItem> {
            sizes
                .iter()
                .enumerate()
                .map(|(n, &size)| UploadItem {
                    local: PathBuf::from(format!("f{n}")),
                    path: format!("f{n}"),
                    size,
                })
                .collect()
        };
        // At most 3 files per pack; the big file (101 > file_max) goes alone and splits.
        let jobs = plan_uploads(items(&[10, 10, 10, 10, 101, 10, 10, 0]), &opts(3, 1000));
        assert_eq!(
            shape(&jobs),
            [
                vec!["f0", "f1", "f2"],
                vec!["one:f4"],
                vec!["f3", "f5", "f6"],
                vec!["one:f7"],
            ]
        );
        // At most 25 bytes per pack (a file bigger than that is sent on its own).
        let jobs = plan_uploads(items(&[10, 10, 10, 5, 30]), &opts(10, 25));
        assert_eq!(
            shape(&jobs),
            [vec!["f0", "f1"], vec!["f2", "f3"], vec!["one:f4"]]
        );
        // Packing off.
        let jobs = plan_uploads(items(&[1, 1]), &opts(1, 1000));
        assert_eq!(shape(&jobs), [vec!["one:f0"], vec!["one:f1"]]);
    }

    #[test]
    fn local_targets_stay_inside_the_root() {
        let root = Path::new("/tmp/x");
        assert_eq!(local_target(root, "a/b").unwrap(), root.join("a").join("b"));
        assert!(local_target(root, "../a").is_err());
        assert!(local_target(root, "a//b").is_err());
        assert_eq!(encode_path("a b/c%"), "a%20b%2Fc%25");
    }
}
