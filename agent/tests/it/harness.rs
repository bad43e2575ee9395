//! A running agent plus a fake coordinator that only answers `RegisterAgent` (with the API
//! space specs a test gives it).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent::{Agent, AgentConfig, Registration, SpaceConfig};
use bytes::Bytes;
use client::{AgentClient, ChannelOptions};
use common::secret::Secret;
use prost::Message;
use proto::agent::put_shard_request::Msg;
use proto::agent::{Finish, PutShardRequest};
use proto::common::ticket_body::Kind;
use proto::common::{SpaceSpec, Ticket, TicketBody};
use proto::coordinator::coordinator_service_server::{
    CoordinatorService, CoordinatorServiceServer,
};
use proto::coordinator::*;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Space id the fake coordinator assigns to the first declared space.
pub const FIRST_SPACE_ID: u64 = 100;
pub const AGENT_ID: u64 = 7;

/// Fake coordinator: assigns `FIRST_SPACE_ID + i` to the i-th declared space, answers
/// with the specs of `specs` whose first call has come (1-based call numbers), and records
/// the requests it got.
#[derive(Clone, Default)]
pub struct FakeCoordinator {
    pub requests: Arc<Mutex<Vec<RegisterAgentRequest>>>,
    /// `(from_call, spec)`: the spec is sent from registration call `from_call` on.
    pub specs: Arc<Mutex<Vec<(usize, SpaceSpec)>>>,
    /// Heartbeat interval answered, ms (0 = the agent's own, 100 ms in tests).
    pub heartbeat_ms: Arc<AtomicU64>,
}

impl FakeCoordinator {
    /// Serve `spec` from the next registration call on, replacing any spec of its space.
    pub fn put_spec(&self, spec: SpaceSpec) {
        let next = self.requests.lock().unwrap().len() + 1;
        self.put_spec_from(next, spec);
    }

    /// Serve `spec` from registration call `from_call` on, replacing any spec of its space.
    pub fn put_spec_from(&self, from_call: usize, spec: SpaceSpec) {
        let mut specs = self.specs.lock().unwrap();
        specs.retain(|(_, s)| s.space_id != spec.space_id);
        specs.push((from_call, spec));
    }

    /// Number of `RegisterAgent` calls so far.
    pub fn calls(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented(
        "fake coordinator only answers RegisterAgent",
    ))
}

#[tonic::async_trait]
impl CoordinatorService for FakeCoordinator {
    async fn create_bucket(
        &self,
        _: Request<CreateBucketRequest>,
    ) -> Result<Response<BucketResponse>, Status> {
        unimplemented()
    }
    async fn get_bucket_by_name(
        &self,
        _: Request<GetBucketByNameRequest>,
    ) -> Result<Response<BucketResponse>, Status> {
        unimplemented()
    }
    async fn list_buckets(
        &self,
        _: Request<ListBucketsRequest>,
    ) -> Result<Response<ListBucketsResponse>, Status> {
        unimplemented()
    }
    async fn delete_bucket(
        &self,
        _: Request<DeleteBucketRequest>,
    ) -> Result<Response<Empty>, Status> {
        unimplemented()
    }
    async fn create_package(
        &self,
        _: Request<CreatePackageRequest>,
    ) -> Result<Response<PackageResponse>, Status> {
        unimplemented()
    }
    async fn get_package(
        &self,
        _: Request<GetPackageRequest>,
    ) -> Result<Response<PackageResponse>, Status> {
        unimplemented()
    }
    async fn get_package_by_full_name(
        &self,
        _: Request<GetPackageByFullNameRequest>,
    ) -> Result<Response<PackageResponse>, Status> {
        unimplemented()
    }
    async fn list_bucket_packages(
        &self,
        _: Request<ListBucketPackagesRequest>,
    ) -> Result<Response<ListBucketPackagesResponse>, Status> {
        unimplemented()
    }
    async fn delete_package(
        &self,
        _: Request<DeletePackageRequest>,
    ) -> Result<Response<Empty>, Status> {
        unimplemented()
    }
    async fn list_objects(
        &self,
        _: Request<ListObjectsRequest>,
    ) -> Result<Response<ListObjectsResponse>, Status> {
        unimplemented()
    }
    async fn delete_objects(
        &self,
        _: Request<DeleteObjectsRequest>,
    ) -> Result<Response<Empty>, Status> {
        unimplemented()
    }
    async fn begin_upload(
        &self,
        _: Request<BeginUploadRequest>,
    ) -> Result<Response<BeginUploadResponse>, Status> {
        unimplemented()
    }
    async fn commit_upload(
        &self,
        _: Request<CommitUploadRequest>,
    ) -> Result<Response<ObjectResponse>, Status> {
        unimplemented()
    }
    async fn begin_uploads(
        &self,
        _: Request<proto::coordinator::BeginUploadsRequest>,
    ) -> Result<Response<proto::coordinator::BeginUploadsResponse>, Status> {
        unimplemented()
    }
    async fn commit_uploads(
        &self,
        _: Request<proto::coordinator::CommitUploadsRequest>,
    ) -> Result<Response<proto::coordinator::CommitUploadsResponse>, Status> {
        unimplemented()
    }
    async fn resolve_object(
        &self,
        _: Request<ResolveObjectRequest>,
    ) -> Result<Response<ResolveObjectResponse>, Status> {
        unimplemented()
    }
    async fn list_by_path(
        &self,
        _: Request<ListByPathRequest>,
    ) -> Result<Response<ListByPathResponse>, Status> {
        unimplemented()
    }
    async fn move_objects(
        &self,
        _: Request<MoveObjectsRequest>,
    ) -> Result<Response<MoveObjectsResponse>, Status> {
        unimplemented()
    }
    async fn clone_objects(
        &self,
        _: Request<CloneObjectsRequest>,
    ) -> Result<Response<CloneObjectsResponse>, Status> {
        unimplemented()
    }
    async fn new_multipart_upload(
        &self,
        _: Request<NewMultipartUploadRequest>,
    ) -> Result<Response<ObjectResponse>, Status> {
        unimplemented()
    }
    async fn begin_upload_part(
        &self,
        _: Request<BeginUploadPartRequest>,
    ) -> Result<Response<BeginUploadResponse>, Status> {
        unimplemented()
    }
    async fn begin_complete_multipart_upload(
        &self,
        _: Request<CompleteMultipartUploadRequest>,
    ) -> Result<Response<BeginUploadResponse>, Status> {
        unimplemented()
    }
    async fn create_user_space(
        &self,
        _: Request<CreateUserSpaceRequest>,
    ) -> Result<Response<UserSpaceResponse>, Status> {
        unimplemented()
    }
    async fn get_user_space(
        &self,
        _: Request<GetUserSpaceRequest>,
    ) -> Result<Response<UserSpaceResponse>, Status> {
        unimplemented()
    }
    async fn update_user_space(
        &self,
        _: Request<UpdateUserSpaceRequest>,
    ) -> Result<Response<UserSpaceResponse>, Status> {
        unimplemented()
    }
    async fn delete_user_space(
        &self,
        _: Request<DeleteUserSpaceRequest>,
    ) -> Result<Response<Empty>, Status> {
        unimplemented()
    }
    async fn test_user_space(
        &self,
        _: Request<TestUserSpaceRequest>,
    ) -> Result<Response<Empty>, Status> {
        unimplemented()
    }
    async fn import_package(
        &self,
        _: Request<ImportPackageRequest>,
    ) -> Result<Response<ImportPackageResponse>, Status> {
        unimplemented()
    }
    async fn export_package(
        &self,
        _: Request<ExportPackageRequest>,
    ) -> Result<Response<ExportPackageResponse>, Status> {
        unimplemented()
    }
    async fn create_sync_task(
        &self,
        _: Request<CreateSyncTaskRequest>,
    ) -> Result<Response<SyncTaskResponse>, Status> {
        unimplemented()
    }
    async fn get_sync_task(
        &self,
        _: Request<GetSyncTaskRequest>,
    ) -> Result<Response<SyncTaskResponse>, Status> {
        unimplemented()
    }
    async fn cancel_sync_task(
        &self,
        _: Request<CancelSyncTaskRequest>,
    ) -> Result<Response<Empty>, Status> {
        unimplemented()
    }
    async fn update_package(
        &self,
        _: Request<proto::coordinator::UpdatePackageRequest>,
    ) -> Result<Response<PackageResponse>, Status> {
        unimplemented()
    }
    async fn register_agent(
        &self,
        request: Request<RegisterAgentRequest>,
    ) -> Result<Response<RegisterAgentResponse>, Status> {
        let req = request.into_inner();
        let spaces = req
            .spaces
            .iter()
            .enumerate()
            .map(|(i, s)| SpaceAssignment {
                name: s.name.clone(),
                space_id: FIRST_SPACE_ID + i as u64,
            })
            .collect();
        let call = {
            let mut requests = self.requests.lock().unwrap();
            requests.push(req);
            requests.len()
        };
        let specs = self
            .specs
            .lock()
            .unwrap()
            .iter()
            .filter(|(from, _)| *from <= call)
            .map(|(_, spec)| spec.clone())
            .collect();
        let heartbeat_ms = match self.heartbeat_ms.load(Ordering::SeqCst) {
            0 => 100,
            ms => ms,
        };
        Ok(Response::new(RegisterAgentResponse {
            agent_id: AGENT_ID,
            spaces,
            heartbeat_interval_ms: heartbeat_ms,
            specs,
        }))
    }
    async fn create_access_key(
        &self,
        _: Request<CreateAccessKeyRequest>,
    ) -> Result<Response<CreateAccessKeyResponse>, Status> {
        unimplemented()
    }
    async fn list_access_keys(
        &self,
        _: Request<ListAccessKeysRequest>,
    ) -> Result<Response<ListAccessKeysResponse>, Status> {
        unimplemented()
    }
    async fn delete_access_key(
        &self,
        _: Request<DeleteAccessKeyRequest>,
    ) -> Result<Response<Empty>, Status> {
        unimplemented()
    }
    async fn lookup_access_key(
        &self,
        _: Request<LookupAccessKeyRequest>,
    ) -> Result<Response<LookupAccessKeyResponse>, Status> {
        unimplemented()
    }
    async fn start_scrub(
        &self,
        _: Request<proto::coordinator::StartScrubRequest>,
    ) -> Result<Response<proto::coordinator::ScrubStatus>, Status> {
        unimplemented()
    }
    async fn get_scrub_status(
        &self,
        _: Request<proto::coordinator::GetScrubStatusRequest>,
    ) -> Result<Response<proto::coordinator::ScrubStatus>, Status> {
        unimplemented()
    }
    async fn report_damage(
        &self,
        _: Request<proto::coordinator::ReportDamageRequest>,
    ) -> Result<Response<proto::coordinator::Empty>, Status> {
        unimplemented()
    }
    async fn grant_uploads(
        &self,
        _: Request<proto::coordinator::GrantUploadsRequest>,
    ) -> Result<Response<proto::coordinator::GrantUploadsResponse>, Status> {
        unimplemented()
    }
}

/// Serve `fake` on a fresh loopback port until `shutdown`; returns its address.
pub async fn spawn_coordinator(fake: FakeCoordinator, shutdown: CancellationToken) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(CoordinatorServiceServer::new(fake))
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown.cancelled_owned()),
    );
    addr.to_string()
}

/// An agent serving one space `local`, registered (or registering) with a coordinator.
pub struct TestAgent {
    pub address: String,
    pub client: AgentClient,
    pub secret: Secret,
    pub space_dir: PathBuf,
    pub registration: watch::Receiver<Option<Registration>>,
    pub coordinator: FakeCoordinator,
    pub shutdown: CancellationToken,
    pub served: JoinHandle<Result<(), agent::Error>>,
    _dir: tempfile::TempDir,
}

impl TestAgent {
    /// Start an agent against a fake coordinator and wait until it has registered.
    pub async fn start() -> TestAgent {
        TestAgent::start_fake(FakeCoordinator::default()).await
    }

    /// Start an agent against `fake` and wait until it has registered.
    pub async fn start_fake(fake: FakeCoordinator) -> TestAgent {
        TestAgent::start_fake_with_secret(fake, Secret::random()).await
    }

    /// Start an agent with cluster secret `secret` (agents exchanging tickets share one)
    /// against `fake` and wait until it has registered.
    pub async fn start_fake_with_secret(fake: FakeCoordinator, secret: Secret) -> TestAgent {
        let shutdown = CancellationToken::new();
        let coordinator = spawn_coordinator(fake.clone(), shutdown.child_token()).await;
        let agent = TestAgent::start_with_secret(coordinator, fake, shutdown, secret).await;
        let mut reg = agent.registration.clone();
        let registered = common::testing::wait_until(Duration::from_secs(10), || {
            let done = reg.borrow_and_update().is_some();
            async move { done }
        })
        .await;
        assert!(
            registered,
            "agent did not register with the fake coordinator"
        );
        agent
    }

    /// Start an agent pointed at `coordinator` without waiting for registration.
    pub async fn start_with(
        coordinator: String,
        fake: FakeCoordinator,
        shutdown: CancellationToken,
    ) -> TestAgent {
        TestAgent::start_with_secret(coordinator, fake, shutdown, Secret::random()).await
    }

    /// Start an agent with `secret` pointed at `coordinator` without waiting for
    /// registration.
    pub async fn start_with_secret(
        coordinator: String,
        fake: FakeCoordinator,
        shutdown: CancellationToken,
        secret: Secret,
    ) -> TestAgent {
        common::testing::init_logging();
        let dir = tempfile::tempdir().unwrap();
        let space_dir = dir.path().join("space");
        let config = AgentConfig {
            name: "agent-test".into(),
            coordinator,
            cluster_secret: Some(secret.clone()),
            spaces: vec![SpaceConfig {
                name: "local".into(),
                path: space_dir.clone(),
            }],
            heartbeat_interval: Duration::from_millis(100),
            ..AgentConfig::default()
        };
        let agent = Agent::build(config).unwrap();
        let registration = agent.registration();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let served = tokio::spawn(agent.serve(listener, shutdown.child_token()));
        let client = client::agent(&address, &ChannelOptions::default()).unwrap();
        TestAgent {
            address,
            client,
            secret,
            space_dir,
            registration,
            coordinator: fake,
            shutdown,
            served,
            _dir: dir,
        }
    }

    /// Wait until the agent serves API space `id` at `revision`.
    pub async fn wait_api_space(&self, id: u64, revision: u64) {
        let mut reg = self.registration.clone();
        let served = common::testing::wait_until(Duration::from_secs(10), || {
            let done = reg
                .borrow_and_update()
                .as_ref()
                .is_some_and(|r| r.api_spaces.get(&common::SpaceId(id)) == Some(&revision));
            async move { done }
        })
        .await;
        assert!(
            served,
            "agent does not serve space {id} at revision {revision}"
        );
    }

    /// A ticket signed with the cluster secret.
    pub fn ticket(&self, body: &TicketBody) -> Ticket {
        sign(&self.secret, body)
    }

    /// A put ticket for the agent's space, valid for a minute.
    pub fn put_ticket(&self, max_size: u64) -> Ticket {
        self.ticket(&put_body(FIRST_SPACE_ID, max_size))
    }

    /// A get ticket for shard `hash` of the agent's space, valid for a minute.
    pub fn get_ticket(&self, hash: &str) -> Ticket {
        self.ticket(&get_body(FIRST_SPACE_ID, hash))
    }

    /// Local path of shard `hash` in the agent's space.
    pub fn shard_path(&self, hash: &str) -> PathBuf {
        self.space_dir.join("shards").join(&hash[..2]).join(hash)
    }

    /// Files under the space's `shards/` and `tmp/` directories.
    pub fn stored_files(&self) -> (Vec<PathBuf>, Vec<PathBuf>) {
        (
            files_under(&self.space_dir.join("shards")),
            files_under(&self.space_dir.join("tmp")),
        )
    }

    /// Cancel the agent and the fake coordinator; the agent's `serve` must return `Ok`.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let served = tokio::time::timeout(Duration::from_secs(10), self.served)
            .await
            .expect("agent did not stop in time")
            .unwrap();
        served.unwrap();
    }
}

pub fn sign(secret: &Secret, body: &TicketBody) -> Ticket {
    let body = body.encode_to_vec();
    Ticket {
        signature: common::ticket::sign(secret, &body),
        body,
    }
}

/// A ticket body of `kind` for `space_id`, valid for a minute, other fields empty.
pub fn body(kind: Kind, space_id: u64) -> TicketBody {
    TicketBody {
        kind: kind as i32,
        space_id,
        expires_at_ms: common::time::now_ms() + 60_000,
        ..TicketBody::default()
    }
}

pub fn put_body(space_id: u64, max_size: u64) -> TicketBody {
    TicketBody {
        upload_id: 1,
        max_size,
        ..body(Kind::Put, space_id)
    }
}

pub fn get_body(space_id: u64, hash: &str) -> TicketBody {
    TicketBody {
        shard_hash: hash.to_owned(),
        ..body(Kind::Get, space_id)
    }
}

pub fn concat_body(space_id: u64, sources: &[&str], max_size: u64) -> TicketBody {
    TicketBody {
        upload_id: 2,
        source_hashes: sources.iter().map(|s| s.to_string()).collect(),
        max_size,
        ..body(Kind::Concat, space_id)
    }
}

pub fn delete_body(space_id: u64, hash: &str, not_modified_since_ms: i64) -> TicketBody {
    TicketBody {
        shard_hash: hash.to_owned(),
        not_modified_since_ms,
        ..body(Kind::Delete, space_id)
    }
}

/// The messages of a put: the ticket, `data` in `chunk`-sized pieces, then `finish`.
pub fn put_messages(
    ticket: Ticket,
    data: &[u8],
    chunk: usize,
    finish: bool,
) -> Vec<PutShardRequest> {
    let mut msgs = vec![PutShardRequest {
        msg: Some(Msg::Ticket(ticket)),
    }];
    msgs.extend(data.chunks(chunk).map(|c| PutShardRequest {
        msg: Some(Msg::Data(Bytes::copy_from_slice(c))),
    }));
    if finish {
        msgs.push(PutShardRequest {
            msg: Some(Msg::Finish(Finish::default())),
        });
    }
    msgs
}

/// Deterministic, non-repeating-looking test content.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 131) ^ (i >> 9)) as u8).collect()
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
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

/// Spec of an API space on S3 bucket `bucket` of `s3` with `secret` (access key `testing`).
pub fn s3_spec(
    id: u64,
    revision: u64,
    endpoint: &str,
    bucket: &str,
    secret: &str,
    working_dir: &str,
    max_size: u64,
) -> SpaceSpec {
    SpaceSpec {
        space_id: id,
        revision,
        storage_json: serde_json::json!({
            "type": "S3", "endpoint": endpoint, "bucket": bucket
        })
        .to_string(),
        credential_json: serde_json::json!({
            "type": "S3", "accessKeyId": crate::s3::ACCESS_KEY, "secretAccessKey": secret
        })
        .to_string(),
        working_dir: working_dir.to_owned(),
        stores_shards: true,
        max_size,
        name: format!("s3-{id}"),
    }
}

/// Spec of an API space in local directory `path`.
pub fn local_spec(
    id: u64,
    revision: u64,
    path: &Path,
    working_dir: &str,
    max_size: u64,
) -> SpaceSpec {
    SpaceSpec {
        space_id: id,
        revision,
        storage_json: serde_json::json!({"type": "Local", "path": path}).to_string(),
        credential_json: r#"{"type":"Local"}"#.to_owned(),
        working_dir: working_dir.to_owned(),
        stores_shards: true,
        max_size,
        name: format!("local-{id}"),
    }
}
