//! Objects and the two-phase upload that creates them.
//!
//! `begin_upload` writes nothing: it validates, and the caller gets the pending upload back
//! as a signed commit token. The bytes go to an agent. `commit_upload` publishes the object
//! in one transaction that also writes the upload's commit marker (`v1/upload/{id}`), so a
//! retried commit returns the same object. Uploading to an existing path
//! keeps its objectID and createTime.

use common::shard_hash::is_sha256_hex;
use common::{ObjectId, PackageId, SpaceId, UploadId};
use meta::{Compare, Op, Txn};

use super::rows::{
    NONE, ObjectIdRow, ObjectRow, PackageRow, UploadRow, UploadState, UploadTarget, VERSION,
};
use super::{Catalog, MAX_ATTEMPTS, Versioned, decode, encode, keys};
use crate::error::{Error, Result, bad, not_found};

/// Largest page `list_objects` returns.
pub const MAX_LIST_LIMIT: usize = 1000;

impl Catalog {
    /// One page of the objects of `package` whose path starts with `prefix`, after
    /// `start_after` (exclusive), in path order.
    pub async fn list_objects(
        &self,
        package: PackageId,
        prefix: &str,
        start_after: &str,
        limit: usize,
    ) -> Result<(Vec<ObjectRow>, bool)> {
        self.get_package(package).await?;
        let limit = if limit == 0 {
            MAX_LIST_LIMIT
        } else {
            limit.min(MAX_LIST_LIMIT)
        };
        let base = keys::object(package, prefix);
        let end = meta::prefix_end(&base);
        let start = if start_after.is_empty() || start_after.as_bytes() < prefix.as_bytes() {
            base
        } else {
            let mut k = keys::object(package, start_after);
            k.push(0);
            k
        };
        let page = self
            .meta
            .range(meta::Range {
                start,
                end,
                limit,
                keys_only: false,
            })
            .await?;
        let rows = page
            .kvs
            .iter()
            .map(decode)
            .collect::<Result<Vec<ObjectRow>>>()?;
        Ok((rows, page.more))
    }

    /// The object with this id, if any (and if its package still exists).
    pub async fn get_object(&self, id: ObjectId) -> Result<Option<Versioned<ObjectRow>>> {
        let Some(idx) = self.get_row::<ObjectIdRow>(&keys::object_id(id)).await? else {
            return Ok(None);
        };
        if self
            .get_row::<PackageRow>(&keys::package(idx.row.package_id))
            .await?
            .is_none()
        {
            return Ok(None);
        }
        let obj = self
            .get_row::<ObjectRow>(&keys::object(idx.row.package_id, &idx.row.path))
            .await?;
        Ok(obj.filter(|o| o.row.object_id == id))
    }

    /// The object at `path` in `package`; NotFound names whichever is missing.
    pub async fn get_object_by_path(&self, package: PackageId, path: &str) -> Result<ObjectRow> {
        self.get_package(package).await?;
        self.get_row::<ObjectRow>(&keys::object(package, path))
            .await?
            .map(|o| o.row)
            .ok_or_else(|| not_found(format!("object {path:?} in package {package}")))
    }

    /// Delete objects by id; ids that do not exist are skipped. The shard references go in
    /// the same transaction; parts of unfinished multipart uploads are swept afterwards.
    pub async fn delete_objects(&self, ids: &[ObjectId]) -> Result<()> {
        for &id in ids {
            let mut done = false;
            for _ in 0..MAX_ATTEMPTS {
                let Some(idx) = self.get_row::<ObjectIdRow>(&keys::object_id(id)).await? else {
                    done = true;
                    break;
                };
                let obj_key = keys::object(idx.row.package_id, &idx.row.path);
                let obj = self.get_row::<ObjectRow>(&obj_key).await?;
                let mut when = vec![Compare::ModRev(keys::object_id(id), idx.rev)];
                let mut then = vec![Op::Delete(keys::object_id(id))];
                match obj {
                    Some(obj) if obj.row.object_id == id => {
                        when.push(Compare::ModRev(obj_key.clone(), obj.rev));
                        then.push(Op::Delete(obj_key));
                        if !obj.row.is_multipart() {
                            then.push(Op::Delete(keys::object_ref(
                                obj.row.space_id,
                                &obj.row.sha256,
                                id,
                            )));
                        }
                        // rep/ec: the blocks key and one reference per block (blocks.rs).
                        let (w, ops) = self.release_blocks(&obj.row).await?;
                        when.extend(w);
                        then.extend(ops);
                    }
                    // A stale index entry (the row is gone or belongs to another id).
                    Some(other) => when.push(Compare::ModRev(obj_key, other.rev)),
                    None => when.push(Compare::Absent(obj_key)),
                }
                if self
                    .meta
                    .txn(Txn {
                        when,
                        then,
                        otherwise: vec![],
                    })
                    .await?
                    .succeeded
                {
                    done = true;
                    break;
                }
            }
            if !done {
                return Err(Error::Contention {
                    what: format!("object {id}"),
                    attempts: MAX_ATTEMPTS,
                });
            }
        }
        Ok(())
    }

    /// Validate an upload of `path` into `package`, to be stored in `space`. Nothing is
    /// written: the returned row travels as the caller's commit token.
    pub async fn begin_upload(
        &self,
        package: PackageId,
        path: &str,
        space: SpaceId,
        expires_at_ms: i64,
    ) -> Result<UploadRow> {
        common::path::validate_object_path(path).map_err(bad)?;
        let mut rows = self
            .reserve_uploads(package, path, space, 1, expires_at_ms)
            .await?;
        rows.pop().ok_or_else(|| bad("no upload reserved"))
    }

    /// `count` object uploads of `path` ("" for a write grant) into `package`, stored in
    /// `space`, each with the package's current revision (compared at commit). NotFound
    /// when the package does not exist; nothing is written.
    pub(crate) async fn reserve_uploads(
        &self,
        package: PackageId,
        path: &str,
        space: SpaceId,
        count: usize,
        expires_at_ms: i64,
    ) -> Result<Vec<UploadRow>> {
        let rev = self.package_rev(package).await?;
        let mut rows = Vec::with_capacity(count);
        for _ in 0..count {
            let mut row = self
                .new_upload(package, path, space, UploadTarget::Object, expires_at_ms)
                .await?;
            row.package_rev = rev.0;
            rows.push(row);
        }
        Ok(rows)
    }

    pub(crate) async fn new_upload(
        &self,
        package: PackageId,
        path: &str,
        space: SpaceId,
        target: UploadTarget,
        expires_at_ms: i64,
    ) -> Result<UploadRow> {
        Ok(UploadRow {
            v: VERSION,
            upload_id: UploadId(self.ids.next("upload").await?),
            package_id: package,
            package_rev: 0,
            path: path.to_owned(),
            space_id: space,
            target,
            state: UploadState::Pending,
            object_id: None,
            create_time_ms: common::time::now_ms(),
            expires_at_ms,
            blocks: None,
            policy_chosen: false,
        })
    }

    /// Publish a pending upload (as returned by a begin call): the object at its path, a
    /// part, or a completed multipart object. Idempotent: a retried commit returns the
    /// object the first one produced.
    pub async fn commit_upload(
        &self,
        up: &UploadRow,
        size: u64,
        sha256: &str,
    ) -> Result<ObjectRow> {
        if !is_sha256_hex(sha256) {
            return Err(bad(format!(
                "sha256 {sha256:?} is not 64 lower-case hex digits"
            )));
        }
        if up.expires_at_ms < common::time::now_ms() {
            return Err(not_found(format!("upload {} (expired)", up.upload_id)));
        }
        for _ in 0..MAX_ATTEMPTS {
            let attempt = match up.target {
                UploadTarget::Object => self.try_commit_object(up, size, sha256).await?,
                UploadTarget::Part { object_id, index } => {
                    self.try_commit_part(up, object_id, index, size, sha256)
                        .await?
                }
                UploadTarget::Complete { object_id } => {
                    self.try_commit_complete(up, object_id, size, sha256)
                        .await?
                }
            };
            match attempt {
                Attempt::Done(row) => {
                    if let UploadTarget::Complete { object_id } = up.target {
                        self.purge_parts(object_id).await?;
                    }
                    return Ok(row);
                }
                Attempt::AlreadyCommitted => return self.committed_object(up).await,
                Attempt::Retry => {}
            }
        }
        Err(Error::Contention {
            what: format!("upload {}", up.upload_id),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// The object a committed upload produced (for a retried commit).
    async fn committed_object(&self, up: &UploadRow) -> Result<ObjectRow> {
        let id = up.upload_id;
        let marker = self
            .get_row::<UploadRow>(&keys::upload(id))
            .await?
            .ok_or_else(|| not_found(format!("upload {id}")))?;
        let oid = marker
            .row
            .object_id
            .ok_or_else(|| not_found(format!("object of upload {id}")))?;
        self.get_object(oid)
            .await?
            .map(|o| o.row)
            .ok_or_else(|| not_found(format!("object {oid} of upload {id} (deleted since)")))
    }

    /// The commit-specific conditions every commit transaction starts with, and the gets
    /// its `otherwise` branch starts with (read back by [`Catalog::failed_commit`]).
    pub(crate) fn commit_guards(u: &UploadRow, sha256: &str) -> (Vec<Compare>, Vec<Op>) {
        (
            vec![
                Compare::Absent(keys::upload(u.upload_id)),
                Compare::Absent(keys::shard_gc(u.space_id, sha256)),
            ],
            vec![
                Op::Get(keys::upload(u.upload_id)),
                Op::Get(keys::shard_gc(u.space_id, sha256)),
            ],
        )
    }

    /// Why a commit transaction failed, from the gets of [`Catalog::commit_guards`]: the
    /// upload was already committed (a retry), or the shard is being collected.
    pub(crate) fn failed_commit(gets: &[Option<meta::KeyValue>]) -> Result<Option<Attempt>> {
        if matches!(gets.first(), Some(Some(_))) {
            return Ok(Some(Attempt::AlreadyCommitted));
        }
        if matches!(gets.get(1), Some(Some(_))) {
            return Err(Error::ShardCollecting);
        }
        Ok(None)
    }

    /// One optimistic attempt; a single transaction when the path is new.
    async fn try_commit_object(&self, u: &UploadRow, size: u64, sha256: &str) -> Result<Attempt> {
        // Usually the path is new: try that without reading first, then with what the
        // failed attempt read back.
        let mut existing: Option<Versioned<ObjectRow>> = None;
        for _ in 0..2 {
            let object_id = match &existing {
                Some(o) => o.row.object_id,
                None => ObjectId(self.ids.next("object").await?),
            };
            let (row, mut when, mut then) =
                object_commit(u, size, sha256, existing.as_ref(), object_id);
            // Replacing a rep/ec object: drop its blocks (blocks.rs).
            if let Some(o) = &existing {
                let (w, ops) = self.release_blocks(&o.row).await?;
                when.extend(w);
                then.extend(ops);
            }
            let (_, mut otherwise) = Self::commit_guards(u, sha256);
            otherwise.push(Op::Get(keys::package(u.package_id)));
            otherwise.push(Op::Get(keys::object(u.package_id, &u.path)));
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
            if let Some(a) = Self::failed_commit(&res.gets)? {
                return Ok(a);
            }
            match res.gets.get(2) {
                Some(Some(kv)) if kv.mod_rev.0 == u.package_rev => {}
                _ => {
                    self.forget_package(u.package_id);
                    return Err(not_found(format!("package {}", u.package_id)));
                }
            }
            existing = match res.gets.get(3) {
                Some(Some(kv)) => Some(Versioned {
                    row: decode(kv)?,
                    rev: kv.mod_rev,
                }),
                _ => None,
            };
        }
        Ok(Attempt::Retry)
    }

    /// Delete commit markers whose retry window (the upload's expiry) has passed. Returns
    /// how many were removed.
    pub async fn sweep_uploads(&self, now_ms: i64) -> Result<usize> {
        let mut n = 0;
        for kv in self.scan(keys::upload_prefix()).await? {
            let row: UploadRow = decode(&kv)?;
            if row.expires_at_ms < now_ms {
                let res = self
                    .meta
                    .txn(Txn {
                        when: vec![Compare::ModRev(kv.key.clone(), kv.mod_rev)],
                        then: vec![Op::Delete(kv.key.clone())],
                        otherwise: vec![],
                    })
                    .await?;
                n += usize::from(res.succeeded);
            }
        }
        Ok(n)
    }
}

/// The row, conditions and writes of committing upload `u` as object `object_id` at its
/// path: a new object when `existing` is `None` (the path must still be free), else a new
/// version of `existing` (which must be unchanged). The conditions start with
/// [`Catalog::commit_guards`] and the package's revision.
pub(crate) fn object_commit(
    u: &UploadRow,
    size: u64,
    sha256: &str,
    existing: Option<&Versioned<ObjectRow>>,
    object_id: ObjectId,
) -> (ObjectRow, Vec<Compare>, Vec<Op>) {
    let now = common::time::now_ms();
    let obj_key = keys::object(u.package_id, &u.path);
    let (mut when, _) = Catalog::commit_guards(u, sha256);
    when.push(Compare::ModRev(
        keys::package(u.package_id),
        meta::Revision(u.package_rev),
    ));
    let create_time_ms = match existing {
        Some(o) => {
            when.push(Compare::ModRev(obj_key.clone(), o.rev));
            o.row.create_time_ms
        }
        None => {
            when.push(Compare::Absent(obj_key.clone()));
            now
        }
    };
    let row = ObjectRow {
        v: VERSION,
        object_id,
        package_id: u.package_id,
        path: u.path.clone(),
        size,
        sha256: sha256.to_owned(),
        space_id: u.space_id,
        redundancy: NONE.to_owned(),
        create_time_ms,
        update_time_ms: now,
    };
    let mut then = vec![
        Op::Put(obj_key, encode(&row)),
        Op::Put(keys::upload(u.upload_id), encode(&committed(u, object_id))),
    ];
    let new_ref = keys::object_ref(u.space_id, sha256, object_id);
    let old_ref = existing
        .filter(|o| !o.row.is_multipart())
        .map(|o| keys::object_ref(o.row.space_id, &o.row.sha256, object_id));
    if old_ref.as_ref() != Some(&new_ref) {
        then.push(Op::Put(new_ref, Vec::new()));
        if let Some(old) = old_ref {
            then.push(Op::Delete(old));
        }
    }
    if existing.is_none() {
        then.push(Op::Put(
            keys::object_id(object_id),
            encode(&ObjectIdRow {
                package_id: row.package_id,
                path: row.path.clone(),
            }),
        ));
    }
    (row, when, then)
}

/// How one optimistic commit attempt ended.
pub(crate) enum Attempt {
    Done(ObjectRow),
    /// The upload's commit marker exists: this is a retry of a successful commit.
    AlreadyCommitted,
    /// A compare failed because of a concurrent change; try again.
    Retry,
}

/// The upload row after its commit produced `object_id`.
pub(crate) fn committed(u: &UploadRow, object_id: ObjectId) -> UploadRow {
    UploadRow {
        state: UploadState::Committed,
        object_id: Some(object_id),
        ..u.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::testing::{FAR, hash, setup};

    #[tokio::test]
    async fn commit_is_idempotent_per_upload() {
        let (c, p) = setup().await;
        let up = c.begin_upload(p, "a/b", SpaceId(1), FAR).await.unwrap();
        let first = c.commit_upload(&up, 5, &hash('a')).await.unwrap();
        let again = c.commit_upload(&up, 5, &hash('a')).await.unwrap();
        assert_eq!(first, again);
        assert_eq!(c.list_objects(p, "", "", 0).await.unwrap().0.len(), 1);
    }

    #[tokio::test]
    async fn commit_into_a_deleted_package_publishes_nothing() {
        let (c, p) = setup().await;
        let up = c.begin_upload(p, "x", SpaceId(1), FAR).await.unwrap();
        c.delete_package(p).await.unwrap();
        let err = c.commit_upload(&up, 1, &hash('b')).await.unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        let objects = c
            .meta
            .range(meta::Range::prefix(keys::object_prefix(p)))
            .await
            .unwrap();
        assert!(objects.kvs.is_empty());
    }

    #[tokio::test]
    async fn expired_upload_cannot_commit() {
        let (c, p) = setup().await;
        let up = c.begin_upload(p, "x", SpaceId(1), 1).await.unwrap();
        assert!(c.commit_upload(&up, 1, &hash('c')).await.is_err());
        assert!(c.list_objects(p, "", "", 0).await.unwrap().0.is_empty());
        // Commit markers are swept once their upload's retry window has passed.
        let later = c
            .begin_upload(p, "y", SpaceId(1), common::time::now_ms() + 60_000)
            .await
            .unwrap();
        c.commit_upload(&later, 1, &hash('c')).await.unwrap();
        assert_eq!(c.sweep_uploads(common::time::now_ms()).await.unwrap(), 0);
        assert_eq!(
            c.sweep_uploads(common::time::now_ms() + 120_000)
                .await
                .unwrap(),
            1
        );
    }

    #[tokio::test]
    async fn concurrent_commits_to_one_path_leave_one_object() {
        let (c, p) = setup().await;
        let mut uploads = Vec::new();
        for _ in 0..8 {
            uploads.push(c.begin_upload(p, "same", SpaceId(1), FAR).await.unwrap());
        }
        let tasks: Vec<_> = uploads
            .into_iter()
            .enumerate()
            .map(|(i, up)| {
                let c = c.clone();
                tokio::spawn(async move {
                    c.commit_upload(&up, i as u64, &hash(char::from(b'0' + i as u8)))
                        .await
                })
            })
            .collect();
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap().unwrap().object_id);
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "every commit kept the same object id");
        let (rows, _) = c.list_objects(p, "", "", 0).await.unwrap();
        assert_eq!(rows.len(), 1);
        let idx = c
            .meta
            .range(meta::Range::prefix(b"v1/object-id/".to_vec()))
            .await
            .unwrap();
        assert_eq!(idx.kvs.len(), 1);
    }

    #[tokio::test]
    async fn listing_pages_by_prefix_and_start_after() {
        let (c, p) = setup().await;
        for path in ["a/1", "a/2", "a/3", "b/1"] {
            let up = c.begin_upload(p, path, SpaceId(1), FAR).await.unwrap();
            c.commit_upload(&up, 0, &hash('d')).await.unwrap();
        }
        let (rows, more) = c.list_objects(p, "a/", "", 2).await.unwrap();
        assert_eq!(
            rows.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
            ["a/1", "a/2"]
        );
        assert!(more);
        let (rows, more) = c.list_objects(p, "a/", "a/2", 2).await.unwrap();
        assert_eq!(
            rows.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
            ["a/3"]
        );
        assert!(!more);
        assert!(c.list_objects(PackageId(999), "", "", 0).await.is_err());
    }
}
