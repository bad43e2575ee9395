//! The tonic `CoordinatorService`: parse and validate, call the catalog, map the result.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::shard_hash::Algorithm;
use common::{AgentId, BucketId, ObjectId, PackageId, SpaceId, UserId};
use proto::coordinator as pb;
use proto::coordinator::coordinator_service_server::CoordinatorService;
use tonic::{Request, Response, Status};

use crate::catalog::Catalog;
use crate::catalog::listing::ListByPath;
use crate::catalog::rows::{AgentRow, SpaceRow};
use crate::catalog::rows::{BucketRow, ObjectRow, PackageRow, UploadRow};
use crate::catalog::space::{CreateSpec, SpaceDecl};
use crate::crypto::CredentialCipher;
use crate::error::{Error, bad, not_found};
use crate::placement;
use crate::registry::{Liveness, Registry};
use crate::tickets::{SpaceRef, TicketSigner};

pub struct Service {
    pub(crate) catalog: Catalog,
    pub(crate) registry: Arc<Registry>,
    pub(crate) signer: TicketSigner,
    pub(crate) cipher: CredentialCipher,
    pub(crate) agents: client::AgentPool,
    pub(crate) ticket_ttl: Duration,
    pub(crate) upload_expiry: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) turn: AtomicU64,
    /// Bumped whenever a user space is created, updated, deleted or moves to another
    /// agent, so cached registration answers (which carry space configurations) expire.
    pub(crate) spaces_generation: AtomicU64,
    /// Sync passes running now.
    pub(crate) sync_runs: crate::sync::Runs,
    /// Wakes the sync scheduler (a task was created), so a `Once` task starts at once.
    pub(crate) sync_wakeup: tokio::sync::Notify,
    /// Policy of packages without their own (`default_redundancy`).
    pub(crate) default_redundancy: redundancy::Policy,
    /// Wakes this node's scrub job (a scrub request or a damage report arrived).
    pub(crate) scrub_wakeup: Arc<tokio::sync::Notify>,
}

/// Where to reach a user space now.
#[derive(Clone)]
pub(crate) struct SpaceTarget {
    pub space: SpaceRef,
    pub agent: AgentId,
    pub address: String,
}

/// Deadline of a storage probe through an agent.
const TEST_TIMEOUT: Duration = Duration::from_secs(20);

type Res<T> = Result<Response<T>, Status>;

/// Longest `GetSyncTask` long poll.
pub const MAX_SYNC_WAIT: Duration = Duration::from_secs(60);
/// How often a long poll re-reads a task whose runs another coordinator records.
const SYNC_WAIT_POLL: Duration = Duration::from_millis(100);

/// Most items one batch call (`BeginUploads`, `CommitUploads`) may carry.
pub const MAX_BATCH: usize = 256;

fn check_batch_len(n: usize) -> Result<(), Error> {
    if n > MAX_BATCH {
        return Err(bad(format!(
            "a batch carries at most {MAX_BATCH} items (got {n})"
        )));
    }
    Ok(())
}

pub(crate) fn id_arg(value: u64, field: &str) -> Result<u64, Error> {
    if value == 0 {
        Err(bad(format!("{field} is missing or 0")))
    } else {
        Ok(value)
    }
}

fn user(value: u64) -> UserId {
    UserId(if value == 0 { 1 } else { value })
}

pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn bucket_pb(b: BucketRow) -> pb::Bucket {
    pb::Bucket {
        bucket_id: b.bucket_id.0,
        name: b.name,
        user_id: b.user_id.0,
        create_time_ms: b.create_time_ms,
    }
}

pub(crate) fn package_pb(p: PackageRow) -> pb::Package {
    pb::Package {
        package_id: p.package_id.0,
        name: p.name,
        bucket_id: p.bucket_id.0,
        create_time_ms: p.create_time_ms,
        redundancy_json: String::new(),
    }
}

pub(crate) fn object_pb(o: ObjectRow) -> pb::Object {
    pb::Object {
        object_id: o.object_id.0,
        package_id: o.package_id.0,
        path: o.path,
        size: o.size,
        sha256: o.sha256,
        redundancy: o.redundancy,
        create_time_ms: o.create_time_ms,
        update_time_ms: o.update_time_ms,
        space_id: o.space_id.0,
    }
}

/// The message of a failed batch entry (internal details stay in the log).
fn entry_error(e: &Error) -> String {
    if common::CodedError::code(e) == common::ErrorCode::Internal {
        tracing::error!(error = %common::error::ErrorChain(e), "batch entry failed");
        "internal error".to_owned()
    } else {
        e.to_string()
    }
}

impl Service {
    /// Where new content goes: the `affinity` space when it exists, holds shards and its
    /// agent is not known to be down; otherwise [`Service::place`].
    pub(crate) async fn place_with_affinity(
        &self,
        affinity: Option<SpaceId>,
    ) -> Result<SpaceTarget, Error> {
        if let Some(space) = affinity
            && let Some(row) = self.catalog.get_space(space).await?
            && row.stores_shards()
            && let Ok(target) = self.space_agent(space).await
        {
            return Ok(target);
        }
        self.place(affinity)
    }

    /// Choose a live, shard-storing space for new content (see [`placement`]).
    pub(crate) fn place(&self, affinity: Option<SpaceId>) -> Result<SpaceTarget, Error> {
        let live = self.registry.live_spaces();
        let ids: Vec<SpaceId> = live.iter().map(|l| l.space).collect();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let space = placement::choose(&ids, affinity, turn).ok_or_else(|| Error::NoLiveSpace {
            reason: "no agent serving a user space with a shard store is alive".into(),
        })?;
        live.into_iter()
            .find(|l| l.space == space)
            .map(|l| SpaceTarget {
                space: (l.space, l.revision),
                agent: l.agent,
                address: l.address,
            })
            .ok_or_else(|| Error::NoLiveSpace {
                reason: format!("space {space} vanished"),
            })
    }

    /// The agent serving `space` now. When the assigned agent is down, a space that any
    /// agent can reach (a cloud bucket) moves to a live agent; a Local space cannot move,
    /// and the answer is a clear `AgentDown`.
    pub(crate) async fn space_agent(&self, space: SpaceId) -> Result<SpaceTarget, Error> {
        let row = self
            .catalog
            .get_space(space)
            .await?
            .ok_or_else(|| not_found(format!("user space {space}")))?;
        let agent =
            self.catalog.get_agent(row.agent_id).await?.ok_or_else(|| {
                not_found(format!("agent {} of user space {space}", row.agent_id))
            })?;
        match self.registry.liveness(agent.agent_id) {
            Liveness::Alive | Liveness::Unknown => Ok(SpaceTarget {
                space: (space, row.revision),
                agent: agent.agent_id,
                address: agent.address,
            }),
            Liveness::Down => {
                let movable = !row.declared
                    && !matches!(row.storage, Some(common::space::Storage::Local { .. }));
                let candidate = self.registry.live_agents().into_iter().next();
                match (movable, candidate) {
                    (true, Some((to, address))) => {
                        let moved = self
                            .catalog
                            .reassign_space(space, agent.agent_id, to)
                            .await?;
                        self.spaces_changed();
                        tracing::info!(space = %space, from = %agent.name, to = %to, "user space moved to a live agent");
                        Ok(SpaceTarget {
                            space: (space, moved.revision),
                            agent: to,
                            address,
                        })
                    }
                    _ => Err(Error::AgentDown {
                        agent: agent.name,
                        space: space.0,
                    }),
                }
            }
        }
    }

    pub(crate) fn spaces_changed(&self) {
        self.spaces_generation.fetch_add(1, Ordering::Relaxed);
    }

    /// The answer to a begin call: where to send the bytes, the agent's ticket and the
    /// commit token of `up`.
    /// Validate and reserve one upload (`BeginUpload`, one item of `BeginUploads`).
    async fn begin_one(&self, r: pb::BeginUploadRequest) -> Result<pb::BeginUploadResponse, Error> {
        let package = PackageId(id_arg(r.package_id, "packageID")?);
        common::path::validate_object_path(&r.path).map_err(bad)?;
        let affinity = (r.affinity != 0).then_some(SpaceId(r.affinity));
        let policy = self.upload_policy(package, &r.redundancy_json).await?;
        let chosen = !r.redundancy_json.is_empty();
        if policy != redundancy::Policy::None {
            return self
                .begin_block_upload(package, &r.path, affinity, policy, chosen)
                .await;
        }
        let target = self.place_with_affinity(affinity).await?;
        let mut up = self
            .catalog
            .begin_upload(package, &r.path, target.space.0, self.upload_expires_at())
            .await?;
        up.policy_chosen = chosen;
        Ok(self.plain_reservation(&up, target))
    }

    /// When an upload reserved now expires (`upload_expiry`).
    pub(crate) fn upload_expires_at(&self) -> i64 {
        common::time::now_ms() + ms(self.upload_expiry)
    }

    /// The answer for a plain (`none`) upload `up` reserved on `target` (`BeginUpload`, a
    /// write grant's reservations): a PUT ticket of any size valid for `ticket_ttl`.
    pub(crate) fn plain_reservation(
        &self,
        up: &UploadRow,
        target: SpaceTarget,
    ) -> pb::BeginUploadResponse {
        let ticket_expires = common::time::now_ms() + ms(self.ticket_ttl);
        let ticket = self.signer.put(
            target.space,
            up.upload_id,
            0,
            Algorithm::Sha256,
            ticket_expires,
        );
        self.reservation(up, target, ticket, ticket_expires)
    }

    /// Publish one opened upload: rep/ec uploads with their blocks (redundant.rs), the
    /// rest as `Catalog::commit_upload`.
    async fn commit_one(
        &self,
        up: &UploadRow,
        r: &pb::CommitUploadRequest,
    ) -> Result<ObjectRow, Error> {
        let o = if up.blocks.is_some() {
            self.commit_blocks(up, r).await?
        } else if !r.blocks.is_empty() {
            return Err(bad(
                "blocks given for an upload that was not begun as rep/ec",
            ));
        } else {
            self.catalog.commit_upload(up, r.size, &r.sha256).await?
        };
        self.converge_upload(up, &o).await;
        Ok(o)
    }

    pub(crate) fn reservation(
        &self,
        up: &UploadRow,
        target: SpaceTarget,
        ticket: proto::common::Ticket,
        expires_at_ms: i64,
    ) -> pb::BeginUploadResponse {
        pb::BeginUploadResponse {
            upload_id: up.upload_id.0,
            agent_id: target.agent.0,
            agent_address: target.address,
            space_id: up.space_id.0,
            ticket: Some(ticket),
            expires_at_ms,
            commit_token: self.signer.commit_token(up),
            redundancy_json: String::new(),
            blocks: Vec::new(),
        }
    }

    /// The configuration an agent needs to serve `row` (credential decrypted).
    pub(crate) fn spec(
        &self,
        row: &SpaceRow,
        agent_name: &str,
    ) -> Result<proto::common::SpaceSpec, Error> {
        let storage = row.storage(agent_name);
        let credential = row.credential(&self.cipher)?;
        Ok(proto::common::SpaceSpec {
            space_id: row.space_id.0,
            revision: row.revision,
            storage_json: serde_json::to_string(&storage).map_err(|e| bad(e.to_string()))?,
            credential_json: serde_json::to_string(&credential).map_err(|e| bad(e.to_string()))?,
            working_dir: row.working_dir.clone(),
            stores_shards: row.stores_shards(),
            max_size: row.shard_store.map_or(0, |s| s.max_size),
            name: row.name.clone(),
        })
    }

    /// The agent that serves a new space with `storage`: for Local, the agent named by
    /// `location` (or the only agent); otherwise a live agent.
    async fn choose_agent(&self, storage: &common::space::Storage) -> Result<AgentRow, Error> {
        let agents = self.catalog.list_agents().await?;
        match storage {
            common::space::Storage::Local { location, .. } => {
                if location.is_empty() {
                    return match agents.as_slice() {
                        [only] => Ok(only.clone()),
                        _ => Err(bad(format!(
                            "storage.location must name the agent whose machine holds the directory (one of: {})",
                            agents
                                .iter()
                                .map(|a| a.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))),
                    };
                }
                agents
                    .into_iter()
                    .find(|a| &a.name == location)
                    .ok_or_else(|| {
                        bad(format!(
                            "storage.location {location:?} is not a registered agent"
                        ))
                    })
            }
            _ => {
                let live = self.registry.live_agents();
                // The live agent serving the fewest spaces.
                let spaces = self.catalog.list_spaces().await?;
                live.iter()
                    .min_by_key(|(id, _)| spaces.iter().filter(|s| s.agent_id == *id).count())
                    .and_then(|(id, _)| agents.into_iter().find(|a| a.agent_id == *id))
                    .ok_or_else(|| Error::NoLiveSpace {
                        reason: "no agent is alive to serve the new user space".into(),
                    })
            }
        }
    }

    async fn user_space_json(&self, row: &SpaceRow) -> Result<String, Error> {
        let agent_name = self
            .catalog
            .get_agent(row.agent_id)
            .await?
            .map(|a| a.name)
            .unwrap_or_default();
        let api = row.to_api(&agent_name, &self.cipher)?;
        serde_json::to_string(&api).map_err(|e| bad(e.to_string()))
    }

    async fn register(
        &self,
        req: pb::RegisterAgentRequest,
    ) -> Result<pb::RegisterAgentResponse, Error> {
        let generation = self.spaces_generation.load(Ordering::Relaxed);
        let fingerprint = format!("{:?}", (&req.name, &req.address, &req.spaces, generation));
        if let Some(resp) = self.registry.refresh(&fingerprint) {
            return Ok(resp);
        }
        let agent = self.catalog.upsert_agent(&req.name, &req.address).await?;
        let mut assignments = Vec::with_capacity(req.spaces.len());
        let mut shard_spaces = Vec::new();
        for s in &req.spaces {
            let decl = SpaceDecl {
                name: s.name.clone(),
                storage_type: s.storage_type.clone(),
                path: s.path.clone(),
            };
            let row = self.catalog.upsert_space(agent.agent_id, &decl).await?;
            shard_spaces.push((row.space_id, row.revision));
            assignments.push(pb::SpaceAssignment {
                name: row.name,
                space_id: row.space_id.0,
            });
        }
        let mut specs = Vec::new();
        for row in self.catalog.list_spaces().await? {
            if row.declared || row.agent_id != agent.agent_id {
                continue;
            }
            if row.stores_shards() {
                shard_spaces.push((row.space_id, row.revision));
            }
            specs.push(self.spec(&row, &agent.name)?);
        }
        tracing::info!(agent = %req.name, agent_id = %agent.agent_id, address = %req.address, declared = assignments.len(), assigned = specs.len(), "agent registered");
        let resp = pb::RegisterAgentResponse {
            agent_id: agent.agent_id.0,
            spaces: assignments,
            heartbeat_interval_ms: u64::try_from(self.heartbeat_interval.as_millis())
                .unwrap_or(2000),
            specs,
        };
        self.registry.record(
            fingerprint,
            agent.agent_id,
            req.address.clone(),
            shard_spaces,
            resp.clone(),
        );
        Ok(resp)
    }
}

#[tonic::async_trait]
impl CoordinatorService for Service {
    async fn create_bucket(
        &self,
        req: Request<pb::CreateBucketRequest>,
    ) -> Res<pb::BucketResponse> {
        let r = req.into_inner();
        let b = self.catalog.create_bucket(user(r.user_id), &r.name).await?;
        Ok(Response::new(pb::BucketResponse {
            bucket: Some(bucket_pb(b)),
        }))
    }

    async fn get_bucket_by_name(
        &self,
        req: Request<pb::GetBucketByNameRequest>,
    ) -> Res<pb::BucketResponse> {
        let r = req.into_inner();
        let b = self
            .catalog
            .get_bucket_by_name(user(r.user_id), &r.name)
            .await?;
        Ok(Response::new(pb::BucketResponse {
            bucket: Some(bucket_pb(b)),
        }))
    }

    async fn list_buckets(
        &self,
        req: Request<pb::ListBucketsRequest>,
    ) -> Res<pb::ListBucketsResponse> {
        let r = req.into_inner();
        let buckets = self.catalog.list_buckets(user(r.user_id)).await?;
        Ok(Response::new(pb::ListBucketsResponse {
            buckets: buckets.into_iter().map(bucket_pb).collect(),
        }))
    }

    async fn delete_bucket(&self, req: Request<pb::DeleteBucketRequest>) -> Res<pb::Empty> {
        let id = BucketId(id_arg(req.into_inner().bucket_id, "bucketID")?);
        self.catalog.delete_bucket(id).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn create_package(
        &self,
        req: Request<pb::CreatePackageRequest>,
    ) -> Res<pb::PackageResponse> {
        let r = req.into_inner();
        let bucket = BucketId(id_arg(r.bucket_id, "bucketID")?);
        let policy = (!r.redundancy_json.is_empty())
            .then(|| crate::catalog::blocks::parse_policy(&r.redundancy_json, "redundancy"))
            .transpose()?;
        let p = self
            .catalog
            .create_package_with(bucket, &r.name, policy)
            .await?;
        Ok(Response::new(pb::PackageResponse {
            package: Some(self.package_with_policy(p).await?),
        }))
    }

    async fn get_package(&self, req: Request<pb::GetPackageRequest>) -> Res<pb::PackageResponse> {
        let id = PackageId(id_arg(req.into_inner().package_id, "packageID")?);
        let p = self.catalog.get_package(id).await?;
        Ok(Response::new(pb::PackageResponse {
            package: Some(self.package_with_policy(p.row).await?),
        }))
    }

    async fn get_package_by_full_name(
        &self,
        req: Request<pb::GetPackageByFullNameRequest>,
    ) -> Res<pb::PackageResponse> {
        let r = req.into_inner();
        let p = self
            .catalog
            .get_package_by_full_name(user(r.user_id), &r.bucket_name, &r.package_name)
            .await?;
        Ok(Response::new(pb::PackageResponse {
            package: Some(self.package_with_policy(p).await?),
        }))
    }

    async fn list_bucket_packages(
        &self,
        req: Request<pb::ListBucketPackagesRequest>,
    ) -> Res<pb::ListBucketPackagesResponse> {
        let id = BucketId(id_arg(req.into_inner().bucket_id, "bucketID")?);
        let rows = self.catalog.list_bucket_packages(id).await?;
        let mut packages = Vec::with_capacity(rows.len());
        for p in rows {
            packages.push(self.package_with_policy(p).await?);
        }
        Ok(Response::new(pb::ListBucketPackagesResponse { packages }))
    }

    async fn delete_package(&self, req: Request<pb::DeletePackageRequest>) -> Res<pb::Empty> {
        let id = PackageId(id_arg(req.into_inner().package_id, "packageID")?);
        self.catalog.delete_package(id).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn list_objects(
        &self,
        req: Request<pb::ListObjectsRequest>,
    ) -> Res<pb::ListObjectsResponse> {
        let r = req.into_inner();
        let id = PackageId(id_arg(r.package_id, "packageID")?);
        let (objects, more) = self
            .catalog
            .list_objects(id, &r.prefix, &r.start_after, r.limit as usize)
            .await?;
        Ok(Response::new(pb::ListObjectsResponse {
            objects: objects.into_iter().map(object_pb).collect(),
            more,
        }))
    }

    async fn delete_objects(&self, req: Request<pb::DeleteObjectsRequest>) -> Res<pb::Empty> {
        let ids: Vec<ObjectId> = req
            .into_inner()
            .object_ids
            .into_iter()
            .map(ObjectId)
            .collect();
        self.catalog.delete_objects(&ids).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn begin_upload(
        &self,
        req: Request<pb::BeginUploadRequest>,
    ) -> Res<pb::BeginUploadResponse> {
        Ok(Response::new(self.begin_one(req.into_inner()).await?))
    }

    async fn commit_upload(
        &self,
        req: Request<pb::CommitUploadRequest>,
    ) -> Res<pb::ObjectResponse> {
        let r = req.into_inner();
        let up = self.open_commit(&r).await?;
        let o = self.commit_one(&up, &r).await?;
        Ok(Response::new(pb::ObjectResponse {
            object: Some(object_pb(o)),
        }))
    }

    async fn begin_uploads(
        &self,
        req: Request<pb::BeginUploadsRequest>,
    ) -> Res<pb::BeginUploadsResponse> {
        let uploads = req.into_inner().uploads;
        check_batch_len(uploads.len())?;
        let results = futures::future::join_all(uploads.into_iter().map(|r| self.begin_one(r)))
            .await
            .into_iter()
            .map(|r| pb::BeginUploadResult {
                result: Some(match r {
                    Ok(ok) => pb::begin_upload_result::Result::Ok(ok),
                    Err(e) => pb::begin_upload_result::Result::Error(client::batch::item_error(&e)),
                }),
            })
            .collect();
        Ok(Response::new(pb::BeginUploadsResponse { results }))
    }

    async fn commit_uploads(
        &self,
        req: Request<pb::CommitUploadsRequest>,
    ) -> Res<pb::CommitUploadsResponse> {
        let uploads = req.into_inner().uploads;
        check_batch_len(uploads.len())?;
        let opened: Vec<Result<UploadRow, Error>> =
            futures::future::join_all(uploads.iter().map(|r| self.open_commit(r))).await;
        // Plain uploads share the group commit; rep/ec uploads (which carry blocks) and
        // unopened tokens are settled one by one below.
        let (plain, items): (Vec<usize>, Vec<(UploadRow, u64, String)>) = opened
            .iter()
            .zip(&uploads)
            .enumerate()
            .filter_map(|(i, (up, r))| {
                let up = up.as_ref().ok()?;
                (up.blocks.is_none() && r.blocks.is_empty())
                    .then(|| (i, (up.clone(), r.size, r.sha256.clone())))
            })
            .unzip();
        let committed = self.catalog.commit_uploads(&items).await;
        // Stored `none`: converge to a rep/ec policy set since the reservation, unless the
        // upload chose `none` itself.
        futures::future::join_all(
            committed
                .iter()
                .zip(&items)
                .filter_map(|(r, (up, ..))| Some((up, r.as_ref().ok()?)))
                .map(|(up, o)| self.converge_upload(up, o)),
        )
        .await;
        let mut grouped: std::collections::HashMap<usize, Result<ObjectRow, Error>> =
            plain.into_iter().zip(committed).collect();
        let each = opened
            .into_iter()
            .zip(&uploads)
            .enumerate()
            .map(|(i, (up, r))| {
                let done = grouped.remove(&i);
                async move {
                    match done {
                        Some(result) => result,
                        None => self.commit_one(&up?, r).await,
                    }
                }
            });
        let results = futures::future::join_all(each)
            .await
            .into_iter()
            .map(|r| pb::CommitUploadResult {
                result: Some(match r {
                    Ok(o) => pb::commit_upload_result::Result::Ok(object_pb(o)),
                    Err(e) => {
                        pb::commit_upload_result::Result::Error(client::batch::item_error(&e))
                    }
                }),
            })
            .collect();
        Ok(Response::new(pb::CommitUploadsResponse { results }))
    }

    async fn resolve_object(
        &self,
        req: Request<pb::ResolveObjectRequest>,
    ) -> Res<pb::ResolveObjectResponse> {
        let r = req.into_inner();
        let o = if r.object_id != 0 {
            let id = ObjectId(r.object_id);
            self.catalog
                .get_object(id)
                .await?
                .ok_or_else(|| not_found(format!("object {id}")))?
                .row
        } else {
            let package = PackageId(id_arg(r.package_id, "packageID")?);
            if r.path.is_empty() {
                return Err(bad("path is missing").into());
            }
            self.catalog.get_object_by_path(package, &r.path).await?
        };
        if o.block_policy().is_some() {
            let blocks = self.block_sources(&o).await?;
            return Ok(Response::new(pb::ResolveObjectResponse {
                object: Some(object_pb(o)),
                agent_address: String::new(),
                ticket: None,
                blocks,
            }));
        }
        let target = self.space_agent(o.space_id).await?;
        let ticket = self.signer.get(
            target.space,
            &o.sha256,
            common::time::now_ms() + ms(self.ticket_ttl),
        );
        Ok(Response::new(pb::ResolveObjectResponse {
            object: Some(object_pb(o)),
            agent_address: target.address,
            ticket: Some(ticket),
            blocks: Vec::new(),
        }))
    }

    async fn list_by_path(
        &self,
        req: Request<pb::ListByPathRequest>,
    ) -> Res<pb::ListByPathResponse> {
        let r = req.into_inner();
        let package = PackageId(id_arg(r.package_id, "packageID")?);
        let page = self
            .catalog
            .list_by_path(
                package,
                &ListByPath {
                    path: r.path,
                    is_prefix: r.is_prefix,
                    no_recursive: r.no_recursive,
                    max_keys: r.max_keys as usize,
                    continuation_token: r.continuation_token,
                },
            )
            .await?;
        Ok(Response::new(pb::ListByPathResponse {
            objects: page.objects.into_iter().map(object_pb).collect(),
            common_prefixes: page.common_prefixes,
            is_truncated: page.is_truncated,
            next_continuation_token: page.next_continuation_token,
        }))
    }

    async fn move_objects(
        &self,
        req: Request<pb::MoveObjectsRequest>,
    ) -> Res<pb::MoveObjectsResponse> {
        let mut resp = pb::MoveObjectsResponse::default();
        for m in req.into_inner().movings {
            let result = match (m.object_id, m.package_id) {
                (0, _) => Err(bad("objectID is missing or 0")),
                (_, 0) => Err(bad("packageID is missing or 0")),
                (o, p) => {
                    self.catalog
                        .move_object(ObjectId(o), PackageId(p), &m.path)
                        .await
                }
            };
            match result {
                Ok(_) => resp.successes.push(m.object_id),
                Err(e) => resp.failures.push(pb::MoveFailure {
                    object_id: m.object_id,
                    message: entry_error(&e),
                }),
            }
        }
        Ok(Response::new(resp))
    }

    async fn clone_objects(
        &self,
        req: Request<pb::CloneObjectsRequest>,
    ) -> Res<pb::CloneObjectsResponse> {
        let mut resp = pb::CloneObjectsResponse::default();
        for c in req.into_inner().clonings {
            let result = match (c.object_id, c.new_package_id) {
                (0, _) => Err(bad("objectID is missing or 0")),
                (_, 0) => Err(bad("newPackageID is missing or 0")),
                (o, p) => {
                    self.catalog
                        .clone_object(ObjectId(o), PackageId(p), &c.new_path)
                        .await
                }
            };
            resp.results.push(match result {
                Ok(row) => pb::CloneResult {
                    object: Some(object_pb(row)),
                    error: String::new(),
                },
                Err(e) => pb::CloneResult {
                    object: None,
                    error: entry_error(&e),
                },
            });
        }
        Ok(Response::new(resp))
    }

    async fn new_multipart_upload(
        &self,
        req: Request<pb::NewMultipartUploadRequest>,
    ) -> Res<pb::ObjectResponse> {
        let r = req.into_inner();
        let package = PackageId(id_arg(r.package_id, "packageID")?);
        common::path::validate_object_path(&r.path).map_err(bad)?;
        let target = self.place(None)?;
        let o = self
            .catalog
            .new_multipart_upload(package, &r.path, target.space.0)
            .await?;
        Ok(Response::new(pb::ObjectResponse {
            object: Some(object_pb(o)),
        }))
    }

    async fn begin_upload_part(
        &self,
        req: Request<pb::BeginUploadPartRequest>,
    ) -> Res<pb::BeginUploadResponse> {
        let r = req.into_inner();
        let id = ObjectId(id_arg(r.object_id, "objectID")?);
        let now = common::time::now_ms();
        let up = self
            .catalog
            .begin_upload_part(id, r.index, now + ms(self.upload_expiry))
            .await?;
        let target = self.space_agent(up.space_id).await?;
        let expires = now + ms(self.ticket_ttl);
        let ticket = self
            .signer
            .put(target.space, up.upload_id, 0, Algorithm::Sha256, expires);
        Ok(Response::new(
            self.reservation(&up, target, ticket, expires),
        ))
    }

    async fn begin_complete_multipart_upload(
        &self,
        req: Request<pb::CompleteMultipartUploadRequest>,
    ) -> Res<pb::BeginUploadResponse> {
        let r = req.into_inner();
        let id = ObjectId(id_arg(r.object_id, "objectID")?);
        let now = common::time::now_ms();
        let (up, hashes) = self
            .catalog
            .begin_complete(id, &r.indexes, now + ms(self.upload_expiry))
            .await?;
        let target = self.space_agent(up.space_id).await?;
        let expires = now + ms(self.ticket_ttl);
        let ticket = self
            .signer
            .concat(target.space, up.upload_id, hashes, expires);
        Ok(Response::new(
            self.reservation(&up, target, ticket, expires),
        ))
    }

    async fn create_user_space(
        &self,
        req: Request<pb::CreateUserSpaceRequest>,
    ) -> Res<pb::UserSpaceResponse> {
        let spec: CreateSpec = serde_json::from_str(&req.into_inner().spec_json)
            .map_err(|e| bad(format!("invalid user space: {e}")))?;
        spec.validate()?;
        let agent = self.choose_agent(&spec.storage).await?;
        let row = self
            .catalog
            .create_user_space(&spec, agent.agent_id, &self.cipher)
            .await?;
        self.spaces_changed();
        tracing::info!(space = %row.space_id, name = %row.name, storage = %row.storage_type, agent = %agent.name, "user space created");
        Ok(Response::new(pb::UserSpaceResponse {
            user_space_json: self.user_space_json(&row).await?,
        }))
    }

    async fn get_user_space(
        &self,
        req: Request<pb::GetUserSpaceRequest>,
    ) -> Res<pb::UserSpaceResponse> {
        let id = SpaceId(id_arg(req.into_inner().user_space_id, "userSpaceID")?);
        let row = self
            .catalog
            .get_space(id)
            .await?
            .ok_or_else(|| not_found(format!("user space {id}")))?;
        Ok(Response::new(pb::UserSpaceResponse {
            user_space_json: self.user_space_json(&row).await?,
        }))
    }

    async fn update_user_space(
        &self,
        req: Request<pb::UpdateUserSpaceRequest>,
    ) -> Res<pb::UserSpaceResponse> {
        let r = req.into_inner();
        let id = SpaceId(id_arg(r.user_space_id, "userSpaceID")?);
        let credential: common::space::Credential = serde_json::from_str(&r.credential_json)
            .map_err(|e| bad(format!("invalid credential: {e}")))?;
        let row = self
            .catalog
            .update_user_space(id, &r.name, &credential, &self.cipher)
            .await?;
        self.spaces_changed();
        tracing::info!(space = %id, revision = row.revision, "user space updated");
        Ok(Response::new(pb::UserSpaceResponse {
            user_space_json: self.user_space_json(&row).await?,
        }))
    }

    async fn delete_user_space(&self, req: Request<pb::DeleteUserSpaceRequest>) -> Res<pb::Empty> {
        let id = SpaceId(id_arg(req.into_inner().user_space_id, "userSpaceID")?);
        self.catalog.delete_user_space(id).await?;
        self.spaces_changed();
        Ok(Response::new(pb::Empty {}))
    }

    async fn test_user_space(&self, req: Request<pb::TestUserSpaceRequest>) -> Res<pb::Empty> {
        let r = req.into_inner();
        let storage: common::space::Storage = serde_json::from_str(&r.storage_json)
            .map_err(|e| bad(format!("invalid storage: {e}")))?;
        let credential: common::space::Credential = serde_json::from_str(&r.credential_json)
            .map_err(|e| bad(format!("invalid credential: {e}")))?;
        common::space::validate_pair(&storage, &credential).map_err(bad)?;
        common::space::validate_working_dir(&r.working_dir).map_err(bad)?;
        let agent = self.choose_agent(&storage).await?;
        if self.registry.liveness(agent.agent_id) == Liveness::Down {
            return Err(Error::AgentDown {
                agent: agent.name,
                space: 0,
            }
            .into());
        }
        let spec = proto::common::SpaceSpec {
            space_id: 0,
            revision: 0,
            storage_json: r.storage_json,
            credential_json: r.credential_json,
            working_dir: r.working_dir,
            stores_shards: false,
            max_size: 0,
            name: String::new(),
        };
        let ticket = self
            .signer
            .test(&spec, common::time::now_ms() + ms(self.ticket_ttl));
        let mut client = self
            .agents
            .get(&agent.address)
            .map_err(|source| Error::Agent { source })?;
        let mut request = tonic::Request::new(proto::agent::TestStorageRequest {
            ticket: Some(ticket),
            spec: Some(spec),
        });
        request.set_timeout(TEST_TIMEOUT);
        client
            .test_storage(request)
            .await
            .map_err(|s| Error::Agent { source: s.into() })?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn import_package(
        &self,
        req: Request<pb::ImportPackageRequest>,
    ) -> Res<pb::ImportPackageResponse> {
        Ok(Response::new(
            Service::import_package(self, req.into_inner()).await?,
        ))
    }

    async fn export_package(
        &self,
        req: Request<pb::ExportPackageRequest>,
    ) -> Res<pb::ExportPackageResponse> {
        Ok(Response::new(
            Service::export_package(self, req.into_inner()).await?,
        ))
    }

    async fn create_sync_task(
        &self,
        req: Request<pb::CreateSyncTaskRequest>,
    ) -> Res<pb::SyncTaskResponse> {
        let spec: common::sync::TaskSpec = serde_json::from_str(&req.into_inner().task_json)
            .map_err(|e| bad(format!("invalid sync task: {e}")))?;
        self.validate_sync_task(&spec).await?;
        let (task, status) = self.catalog.create_sync_task(spec).await?;
        tracing::info!(task = task.task_id, "sync task created");
        self.sync_runs.created(task.clone(), status.clone());
        self.sync_wakeup.notify_one();
        Ok(Response::new(pb::SyncTaskResponse {
            task_json: crate::sync::task_json(&task, &status).to_string(),
        }))
    }

    async fn get_sync_task(
        &self,
        req: Request<pb::GetSyncTaskRequest>,
    ) -> Res<pb::SyncTaskResponse> {
        let r = req.into_inner();
        let id = id_arg(r.task_id, "taskID")?;
        let wait = Duration::from_millis(u64::from(r.wait_ms)).min(MAX_SYNC_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        // Subscribed before the first read: a run recorded after it wakes the wait.
        let mut changed = self.sync_runs.subscribe();
        let (task, status) = loop {
            let (task, status) = self.catalog.get_sync_task(id).await?;
            let settled = !matches!(
                status.state,
                common::sync::TaskState::Pending | common::sync::TaskState::Running
            );
            if settled || tokio::time::Instant::now() >= deadline {
                break (task, status);
            }
            // Runs recorded by this coordinator wake the wait at once; another
            // coordinator's (the leader's, when this one follows) are seen by re-reading.
            let poll = tokio::time::Instant::now() + SYNC_WAIT_POLL;
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep_until(poll.min(deadline)) => {}
            }
        };
        Ok(Response::new(pb::SyncTaskResponse {
            task_json: crate::sync::task_json(&task, &status).to_string(),
        }))
    }

    async fn cancel_sync_task(&self, req: Request<pb::CancelSyncTaskRequest>) -> Res<pb::Empty> {
        let id = id_arg(req.into_inner().task_id, "taskID")?;
        self.catalog.cancel_sync_task(id).await?;
        self.sync_runs.cancel(id);
        self.sync_runs.status_written();
        tracing::info!(task = id, "sync task cancelled");
        Ok(Response::new(pb::Empty {}))
    }

    async fn update_package(
        &self,
        req: Request<pb::UpdatePackageRequest>,
    ) -> Res<pb::PackageResponse> {
        let package = self.update_package_policy(req.into_inner()).await?;
        Ok(Response::new(pb::PackageResponse {
            package: Some(package),
        }))
    }

    async fn start_scrub(&self, req: Request<pb::StartScrubRequest>) -> Res<pb::ScrubStatus> {
        Ok(Response::new(self.start_scrub(req.into_inner()).await?))
    }

    async fn get_scrub_status(
        &self,
        req: Request<pb::GetScrubStatusRequest>,
    ) -> Res<pb::ScrubStatus> {
        let recent = req.into_inner().recent;
        Ok(Response::new(
            crate::scrub::status(&self.catalog, recent).await?,
        ))
    }

    async fn report_damage(&self, req: Request<pb::ReportDamageRequest>) -> Res<pb::Empty> {
        self.report_damage(req.into_inner()).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn grant_uploads(
        &self,
        req: Request<pb::GrantUploadsRequest>,
    ) -> Res<pb::GrantUploadsResponse> {
        Ok(Response::new(
            self.grant_uploads_one(req.into_inner()).await?,
        ))
    }

    async fn register_agent(
        &self,
        req: Request<pb::RegisterAgentRequest>,
    ) -> Res<pb::RegisterAgentResponse> {
        Ok(Response::new(self.register(req.into_inner()).await?))
    }

    async fn create_access_key(
        &self,
        req: Request<pb::CreateAccessKeyRequest>,
    ) -> Res<pb::CreateAccessKeyResponse> {
        let req = req.into_inner();
        let (row, secret) = self
            .catalog
            .create_access_key(&req.name, req.read_only, &self.cipher)
            .await?;
        tracing::info!(access_key = %row.access_key_id, read_only = row.read_only, "access key created");
        Ok(Response::new(pb::CreateAccessKeyResponse {
            key: Some(access_key_pb(row)),
            secret_key: secret.expose().to_owned(),
        }))
    }

    async fn list_access_keys(
        &self,
        _req: Request<pb::ListAccessKeysRequest>,
    ) -> Res<pb::ListAccessKeysResponse> {
        let keys = self.catalog.list_access_keys().await?;
        Ok(Response::new(pb::ListAccessKeysResponse {
            keys: keys.into_iter().map(access_key_pb).collect(),
        }))
    }

    async fn delete_access_key(&self, req: Request<pb::DeleteAccessKeyRequest>) -> Res<pb::Empty> {
        let id = req.into_inner().access_key_id;
        self.catalog.delete_access_key(&id).await?;
        tracing::info!(access_key = %id, "access key deleted");
        Ok(Response::new(pb::Empty {}))
    }

    async fn lookup_access_key(
        &self,
        req: Request<pb::LookupAccessKeyRequest>,
    ) -> Res<pb::LookupAccessKeyResponse> {
        let id = req.into_inner().access_key_id;
        let (row, secret) = self.catalog.lookup_access_key(&id, &self.cipher).await?;
        Ok(Response::new(pb::LookupAccessKeyResponse {
            key: Some(access_key_pb(row)),
            secret_key: secret.expose().to_owned(),
        }))
    }
}

/// An access key without its secret.
fn access_key_pb(row: crate::catalog::access_key::AccessKeyRow) -> pb::AccessKey {
    pb::AccessKey {
        access_key_id: row.access_key_id,
        name: row.name,
        create_time_ms: row.create_time_ms,
        read_only: row.read_only,
    }
}
