//! Shared state of the handlers: configuration and gRPC clients (cheap to clone).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use client::{AgentPool, CoordinatorClient};
use proto::agent::{PutShardResponse, PutSmallShardRequest, PutSmallShardsRequest};
use proto::coordinator as pb;

use crate::batch::Batcher;

use crate::config::GatewayConfig;
use crate::error::ApiError;

/// Handler state: the configuration, the coordinator clients and the agent channel pool.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: GatewayConfig,
    coordinator: CoordinatorClient,
    /// For calls that may legitimately run for minutes (package import and export): no
    /// per-call deadline.
    bulk_coordinator: CoordinatorClient,
    agents: AgentPool,
    begins: Batcher<pb::BeginUploadRequest, pb::BeginUploadResponse>,
    commits: Batcher<pb::CommitUploadRequest, pb::Object>,
    /// Reservations of small uploads fetched ahead (`GrantUploads`, `grant.rs`).
    grants: crate::grant::Grants,
    /// Per agent address: small shards of concurrent uploads, grouped (`PutSmallShards`).
    small_puts: Mutex<HashMap<String, Arc<SmallPutBatcher>>>,
}

type SmallPutBatcher = Batcher<PutSmallShardRequest, PutShardResponse>;

/// Largest shard sent through the per-agent group (`PutSmallShards`); larger ones go alone
/// in `PutSmallShard`. With [`MAX_SMALL_PUT_BATCH`] this keeps a group call well under the
/// 4 MiB message limit.
pub const MAX_GROUPED_SHARD: usize = 64 * 1024;
/// Most shards in one `PutSmallShards` call.
const MAX_SMALL_PUT_BATCH: usize = 32;

/// Most uploads one `BeginUploads` / `CommitUploads` call carries.
const MAX_UPLOAD_BATCH: usize = 64;
/// Batch calls of each kind in flight at once.
const UPLOAD_CALLS_IN_FLIGHT: usize = 1;

impl AppState {
    /// State over already-built clients (tests may point them anywhere); long-running calls
    /// share `coordinator`.
    pub fn new(config: GatewayConfig, coordinator: CoordinatorClient, agents: AgentPool) -> Self {
        let bulk_coordinator = coordinator.clone();
        AppState::with_bulk_coordinator(config, coordinator, bulk_coordinator, agents)
    }

    /// Like [`AppState::new`], with a separate client (`bulk_coordinator`, normally without a
    /// per-call deadline) for the calls that may run for minutes: package import and export.
    pub fn with_bulk_coordinator(
        config: GatewayConfig,
        coordinator: CoordinatorClient,
        bulk_coordinator: CoordinatorClient,
        agents: AgentPool,
    ) -> Self {
        AppState {
            inner: Arc::new(Inner {
                config,
                bulk_coordinator,
                agents,
                begins: begin_batcher(coordinator.clone()),
                commits: commit_batcher(coordinator.clone()),
                grants: crate::grant::Grants::new(coordinator.clone()),
                small_puts: Mutex::new(HashMap::new()),
                coordinator,
            }),
        }
    }

    /// The gateway configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    /// A handle on the coordinator client (clones share one channel).
    pub fn coordinator(&self) -> CoordinatorClient {
        self.inner.coordinator.clone()
    }

    /// The coordinator client for package import and export (clones share one channel),
    /// whose calls are not bounded by `request_timeout`: they copy every file of a package.
    pub fn bulk_coordinator(&self) -> CoordinatorClient {
        self.inner.bulk_coordinator.clone()
    }

    /// Reserve an upload; concurrent reservations share `BeginUploads` calls.
    pub async fn begin_upload(
        &self,
        req: pb::BeginUploadRequest,
    ) -> Result<pb::BeginUploadResponse, ApiError> {
        self.inner.begins.submit(req).await
    }

    /// A reservation of a small upload into `package` from the gateway's write grant, or
    /// `None` when the upload must be begun on its own ([`AppState::begin_upload`]).
    pub async fn granted_upload(
        &self,
        package: u64,
        affinity: u64,
    ) -> Option<pb::BeginUploadResponse> {
        self.inner.grants.take(package, affinity).await
    }

    /// Drop the cached grant for (`package`, `affinity`) after one of its reservations failed.
    pub async fn forget_grant(&self, package: u64, affinity: u64) {
        self.inner.grants.forget(package, affinity).await;
    }

    /// Publish an upload; concurrent commits share `CommitUploads` calls (and, for new
    /// objects, metadata transactions).
    pub async fn commit_upload(
        &self,
        req: pb::CommitUploadRequest,
    ) -> Result<pb::Object, ApiError> {
        self.inner.commits.submit(req).await
    }

    /// Store a whole shard (≤ one chunk) on the agent at `address` with one small put:
    /// shards of at most [`MAX_GROUPED_SHARD`] bytes bound for the same agent share
    /// `PutSmallShards` calls, larger ones go alone in `PutSmallShard`.
    pub async fn put_small_shard(
        &self,
        address: &str,
        req: PutSmallShardRequest,
    ) -> Result<PutShardResponse, ApiError> {
        if req.data.len() > MAX_GROUPED_SHARD {
            let mut agent = self.inner.agents.get(address)?;
            return Ok(agent.put_small_shard(req).await?.into_inner());
        }
        let batcher = {
            let mut map = self
                .inner
                .small_puts
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match map.get(address) {
                Some(b) => b.clone(),
                None => {
                    let agent = self.inner.agents.get(address)?;
                    let b = Arc::new(small_put_batcher(agent));
                    map.insert(address.to_owned(), b.clone());
                    b
                }
            }
        };
        batcher.submit(req).await
    }

    /// Agent clients cached by address.
    pub fn agents(&self) -> &AgentPool {
        &self.inner.agents
    }

    /// The user a request acts for: `userID` when given (it must not be 0), else the
    /// configured default.
    pub(crate) fn user_id(&self, requested: Option<u64>) -> Result<u64, ApiError> {
        match requested {
            None => Ok(self.inner.config.default_user_id),
            Some(0) => Err(ApiError::bad_argument(
                "field `userID` must be a positive id (got 0)",
            )),
            Some(id) => Ok(id),
        }
    }
}

fn begin_batcher(
    coordinator: CoordinatorClient,
) -> Batcher<pb::BeginUploadRequest, pb::BeginUploadResponse> {
    Batcher::new(
        "BeginUploads",
        MAX_UPLOAD_BATCH,
        UPLOAD_CALLS_IN_FLIGHT,
        move |uploads: Vec<pb::BeginUploadRequest>| {
            let mut coordinator = coordinator.clone();
            async move {
                let sent = uploads.len();
                let answer = coordinator
                    .begin_uploads(pb::BeginUploadsRequest { uploads })
                    .await
                    .map(|r| r.into_inner().results);
                per_item(sent, answer, |r| match r.result {
                    Some(pb::begin_upload_result::Result::Ok(ok)) => Ok(ok),
                    Some(pb::begin_upload_result::Result::Error(e)) => Err(e),
                    None => Err(missing_result()),
                })
            }
        },
    )
}

fn commit_batcher(coordinator: CoordinatorClient) -> Batcher<pb::CommitUploadRequest, pb::Object> {
    Batcher::new(
        "CommitUploads",
        MAX_UPLOAD_BATCH,
        UPLOAD_CALLS_IN_FLIGHT,
        move |uploads: Vec<pb::CommitUploadRequest>| {
            let mut coordinator = coordinator.clone();
            async move {
                let sent = uploads.len();
                let answer = coordinator
                    .commit_uploads(pb::CommitUploadsRequest { uploads })
                    .await
                    .map(|r| r.into_inner().results);
                per_item(sent, answer, |r| match r.result {
                    Some(pb::commit_upload_result::Result::Ok(ok)) => Ok(ok),
                    Some(pb::commit_upload_result::Result::Error(e)) => Err(e),
                    None => Err(missing_result()),
                })
            }
        },
    )
}

fn small_put_batcher(agent: client::AgentClient) -> SmallPutBatcher {
    Batcher::new(
        "PutSmallShards",
        MAX_SMALL_PUT_BATCH,
        UPLOAD_CALLS_IN_FLIGHT,
        move |shards: Vec<PutSmallShardRequest>| {
            let mut agent = agent.clone();
            async move {
                let sent = shards.len();
                let answer = agent
                    .put_small_shards(PutSmallShardsRequest { shards })
                    .await
                    .map(|r| r.into_inner().results);
                per_item(sent, answer, |r| {
                    use proto::agent::put_small_shard_result::Result as R;
                    match r.result {
                        Some(R::Ok(ok)) => Ok(ok),
                        Some(R::Error(e)) => Err(e),
                        None => Err(missing_result()),
                    }
                })
            }
        },
    )
}

fn missing_result() -> proto::common::ItemError {
    proto::common::ItemError {
        code: common::ErrorCode::Internal.as_str().to_owned(),
        message: "batch result without a value".to_owned(),
    }
}

/// One result per item from a batch call's answer: a failed call fails every item the
/// same way; a wrong number of results is an internal error for every item.
fn per_item<R, O>(
    sent: usize,
    answer: Result<Vec<R>, tonic::Status>,
    each: impl Fn(R) -> Result<O, proto::common::ItemError>,
) -> Vec<Result<O, ApiError>> {
    match answer {
        Ok(results) if results.len() == sent => results
            .into_iter()
            .map(|r| each(r).map_err(|e| ApiError::from(client::batch::item_status(e))))
            .collect(),
        Ok(results) => {
            let status = client::batch::length_mismatch(sent, results.len());
            (0..sent)
                .map(|_| Err(ApiError::from(status.clone())))
                .collect()
        }
        Err(status) => (0..sent)
            .map(|_| Err(ApiError::from(status.clone())))
            .collect(),
    }
}
