//! Metadata of repair and scrub (docs/redundancy.md, "Repair and scrub"; the job is
//! `crate::scrub`):
//!
//! - `v1/job/scrub` [`ScrubState`]: progress of the walk (cursor, counters), written by the
//!   leader only (through its fenced catalogue), so a new leader resumes from the cursor.
//! - `v1/job/scrub-request` [`ScrubRequest`]: a run asked for by any coordinator (admin
//!   API / CLI); the leader takes it.
//! - `v1/repair/{object}` [`RepairQueued`]: objects to check and repair before the walk
//!   (`ReportDamage` after a degraded read).
//! - `v1/repair-log/{time}-{object}` [`RepairLogRow`]: one entry per repair attempt, the
//!   last [`REPAIR_LOG_KEEP`] kept.
//! - [`Catalog::swap_blocks`]: replace rebuilt blocks (placements and shard references) in
//!   one transaction that compares the blocks key's revision.

use common::ObjectId;
use meta::{Compare, Op, Revision, Txn};
use serde::{Deserialize, Serialize};

use super::blocks::{BlockRow, BlocksRow, block_ref_key, delete_unless_put, no_gc_markers};
use super::rows::{ObjectRow, VERSION};
use super::{Catalog, Versioned, decode, encode, keys};
use crate::error::Result;

fn v1() -> u32 {
    VERSION
}

/// Repair-log entries kept (older ones are deleted as new ones arrive).
pub const REPAIR_LOG_KEEP: usize = 1000;

/// `v1/job/scrub`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubState {
    #[serde(default = "v1")]
    pub v: u32,
    /// A run is in progress.
    #[serde(default)]
    pub running: bool,
    #[serde(default)]
    pub deep: bool,
    /// Only this package's objects (0 = all).
    #[serde(default)]
    pub package_id: u64,
    /// Last object of the walk checked by this run (0 = none yet).
    #[serde(default)]
    pub cursor: u64,
    #[serde(default)]
    pub checked: u64,
    #[serde(default)]
    pub damaged: u64,
    #[serde(default)]
    pub repaired: u64,
    #[serde(default)]
    pub failed: u64,
    #[serde(default)]
    pub unavailable: u64,
    #[serde(default)]
    pub last_error: String,
    #[serde(default)]
    pub started_ms: i64,
    #[serde(default)]
    pub last_finished_ms: i64,
    /// When the last scheduled run was due (the next one is `interval` later).
    #[serde(default)]
    pub last_scheduled_ms: i64,
    /// Completed runs.
    #[serde(default)]
    pub runs: u64,
}

/// `v1/job/scrub-request`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubRequest {
    #[serde(default = "v1")]
    pub v: u32,
    #[serde(default)]
    pub package_id: u64,
    #[serde(default)]
    pub deep: bool,
    #[serde(default)]
    pub at_ms: i64,
}

/// `v1/repair/{object}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairQueued {
    #[serde(default = "v1")]
    pub v: u32,
    #[serde(default)]
    pub at_ms: i64,
    /// Check deeply (a read saw corrupt pieces).
    #[serde(default)]
    pub deep: bool,
}

/// `v1/repair-log/{time}-{object}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairLogRow {
    #[serde(default = "v1")]
    pub v: u32,
    pub object_id: u64,
    #[serde(default)]
    pub blocks: Vec<u32>,
    #[serde(default)]
    pub from_spaces: Vec<u64>,
    #[serde(default)]
    pub to_spaces: Vec<u64>,
    #[serde(default)]
    pub bytes: u64,
    /// `repaired`, `superseded` or `failed: …`.
    pub result: String,
    pub time_ms: i64,
    /// Why, per block: `missing`, `corrupt`, `wrong size`, `down`; comma-separated.
    #[serde(default)]
    pub reason: String,
}

impl Catalog {
    pub async fn scrub_state(&self) -> Result<Option<Versioned<ScrubState>>> {
        self.get_row(&keys::scrub_state()).await
    }

    /// Write the job's state (the leader, through its fenced catalogue).
    pub async fn put_scrub_state(&self, state: &ScrubState) -> Result<()> {
        self.meta.put(keys::scrub_state(), encode(state)).await?;
        Ok(())
    }

    /// Ask the leader for a run (replaces an earlier request not yet taken).
    pub async fn request_scrub(&self, req: &ScrubRequest) -> Result<()> {
        self.meta.put(keys::scrub_request(), encode(req)).await?;
        Ok(())
    }

    pub async fn scrub_request(&self) -> Result<Option<Versioned<ScrubRequest>>> {
        self.get_row(&keys::scrub_request()).await
    }

    /// Take the pending request, if any (deleted only if unchanged since it was read).
    pub async fn take_scrub_request(&self) -> Result<Option<ScrubRequest>> {
        let Some(req) = self.scrub_request().await? else {
            return Ok(None);
        };
        let key = keys::scrub_request();
        let res = self
            .meta
            .txn(Txn {
                when: vec![Compare::ModRev(key.clone(), req.rev)],
                then: vec![Op::Delete(key)],
                otherwise: vec![],
            })
            .await?;
        // A newer request arrived meanwhile: take it on the next round.
        Ok(res.succeeded.then_some(req.row))
    }

    /// Queue `object` for the next repair step (idempotent; `deep` sticks until the entry
    /// is taken).
    pub async fn queue_repair(&self, object: ObjectId, deep: bool) -> Result<()> {
        let key = keys::repair_queue(object);
        let was_deep = match self.get_row::<RepairQueued>(&key).await? {
            Some(q) => q.row.deep,
            None => false,
        };
        let row = RepairQueued {
            v: VERSION,
            at_ms: common::time::now_ms(),
            deep: deep || was_deep,
        };
        self.meta
            .put(keys::repair_queue(object), encode(&row))
            .await?;
        Ok(())
    }

    /// Up to `limit` queued objects, lowest id first, with whether to check them deeply.
    pub async fn repair_queue(&self, limit: usize) -> Result<Vec<(ObjectId, bool)>> {
        let page = self
            .meta
            .range(meta::Range {
                limit,
                keys_only: false,
                ..meta::Range::prefix(keys::repair_queue_prefix())
            })
            .await?;
        let mut out = Vec::with_capacity(page.kvs.len());
        for kv in &page.kvs {
            if let Some(id) = keys::trailing_id(&kv.key) {
                let q: RepairQueued = decode(kv)?;
                out.push((ObjectId(id), q.deep));
            }
        }
        Ok(out)
    }

    pub async fn dequeue_repair(&self, object: ObjectId) -> Result<()> {
        self.meta.delete(&keys::repair_queue(object)).await?;
        Ok(())
    }

    /// Append one entry to the repair log ([`Catalog::trim_repair_log`] bounds it).
    pub async fn log_repair(&self, entry: &RepairLogRow) -> Result<()> {
        self.meta
            .put(
                keys::repair_log(entry.time_ms, ObjectId(entry.object_id)),
                encode(entry),
            )
            .await?;
        Ok(())
    }

    /// Drop the oldest repair-log entries beyond [`REPAIR_LOG_KEEP`] (reads up to
    /// `REPAIR_LOG_KEEP + 64` keys: the leader calls it at most once per step).
    pub async fn trim_repair_log(&self) -> Result<()> {
        let page = self
            .meta
            .range(meta::Range {
                keys_only: true,
                limit: REPAIR_LOG_KEEP + 64,
                ..meta::Range::prefix(keys::repair_log_prefix())
            })
            .await?;
        if page.kvs.len() > REPAIR_LOG_KEEP {
            let surplus = page.kvs.len() - REPAIR_LOG_KEEP;
            for kv in &page.kvs[..surplus] {
                self.meta.delete(&kv.key).await?;
            }
        }
        Ok(())
    }

    /// The newest `n` repair-log entries, newest first.
    pub async fn recent_repairs(&self, n: usize) -> Result<Vec<RepairLogRow>> {
        let kvs = self.scan(keys::repair_log_prefix()).await?;
        let mut out = Vec::with_capacity(n.min(kvs.len()));
        for kv in kvs.iter().rev().take(n) {
            out.push(decode(kv)?);
        }
        Ok(out)
    }

    /// Replace the blocks of `object` at the indexes of `rebuilt` (new space and shard
    /// each): the blocks key and the shard references (old ones deleted, new ones put) in
    /// one transaction that compares the blocks key's revision `rev` and the absence of a GC
    /// marker on each new shard. When block 0 moves to another space, the object row
    /// (`row`, read at its revision) gets that space as `space_id` in the same transaction,
    /// which then also compares the row's revision. `false` (nothing changed) when the
    /// object was deleted, moved or rewritten since it was read: the new shards are then
    /// unreferenced and shard GC reclaims them after its grace period.
    pub async fn swap_blocks(
        &self,
        object: ObjectId,
        rev: Revision,
        current: &BlocksRow,
        rebuilt: &[BlockRow],
        row: Option<&Versioned<ObjectRow>>,
    ) -> Result<bool> {
        let key = keys::object_blocks(object);
        let mut blocks_row = current.clone();
        let row_update = match (row, rebuilt.iter().find(|b| b.index == 0)) {
            (Some(o), Some(b0)) if o.row.space_id != b0.space_id => {
                let obj_key = keys::object(o.row.package_id, &o.row.path);
                let mut updated = o.row.clone();
                updated.space_id = b0.space_id;
                Some((
                    Compare::ModRev(obj_key.clone(), o.rev),
                    Op::Put(obj_key, encode(&updated)),
                ))
            }
            _ => None,
        };
        let row = &mut blocks_row;
        let mut when = vec![Compare::ModRev(key.clone(), rev)];
        when.extend(no_gc_markers(rebuilt));
        let mut then = Vec::new();
        if let Some((c, op)) = row_update {
            when.push(c);
            then.push(op);
        }
        let mut deletes = Vec::new();
        for new in rebuilt {
            let Some(slot) = row.blocks.iter_mut().find(|b| b.index == new.index) else {
                return Err(crate::error::bad(format!(
                    "object {object} has no block {}",
                    new.index
                )));
            };
            deletes.push(Op::Delete(block_ref_key(object, slot)));
            then.push(Op::Put(block_ref_key(object, new), Vec::new()));
            *slot = new.clone();
        }
        then.push(Op::Put(key, encode(&*row)));
        delete_unless_put(&mut then, deletes);
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

    use super::*;
    use crate::catalog::testing::{ec_object, hash as h, setup, shard_refs as refs};

    fn moved(index: u32, space: u64, tag: char) -> BlockRow {
        BlockRow {
            index,
            space_id: SpaceId(space),
            sha256: h(tag),
            size: 68,
        }
    }

    #[tokio::test]
    async fn swap_replaces_placements_and_refs() {
        let (c, p) = setup().await;
        let id = ec_object(&c, p, "x").await;
        let before = c.get_blocks(id).await.unwrap().unwrap();
        assert!(
            c.swap_blocks(id, before.rev, &before.row, &[moved(1, 7, 'x')], None)
                .await
                .unwrap()
        );
        let after = c.get_blocks(id).await.unwrap().unwrap().row;
        assert_eq!(after.blocks[1], moved(1, 7, 'x'));
        assert_eq!(after.blocks[0], before.row.blocks[0]);
        let r = refs(&c).await;
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(r.iter().any(|k| k.contains(&h('x'))));
        assert!(!r.iter().any(|k| k.contains(&h('b'))), "{r:?}");
    }

    #[tokio::test]
    async fn swap_after_a_concurrent_change_changes_nothing() {
        let (c, p) = setup().await;
        let id = ec_object(&c, p, "x").await;
        let stale = c.get_blocks(id).await.unwrap().unwrap();
        // A concurrent repair (or rewrite) moved block 0 first.
        assert!(
            c.swap_blocks(id, stale.rev, &stale.row, &[moved(0, 8, 'y')], None)
                .await
                .unwrap()
        );
        let now = c.get_blocks(id).await.unwrap().unwrap();
        let refs_now = refs(&c).await;
        assert!(
            !c.swap_blocks(id, stale.rev, &stale.row, &[moved(1, 9, 'z')], None)
                .await
                .unwrap(),
            "a stale revision must not win"
        );
        let again = c.get_blocks(id).await.unwrap().unwrap();
        assert_eq!((again.row, again.rev), (now.row.clone(), now.rev));
        assert_eq!(refs(&c).await, refs_now);
        // Deleted object: the swap is refused too.
        c.delete_objects(&[id]).await.unwrap();
        assert!(
            !c.swap_blocks(id, now.rev, &now.row, &[moved(1, 9, 'z')], None)
                .await
                .unwrap()
        );
        assert!(c.get_blocks(id).await.unwrap().is_none());
        assert!(refs(&c).await.is_empty());
    }

    #[tokio::test]
    async fn moving_block_0_moves_the_object_rows_space() {
        let (c, p) = setup().await;
        let id = ec_object(&c, p, "x").await;
        let o = c.get_object(id).await.unwrap().unwrap();
        assert_eq!(o.row.space_id, SpaceId(1));
        let b = c.get_blocks(id).await.unwrap().unwrap();
        // Another block moves: the row is untouched (not even its revision).
        assert!(
            c.swap_blocks(id, b.rev, &b.row, &[moved(1, 7, 'x')], Some(&o))
                .await
                .unwrap()
        );
        let o2 = c.get_object(id).await.unwrap().unwrap();
        assert_eq!((o2.row.space_id, o2.rev), (SpaceId(1), o.rev));
        let b = c.get_blocks(id).await.unwrap().unwrap();
        assert!(
            c.swap_blocks(id, b.rev, &b.row, &[moved(0, 8, 'y')], Some(&o2))
                .await
                .unwrap()
        );
        let o3 = c.get_object(id).await.unwrap().unwrap().row;
        assert_eq!(o3.space_id, SpaceId(8), "block 0's new space");
        assert_eq!(
            (o3.sha256.as_str(), o3.size, o3.update_time_ms),
            (o2.row.sha256.as_str(), o2.row.size, o2.row.update_time_ms)
        );
        assert_eq!(
            c.get_blocks(id).await.unwrap().unwrap().row.blocks[0],
            moved(0, 8, 'y')
        );
        // A row read before a concurrent change of it (here: the previous swap) loses.
        let b = c.get_blocks(id).await.unwrap().unwrap();
        assert!(
            !c.swap_blocks(id, b.rev, &b.row, &[moved(0, 9, 'z')], Some(&o2))
                .await
                .unwrap()
        );
        assert_eq!(
            c.get_object(id).await.unwrap().unwrap().row.space_id,
            SpaceId(8)
        );
    }

    #[tokio::test]
    async fn swap_is_refused_while_gc_collects_the_new_shard() {
        let (c, p) = setup().await;
        let id = ec_object(&c, p, "x").await;
        let b = c.get_blocks(id).await.unwrap().unwrap();
        c.meta
            .put(keys::shard_gc(SpaceId(7), &h('x')), Vec::new())
            .await
            .unwrap();
        assert!(
            !c.swap_blocks(id, b.rev, &b.row, &[moved(1, 7, 'x')], None)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn queue_requests_and_log_round_trip() {
        let (c, _) = setup().await;
        c.queue_repair(ObjectId(5), true).await.unwrap();
        c.queue_repair(ObjectId(3), false).await.unwrap();
        c.queue_repair(ObjectId(5), false).await.unwrap();
        assert_eq!(
            c.repair_queue(10).await.unwrap(),
            vec![(ObjectId(3), false), (ObjectId(5), true)],
            "a deep report sticks"
        );
        c.dequeue_repair(ObjectId(3)).await.unwrap();
        assert_eq!(c.repair_queue(10).await.unwrap(), vec![(ObjectId(5), true)]);

        assert_eq!(c.take_scrub_request().await.unwrap(), None);
        let req = ScrubRequest {
            v: 1,
            package_id: 4,
            deep: true,
            at_ms: 1,
        };
        c.request_scrub(&req).await.unwrap();
        assert_eq!(c.take_scrub_request().await.unwrap(), Some(req));
        assert_eq!(c.take_scrub_request().await.unwrap(), None);

        let entry = |t: i64| RepairLogRow {
            v: 1,
            object_id: 9,
            result: format!("r{t}"),
            time_ms: 100 + t,
            ..Default::default()
        };
        for t in 0..3 {
            c.log_repair(&entry(t)).await.unwrap();
        }
        let recent = c.recent_repairs(2).await.unwrap();
        assert_eq!(
            recent.iter().map(|r| r.result.as_str()).collect::<Vec<_>>(),
            ["r2", "r1"]
        );
        // Trimming keeps the newest REPAIR_LOG_KEEP.
        for t in 3..(REPAIR_LOG_KEEP as i64 + 5) {
            c.log_repair(&entry(t)).await.unwrap();
        }
        c.trim_repair_log().await.unwrap();
        let all = c.recent_repairs(usize::MAX).await.unwrap();
        assert_eq!(all.len(), REPAIR_LOG_KEEP);
        assert_eq!(all.last().unwrap().result, "r5", "the five oldest are gone");
    }
}
