//! Every metadata key the coordinator writes. Keys are relative to the cluster root (the
//! store is wrapped in `meta::Prefixed`); numeric ids are zero-padded to 20 digits so
//! lexical order is numeric order.
//!
//! ```text
//! v1/seq/{name}                          id counters (decimal text, CAS)
//! v1/bucket/{bucket_id}                  BucketRow
//! v1/bucket-name/{user_id}/{name}        → bucket_id        (unique index, same txn)
//! v1/package/{package_id}                PackageRow
//! v1/package-name/{bucket_id}/{name}     → package_id       (unique index, same txn)
//! v1/object/{package_id}/{path}          ObjectRow          (ordered listing by path)
//! v1/object-id/{object_id}               ObjectIdRow → (package_id, path)
//! v1/upload/{upload_id}                  UploadRow          commit marker of a committed upload
//!                                        (idempotent retries; swept after expiry), for the
//!                                        upload ids of the `upload` sequence (older tokens)
//! v1/upload-o/{upload_id}                UploadRow          the same for upload ids of the
//!                                        `object` sequence (`UploadRow::object_seq`); a new
//!                                        object such an upload creates has its id, and its
//!                                        `object-id` key is the marker (none written here)
//! v1/agent/{agent_id}                    AgentRow
//! v1/agent-name/{name}                   → agent_id
//! v1/space/{space_id}                    SpaceRow           (user spaces)
//! v1/space-name/{name}                   → space_id
//! v1/shard-ref/{space_id}/{sha256}/{holder}  one key per holder of a shard: `o{object_id}`
//!                                        for an object, `p{object_id}-{index}` for a part,
//!                                        `b{object_id}-{index}` for a block of a rep/ec object
//! v1/object-blocks/{object_id}           BlocksRow: block placements of a rep/ec object
//!                                        (`blocks.rs`; written in the commit transaction)
//! v1/package-policy/{package_id}         redundancy policy of a package (JSON `Policy`);
//!                                        absent = the coordinator's `default_redundancy`
//! v1/job/scrub                           ScrubState: progress of the scrub job (`scrub.rs`;
//!                                        written by the leader only, through its fence)
//! v1/job/scrub-request                   ScrubRequest: a run asked for (any coordinator)
//! v1/job/reencode/{package_id}           ReencodeJob: converting a package's objects to its
//!                                        new policy (`reencode.rs`; cursor = last path;
//!                                        deleted with the package)
//! v1/job/reencode-object/{object_id}     one object to convert to its package's policy
//!                                        (multipart completion, import, `none` commits)
//! v1/repair/{object_id}                  RepairQueued: object to check and repair before the
//!                                        walk (ReportDamage after a degraded read)
//! v1/repair-log/{time_ms}-{object_id}    RepairLogRow: one repair attempt (last 1000 kept)
//! v1/shard-gc/{space_id}/{sha256}        marker while GC deletes that shard; commits that
//!                                        would reference it compare its absence
//! v1/mpu/{object_id}                     MpuRow: a multipart upload in progress
//! v1/mpart/{object_id}/{index}           PartRow: one uploaded part
//! v1/job/delete-bucket/{bucket_id}       tombstone: packages still being deleted
//! v1/job/delete-package/{package_id}     tombstone: objects still being deleted
//! v1/leader                              the leader's address, tied to its etcd lease;
//!                                        its revision is the fence of leader-only writes
//!                                        (`leader.rs`, `meta::Fenced`)
//! v1/leader-state                        written through the fence each renewal round
//! v1/access-keys/{access_key_id}         AccessKeyRow: API credential, secret encrypted with
//!                                        the cluster secret (`catalog/access_key.rs`)
//! ```
//!
//! Sync tasks keep their own keys (`v1/sync-task/…`, `v1/sync-status/…`, see `sync.rs`).

use common::{AgentId, BucketId, ObjectId, PackageId, SpaceId, UploadId, UserId};

pub fn seq(name: &str) -> Vec<u8> {
    format!("v1/seq/{name}").into_bytes()
}

pub fn bucket(id: BucketId) -> Vec<u8> {
    format!("v1/bucket/{}", id.key()).into_bytes()
}

pub fn bucket_name_prefix(user: UserId) -> Vec<u8> {
    format!("v1/bucket-name/{}/", user.key()).into_bytes()
}

pub fn bucket_name(user: UserId, name: &str) -> Vec<u8> {
    let mut k = bucket_name_prefix(user);
    k.extend_from_slice(name.as_bytes());
    k
}

pub fn package(id: PackageId) -> Vec<u8> {
    format!("v1/package/{}", id.key()).into_bytes()
}

pub fn package_name_prefix(bucket: BucketId) -> Vec<u8> {
    format!("v1/package-name/{}/", bucket.key()).into_bytes()
}

pub fn package_name(bucket: BucketId, name: &str) -> Vec<u8> {
    let mut k = package_name_prefix(bucket);
    k.extend_from_slice(name.as_bytes());
    k
}

pub fn object_prefix(package: PackageId) -> Vec<u8> {
    format!("v1/object/{}/", package.key()).into_bytes()
}

pub fn object(package: PackageId, path: &str) -> Vec<u8> {
    let mut k = object_prefix(package);
    k.extend_from_slice(path.as_bytes());
    k
}

pub fn object_id(id: ObjectId) -> Vec<u8> {
    format!("v1/object-id/{}", id.key()).into_bytes()
}

pub fn upload(id: UploadId) -> Vec<u8> {
    format!("v1/upload/{}", id.key()).into_bytes()
}

pub fn upload_prefix() -> Vec<u8> {
    b"v1/upload/".to_vec()
}

/// Commit marker of an upload whose id comes from the `object` sequence.
pub fn upload_o(id: UploadId) -> Vec<u8> {
    format!("v1/upload-o/{}", id.key()).into_bytes()
}

pub fn upload_o_prefix() -> Vec<u8> {
    b"v1/upload-o/".to_vec()
}

pub fn agent(id: AgentId) -> Vec<u8> {
    format!("v1/agent/{}", id.key()).into_bytes()
}

pub fn agent_prefix() -> Vec<u8> {
    b"v1/agent/".to_vec()
}

pub fn agent_name(name: &str) -> Vec<u8> {
    format!("v1/agent-name/{name}").into_bytes()
}

pub fn space(id: SpaceId) -> Vec<u8> {
    format!("v1/space/{}", id.key()).into_bytes()
}

pub fn space_prefix() -> Vec<u8> {
    b"v1/space/".to_vec()
}

pub fn space_name(name: &str) -> Vec<u8> {
    format!("v1/space-name/{name}").into_bytes()
}

pub fn delete_bucket_job(id: BucketId) -> Vec<u8> {
    format!("v1/job/delete-bucket/{}", id.key()).into_bytes()
}

pub fn delete_bucket_job_prefix() -> Vec<u8> {
    b"v1/job/delete-bucket/".to_vec()
}

pub fn delete_package_job(id: PackageId) -> Vec<u8> {
    format!("v1/job/delete-package/{}", id.key()).into_bytes()
}

pub fn delete_package_job_prefix() -> Vec<u8> {
    b"v1/job/delete-package/".to_vec()
}

pub fn shard_ref_prefix(space: SpaceId, sha256: &str) -> Vec<u8> {
    format!("v1/shard-ref/{}/{sha256}/", space.key()).into_bytes()
}

pub fn object_ref(space: SpaceId, sha256: &str, object: ObjectId) -> Vec<u8> {
    let mut k = shard_ref_prefix(space, sha256);
    k.extend_from_slice(format!("o{}", object.key()).as_bytes());
    k
}

/// A block of a rep/ec object (`blocks.rs`).
pub fn block_ref(space: SpaceId, sha256: &str, object: ObjectId, index: usize) -> Vec<u8> {
    let mut k = shard_ref_prefix(space, sha256);
    k.extend_from_slice(format!("b{}-{index:03}", object.key()).as_bytes());
    k
}

pub fn object_blocks(object: ObjectId) -> Vec<u8> {
    format!("v1/object-blocks/{}", object.key()).into_bytes()
}

pub fn object_blocks_prefix() -> Vec<u8> {
    b"v1/object-blocks/".to_vec()
}

pub fn package_policy(package: PackageId) -> Vec<u8> {
    format!("v1/package-policy/{}", package.key()).into_bytes()
}

pub fn scrub_state() -> Vec<u8> {
    b"v1/job/scrub".to_vec()
}

pub fn scrub_request() -> Vec<u8> {
    b"v1/job/scrub-request".to_vec()
}

pub fn reencode_job(package: PackageId) -> Vec<u8> {
    format!("v1/job/reencode/{}", package.key()).into_bytes()
}

pub fn reencode_job_prefix() -> Vec<u8> {
    b"v1/job/reencode/".to_vec()
}

pub fn reencode_object(object: ObjectId) -> Vec<u8> {
    format!("v1/job/reencode-object/{}", object.key()).into_bytes()
}

pub fn reencode_object_prefix() -> Vec<u8> {
    b"v1/job/reencode-object/".to_vec()
}

pub fn repair_queue(object: ObjectId) -> Vec<u8> {
    format!("v1/repair/{}", object.key()).into_bytes()
}

pub fn repair_queue_prefix() -> Vec<u8> {
    b"v1/repair/".to_vec()
}

/// `time_ms` zero-padded: the log lists oldest first.
pub fn repair_log(time_ms: i64, object: ObjectId) -> Vec<u8> {
    format!("v1/repair-log/{:020}-{}", time_ms.max(0), object.key()).into_bytes()
}

pub fn repair_log_prefix() -> Vec<u8> {
    b"v1/repair-log/".to_vec()
}

pub fn part_ref(space: SpaceId, sha256: &str, object: ObjectId, index: u32) -> Vec<u8> {
    let mut k = shard_ref_prefix(space, sha256);
    k.extend_from_slice(format!("p{}-{index:010}", object.key()).as_bytes());
    k
}

pub fn shard_gc(space: SpaceId, sha256: &str) -> Vec<u8> {
    format!("v1/shard-gc/{}/{sha256}", space.key()).into_bytes()
}

pub fn mpu(object: ObjectId) -> Vec<u8> {
    format!("v1/mpu/{}", object.key()).into_bytes()
}

pub fn mpu_prefix() -> Vec<u8> {
    b"v1/mpu/".to_vec()
}

pub fn part(object: ObjectId, index: u32) -> Vec<u8> {
    format!("v1/mpart/{}/{index:010}", object.key()).into_bytes()
}

pub fn part_prefix(object: ObjectId) -> Vec<u8> {
    format!("v1/mpart/{}/", object.key()).into_bytes()
}

/// `id` must pass `access_key::valid_id` (A-Z, 0-9), so it cannot leave the prefix.
pub fn access_key(id: &str) -> Vec<u8> {
    format!("v1/access-keys/{id}").into_bytes()
}

pub fn access_key_prefix() -> Vec<u8> {
    b"v1/access-keys/".to_vec()
}

/// The id at the end of a key such as `v1/job/delete-package/000…42`.
pub fn trailing_id(key: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(key).ok()?;
    text.rsplit('/').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_of_one_package_share_a_prefix_and_sort_by_path() {
        let p = PackageId(7);
        let a = object(p, "a/b");
        let b = object(p, "a/c");
        assert!(a.starts_with(&object_prefix(p)));
        assert!(a < b);
        assert!(!object(PackageId(70), "a").starts_with(&object_prefix(p)));
    }

    #[test]
    fn trailing_id_reads_padded_ids() {
        assert_eq!(trailing_id(&delete_package_job(PackageId(42))), Some(42));
        assert_eq!(trailing_id(b"v1/x/abc"), None);
    }
}
