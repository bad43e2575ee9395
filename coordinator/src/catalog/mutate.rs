//! Move and clone: metadata-only operations on objects. Neither copies bytes; a clone is a
//! new object with its own shard reference to the source's shard.

use common::{ObjectId, PackageId};
use meta::{Compare, Op, Txn};

use super::rows::{ObjectIdRow, ObjectRow, VERSION};
use super::{Catalog, MAX_ATTEMPTS, encode, keys};
use crate::error::{Error, Result, bad, exists, not_found};

impl Catalog {
    /// Move object `id` to `path` in `package`. Keeps the object's id, createTime and
    /// updateTime (the content does not change). A taken target path is refused.
    pub async fn move_object(
        &self,
        id: ObjectId,
        package: PackageId,
        path: &str,
    ) -> Result<ObjectRow> {
        common::path::validate_object_path(path).map_err(bad)?;
        for _ in 0..MAX_ATTEMPTS {
            let src = self
                .get_object(id)
                .await?
                .ok_or_else(|| not_found(format!("object {id}")))?;
            if src.row.package_id == package && src.row.path == path {
                return Ok(src.row);
            }
            let dst_pkg = self.get_package(package).await?;
            let src_key = keys::object(src.row.package_id, &src.row.path);
            let dst_key = keys::object(package, path);
            let row = ObjectRow {
                package_id: package,
                path: path.to_owned(),
                ..src.row.clone()
            };
            let res = self
                .meta
                .txn(Txn {
                    when: vec![
                        Compare::ModRev(src_key.clone(), src.rev),
                        Compare::ModRev(keys::package(package), dst_pkg.rev),
                        Compare::Absent(dst_key.clone()),
                    ],
                    then: vec![
                        Op::Delete(src_key),
                        Op::Put(dst_key.clone(), encode(&row)),
                        Op::Put(
                            keys::object_id(id),
                            encode(&ObjectIdRow {
                                package_id: package,
                                path: path.to_owned(),
                            }),
                        ),
                    ],
                    otherwise: vec![Op::Get(dst_key)],
                })
                .await?;
            if res.succeeded {
                return Ok(row);
            }
            if matches!(res.gets.first(), Some(Some(_))) {
                return Err(exists(format!("target path {path:?} in package {package}")));
            }
        }
        Err(Error::Contention {
            what: format!("object {id}"),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// A new object at `path` in `package` with the content of object `id`, sharing its
    /// shard. New id and times. A taken target path is refused.
    pub async fn clone_object(
        &self,
        id: ObjectId,
        package: PackageId,
        path: &str,
    ) -> Result<ObjectRow> {
        common::path::validate_object_path(path).map_err(bad)?;
        for _ in 0..MAX_ATTEMPTS {
            let src = self
                .get_object(id)
                .await?
                .ok_or_else(|| not_found(format!("object {id}")))?;
            if src.row.is_multipart() {
                return Err(bad(format!(
                    "object {id} is an unfinished multipart upload"
                )));
            }
            let dst_pkg = self.get_package(package).await?;
            let src_key = keys::object(src.row.package_id, &src.row.path);
            let dst_key = keys::object(package, path);
            let new_id = ObjectId(self.ids.next("object").await?);
            let now = common::time::now_ms();
            let row = ObjectRow {
                v: VERSION,
                object_id: new_id,
                package_id: package,
                path: path.to_owned(),
                create_time_ms: now,
                update_time_ms: now,
                // A new object, made by no upload.
                retry_until_ms: 0,
                ..src.row.clone()
            };
            let mut when = vec![
                // The source still holds the same shard, so it exists now.
                Compare::ModRev(src_key, src.rev),
                Compare::ModRev(keys::package(package), dst_pkg.rev),
                Compare::Absent(dst_key.clone()),
            ];
            let mut then = vec![
                Op::Put(dst_key.clone(), encode(&row)),
                Op::Put(
                    keys::object_id(new_id),
                    encode(&ObjectIdRow {
                        package_id: package,
                        path: path.to_owned(),
                    }),
                ),
            ];
            match self.share_blocks(&src.row, new_id).await? {
                // rep/ec: the clone shares every block (blocks.rs).
                Some((w, ops)) => {
                    when.extend(w);
                    then.extend(ops);
                }
                None => {
                    when.push(Compare::Absent(keys::shard_gc(row.space_id, &row.sha256)));
                    then.push(Op::Put(
                        keys::object_ref(row.space_id, &row.sha256, new_id),
                        Vec::new(),
                    ));
                }
            }
            let res = self
                .meta
                .txn(Txn {
                    when,
                    then,
                    otherwise: vec![Op::Get(dst_key)],
                })
                .await?;
            if res.succeeded {
                return Ok(row);
            }
            if matches!(res.gets.first(), Some(Some(_))) {
                return Err(exists(format!("target path {path:?} in package {package}")));
            }
        }
        Err(Error::Contention {
            what: format!("object {id}"),
            attempts: MAX_ATTEMPTS,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use common::{SpaceId, UserId};

    use super::*;

    async fn setup() -> (Catalog, PackageId, PackageId, ObjectId) {
        let c = Catalog::new(Arc::new(meta::MemoryStore::new()));
        let b = c.create_bucket(UserId(1), "b").await.unwrap();
        let p1 = c
            .create_package(b.bucket_id, "p1")
            .await
            .unwrap()
            .package_id;
        let p2 = c
            .create_package(b.bucket_id, "p2")
            .await
            .unwrap()
            .package_id;
        let up = c
            .begin_upload(p1, "src", SpaceId(1), i64::MAX)
            .await
            .unwrap();
        let o = c.commit_upload(&up, 3, &"b".repeat(64)).await.unwrap();
        (c, p1, p2, o.object_id)
    }

    async fn refs(c: &Catalog) -> usize {
        c.meta
            .range(meta::Range::prefix(b"v1/shard-ref/".to_vec()))
            .await
            .unwrap()
            .kvs
            .len()
    }

    #[tokio::test]
    async fn move_keeps_identity_and_frees_the_old_path() {
        let (c, p1, p2, id) = setup().await;
        let before = c.get_object(id).await.unwrap().unwrap().row;
        let moved = c.move_object(id, p2, "dir/dst").await.unwrap();
        assert_eq!(
            (moved.object_id, moved.create_time_ms, moved.update_time_ms),
            (id, before.create_time_ms, before.update_time_ms)
        );
        assert!(c.get_object_by_path(p1, "src").await.is_err());
        assert_eq!(
            c.get_object_by_path(p2, "dir/dst").await.unwrap().object_id,
            id
        );
        assert_eq!(c.get_object(id).await.unwrap().unwrap().row.path, "dir/dst");
        assert_eq!(refs(&c).await, 1);
    }

    #[tokio::test]
    async fn move_onto_a_taken_path_or_missing_package_fails() {
        let (c, p1, _p2, id) = setup().await;
        let up = c
            .begin_upload(p1, "taken", SpaceId(1), i64::MAX)
            .await
            .unwrap();
        c.commit_upload(&up, 1, &"c".repeat(64)).await.unwrap();
        assert!(matches!(
            c.move_object(id, p1, "taken").await.unwrap_err(),
            Error::AlreadyExists { .. }
        ));
        assert!(matches!(
            c.move_object(id, PackageId(99), "x").await.unwrap_err(),
            Error::NotFound { .. }
        ));
        assert!(matches!(
            c.move_object(ObjectId(99), p1, "x").await.unwrap_err(),
            Error::NotFound { .. }
        ));
        assert!(matches!(
            c.move_object(id, p1, "../x").await.unwrap_err(),
            Error::InvalidArgument { .. }
        ));
        assert_eq!(c.get_object(id).await.unwrap().unwrap().row.path, "src");
    }

    #[tokio::test]
    async fn clone_shares_the_shard_and_outlives_the_source() {
        let (c, _p1, p2, id) = setup().await;
        let clone = c.clone_object(id, p2, "copy").await.unwrap();
        assert_ne!(clone.object_id, id);
        assert_eq!(clone.sha256, "b".repeat(64));
        assert_eq!(refs(&c).await, 2);
        c.delete_objects(&[id]).await.unwrap();
        assert_eq!(refs(&c).await, 1, "the clone still references the shard");
        assert!(c.get_object(clone.object_id).await.unwrap().is_some());
        assert!(matches!(
            c.clone_object(clone.object_id, p2, "copy")
                .await
                .unwrap_err(),
            Error::AlreadyExists { .. }
        ));
    }
}
