//! Redundancy in the service (issue 8, `docs/redundancy.md`): effective package policies,
//! block placement for rep/ec uploads, and block sources for downloads. The catalogue side
//! is `catalog/blocks.rs`.

use std::sync::atomic::Ordering;

use common::{PackageId, SpaceId};
use proto::coordinator as pb;
use redundancy::Policy;

use crate::catalog::blocks::parse_policy;
use crate::catalog::rows::{BlockPlan, ObjectRow, PackageRow};
use crate::error::{Error, bad, not_found};
use crate::placement;
use crate::service::{Service, SpaceTarget, ms, package_pb};

impl Service {
    /// The policy new uploads into `package` get: its own, else the cluster default.
    pub(crate) async fn effective_policy(&self, package: PackageId) -> Result<Policy, Error> {
        self.catalog
            .effective_policy(package, self.default_redundancy)
            .await
    }

    /// A package as the API shows it, with its effective policy.
    pub(crate) async fn package_with_policy(&self, p: PackageRow) -> Result<pb::Package, Error> {
        let policy = self.effective_policy(p.package_id).await?;
        let mut out = package_pb(p);
        out.redundancy_json = serde_json::to_string(&policy).unwrap_or_default();
        Ok(out)
    }

    /// The policy of an upload: the request's (validated, `BadArgument` naming the field)
    /// or the package's.
    pub(crate) async fn upload_policy(
        &self,
        package: PackageId,
        redundancy_json: &str,
    ) -> Result<Policy, Error> {
        if redundancy_json.is_empty() {
            self.effective_policy(package).await
        } else {
            parse_policy(redundancy_json, "redundancy")
        }
    }

    /// `count` distinct live spaces with a shard store for the blocks of one object;
    /// `Unavailable` naming how many are missing.
    pub(crate) fn place_blocks(
        &self,
        policy: &Policy,
        affinity: Option<SpaceId>,
    ) -> Result<Vec<SpaceTarget>, Error> {
        let count = policy.block_count();
        let live = self.registry.live_spaces();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let chosen = placement::choose_live(&live, affinity, turn, count).map_err(|missing| {
            Error::NoLiveSpace {
                reason: format!(
                    "a {} upload needs {count} distinct live user spaces with a shard store, {} are live ({missing} missing)",
                    policy.kind(),
                    live.len()
                ),
            }
        })?;
        Ok(chosen
            .into_iter()
            .map(|l| SpaceTarget {
                space: (l.space, l.revision),
                agent: l.agent,
                address: l.address,
            })
            .collect())
    }

    /// `BadArgument` when the cluster has fewer shard-storing user spaces than `policy`
    /// needs at all, live or not: no outage explains that, and retrying cannot help (a
    /// shortage of *live* spaces stays `Unavailable`).
    async fn beyond_cluster(&self, policy: &Policy) -> Result<Option<Error>, Error> {
        let count = policy.block_count();
        let spaces = self
            .catalog
            .list_spaces()
            .await?
            .iter()
            .filter(|s| s.shard_store.is_some())
            .count();
        Ok((spaces < count).then(|| {
            bad(format!(
                "a {} upload needs {count} distinct user spaces with a shard store and this cluster has {spaces}: choose a smaller redundancy or add user spaces",
                policy.kind()
            ))
        }))
    }

    /// `BeginUpload` of a rep/ec upload: one target (space, agent, PUT ticket) per block;
    /// the commit token carries the block plan.
    pub(crate) async fn begin_block_upload(
        &self,
        package: PackageId,
        path: &str,
        affinity: Option<SpaceId>,
        policy: Policy,
        chosen: bool,
    ) -> Result<pb::BeginUploadResponse, Error> {
        let targets = match self.place_blocks(&policy, affinity) {
            Ok(targets) => targets,
            Err(e @ Error::NoLiveSpace { .. }) => {
                return Err(self.beyond_cluster(&policy).await?.unwrap_or(e));
            }
            Err(e) => return Err(e),
        };
        let first = targets
            .first()
            .map(|t| t.space.0)
            .ok_or_else(|| not_found("a space for block 0"))?;
        let now = common::time::now_ms();
        let mut up = self
            .catalog
            .begin_upload(package, path, first, now + ms(self.upload_expiry))
            .await?;
        up.blocks = Some(BlockPlan {
            policy,
            spaces: targets.iter().map(|t| t.space.0).collect(),
        });
        up.policy_chosen = chosen;
        let expires = now + ms(self.ticket_ttl);
        let hash = policy.block_hash();
        let blocks: Vec<pb::BlockTarget> = targets
            .iter()
            .map(|t| pb::BlockTarget {
                agent_id: t.agent.0,
                agent_address: t.address.clone(),
                space_id: t.space.0.0,
                ticket: Some(self.signer.put(t.space, up.upload_id, 0, hash, expires)),
            })
            .collect();
        let head = &blocks[0];
        Ok(pb::BeginUploadResponse {
            upload_id: up.upload_id.0,
            agent_id: head.agent_id,
            agent_address: head.agent_address.clone(),
            space_id: head.space_id,
            ticket: head.ticket.clone(),
            expires_at_ms: expires,
            commit_token: self.signer.commit_token(&up),
            redundancy_json: serde_json::to_string(&policy).unwrap_or_default(),
            blocks,
        })
    }

    /// `ResolveObject` of a rep/ec object: one source per block, with an empty address
    /// for a block whose agent is down (the reader treats it as missing).
    pub(crate) async fn block_sources(&self, o: &ObjectRow) -> Result<Vec<pb::BlockSource>, Error> {
        let blocks = self
            .catalog
            .get_blocks(o.object_id)
            .await?
            .ok_or_else(|| not_found(format!("blocks of object {}", o.object_id)))?;
        let expires = common::time::now_ms() + ms(self.ticket_ttl);
        let mut out = Vec::with_capacity(blocks.row.blocks.len());
        for b in &blocks.row.blocks {
            let (agent_address, ticket) = match self.space_agent(b.space_id).await {
                Ok(t) => (
                    t.address,
                    Some(self.signer.get(t.space, &b.sha256, expires)),
                ),
                Err(e) => {
                    tracing::warn!(object_id = %o.object_id, block = b.index, space = %b.space_id, error = %e, "block unavailable");
                    (String::new(), None)
                }
            };
            out.push(pb::BlockSource {
                agent_address,
                ticket,
                size: b.size,
                space_id: b.space_id.0,
            });
        }
        Ok(out)
    }

    /// `UpdatePackage`: set the package's policy and start re-encoding its objects.
    pub(crate) async fn update_package_policy(
        &self,
        r: pb::UpdatePackageRequest,
    ) -> Result<pb::Package, Error> {
        let id = PackageId(crate::service::id_arg(r.package_id, "packageID")?);
        if r.redundancy_json.is_empty() {
            return Err(crate::error::bad("redundancy is missing"));
        }
        let policy = parse_policy(&r.redundancy_json, "redundancy")?;
        // The policy and a re-encode job of the package's objects (reencode.rs), together.
        self.catalog.set_package_policy(id, policy, true).await?;
        self.scrub_wakeup.notify_one();
        let p = self.catalog.get_package(id).await?;
        tracing::info!(package_id = %id, policy = policy.kind(), "package redundancy changed; re-encode job started");
        self.package_with_policy(p.row).await
    }

    /// `CommitUpload` of a rep/ec upload.
    pub(crate) async fn commit_blocks(
        &self,
        up: &crate::catalog::rows::UploadRow,
        r: &pb::CommitUploadRequest,
    ) -> Result<ObjectRow, Error> {
        let blocks: Vec<(u64, String)> = r
            .blocks
            .iter()
            .map(|b| (b.size, b.sha256.clone()))
            .collect();
        self.catalog
            .commit_block_upload(up, r.size, &r.sha256, &blocks)
            .await
    }
}
