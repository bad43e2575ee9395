//! Multipart uploads. `new_multipart_upload` creates a visible object with
//! `redundancy = multipartUpload`, size 0 and a zero hash, and remembers it under
//! `v1/mpu/{id}`. Each part is a shard in the object's space, recorded under
//! `v1/mpart/{id}/{index}` with its own shard reference. Completion concatenates the listed
//! parts on the agent into one new shard and publishes it as the object's content; the
//! parts are then deleted. Multipart uploads older than `multipart_expiry`, or whose object
//! is gone or no longer multipart, are swept.

use std::collections::BTreeMap;

use common::{ObjectId, PackageId, SpaceId};
use meta::{Compare, Op, Txn};

use super::object::{Attempt, committed, marker_key};
use super::rows::{
    MULTIPART, MpuRow, NONE, ObjectIdRow, ObjectRow, PartRow, UploadRow, UploadTarget, VERSION,
    ZERO_HASH,
};
use super::{Catalog, DELETE_BATCH, Versioned, decode, encode, keys};
use crate::error::{Error, Result, bad, exists, not_found};

/// Part indexes accepted by `uploadPart` (as in S3).
pub const MAX_PART_INDEX: u32 = 10_000;

impl Catalog {
    /// Create the multipart object at `path`, its content to be stored in `space`. A path
    /// that is already taken is refused, so existing content is never hidden by an upload
    /// in progress.
    pub async fn new_multipart_upload(
        &self,
        package: PackageId,
        path: &str,
        space: SpaceId,
    ) -> Result<ObjectRow> {
        common::path::validate_object_path(path).map_err(bad)?;
        let pkg = self.get_package(package).await?;
        let id = ObjectId(self.ids.next("object").await?);
        let now = common::time::now_ms();
        let row = ObjectRow {
            v: VERSION,
            object_id: id,
            package_id: package,
            path: path.to_owned(),
            size: 0,
            sha256: ZERO_HASH.to_owned(),
            space_id: space,
            redundancy: MULTIPART.to_owned(),
            create_time_ms: now,
            update_time_ms: now,
            retry_until_ms: 0,
        };
        let obj_key = keys::object(package, path);
        let res = self
            .meta
            .txn(Txn {
                when: vec![
                    Compare::ModRev(keys::package(package), pkg.rev),
                    Compare::Absent(obj_key.clone()),
                ],
                then: vec![
                    Op::Put(obj_key, encode(&row)),
                    Op::Put(
                        keys::object_id(id),
                        encode(&ObjectIdRow {
                            package_id: package,
                            path: path.to_owned(),
                        }),
                    ),
                    Op::Put(
                        keys::mpu(id),
                        encode(&MpuRow {
                            v: VERSION,
                            object_id: id,
                            create_time_ms: now,
                        }),
                    ),
                ],
                otherwise: vec![],
            })
            .await?;
        if !res.succeeded {
            self.get_package(package).await?;
            return Err(exists(format!("object {path:?} in package {package}")));
        }
        Ok(row)
    }

    /// The multipart object `id`, or a clear error when it is missing or not multipart.
    pub async fn get_multipart(&self, id: ObjectId) -> Result<Versioned<ObjectRow>> {
        let obj = self
            .get_object(id)
            .await?
            .ok_or_else(|| not_found(format!("object {id}")))?;
        if !obj.row.is_multipart() {
            return Err(bad(format!("object {id} is not a multipart upload")));
        }
        Ok(obj)
    }

    /// Reserve the upload of part `index` of multipart object `id`.
    pub async fn begin_upload_part(
        &self,
        id: ObjectId,
        index: u32,
        expires_at_ms: i64,
    ) -> Result<UploadRow> {
        if !(1..=MAX_PART_INDEX).contains(&index) {
            return Err(bad(format!(
                "index {index} is outside 1..={MAX_PART_INDEX}"
            )));
        }
        let obj = self.get_multipart(id).await?.row;
        self.new_upload(
            obj.package_id,
            &obj.path,
            obj.space_id,
            UploadTarget::Part {
                object_id: id,
                index,
            },
            expires_at_ms,
        )
        .await
    }

    pub(crate) async fn try_commit_part(
        &self,
        u: &UploadRow,
        object_id: ObjectId,
        index: u32,
        size: u64,
        sha256: &str,
    ) -> Result<Attempt> {
        let obj = match self.get_multipart(object_id).await {
            Ok(obj) => obj,
            Err(e) => return self.unless_committed(u, e).await,
        };
        let obj_key = keys::object(obj.row.package_id, &obj.row.path);
        let part_key = keys::part(object_id, index);
        let existing = self.get_row::<PartRow>(&part_key).await?;
        let part = PartRow {
            v: VERSION,
            object_id,
            index,
            space_id: u.space_id,
            size,
            sha256: sha256.to_owned(),
            update_time_ms: common::time::now_ms(),
        };
        let (mut when, otherwise) = Self::commit_guards(u, sha256);
        when.push(Compare::ModRev(obj_key, obj.rev));
        let mut then = vec![
            Op::Put(part_key.clone(), encode(&part)),
            Op::Put(marker_key(u), encode(&committed(u, object_id))),
        ];
        let new_ref = keys::part_ref(u.space_id, sha256, object_id, index);
        match &existing {
            Some(old) => {
                when.push(Compare::ModRev(part_key, old.rev));
                let old_ref = keys::part_ref(old.row.space_id, &old.row.sha256, object_id, index);
                if old_ref != new_ref {
                    then.push(Op::Delete(old_ref));
                    then.push(Op::Put(new_ref, Vec::new()));
                }
            }
            None => {
                when.push(Compare::Absent(part_key));
                then.push(Op::Put(new_ref, Vec::new()));
            }
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
            return Ok(Attempt::Done(obj.row));
        }
        Ok(Self::failed_commit(u, &res.gets)?.unwrap_or(Attempt::Retry))
    }

    /// `err` unless the upload was committed already (a retried commit whose first attempt
    /// changed what `err` complains about).
    async fn unless_committed(&self, u: &UploadRow, err: Error) -> Result<Attempt> {
        if self.meta.get(&marker_key(u)).await?.is_some() {
            return Ok(Attempt::AlreadyCommitted);
        }
        Err(err)
    }

    /// Validate a completion and reserve it: returns the upload row and the hashes of the
    /// listed parts, in order (duplicates kept).
    pub async fn begin_complete(
        &self,
        id: ObjectId,
        indexes: &[u32],
        expires_at_ms: i64,
    ) -> Result<(UploadRow, Vec<String>)> {
        if indexes.is_empty() {
            return Err(bad("indexes is empty: list the parts to concatenate"));
        }
        if indexes.len() > MAX_PART_INDEX as usize {
            return Err(bad(format!(
                "indexes lists more than {MAX_PART_INDEX} parts"
            )));
        }
        let obj = self.get_multipart(id).await?.row;
        let mut parts: BTreeMap<u32, PartRow> = BTreeMap::new();
        for &index in indexes {
            if parts.contains_key(&index) {
                continue;
            }
            let part = self
                .get_row::<PartRow>(&keys::part(id, index))
                .await?
                .ok_or_else(|| bad(format!("part {index} of object {id} was never uploaded")))?;
            parts.insert(index, part.row);
        }
        let hashes = indexes
            .iter()
            .filter_map(|i| parts.get(i).map(|p| p.sha256.clone()))
            .collect();
        let up = self
            .new_upload(
                obj.package_id,
                &obj.path,
                obj.space_id,
                UploadTarget::Complete { object_id: id },
                expires_at_ms,
            )
            .await?;
        Ok((up, hashes))
    }

    pub(crate) async fn try_commit_complete(
        &self,
        u: &UploadRow,
        object_id: ObjectId,
        size: u64,
        sha256: &str,
    ) -> Result<Attempt> {
        let obj = match self.get_multipart(object_id).await {
            Ok(obj) => obj,
            Err(e) => return self.unless_committed(u, e).await,
        };
        let obj_key = keys::object(obj.row.package_id, &obj.row.path);
        let row = ObjectRow {
            size,
            sha256: sha256.to_owned(),
            space_id: u.space_id,
            redundancy: NONE.to_owned(),
            update_time_ms: common::time::now_ms(),
            ..obj.row.clone()
        };
        let (mut when, otherwise) = Self::commit_guards(u, sha256);
        when.push(Compare::ModRev(obj_key.clone(), obj.rev));
        let then = vec![
            Op::Put(obj_key, encode(&row)),
            Op::Put(keys::object_ref(u.space_id, sha256, object_id), Vec::new()),
            Op::Put(marker_key(u), encode(&committed(u, object_id))),
            // Stored `none`: the leader converges it to a rep/ec package policy (reencode.rs).
            Op::Put(keys::reencode_object(object_id), Vec::new()),
        ];
        let res = self
            .meta
            .txn(Txn {
                when,
                then,
                otherwise,
            })
            .await?;
        if res.succeeded {
            return Ok(Attempt::Done(row));
        }
        Ok(Self::failed_commit(u, &res.gets)?.unwrap_or(Attempt::Retry))
    }

    /// Delete every part of object `id` (rows and shard references, in small batches), then
    /// its multipart record.
    pub(crate) async fn purge_parts(&self, id: ObjectId) -> Result<()> {
        loop {
            let page = self
                .meta
                .range(meta::Range::prefix(keys::part_prefix(id)).with_limit(DELETE_BATCH))
                .await?;
            if page.kvs.is_empty() {
                break;
            }
            let mut ops = Vec::with_capacity(page.kvs.len() * 2);
            for kv in &page.kvs {
                let part: PartRow = decode(kv)?;
                ops.push(Op::Delete(kv.key.clone()));
                ops.push(Op::Delete(keys::part_ref(
                    part.space_id,
                    &part.sha256,
                    id,
                    part.index,
                )));
            }
            self.meta
                .txn(Txn {
                    when: vec![],
                    then: ops,
                    otherwise: vec![],
                })
                .await?;
        }
        self.meta.delete(&keys::mpu(id)).await?;
        Ok(())
    }

    /// Clean up multipart uploads that were abandoned (older than `max_age_ms`), completed,
    /// or whose object was deleted or replaced. Abandoned ones lose their object too.
    pub async fn sweep_multipart(&self, now_ms: i64, max_age_ms: i64) -> Result<usize> {
        let mut n = 0;
        for kv in self.scan(keys::mpu_prefix()).await? {
            let mpu: MpuRow = decode(&kv)?;
            let obj = self.get_object(mpu.object_id).await?;
            let live = obj.as_ref().is_some_and(|o| o.row.is_multipart());
            if live && now_ms - mpu.create_time_ms <= max_age_ms {
                continue;
            }
            if live {
                tracing::info!(object_id = %mpu.object_id, "deleting abandoned multipart upload");
                self.delete_objects(&[mpu.object_id]).await?;
            }
            self.purge_parts(mpu.object_id).await?;
            n += 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::testing::{FAR, hash as h, setup};

    async fn keys_under(c: &Catalog, prefix: &str) -> usize {
        c.meta
            .range(meta::Range::prefix(prefix.as_bytes().to_vec()))
            .await
            .unwrap()
            .kvs
            .len()
    }

    #[tokio::test]
    async fn parts_commit_complete_and_clean_up() {
        let (c, p) = setup().await;
        let obj = c.new_multipart_upload(p, "big", SpaceId(1)).await.unwrap();
        assert!(obj.is_multipart());
        assert_eq!((obj.size, obj.sha256.as_str()), (0, ZERO_HASH));
        for (i, ch) in [(1, 'a'), (2, 'b'), (2, 'c')] {
            let up = c.begin_upload_part(obj.object_id, i, FAR).await.unwrap();
            c.commit_upload(&up, 10, &h(ch)).await.unwrap();
        }
        // Re-uploading index 2 replaced its part and its reference.
        assert_eq!(keys_under(&c, "v1/mpart/").await, 2);
        assert_eq!(keys_under(&c, "v1/shard-ref/").await, 2);
        let err = c
            .begin_complete(obj.object_id, &[1, 3], FAR)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("part 3"), "{err}");
        let (up, hashes) = c
            .begin_complete(obj.object_id, &[2, 1, 2], FAR)
            .await
            .unwrap();
        assert_eq!(hashes, vec![h('c'), h('a'), h('c')]);
        let done = c.commit_upload(&up, 30, &h('d')).await.unwrap();
        assert_eq!(
            (done.object_id, done.size, done.redundancy.as_str()),
            (obj.object_id, 30, NONE)
        );
        assert_eq!(done.create_time_ms, obj.create_time_ms);
        assert_eq!(keys_under(&c, "v1/mpart/").await, 0);
        assert_eq!(keys_under(&c, "v1/mpu/").await, 0);
        assert_eq!(
            keys_under(&c, "v1/shard-ref/").await,
            1,
            "only the object's reference is left"
        );
        // Completing again is a clear error.
        let err = c
            .begin_complete(obj.object_id, &[1], FAR)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not a multipart upload"), "{err}");
    }

    #[tokio::test]
    async fn bad_completions_are_refused() {
        let (c, p) = setup().await;
        let obj = c.new_multipart_upload(p, "m", SpaceId(1)).await.unwrap();
        assert!(
            c.begin_complete(obj.object_id, &[], FAR)
                .await
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        assert!(c.begin_upload_part(obj.object_id, 0, FAR).await.is_err());
        assert!(
            c.begin_upload_part(obj.object_id, MAX_PART_INDEX + 1, FAR)
                .await
                .is_err()
        );
        assert!(matches!(
            c.new_multipart_upload(p, "m", SpaceId(1))
                .await
                .unwrap_err(),
            Error::AlreadyExists { .. }
        ));
    }

    #[tokio::test]
    async fn abandoned_uploads_are_swept_with_their_parts() {
        let (c, p) = setup().await;
        let obj = c.new_multipart_upload(p, "old", SpaceId(1)).await.unwrap();
        let up = c.begin_upload_part(obj.object_id, 1, FAR).await.unwrap();
        c.commit_upload(&up, 1, &h('e')).await.unwrap();
        let fresh = c
            .new_multipart_upload(p, "fresh", SpaceId(1))
            .await
            .unwrap();
        let now = common::time::now_ms();
        assert_eq!(c.sweep_multipart(now, 3_600_000).await.unwrap(), 0);
        // Pretend an hour passed for both: both are swept.
        assert_eq!(
            c.sweep_multipart(now + 3_700_000, 3_600_000).await.unwrap(),
            2
        );
        assert!(c.get_object(obj.object_id).await.unwrap().is_none());
        assert!(c.get_object(fresh.object_id).await.unwrap().is_none());
        assert_eq!(keys_under(&c, "v1/shard-ref/").await, 0);
        assert_eq!(keys_under(&c, "v1/mpart/").await, 0);
    }
}
