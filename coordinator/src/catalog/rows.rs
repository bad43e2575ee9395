//! Values stored under the keys of [`super::keys`]: serde JSON with a version field `v`.
//! Add fields with `#[serde(default)]`; never reuse a field's meaning.

use common::{AgentId, BucketId, ObjectId, PackageId, SpaceId, UploadId, UserId};
use serde::{Deserialize, Serialize};

pub const VERSION: u32 = 1;

fn v1() -> u32 {
    VERSION
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRow {
    #[serde(default = "v1")]
    pub v: u32,
    pub bucket_id: BucketId,
    pub user_id: UserId,
    pub name: String,
    pub create_time_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRow {
    #[serde(default = "v1")]
    pub v: u32,
    pub package_id: PackageId,
    pub bucket_id: BucketId,
    pub name: String,
    pub create_time_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRow {
    #[serde(default = "v1")]
    pub v: u32,
    pub object_id: ObjectId,
    pub package_id: PackageId,
    pub path: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the content; also the shard's name.
    pub sha256: String,
    /// User space holding the shard.
    pub space_id: SpaceId,
    pub redundancy: String,
    pub create_time_ms: i64,
    pub update_time_ms: i64,
    /// Set when the object was created by an upload whose id it took
    /// ([`UploadRow::object_seq`]): until this time a retried commit of that upload may
    /// still arrive, so deleting the object before then leaves a commit marker behind
    /// (the retry then answers "deleted since" instead of creating the object again).
    /// Kept by new versions and moves; 0 (and not written) otherwise.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retry_until_ms: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectIdRow {
    pub package_id: PackageId,
    pub path: String,
}

/// `redundancy` of an object whose content is still being uploaded in parts.
pub const MULTIPART: &str = "multipartUpload";
/// `redundancy` of a plain object stored as one shard.
pub const NONE: &str = "none";
/// The hash a multipart object reports until it is completed.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl ObjectRow {
    pub fn is_multipart(&self) -> bool {
        self.redundancy == MULTIPART
    }

    /// The rep/ec policy of an object stored as blocks (`redundancy` holds the policy's
    /// JSON); `None` for plain (`none`) and multipart objects.
    pub fn block_policy(&self) -> Option<redundancy::Policy> {
        if !self.redundancy.starts_with('{') {
            return None;
        }
        serde_json::from_str::<redundancy::Policy>(&self.redundancy)
            .ok()
            .filter(|p| *p != redundancy::Policy::None)
    }
}

/// The `redundancy` string an object stored under `policy` carries: `none`, or the JSON
/// policy object of rep/ec.
pub fn redundancy_string(policy: &redundancy::Policy) -> String {
    match policy {
        redundancy::Policy::None => NONE.to_owned(),
        p => serde_json::to_string(p).expect("policies always serialize"),
    }
}

/// What a committed upload produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum UploadTarget {
    /// The object at the upload's path (created or replaced).
    #[default]
    Object,
    /// Part `index` of multipart object `object_id`.
    Part { object_id: ObjectId, index: u32 },
    /// The concatenated content of multipart object `object_id`.
    Complete { object_id: ObjectId },
}

/// A multipart upload in progress (`v1/mpu/{object_id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MpuRow {
    #[serde(default = "v1")]
    pub v: u32,
    pub object_id: ObjectId,
    pub create_time_ms: i64,
}

/// One uploaded part (`v1/mpart/{object_id}/{index}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRow {
    #[serde(default = "v1")]
    pub v: u32,
    pub object_id: ObjectId,
    pub index: u32,
    pub space_id: SpaceId,
    pub size: u64,
    pub sha256: String,
    pub update_time_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadState {
    Pending,
    Committed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRow {
    #[serde(default = "v1")]
    pub v: u32,
    pub upload_id: UploadId,
    pub package_id: PackageId,
    /// Revision of the package row when the upload began (commit compares it).
    #[serde(default)]
    pub package_rev: i64,
    pub path: String,
    pub space_id: SpaceId,
    /// What the commit produces; absent in rows written before multipart existed.
    #[serde(default)]
    pub target: UploadTarget,
    pub state: UploadState,
    /// The object the commit produced (state = committed), for idempotent retries.
    #[serde(default)]
    pub object_id: Option<ObjectId>,
    pub create_time_ms: i64,
    pub expires_at_ms: i64,
    /// rep/ec uploads: the policy and the space of every block (`blocks.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<BlockPlan>,
    /// The upload named its own redundancy (the upload info's `redundancy`): its object
    /// keeps it and is not converged to the package policy at commit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub policy_chosen: bool,
    /// The upload id was taken from the object id sequence (every upload reserved since
    /// this field exists): a new object the commit creates takes the upload id as its
    /// object id, and the object's id index doubles as the upload's commit marker, so the
    /// commit writes no `upload-o/` key for it. Its other commits (a new version, a part, a
    /// completion, rep/ec blocks) write their marker under `upload-o/{upload_id}`. False in
    /// the tokens of older coordinators: ids from the `upload` sequence, markers under
    /// `upload/`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub object_seq: bool,
}

/// Where the blocks of a rep/ec upload go, carried in its commit token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockPlan {
    pub policy: redundancy::Policy,
    pub spaces: Vec<SpaceId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRow {
    #[serde(default = "v1")]
    pub v: u32,
    pub agent_id: AgentId,
    pub name: String,
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceRow {
    #[serde(default = "v1")]
    pub v: u32,
    pub space_id: SpaceId,
    pub name: String,
    pub storage_type: String,
    /// Local directory of a declared space ("" for spaces created through the API).
    #[serde(default)]
    pub path: String,
    /// The agent that serves this space now.
    pub agent_id: AgentId,
    /// True for spaces an agent declares in its config; false for `/v1/userSpace/create`.
    #[serde(default = "yes")]
    pub declared: bool,
    /// Storage of an API-created space.
    #[serde(default)]
    pub storage: Option<common::space::Storage>,
    /// The credential of an API-created space, encrypted (see `crate::crypto`).
    #[serde(default)]
    pub credential_enc: String,
    #[serde(default)]
    pub working_dir: String,
    /// `None`: the space holds no shards. Declared spaces always hold shards.
    #[serde(default = "unlimited_shard_store")]
    pub shard_store: Option<common::space::ShardStore>,
    #[serde(default)]
    pub features: Vec<serde_json::Value>,
    /// Starts at 1; +1 on every update.
    #[serde(default = "one")]
    pub revision: u64,
}

fn yes() -> bool {
    true
}

fn one() -> u64 {
    1
}

fn unlimited_shard_store() -> Option<common::space::ShardStore> {
    Some(common::space::ShardStore { max_size: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values: what version 1 wrote must stay readable.
    #[test]
    fn golden_rows_decode() {
        let o: ObjectRow =
            serde_json::from_str(include_str!("../../tests/golden/object_v1.json")).unwrap();
        assert_eq!(o.object_id, ObjectId(7));
        assert_eq!(o.path, "a/b/test2.txt");
        assert_eq!(o.size, 9);
        let u: UploadRow =
            serde_json::from_str(include_str!("../../tests/golden/upload_v1.json")).unwrap();
        assert_eq!(u.state, UploadState::Pending);
        assert_eq!(u.target, UploadTarget::Object);
        assert_eq!(u.object_id, None);
        // An ec object (issue 8): `redundancy` holds the policy's JSON; old readers see a
        // string, as before.
        let ec: ObjectRow =
            serde_json::from_str(include_str!("../../tests/golden/object_ec_v1.json")).unwrap();
        assert_eq!(
            ec.block_policy(),
            Some(redundancy::Policy::Ec {
                k: 4,
                n: 6,
                chunk_size: 1 << 20
            })
        );
        assert!(!ec.is_multipart());
        assert_eq!(o.block_policy(), None);
        assert_eq!(u.blocks, None);
        let b: BucketRow =
            serde_json::from_str(r#"{"bucket_id":1,"user_id":1,"name":"b","create_time_ms":5}"#)
                .unwrap();
        assert_eq!(b.v, VERSION);
    }
}
