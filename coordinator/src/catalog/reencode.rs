//! Metadata of re-encoding on a policy change (docs/redundancy.md, "Re-encode on policy
//! change"; the job is `crate::reencode`):
//!
//! - `v1/job/reencode/{package}` [`ReencodeJob`]: written with the package's new policy in
//!   one transaction by `UpdatePackage` (any coordinator), then advanced by the leader (its
//!   fenced catalogue) with the path cursor and counters, compared on the key's revision so
//!   a newer `UpdatePackage` (which restarts the walk) always wins.
//! - `v1/job/reencode-object/{object}`: one object to converge to its package's policy
//!   (multipart completion, import and `none` upload commits store `none` whatever the
//!   policy; sync copies files between user spaces and writes no objects).
//!
//! `delete_package` removes the package's job key with its policy.
//! - [`Catalog::swap_encoding`]: replace an object's storage (row, blocks key, shard
//!   references) in one transaction compared on the object row's and blocks key's
//!   revisions.

use common::{ObjectId, PackageId};
use meta::{Compare, Op, Txn};
use redundancy::Policy;
use serde::{Deserialize, Serialize};

use super::blocks::{BlockRow, BlocksRow, block_ref_key, delete_unless_put, no_gc_markers};
use super::rows::{ObjectRow, VERSION};
use super::{Catalog, Versioned, encode, keys};
use crate::error::{Result, bad};

fn v1() -> u32 {
    VERSION
}

/// `v1/job/reencode/{package}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReencodeJob {
    #[serde(default = "v1")]
    pub v: u32,
    /// The policy the package's objects are converted to.
    pub policy: Policy,
    /// The walk is not finished.
    #[serde(default)]
    pub running: bool,
    /// `total` holds the package's object count (counted by the leader at the start).
    #[serde(default)]
    pub counted: bool,
    #[serde(default)]
    pub total: u64,
    /// Path of the last object looked at ("" = none yet).
    #[serde(default)]
    pub cursor: String,
    #[serde(default)]
    pub checked: u64,
    #[serde(default)]
    pub reencoded: u64,
    #[serde(default)]
    pub failed: u64,
    #[serde(default)]
    pub superseded: u64,
    #[serde(default)]
    pub last_error: String,
    #[serde(default)]
    pub started_ms: i64,
    #[serde(default)]
    pub finished_ms: i64,
}

impl ReencodeJob {
    /// A new walk of the package towards `policy`.
    pub fn start(policy: Policy) -> Self {
        ReencodeJob {
            v: VERSION,
            policy,
            running: true,
            counted: false,
            total: 0,
            cursor: String::new(),
            checked: 0,
            reencoded: 0,
            failed: 0,
            superseded: 0,
            last_error: String::new(),
            started_ms: common::time::now_ms(),
            finished_ms: 0,
        }
    }
}

impl Catalog {
    /// Re-encode jobs of packages after `after` (all when `None`), at most `limit`, lowest
    /// package id first.
    pub async fn reencode_jobs(
        &self,
        after: Option<PackageId>,
        limit: usize,
    ) -> Result<Vec<(PackageId, Versioned<ReencodeJob>)>> {
        let rows = self
            .rows_after(
                keys::reencode_job_prefix(),
                after.map(keys::reencode_job),
                limit,
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(key, row)| Some((PackageId(keys::trailing_id(&key)?), row)))
            .collect())
    }

    /// Advance the job (the leader); `false` when it was replaced or removed meanwhile.
    pub async fn put_reencode_job(
        &self,
        package: PackageId,
        rev: meta::Revision,
        job: &ReencodeJob,
    ) -> Result<bool> {
        let key = keys::reencode_job(package);
        let res = self
            .meta
            .txn(Txn {
                when: vec![Compare::ModRev(key.clone(), rev)],
                then: vec![Op::Put(key, encode(job))],
                otherwise: vec![],
            })
            .await?;
        Ok(res.succeeded)
    }

    /// Drop the job of a package that no longer exists (if unchanged since `rev`).
    pub async fn delete_reencode_job(&self, package: PackageId, rev: meta::Revision) -> Result<()> {
        let key = keys::reencode_job(package);
        self.meta
            .txn(Txn {
                when: vec![Compare::ModRev(key.clone(), rev)],
                then: vec![Op::Delete(key)],
                otherwise: vec![],
            })
            .await?;
        Ok(())
    }

    /// Queue one object for conversion to its package's policy (idempotent).
    pub async fn queue_reencode(&self, object: ObjectId) -> Result<()> {
        self.meta
            .put(keys::reencode_object(object), Vec::new())
            .await?;
        Ok(())
    }

    /// Up to `limit` queued objects, lowest id first.
    pub async fn reencode_queue(&self, limit: usize) -> Result<Vec<ObjectId>> {
        let page = self
            .meta
            .range(meta::Range {
                limit,
                keys_only: true,
                ..meta::Range::prefix(keys::reencode_object_prefix())
            })
            .await?;
        Ok(page
            .kvs
            .iter()
            .filter_map(|kv| keys::trailing_id(&kv.key).map(ObjectId))
            .collect())
    }

    pub async fn dequeue_reencode(&self, object: ObjectId) -> Result<()> {
        self.meta.delete(&keys::reencode_object(object)).await?;
        Ok(())
    }

    /// Objects of `package` after path `after` ("" = from the first), at most `limit`.
    pub async fn objects_after(
        &self,
        package: PackageId,
        after: &str,
        limit: usize,
    ) -> Result<Vec<Versioned<ObjectRow>>> {
        let after = (!after.is_empty()).then(|| keys::object(package, after));
        let rows = self
            .rows_after(keys::object_prefix(package), after, limit)
            .await?;
        Ok(rows.into_iter().map(|(_, row)| row).collect())
    }

    /// How many objects `package` has (keys only, in pages).
    pub async fn count_objects(&self, package: PackageId) -> Result<u64> {
        const PAGE: usize = 1000;
        let prefix = keys::object_prefix(package);
        let end = meta::prefix_end(&prefix);
        let mut start = prefix;
        let mut n = 0u64;
        loop {
            let page = self
                .meta
                .range(meta::Range {
                    start: start.clone(),
                    end: end.clone(),
                    limit: PAGE,
                    keys_only: true,
                })
                .await?;
            n += page.kvs.len() as u64;
            match page.kvs.last() {
                Some(kv) if page.kvs.len() == PAGE => {
                    start = kv.key.clone();
                    start.push(0);
                }
                _ => return Ok(n),
            }
        }
    }

    /// Replace the storage of `object` (read at its revision) by `new` blocks under
    /// `policy` (`none`: one block, a plain shard), in one transaction: the object row
    /// (`redundancy`, `space_id` = block 0's space), the blocks key (put for rep/ec,
    /// deleted for `none`) and the shard references (`o{object}` or `b{object}-{i}`; old
    /// ones deleted, new ones put). It compares the object row's revision, the blocks key's
    /// (`old_blocks`, or its absence for a plain object) and the absence of a GC marker on
    /// each new shard. `false` (nothing changed) when the object was overwritten, moved or
    /// deleted meanwhile: the new shards are then unreferenced and shard GC reclaims them.
    pub async fn swap_encoding(
        &self,
        object: &Versioned<ObjectRow>,
        old_blocks: Option<&Versioned<BlocksRow>>,
        policy: Policy,
        new: &[BlockRow],
    ) -> Result<bool> {
        let row = &object.row;
        let id = row.object_id;
        if new.len() != policy.block_count() {
            return Err(bad(format!(
                "a {} object has {} blocks, got {}",
                policy.kind(),
                policy.block_count(),
                new.len()
            )));
        }
        let first = new
            .first()
            .ok_or_else(|| bad("an object has at least one block"))?;
        let obj_key = keys::object(row.package_id, &row.path);
        let blocks_key = keys::object_blocks(id);
        let mut when = vec![Compare::ModRev(obj_key.clone(), object.rev)];
        let mut deletes = Vec::new();
        match old_blocks {
            Some(b) => {
                when.push(Compare::ModRev(blocks_key.clone(), b.rev));
                for old in &b.row.blocks {
                    deletes.push(Op::Delete(block_ref_key(id, old)));
                }
            }
            None => {
                when.push(Compare::Absent(blocks_key.clone()));
                if !row.is_multipart() {
                    deletes.push(Op::Delete(keys::object_ref(row.space_id, &row.sha256, id)));
                }
            }
        }
        when.extend(no_gc_markers(new));
        let mut updated = row.clone();
        updated.redundancy = super::rows::redundancy_string(&policy);
        updated.space_id = first.space_id;
        let mut then = vec![Op::Put(obj_key, encode(&updated))];
        if policy == Policy::None {
            if first.sha256 != row.sha256 {
                return Err(bad(format!(
                    "a plain object's shard is named by its hash {}, got {}",
                    row.sha256, first.sha256
                )));
            }
            then.push(Op::Put(
                keys::object_ref(first.space_id, &first.sha256, id),
                Vec::new(),
            ));
            if old_blocks.is_some() {
                then.push(Op::Delete(blocks_key));
            }
        } else {
            let blocks = BlocksRow {
                v: VERSION,
                policy,
                blocks: new.to_vec(),
            };
            then.push(Op::Put(blocks_key, encode(&blocks)));
            for b in new {
                then.push(Op::Put(block_ref_key(id, b), Vec::new()));
            }
        }
        delete_unless_put(&mut then, deletes);
        // The store's limit (a leader's fenced store leaves room for its fence).
        let ops = when.len().max(then.len());
        let limit = self.meta.max_txn_ops();
        if ops > limit {
            return Err(bad(format!(
                "re-encoding object {id} needs {ops} operations in one transaction (limit {limit})"
            )));
        }
        let res = self
            .meta
            .txn(Txn {
                when,
                then,
                otherwise: vec![],
            })
            .await?;
        Ok(res.succeeded)
    }
}

#[cfg(test)]
mod tests {
    use common::SpaceId;
    use redundancy::Policy;

    use super::*;
    use crate::catalog::testing::{FAR, ec_object, hash as h, setup, shard_refs as refs};

    async fn plain(c: &Catalog, p: PackageId, path: &str, sha: char) -> Versioned<ObjectRow> {
        let up = c.begin_upload(p, path, SpaceId(1), FAR).await.unwrap();
        let row = c.commit_upload(&up, 100, &h(sha)).await.unwrap();
        c.get_object(row.object_id).await.unwrap().unwrap()
    }

    fn ec23() -> Policy {
        Policy::ec(2, 3, 64).unwrap()
    }

    fn ec_blocks() -> Vec<BlockRow> {
        (0..3)
            .map(|i| BlockRow {
                index: i,
                space_id: SpaceId(u64::from(i) + 4),
                sha256: h((b'a' + i as u8) as char),
                size: 68,
            })
            .collect()
    }

    #[tokio::test]
    async fn none_to_ec_and_back_swaps_row_blocks_and_refs() {
        let (c, p) = setup().await;
        let o = plain(&c, p, "x", 'f').await;
        assert!(
            c.swap_encoding(&o, None, ec23(), &ec_blocks())
                .await
                .unwrap()
        );
        let now = c.get_object(o.row.object_id).await.unwrap().unwrap();
        assert_eq!(now.row.block_policy(), Some(ec23()));
        assert_eq!(now.row.space_id, SpaceId(4), "block 0's space");
        assert_eq!((now.row.sha256.clone(), now.row.size), (h('f'), 100));
        let b = c.get_blocks(o.row.object_id).await.unwrap().unwrap();
        assert_eq!(b.row.blocks, ec_blocks());
        let r = refs(&c).await;
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(r.iter().all(|k| k.contains("/b")), "{r:?}");

        // Back to none on space 9.
        let back = BlockRow {
            index: 0,
            space_id: SpaceId(9),
            sha256: h('f'),
            size: 100,
        };
        assert!(
            c.swap_encoding(&now, Some(&b), Policy::None, std::slice::from_ref(&back))
                .await
                .unwrap()
        );
        let last = c.get_object(o.row.object_id).await.unwrap().unwrap().row;
        assert_eq!(
            (last.redundancy.as_str(), last.space_id),
            ("none", SpaceId(9))
        );
        assert!(c.get_blocks(o.row.object_id).await.unwrap().is_none());
        let r = refs(&c).await;
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(
            r[0].ends_with(&format!("/o{}", o.row.object_id.key())),
            "{r:?}"
        );
        // The object reads as before.
        assert_eq!(c.get_object_by_path(p, "x").await.unwrap(), last);
    }

    #[tokio::test]
    async fn a_policy_too_large_for_one_transaction_is_refused() {
        let (c, p) = setup().await;
        let o = plain(&c, p, "x", 'f').await;
        let n = c.meta.max_txn_ops() as u32;
        let wide = Policy::rep(n).unwrap();
        let blocks: Vec<BlockRow> = (0..n)
            .map(|i| BlockRow {
                index: i,
                space_id: SpaceId(u64::from(i) + 2),
                sha256: h('f'),
                size: 100,
            })
            .collect();
        let before = refs(&c).await;
        assert!(matches!(
            c.swap_encoding(&o, None, wide, &blocks).await.unwrap_err(),
            crate::error::Error::InvalidArgument { .. }
        ));
        assert_eq!(refs(&c).await, before, "nothing is written");
        // A policy within the limit goes through.
        assert!(
            c.swap_encoding(&o, None, Policy::rep(2).unwrap(), &blocks[..2])
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn swap_after_an_overwrite_changes_nothing() {
        let (c, p) = setup().await;
        let stale = plain(&c, p, "x", 'f').await;
        // The path is overwritten after the job read the row.
        let fresh = plain(&c, p, "x", 'e').await;
        let before = refs(&c).await;
        assert!(
            !c.swap_encoding(&stale, None, ec23(), &ec_blocks())
                .await
                .unwrap(),
            "a stale object revision must not win"
        );
        let now = c.get_object(stale.row.object_id).await.unwrap().unwrap();
        assert_eq!((now.row.clone(), now.rev), (fresh.row, fresh.rev));
        assert!(c.get_blocks(stale.row.object_id).await.unwrap().is_none());
        assert_eq!(refs(&c).await, before);

        // A deleted object: refused too.
        c.delete_objects(&[stale.row.object_id]).await.unwrap();
        assert!(
            !c.swap_encoding(&now, None, ec23(), &ec_blocks())
                .await
                .unwrap()
        );
        assert!(refs(&c).await.is_empty());
    }

    #[tokio::test]
    async fn swap_of_blocks_compares_the_blocks_key() {
        let (c, p) = setup().await;
        let id = ec_object(&c, p, "y").await;
        let o = c.get_object(id).await.unwrap().unwrap();
        let b = c.get_blocks(id).await.unwrap().unwrap();
        // A repair swapped a block meanwhile (the row is unchanged, the blocks key is not).
        let moved = BlockRow {
            index: 1,
            space_id: SpaceId(8),
            sha256: h('b'),
            size: 68,
        };
        assert!(
            c.swap_blocks(id, b.rev, &b.row, &[moved], None)
                .await
                .unwrap()
        );
        let before = refs(&c).await;
        let rep = BlockRow {
            index: 0,
            space_id: SpaceId(5),
            sha256: h('f'),
            size: 100,
        };
        assert!(
            !c.swap_encoding(&o, Some(&b), Policy::rep(1).unwrap(), &[rep])
                .await
                .unwrap()
        );
        assert_eq!(refs(&c).await, before);
        assert_eq!(
            c.get_object(id).await.unwrap().unwrap().row.block_policy(),
            Some(ec23())
        );
    }

    #[tokio::test]
    async fn deleting_a_package_removes_its_reencode_job() {
        let (c, p) = setup().await;
        let b = c.get_package(p).await.unwrap().row.bucket_id;
        let other = c.create_package(b, "other").await.unwrap().package_id;
        c.set_package_policy(p, ec23(), true).await.unwrap();
        c.set_package_policy(other, ec23(), true).await.unwrap();
        c.delete_package(p).await.unwrap();
        let left: Vec<PackageId> = c
            .reencode_jobs(None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(left, [other]);
        assert!(c.package_policy(p).await.unwrap().is_none());
    }

    #[test]
    fn golden_reencode_job_decodes() {
        let j: ReencodeJob =
            serde_json::from_str(include_str!("../../tests/golden/reencode_job_v1.json")).unwrap();
        assert_eq!(j.policy, Policy::ec(4, 6, 1 << 20).unwrap());
        assert_eq!(
            (
                j.running,
                j.total,
                j.cursor.as_str(),
                j.checked,
                j.superseded
            ),
            (true, 3, "b.bin", 2, 1)
        );
        // Only the policy is required: older or newer writers stay readable.
        let bare: ReencodeJob = serde_json::from_str(r#"{"policy":{"type":"none"}}"#).unwrap();
        assert_eq!((bare.v, bare.running, bare.cursor.as_str()), (1, false, ""));
    }

    #[tokio::test]
    async fn jobs_are_restarted_by_a_policy_change_and_advanced_by_revision() {
        let (c, p) = setup().await;
        c.set_package_policy(p, ec23(), true).await.unwrap();
        let jobs = c.reencode_jobs(None, 10).await.unwrap();
        assert_eq!(jobs.len(), 1);
        let (pid, job) = &jobs[0];
        assert_eq!((*pid, job.row.policy, job.row.running), (p, ec23(), true));
        assert_eq!(c.package_policy(p).await.unwrap(), Some(ec23()));
        let mut next = job.row.clone();
        next.cursor = "a".into();
        assert!(c.put_reencode_job(p, job.rev, &next).await.unwrap());
        // A newer update restarts the walk; the stale advance loses.
        c.set_package_policy(p, Policy::None, true).await.unwrap();
        assert!(!c.put_reencode_job(p, job.rev, &next).await.unwrap());
        let (_, now) = c.reencode_jobs(None, 10).await.unwrap().remove(0);
        assert!(c.reencode_jobs(Some(p), 10).await.unwrap().is_empty());
        assert_eq!(
            (now.row.policy, now.row.cursor.as_str()),
            (Policy::None, "")
        );

        for path in ["a", "b", "c"] {
            plain(&c, p, path, 'f').await;
        }
        assert_eq!(c.count_objects(p).await.unwrap(), 3);
        let page = c.objects_after(p, "a", 10).await.unwrap();
        assert_eq!(
            page.iter().map(|o| o.row.path.as_str()).collect::<Vec<_>>(),
            ["b", "c"]
        );
        c.queue_reencode(ObjectId(7)).await.unwrap();
        c.queue_reencode(ObjectId(7)).await.unwrap();
        assert_eq!(c.reencode_queue(10).await.unwrap(), vec![ObjectId(7)]);
        c.dequeue_reencode(ObjectId(7)).await.unwrap();
        assert!(c.reencode_queue(10).await.unwrap().is_empty());
    }
}
