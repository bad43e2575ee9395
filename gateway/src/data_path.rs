//! Object bytes: upload files and multipart-upload parts streamed to an agent's `PutShard`
//! (or, when they end within their first chunk, sent in one `PutSmallShard` call),
//! multipart completion (the agent's `ConcatShards`), and ranged download (by id or by
//! path) streamed from an agent's `GetShard`. Nothing here buffers a whole object: an
//! upload holds at most one chunk read ahead (to pick `PutSmallShard`), one re-chunking
//! buffer and [`PUT_CHANNEL_CAPACITY`] chunks of at most [`proto::CHUNK_SIZE`] bytes per
//! request.

use std::io;

use axum::body::Body;
use axum::extract::Multipart;
use axum::extract::multipart::{Field, MultipartError};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use client::AgentClient;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use proto::agent::put_shard_request::Msg;
use proto::agent::{
    Chunk, ConcatShardsRequest, Finish, GetShardRequest, PutShardRequest, PutShardResponse,
    PutSmallShardRequest,
};
use proto::common::Ticket;
use proto::coordinator::{
    self as pb, BeginUploadPartRequest, BeginUploadRequest, BeginUploadResponse,
    CommitUploadRequest, CompleteMultipartUploadRequest, ResolveObjectRequest,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};
use tokio_stream::wrappers::ReceiverStream;

use crate::error::ApiError;
use crate::extract::parse_json;
use crate::model::{ObjectJson, required};
use crate::routes::require_id;
use crate::state::AppState;

/// Capacity of the bounded channel (chunks ≤ 1 MiB) feeding one `PutShard` request
/// stream; with the HTTP/2 window this bounds what one upload holds on the gateway
/// (docs/architecture.md, "Memory bounds").
pub const PUT_CHANNEL_CAPACITY: usize = 2;

/// Size of the `PutShard` data messages the gateway sends (the wire allows up to
/// [`proto::CHUNK_SIZE`]). Every stage of an upload between the body and the agent's file
/// (re-chunking, this channel, gRPC encoding and decoding, the agent's channel and writer)
/// holds about one message, so smaller messages keep each upload in flight to a few MiB
/// (docs/architecture.md, "Memory bounds").
pub const PUT_PIECE_SIZE: usize = 256 * 1024;

/// Files of one upload request that end within their first chunk are stored concurrently
/// while the request is read (see `stream_files`): at most this many at once ...
pub const MAX_PENDING_SMALL: usize = 64;
/// ... holding at most this many bytes.
pub const MAX_PENDING_BYTES: usize = 4 * 1024 * 1024;

/// Largest accepted `info` part.
pub const MAX_INFO_BYTES: usize = 64 * 1024;

/// Largest part index of a multipart upload (indexes run from 1).
pub const MAX_PART_INDEX: u32 = 10_000;

// ---------------------------------------------------------------------------------------
// Pure helpers
// ---------------------------------------------------------------------------------------

/// Turn a multipart filename into an object path: strict percent-decoding (every `%` must
/// start a two-digit hex escape; `+` stays `+`), the result must be UTF-8, then
/// [`common::path::validate_object_path`]. The error names the filename.
pub fn decode_object_path(filename: &str) -> Result<String, String> {
    let bytes = filename.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%' {
            let valid = bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
            if !valid {
                return Err(format!(
                    "invalid filename {filename:?}: '%' at byte {i} does not start a %XX escape"
                ));
            }
        }
    }
    let path = percent_encoding::percent_decode(bytes)
        .decode_utf8()
        .map_err(|_| {
            format!("invalid filename {filename:?}: it is not valid UTF-8 after percent-decoding")
        })?
        .into_owned();
    common::path::validate_object_path(&path)
        .map_err(|e| format!("invalid filename {filename:?}: {e}"))?;
    Ok(path)
}

/// Characters left as they are when encoding a path as an upload filename (RFC 3986
/// unreserved); everything else, `/` included, is percent-encoded.
const FILENAME_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The inverse of [`decode_object_path`]: the multipart filename to send for an object
/// path (`a/b/c.txt` → `a%2Fb%2Fc.txt`). For clients such as the `jcs` CLI.
pub fn encode_object_path(path: &str) -> String {
    percent_encoding::utf8_percent_encode(path, FILENAME_ESCAPES).to_string()
}

/// The bytes `[offset, offset + len)` to send for a download of an object of `size` bytes.
/// `length` omitted means "to the end"; a length past the end is clamped. Negative values and
/// an offset past the end are errors (an offset equal to the size gives an empty range).
pub fn compute_range(
    size: u64,
    offset: Option<i64>,
    length: Option<i64>,
) -> Result<(u64, u64), String> {
    let (offset, length) = check_range_args(offset, length)?;
    if offset > size {
        return Err(format!(
            "offset {offset} is past the end of the object (size {size})"
        ));
    }
    let available = size - offset;
    let len = length.map_or(available, |l| l.min(available));
    Ok((offset, len))
}

/// Reject negative `offset`/`length` (before any remote call).
fn check_range_args(
    offset: Option<i64>,
    length: Option<i64>,
) -> Result<(u64, Option<u64>), String> {
    let offset = offset.unwrap_or(0);
    let offset =
        u64::try_from(offset).map_err(|_| format!("offset must not be negative (got {offset})"))?;
    let length = length
        .map(|l| u64::try_from(l).map_err(|_| format!("length must not be negative (got {l})")))
        .transpose()?;
    Ok((offset, length))
}

/// A multipart part index: an integer from 1 to [`MAX_PART_INDEX`]. The error names `field`.
pub fn part_index(field: &str, value: i64) -> Result<u32, String> {
    u32::try_from(value)
        .ok()
        .filter(|i| (1..=MAX_PART_INDEX).contains(i))
        .ok_or_else(|| {
            format!("field `{field}` must be an integer from 1 to {MAX_PART_INDEX} (got {value})")
        })
}

/// RFC 5987 `attr-char`: everything else is percent-encoded in `filename*`.
const ATTR_CHAR_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `attachment; filename*=UTF-8''<percent-encoded basename of path>`.
pub fn content_disposition(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    format!(
        "attachment; filename*=UTF-8''{}",
        percent_encoding::utf8_percent_encode(base, ATTR_CHAR_ESCAPES)
    )
}

/// Re-chunks a byte stream into pieces of exactly `size` bytes (the last may be shorter).
/// Pieces of the input at least `size` long are split without copying; smaller ones are
/// coalesced into one buffer.
#[derive(Debug)]
pub struct Rechunker {
    size: usize,
    buf: BytesMut,
    input: Bytes,
}

impl Rechunker {
    /// A re-chunker emitting chunks of `size` bytes (`size` ≥ 1).
    pub fn new(size: usize) -> Self {
        Rechunker {
            size: size.max(1),
            buf: BytesMut::new(),
            input: Bytes::new(),
        }
    }

    /// Queue `data`; drain complete chunks with [`Rechunker::pop`] before pushing again.
    pub fn push(&mut self, data: Bytes) {
        debug_assert!(self.input.is_empty(), "pop() must drain before push()");
        if self.input.is_empty() {
            self.input = data;
        } else {
            // Misuse: keep every byte anyway.
            self.buf.extend_from_slice(&std::mem::take(&mut self.input));
            self.input = data;
        }
    }

    /// The next complete chunk, if any.
    pub fn pop(&mut self) -> Option<Bytes> {
        loop {
            if self.buf.len() >= self.size {
                return Some(self.buf.split_to(self.size).freeze());
            }
            if self.input.is_empty() {
                return None;
            }
            if self.buf.is_empty() && self.input.len() >= self.size {
                return Some(self.input.split_to(self.size));
            }
            let take = (self.size - self.buf.len()).min(self.input.len());
            if self.buf.capacity() == 0 {
                self.buf.reserve(self.size);
            }
            self.buf.extend_from_slice(&self.input.split_to(take));
        }
    }

    /// The final, possibly short, chunk once the input has ended (after draining `pop`).
    pub fn finish(&mut self) -> Option<Bytes> {
        if let Some(chunk) = self.pop() {
            return Some(chunk);
        }
        (!self.buf.is_empty()).then(|| self.buf.split().freeze())
    }
}

// ---------------------------------------------------------------------------------------
// Upload
// ---------------------------------------------------------------------------------------

/// The `info` part of an upload. Unknown fields (such as `userID`) are ignored.
#[derive(Debug, Deserialize)]
struct UploadInfo {
    #[serde(rename = "packageID")]
    package_id: Option<u64>,
    affinity: Option<u64>,
    /// Redundancy of this upload (overrides the package's; docs/redundancy.md).
    redundancy: Option<serde_json::Value>,
}

/// The `info` part of an uploadPart request. Unknown fields are ignored.
#[derive(Debug, Deserialize)]
struct PartInfo {
    #[serde(rename = "objectID")]
    object_id: Option<u64>,
    index: Option<i64>,
}

/// Bytes the agent has stored under a reserved upload, waiting for `CommitUpload`.
///
/// A reservation writes no metadata: if it is never committed (any failure, or the request
/// task being cancelled) nothing needs undoing, and shard GC reclaims the stored bytes.
#[derive(Debug)]
struct Streamed {
    upload_id: u64,
    /// From the begin call; passed back unchanged in `CommitUpload`.
    commit_token: Vec<u8>,
    size: u64,
    sha256: String,
    /// rep/ec uploads: every stored block (`redundant.rs`).
    blocks: Vec<pb::StoredBlock>,
    /// The object's path when the reservation came from a write grant (its token names
    /// none); empty otherwise.
    granted_path: String,
}

/// Publish stored bytes (`CommitUploads`, shared with concurrent requests).
async fn commit(state: &AppState, stored: Streamed) -> Result<pb::Object, ApiError> {
    state
        .commit_upload(CommitUploadRequest {
            upload_id: stored.upload_id,
            size: stored.size,
            sha256: stored.sha256,
            commit_token: stored.commit_token,
            blocks: stored.blocks,
            path: stored.granted_path,
        })
        .await
}

fn multipart_error(err: &MultipartError) -> ApiError {
    ApiError::bad_argument(format!(
        "malformed multipart body: {}",
        multipart_detail(err)
    ))
}

/// The multipart error with its distinct causes (`failed to read stream: <io error>`).
fn multipart_detail(err: &MultipartError) -> String {
    let mut text = err.body_text();
    let mut source = std::error::Error::source(err).and_then(std::error::Error::source);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Handle a whole upload request: `info` first, then every `files` part streamed to an
/// agent; commits happen only after the body has been read completely and every file was
/// stored. On any earlier failure nothing is committed (the reservations leave no
/// metadata). The files are then committed together, each on its own: if one fails, the
/// answer is the error of the first failed file, and the others stay committed.
pub(crate) async fn upload(
    state: AppState,
    mut multipart: Multipart,
) -> Result<Vec<ObjectJson>, ApiError> {
    let (package_id, affinity, redundancy) = read_upload_info(&mut multipart).await?;
    let streamed =
        stream_files(&state, &mut multipart, (package_id, affinity, &redundancy)).await?;

    let total = streamed.len();
    let ids: Vec<(u64, bool)> = streamed
        .iter()
        .map(|f| (f.upload_id, !f.granted_path.is_empty()))
        .collect();
    let results =
        futures::future::join_all(streamed.into_iter().map(|file| commit(&state, file))).await;
    let mut objects = Vec::with_capacity(total);
    let mut first_error = None;
    for ((upload_id, granted), result) in ids.into_iter().zip(results) {
        match result {
            Ok(object) => objects.push(ObjectJson::from(object)),
            Err(err) => {
                tracing::warn!(upload_id, granted, error = %err, "commit failed");
                if granted && implicates_grant(err.code) {
                    state.forget_grant(package_id, affinity).await;
                }
                first_error.get_or_insert(err);
            }
        }
    }
    if let Some(err) = first_error {
        tracing::warn!(
            committed = objects.len(),
            failed = total - objects.len(),
            "upload partly committed"
        );
        return Err(err);
    }
    tracing::info!(package_id, files = objects.len(), "upload committed");
    Ok(objects)
}

/// Whether a failed commit of a granted upload says the grant's reservations are no good:
/// the token refused (BadArgument: forged, or for another upload; Conflict: the grant no
/// longer fits the package) or the reservation gone (NotFound: expired, or its package
/// deleted). Other errors (a path clash, an outage) leave the other reservations usable.
fn implicates_grant(code: common::ErrorCode) -> bool {
    match code {
        common::ErrorCode::BadArgument
        | common::ErrorCode::Conflict
        | common::ErrorCode::NotFound => true,
        common::ErrorCode::Unauthenticated
        | common::ErrorCode::PermissionDenied
        | common::ErrorCode::AlreadyExists
        | common::ErrorCode::NotLeader
        | common::ErrorCode::Unavailable
        | common::ErrorCode::Timeout
        | common::ErrorCode::Internal => false,
    }
}

/// Read the leading `info` part (at most [`MAX_INFO_BYTES`]) and parse it as `T`.
async fn read_info<T: DeserializeOwned>(multipart: &mut Multipart) -> Result<T, ApiError> {
    let mut field = match multipart.next_field().await {
        Ok(Some(field)) => field,
        Ok(None) => {
            return Err(ApiError::bad_argument(
                "missing the `info` part: the first part of the form must be named `info`",
            ));
        }
        Err(err) => return Err(multipart_error(&err)),
    };
    match field.name() {
        Some("info") => {}
        Some(other) => {
            return Err(ApiError::bad_argument(format!(
                "the first part of the form must be named `info`, got `{other}`"
            )));
        }
        None => {
            return Err(ApiError::bad_argument(
                "the first part of the form must be named `info`, got a part without a name",
            ));
        }
    }
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(&e))? {
        if buf.len() + chunk.len() > MAX_INFO_BYTES {
            return Err(ApiError::bad_argument(format!(
                "the `info` part is larger than {MAX_INFO_BYTES} bytes"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    parse_json(&buf, "`info` part")
}

/// Prefix a field error with the `info` part it was found in.
fn in_info(message: impl std::fmt::Display) -> ApiError {
    ApiError::bad_argument(format!("invalid `info` part: {message}"))
}

/// Read and check the `info` part of an upload; returns (package id, affinity, redundancy
/// policy JSON or "").
async fn read_upload_info(multipart: &mut Multipart) -> Result<(u64, u64, String), ApiError> {
    let info: UploadInfo = read_info(multipart).await?;
    let package_id = require_id("packageID", info.package_id).map_err(|e| in_info(e.message))?;
    let redundancy = match info.redundancy {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(v) => serde_json::from_value::<redundancy::Policy>(v)
            .map(|p| serde_json::to_string(&p).unwrap_or_default())
            .map_err(|e| in_info(format!("redundancy: {e}")))?,
    };
    Ok((package_id, info.affinity.unwrap_or(0), redundancy))
}

/// Read and check the `info` part of an uploadPart request; returns (object id, index).
async fn read_part_info(multipart: &mut Multipart) -> Result<(u64, u32), ApiError> {
    let info: PartInfo = read_info(multipart).await?;
    let object_id = require_id("objectID", info.object_id).map_err(|e| in_info(e.message))?;
    let index = info
        .index
        .ok_or_else(|| in_info("missing field `index`"))
        .and_then(|i| part_index("index", i).map_err(in_info))?;
    Ok((object_id, index))
}

/// Stream every remaining part; all must be `files` parts.
///
/// A file that ends within its first chunk (1 MiB) is read whole and stored by a task of
/// its own (reservation, then one small put, grouped with others bound for the same agent
/// when it is at most [`crate::state::MAX_GROUPED_SHARD`]) while the next parts are read, so the small
/// files of one request reach the coordinator and the agents in a few grouped calls. At
/// most [`MAX_PENDING_SMALL`] such files and [`MAX_PENDING_BYTES`] are in flight per
/// request; the tasks are aborted if the request fails. Larger files are streamed in
/// order. The result is in request order.
async fn stream_files(
    state: &AppState,
    multipart: &mut Multipart,
    (package_id, affinity, redundancy): (u64, u64, &str),
) -> Result<Vec<Streamed>, ApiError> {
    let max_files = state.config().max_upload_files;
    let mut streamed: Vec<Option<Streamed>> = Vec::new();
    let mut pending: JoinSet<SmallDone> = JoinSet::new();
    // Bytes held by the pending tasks.
    let mut in_flight = 0usize;
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(err) => return Err(multipart_error(&err)),
        };
        let path = file_part_path(&field, streamed.len(), max_files)?;
        let what = format!("file {path:?}");
        let index = streamed.len();
        streamed.push(None);
        let reserve = BeginUploadRequest {
            package_id,
            path,
            affinity,
            redundancy_json: redundancy.to_owned(),
        };
        let head = Head::read(&mut field, &what).await?;
        if head.complete {
            // Bounded: at most MAX_PENDING_SMALL files and MAX_PENDING_BYTES in flight.
            let len = head.len;
            while !pending.is_empty()
                && (pending.len() >= MAX_PENDING_SMALL || in_flight + len > MAX_PENDING_BYTES)
            {
                in_flight -= settle(pending.join_next().await, &mut streamed)?;
            }
            in_flight += len;
            // The reservation is taken here, in request order, so the files of a request
            // that create objects get ascending object ids (an object takes its upload's
            // id) however their stores finish.
            let granted = if reserve.redundancy_json.is_empty() {
                state
                    .granted_upload(reserve.package_id, reserve.affinity)
                    .await
            } else {
                None
            };
            let state = state.clone();
            pending.spawn(async move {
                let stored = store_small(&state, reserve, granted, head.into_bytes(), &what).await;
                (index, len, stored)
            });
        } else {
            let begin = state.begin_upload(reserve).await?;
            streamed[index] = Some(stream_reserved(state, begin, head, field, &what).await?);
        }
    }
    while !pending.is_empty() {
        settle(pending.join_next().await, &mut streamed)?;
    }
    if streamed.is_empty() {
        return Err(ApiError::bad_argument(
            "no `files` part: an upload needs at least one file",
        ));
    }
    streamed
        .into_iter()
        .map(|f| f.ok_or_else(|| ApiError::internal("an upload task did not report")))
        .collect()
}

/// A small-file task's index in the request, its bytes, and the result.
type SmallDone = (usize, usize, Result<Streamed, ApiError>);

/// Record a finished small-file task of [`stream_files`] (`None`: there was none); returns
/// the bytes it no longer holds.
fn settle(
    done: Option<Result<SmallDone, JoinError>>,
    streamed: &mut [Option<Streamed>],
) -> Result<usize, ApiError> {
    match done {
        Some(Ok((i, len, Ok(file)))) => {
            streamed[i] = Some(file);
            Ok(len)
        }
        Some(Ok((_, _, Err(err)))) => Err(err),
        Some(Err(err)) => Err(ApiError::internal(format!("upload task failed: {err}"))),
        None => Ok(0),
    }
}

/// Encode `input` under the policy of a rep/ec reservation and store its blocks.
async fn put_redundant(
    state: &AppState,
    begin: BeginUploadResponse,
    input: futures::stream::BoxStream<'_, io::Result<Bytes>>,
    what: &str,
) -> Result<Streamed, ApiError> {
    let stored = crate::redundant::put_blocks(state, &begin, input, what).await?;
    Ok(Streamed {
        upload_id: begin.upload_id,
        commit_token: begin.commit_token,
        size: stored.size,
        sha256: stored.sha256,
        blocks: stored.blocks,
        granted_path: String::new(),
    })
}

/// Store one small file read whole, under `granted` (a reservation of the gateway's write
/// grant, taken by the caller for a file without a redundancy override) or else a
/// reservation begun here; if storing under the grant fails, the grant is dropped and the
/// file takes the begin path.
async fn store_small(
    state: &AppState,
    reserve: BeginUploadRequest,
    granted: Option<BeginUploadResponse>,
    data: Bytes,
    what: &str,
) -> Result<Streamed, ApiError> {
    if let Some(granted) = granted {
        let ticket = required(granted.ticket, "upload ticket")?;
        match put_whole(state, &granted.agent_address, ticket, data.clone(), what).await {
            Ok(stored) => {
                return Ok(Streamed {
                    upload_id: granted.upload_id,
                    commit_token: granted.commit_token,
                    size: stored.size,
                    sha256: stored.sha256,
                    blocks: Vec::new(),
                    granted_path: reserve.path,
                });
            }
            Err(err) => {
                tracing::debug!(upload_id = granted.upload_id, error = %err, "store under a write grant failed; beginning the upload");
                state
                    .forget_grant(reserve.package_id, reserve.affinity)
                    .await;
            }
        }
    }
    let begin = state.begin_upload(reserve).await?;
    if !begin.blocks.is_empty() {
        // rep/ec: encode and store one block per space (redundant.rs).
        let input =
            futures::StreamExt::boxed(futures::stream::once(futures::future::ready(Ok(data))));
        return put_redundant(state, begin, input, what).await;
    }
    let ticket = required(begin.ticket, "upload ticket")?;
    let stored = put_whole(state, &begin.agent_address, ticket, data, what).await?;
    Ok(Streamed {
        upload_id: begin.upload_id,
        commit_token: begin.commit_token,
        size: stored.size,
        sha256: stored.sha256,
        blocks: Vec::new(),
        granted_path: String::new(),
    })
}

/// Check a part header: its name must be `files` and its filename a valid encoded path.
fn file_part_path(field: &Field<'_>, index: usize, max_files: usize) -> Result<String, ApiError> {
    check_file_part(field.name(), field.file_name(), index, max_files)
}

fn check_file_part(
    name: Option<&str>,
    file_name: Option<&str>,
    index: usize,
    max_files: usize,
) -> Result<String, ApiError> {
    check_files_name(name)?;
    if index >= max_files {
        return Err(ApiError::bad_argument(format!(
            "too many files in one request: at most {max_files} are accepted"
        )));
    }
    let file_name = file_name.ok_or_else(|| {
        ApiError::bad_argument(
            "a `files` part has no (UTF-8) filename: the filename must be the URL-encoded object path",
        )
    })?;
    decode_object_path(file_name).map_err(ApiError::bad_argument)
}

/// A part after `info` must be named `files`.
fn check_files_name(name: Option<&str>) -> Result<(), ApiError> {
    match name {
        Some("files") => Ok(()),
        Some("info") => Err(ApiError::bad_argument(
            "the `info` part must be the first part and appear only once",
        )),
        Some(other) => Err(ApiError::bad_argument(format!(
            "unexpected part `{other}`: file parts must be named `files`"
        ))),
        None => Err(ApiError::bad_argument(
            "a part has no name: file parts must be named `files`",
        )),
    }
}

/// Stream `field` to the agent of a reservation (`BeginUpload` or `BeginUploadPart`) and
/// return what `CommitUpload` needs. `what` names the bytes in logs and errors.
async fn stream_reserved(
    state: &AppState,
    begin: BeginUploadResponse,
    head: Head,
    mut field: Field<'_>,
    what: &str,
) -> Result<Streamed, ApiError> {
    if !begin.blocks.is_empty() {
        // rep/ec: encode the head and the rest of the part (redundant.rs).
        let rest = futures::stream::unfold(field, |mut f| async move {
            match f.chunk().await {
                Ok(Some(b)) => Some((Ok(b), f)),
                Ok(None) => None,
                Err(e) => Some((Err(io::Error::other(multipart_detail(&e))), f)),
            }
        });
        let head = futures::stream::iter(head.pieces.into_iter().map(Ok::<Bytes, io::Error>));
        let input = futures::StreamExt::boxed(futures::StreamExt::chain(head, rest));
        return put_redundant(state, begin, input, what).await;
    }
    let upload_id = begin.upload_id;
    tracing::debug!(upload_id, what, agent = %begin.agent_address, "upload begun");
    let ticket = required(begin.ticket, "upload ticket")?;
    let stored = put_shard(state, &begin.agent_address, ticket, head, &mut field, what).await?;
    tracing::debug!(upload_id, what, size = stored.size, "bytes stored");
    Ok(Streamed {
        upload_id,
        commit_token: begin.commit_token,
        size: stored.size,
        sha256: stored.sha256,
        blocks: Vec::new(),
        granted_path: String::new(),
    })
}

enum FeedError {
    /// Reading the request body failed (client gone, malformed multipart).
    Body(MultipartError),
    /// The agent's side of the stream went away; the call result says why.
    AgentGone,
}

/// The first bytes of a part: up to [`proto::CHUNK_SIZE`], or all of it if it ends first.
struct Head {
    pieces: Vec<Bytes>,
    len: usize,
    /// The part ended within these bytes.
    complete: bool,
}

impl Head {
    /// Read until the part ends or [`proto::CHUNK_SIZE`] bytes are held (at most one
    /// chunk, plus the last piece read).
    async fn read(field: &mut Field<'_>, what: &str) -> Result<Head, ApiError> {
        let mut head = Head {
            pieces: Vec::new(),
            len: 0,
            complete: false,
        };
        while head.len < proto::CHUNK_SIZE {
            match field.chunk().await {
                Ok(Some(bytes)) => {
                    head.len += bytes.len();
                    head.pieces.push(bytes);
                }
                Ok(None) => {
                    head.complete = true;
                    break;
                }
                Err(err) => {
                    return Err(ApiError::bad_argument(format!(
                        "failed to read the body of {what}: {}",
                        multipart_detail(&err)
                    )));
                }
            }
        }
        Ok(head)
    }

    /// The bytes as one buffer (no copy when they arrived in one piece).
    fn into_bytes(mut self) -> Bytes {
        match self.pieces.len() {
            0 => Bytes::new(),
            1 => self.pieces.swap_remove(0),
            _ => {
                let mut buf = BytesMut::with_capacity(self.len);
                for piece in &self.pieces {
                    buf.extend_from_slice(piece);
                }
                buf.freeze()
            }
        }
    }
}

/// Store a part on the agent: `head` (already read) then the rest of `field`. A part that
/// ended within its head goes in one `PutSmallShard` call (grouped with others bound for
/// the same agent when it is at most [`crate::state::MAX_GROUPED_SHARD`] bytes); a longer one is streamed
/// with `PutShard` (see [`put_shard_stream`]). `what` names the bytes in errors
/// (`file "a/b.txt"`, `part 2 of object 7`).
async fn put_shard(
    state: &AppState,
    address: &str,
    ticket: Ticket,
    head: Head,
    field: &mut Field<'_>,
    what: &str,
) -> Result<PutShardResponse, ApiError> {
    if !head.complete {
        // A part that ends exactly at CHUNK_SIZE is streamed too: its end is not seen yet.
        let agent = state.agents().get(address)?;
        return put_shard_stream(agent, ticket, head.pieces, field, what).await;
    }
    put_whole(state, address, ticket, head.into_bytes(), what).await
}

/// Store a whole shard (≤ one chunk) in one small put and check the size stored.
async fn put_whole(
    state: &AppState,
    address: &str,
    ticket: Ticket,
    data: Bytes,
    what: &str,
) -> Result<PutShardResponse, ApiError> {
    let len = data.len() as u64;
    let stored = state
        .put_small_shard(
            address,
            PutSmallShardRequest {
                ticket: Some(ticket),
                data,
            },
        )
        .await?;
    check_stored_size(&stored, len, what)?;
    Ok(stored)
}

/// The agent must have stored exactly the `sent` bytes.
fn check_stored_size(stored: &PutShardResponse, sent: u64, what: &str) -> Result<(), ApiError> {
    if stored.size != sent {
        return Err(ApiError::internal(format!(
            "agent stored {} bytes of {what} but {sent} were sent",
            stored.size
        )));
    }
    Ok(())
}

/// Drive a `PutShard` call fed from `head` (pieces already read) then the rest of `field`
/// through a bounded channel.
async fn put_shard_stream(
    mut agent: AgentClient,
    ticket: Ticket,
    head: Vec<Bytes>,
    field: &mut Field<'_>,
    what: &str,
) -> Result<PutShardResponse, ApiError> {
    let (tx, rx) = mpsc::channel(PUT_CHANNEL_CAPACITY);
    let call = agent.put_shard(ReceiverStream::new(rx));
    let feed = feed_field(head, field, tx, ticket);
    tokio::pin!(call);
    tokio::pin!(feed);
    let fed = tokio::select! {
        biased;
        fed = &mut feed => fed.inspect(|sent| {
            common::metrics::metrics()
                .gateway_bytes
                .with_label_values(&["in"])
                .inc_by(*sent);
        }),
        answered = &mut call => {
            // The agent answered before `finish` was sent: it refused the upload.
            return Err(match answered {
                Err(status) => ApiError::from(status),
                Ok(_) => ApiError::internal("agent answered PutShard before the upload finished"),
            });
        }
    };
    match fed {
        Ok(sent) => {
            let stored = call.await?.into_inner();
            check_stored_size(&stored, sent, what)?;
            Ok(stored)
        }
        Err(FeedError::AgentGone) => Err(match call.await {
            Err(status) => ApiError::from(status),
            Ok(_) => ApiError::internal("agent closed the PutShard stream early"),
        }),
        Err(FeedError::Body(err)) => {
            // Dropping `call` cancels the RPC without `finish`: the agent discards the bytes.
            Err(ApiError::bad_argument(format!(
                "failed to read the body of {what}: {}",
                multipart_detail(&err)
            )))
        }
    }
}

/// Send the ticket, the bytes of `head` then of the field in chunks of at most
/// [`PUT_PIECE_SIZE`], then `finish`. Returns the number of data bytes sent. Never sends
/// `finish` after a body error.
async fn feed_field(
    head: Vec<Bytes>,
    field: &mut Field<'_>,
    tx: mpsc::Sender<PutShardRequest>,
    ticket: Ticket,
) -> Result<u64, FeedError> {
    async fn send(tx: &mpsc::Sender<PutShardRequest>, msg: Msg) -> Result<(), FeedError> {
        tx.send(PutShardRequest { msg: Some(msg) })
            .await
            .map_err(|_| FeedError::AgentGone)
    }

    send(&tx, Msg::Ticket(ticket)).await?;
    let mut rechunker = Rechunker::new(PUT_PIECE_SIZE);
    let mut sent = 0u64;
    let mut head = head.into_iter();
    loop {
        let bytes = match head.next() {
            Some(bytes) => bytes,
            None => match field.chunk().await.map_err(FeedError::Body)? {
                Some(bytes) => bytes,
                None => break,
            },
        };
        rechunker.push(bytes);
        while let Some(chunk) = rechunker.pop() {
            sent += chunk.len() as u64;
            send(&tx, Msg::Data(chunk)).await?;
        }
    }
    while let Some(chunk) = rechunker.finish() {
        sent += chunk.len() as u64;
        send(&tx, Msg::Data(chunk)).await?;
    }
    send(&tx, Msg::Finish(Finish::default())).await?;
    Ok(sent)
}

// ---------------------------------------------------------------------------------------
// Multipart upload
// ---------------------------------------------------------------------------------------

/// Handle an uploadPart request: `info` (`objectID`, `index`) and exactly one `files` part
/// (its filename is ignored), streamed to the agent like an upload file. The part is
/// committed only after the whole body was read; on any failure it is not committed.
pub(crate) async fn upload_part(state: AppState, mut multipart: Multipart) -> Result<(), ApiError> {
    let (object_id, index) = read_part_info(&mut multipart).await?;
    let stored = stream_part(&state, &mut multipart, object_id, index).await?;
    let size = stored.size;
    commit(&state, stored).await?;
    tracing::info!(object_id, index, size, "part uploaded");
    Ok(())
}

/// Stream the one `files` part of an uploadPart request and check that nothing follows it.
async fn stream_part(
    state: &AppState,
    multipart: &mut Multipart,
    object_id: u64,
    index: u32,
) -> Result<Streamed, ApiError> {
    let field = match multipart.next_field().await {
        Ok(Some(field)) => field,
        Ok(None) => {
            return Err(ApiError::bad_argument(
                "no `files` part: uploadPart needs exactly one file",
            ));
        }
        Err(err) => return Err(multipart_error(&err)),
    };
    check_files_name(field.name())?;
    let what = format!("part {index} of object {object_id}");
    let mut field = field;
    let head = Head::read(&mut field, &what).await?;
    let begin = state
        .coordinator()
        .begin_upload_part(BeginUploadPartRequest { object_id, index })
        .await?
        .into_inner();
    let stored = stream_reserved(state, begin, head, field, &what).await?;
    match multipart.next_field().await {
        Ok(None) => Ok(stored),
        Ok(Some(extra)) => Err(ApiError::bad_argument(format!(
            "uploadPart takes exactly one `files` part, but another part{} follows it",
            extra
                .name()
                .map(|name| format!(" (`{name}`)"))
                .unwrap_or_default()
        ))),
        Err(err) => Err(multipart_error(&err)),
    }
}

/// Complete a multipart upload: reserve it (`BeginCompleteMultipartUpload`, which checks
/// the object and the indexes), have the agent concatenate the parts (`ConcatShards`), then
/// publish the whole object (`CommitUpload`). On any failure nothing is committed: the
/// object stays an unfinished multipart upload with its parts.
pub(crate) async fn complete_multipart_upload(
    state: AppState,
    object_id: u64,
    indexes: Vec<u32>,
) -> Result<ObjectJson, ApiError> {
    let parts = indexes.len();
    let begin = state
        .coordinator()
        .begin_complete_multipart_upload(CompleteMultipartUploadRequest { object_id, indexes })
        .await?
        .into_inner();
    let upload_id = begin.upload_id;
    match concat_and_commit(&state, begin).await {
        Ok(object) => {
            tracing::info!(
                object_id,
                parts,
                size = object.size,
                "multipart upload completed"
            );
            Ok(ObjectJson::from(object))
        }
        Err(err) => {
            tracing::warn!(object_id, upload_id, error = %err, "completion failed");
            Err(err)
        }
    }
}

async fn concat_and_commit(
    state: &AppState,
    begin: BeginUploadResponse,
) -> Result<pb::Object, ApiError> {
    let ticket = required(begin.ticket, "concat ticket")?;
    let mut agent = state.agents().get(&begin.agent_address)?;
    let stored = agent
        .concat_shards(ConcatShardsRequest {
            ticket: Some(ticket),
        })
        .await?
        .into_inner();
    let stored = Streamed {
        upload_id: begin.upload_id,
        commit_token: begin.commit_token,
        size: stored.size,
        sha256: stored.sha256,
        blocks: Vec::new(),
        granted_path: String::new(),
    };
    commit(state, stored).await
}

// ---------------------------------------------------------------------------------------
// Download
// ---------------------------------------------------------------------------------------

/// The object a download reads: by id (`download`) or by package and path
/// (`downloadByPath`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ObjectRef {
    /// `objectID`.
    Id(u64),
    /// `packageID` + `path`.
    Path { package_id: u64, path: String },
}

impl From<ObjectRef> for ResolveObjectRequest {
    fn from(target: ObjectRef) -> Self {
        match target {
            ObjectRef::Id(object_id) => ResolveObjectRequest {
                object_id,
                ..Default::default()
            },
            ObjectRef::Path { package_id, path } => ResolveObjectRequest {
                package_id,
                path,
                ..Default::default()
            },
        }
    }
}

/// Resolve `target`, validate the range, then stream the bytes from the agent. Errors up
/// to and including the first chunk are envelopes; later ones abort the body.
pub(crate) async fn download(
    state: &AppState,
    target: ObjectRef,
    offset: Option<i64>,
    length: Option<i64>,
) -> Result<Response, ApiError> {
    check_range_args(offset, length).map_err(ApiError::bad_argument)?;
    let resolved = state
        .coordinator()
        .resolve_object(ResolveObjectRequest::from(target))
        .await?
        .into_inner();
    let object = required(resolved.object, "object")?;
    let object_id = object.object_id;
    let (start, len) =
        compute_range(object.size, offset, length).map_err(ApiError::bad_argument)?;
    let disposition = HeaderValue::try_from(content_disposition(&object.path))
        .map_err(|e| ApiError::internal(format!("bad content-disposition header: {e}")))?;
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        ),
        (header::CONTENT_LENGTH, HeaderValue::from(len)),
        (header::CONTENT_DISPOSITION, disposition),
    ];
    if len == 0 {
        // GetShard reads `length = 0` as "to the end": never ask for an empty range.
        return Ok((StatusCode::OK, headers, Body::empty()).into_response());
    }
    if !resolved.blocks.is_empty() {
        // rep/ec: ranged and degraded reads over the blocks (redundant.rs).
        let body =
            crate::redundant::read_blocks(state, &object, resolved.blocks, start, len).await?;
        let body = stall_guarded(body, state.config().download_stall_timeout, object_id);
        return Ok((StatusCode::OK, headers, Body::from_stream(body)).into_response());
    }

    let ticket = required(resolved.ticket, "read ticket")?;
    let mut agent = state.agents().get(&resolved.agent_address)?;
    let mut stream = agent
        .get_shard(GetShardRequest {
            ticket: Some(ticket),
            offset: start,
            length: len,
        })
        .await?
        .into_inner();
    let first = stream
        .message()
        .await?
        .ok_or_else(|| ApiError::internal("agent returned no data for a non-empty range"))?;
    tracing::debug!(object_id, offset = start, length = len, "download started");
    let body = ShardBody {
        first: Some(first),
        stream: Box::new(stream),
        remaining: len,
        object_id,
        failed: false,
    };
    let body = stall_guarded(
        body.into_stream(),
        state.config().download_stall_timeout,
        object_id,
    );
    Ok((StatusCode::OK, headers, Body::from_stream(body)).into_response())
}

/// `body`, forwarded by a task of its own through a one-chunk channel that gives up when
/// the client has taken nothing for `stall` (`download_stall_timeout`): the task then
/// drops `body` (the agent streams, releasing their HTTP/2 windows on the gateway's agent
/// connections; a degraded read's report fires) and the response ends short, so hyper
/// closes the connection. A client that goes away drops the receiver and ends the task
/// the same way.
pub(crate) fn stall_guarded<St>(
    body: St,
    stall: std::time::Duration,
    object_id: u64,
) -> tokio_stream::wrappers::ReceiverStream<Result<Bytes, io::Error>>
where
    St: futures::Stream<Item = Result<Bytes, io::Error>> + Send + 'static,
{
    use futures::StreamExt as _;
    use tokio::sync::mpsc::error::SendTimeoutError;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let mut body = std::pin::pin!(body);
        while let Some(item) = body.next().await {
            match tx.send_timeout(item, stall).await {
                Ok(()) => {}
                Err(SendTimeoutError::Timeout(_)) => {
                    common::metrics::metrics().downloads_stalled.inc();
                    tracing::warn!(
                        object_id,
                        stall_secs = stall.as_secs_f64(),
                        "download cut: the client took no data"
                    );
                    return;
                }
                Err(SendTimeoutError::Closed(_)) => return,
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Source of chunks (the gRPC stream in production; a fake in tests).
trait ChunkSource: Send {
    fn next_chunk(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Option<Chunk>, tonic::Status>> + Send;
}

impl ChunkSource for tonic::Streaming<Chunk> {
    async fn next_chunk(&mut self) -> Result<Option<Chunk>, tonic::Status> {
        self.message().await
    }
}

struct ShardBody<S> {
    first: Option<Chunk>,
    stream: Box<S>,
    remaining: u64,
    object_id: u64,
    failed: bool,
}

impl<S: ChunkSource + 'static> ShardBody<S> {
    /// Yields the chunks; an agent error or a length mismatch yields `Err`, which makes hyper
    /// abort the response (the status line is already sent).
    fn into_stream(self) -> impl futures::Stream<Item = Result<Bytes, io::Error>> + Send {
        futures::stream::unfold(self, |mut st| async move {
            if st.failed {
                return None;
            }
            let next = match st.first.take() {
                Some(chunk) => Ok(Some(chunk)),
                None => st.stream.next_chunk().await,
            };
            let err = match next {
                Ok(Some(chunk)) => {
                    let n = chunk.data.len() as u64;
                    if n <= st.remaining {
                        st.remaining -= n;
                        common::metrics::metrics()
                            .gateway_bytes
                            .with_label_values(&["out"])
                            .inc_by(n);
                        return Some((Ok(chunk.data), st));
                    }
                    format!("agent sent {} bytes more than requested", n - st.remaining)
                }
                Ok(None) if st.remaining == 0 => return None,
                Ok(None) => format!("agent stream ended {} bytes early", st.remaining),
                Err(status) => format!("agent stream failed: {}", status.message()),
            };
            tracing::warn!(object_id = st.object_id, error = %err, "download aborted mid-stream");
            st.failed = true;
            Some((Err(io::Error::other(err)), st))
        })
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[test]
    fn filenames_decode_to_valid_paths() {
        assert_eq!(
            decode_object_path("a%2Fb%2Ftest2.txt").unwrap(),
            "a/b/test2.txt"
        );
        assert_eq!(decode_object_path("test.txt").unwrap(), "test.txt");
        assert_eq!(decode_object_path("a/b.txt").unwrap(), "a/b.txt");
        assert_eq!(
            decode_object_path("h%C3%A9llo%20w.txt").unwrap(),
            "héllo w.txt"
        );
        assert_eq!(decode_object_path("a+b%2Bc").unwrap(), "a+b+c");
        assert_eq!(decode_object_path("%2e%2e.txt").unwrap(), "...txt");
    }

    #[test]
    fn encoded_paths_decode_back() {
        for path in ["a/b/test2.txt", "héllo wörld/x+y%z.bin", "a\"b'c"] {
            let encoded = encode_object_path(path);
            assert!(
                !encoded.contains('/') && !encoded.contains('"'),
                "{encoded}"
            );
            assert_eq!(decode_object_path(&encoded).unwrap(), path);
        }
        assert_eq!(encode_object_path("a/b/test2.txt"), "a%2Fb%2Ftest2.txt");
    }

    #[test]
    fn bad_filenames_are_rejected_with_a_reason() {
        for (name, why) in [
            ("%zz", "%XX escape"),
            ("abc%2", "%XX escape"),
            ("%", "%XX escape"),
            ("%FF", "not valid UTF-8"),
            ("..%2Fx", "'..'"),
            ("%2Fabs", "absolute"),
            ("a%2F%2Fb", "empty segment"),
            ("", "empty"),
            ("a%2F", "directory"),
            ("a%00b", "control"),
        ] {
            let err = decode_object_path(name).unwrap_err();
            assert!(err.contains(why), "{name:?}: {err}");
            assert!(
                err.starts_with(&format!("invalid filename {name:?}")),
                "{err}"
            );
        }
    }

    #[test]
    fn ranges_cover_edges() {
        assert_eq!(compute_range(10, None, None), Ok((0, 10)));
        assert_eq!(compute_range(10, Some(0), Some(0)), Ok((0, 0)));
        assert_eq!(compute_range(10, Some(3), None), Ok((3, 7)));
        assert_eq!(compute_range(10, Some(3), Some(4)), Ok((3, 4)));
        assert_eq!(compute_range(10, Some(3), Some(100)), Ok((3, 7)));
        assert_eq!(compute_range(10, Some(10), None), Ok((10, 0)));
        assert_eq!(compute_range(10, Some(10), Some(5)), Ok((10, 0)));
        assert_eq!(compute_range(0, None, None), Ok((0, 0)));
        assert_eq!(compute_range(10, None, Some(i64::MAX)), Ok((0, 10)));
        assert_eq!(
            compute_range(10, Some(11), None),
            Err("offset 11 is past the end of the object (size 10)".to_owned())
        );
        assert!(
            compute_range(10, Some(-1), None)
                .unwrap_err()
                .contains("offset must not be negative")
        );
        assert!(
            compute_range(10, None, Some(-5))
                .unwrap_err()
                .contains("length must not be negative")
        );
    }

    #[test]
    fn part_indexes_run_from_1_to_10000() {
        assert_eq!(part_index("index", 1), Ok(1));
        assert_eq!(part_index("index", 10_000), Ok(10_000));
        for bad in [0, -1, 10_001, i64::MAX, i64::MIN, i64::from(u32::MAX) + 2] {
            let err = part_index("indexes[3]", bad).unwrap_err();
            assert_eq!(
                err,
                format!("field `indexes[3]` must be an integer from 1 to 10000 (got {bad})")
            );
        }
    }

    #[test]
    fn object_refs_become_resolve_requests() {
        assert_eq!(
            ResolveObjectRequest::from(ObjectRef::Id(7)),
            ResolveObjectRequest {
                object_id: 7,
                package_id: 0,
                path: String::new()
            }
        );
        assert_eq!(
            ResolveObjectRequest::from(ObjectRef::Path {
                package_id: 2,
                path: "a/b".into()
            }),
            ResolveObjectRequest {
                object_id: 0,
                package_id: 2,
                path: "a/b".into()
            }
        );
    }

    #[test]
    fn content_disposition_encodes_the_basename() {
        assert_eq!(
            content_disposition("a/b/test2.txt"),
            "attachment; filename*=UTF-8''test2.txt"
        );
        assert_eq!(
            content_disposition("dir/hé llo;\"x\".bin"),
            "attachment; filename*=UTF-8''h%C3%A9%20llo%3B%22x%22.bin"
        );
        assert_eq!(
            content_disposition("plain"),
            "attachment; filename*=UTF-8''plain"
        );
    }

    fn rechunk(size: usize, inputs: &[usize]) -> Vec<usize> {
        let mut r = Rechunker::new(size);
        let mut out = Vec::new();
        let mut expected = Vec::new();
        let mut got = Vec::new();
        let mut n = 0u8;
        for len in inputs {
            let data: Vec<u8> = (0..*len)
                .map(|_| {
                    n = n.wrapping_add(1);
                    n
                })
                .collect();
            expected.extend_from_slice(&data);
            r.push(Bytes::from(data));
            while let Some(c) = r.pop() {
                out.push(c.len());
                got.extend_from_slice(&c);
            }
        }
        while let Some(c) = r.finish() {
            out.push(c.len());
            got.extend_from_slice(&c);
        }
        assert_eq!(got, expected, "bytes must be preserved in order");
        out
    }

    #[test]
    fn rechunker_splits_and_coalesces() {
        assert_eq!(rechunk(4, &[]), Vec::<usize>::new());
        assert_eq!(rechunk(4, &[0, 0]), Vec::<usize>::new());
        assert_eq!(rechunk(4, &[1, 1, 1]), vec![3]);
        assert_eq!(rechunk(4, &[4]), vec![4]);
        assert_eq!(rechunk(4, &[10]), vec![4, 4, 2]);
        assert_eq!(rechunk(4, &[3, 3, 3]), vec![4, 4, 1]);
        assert_eq!(rechunk(4, &[1, 9, 1]), vec![4, 4, 3]);
        assert_eq!(rechunk(1, &[3]), vec![1, 1, 1]);
    }

    #[test]
    fn upload_part_headers_are_checked() {
        let ok = check_file_part(Some("files"), Some("a%2Fb"), 0, 2).unwrap();
        assert_eq!(ok, "a/b");
        let msg = |r: Result<String, ApiError>| r.unwrap_err().message;
        assert!(
            msg(check_file_part(Some("info"), Some("x"), 0, 2))
                .contains("`info` part must be the first")
        );
        assert!(
            msg(check_file_part(Some("file"), Some("x"), 0, 2)).contains("unexpected part `file`")
        );
        assert!(msg(check_file_part(None, Some("x"), 0, 2)).contains("no name"));
        assert!(msg(check_file_part(Some("files"), None, 0, 2)).contains("no (UTF-8) filename"));
        assert!(msg(check_file_part(Some("files"), Some("x"), 2, 2)).contains("at most 2"));
        assert!(
            msg(check_file_part(Some("files"), Some("%zz"), 0, 2)).contains("invalid filename")
        );
    }

    struct FakeSource(Vec<Result<Option<Chunk>, tonic::Status>>);

    impl ChunkSource for FakeSource {
        async fn next_chunk(&mut self) -> Result<Option<Chunk>, tonic::Status> {
            if self.0.is_empty() {
                Ok(None)
            } else {
                self.0.remove(0)
            }
        }
    }

    fn chunk(data: &'static [u8]) -> Chunk {
        Chunk {
            data: Bytes::from_static(data),
        }
    }

    async fn collect(
        first: &'static [u8],
        rest: Vec<Result<Option<Chunk>, tonic::Status>>,
        len: u64,
    ) -> Vec<Result<Bytes, String>> {
        let body = ShardBody {
            first: Some(chunk(first)),
            stream: Box::new(FakeSource(rest)),
            remaining: len,
            object_id: 1,
            failed: false,
        };
        body.into_stream()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
            .await
    }

    #[tokio::test]
    async fn shard_body_passes_exact_length_through() {
        let out = collect(b"ab", vec![Ok(Some(chunk(b"cd")))], 4).await;
        assert_eq!(
            out,
            vec![Ok(Bytes::from_static(b"ab")), Ok(Bytes::from_static(b"cd"))]
        );
    }

    #[tokio::test]
    async fn shard_body_fails_on_short_long_or_broken_streams() {
        let out = collect(b"ab", vec![], 4).await;
        assert_eq!(
            out.last().unwrap().as_ref().unwrap_err(),
            "agent stream ended 2 bytes early"
        );
        let out = collect(b"ab", vec![Ok(Some(chunk(b"cde")))], 4).await;
        assert!(
            out.last()
                .unwrap()
                .as_ref()
                .unwrap_err()
                .contains("more than requested")
        );
        let out = collect(b"ab", vec![Err(tonic::Status::data_loss("disk gone"))], 4).await;
        assert_eq!(out.len(), 2);
        assert!(out[1].as_ref().unwrap_err().contains("disk gone"));
    }
}
