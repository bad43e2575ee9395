//! Test fixtures: an in-memory fake coordinator and a fake agent served by real tonic
//! servers on `127.0.0.1:0`, and helpers to call the router in-process.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::response::Response;
use bytes::Bytes;
use futures::Stream;
use proto::agent::agent_service_server::{AgentService, AgentServiceServer};
use proto::agent::put_shard_request::Msg;
use proto::agent::{
    Chunk, ConcatShardsRequest, DeleteShardRequest, DeleteShardResponse, ExportFileRequest,
    ExportFileResponse, FileBatch, GetShardRequest, ImportFileRequest, ListFilesRequest,
    ListShardsRequest, PutShardRequest, PutShardResponse, PutSmallShardRequest, RunSyncRequest,
    ShardBatch, SyncDestRequest, SyncDestResponse, SyncProgress, SyncWriteRequest,
    SyncWriteResponse, TestStorageRequest, TestStorageResponse,
};
use proto::common::Ticket;
use proto::coordinator as pb;
use proto::coordinator::coordinator_service_server::{
    CoordinatorService, CoordinatorServiceServer,
};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

use common::space::UserSpace;
use common::sync::{TaskSpec, TaskState};

use crate::config::GatewayConfig;
use crate::server::router;
use crate::state::AppState;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap()
}

/// What the fake coordinator has seen and holds.
#[derive(Default, Debug)]
pub struct CoordState {
    pub calls: Vec<&'static str>,
    pub next_id: u64,
    pub buckets: Vec<pb::Bucket>,
    pub packages: Vec<pb::Package>,
    /// (package id, path) → object.
    pub objects: BTreeMap<(u64, String), pb::Object>,
    /// upload id → what its commit publishes. The real coordinator stores nothing at begin
    /// (it signs this into the commit token); the fake remembers it instead. Only a commit
    /// removes an entry: an upload that is never committed stays here, as its bytes stay on
    /// the agent until shard GC.
    pub reservations: HashMap<u64, PendingKind>,
    /// (multipart object id, part index) → sha256 of the committed part.
    pub parts: BTreeMap<(u64, u32), String>,
    pub begins: Vec<(u64, String, u64)>,
    /// Upload ids committed, in order.
    pub commits: Vec<u64>,
    pub list_requests: Vec<String>,
    /// Every `ListByPath` request, as received.
    pub list_by_path_requests: Vec<pb::ListByPathRequest>,
    /// Every `ResolveObject` request, as received.
    pub resolves: Vec<pb::ResolveObjectRequest>,
    /// Every `BeginCompleteMultipartUpload` request: (object id, indexes).
    pub completes: Vec<(u64, Vec<u32>)>,
    pub agent_address: String,
    /// Largest page `ListObjects` returns.
    pub page_cap: usize,
    /// Commit of this path fails with Unavailable.
    pub fail_commit_path: Option<String>,
    /// How `GrantUploads` answers: `None` = Unimplemented (every upload is begun on its
    /// own), `Some(true)` = grants what is asked, `Some(false)` = refuses (`granted: false`).
    pub grant: Option<bool>,
    /// Every `GrantUploads` request, as received.
    pub grant_requests: Vec<pb::GrantUploadsRequest>,
    /// RPC name → the error code it fails with (for the RPCs that call `call_checked`).
    pub fail_rpc: HashMap<&'static str, common::ErrorCode>,
    /// User spaces by id, secrets in clear (as stored); answers mask them.
    pub user_spaces: BTreeMap<u64, UserSpace>,
    /// Every `CreateUserSpace` `spec_json`, as received.
    pub space_specs: Vec<String>,
    /// Every `UpdateUserSpace` request, as received.
    pub space_updates: Vec<pb::UpdateUserSpaceRequest>,
    /// Every `TestUserSpace` request, as received.
    pub space_tests: Vec<pb::TestUserSpaceRequest>,
    /// Spaces that still hold shards: `DeleteUserSpace` refuses them with `Conflict`.
    pub busy_spaces: HashSet<u64>,
    /// What `TestUserSpace` fails with (code, message); `None` = the probe succeeds.
    pub space_test_error: Option<(common::ErrorCode, String)>,
    /// Plain files of the user spaces: (space id, path) → content. `ImportPackage` reads
    /// them, `ExportPackage` writes them.
    pub space_files: BTreeMap<(u64, String), Vec<u8>>,
    /// Every `ImportPackage` request, as received.
    pub imports: Vec<pb::ImportPackageRequest>,
    /// Every `ExportPackage` request, as received.
    pub exports: Vec<pb::ExportPackageRequest>,
    /// `ImportPackage` and `ExportPackage` sleep this long before doing anything (a long
    /// transfer).
    pub transfer_delay: Option<std::time::Duration>,
    /// The fake agent whose shards imports fill and exports read (set by [`Fixture`]).
    pub agent: Option<FakeAgent>,
    /// Sync tasks by id: the spec as received and the state `status.state` reports
    /// (`Pending` until cancelled; the fake runs nothing).
    pub sync_tasks: BTreeMap<u64, (TaskSpec, TaskState)>,
    /// Every `CreateSyncTask` `task_json`, as received.
    pub sync_task_specs: Vec<String>,
    /// Every `CancelSyncTask` task id, as received.
    pub sync_cancels: Vec<u64>,
    /// API access keys by id: the key and its secret.
    pub access_keys: BTreeMap<String, (pb::AccessKey, String)>,
}

/// What committing a reserved upload publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingKind {
    /// A whole object at (package id, path).
    Object { package_id: u64, path: String },
    /// Part `index` of multipart object `object_id`.
    Part { object_id: u64, index: u32 },
    /// The concatenated content of multipart object `object_id`.
    Complete { object_id: u64 },
}

/// Redundancy string of an unfinished multipart object.
pub const MULTIPART: &str = "multipartUpload";

/// SHA-256 a multipart object reports until it is completed.
pub const ZERO_SHA256: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Update time given to objects changed after creation.
pub const LATER_MS: i64 = 1_750_760_000_000;

fn coded(code: common::ErrorCode, message: impl Into<String>) -> Status {
    common::error::status(code, message)
}

impl CoordState {
    fn object_by_id(&self, id: u64) -> Option<&pb::Object> {
        self.objects.values().find(|o| o.object_id == id)
    }

    /// The multipart object `id`, or the error the real coordinator would give.
    fn multipart_object(&self, id: u64) -> Result<pb::Object, Status> {
        let object = self.object_by_id(id).ok_or_else(|| {
            coded(
                common::ErrorCode::NotFound,
                format!("object {id} not found"),
            )
        })?;
        if object.redundancy != MULTIPART {
            return Err(coded(
                common::ErrorCode::BadArgument,
                format!("object {id} is not a multipart upload"),
            ));
        }
        Ok(object.clone())
    }

    /// User space names are unique, as in the real coordinator.
    fn space_name_free(&self, name: &str, id: u64) -> Result<(), Status> {
        if self
            .user_spaces
            .values()
            .any(|s| s.name == name && s.user_space_id != id)
        {
            return Err(coded(
                common::ErrorCode::AlreadyExists,
                format!("user space {name:?} already exists"),
            ));
        }
        Ok(())
    }

    fn user_space_exists(&self, id: u64) -> Result<(), Status> {
        if self.user_spaces.contains_key(&id) {
            Ok(())
        } else {
            Err(coded(
                common::ErrorCode::NotFound,
                format!("user space {id} not found"),
            ))
        }
    }

    /// Import the file or tree at `r.path` of the space into a new package, as the real
    /// coordinator does: a missing path creates nothing, a taken name is `AlreadyExists`,
    /// files whose relative path is not a valid object path are failures.
    fn import(
        &mut self,
        r: &pb::ImportPackageRequest,
    ) -> Result<pb::ImportPackageResponse, Status> {
        self.user_space_exists(r.user_space_id)?;
        if !self.buckets.iter().any(|b| b.bucket_id == r.bucket_id) {
            return Err(coded(
                common::ErrorCode::NotFound,
                format!("bucket {} not found", r.bucket_id),
            ));
        }
        let root = r.path.trim_matches('/');
        let files: Vec<(String, Vec<u8>)> = self
            .space_files
            .iter()
            .filter(|((space, _), _)| *space == r.user_space_id)
            .filter_map(|((_, path), content)| {
                let rel = if path == root {
                    path.rsplit('/').next().unwrap_or(path).to_owned()
                } else if root.is_empty() {
                    path.clone()
                } else {
                    path.strip_prefix(root)?.strip_prefix('/')?.to_owned()
                };
                Some((rel, content.clone()))
            })
            .collect();
        if files.is_empty() {
            return Err(coded(
                common::ErrorCode::NotFound,
                format!("{:?} not found in user space {}", r.path, r.user_space_id),
            ));
        }
        if self
            .packages
            .iter()
            .any(|p| p.bucket_id == r.bucket_id && p.name == r.name)
        {
            return Err(coded(
                common::ErrorCode::AlreadyExists,
                format!("package {:?} already exists", r.name),
            ));
        }
        let package = pb::Package {
            package_id: self.fresh_id(),
            name: r.name.clone(),
            bucket_id: r.bucket_id,
            create_time_ms: 1_750_753_888_514,
            ..Default::default()
        };
        self.packages.push(package.clone());
        let mut imported = 0;
        let mut failures = Vec::new();
        for (path, content) in files {
            if let Err(message) = common::path::validate_object_path(&path) {
                failures.push(pb::FileFailure { path, message });
                continue;
            }
            let sha256 = sha256_hex(&content);
            if let Some(agent) = &self.agent {
                lock(&agent.0)
                    .shards
                    .insert(sha256.clone(), content.clone());
            }
            let object = pb::Object {
                object_id: self.fresh_id(),
                package_id: package.package_id,
                path: path.clone(),
                size: content.len() as u64,
                sha256,
                redundancy: "none".into(),
                create_time_ms: 1_750_753_888_514,
                update_time_ms: 1_750_753_888_514,
                space_id: if r.space_affinity == 0 {
                    1
                } else {
                    r.space_affinity
                },
            };
            self.objects.insert((package.package_id, path), object);
            imported += 1;
        }
        Ok(pb::ImportPackageResponse {
            package: Some(package),
            imported,
            failures,
        })
    }

    /// Write every object of the package to `root_path/<object path>` of the space; an
    /// unfinished multipart object or a missing shard is a failure.
    fn export(
        &mut self,
        r: &pb::ExportPackageRequest,
    ) -> Result<pb::ExportPackageResponse, Status> {
        self.user_space_exists(r.user_space_id)?;
        if !self.packages.iter().any(|p| p.package_id == r.package_id) {
            return Err(coded(
                common::ErrorCode::NotFound,
                format!("package {} not found", r.package_id),
            ));
        }
        let root = r.root_path.trim_matches('/');
        let mut exported = 0;
        let mut failures = Vec::new();
        let objects: Vec<pb::Object> = self
            .objects
            .values()
            .filter(|o| o.package_id == r.package_id)
            .cloned()
            .collect();
        for object in objects {
            let content = if object.redundancy == MULTIPART {
                Err("unfinished multipart upload: nothing to export".to_owned())
            } else {
                self.agent
                    .as_ref()
                    .and_then(|a| lock(&a.0).shards.get(&object.sha256).cloned())
                    .ok_or_else(|| format!("shard {} not found", object.sha256))
            };
            match content {
                Ok(content) => {
                    let dest = if root.is_empty() {
                        object.path
                    } else {
                        format!("{root}/{}", object.path)
                    };
                    self.space_files.insert((r.user_space_id, dest), content);
                    exported += 1;
                }
                Err(message) => failures.push(pb::FileFailure {
                    path: object.path,
                    message,
                }),
            }
        }
        Ok(pb::ExportPackageResponse { exported, failures })
    }

    /// A new object id (ids and other counters share `next_id`).
    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn reservation(&self, upload_id: u64, ticket_body: String) -> pb::BeginUploadResponse {
        pb::BeginUploadResponse {
            upload_id,
            agent_id: 1,
            agent_address: self.agent_address.clone(),
            space_id: 1,
            ticket: Some(ticket(ticket_body)),
            expires_at_ms: i64::MAX,
            commit_token: commit_token(upload_id),
            ..Default::default()
        }
    }
}

/// A user space as the coordinator answers it: JSON with the secret masked.
fn user_space_response(space: &UserSpace) -> GrpcResponse<pb::UserSpaceResponse> {
    let masked = UserSpace {
        credential: space.credential.masked(),
        ..space.clone()
    };
    GrpcResponse::new(pb::UserSpaceResponse {
        user_space_json: serde_json::to_string(&masked).unwrap(),
    })
}

/// A sync task as the coordinator answers it: `taskID`, the spec's fields, then `status`.
fn sync_task_response(
    task_id: u64,
    spec: &TaskSpec,
    state: TaskState,
) -> GrpcResponse<pb::SyncTaskResponse> {
    #[derive(serde::Serialize)]
    struct TaskJson<'a> {
        #[serde(rename = "taskID")]
        task_id: u64,
        #[serde(flatten)]
        spec: &'a TaskSpec,
        status: serde_json::Value,
    }
    let task = TaskJson {
        task_id,
        spec,
        status: serde_json::json!({"state": state, "runs": [], "lastErrors": []}),
    };
    GrpcResponse::new(pb::SyncTaskResponse {
        task_json: serde_json::to_string(&task).unwrap(),
    })
}

/// Parse JSON sent by the gateway; anything unexpected is a `BadArgument`, as the real
/// coordinator answers.
fn parse_spec<T: serde::de::DeserializeOwned>(json: &str, what: &str) -> Result<T, Status> {
    serde_json::from_str(json).map_err(|e| {
        coded(
            common::ErrorCode::BadArgument,
            format!("invalid {what}: {e}"),
        )
    })
}

/// The commit token the fake issues for `upload_id`; `CommitUpload` requires exactly it.
pub fn commit_token(upload_id: u64) -> Vec<u8> {
    format!("commit:{upload_id}").into_bytes()
}

/// Prefix of the fake's continuation tokens (the rest is the last key returned).
const TOKEN_PREFIX: &str = "after:";

/// In-memory coordinator.
#[derive(Clone, Default)]
pub struct FakeCoordinator(pub Arc<Mutex<CoordState>>);

impl FakeCoordinator {
    fn call(&self, name: &'static str) -> std::sync::MutexGuard<'_, CoordState> {
        let mut st = lock(&self.0);
        st.calls.push(name);
        st.next_id += 1;
        st
    }

    /// Like `call`, but fails with the code that `fail_rpc` holds for `name`, if any.
    fn call_checked(
        &self,
        name: &'static str,
    ) -> Result<std::sync::MutexGuard<'_, CoordState>, Status> {
        let st = self.call(name);
        match st.fail_rpc.get(name) {
            Some(code) => Err(coded(*code, format!("{name} failed by the test"))),
            None => Ok(st),
        }
    }
}

fn ticket(body: impl Into<Vec<u8>>) -> Ticket {
    Ticket {
        body: body.into(),
        signature: vec![],
    }
}

#[tonic::async_trait]
impl CoordinatorService for FakeCoordinator {
    async fn create_bucket(
        &self,
        req: GrpcRequest<pb::CreateBucketRequest>,
    ) -> Result<GrpcResponse<pb::BucketResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.call("create_bucket");
        if st
            .buckets
            .iter()
            .any(|b| b.name == r.name && b.user_id == r.user_id)
        {
            return Err(common::error::status(
                common::ErrorCode::AlreadyExists,
                format!("bucket {:?} already exists", r.name),
            ));
        }
        let bucket = pb::Bucket {
            bucket_id: st.next_id,
            name: r.name,
            user_id: r.user_id,
            create_time_ms: 1_750_753_888_514,
        };
        st.buckets.push(bucket.clone());
        Ok(GrpcResponse::new(pb::BucketResponse {
            bucket: Some(bucket),
        }))
    }

    async fn get_bucket_by_name(
        &self,
        req: GrpcRequest<pb::GetBucketByNameRequest>,
    ) -> Result<GrpcResponse<pb::BucketResponse>, Status> {
        let r = req.into_inner();
        let st = self.call("get_bucket_by_name");
        st.buckets
            .iter()
            .find(|b| b.name == r.name && b.user_id == r.user_id)
            .map(|b| {
                GrpcResponse::new(pb::BucketResponse {
                    bucket: Some(b.clone()),
                })
            })
            .ok_or_else(|| {
                common::error::status(
                    common::ErrorCode::NotFound,
                    format!("bucket {:?} not found", r.name),
                )
            })
    }

    async fn list_buckets(
        &self,
        req: GrpcRequest<pb::ListBucketsRequest>,
    ) -> Result<GrpcResponse<pb::ListBucketsResponse>, Status> {
        let r = req.into_inner();
        let st = self.call("list_buckets");
        let buckets = st
            .buckets
            .iter()
            .filter(|b| b.user_id == r.user_id)
            .cloned()
            .collect();
        Ok(GrpcResponse::new(pb::ListBucketsResponse { buckets }))
    }

    async fn delete_bucket(
        &self,
        req: GrpcRequest<pb::DeleteBucketRequest>,
    ) -> Result<GrpcResponse<pb::Empty>, Status> {
        let id = req.into_inner().bucket_id;
        let mut st = self.call("delete_bucket");
        st.buckets.retain(|b| b.bucket_id != id);
        Ok(GrpcResponse::new(pb::Empty {}))
    }

    async fn create_package(
        &self,
        req: GrpcRequest<pb::CreatePackageRequest>,
    ) -> Result<GrpcResponse<pb::PackageResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.call("create_package");
        let package = pb::Package {
            package_id: st.next_id,
            name: r.name,
            bucket_id: r.bucket_id,
            create_time_ms: 1_750_753_888_514,
            ..Default::default()
        };
        st.packages.push(package.clone());
        Ok(GrpcResponse::new(pb::PackageResponse {
            package: Some(package),
        }))
    }

    async fn get_package(
        &self,
        _req: GrpcRequest<pb::GetPackageRequest>,
    ) -> Result<GrpcResponse<pb::PackageResponse>, Status> {
        Err(Status::unimplemented("get_package"))
    }

    async fn get_package_by_full_name(
        &self,
        req: GrpcRequest<pb::GetPackageByFullNameRequest>,
    ) -> Result<GrpcResponse<pb::PackageResponse>, Status> {
        let r = req.into_inner();
        let st = self.call("get_package_by_full_name");
        let bucket = st
            .buckets
            .iter()
            .find(|b| b.name == r.bucket_name && b.user_id == r.user_id)
            .ok_or_else(|| Status::not_found("no bucket"))?;
        st.packages
            .iter()
            .find(|p| p.bucket_id == bucket.bucket_id && p.name == r.package_name)
            .map(|p| {
                GrpcResponse::new(pb::PackageResponse {
                    package: Some(p.clone()),
                })
            })
            .ok_or_else(|| Status::not_found("no package"))
    }

    async fn list_bucket_packages(
        &self,
        req: GrpcRequest<pb::ListBucketPackagesRequest>,
    ) -> Result<GrpcResponse<pb::ListBucketPackagesResponse>, Status> {
        let id = req.into_inner().bucket_id;
        let st = self.call("list_bucket_packages");
        let packages = st
            .packages
            .iter()
            .filter(|p| p.bucket_id == id)
            .cloned()
            .collect();
        Ok(GrpcResponse::new(pb::ListBucketPackagesResponse {
            packages,
        }))
    }

    async fn delete_package(
        &self,
        req: GrpcRequest<pb::DeletePackageRequest>,
    ) -> Result<GrpcResponse<pb::Empty>, Status> {
        let id = req.into_inner().package_id;
        let mut st = self.call("delete_package");
        st.packages.retain(|p| p.package_id != id);
        Ok(GrpcResponse::new(pb::Empty {}))
    }

    async fn list_objects(
        &self,
        req: GrpcRequest<pb::ListObjectsRequest>,
    ) -> Result<GrpcResponse<pb::ListObjectsResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.call("list_objects");
        st.list_requests.push(r.start_after.clone());
        let cap = if st.page_cap == 0 { 1000 } else { st.page_cap };
        let limit = (r.limit as usize).min(cap);
        let mut matching = st
            .objects
            .iter()
            .filter(|((pkg, path), _)| *pkg == r.package_id && *path > r.start_after)
            .map(|(_, o)| o.clone());
        let objects: Vec<_> = matching.by_ref().take(limit).collect();
        let more = matching.next().is_some();
        Ok(GrpcResponse::new(pb::ListObjectsResponse { objects, more }))
    }

    async fn delete_objects(
        &self,
        req: GrpcRequest<pb::DeleteObjectsRequest>,
    ) -> Result<GrpcResponse<pb::Empty>, Status> {
        let ids = req.into_inner().object_ids;
        let mut st = self.call("delete_objects");
        st.objects.retain(|_, o| !ids.contains(&o.object_id));
        Ok(GrpcResponse::new(pb::Empty {}))
    }

    async fn begin_upload(
        &self,
        req: GrpcRequest<pb::BeginUploadRequest>,
    ) -> Result<GrpcResponse<pb::BeginUploadResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.call("begin_upload");
        let upload_id = st.next_id;
        st.begins.push((r.package_id, r.path.clone(), r.affinity));
        st.reservations.insert(
            upload_id,
            PendingKind::Object {
                package_id: r.package_id,
                path: r.path,
            },
        );
        Ok(GrpcResponse::new(
            st.reservation(upload_id, format!("put:{upload_id}")),
        ))
    }

    /// Item by item through `begin_upload` (recorded as such).
    async fn begin_uploads(
        &self,
        req: GrpcRequest<pb::BeginUploadsRequest>,
    ) -> Result<GrpcResponse<pb::BeginUploadsResponse>, Status> {
        let mut results = Vec::new();
        for item in req.into_inner().uploads {
            let r = CoordinatorService::begin_upload(self, GrpcRequest::new(item)).await;
            results.push(pb::BeginUploadResult {
                result: Some(match r {
                    Ok(ok) => pb::begin_upload_result::Result::Ok(ok.into_inner()),
                    Err(status) => pb::begin_upload_result::Result::Error(
                        client::batch::status_item_error(&status),
                    ),
                }),
            });
        }
        Ok(GrpcResponse::new(pb::BeginUploadsResponse { results }))
    }

    /// Item by item through `commit_upload` (recorded as such).
    async fn commit_uploads(
        &self,
        req: GrpcRequest<pb::CommitUploadsRequest>,
    ) -> Result<GrpcResponse<pb::CommitUploadsResponse>, Status> {
        let mut results = Vec::new();
        for item in req.into_inner().uploads {
            let r = CoordinatorService::commit_upload(self, GrpcRequest::new(item)).await;
            results.push(pb::CommitUploadResult {
                result: Some(match r.map(|o| o.into_inner().object) {
                    Ok(Some(o)) => pb::commit_upload_result::Result::Ok(o),
                    Ok(None) => pb::commit_upload_result::Result::Error(
                        client::batch::status_item_error(&Status::internal("no object")),
                    ),
                    Err(status) => pb::commit_upload_result::Result::Error(
                        client::batch::status_item_error(&status),
                    ),
                }),
            });
        }
        Ok(GrpcResponse::new(pb::CommitUploadsResponse { results }))
    }

    async fn commit_upload(
        &self,
        req: GrpcRequest<pb::CommitUploadRequest>,
    ) -> Result<GrpcResponse<pb::ObjectResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.call("commit_upload");
        if r.commit_token != commit_token(r.upload_id) {
            return Err(coded(
                common::ErrorCode::BadArgument,
                format!(
                    "invalid commit token {:?} for upload {}",
                    String::from_utf8_lossy(&r.commit_token),
                    r.upload_id
                ),
            ));
        }
        let kind = st
            .reservations
            .remove(&r.upload_id)
            .ok_or_else(|| Status::not_found("no reserved upload"))?;
        let object = match kind {
            PendingKind::Object { package_id, path } => {
                if st.fail_commit_path.as_deref() == Some(path.as_str()) {
                    st.reservations
                        .insert(r.upload_id, PendingKind::Object { package_id, path });
                    return Err(Status::unavailable("commit refused by the test"));
                }
                let object_id = st.next_id;
                let object = pb::Object {
                    object_id,
                    package_id,
                    path: path.clone(),
                    size: r.size,
                    sha256: r.sha256,
                    redundancy: "none".into(),
                    create_time_ms: 1_750_753_888_514,
                    update_time_ms: 1_750_753_888_514,
                    space_id: 1,
                };
                st.objects.insert((package_id, path), object.clone());
                object
            }
            PendingKind::Part { object_id, index } => {
                let object = st.multipart_object(object_id)?;
                st.parts.insert((object_id, index), r.sha256);
                object
            }
            PendingKind::Complete { object_id } => {
                let mut object = st.multipart_object(object_id)?;
                object.size = r.size;
                object.sha256 = r.sha256;
                object.redundancy = "none".into();
                object.update_time_ms = LATER_MS;
                st.objects
                    .insert((object.package_id, object.path.clone()), object.clone());
                st.parts.retain(|(id, _), _| *id != object_id);
                object
            }
        };
        st.commits.push(r.upload_id);
        Ok(GrpcResponse::new(pb::ObjectResponse {
            object: Some(object),
        }))
    }

    async fn resolve_object(
        &self,
        req: GrpcRequest<pb::ResolveObjectRequest>,
    ) -> Result<GrpcResponse<pb::ResolveObjectResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.call_checked("resolve_object")?;
        st.resolves.push(r.clone());
        let found = if r.object_id != 0 {
            st.object_by_id(r.object_id).cloned()
        } else {
            st.objects.get(&(r.package_id, r.path.clone())).cloned()
        };
        let object = found.ok_or_else(|| {
            coded(
                common::ErrorCode::NotFound,
                format!("object {} / {:?} not found", r.object_id, r.path),
            )
        })?;
        Ok(GrpcResponse::new(pb::ResolveObjectResponse {
            ticket: Some(ticket(object.sha256.clone())),
            object: Some(object),
            agent_address: st.agent_address.clone(),
            blocks: Vec::new(),
        }))
    }

    async fn list_by_path(
        &self,
        req: GrpcRequest<pb::ListByPathRequest>,
    ) -> Result<GrpcResponse<pb::ListByPathResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.call_checked("list_by_path")?;
        st.list_by_path_requests.push(r.clone());
        let after = match r.continuation_token.as_str() {
            "" => None,
            token => Some(token.strip_prefix(TOKEN_PREFIX).ok_or_else(|| {
                coded(
                    common::ErrorCode::BadArgument,
                    format!("invalid continuation token {token:?}"),
                )
            })?),
        };
        let max = match r.max_keys {
            0 => 1000,
            n => n.min(1000),
        } as usize;
        // (key, entry): an object, or a folded common prefix. Keys come out sorted.
        let mut entries: Vec<(String, Option<pb::Object>)> = Vec::new();
        for ((pkg, path), object) in &st.objects {
            let matches = if r.is_prefix {
                path.starts_with(&r.path)
            } else {
                *path == r.path
            };
            if *pkg != r.package_id || !matches {
                continue;
            }
            let folded = r
                .no_recursive
                .then(|| path[r.path.len()..].find('/'))
                .flatten()
                .map(|slash| path[..r.path.len() + slash + 1].to_owned());
            match folded {
                Some(prefix) if entries.last().is_some_and(|(k, _)| *k == prefix) => {}
                Some(prefix) => entries.push((prefix, None)),
                None => entries.push((path.clone(), Some(object.clone()))),
            }
        }
        let mut rest = entries
            .into_iter()
            .filter(|(key, _)| after.is_none_or(|a| key.as_str() > a));
        let page: Vec<_> = rest.by_ref().take(max).collect();
        let is_truncated = rest.next().is_some();
        let next_continuation_token = match page.last() {
            Some((key, _)) if is_truncated => format!("{TOKEN_PREFIX}{key}"),
            _ => String::new(),
        };
        let mut resp = pb::ListByPathResponse {
            is_truncated,
            next_continuation_token,
            ..Default::default()
        };
        for (key, object) in page {
            match object {
                Some(object) => resp.objects.push(object),
                None => resp.common_prefixes.push(key),
            }
        }
        Ok(GrpcResponse::new(resp))
    }

    async fn move_objects(
        &self,
        req: GrpcRequest<pb::MoveObjectsRequest>,
    ) -> Result<GrpcResponse<pb::MoveObjectsResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.call_checked("move_objects")?;
        let mut resp = pb::MoveObjectsResponse::default();
        for m in r.movings {
            let failure = |message: String| pb::MoveFailure {
                object_id: m.object_id,
                message,
            };
            if let Err(e) = common::path::validate_object_path(&m.path) {
                resp.failures.push(failure(e));
                continue;
            }
            let Some(object) = st.object_by_id(m.object_id).cloned() else {
                resp.failures.push(failure("object not found".into()));
                continue;
            };
            let target = (m.package_id, m.path.clone());
            if st
                .objects
                .get(&target)
                .is_some_and(|o| o.object_id != m.object_id)
            {
                resp.failures.push(failure("target path is taken".into()));
                continue;
            }
            st.objects.remove(&(object.package_id, object.path.clone()));
            let moved = pb::Object {
                package_id: m.package_id,
                path: m.path,
                ..object
            };
            st.objects.insert(target, moved);
            resp.successes.push(m.object_id);
        }
        Ok(GrpcResponse::new(resp))
    }

    async fn clone_objects(
        &self,
        req: GrpcRequest<pb::CloneObjectsRequest>,
    ) -> Result<GrpcResponse<pb::CloneObjectsResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.call_checked("clone_objects")?;
        let mut results = Vec::new();
        for c in r.clonings {
            let failed = |error: &str| pb::CloneResult {
                object: None,
                error: error.to_owned(),
            };
            let target = (c.new_package_id, c.new_path.clone());
            let result = match st.object_by_id(c.object_id).cloned() {
                _ if common::path::validate_object_path(&c.new_path).is_err() => {
                    failed("invalid path")
                }
                None => failed("object not found"),
                Some(_) if st.objects.contains_key(&target) => failed("target path is taken"),
                Some(source) => {
                    let object = pb::Object {
                        object_id: st.fresh_id(),
                        package_id: c.new_package_id,
                        path: c.new_path,
                        create_time_ms: LATER_MS,
                        update_time_ms: LATER_MS,
                        ..source
                    };
                    st.objects.insert(target, object.clone());
                    pb::CloneResult {
                        object: Some(object),
                        error: String::new(),
                    }
                }
            };
            results.push(result);
        }
        Ok(GrpcResponse::new(pb::CloneObjectsResponse { results }))
    }

    async fn new_multipart_upload(
        &self,
        req: GrpcRequest<pb::NewMultipartUploadRequest>,
    ) -> Result<GrpcResponse<pb::ObjectResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.call_checked("new_multipart_upload")?;
        let key = (r.package_id, r.path.clone());
        if st.objects.contains_key(&key) {
            return Err(coded(
                common::ErrorCode::AlreadyExists,
                format!("path {:?} is taken", r.path),
            ));
        }
        let object = pb::Object {
            object_id: st.next_id,
            package_id: r.package_id,
            path: r.path,
            size: 0,
            sha256: ZERO_SHA256.into(),
            redundancy: MULTIPART.into(),
            create_time_ms: 1_750_753_888_514,
            update_time_ms: 1_750_753_888_514,
            space_id: 1,
        };
        st.objects.insert(key, object.clone());
        Ok(GrpcResponse::new(pb::ObjectResponse {
            object: Some(object),
        }))
    }

    async fn begin_upload_part(
        &self,
        req: GrpcRequest<pb::BeginUploadPartRequest>,
    ) -> Result<GrpcResponse<pb::BeginUploadResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.call_checked("begin_upload_part")?;
        st.multipart_object(r.object_id)?;
        let upload_id = st.next_id;
        st.reservations.insert(
            upload_id,
            PendingKind::Part {
                object_id: r.object_id,
                index: r.index,
            },
        );
        Ok(GrpcResponse::new(
            st.reservation(upload_id, format!("put:{upload_id}")),
        ))
    }

    async fn begin_complete_multipart_upload(
        &self,
        req: GrpcRequest<pb::CompleteMultipartUploadRequest>,
    ) -> Result<GrpcResponse<pb::BeginUploadResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.call_checked("begin_complete_multipart_upload")?;
        st.completes.push((r.object_id, r.indexes.clone()));
        st.multipart_object(r.object_id)?;
        if r.indexes.is_empty() {
            return Err(coded(common::ErrorCode::BadArgument, "no parts listed"));
        }
        let hashes = r
            .indexes
            .iter()
            .map(|index| {
                st.parts
                    .get(&(r.object_id, *index))
                    .cloned()
                    .ok_or_else(|| {
                        coded(
                            common::ErrorCode::BadArgument,
                            format!("part {index} of object {} was not uploaded", r.object_id),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let upload_id = st.next_id;
        st.reservations.insert(
            upload_id,
            PendingKind::Complete {
                object_id: r.object_id,
            },
        );
        Ok(GrpcResponse::new(st.reservation(
            upload_id,
            format!("{CONCAT_PREFIX}{}", hashes.join(",")),
        )))
    }

    async fn create_user_space(
        &self,
        req: GrpcRequest<pb::CreateUserSpaceRequest>,
    ) -> Result<GrpcResponse<pb::UserSpaceResponse>, Status> {
        let spec_json = req.into_inner().spec_json;
        let mut st = self.call_checked("create_user_space")?;
        st.space_specs.push(spec_json.clone());
        let mut spec: serde_json::Value = parse_spec(&spec_json, "spec")?;
        let id = st.next_id;
        spec["userSpaceID"] = id.into();
        spec["revision"] = 1.into();
        let space: UserSpace = serde_json::from_value(spec)
            .map_err(|e| coded(common::ErrorCode::BadArgument, format!("invalid spec: {e}")))?;
        common::space::validate_pair(&space.storage, &space.credential)
            .map_err(|e| coded(common::ErrorCode::BadArgument, e))?;
        st.space_name_free(&space.name, id)?;
        let resp = user_space_response(&space);
        st.user_spaces.insert(id, space);
        Ok(resp)
    }

    async fn get_user_space(
        &self,
        req: GrpcRequest<pb::GetUserSpaceRequest>,
    ) -> Result<GrpcResponse<pb::UserSpaceResponse>, Status> {
        let id = req.into_inner().user_space_id;
        let st = self.call_checked("get_user_space")?;
        st.user_spaces
            .get(&id)
            .map(user_space_response)
            .ok_or_else(|| {
                coded(
                    common::ErrorCode::NotFound,
                    format!("user space {id} not found"),
                )
            })
    }

    async fn update_user_space(
        &self,
        req: GrpcRequest<pb::UpdateUserSpaceRequest>,
    ) -> Result<GrpcResponse<pb::UserSpaceResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.call_checked("update_user_space")?;
        st.space_updates.push(r.clone());
        let credential: common::space::Credential = parse_spec(&r.credential_json, "credential")?;
        st.space_name_free(&r.name, r.user_space_id)?;
        let space = st.user_spaces.get_mut(&r.user_space_id).ok_or_else(|| {
            coded(
                common::ErrorCode::NotFound,
                format!("user space {} not found", r.user_space_id),
            )
        })?;
        common::space::validate_pair(&space.storage, &credential)
            .map_err(|e| coded(common::ErrorCode::BadArgument, e))?;
        space.name = r.name;
        space.credential = credential;
        space.revision += 1;
        Ok(user_space_response(space))
    }

    async fn delete_user_space(
        &self,
        req: GrpcRequest<pb::DeleteUserSpaceRequest>,
    ) -> Result<GrpcResponse<pb::Empty>, Status> {
        let id = req.into_inner().user_space_id;
        let mut st = self.call_checked("delete_user_space")?;
        if st.busy_spaces.contains(&id) {
            return Err(coded(
                common::ErrorCode::Conflict,
                format!("user space {id} still holds shards of objects"),
            ));
        }
        st.user_spaces.remove(&id);
        Ok(GrpcResponse::new(pb::Empty {}))
    }

    async fn test_user_space(
        &self,
        req: GrpcRequest<pb::TestUserSpaceRequest>,
    ) -> Result<GrpcResponse<pb::Empty>, Status> {
        let r = req.into_inner();
        let mut st = self.call_checked("test_user_space")?;
        st.space_tests.push(r.clone());
        let storage: common::space::Storage = parse_spec(&r.storage_json, "storage")?;
        let credential: common::space::Credential = parse_spec(&r.credential_json, "credential")?;
        common::space::validate_pair(&storage, &credential)
            .map_err(|e| coded(common::ErrorCode::BadArgument, e))?;
        match &st.space_test_error {
            Some((code, message)) => Err(coded(*code, message.clone())),
            None => Ok(GrpcResponse::new(pb::Empty {})),
        }
    }

    async fn import_package(
        &self,
        req: GrpcRequest<pb::ImportPackageRequest>,
    ) -> Result<GrpcResponse<pb::ImportPackageResponse>, Status> {
        let r = req.into_inner();
        let delay = {
            let mut st = self.call_checked("import_package")?;
            st.imports.push(r.clone());
            st.transfer_delay
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        lock(&self.0).import(&r).map(GrpcResponse::new)
    }

    async fn export_package(
        &self,
        req: GrpcRequest<pb::ExportPackageRequest>,
    ) -> Result<GrpcResponse<pb::ExportPackageResponse>, Status> {
        let r = req.into_inner();
        let delay = {
            let mut st = self.call_checked("export_package")?;
            st.exports.push(r.clone());
            st.transfer_delay
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        lock(&self.0).export(&r).map(GrpcResponse::new)
    }

    async fn create_sync_task(
        &self,
        req: GrpcRequest<pb::CreateSyncTaskRequest>,
    ) -> Result<GrpcResponse<pb::SyncTaskResponse>, Status> {
        let task_json = req.into_inner().task_json;
        let mut st = self.call_checked("create_sync_task")?;
        st.sync_task_specs.push(task_json.clone());
        let spec: TaskSpec = parse_spec(&task_json, "task")?;
        spec.validate()
            .map_err(|e| coded(common::ErrorCode::BadArgument, e))?;
        // What only the coordinator can check, with its messages: the spaces exist, and no
        // destination is the source or inside it.
        let not_a_space = |field: String, id: u64| {
            coded(
                common::ErrorCode::BadArgument,
                format!("{field} {id} is not a user space"),
            )
        };
        if !st.user_spaces.contains_key(&spec.src_user_space_id) {
            return Err(not_a_space("srcUserSpaceID".into(), spec.src_user_space_id));
        }
        let src = spec.src_path.trim_matches('/');
        for (i, (&id, path)) in spec
            .dest_user_space_ids
            .iter()
            .zip(&spec.dest_pathes)
            .enumerate()
        {
            if !st.user_spaces.contains_key(&id) {
                return Err(not_a_space(format!("destUserSpaceIDs[{i}]"), id));
            }
            let dest = path.trim_matches('/');
            let inside = src.is_empty() || dest == src || dest.starts_with(&format!("{src}/"));
            if id == spec.src_user_space_id && inside {
                return Err(coded(
                    common::ErrorCode::BadArgument,
                    format!(
                        "destPathes[{i}] {path:?} is the source or inside it (srcPath {:?} of the same user space)",
                        spec.src_path
                    ),
                ));
            }
        }
        let id = st.next_id;
        let resp = sync_task_response(id, &spec, TaskState::Pending);
        st.sync_tasks.insert(id, (spec, TaskState::Pending));
        Ok(resp)
    }

    async fn get_sync_task(
        &self,
        req: GrpcRequest<pb::GetSyncTaskRequest>,
    ) -> Result<GrpcResponse<pb::SyncTaskResponse>, Status> {
        let id = req.into_inner().task_id;
        let st = self.call_checked("get_sync_task")?;
        st.sync_tasks
            .get(&id)
            .map(|(spec, state)| sync_task_response(id, spec, *state))
            .ok_or_else(|| {
                coded(
                    common::ErrorCode::NotFound,
                    format!("sync task {id} not found"),
                )
            })
    }

    async fn cancel_sync_task(
        &self,
        req: GrpcRequest<pb::CancelSyncTaskRequest>,
    ) -> Result<GrpcResponse<pb::Empty>, Status> {
        let id = req.into_inner().task_id;
        let mut st = self.call_checked("cancel_sync_task")?;
        st.sync_cancels.push(id);
        let (_, state) = st.sync_tasks.get_mut(&id).ok_or_else(|| {
            coded(
                common::ErrorCode::NotFound,
                format!("sync task {id} not found"),
            )
        })?;
        *state = TaskState::Cancelled;
        Ok(GrpcResponse::new(pb::Empty {}))
    }

    async fn register_agent(
        &self,
        _req: GrpcRequest<pb::RegisterAgentRequest>,
    ) -> Result<GrpcResponse<pb::RegisterAgentResponse>, Status> {
        Err(Status::unimplemented("register_agent"))
    }

    async fn create_access_key(
        &self,
        req: GrpcRequest<pb::CreateAccessKeyRequest>,
    ) -> Result<GrpcResponse<pb::CreateAccessKeyResponse>, Status> {
        let mut st = self.call_checked("create_access_key")?;
        let id = format!("JCSKFAKE{:012}", st.next_id);
        let secret = format!("fake-secret-{}", st.next_id);
        let req = req.into_inner();
        let key = pb::AccessKey {
            access_key_id: id.clone(),
            name: req.name,
            create_time_ms: 1_750_753_888_514,
            read_only: req.read_only,
        };
        st.access_keys.insert(id, (key.clone(), secret.clone()));
        Ok(GrpcResponse::new(pb::CreateAccessKeyResponse {
            key: Some(key),
            secret_key: secret,
        }))
    }

    async fn list_access_keys(
        &self,
        _req: GrpcRequest<pb::ListAccessKeysRequest>,
    ) -> Result<GrpcResponse<pb::ListAccessKeysResponse>, Status> {
        let st = self.call_checked("list_access_keys")?;
        Ok(GrpcResponse::new(pb::ListAccessKeysResponse {
            keys: st.access_keys.values().map(|(k, _)| k.clone()).collect(),
        }))
    }

    async fn delete_access_key(
        &self,
        req: GrpcRequest<pb::DeleteAccessKeyRequest>,
    ) -> Result<GrpcResponse<pb::Empty>, Status> {
        let id = req.into_inner().access_key_id;
        let mut st = self.call_checked("delete_access_key")?;
        match st.access_keys.remove(&id) {
            Some(_) => Ok(GrpcResponse::new(pb::Empty {})),
            None => Err(coded(
                common::ErrorCode::NotFound,
                format!("access key {id} not found"),
            )),
        }
    }

    async fn lookup_access_key(
        &self,
        req: GrpcRequest<pb::LookupAccessKeyRequest>,
    ) -> Result<GrpcResponse<pb::LookupAccessKeyResponse>, Status> {
        let id = req.into_inner().access_key_id;
        let st = self.call_checked("lookup_access_key")?;
        match st.access_keys.get(&id) {
            Some((key, secret)) => Ok(GrpcResponse::new(pb::LookupAccessKeyResponse {
                key: Some(key.clone()),
                secret_key: secret.clone(),
            })),
            None => Err(coded(
                common::ErrorCode::NotFound,
                format!("access key {id} not found"),
            )),
        }
    }

    async fn update_package(
        &self,
        _req: GrpcRequest<pb::UpdatePackageRequest>,
    ) -> Result<GrpcResponse<pb::PackageResponse>, Status> {
        Err(Status::unimplemented(
            "update_package (rep/ec are tested in integration-tests)",
        ))
    }

    /// Echoes the request (the job itself is tested in integration-tests).
    async fn start_scrub(
        &self,
        req: GrpcRequest<pb::StartScrubRequest>,
    ) -> Result<GrpcResponse<pb::ScrubStatus>, Status> {
        let r = req.into_inner();
        if r.package_id == 999 {
            return Err(coded(common::ErrorCode::NotFound, "package 999 not found"));
        }
        Ok(GrpcResponse::new(pb::ScrubStatus {
            running: true,
            requested: true,
            deep: r.deep,
            package_id: r.package_id,
            ..Default::default()
        }))
    }

    /// One repair-log entry; `objects_checked` echoes the `recent` asked for.
    async fn get_scrub_status(
        &self,
        req: GrpcRequest<pb::GetScrubStatusRequest>,
    ) -> Result<GrpcResponse<pb::ScrubStatus>, Status> {
        Ok(GrpcResponse::new(pb::ScrubStatus {
            objects_checked: u64::from(req.into_inner().recent),
            runs: 1,
            repaired: 1,
            damaged: 1,
            last_finished_ms: 1_750_753_888_514,
            started_ms: 1_750_753_888_000,
            recent: vec![pb::RepairLogEntry {
                object_id: 7,
                blocks: vec![3],
                from_spaces: vec![4],
                to_spaces: vec![8],
                bytes: 68,
                result: "repaired".into(),
                time_ms: 1_750_753_888_514,
                reason: "corrupt".into(),
            }],
            ..Default::default()
        }))
    }

    async fn report_damage(
        &self,
        _req: GrpcRequest<pb::ReportDamageRequest>,
    ) -> Result<GrpcResponse<pb::Empty>, Status> {
        Ok(GrpcResponse::new(pb::Empty {}))
    }

    /// By default no grants: the gateway then begins every upload on its own
    /// (`BeginUploads`), which is what most tests record. With `grant` set, path-less
    /// reservations (upload ids from `next_id`) or a refusal; commits of granted uploads are
    /// tested against the real coordinator.
    async fn grant_uploads(
        &self,
        req: GrpcRequest<pb::GrantUploadsRequest>,
    ) -> Result<GrpcResponse<pb::GrantUploadsResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.call("grant_uploads");
        st.grant_requests.push(r);
        match st.grant {
            None => Err(Status::unimplemented(
                "the fake coordinator grants no uploads",
            )),
            Some(false) => Ok(GrpcResponse::new(pb::GrantUploadsResponse {
                granted: false,
                reason: "refused by the test".into(),
                ..Default::default()
            })),
            Some(true) => {
                let mut uploads = Vec::new();
                for _ in 0..r.count {
                    st.next_id += 1;
                    let upload_id = st.next_id;
                    uploads.push(st.reservation(upload_id, format!("grant:{upload_id}")));
                }
                Ok(GrpcResponse::new(pb::GrantUploadsResponse {
                    granted: true,
                    uploads,
                    ..Default::default()
                }))
            }
        }
    }
}

/// One `PutShard` stream as the fake agent saw it.
#[derive(Debug, Clone, Default)]
pub struct PutRecord {
    pub ticket_first: bool,
    pub chunk_sizes: Vec<usize>,
    pub finished: bool,
    pub error: Option<String>,
    /// Sent as one `PutSmallShard` call rather than a `PutShard` stream.
    pub unary: bool,
}

/// What the fake agent has seen and stores.
#[derive(Default, Debug)]
pub struct AgentState {
    /// sha256 hex → bytes.
    pub shards: HashMap<String, Vec<u8>>,
    pub puts: Vec<PutRecord>,
    /// `PutShard` streams opened (counted when the call starts, unlike `puts`).
    pub put_streams_opened: usize,
    /// GetShard sends this many chunks, then fails.
    pub fail_get_after_chunks: Option<usize>,
    /// Size of the chunks GetShard sends (0 = 64 KiB).
    pub get_chunk_size: usize,
    /// Source hashes of every successful `ConcatShards`.
    pub concats: Vec<Vec<String>>,
    /// `ConcatShards` fails with Unavailable.
    pub fail_concat: bool,
}

/// Prefix of the fake's concat ticket bodies (the rest is the comma-separated hashes).
pub const CONCAT_PREFIX: &str = "concat:";

/// In-memory agent.
#[derive(Clone, Default, Debug)]
pub struct FakeAgent(pub Arc<Mutex<AgentState>>);

type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, Status>> + Send>>;
type ShardInfoStream = Pin<Box<dyn Stream<Item = Result<ShardBatch, Status>> + Send>>;
type FileInfoStream = Pin<Box<dyn Stream<Item = Result<FileBatch, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for FakeAgent {
    async fn put_shard(
        &self,
        req: GrpcRequest<tonic::Streaming<PutShardRequest>>,
    ) -> Result<GrpcResponse<PutShardResponse>, Status> {
        lock(&self.0).put_streams_opened += 1;
        let mut stream = req.into_inner();
        let mut record = PutRecord::default();
        let mut data = Vec::new();
        let mut first = true;
        let outcome = loop {
            match stream.message().await {
                Ok(Some(PutShardRequest { msg: Some(msg) })) => {
                    match msg {
                        Msg::Ticket(_) => record.ticket_first = first,
                        Msg::Data(bytes) => {
                            record.chunk_sizes.push(bytes.len());
                            data.extend_from_slice(&bytes);
                        }
                        Msg::Finish(_) => {
                            record.finished = true;
                            break Ok(());
                        }
                    }
                    first = false;
                }
                Ok(Some(PutShardRequest { msg: None })) => break Err("empty message".to_owned()),
                Ok(None) => break Err("stream ended without finish".to_owned()),
                Err(status) => break Err(format!("stream failed: {}", status.message())),
            }
        };
        let mut st = lock(&self.0);
        match outcome {
            Ok(()) => {
                let sha256 = hex::encode(Sha256::digest(&data));
                let size = data.len() as u64;
                st.shards.insert(sha256.clone(), data);
                st.puts.push(record);
                Ok(GrpcResponse::new(PutShardResponse { size, sha256 }))
            }
            Err(e) => {
                record.error = Some(e.clone());
                st.puts.push(record);
                Err(Status::aborted(e))
            }
        }
    }

    async fn put_small_shard(
        &self,
        req: GrpcRequest<PutSmallShardRequest>,
    ) -> Result<GrpcResponse<PutShardResponse>, Status> {
        let r = req.into_inner();
        let record = PutRecord {
            ticket_first: r.ticket.is_some(),
            chunk_sizes: if r.data.is_empty() {
                Vec::new()
            } else {
                vec![r.data.len()]
            },
            finished: true,
            error: None,
            unary: true,
        };
        let sha256 = hex::encode(Sha256::digest(&r.data));
        let size = r.data.len() as u64;
        let mut st = lock(&self.0);
        st.shards.insert(sha256.clone(), r.data.to_vec());
        st.puts.push(record);
        Ok(GrpcResponse::new(PutShardResponse { size, sha256 }))
    }

    /// Shard by shard through `put_small_shard` (recorded as such).
    async fn put_small_shards(
        &self,
        req: GrpcRequest<proto::agent::PutSmallShardsRequest>,
    ) -> Result<GrpcResponse<proto::agent::PutSmallShardsResponse>, Status> {
        use proto::agent::put_small_shard_result::Result as R;
        let mut results = Vec::new();
        for item in req.into_inner().shards {
            let r = AgentService::put_small_shard(self, GrpcRequest::new(item)).await;
            results.push(proto::agent::PutSmallShardResult {
                result: Some(match r {
                    Ok(ok) => R::Ok(ok.into_inner()),
                    Err(status) => R::Error(client::batch::status_item_error(&status)),
                }),
            });
        }
        Ok(GrpcResponse::new(proto::agent::PutSmallShardsResponse {
            results,
        }))
    }

    type GetShardStream = ChunkStream;

    async fn get_shard(
        &self,
        req: GrpcRequest<GetShardRequest>,
    ) -> Result<GrpcResponse<ChunkStream>, Status> {
        let r = req.into_inner();
        let hash = String::from_utf8(r.ticket.unwrap_or_default().body).unwrap();
        let st = lock(&self.0);
        let data = st
            .shards
            .get(&hash)
            .ok_or_else(|| Status::not_found("no such shard"))?;
        let start = r.offset as usize;
        let end = if r.length == 0 {
            data.len()
        } else {
            (start + r.length as usize).min(data.len())
        };
        let size = if st.get_chunk_size == 0 {
            64 * 1024
        } else {
            st.get_chunk_size
        };
        let mut items: Vec<Result<Chunk, Status>> = data[start..end]
            .chunks(size)
            .map(|c| {
                Ok(Chunk {
                    data: Bytes::copy_from_slice(c),
                })
            })
            .collect();
        if let Some(n) = st.fail_get_after_chunks {
            items.truncate(n);
            items.push(Err(Status::data_loss("disk failed mid-read")));
        }
        Ok(GrpcResponse::new(Box::pin(futures::stream::iter(items))))
    }

    async fn concat_shards(
        &self,
        req: GrpcRequest<ConcatShardsRequest>,
    ) -> Result<GrpcResponse<PutShardResponse>, Status> {
        let body = req.into_inner().ticket.unwrap_or_default().body;
        let body = String::from_utf8(body).map_err(|_| Status::invalid_argument("ticket"))?;
        let hashes: Vec<String> = body
            .strip_prefix(CONCAT_PREFIX)
            .ok_or_else(|| Status::permission_denied("not a concat ticket"))?
            .split(',')
            .map(str::to_owned)
            .collect();
        let mut st = lock(&self.0);
        if st.fail_concat {
            return Err(Status::unavailable("concat refused by the test"));
        }
        let mut data = Vec::new();
        for hash in &hashes {
            let shard = st
                .shards
                .get(hash)
                .ok_or_else(|| Status::not_found(format!("no shard {hash}")))?;
            data.extend_from_slice(shard);
        }
        let sha256 = hex::encode(Sha256::digest(&data));
        let size = data.len() as u64;
        st.shards.insert(sha256.clone(), data);
        st.concats.push(hashes);
        Ok(GrpcResponse::new(PutShardResponse { size, sha256 }))
    }

    type ListShardsStream = ShardInfoStream;

    /// Garbage collection only: the gateway never lists shards.
    async fn list_shards(
        &self,
        _req: GrpcRequest<ListShardsRequest>,
    ) -> Result<GrpcResponse<ShardInfoStream>, Status> {
        Err(Status::unimplemented("list_shards"))
    }

    /// Garbage collection only: the gateway never deletes shards.
    async fn delete_shard(
        &self,
        _req: GrpcRequest<DeleteShardRequest>,
    ) -> Result<GrpcResponse<DeleteShardResponse>, Status> {
        Err(Status::unimplemented("delete_shard"))
    }

    /// Called by the coordinator for `TestUserSpace`: the gateway never calls it.
    async fn test_storage(
        &self,
        _req: GrpcRequest<TestStorageRequest>,
    ) -> Result<GrpcResponse<TestStorageResponse>, Status> {
        Err(Status::unimplemented("test_storage"))
    }

    // The gateway never calls the file RPCs (the coordinator drives import and export).
    type ListFilesStream = FileInfoStream;

    async fn list_files(
        &self,
        _req: GrpcRequest<ListFilesRequest>,
    ) -> Result<GrpcResponse<FileInfoStream>, Status> {
        Err(Status::unimplemented("list_files"))
    }

    async fn import_file(
        &self,
        _req: GrpcRequest<ImportFileRequest>,
    ) -> Result<GrpcResponse<PutShardResponse>, Status> {
        Err(Status::unimplemented("import_file"))
    }

    async fn export_file(
        &self,
        _req: GrpcRequest<ExportFileRequest>,
    ) -> Result<GrpcResponse<ExportFileResponse>, Status> {
        Err(Status::unimplemented("export_file"))
    }

    // The coordinator runs sync tasks on agents; the gateway never calls `RunSync`.
    type RunSyncStream = Pin<Box<dyn Stream<Item = Result<SyncProgress, Status>> + Send>>;

    async fn run_sync(
        &self,
        _req: GrpcRequest<RunSyncRequest>,
    ) -> Result<GrpcResponse<Self::RunSyncStream>, Status> {
        Err(Status::unimplemented("run_sync"))
    }

    // Agent-to-agent sync destinations: never called by the gateway.
    type SyncListDestStream = Pin<Box<dyn Stream<Item = Result<FileBatch, Status>> + Send>>;

    async fn sync_list_dest(
        &self,
        _req: GrpcRequest<SyncDestRequest>,
    ) -> Result<GrpcResponse<Self::SyncListDestStream>, Status> {
        Err(Status::unimplemented("sync_list_dest"))
    }

    async fn sync_write_file(
        &self,
        _req: GrpcRequest<tonic::Streaming<SyncWriteRequest>>,
    ) -> Result<GrpcResponse<SyncWriteResponse>, Status> {
        Err(Status::unimplemented("sync_write_file"))
    }

    async fn sync_dest_op(
        &self,
        _req: GrpcRequest<SyncDestRequest>,
    ) -> Result<GrpcResponse<SyncDestResponse>, Status> {
        Err(Status::unimplemented("sync_dest_op"))
    }

    async fn stat_shards(
        &self,
        _req: GrpcRequest<proto::agent::StatShardsRequest>,
    ) -> Result<GrpcResponse<proto::agent::StatShardsResponse>, Status> {
        Err(Status::unimplemented("stat_shards"))
    }

    async fn verify_shards(
        &self,
        _req: GrpcRequest<proto::agent::StatShardsRequest>,
    ) -> Result<GrpcResponse<proto::agent::StatShardsResponse>, Status> {
        Err(Status::unimplemented("verify_shards"))
    }

    async fn rebuild_blocks(
        &self,
        _req: GrpcRequest<proto::agent::RebuildBlocksRequest>,
    ) -> Result<GrpcResponse<proto::agent::RebuildBlocksResponse>, Status> {
        Err(Status::unimplemented("rebuild_blocks"))
    }
}

/// A fake coordinator and agent on loopback, and gateway state pointing at them.
pub struct Fixture {
    pub coordinator: FakeCoordinator,
    pub agent: FakeAgent,
    pub state: AppState,
}

impl Fixture {
    pub async fn start() -> Fixture {
        Fixture::start_with(GatewayConfig::default()).await
    }

    pub async fn start_with(mut config: GatewayConfig) -> Fixture {
        let agent = FakeAgent::default();
        let agent_addr =
            serve_grpc(|router| router.add_service(AgentServiceServer::new(agent.clone()))).await;
        let coordinator = FakeCoordinator::default();
        {
            let mut st = lock(&coordinator.0);
            st.agent_address = agent_addr;
            st.agent = Some(agent.clone());
        }
        let coord_addr = serve_grpc(|router| {
            router.add_service(CoordinatorServiceServer::new(coordinator.clone()))
        })
        .await;
        config.coordinator = coord_addr;
        Fixture {
            coordinator,
            agent,
            state: state_for(config),
        }
    }

    pub fn app(&self) -> Router {
        router(self.state.clone())
    }

    pub fn coord(&self) -> std::sync::MutexGuard<'_, CoordState> {
        lock(&self.coordinator.0)
    }

    pub fn agent(&self) -> std::sync::MutexGuard<'_, AgentState> {
        lock(&self.agent.0)
    }

    /// Put a plain file at `path` of user space `space_id` (what `ImportPackage` reads).
    pub fn put_space_file(&self, space_id: u64, path: &str, content: &[u8]) {
        self.coord()
            .space_files
            .insert((space_id, path.to_owned()), content.to_vec());
    }

    /// Store `content` as object `path` of package `package_id` directly in the fakes (no
    /// gateway call); returns the object.
    pub fn seed(&self, package_id: u64, path: &str, content: &[u8]) -> pb::Object {
        let sha256 = sha256_hex(content);
        self.agent().shards.insert(sha256.clone(), content.to_vec());
        let mut st = self.coord();
        let object = pb::Object {
            object_id: st.fresh_id(),
            package_id,
            path: path.to_owned(),
            size: content.len() as u64,
            sha256,
            redundancy: "none".into(),
            create_time_ms: 1_750_753_888_514,
            update_time_ms: 1_750_753_888_514,
            space_id: 1,
        };
        st.objects
            .insert((package_id, path.to_owned()), object.clone());
        object
    }
}

async fn serve_grpc<F>(add: F) -> String
where
    F: FnOnce(&mut tonic::transport::Server) -> tonic::transport::server::Router,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut server = tonic::transport::Server::builder();
    let router = add(&mut server);
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    addr
}

/// Gateway state whose coordinator is `config.coordinator`.
pub fn state_for(config: GatewayConfig) -> AppState {
    let coordinator =
        client::coordinator(&config.coordinator, &client::ChannelOptions::default()).unwrap();
    AppState::new(config, coordinator, client::AgentPool::default())
}

/// Gateway state whose coordinator address refuses connections.
pub async fn unreachable_state() -> AppState {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    state_for(GatewayConfig {
        coordinator: addr,
        ..GatewayConfig::default()
    })
}

/// Send one request through the router in-process.
pub async fn call(app: Router, req: Request<Body>) -> Response {
    use tower::ServiceExt;
    app.oneshot(req).await.unwrap()
}

pub async fn body_bytes(resp: Response) -> Bytes {
    axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap()
}

/// Status and parsed JSON body.
pub async fn json(resp: Response) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    let bytes = body_bytes(resp).await;
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, value)
}

pub fn http_get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

pub fn post_json(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

pub const BOUNDARY: &str = "----jcs-test-boundary";

/// A multipart part: (name, filename, content).
pub type Part<'a> = (&'a str, Option<&'a str>, &'a [u8]);

/// Encode parts as a multipart/form-data body.
pub fn multipart_body(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, content) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n")
                    .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

pub fn upload_request(body: Body) -> Request<Body> {
    multipart_request("/v1/object/upload", body)
}

/// A multipart/form-data POST of `body` (built with [`multipart_body`]) to `uri`.
pub fn multipart_request(uri: &str, body: Body) -> Request<Body> {
    Request::post(uri)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .unwrap()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fake refuses a commit without the token its begin issued, so the data-path tests
    /// prove that the gateway passes the token through.
    #[tokio::test]
    async fn commit_requires_the_token_from_begin() {
        let fake = FakeCoordinator::default();
        let begin = fake
            .begin_upload(GrpcRequest::new(pb::BeginUploadRequest {
                package_id: 1,
                path: "a".into(),
                affinity: 0,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(begin.commit_token, commit_token(begin.upload_id));
        let commit = |token: Vec<u8>| pb::CommitUploadRequest {
            upload_id: begin.upload_id,
            size: 1,
            sha256: sha256_hex(b"x"),
            commit_token: token,
            blocks: Vec::new(),
            path: String::new(),
        };
        for token in [Vec::new(), commit_token(begin.upload_id + 1)] {
            let status = fake
                .commit_upload(GrpcRequest::new(commit(token)))
                .await
                .unwrap_err();
            assert_eq!(
                common::error::code_of(&status),
                common::ErrorCode::BadArgument,
                "{status:?}"
            );
        }
        assert!(lock(&fake.0).commits.is_empty());
        let object = fake
            .commit_upload(GrpcRequest::new(commit(begin.commit_token.clone())))
            .await
            .unwrap()
            .into_inner()
            .object
            .unwrap();
        assert_eq!(object.path, "a");
        assert_eq!(lock(&fake.0).commits, [begin.upload_id]);
    }
}
