//! The tonic `AgentService` implementation: parse and check requests, resolve the ticket's
//! space (refreshing the agent's spaces when needed), call the store or the probe, map the
//! result. No storage logic lives here.

use common::SpaceId;
use common::secret::Secret;
use common::shard_hash::Algorithm;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use proto::agent::agent_service_server::AgentService;
use proto::agent::put_shard_request::Msg;
use proto::agent::{
    Chunk, ConcatShardsRequest, DeleteShardRequest, DeleteShardResponse, ExportFileRequest,
    ExportFileResponse, FileBatch, FileInfo, Finish, GetShardRequest, ImportFileRequest,
    ListFilesRequest, ListShardsRequest, PutShardRequest, PutShardResponse, PutSmallShardRequest,
    PutSmallShardResult, PutSmallShardsRequest, PutSmallShardsResponse, RunSyncRequest, ShardBatch,
    ShardInfo, SyncProgress, TestStorageRequest, TestStorageResponse, put_small_shard_result,
};
use proto::common::ticket_body::Kind;
use proto::common::{Ticket, TicketBody};
use sha2::{Digest, Sha256};
use snafu::{ResultExt, ensure};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use crate::error::{
    BadRequestSnafu, BadTicketSnafu, ChunkTooLargeSnafu, Error, InvalidShardHashSnafu,
    NoShardStoreSnafu, ReceivePutSnafu, RemoteAgentSnafu, Result, ShardTooLargeSnafu,
    ShuttingDownSnafu, StreamAbortedSnafu, TransitChecksumSnafu, WriterTaskSnafu,
};
use crate::files::{self, FileEntry, FileStream};
use crate::registry::SpaceRegistry;
use crate::store::{PutItem, ShardEntry, SpaceStore, Stored, is_valid_hash};
use crate::{probe, sync, ticket};

/// Chunks (≤ 1 MiB each) buffered between the gRPC request stream and the shard writer;
/// with the HTTP/2 stream window this bounds what one
/// upload holds on the agent (docs/architecture.md, "Memory bounds").
const PUT_CHANNEL_CAPACITY: usize = 2;
/// Chunks (≤ 1 MiB each) read ahead of the gRPC response stream.
const GET_CHANNEL_CAPACITY: usize = 2;
/// Shard entries listed ahead of the gRPC response stream.
const LIST_CHANNEL_CAPACITY: usize = 16;
/// Messages read ahead of an import's PutShard stream to the destination agent.
const IMPORT_CHANNEL_CAPACITY: usize = 2;
/// Connect timeout towards other agents (import destinations, export sources). Calls
/// themselves are streams without a deadline.
const AGENT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// gRPC face of the agent.
pub struct AgentGrpc {
    secret: Secret,
    spaces: SpaceRegistry,
    shutdown: CancellationToken,
    /// Clients of other agents (and of this one), for ImportFile / ExportFile.
    agents: client::AgentPool,
}

impl AgentGrpc {
    /// Service verifying tickets with `secret` and serving the stores in `spaces`; streams
    /// in flight end with `Unavailable` once `shutdown` is cancelled.
    pub fn new(secret: Secret, spaces: SpaceRegistry, shutdown: CancellationToken) -> Self {
        AgentGrpc {
            secret,
            spaces,
            shutdown,
            agents: client::AgentPool::new(client::ChannelOptions {
                connect_timeout: AGENT_CONNECT_TIMEOUT,
                request_timeout: None,
                tls: None,
            }),
        }
    }

    /// Dial other agents (imports, exports, cross-agent sync) with mTLS (`None`: plain TCP).
    pub fn with_agent_tls(mut self, tls: Option<std::sync::Arc<common::tls::TlsMaterial>>) -> Self {
        self.agents = client::AgentPool::new(client::ChannelOptions {
            connect_timeout: AGENT_CONNECT_TIMEOUT,
            request_timeout: None,
            tls,
        });
        self
    }

    /// Client of the agent at `address` (`role`: how messages name it).
    fn agent(&self, role: &'static str, address: &str) -> Result<client::AgentClient> {
        ensure!(
            !address.trim().is_empty(),
            BadRequestSnafu {
                message: format!("the {role} agent address is missing"),
            }
        );
        self.agents
            .get(address)
            .context(RemoteAgentSnafu { role, address })
    }

    /// The store serving the ticket's space, refreshing the agent's spaces first when the
    /// space is unknown or the ticket names a newer revision.
    async fn store(&self, body: &TicketBody) -> Result<SpaceStore> {
        self.spaces
            .resolve(SpaceId(body.space_id), body.space_revision)
            .await
    }

    /// The store of the ticket's space, which must have a shard store (put, concat).
    async fn shard_store(&self, body: &TicketBody) -> Result<SpaceStore> {
        let store = self.store(body).await?;
        ensure!(
            store.stores_shards(),
            NoShardStoreSnafu {
                space_id: SpaceId(body.space_id),
            }
        );
        Ok(store)
    }

    async fn test_storage(&self, req: TestStorageRequest) -> Result<()> {
        let body = ticket::verify(
            &self.secret,
            req.ticket.as_ref(),
            Kind::Test,
            common::time::now_ms(),
        )?;
        let Some(spec) = req.spec else {
            return BadRequestSnafu {
                message: "spec is missing",
            }
            .fail();
        };
        let digest = hex::encode(Sha256::digest(spec.encode_to_vec()));
        ensure!(
            digest == body.shard_hash,
            BadTicketSnafu {
                reason: "the ticket was not issued for this spec",
            }
        );
        probe::test_storage(&spec, probe::PROBE_TIMEOUT).await
    }

    async fn put(&self, mut stream: Streaming<PutShardRequest>) -> Result<Stored> {
        let first = stream.message().await.context(ReceivePutSnafu)?;
        let Some(PutShardRequest {
            msg: Some(Msg::Ticket(ticket)),
        }) = first
        else {
            return BadRequestSnafu {
                message: "first message must be the ticket",
            }
            .fail();
        };
        let body = ticket::verify(
            &self.secret,
            Some(&ticket),
            Kind::Put,
            common::time::now_ms(),
        )?;
        let space_id = SpaceId(body.space_id);
        let store = self.shard_store(&body).await?;
        let max_size = (body.max_size > 0).then_some(body.max_size);
        let algorithm = ticket::shard_algorithm(&body)?;

        // The writer runs as its own task: if this handler is dropped (client gone), the
        // sender drops without `Finish` and the writer aborts and removes its temp file.
        let (tx, rx) = mpsc::channel(PUT_CHANNEL_CAPACITY);
        let writer =
            tokio::spawn(async move { store.put(ReceiverStream::new(rx), None, algorithm).await });
        let fed = feed_put(&mut stream, &tx, max_size).await;
        if let Ok(true) = fed {
            // A failed send means the writer already stopped; its result says why.
            let _ = tx.send(PutItem::Finish).await;
        }
        drop(tx);
        let written = writer.await.context(WriterTaskSnafu)?;
        fed?;
        let stored = written?;
        common::metrics::metrics()
            .shard_bytes
            .with_label_values(&["write"])
            .inc_by(stored.size);
        debug!(
            space_id = %space_id,
            upload_id = body.upload_id,
            size = stored.size,
            hash = %stored.hash,
            "shard stored"
        );
        Ok(stored)
    }

    /// PutSmallShard: the whole shard in one message (≤ one chunk), stored in one go.
    async fn put_small(&self, req: PutSmallShardRequest) -> Result<Stored> {
        let (store, data, max_size, algorithm) = self.check_small(req).await?;
        // Also when this handler is dropped, the store either finishes the shard or
        // removes its temp file (see `SpaceStore::put_small`).
        let stored = store.put_small(data, max_size, algorithm).await?;
        debug!(size = stored.size, hash = %stored.hash, "small shard stored");
        Ok(stored)
    }

    /// PutSmallShards: every shard checked and stored like PutSmallShard, up to
    /// [`SMALL_SHARD_SYNCS`](crate::store::SMALL_SHARD_SYNCS) at once, so that the `fsync`s of
    /// a batch run concurrently and share a few journal commits instead of one per shard
    /// (ext4 and xfs do); one result per shard, in order.
    async fn put_small_many(&self, shards: Vec<PutSmallShardRequest>) -> Vec<Result<Stored>> {
        futures::stream::iter(shards)
            .map(|req| self.put_small(req))
            .buffered(crate::store::SMALL_SHARD_SYNCS)
            .collect()
            .await
    }

    /// The checks of a small put: ticket, size, a space with a shard store.
    async fn check_small(
        &self,
        req: PutSmallShardRequest,
    ) -> Result<(SpaceStore, bytes::Bytes, Option<u64>, Algorithm)> {
        let body = ticket::verify(
            &self.secret,
            req.ticket.as_ref(),
            Kind::Put,
            common::time::now_ms(),
        )?;
        ensure!(
            req.data.len() <= proto::CHUNK_SIZE,
            ChunkTooLargeSnafu {
                size: req.data.len(),
                limit: proto::CHUNK_SIZE,
            }
        );
        let store = self.shard_store(&body).await?;
        let max_size = (body.max_size > 0).then_some(body.max_size);
        let algorithm = ticket::shard_algorithm(&body)?;
        Ok((store, req.data, max_size, algorithm))
    }

    async fn concat(&self, req: ConcatShardsRequest) -> Result<Stored> {
        let body = ticket::verify(
            &self.secret,
            req.ticket.as_ref(),
            Kind::Concat,
            common::time::now_ms(),
        )?;
        let space_id = SpaceId(body.space_id);
        let store = self.shard_store(&body).await?;
        let max_size = (body.max_size > 0).then_some(body.max_size);
        let parts = body.source_hashes.len();

        // The concat runs as its own task so that its temp file is removed even when this
        // handler is dropped (client gone): dropping the guard cancels it.
        let cancel = self.shutdown.child_token();
        let _cancel_on_drop = cancel.clone().drop_guard();
        let sources = body.source_hashes;
        let stored = tokio::spawn(async move { store.concat(&sources, max_size, &cancel).await })
            .await
            .context(WriterTaskSnafu)??;
        debug!(
            space_id = %space_id,
            upload_id = body.upload_id,
            parts,
            size = stored.size,
            hash = %stored.hash,
            "shards concatenated"
        );
        Ok(stored)
    }

    /// ImportFile: stream file `file_path` of the read ticket's space into the
    /// destination agent's PutShard (ticket, data, then `finish` only when the whole file
    /// was read) and return its answer.
    async fn import(&self, req: ImportFileRequest) -> Result<PutShardResponse> {
        let now = common::time::now_ms();
        let body = ticket::verify(&self.secret, req.read_ticket.as_ref(), Kind::ReadFile, now)?;
        // The destination checks the put ticket too; checking it here refuses a wrong one
        // before any byte is read.
        let Some(put_ticket) = req.put_ticket else {
            return BadTicketSnafu {
                reason: "put_ticket is missing",
            }
            .fail();
        };
        ticket::verify(&self.secret, Some(&put_ticket), Kind::Put, now)?;
        let path = files::check_path(&body.file_path, false)?;
        let address = req.dest_agent_address.as_str();
        let mut dest = self.agent("destination", address)?;
        let store = self.store(&body).await?;
        // A missing file fails here, before the destination is contacted.
        let (size, chunks) = store.files().read(path).await?;

        let stored = put_to(&mut dest, address, put_ticket, chunks, &self.shutdown).await?;
        debug!(
            space_id = body.space_id,
            path,
            size,
            dest = address,
            hash = %stored.sha256,
            "file imported"
        );
        Ok(stored)
    }

    /// ExportFile: read shard `get_ticket.shard_hash` from the source agent's GetShard and
    /// write it atomically as file `file_path` of the write ticket's space, checked against
    /// `size` and `sha256`.
    async fn export(&self, req: ExportFileRequest) -> Result<u64> {
        let now = common::time::now_ms();
        let body = ticket::verify(
            &self.secret,
            req.write_ticket.as_ref(),
            Kind::WriteFile,
            now,
        )?;
        let Some(get_ticket) = req.get_ticket else {
            return BadTicketSnafu {
                reason: "get_ticket is missing",
            }
            .fail();
        };
        let get = ticket::verify(&self.secret, Some(&get_ticket), Kind::Get, now)?;
        ensure!(
            is_valid_hash(&req.sha256),
            InvalidShardHashSnafu {
                hash: req.sha256.clone(),
            }
        );
        ensure!(
            get.shard_hash == req.sha256,
            BadRequestSnafu {
                message: format!(
                    "the get ticket is for shard {:?}, not for sha256 {}",
                    get.shard_hash, req.sha256
                ),
            }
        );
        let path = files::check_path(&body.file_path, false)?.to_owned();
        let address = req.source_agent_address;
        let mut source = self.agent("source", &address)?;
        let files = self.store(&body).await?.files();
        files.check_writable(&path).await?;

        // Runs as its own task so that an interrupted write (shutdown, client gone: the
        // guard cancels it) still aborts the upload and removes its temp file.
        let cancel = self.shutdown.child_token();
        let _cancel_on_drop = cancel.clone().drop_guard();
        let (size, sha256) = (req.size, req.sha256);
        // `inherit`: the call to the source agent carries this request's id.
        let written = tokio::spawn(common::request_id::inherit(async move {
            let remote = |status: Status| Error::RemoteAgent {
                role: "source",
                address: address.clone(),
                source: client::Error::from(status),
            };
            let request = GetShardRequest {
                ticket: Some(get_ticket),
                offset: 0,
                length: 0,
            };
            let chunks = tokio::select! {
                () = cancel.cancelled() => return Err(Error::TransferInterrupted),
                answer = source.get_shard(request) => answer.map_err(remote)?.into_inner(),
            };
            let chunks = chunks.map_ok(|chunk| chunk.data).map_err(remote);
            files.write(&path, chunks, size, &sha256, &cancel).await
        }))
        .await
        .context(WriterTaskSnafu)??;
        debug!(
            space_id = body.space_id,
            path = %body.file_path,
            size = written,
            "file exported"
        );
        Ok(written)
    }

    /// StatShards / VerifyShards of the LIST ticket's space.
    async fn check_shards(
        &self,
        req: proto::agent::StatShardsRequest,
        verify: bool,
    ) -> Result<proto::agent::StatShardsResponse> {
        let body = ticket::verify(
            &self.secret,
            req.ticket.as_ref(),
            Kind::List,
            common::time::now_ms(),
        )?;
        let store = self.store(&body).await?;
        let shards =
            crate::repair::check_shards(&store, req.sha256, verify, &self.shutdown).await?;
        Ok(proto::agent::StatShardsResponse { shards })
    }

    async fn delete(&self, req: DeleteShardRequest) -> Result<bool> {
        let body = ticket::verify(
            &self.secret,
            req.ticket.as_ref(),
            Kind::Delete,
            common::time::now_ms(),
        )?;
        ensure!(
            is_valid_hash(&body.shard_hash),
            InvalidShardHashSnafu {
                hash: body.shard_hash,
            }
        );
        let store = self.store(&body).await?;
        store
            .delete_if_unmodified(&body.shard_hash, body.not_modified_since_ms)
            .await
    }
}

/// Stream `items` to the client through a channel of `capacity`, converting each with
/// `convert`. An error up to the first item becomes the status of the call; later ones end
/// the stream with that error, as does `shutdown`.
async fn respond_with<T, M, S>(
    mut items: S,
    capacity: usize,
    shutdown: CancellationToken,
    convert: fn(T) -> M,
) -> Result<ReceiverStream<Result<M, Status>>>
where
    S: futures::Stream<Item = Result<T>> + Unpin + Send + 'static,
    T: Send + 'static,
    M: Send + 'static,
{
    let first = items.next().await.transpose()?;
    let (tx, rx) = mpsc::channel(capacity);
    if let Some(first) = first {
        tokio::spawn(async move {
            if tx.send(Ok(convert(first))).await.is_err() {
                return;
            }
            loop {
                let next = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => Some(Err(ShuttingDownSnafu.build())),
                    next = items.next() => next,
                };
                let Some(item) = next else { break };
                let failed = item.is_err();
                let item = item.map(convert).map_err(|e: Error| Status::from(e));
                // Never end early with OK: a cut-short stream must reach the client as an
                // error, so the last send waits for room even while shutting down.
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
    }
    Ok(ReceiverStream::new(rx))
}

/// Send a shard to the PutShard of `dest` (at `address`): `ticket`, the data of `chunks`,
/// then `finish` — only when every chunk was read, so a read error stores nothing there
/// (that error is returned, not the destination's "ended without finish"). The
/// destination's own refusal comes back as `RemoteAgent` with its code.
async fn put_to(
    dest: &mut client::AgentClient,
    address: &str,
    ticket: Ticket,
    mut chunks: FileStream,
    shutdown: &CancellationToken,
) -> Result<PutShardResponse> {
    let (tx, rx) = mpsc::channel(IMPORT_CHANNEL_CAPACITY);
    let feed = async move {
        let send = |msg| PutShardRequest { msg: Some(msg) };
        if tx.send(send(Msg::Ticket(ticket))).await.is_err() {
            return Ok(());
        }
        while let Some(data) = chunks.try_next().await? {
            // The destination stopped early: its answer says why.
            if tx.send(send(Msg::Data(data))).await.is_err() {
                return Ok(());
            }
        }
        let _ = tx.send(send(Msg::Finish(Finish::default()))).await;
        Ok::<(), Error>(())
        // `tx` drops here, ending the stream: after `finish`, or without it.
    };
    let call = dest.put_shard(ReceiverStream::new(rx));
    tokio::pin!(feed, call);
    let mut fed = None;
    let answer = loop {
        tokio::select! {
            () = shutdown.cancelled() => return ShuttingDownSnafu.fail(),
            answer = &mut call => break answer,
            done = &mut feed, if fed.is_none() => fed = Some(done),
        }
    };
    if let Some(Err(err)) = fed {
        return Err(err);
    }
    Ok(answer
        .map_err(client::Error::from)
        .context(RemoteAgentSnafu {
            role: "destination",
            address,
        })?
        .into_inner())
}

/// Entries per listing message (see `FileBatch` in the proto).
const LIST_BATCH: usize = 256;
/// Longest a listing batch waits to fill before it is sent.
const LIST_LINGER: std::time::Duration = std::time::Duration::from_millis(20);

/// Group a listing into batches of what is ready (at most `LIST_BATCH`), so each gRPC
/// message carries many entries; an error ends the batch before it and follows it.
fn batched<T: Send + 'static>(
    items: impl futures::Stream<Item = Result<T>> + Unpin + Send + 'static,
) -> impl futures::Stream<Item = Result<Vec<T>>> + Unpin + Send + 'static {
    // Wait up to LIST_LINGER for a batch to fill: listers often yield one entry at a time.
    Box::pin(tokio_stream::StreamExt::chunks_timeout(
        items,
        LIST_BATCH,
        LIST_LINGER,
    ))
    .flat_map(|chunk| {
        let mut out = Vec::new();
        let mut batch = Vec::with_capacity(chunk.len());
        for item in chunk {
            match item {
                Ok(t) => batch.push(t),
                Err(e) => {
                    if !batch.is_empty() {
                        out.push(Ok(std::mem::take(&mut batch)));
                    }
                    out.push(Err(e));
                }
            }
        }
        if !batch.is_empty() {
            out.push(Ok(batch));
        }
        futures::stream::iter(out)
    })
}

fn file_batch(entries: Vec<FileEntry>) -> FileBatch {
    FileBatch {
        files: entries.into_iter().map(file_info).collect(),
    }
}

fn shard_batch(entries: Vec<ShardEntry>) -> ShardBatch {
    ShardBatch {
        shards: entries.into_iter().map(shard_info).collect(),
    }
}

fn file_info(entry: FileEntry) -> FileInfo {
    FileInfo {
        path: entry.path,
        size: entry.size,
        modified_ms: entry.modified_ms,
        full_path: entry.full_path,
    }
}

fn shard_info(entry: ShardEntry) -> ShardInfo {
    ShardInfo {
        sha256: entry.hash,
        size: entry.size,
        modified_ms: entry.modified_ms,
    }
}

/// Forward the data chunks of `stream` to the writer. `Ok(true)`: `finish` arrived and the
/// stream ended; `Ok(false)`: the writer stopped early (its result has the error).
async fn feed_put(
    stream: &mut Streaming<PutShardRequest>,
    tx: &mpsc::Sender<PutItem>,
    max_size: Option<u64>,
) -> Result<bool> {
    let mut total = 0u64;
    let mut crc = 0u32;
    loop {
        let Some(msg) = stream.message().await.context(ReceivePutSnafu)? else {
            return StreamAbortedSnafu.fail();
        };
        match msg.msg {
            Some(Msg::Data(data)) => {
                ensure!(
                    data.len() <= proto::CHUNK_SIZE,
                    ChunkTooLargeSnafu {
                        size: data.len(),
                        limit: proto::CHUNK_SIZE,
                    }
                );
                total += data.len() as u64;
                if let Some(max_size) = max_size {
                    ensure!(total <= max_size, ShardTooLargeSnafu { max_size });
                }
                crc = crc32c::crc32c_append(crc, &data);
                if tx.send(PutItem::Data(data)).await.is_err() {
                    return Ok(false);
                }
            }
            Some(Msg::Finish(finish)) => {
                if let Some(expected) = finish.crc32c {
                    ensure!(
                        expected == crc,
                        TransitChecksumSnafu {
                            expected,
                            actual: crc
                        }
                    );
                }
                let next = stream.message().await.context(ReceivePutSnafu)?;
                ensure!(
                    next.is_none(),
                    BadRequestSnafu {
                        message: "no message may follow finish",
                    }
                );
                return Ok(true);
            }
            Some(Msg::Ticket(_)) => {
                return BadRequestSnafu {
                    message: "the ticket must be sent once, as the first message",
                }
                .fail();
            }
            None => {
                return BadRequestSnafu {
                    message: "empty put message",
                }
                .fail();
            }
        }
    }
}

#[tonic::async_trait]
impl AgentService for AgentGrpc {
    async fn stat_shards(
        &self,
        request: Request<proto::agent::StatShardsRequest>,
    ) -> Result<Response<proto::agent::StatShardsResponse>, Status> {
        Ok(Response::new(
            self.check_shards(request.into_inner(), false).await?,
        ))
    }

    async fn verify_shards(
        &self,
        request: Request<proto::agent::StatShardsRequest>,
    ) -> Result<Response<proto::agent::StatShardsResponse>, Status> {
        Ok(Response::new(
            self.check_shards(request.into_inner(), true).await?,
        ))
    }

    async fn rebuild_blocks(
        &self,
        request: Request<proto::agent::RebuildBlocksRequest>,
    ) -> Result<Response<proto::agent::RebuildBlocksResponse>, Status> {
        // No task of its own: a rebuild keeps no local state, so a caller that goes away
        // drops this future and with it the targets' PutShard streams, unfinished (nothing
        // stored). `rebuild` itself stops on shutdown.
        let resp = crate::repair::rebuild(
            request.into_inner(),
            &self.secret,
            &self.agents,
            &self.shutdown,
        )
        .await?;
        Ok(Response::new(resp))
    }

    async fn put_shard(
        &self,
        request: Request<Streaming<PutShardRequest>>,
    ) -> Result<Response<PutShardResponse>, Status> {
        let stored = self.put(request.into_inner()).await?;
        Ok(Response::new(PutShardResponse {
            size: stored.size,
            sha256: stored.hash,
        }))
    }

    async fn put_small_shard(
        &self,
        request: Request<PutSmallShardRequest>,
    ) -> Result<Response<PutShardResponse>, Status> {
        let stored = self.put_small(request.into_inner()).await?;
        Ok(Response::new(PutShardResponse {
            size: stored.size,
            sha256: stored.hash,
        }))
    }

    async fn put_small_shards(
        &self,
        request: Request<PutSmallShardsRequest>,
    ) -> Result<Response<PutSmallShardsResponse>, Status> {
        let shards = request.into_inner().shards;
        let results = self
            .put_small_many(shards)
            .await
            .into_iter()
            .map(|r| PutSmallShardResult {
                result: Some(match r {
                    Ok(stored) => put_small_shard_result::Result::Ok(PutShardResponse {
                        size: stored.size,
                        sha256: stored.hash,
                    }),
                    Err(e) => put_small_shard_result::Result::Error(client::batch::item_error(&e)),
                }),
            })
            .collect();
        Ok(Response::new(PutSmallShardsResponse { results }))
    }

    type GetShardStream = ReceiverStream<Result<Chunk, Status>>;

    async fn get_shard(
        &self,
        request: Request<GetShardRequest>,
    ) -> Result<Response<Self::GetShardStream>, Status> {
        let req = request.into_inner();
        let body = ticket::verify(
            &self.secret,
            req.ticket.as_ref(),
            Kind::Get,
            common::time::now_ms(),
        )?;
        if !is_valid_hash(&body.shard_hash) {
            return Err(InvalidShardHashSnafu {
                hash: body.shard_hash,
            }
            .build()
            .into());
        }
        let store = self.store(&body).await?;
        let shard = store.read(&body.shard_hash, req.offset, req.length).await?;
        let stream = respond_with(shard, GET_CHANNEL_CAPACITY, self.shutdown.clone(), |data| {
            common::metrics::metrics()
                .shard_bytes
                .with_label_values(&["read"])
                .inc_by(data.len() as u64);
            Chunk { data }
        })
        .await?;
        Ok(Response::new(stream))
    }

    async fn concat_shards(
        &self,
        request: Request<ConcatShardsRequest>,
    ) -> Result<Response<PutShardResponse>, Status> {
        let stored = self.concat(request.into_inner()).await?;
        Ok(Response::new(PutShardResponse {
            size: stored.size,
            sha256: stored.hash,
        }))
    }

    type ListShardsStream = ReceiverStream<Result<ShardBatch, Status>>;

    async fn list_shards(
        &self,
        request: Request<ListShardsRequest>,
    ) -> Result<Response<Self::ListShardsStream>, Status> {
        let req = request.into_inner();
        let body = ticket::verify(
            &self.secret,
            req.ticket.as_ref(),
            Kind::List,
            common::time::now_ms(),
        )?;
        let store = self.store(&body).await?;
        let stream = respond_with(
            batched(store.list_shards()),
            LIST_CHANNEL_CAPACITY,
            self.shutdown.clone(),
            shard_batch,
        )
        .await?;
        Ok(Response::new(stream))
    }

    async fn delete_shard(
        &self,
        request: Request<DeleteShardRequest>,
    ) -> Result<Response<DeleteShardResponse>, Status> {
        let deleted = self.delete(request.into_inner()).await?;
        Ok(Response::new(DeleteShardResponse { deleted }))
    }

    async fn test_storage(
        &self,
        request: Request<TestStorageRequest>,
    ) -> Result<Response<TestStorageResponse>, Status> {
        self.test_storage(request.into_inner()).await?;
        Ok(Response::new(TestStorageResponse {}))
    }

    type ListFilesStream = ReceiverStream<Result<FileBatch, Status>>;

    async fn list_files(
        &self,
        request: Request<ListFilesRequest>,
    ) -> Result<Response<Self::ListFilesStream>, Status> {
        let req = request.into_inner();
        let body = ticket::verify(
            &self.secret,
            req.ticket.as_ref(),
            Kind::ListFiles,
            common::time::now_ms(),
        )?;
        let path = files::check_path(&body.file_path, true)?;
        let store = self.store(&body).await?;
        let listing = store.files().list(path).await?;
        let stream = respond_with(
            batched(listing),
            LIST_CHANNEL_CAPACITY,
            self.shutdown.clone(),
            file_batch,
        )
        .await?;
        Ok(Response::new(stream))
    }

    async fn import_file(
        &self,
        request: Request<ImportFileRequest>,
    ) -> Result<Response<PutShardResponse>, Status> {
        let stored = self.import(request.into_inner()).await?;
        Ok(Response::new(stored))
    }

    async fn export_file(
        &self,
        request: Request<ExportFileRequest>,
    ) -> Result<Response<ExportFileResponse>, Status> {
        let size = self.export(request.into_inner()).await?;
        Ok(Response::new(ExportFileResponse { size }))
    }

    type RunSyncStream = ReceiverStream<Result<SyncProgress, Status>>;

    async fn run_sync(
        &self,
        request: Request<RunSyncRequest>,
    ) -> Result<Response<Self::RunSyncStream>, Status> {
        let run = sync::prepare(&self.secret, &self.agents, request.into_inner()).await?;
        Ok(Response::new(run.start(&self.shutdown)))
    }

    type SyncListDestStream = ReceiverStream<Result<FileBatch, Status>>;

    async fn sync_list_dest(
        &self,
        request: Request<proto::agent::SyncDestRequest>,
    ) -> Result<Response<Self::SyncListDestStream>, Status> {
        let req = request.into_inner();
        let side = sync::open_dest(&self.secret, &self.spaces, req.ticket.as_ref()).await?;
        let listing = sync::dest_list(&side).await?;
        let stream = respond_with(
            batched(listing),
            LIST_CHANNEL_CAPACITY,
            self.shutdown.clone(),
            file_batch,
        )
        .await?;
        Ok(Response::new(stream))
    }

    async fn sync_write_file(
        &self,
        request: Request<Streaming<proto::agent::SyncWriteRequest>>,
    ) -> Result<Response<proto::agent::SyncWriteResponse>, Status> {
        use proto::agent::sync_write_request::Msg as WriteMsg;
        let mut stream = request.into_inner();
        let first = stream.message().await.context(ReceivePutSnafu)?;
        let Some(proto::agent::SyncWriteRequest {
            msg: Some(WriteMsg::Header(header)),
        }) = first
        else {
            return Err(BadRequestSnafu {
                message: "the first message must be the header",
            }
            .build()
            .into());
        };
        let side = sync::open_dest(&self.secret, &self.spaces, header.ticket.as_ref()).await?;
        let size = sync::dest_write(side, header, stream, self.shutdown.clone()).await?;
        Ok(Response::new(proto::agent::SyncWriteResponse { size }))
    }

    async fn sync_dest_op(
        &self,
        request: Request<proto::agent::SyncDestRequest>,
    ) -> Result<Response<proto::agent::SyncDestResponse>, Status> {
        let req = request.into_inner();
        let side = sync::open_dest(&self.secret, &self.spaces, req.ticket.as_ref()).await?;
        let done = sync::dest_op(&side, &req.path, req.mkdir).await?;
        Ok(Response::new(proto::agent::SyncDestResponse { done }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bytes::Bytes;
    use common::{CodedError, ErrorCode};
    use proto::agent::agent_service_server::AgentServiceServer;
    use tonic::transport::Server;
    use tonic::transport::server::TcpIncoming;

    use super::*;
    use crate::registry::{Served, Snapshot};

    /// A real agent service on a loopback port serving space 1 from `dir`; returns its
    /// address, a PUT ticket for space 1 and the store.
    async fn serve(
        dir: &tempfile::TempDir,
        shutdown: &CancellationToken,
    ) -> (String, Ticket, SpaceStore) {
        let secret = Secret::new("test-secret");
        let store = SpaceStore::open_local("one", &dir.path().join("space")).unwrap();
        let registry = SpaceRegistry::default();
        registry.set(Snapshot {
            spaces: HashMap::from([(
                SpaceId(1),
                Served {
                    store: store.clone(),
                    revision: None,
                },
            )]),
            broken: HashMap::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let service =
            AgentServiceServer::new(AgentGrpc::new(secret.clone(), registry, shutdown.clone()));
        tokio::spawn(
            Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener),
                    shutdown.clone().cancelled_owned(),
                ),
        );
        let body = TicketBody {
            kind: Kind::Put as i32,
            space_id: 1,
            expires_at_ms: common::time::now_ms() + 60_000,
            ..TicketBody::default()
        }
        .encode_to_vec();
        let ticket = Ticket {
            signature: common::ticket::sign(&secret, &body),
            body,
        };
        (address, ticket, store)
    }

    fn files_under(dir: &std::path::Path) -> usize {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return 0;
        };
        rd.map(|e| {
            let p = e.unwrap().path();
            if p.is_dir() { files_under(&p) } else { 1 }
        })
        .sum()
    }

    #[tokio::test]
    async fn a_read_error_never_sends_finish() {
        let dir = tempfile::tempdir().unwrap();
        let shutdown = CancellationToken::new();
        let (address, ticket, store) = serve(&dir, &shutdown).await;
        let mut dest = client::agent(&address, &client::ChannelOptions::default()).unwrap();
        let root = store.local_root().unwrap().to_owned();

        let chunk = Bytes::from(vec![7u8; proto::CHUNK_SIZE]);
        let good: FileStream = Box::pin(futures::stream::iter(vec![
            Ok(chunk.clone()),
            Ok(chunk.clone()),
        ]));
        let stored = put_to(&mut dest, &address, ticket.clone(), good, &shutdown)
            .await
            .unwrap();
        assert_eq!(stored.size, 2 * proto::CHUNK_SIZE as u64);
        assert_eq!(files_under(&root.join("shards")), 1);

        // Two chunks, then the file turns out shorter than stated.
        let failing: FileStream = Box::pin(futures::stream::iter(vec![
            Ok(chunk.clone()),
            Ok(Bytes::from_static(b"more")),
            Err(Error::FileChanged {
                path: "f".into(),
                at: 5,
                expected: 9,
            }),
        ]));
        let err = put_to(&mut dest, &address, ticket.clone(), failing, &shutdown)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::FileChanged { .. }), "{err}");
        assert_eq!(files_under(&root.join("shards")), 1);
        assert_eq!(files_under(&root.join("tmp")), 0);

        // The destination's refusal keeps its code (here: a ticket that does not verify).
        let mut bad_ticket = ticket.clone();
        bad_ticket.signature[0] ^= 1;
        let one: FileStream = Box::pin(futures::stream::iter(vec![Ok(chunk)]));
        let err = put_to(&mut dest, &address, bad_ticket, one, &shutdown)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::RemoteAgent { .. }), "{err}");
        assert_eq!(err.code(), ErrorCode::Unauthenticated);
        assert!(err.to_string().contains(&address), "{err}");
        shutdown.cancel();
    }
}
