//! The tonic `CoordinatorService`: parse and validate, call the catalog, map the result.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{AgentId, BucketId, ObjectId, PackageId, SpaceId, UserId};
use proto::coordinator as pb;
use proto::coordinator::coordinator_service_server::CoordinatorService;
use tonic::{Request, Response, Status};

use crate::catalog::Catalog;
use crate::catalog::listing::ListByPath;
use crate::catalog::rows::{BucketRow, ObjectRow, PackageRow, UploadRow};
use crate::catalog::space::SpaceDecl;
use crate::error::{Error, bad, not_found};
use crate::placement;
use crate::registry::{Liveness, Registry};
use crate::tickets::TicketSigner;

pub struct Service {
    pub(crate) catalog: Catalog,
    pub(crate) registry: Arc<Registry>,
    pub(crate) signer: TicketSigner,
    pub(crate) ticket_ttl: Duration,
    pub(crate) upload_expiry: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) turn: AtomicU64,
}

type Res<T> = Result<Response<T>, Status>;

fn id_arg(value: u64, field: &str) -> Result<u64, Error> {
    if value == 0 {
        Err(bad(format!("{field} is missing or 0")))
    } else {
        Ok(value)
    }
}

fn user(value: u64) -> UserId {
    UserId(if value == 0 { 1 } else { value })
}

fn ms(d: Duration) -> i64 {
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
    /// Choose a live space for new content (see [`placement`]).
    fn place(&self, affinity: Option<SpaceId>) -> Result<(SpaceId, AgentId, String), Error> {
        let live = self.registry.live_spaces();
        let ids: Vec<SpaceId> = live.iter().map(|(s, _, _)| *s).collect();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let space = placement::choose(&ids, affinity, turn).ok_or_else(|| Error::NoLiveSpace {
            reason: "no agent serving a user space is alive".into(),
        })?;
        live.into_iter()
            .find(|(s, _, _)| *s == space)
            .ok_or_else(|| Error::NoLiveSpace {
                reason: format!("space {space} vanished"),
            })
    }

    /// The agent serving `space`, which must be live (parts and completions go to the
    /// multipart object's space).
    async fn space_agent(&self, space: SpaceId) -> Result<(AgentId, String), Error> {
        let row = self
            .catalog
            .get_space(space)
            .await?
            .ok_or_else(|| not_found(format!("user space {space}")))?;
        let address = self.space_address(space).await?;
        Ok((row.agent_id, address))
    }

    /// The answer to a begin call: where to send the bytes, the agent's ticket and the
    /// commit token of `up`.
    fn reservation(
        &self,
        up: &UploadRow,
        agent_id: AgentId,
        address: String,
        ticket: proto::common::Ticket,
        expires_at_ms: i64,
    ) -> pb::BeginUploadResponse {
        pb::BeginUploadResponse {
            upload_id: up.upload_id.0,
            agent_id: agent_id.0,
            agent_address: address,
            space_id: up.space_id.0,
            ticket: Some(ticket),
            expires_at_ms,
            commit_token: self.signer.commit_token(up),
        }
    }

    /// Where to read `space` from: the address of its agent, unless that agent is down.
    async fn space_address(&self, space: SpaceId) -> Result<String, Error> {
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
            Liveness::Alive | Liveness::Unknown => Ok(agent.address),
            Liveness::Down => Err(Error::AgentDown {
                agent: agent.name,
                space: space.0,
            }),
        }
    }

    async fn register(
        &self,
        req: pb::RegisterAgentRequest,
    ) -> Result<pb::RegisterAgentResponse, Error> {
        let fingerprint = format!("{:?}", (&req.name, &req.address, &req.spaces));
        let (agent_id, spaces) = match self.registry.refresh(&fingerprint) {
            Some(known) => known,
            None => {
                let agent = self.catalog.upsert_agent(&req.name, &req.address).await?;
                let mut spaces = Vec::with_capacity(req.spaces.len());
                for s in &req.spaces {
                    let decl = SpaceDecl {
                        name: s.name.clone(),
                        storage_type: s.storage_type.clone(),
                        path: s.path.clone(),
                    };
                    let row = self.catalog.upsert_space(agent.agent_id, &decl).await?;
                    spaces.push((row.name, row.space_id));
                }
                tracing::info!(agent = %req.name, agent_id = %agent.agent_id, address = %req.address, spaces = spaces.len(), "agent registered");
                self.registry.record(
                    fingerprint,
                    agent.agent_id,
                    req.address.clone(),
                    spaces.clone(),
                );
                (agent.agent_id, spaces)
            }
        };
        Ok(pb::RegisterAgentResponse {
            agent_id: agent_id.0,
            spaces: spaces
                .into_iter()
                .map(|(name, id)| pb::SpaceAssignment {
                    name,
                    space_id: id.0,
                })
                .collect(),
            heartbeat_interval_ms: u64::try_from(self.heartbeat_interval.as_millis())
                .unwrap_or(2000),
        })
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
        let p = self.catalog.create_package(bucket, &r.name).await?;
        Ok(Response::new(pb::PackageResponse {
            package: Some(package_pb(p)),
        }))
    }

    async fn get_package(&self, req: Request<pb::GetPackageRequest>) -> Res<pb::PackageResponse> {
        let id = PackageId(id_arg(req.into_inner().package_id, "packageID")?);
        let p = self.catalog.get_package(id).await?;
        Ok(Response::new(pb::PackageResponse {
            package: Some(package_pb(p.row)),
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
            package: Some(package_pb(p)),
        }))
    }

    async fn list_bucket_packages(
        &self,
        req: Request<pb::ListBucketPackagesRequest>,
    ) -> Res<pb::ListBucketPackagesResponse> {
        let id = BucketId(id_arg(req.into_inner().bucket_id, "bucketID")?);
        let packages = self.catalog.list_bucket_packages(id).await?;
        Ok(Response::new(pb::ListBucketPackagesResponse {
            packages: packages.into_iter().map(package_pb).collect(),
        }))
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
        let r = req.into_inner();
        let package = PackageId(id_arg(r.package_id, "packageID")?);
        common::path::validate_object_path(&r.path).map_err(bad)?;
        let affinity = (r.affinity != 0).then_some(SpaceId(r.affinity));
        let (space, agent_id, address) = self.place(affinity)?;
        let now = common::time::now_ms();
        let upload_expires = now + ms(self.upload_expiry);
        let up = self
            .catalog
            .begin_upload(package, &r.path, space, upload_expires)
            .await?;
        let ticket_expires = now + ms(self.ticket_ttl);
        let ticket = self.signer.put(space, up.upload_id, 0, ticket_expires);
        Ok(Response::new(self.reservation(
            &up,
            agent_id,
            address,
            ticket,
            ticket_expires,
        )))
    }

    async fn commit_upload(
        &self,
        req: Request<pb::CommitUploadRequest>,
    ) -> Res<pb::ObjectResponse> {
        let r = req.into_inner();
        let up = self
            .signer
            .open_commit_token(&r.commit_token)
            .filter(|u| u.upload_id.0 == r.upload_id)
            .ok_or_else(|| bad("commit_token is missing, forged, or belongs to another upload"))?;
        let o = self.catalog.commit_upload(&up, r.size, &r.sha256).await?;
        Ok(Response::new(pb::ObjectResponse {
            object: Some(object_pb(o)),
        }))
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
        let address = self.space_address(o.space_id).await?;
        let ticket = self.signer.get(
            o.space_id,
            &o.sha256,
            common::time::now_ms() + ms(self.ticket_ttl),
        );
        Ok(Response::new(pb::ResolveObjectResponse {
            object: Some(object_pb(o)),
            agent_address: address,
            ticket: Some(ticket),
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
        let (space, _, _) = self.place(None)?;
        let o = self
            .catalog
            .new_multipart_upload(package, &r.path, space)
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
        let (agent_id, address) = self.space_agent(up.space_id).await?;
        let expires = now + ms(self.ticket_ttl);
        let ticket = self.signer.put(up.space_id, up.upload_id, 0, expires);
        Ok(Response::new(
            self.reservation(&up, agent_id, address, ticket, expires),
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
        let (agent_id, address) = self.space_agent(up.space_id).await?;
        let expires = now + ms(self.ticket_ttl);
        let ticket = self
            .signer
            .concat(up.space_id, up.upload_id, hashes, expires);
        Ok(Response::new(
            self.reservation(&up, agent_id, address, ticket, expires),
        ))
    }

    async fn register_agent(
        &self,
        req: Request<pb::RegisterAgentRequest>,
    ) -> Res<pb::RegisterAgentResponse> {
        Ok(Response::new(self.register(req.into_inner()).await?))
    }
}
