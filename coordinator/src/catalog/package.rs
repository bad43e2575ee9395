//! Packages: `{packageID, name, bucketID, createTime}`, name unique per bucket.

use common::{BucketId, PackageId, UserId};
use meta::{Compare, Op, Txn};

use super::rows::{ObjectIdRow, PackageRow, VERSION};
use super::{Catalog, DELETE_BATCH, Versioned, decode, decode_id, encode, keys};
use crate::error::{Result, bad, exists, not_found};

impl Catalog {
    pub async fn create_package(&self, bucket: BucketId, name: &str) -> Result<PackageRow> {
        common::path::validate_name("package", name).map_err(bad)?;
        let b = self.get_bucket(bucket).await?;
        let id = PackageId(self.ids.next("package").await?);
        let row = PackageRow {
            v: VERSION,
            package_id: id,
            bucket_id: bucket,
            name: name.to_owned(),
            create_time_ms: common::time::now_ms(),
        };
        let name_key = keys::package_name(bucket, name);
        let res = self
            .meta
            .txn(Txn {
                when: vec![
                    Compare::ModRev(keys::bucket(bucket), b.rev),
                    Compare::Absent(name_key.clone()),
                ],
                then: vec![
                    Op::Put(keys::package(id), encode(&row)),
                    Op::Put(name_key.clone(), encode(&id.0)),
                ],
                otherwise: vec![Op::Get(name_key)],
            })
            .await?;
        if !res.succeeded {
            return match res.gets.first() {
                Some(Some(_)) => Err(exists(format!("package {name:?} in bucket {bucket}"))),
                _ => Err(not_found(format!("bucket {bucket}"))),
            };
        }
        Ok(row)
    }

    pub async fn get_package(&self, id: PackageId) -> Result<Versioned<PackageRow>> {
        self.get_row(&keys::package(id))
            .await?
            .ok_or_else(|| not_found(format!("package {id}")))
    }

    pub async fn get_package_by_full_name(
        &self,
        user: UserId,
        bucket_name: &str,
        package_name: &str,
    ) -> Result<PackageRow> {
        let bucket = self.get_bucket_by_name(user, bucket_name).await?;
        let missing = || {
            not_found(format!(
                "package {package_name:?} in bucket {bucket_name:?}"
            ))
        };
        let kv = self
            .meta
            .get(&keys::package_name(bucket.bucket_id, package_name))
            .await?
            .ok_or_else(missing)?;
        let id = PackageId(decode_id(&kv)?);
        Ok(self
            .get_row(&keys::package(id))
            .await?
            .ok_or_else(missing)?
            .row)
    }

    pub async fn list_bucket_packages(&self, bucket: BucketId) -> Result<Vec<PackageRow>> {
        self.get_bucket(bucket).await?;
        let mut out = Vec::new();
        for kv in self.scan(keys::package_name_prefix(bucket)).await? {
            let id = PackageId(decode_id(&kv)?);
            if let Some(p) = self.get_row::<PackageRow>(&keys::package(id)).await? {
                out.push(p.row);
            }
        }
        out.sort_by_key(|p| p.package_id);
        Ok(out)
    }

    /// Hides the package at once (row, name index and a deletion job in one transaction),
    /// then deletes its objects in small idempotent batches.
    pub async fn delete_package(&self, id: PackageId) -> Result<()> {
        let p = self.get_package(id).await?;
        let res = self
            .meta
            .txn(Txn {
                when: vec![Compare::ModRev(keys::package(id), p.rev)],
                then: vec![
                    Op::Delete(keys::package(id)),
                    Op::Delete(keys::package_name(p.row.bucket_id, &p.row.name)),
                    Op::Delete(keys::package_policy(id)),
                    Op::Delete(keys::reencode_job(id)),
                    Op::Put(keys::delete_package_job(id), encode(&id.0)),
                ],
                otherwise: vec![],
            })
            .await?;
        self.forget_package(id);
        if !res.succeeded {
            return Err(not_found(format!("package {id}")));
        }
        self.purge_package(id).await
    }

    pub(crate) async fn purge_package(&self, id: PackageId) -> Result<()> {
        loop {
            let page = self
                .meta
                .range(meta::Range::prefix(keys::object_prefix(id)).with_limit(DELETE_BATCH))
                .await?;
            if page.kvs.is_empty() {
                break;
            }
            let mut ops = Vec::with_capacity(page.kvs.len() * 2);
            for kv in &page.kvs {
                let row: super::rows::ObjectRow = decode(kv)?;
                // rep/ec objects also drop their blocks key and block references; stop the
                // step before it would exceed the transaction limit (the rest comes next).
                let (_, blocks) = self.release_blocks(&row).await?;
                if !ops.is_empty() && ops.len() + blocks.len() + 3 > self.meta.max_txn_ops() {
                    break;
                }
                ops.extend(blocks);
                ops.push(Op::Delete(kv.key.clone()));
                if !row.is_multipart() {
                    ops.push(Op::Delete(keys::object_ref(
                        row.space_id,
                        &row.sha256,
                        row.object_id,
                    )));
                }
                // Only drop the id index if it still points here (the object may have moved).
                let idx = self.meta.get(&keys::object_id(row.object_id)).await?;
                if let Some(idx) = idx {
                    let target: ObjectIdRow = decode(&idx)?;
                    if target.package_id == id {
                        ops.push(Op::Delete(idx.key));
                    }
                }
            }
            self.meta
                .txn(Txn {
                    when: vec![],
                    then: ops,
                    otherwise: vec![],
                })
                .await?;
        }
        self.meta.delete(&keys::delete_package_job(id)).await?;
        Ok(())
    }
}
