//! Redundancy metadata (issue 8, `docs/redundancy.md`): package policies and the block
//! placements of rep/ec objects.
//!
//! - `v1/package-policy/{package}`: the package's [`Policy`]; absent = the coordinator's
//!   `default_redundancy`. Package rows themselves never change (commits compare their
//!   revision), so the policy lives beside them.
//! - `v1/object-blocks/{object}`: [`BlocksRow`], one entry per block, written in the commit
//!   transaction together with one shard reference per block
//!   (`v1/shard-ref/{space}/{sha256}/b{object}-{index}`), so shard GC, space deletion checks
//!   and dedup work as for plain objects. Listing and getting objects read only the object
//!   row (whose `redundancy` holds the policy JSON); download, clone, delete and repair read
//!   the blocks key.

use std::collections::BTreeSet;

use common::{BucketId, ObjectId, PackageId, SpaceId};
use meta::{Compare, Op, Txn};
use redundancy::Policy;
use serde::{Deserialize, Serialize};

use common::shard_hash::is_sha256_hex;

use super::object::{committed, marker_key};
use super::rows::{ObjectIdRow, ObjectRow, PackageRow, UploadRow, UploadTarget, VERSION};
use super::{Catalog, MAX_ATTEMPTS, Versioned, decode, encode, keys};
use crate::error::{Error, Result, bad, not_found};

fn v1() -> u32 {
    VERSION
}

/// One stored block of a rep/ec object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRow {
    /// Position in the policy: data blocks `0..k`, parity `k..n`; replica number for rep.
    pub index: u32,
    pub space_id: SpaceId,
    /// Lower-case hex SHA-256 of the stored block: its shard name in the space.
    pub sha256: String,
    /// Stored bytes (ec frames included).
    pub size: u64,
}

/// `v1/object-blocks/{object}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlocksRow {
    #[serde(default = "v1")]
    pub v: u32,
    pub policy: Policy,
    pub blocks: Vec<BlockRow>,
}

impl BlocksRow {
    /// The distinct `(space, shard)` pairs of the blocks (rep replicas share a name).
    pub(crate) fn shards(&self) -> BTreeSet<(SpaceId, &str)> {
        shards(&self.blocks)
    }
}

/// The distinct `(space, shard)` pairs of `blocks`.
pub(crate) fn shards(blocks: &[BlockRow]) -> BTreeSet<(SpaceId, &str)> {
    blocks
        .iter()
        .map(|b| (b.space_id, b.sha256.as_str()))
        .collect()
}

/// The shard reference key of block `b` of `object`.
pub(crate) fn block_ref_key(object: ObjectId, b: &BlockRow) -> Vec<u8> {
    keys::block_ref(b.space_id, &b.sha256, object, b.index as usize)
}

/// One `Compare::Absent` of the GC marker per distinct shard of `blocks` (a shard being
/// collected must not gain a reference).
pub(crate) fn no_gc_markers(blocks: &[BlockRow]) -> impl Iterator<Item = Compare> + '_ {
    shards(blocks)
        .into_iter()
        .map(|(space, sha)| Compare::Absent(keys::shard_gc(space, sha)))
}

/// Append a delete of each of `deletes` to `then`, except keys `then` already puts (one op
/// per key: a reference both dropped and added stays).
pub(crate) fn delete_unless_put(then: &mut Vec<Op>, deletes: impl IntoIterator<Item = Op>) {
    let written: BTreeSet<Vec<u8>> = then
        .iter()
        .filter_map(|op| match op {
            Op::Put(k, _) => Some(k.clone()),
            _ => None,
        })
        .collect();
    then.extend(deletes.into_iter().filter(|op| match op {
        Op::Delete(k) => !written.contains(k),
        _ => true,
    }));
}

/// Stored size every block of an object of `size` bytes has under `policy`.
pub fn block_len(policy: &Policy, size: u64) -> u64 {
    match redundancy::layout::EcLayout::of(policy) {
        Some(l) => l.block_len(size),
        None => size,
    }
}

/// The policy in a JSON text of the API, or `BadArgument` naming `field`.
pub fn parse_policy(json: &str, field: &str) -> Result<Policy> {
    serde_json::from_str::<Policy>(json).map_err(|e| bad(format!("{field}: {e}")))
}

/// How long a package's redundancy policy is served from [`Catalog::package_policy`]'s
/// cache (uploads read it on every begin).
pub const POLICY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);
/// Entries of the policy cache before it is emptied.
const POLICY_CACHE_MAX: usize = 10_000;
/// Package → (its own policy, if any; when it was read).
pub type PolicyCache = std::collections::HashMap<PackageId, (Option<Policy>, std::time::Instant)>;

impl Catalog {
    /// Create a package whose redundancy is `policy` (`None` = the cluster default, read
    /// at upload time).
    pub async fn create_package_with(
        &self,
        bucket: BucketId,
        name: &str,
        policy: Option<Policy>,
    ) -> Result<PackageRow> {
        let row = self.create_package(bucket, name).await?;
        if let Some(policy) = policy {
            // The package is new and nobody has its id yet: the policy is in place before
            // the caller can upload into it.
            self.set_package_policy(row.package_id, policy, false)
                .await?;
        }
        Ok(row)
    }

    /// The package's own policy, if one was set.
    pub async fn package_policy(&self, package: PackageId) -> Result<Option<Policy>> {
        let now = std::time::Instant::now();
        if let Some((policy, at)) = self.lock_policies().get(&package)
            && now.duration_since(*at) < POLICY_CACHE_TTL
        {
            return Ok(*policy);
        }
        let policy = self
            .get_row::<Policy>(&keys::package_policy(package))
            .await?
            .map(|v| v.row);
        self.remember_policy(package, policy, now);
        Ok(policy)
    }

    fn remember_policy(&self, package: PackageId, policy: Option<Policy>, at: std::time::Instant) {
        let mut cache = self.lock_policies();
        if cache.len() >= POLICY_CACHE_MAX {
            cache.clear();
        }
        cache.insert(package, (policy, at));
    }

    fn lock_policies(&self) -> std::sync::MutexGuard<'_, PolicyCache> {
        self.package_policies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The policy objects of `package` get and converge to: its own, else `default` (the
    /// cluster's `default_redundancy`). Cached (see [`Catalog::package_policy`]).
    pub async fn effective_policy(&self, package: PackageId, default: Policy) -> Result<Policy> {
        Ok(self.package_policy(package).await?.unwrap_or(default))
    }

    /// Set the package's policy (new uploads use it). With `reencode`, (re)start the
    /// package's re-encode job (`v1/job/reencode/{package}`, `crate::reencode`) in the same
    /// transaction, so existing objects converge to it; without, they keep theirs (a new
    /// package has none).
    pub async fn set_package_policy(
        &self,
        package: PackageId,
        policy: Policy,
        reencode: bool,
    ) -> Result<()> {
        policy
            .validate()
            .map_err(|e| bad(format!("redundancy: {e}")))?;
        let p = self.get_package(package).await?;
        let mut then = vec![Op::Put(keys::package_policy(package), encode(&policy))];
        if reencode {
            then.push(Op::Put(
                keys::reencode_job(package),
                encode(&super::reencode::ReencodeJob::start(policy)),
            ));
        }
        let res = self
            .meta
            .txn(Txn {
                when: vec![Compare::ModRev(keys::package(package), p.rev)],
                then,
                otherwise: vec![],
            })
            .await?;
        if !res.succeeded {
            return Err(not_found(format!("package {package}")));
        }
        self.remember_policy(package, Some(policy), std::time::Instant::now());
        Ok(())
    }

    /// The block placements of object `id`.
    pub async fn get_blocks(&self, id: ObjectId) -> Result<Option<Versioned<BlocksRow>>> {
        self.get_row(&keys::object_blocks(id)).await
    }

    /// Conditions and operations that drop the blocks of a rep/ec object (its blocks key and
    /// one shard reference per block); nothing for other objects.
    pub(crate) async fn release_blocks(&self, row: &ObjectRow) -> Result<(Vec<Compare>, Vec<Op>)> {
        if row.block_policy().is_none() {
            return Ok((vec![], vec![]));
        }
        let key = keys::object_blocks(row.object_id);
        let Some(blocks) = self.get_blocks(row.object_id).await? else {
            return Ok((vec![Compare::Absent(key)], vec![]));
        };
        let mut ops = vec![Op::Delete(key.clone())];
        for b in &blocks.row.blocks {
            ops.push(Op::Delete(block_ref_key(row.object_id, b)));
        }
        Ok((vec![Compare::ModRev(key, blocks.rev)], ops))
    }

    /// For a clone `new_id` of the rep/ec object `src`: conditions and operations that make
    /// it share the source's blocks. `None` for other objects.
    pub(crate) async fn share_blocks(
        &self,
        src: &ObjectRow,
        new_id: ObjectId,
    ) -> Result<Option<(Vec<Compare>, Vec<Op>)>> {
        if src.block_policy().is_none() {
            return Ok(None);
        }
        let key = keys::object_blocks(src.object_id);
        let blocks = self
            .get_blocks(src.object_id)
            .await?
            .ok_or_else(|| not_found(format!("blocks of object {}", src.object_id)))?;
        let mut when = vec![Compare::ModRev(key, blocks.rev)];
        when.extend(no_gc_markers(&blocks.row.blocks));
        let mut then = vec![Op::Put(keys::object_blocks(new_id), encode(&blocks.row))];
        for b in &blocks.row.blocks {
            then.push(Op::Put(block_ref_key(new_id, b), Vec::new()));
        }
        Ok(Some((when, then)))
    }

    /// Publish a rep/ec upload (begun with a block plan): the object row, its blocks key and
    /// one reference per block, in one transaction. `blocks` are `(size, sha256)` per block
    /// as the agents reported them. Idempotent per upload like `commit_upload`.
    pub async fn commit_block_upload(
        &self,
        up: &UploadRow,
        size: u64,
        sha256: &str,
        blocks: &[(u64, String)],
    ) -> Result<ObjectRow> {
        let plan = up
            .blocks
            .as_ref()
            .ok_or_else(|| bad("the upload was not begun as a rep/ec upload"))?;
        if up.target != UploadTarget::Object {
            return Err(bad("only whole-object uploads can be stored as blocks"));
        }
        if !is_sha256_hex(sha256) {
            return Err(bad(format!(
                "sha256 {sha256:?} is not 64 lower-case hex digits"
            )));
        }
        let n = plan.policy.block_count();
        if plan.spaces.len() != n || blocks.len() != n {
            return Err(bad(format!(
                "a {} upload has {n} blocks, got {}",
                plan.policy.kind(),
                blocks.len()
            )));
        }
        let expected = block_len(&plan.policy, size);
        let hash = plan.policy.block_hash();
        for (i, (bsize, bsha)) in blocks.iter().enumerate() {
            if common::shard_hash::Algorithm::of(bsha) != Some(hash) {
                return Err(bad(format!(
                    "blocks[{i}].sha256 {bsha:?} is not a {} shard name, which a {} block has",
                    hash.as_str(),
                    plan.policy.kind()
                )));
            }
            if *bsize != expected {
                return Err(bad(format!(
                    "blocks[{i}].size is {bsize}, a {} block of a {size}-byte object has {expected}",
                    plan.policy.kind()
                )));
            }
        }
        if up.expires_at_ms < common::time::now_ms() {
            return Err(not_found(format!("upload {} (expired)", up.upload_id)));
        }
        let new_blocks = BlocksRow {
            v: VERSION,
            policy: plan.policy,
            blocks: blocks
                .iter()
                .zip(&plan.spaces)
                .enumerate()
                .map(|(i, ((size, sha), space))| BlockRow {
                    index: i as u32,
                    space_id: *space,
                    sha256: sha.clone(),
                    size: *size,
                })
                .collect(),
        };
        for _ in 0..MAX_ATTEMPTS {
            if let Some(row) = self
                .try_commit_blocks(up, size, sha256, &new_blocks)
                .await?
            {
                return Ok(row);
            }
        }
        Err(Error::Contention {
            what: format!("upload {}", up.upload_id),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// One optimistic attempt; `None` = a concurrent change, try again.
    async fn try_commit_blocks(
        &self,
        u: &UploadRow,
        size: u64,
        sha256: &str,
        new_blocks: &BlocksRow,
    ) -> Result<Option<ObjectRow>> {
        let obj_key = keys::object(u.package_id, &u.path);
        let pkg_key = keys::package(u.package_id);
        let existing = self.get_row::<ObjectRow>(&obj_key).await?;
        let now = common::time::now_ms();
        let mut when = vec![
            Compare::Absent(marker_key(u)),
            Compare::ModRev(pkg_key.clone(), meta::Revision(u.package_rev)),
        ];
        let mut otherwise = vec![Op::Get(marker_key(u)), Op::Get(pkg_key)];
        for (space, sha) in new_blocks.shards() {
            when.push(Compare::Absent(keys::shard_gc(space, sha)));
            otherwise.push(Op::Get(keys::shard_gc(space, sha)));
        }
        let (object_id, create_time_ms) = match &existing {
            Some(o) => {
                when.push(Compare::ModRev(obj_key.clone(), o.rev));
                (o.row.object_id, o.row.create_time_ms)
            }
            None => {
                when.push(Compare::Absent(obj_key.clone()));
                (ObjectId(self.ids.next("object").await?), now)
            }
        };
        let row = ObjectRow {
            v: VERSION,
            object_id,
            package_id: u.package_id,
            path: u.path.clone(),
            size,
            sha256: sha256.to_owned(),
            space_id: new_blocks.blocks.first().map_or(SpaceId(0), |b| b.space_id),
            redundancy: super::rows::redundancy_string(&new_blocks.policy),
            create_time_ms,
            update_time_ms: now,
            retry_until_ms: existing.as_ref().map_or(0, |o| o.row.retry_until_ms),
        };
        let mut then = vec![
            Op::Put(obj_key, encode(&row)),
            Op::Put(marker_key(u), encode(&committed(u, object_id))),
            Op::Put(keys::object_blocks(object_id), encode(new_blocks)),
        ];
        for b in &new_blocks.blocks {
            then.push(Op::Put(block_ref_key(object_id, b), Vec::new()));
        }
        match &existing {
            None => then.push(Op::Put(
                keys::object_id(object_id),
                encode(&ObjectIdRow {
                    package_id: row.package_id,
                    path: row.path.clone(),
                }),
            )),
            Some(o) if o.row.block_policy().is_some() => {
                let (w, ops) = self.release_blocks(&o.row).await?;
                when.extend(w);
                // Keys written again by this commit are not deleted (one op per key).
                delete_unless_put(&mut then, ops);
            }
            Some(o) if !o.row.is_multipart() => then.push(Op::Delete(keys::object_ref(
                o.row.space_id,
                &o.row.sha256,
                object_id,
            ))),
            Some(_) => {}
        }
        let res = self
            .meta
            .txn(Txn {
                when,
                then,
                otherwise,
            })
            .await?;
        if res.succeeded {
            return Ok(Some(row));
        }
        if let Some(Some(kv)) = res.gets.first() {
            // A retry of a commit that succeeded.
            let marker: UploadRow = decode(kv)?;
            let oid = marker
                .object_id
                .ok_or_else(|| not_found(format!("object of upload {}", u.upload_id)))?;
            return self
                .get_object(oid)
                .await?
                .map(|o| Some(o.row))
                .ok_or_else(|| not_found(format!("object {oid} (deleted since)")));
        }
        match res.gets.get(1) {
            Some(Some(kv)) if kv.mod_rev.0 == u.package_rev => {}
            _ => {
                self.forget_package(u.package_id);
                return Err(not_found(format!("package {}", u.package_id)));
            }
        }
        if res.gets.iter().skip(2).any(Option::is_some) {
            return Err(Error::ShardCollecting);
        }
        Ok(None)
    }

    /// Every rep/ec object's blocks key, one page after `start_after` (exclusive).
    pub async fn list_blocks(
        &self,
        start_after: Option<ObjectId>,
        limit: usize,
    ) -> Result<Vec<(ObjectId, Versioned<BlocksRow>)>> {
        let rows = self
            .rows_after(
                keys::object_blocks_prefix(),
                start_after.map(keys::object_blocks),
                limit,
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(key, row)| Some((ObjectId(keys::trailing_id(&key)?), row)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::testing::{FAR, begin_ec, ec_blocks, hash as h, setup, shard_refs as refs};

    #[test]
    fn golden_blocks_row_decodes() {
        let b: BlocksRow =
            serde_json::from_str(include_str!("../../tests/golden/object_blocks_v1.json")).unwrap();
        assert_eq!(b.policy, Policy::Rep { rep_count: 2 });
        assert_eq!(b.blocks.len(), 2);
        assert_eq!(b.blocks[1].space_id, SpaceId(4));
    }

    #[tokio::test]
    async fn package_policy_is_stored_beside_the_row_and_dropped_with_it() {
        let (c, p) = setup().await;
        assert_eq!(c.package_policy(p).await.unwrap(), None);
        let ec = Policy::ec(4, 6, 1 << 20).unwrap();
        let rev = c.get_package(p).await.unwrap().rev;
        c.set_package_policy(p, ec, false).await.unwrap();
        assert_eq!(c.package_policy(p).await.unwrap(), Some(ec));
        // The package row is untouched: uploads begun before still commit.
        assert_eq!(c.get_package(p).await.unwrap().rev, rev);
        assert!(matches!(
            c.set_package_policy(
                p,
                Policy::Ec {
                    k: 6,
                    n: 4,
                    chunk_size: 64
                },
                false
            )
            .await
            .unwrap_err(),
            Error::InvalidArgument { .. }
        ));
        c.delete_package(p).await.unwrap();
        assert_eq!(c.package_policy(p).await.unwrap(), None);
        assert!(c.set_package_policy(p, ec, false).await.is_err());
    }

    #[tokio::test]
    async fn block_commit_writes_row_blocks_and_one_ref_per_block() {
        let (c, p) = setup().await;
        let up = begin_ec(&c, p, "x").await;
        let row = c
            .commit_block_upload(&up, 100, &h('f'), &ec_blocks('a'))
            .await
            .unwrap();
        assert_eq!(row.block_policy(), Some(Policy::ec(2, 3, 64).unwrap()));
        let again = c
            .commit_block_upload(&up, 100, &h('f'), &ec_blocks('a'))
            .await
            .unwrap();
        assert_eq!(row, again, "a retried commit returns the same object");
        let blocks = c.get_blocks(row.object_id).await.unwrap().unwrap().row;
        assert_eq!(blocks.blocks.len(), 3);
        assert_eq!(blocks.blocks[2].space_id, SpaceId(3));
        assert_eq!(refs(&c).await.len(), 3);
        assert!(refs(&c).await.iter().all(|k| k.contains("/b")));

        // Wrong block count or size is refused.
        let up2 = begin_ec(&c, p, "y").await;
        assert!(
            c.commit_block_upload(&up2, 100, &h('f'), &ec_blocks('a')[..2])
                .await
                .is_err()
        );
        let mut bad_size = ec_blocks('a');
        bad_size[1].0 = 67;
        assert!(
            c.commit_block_upload(&up2, 100, &h('f'), &bad_size)
                .await
                .is_err()
        );
        // An ec block named by SHA-256 is not what its ticket asked the agent for.
        let mut sha_named = ec_blocks('a');
        sha_named[2].1 = h('c');
        let err = c
            .commit_block_upload(&up2, 100, &h('f'), &sha_named)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("blocks[2].sha256") && err.contains("not a BLAKE3 shard name"),
            "{err}"
        );
        assert_eq!(
            refs(&c).await.len(),
            3,
            "a refused commit adds no reference"
        );
    }

    #[tokio::test]
    async fn delete_clone_and_replace_keep_block_refs_exact() {
        let (c, p) = setup().await;
        let up = begin_ec(&c, p, "x").await;
        let row = c
            .commit_block_upload(&up, 100, &h('f'), &ec_blocks('a'))
            .await
            .unwrap();
        let clone = c.clone_object(row.object_id, p, "copy").await.unwrap();
        assert_eq!(clone.redundancy, row.redundancy);
        assert_eq!(
            refs(&c).await.len(),
            6,
            "the clone holds its own block refs"
        );
        assert!(c.get_blocks(clone.object_id).await.unwrap().is_some());
        c.delete_objects(&[row.object_id]).await.unwrap();
        assert_eq!(refs(&c).await.len(), 3);
        assert!(c.get_blocks(row.object_id).await.unwrap().is_none());

        // Replace the clone's path with another ec upload (same id, new blocks) ...
        let up = begin_ec(&c, p, "copy").await;
        let replaced = c
            .commit_block_upload(&up, 100, &h('e'), &ec_blocks('1'))
            .await
            .unwrap();
        assert_eq!(replaced.object_id, clone.object_id);
        let r = refs(&c).await;
        assert_eq!(r.len(), 3);
        assert!(
            r.iter().all(|k| !k.contains(&h('a'))),
            "old refs dropped: {r:?}"
        );
        // ... then with a plain upload: the block refs and blocks key go.
        let up = c.begin_upload(p, "copy", SpaceId(1), FAR).await.unwrap();
        let plain = c.commit_upload(&up, 5, &h('9')).await.unwrap();
        assert_eq!(plain.object_id, clone.object_id);
        assert_eq!(plain.block_policy(), None);
        assert_eq!(refs(&c).await.len(), 1);
        assert!(c.get_blocks(clone.object_id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn deleting_a_package_releases_its_blocks() {
        let (c, p) = setup().await;
        for path in ["a", "b", "c"] {
            let up = begin_ec(&c, p, path).await;
            c.commit_block_upload(&up, 100, &h('f'), &ec_blocks('a'))
                .await
                .unwrap();
        }
        assert_eq!(refs(&c).await.len(), 9);
        c.delete_package(p).await.unwrap();
        assert!(refs(&c).await.is_empty());
        assert!(c.list_blocks(None, 100).await.unwrap().is_empty());
    }
}
