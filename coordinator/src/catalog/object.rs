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
                        // Made by an upload with its id that may still be retried: its
                        // marker, so that the retry answers "deleted since".
                        if obj.row.retry_until_ms >= common::time::now_ms() {
                            let up = deleted_upload_marker(&obj.row);
                            then.push(Op::Put(marker_key(&up), encode(&up)));
                        }
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
            // From the object sequence: a new object this upload creates takes its id.
            upload_id: UploadId(self.ids.next("object").await?),
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
            object_seq: true,
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

    /// The object a committed upload produced (for a retried commit): the one its marker
    /// names, else (an upload of the object sequence that created its object) the object
    /// with the upload's id.
    async fn committed_object(&self, up: &UploadRow) -> Result<ObjectRow> {
        let id = up.upload_id;
        let oid = match self.get_row::<UploadRow>(&marker_key(up)).await? {
            Some(marker) => marker
                .row
                .object_id
                .ok_or_else(|| not_found(format!("object of upload {id}")))?,
            None if up.object_seq => ObjectId(id.0),
            None => return Err(not_found(format!("upload {id}"))),
        };
        self.get_object(oid)
            .await?
            .map(|o| o.row)
            .ok_or_else(|| not_found(format!("object {oid} of upload {id} (deleted since)")))
    }

    /// The commit-specific conditions every commit transaction starts with, and the
    /// [`COMMIT_GETS`] gets its `otherwise` branch starts with (read back by
    /// [`Catalog::failed_commit`]): the upload's marker is absent, the shard is not being
    /// collected, and, for an upload of the object sequence, no object has the upload's id
    /// yet (this upload has not created its object already). The third get is made for
    /// every upload; it counts only for those of the object sequence (an older upload's id
    /// may be another object's).
    pub(crate) fn commit_guards(u: &UploadRow, sha256: &str) -> (Vec<Compare>, Vec<Op>) {
        let created = keys::object_id(ObjectId(u.upload_id.0));
        let mut when = vec![
            Compare::Absent(marker_key(u)),
            Compare::Absent(keys::shard_gc(u.space_id, sha256)),
        ];
        if u.object_seq {
            when.push(Compare::Absent(created.clone()));
        }
        let gets = vec![
            Op::Get(marker_key(u)),
            Op::Get(keys::shard_gc(u.space_id, sha256)),
            Op::Get(created),
        ];
        (when, gets)
    }

    /// Why a commit transaction of `u` failed, from the gets of [`Catalog::commit_guards`]:
    /// the upload was already committed (a retry: its marker, or the object it created),
    /// or the shard is being collected.
    pub(crate) fn failed_commit(
        u: &UploadRow,
        gets: &[Option<meta::KeyValue>],
    ) -> Result<Option<Attempt>> {
        let created = u.object_seq && matches!(gets.get(2), Some(Some(_)));
        if matches!(gets.first(), Some(Some(_))) || created {
            return Ok(Some(Attempt::AlreadyCommitted));
        }
        if matches!(gets.get(1), Some(Some(_))) {
            return Err(Error::ShardCollecting);
        }
        Ok(None)
    }

    /// The id of the object a commit of `u` creates when its path is new: the upload's own
    /// id for an upload of the object sequence, else a fresh one.
    pub(crate) async fn new_object_id(&self, u: &UploadRow) -> Result<ObjectId> {
        Ok(if u.object_seq {
            ObjectId(u.upload_id.0)
        } else {
            ObjectId(self.ids.next("object").await?)
        })
    }

    /// One optimistic attempt; a single transaction when the path is new.
    async fn try_commit_object(&self, u: &UploadRow, size: u64, sha256: &str) -> Result<Attempt> {
        // Usually the path is new: try that without reading first, then with what the
        // failed attempt read back.
        let mut existing: Option<Versioned<ObjectRow>> = None;
        for _ in 0..2 {
            let object_id = match &existing {
                Some(o) => o.row.object_id,
                None => self.new_object_id(u).await?,
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
            if let Some(a) = Self::failed_commit(u, &res.gets)? {
                return Ok(a);
            }
            match res.gets.get(COMMIT_GETS) {
                Some(Some(kv)) if kv.mod_rev.0 == u.package_rev => {}
                _ => {
                    self.forget_package(u.package_id);
                    return Err(not_found(format!("package {}", u.package_id)));
                }
            }
            existing = match res.gets.get(COMMIT_GETS + 1) {
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
        let mut markers = self.scan(keys::upload_prefix()).await?;
        markers.extend(self.scan(keys::upload_o_prefix()).await?);
        for kv in markers {
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
        retry_until_ms: match existing {
            Some(o) => o.row.retry_until_ms,
            None if u.object_seq => u.expires_at_ms,
            None => 0,
        },
    };
    let mut then = vec![Op::Put(obj_key, encode(&row))];
    // A new object of an upload of the object sequence has the upload's id: its id index
    // (written below) is the marker.
    if existing.is_some() || !u.object_seq {
        then.push(Op::Put(marker_key(u), encode(&committed(u, object_id))));
    }
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

/// Where the commit marker of upload `u` lives (`keys.rs`: `upload-o/` for ids of the object
/// sequence, `upload/` for the older ones).
pub(crate) fn marker_key(u: &UploadRow) -> Vec<u8> {
    if u.object_seq {
        keys::upload_o(u.upload_id)
    } else {
        keys::upload(u.upload_id)
    }
}

/// The commit marker of the upload that created `o` (an object with
/// [`ObjectRow::retry_until_ms`]), written when `o` is deleted before a retry of that
/// upload's commit is ruled out; swept once `retry_until_ms` has passed.
fn deleted_upload_marker(o: &ObjectRow) -> UploadRow {
    UploadRow {
        v: VERSION,
        upload_id: UploadId(o.object_id.0),
        package_id: o.package_id,
        package_rev: 0,
        path: o.path.clone(),
        space_id: o.space_id,
        target: UploadTarget::Object,
        state: UploadState::Committed,
        object_id: Some(o.object_id),
        create_time_ms: o.create_time_ms,
        expires_at_ms: o.retry_until_ms,
        blocks: None,
        policy_chosen: false,
        object_seq: true,
    }
}

/// How many gets [`Catalog::commit_guards`] puts first in a commit's `otherwise` branch.
pub(crate) const COMMIT_GETS: usize = 3;

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
        // Commit markers are swept once their upload's retry window has passed: here the
        // one a new version writes, and the one deleting an object made by an upload
        // leaves.
        let window = common::time::now_ms() + 60_000;
        let first = c.begin_upload(p, "y", SpaceId(1), window).await.unwrap();
        let o = c.commit_upload(&first, 1, &hash('c')).await.unwrap();
        let second = c.begin_upload(p, "y", SpaceId(1), window).await.unwrap();
        c.commit_upload(&second, 2, &hash('d')).await.unwrap();
        c.delete_objects(&[o.object_id]).await.unwrap();
        assert_eq!(c.scan(keys::upload_o_prefix()).await.unwrap().len(), 2);
        assert_eq!(c.sweep_uploads(common::time::now_ms()).await.unwrap(), 0);
        assert_eq!(
            c.sweep_uploads(common::time::now_ms() + 120_000)
                .await
                .unwrap(),
            2
        );
        assert!(c.scan(keys::upload_o_prefix()).await.unwrap().is_empty());
    }

    /// Every key under the two commit-marker prefixes.
    async fn markers(c: &Catalog) -> usize {
        c.scan(keys::upload_prefix()).await.unwrap().len()
            + c.scan(keys::upload_o_prefix()).await.unwrap().len()
    }

    #[tokio::test]
    async fn a_new_object_takes_its_uploads_id_and_needs_no_marker() {
        let (c, p) = setup().await;
        let up = c.begin_upload(p, "a", SpaceId(1), FAR).await.unwrap();
        assert!(up.object_seq);
        let o = c.commit_upload(&up, 3, &hash('a')).await.unwrap();
        assert_eq!(o.object_id.0, up.upload_id.0);
        assert_eq!(o.retry_until_ms, FAR);
        assert_eq!(markers(&c).await, 0, "the object's id index is the marker");
        // A retry answers the same object and writes nothing.
        assert_eq!(c.commit_upload(&up, 3, &hash('a')).await.unwrap(), o);
        assert_eq!(
            c.list_objects(p, "", "", 0).await.unwrap().0,
            vec![o.clone()]
        );
        // Ids of uploads and objects never meet: the next upload's id is fresh.
        let next = c.begin_upload(p, "b", SpaceId(1), FAR).await.unwrap();
        assert!(next.upload_id.0 > o.object_id.0);
    }

    #[tokio::test]
    async fn a_retry_after_the_object_was_deleted_does_not_create_it_again() {
        let (c, p) = setup().await;
        let up = c.begin_upload(p, "gone", SpaceId(1), FAR).await.unwrap();
        let o = c.commit_upload(&up, 3, &hash('a')).await.unwrap();
        c.delete_objects(&[o.object_id]).await.unwrap();
        let err = c.commit_upload(&up, 3, &hash('a')).await.unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("deleted since"), "{err}");
        assert!(c.list_objects(p, "", "", 0).await.unwrap().0.is_empty());
        // An object whose retry window has passed is deleted without a marker.
        let old = c
            .begin_upload(p, "old", SpaceId(1), common::time::now_ms() + 60_000)
            .await
            .unwrap();
        let mut o = c.commit_upload(&old, 1, &hash('b')).await.unwrap();
        o.retry_until_ms = 1;
        c.meta
            .put(keys::object(p, "old"), encode(&o))
            .await
            .unwrap();
        let before = markers(&c).await;
        c.delete_objects(&[o.object_id]).await.unwrap();
        assert_eq!(markers(&c).await, before);
    }

    #[tokio::test]
    async fn a_retry_after_another_upload_replaced_the_object_overwrites_nothing() {
        let (c, p) = setup().await;
        let a = c.begin_upload(p, "p", SpaceId(1), FAR).await.unwrap();
        let first = c.commit_upload(&a, 1, &hash('a')).await.unwrap();
        let b = c.begin_upload(p, "p", SpaceId(1), FAR).await.unwrap();
        let second = c.commit_upload(&b, 2, &hash('b')).await.unwrap();
        assert_eq!(
            second.object_id, first.object_id,
            "a new version keeps the id"
        );
        assert_eq!(second.retry_until_ms, first.retry_until_ms);
        // The retry of the first commit answers the object as it is now.
        assert_eq!(c.commit_upload(&a, 1, &hash('a')).await.unwrap(), second);
        let (listed, _) = c.list_objects(p, "", "", 0).await.unwrap();
        assert_eq!(listed, vec![second.clone()]);
        // Moved away, the object still answers the retry, and nothing appears at "p".
        let moved = c.move_object(first.object_id, p, "q").await.unwrap();
        assert_eq!(c.commit_upload(&a, 1, &hash('a')).await.unwrap(), moved);
        let (listed, _) = c.list_objects(p, "", "", 0).await.unwrap();
        assert_eq!(listed, vec![moved]);
    }

    #[tokio::test]
    async fn tokens_of_older_coordinators_commit_with_their_own_marker() {
        let (c, p) = setup().await;
        // An upload id of the old `upload` sequence, as an older coordinator signed it.
        let mut up = c.begin_upload(p, "old", SpaceId(1), FAR).await.unwrap();
        up.object_seq = false;
        up.upload_id = UploadId(1);
        let o = c.commit_upload(&up, 1, &hash('a')).await.unwrap();
        assert_eq!(o.retry_until_ms, 0);
        assert!(
            c.meta
                .get(&keys::upload(UploadId(1)))
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(c.commit_upload(&up, 1, &hash('a')).await.unwrap(), o);
        c.delete_objects(&[o.object_id]).await.unwrap();
        let err = c.commit_upload(&up, 1, &hash('a')).await.unwrap_err();
        assert!(err.to_string().contains("deleted since"), "{err}");
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
