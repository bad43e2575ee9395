//! The tonic `AgentService` implementation: parse and check requests, resolve the ticket's
//! space (refreshing the agent's spaces when needed), call the store or the probe, map the
//! result. No storage logic lives here.

use common::SpaceId;
use common::secret::Secret;
use futures::StreamExt;
use prost::Message;
use proto::agent::agent_service_server::AgentService;
use proto::agent::put_shard_request::Msg;
use proto::agent::{
    Chunk, ConcatShardsRequest, DeleteShardRequest, DeleteShardResponse, GetShardRequest,
    ListShardsRequest, PutShardRequest, PutShardResponse, ShardInfo, TestStorageRequest,
    TestStorageResponse,
};
use proto::common::TicketBody;
use proto::common::ticket_body::Kind;
use sha2::{Digest, Sha256};
use snafu::{ResultExt, ensure};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use crate::error::{
    BadRequestSnafu, BadTicketSnafu, ChunkTooLargeSnafu, Error, InvalidShardHashSnafu,
    NoShardStoreSnafu, ReceivePutSnafu, Result, ShardTooLargeSnafu, ShuttingDownSnafu,
    StreamAbortedSnafu, WriterTaskSnafu,
};
use crate::registry::SpaceRegistry;
use crate::store::{PutItem, ShardEntry, SpaceStore, Stored, is_valid_hash};
use crate::{probe, ticket};

/// Chunks buffered between the gRPC request stream and the shard writer.
const PUT_CHANNEL_CAPACITY: usize = 4;
/// Chunks read ahead of the gRPC response stream.
const GET_CHANNEL_CAPACITY: usize = 4;
/// Shard entries listed ahead of the gRPC response stream.
const LIST_CHANNEL_CAPACITY: usize = 16;

/// gRPC face of the agent.
pub struct AgentGrpc {
    secret: Secret,
    spaces: SpaceRegistry,
    shutdown: CancellationToken,
}

impl AgentGrpc {
    /// Service verifying tickets with `secret` and serving the stores in `spaces`; streams
    /// in flight end with `Unavailable` once `shutdown` is cancelled.
    pub fn new(secret: Secret, spaces: SpaceRegistry, shutdown: CancellationToken) -> Self {
        AgentGrpc {
            secret,
            spaces,
            shutdown,
        }
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

        // The writer runs as its own task: if this handler is dropped (client gone), the
        // sender drops without `Finish` and the writer aborts and removes its temp file.
        let (tx, rx) = mpsc::channel(PUT_CHANNEL_CAPACITY);
        let writer = tokio::spawn(async move { store.put(ReceiverStream::new(rx)).await });
        let fed = feed_put(&mut stream, &tx, max_size).await;
        if let Ok(true) = fed {
            // A failed send means the writer already stopped; its result says why.
            let _ = tx.send(PutItem::Finish).await;
        }
        drop(tx);
        let written = writer.await.context(WriterTaskSnafu)?;
        fed?;
        let stored = written?;
        debug!(
            space_id = %space_id,
            upload_id = body.upload_id,
            size = stored.size,
            hash = %stored.sha256,
            "shard stored"
        );
        Ok(stored)
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
            hash = %stored.sha256,
            "shards concatenated"
        );
        Ok(stored)
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

fn shard_info(entry: ShardEntry) -> ShardInfo {
    ShardInfo {
        sha256: entry.sha256,
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
                if tx.send(PutItem::Data(data)).await.is_err() {
                    return Ok(false);
                }
            }
            Some(Msg::Finish(_)) => {
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
    async fn put_shard(
        &self,
        request: Request<Streaming<PutShardRequest>>,
    ) -> Result<Response<PutShardResponse>, Status> {
        let stored = self.put(request.into_inner()).await?;
        Ok(Response::new(PutShardResponse {
            size: stored.size,
            sha256: stored.sha256,
        }))
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
            sha256: stored.sha256,
        }))
    }

    type ListShardsStream = ReceiverStream<Result<ShardInfo, Status>>;

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
            store.list_shards(),
            LIST_CHANNEL_CAPACITY,
            self.shutdown.clone(),
            shard_info,
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
}
