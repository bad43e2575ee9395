//! Typed tables over [`meta::MetaStore`]: buckets, packages, objects, uploads, agents and
//! user spaces. Every uniqueness rule is enforced in the transaction that writes the row.

pub mod access_key;
pub mod batch;
pub mod blocks;
pub mod grant;
pub mod keys;
pub mod listing;
pub mod multipart;
pub mod mutate;
pub mod object;
pub mod package;
pub mod reencode;
pub mod repair;
pub mod rows;
pub mod space;
#[cfg(test)]
pub(crate) mod testing;

use std::sync::Arc;

use common::{BucketId, UserId};
use futures::TryStreamExt;
use meta::{Compare, KeyValue, MetaStoreRef, Op, Revision, Txn};
use serde::Serialize;
use serde::de::DeserializeOwned;
use snafu::ResultExt;

use crate::error::{DecodeRowSnafu, Result, bad, exists, not_found};
use crate::ids::IdAllocator;
use rows::BucketRow;

/// How often an optimistic (read, compare, write) loop retries before giving up.
pub(crate) const MAX_ATTEMPTS: usize = 32;

/// Objects per deletion step of a bulk job: 3 operations each, well under etcd's 128.
pub(crate) const DELETE_BATCH: usize = 40;

#[derive(Clone)]
pub struct Catalog {
    pub(crate) meta: MetaStoreRef,
    pub(crate) ids: Arc<IdAllocator>,
    /// Revisions of packages seen recently. Package rows never change after creation, only
    /// disappear, and every commit compares the revision, so a stale entry can only delay
    /// the "package not found" answer from begin to commit.
    pub(crate) package_revs:
        Arc<std::sync::Mutex<std::collections::HashMap<common::PackageId, Revision>>>,
    /// Redundancy policies of packages read in the last [`blocks::POLICY_CACHE_TTL`] (a
    /// policy change made through another coordinator reaches uploads begun here at most
    /// that much later; one made here at once).
    pub(crate) package_policies: Arc<std::sync::Mutex<blocks::PolicyCache>>,
}

/// Entries of the package revision cache before it is emptied.
const PACKAGE_CACHE_MAX: usize = 10_000;

/// A decoded row and the revision it was read at.
pub struct Versioned<T> {
    pub row: T,
    pub rev: Revision,
}

pub(crate) fn encode<T: Serialize>(row: &T) -> Vec<u8> {
    serde_json::to_vec(row).expect("rows are plain data and always serialize")
}

pub(crate) fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(&kv.value).context(DecodeRowSnafu {
        key: String::from_utf8_lossy(&kv.key).into_owned(),
    })
}

pub(crate) fn decode_id(kv: &KeyValue) -> Result<u64> {
    decode::<u64>(kv)
}

impl Catalog {
    pub fn new(meta: MetaStoreRef) -> Self {
        Catalog {
            ids: Arc::new(IdAllocator::new(meta.clone())),
            meta,
            package_revs: Arc::default(),
            package_policies: Arc::default(),
        }
    }

    pub fn meta(&self) -> &MetaStoreRef {
        &self.meta
    }

    /// The revision of package `id`, from the cache or the store (NotFound if missing).
    pub(crate) async fn package_rev(&self, id: common::PackageId) -> Result<Revision> {
        let cached = self.lock_package_revs().get(&id).copied();
        if let Some(rev) = cached {
            return Ok(rev);
        }
        let rev = self.get_package(id).await?.rev;
        let mut revs = self.lock_package_revs();
        if revs.len() >= PACKAGE_CACHE_MAX {
            revs.clear();
        }
        revs.insert(id, rev);
        Ok(rev)
    }

    pub(crate) fn forget_package(&self, id: common::PackageId) {
        self.lock_package_revs().remove(&id);
        self.package_policies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    fn lock_package_revs(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<common::PackageId, Revision>> {
        self.package_revs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One page of the rows under `prefix` whose keys sort after `after` (exclusive; from
    /// the start of the prefix when `None`), at most `limit`, in key order, each with its
    /// key and the revision it was read at.
    pub(crate) async fn rows_after<T: DeserializeOwned>(
        &self,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Versioned<T>)>> {
        let end = meta::prefix_end(&prefix);
        let start = match after {
            Some(mut k) => {
                k.push(0);
                k
            }
            None => prefix,
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
        let mut out = Vec::with_capacity(page.kvs.len());
        for kv in page.kvs {
            let row = decode(&kv)?;
            out.push((
                kv.key,
                Versioned {
                    row,
                    rev: kv.mod_rev,
                },
            ));
        }
        Ok(out)
    }

    pub(crate) async fn get_row<T: DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<Versioned<T>>> {
        match self.meta.get(key).await? {
            None => Ok(None),
            Some(kv) => Ok(Some(Versioned {
                row: decode(&kv)?,
                rev: kv.mod_rev,
            })),
        }
    }

    /// All key-values under `prefix`, paged.
    pub(crate) async fn scan(&self, prefix: Vec<u8>) -> Result<Vec<KeyValue>> {
        Ok(meta::scan_prefix(self.meta.clone(), prefix, 1000)
            .try_collect()
            .await?)
    }

    // ---- buckets -------------------------------------------------------------------

    pub async fn create_bucket(&self, user: UserId, name: &str) -> Result<BucketRow> {
        common::path::validate_name("bucket", name).map_err(bad)?;
        let id = BucketId(self.ids.next("bucket").await?);
        let row = BucketRow {
            v: rows::VERSION,
            bucket_id: id,
            user_id: user,
            name: name.to_owned(),
            create_time_ms: common::time::now_ms(),
        };
        let name_key = keys::bucket_name(user, name);
        let res = self
            .meta
            .txn(Txn {
                when: vec![Compare::Absent(name_key.clone())],
                then: vec![
                    Op::Put(keys::bucket(id), encode(&row)),
                    Op::Put(name_key, encode(&id.0)),
                ],
                otherwise: vec![],
            })
            .await?;
        if !res.succeeded {
            return Err(exists(format!("bucket {name:?}")));
        }
        Ok(row)
    }

    pub async fn get_bucket(&self, id: BucketId) -> Result<Versioned<BucketRow>> {
        self.get_row(&keys::bucket(id))
            .await?
            .ok_or_else(|| not_found(format!("bucket {id}")))
    }

    pub async fn get_bucket_by_name(&self, user: UserId, name: &str) -> Result<BucketRow> {
        let missing = || not_found(format!("bucket {name:?}"));
        let kv = self
            .meta
            .get(&keys::bucket_name(user, name))
            .await?
            .ok_or_else(missing)?;
        let id = BucketId(decode_id(&kv)?);
        Ok(self
            .get_row(&keys::bucket(id))
            .await?
            .ok_or_else(missing)?
            .row)
    }

    pub async fn list_buckets(&self, user: UserId) -> Result<Vec<BucketRow>> {
        let mut out = Vec::new();
        for kv in self.scan(keys::bucket_name_prefix(user)).await? {
            let id = BucketId(decode_id(&kv)?);
            if let Some(b) = self.get_row::<BucketRow>(&keys::bucket(id)).await? {
                out.push(b.row);
            }
        }
        out.sort_by_key(|b| b.bucket_id);
        Ok(out)
    }

    /// Removes the bucket from view at once (row, name index, and a deletion job in one
    /// transaction), then deletes its packages. An interrupted deletion is resumed by
    /// [`Catalog::resume_jobs`].
    pub async fn delete_bucket(&self, id: BucketId) -> Result<()> {
        let b = self.get_bucket(id).await?;
        let res = self
            .meta
            .txn(Txn {
                when: vec![Compare::ModRev(keys::bucket(id), b.rev)],
                then: vec![
                    Op::Delete(keys::bucket(id)),
                    Op::Delete(keys::bucket_name(b.row.user_id, &b.row.name)),
                    Op::Put(keys::delete_bucket_job(id), encode(&id.0)),
                ],
                otherwise: vec![],
            })
            .await?;
        if !res.succeeded {
            return Err(not_found(format!("bucket {id}")));
        }
        self.purge_bucket(id).await
    }

    pub(crate) async fn purge_bucket(&self, id: BucketId) -> Result<()> {
        loop {
            let page = self
                .meta
                .range(meta::Range::prefix(keys::package_name_prefix(id)).with_limit(100))
                .await?;
            if page.kvs.is_empty() {
                break;
            }
            for kv in &page.kvs {
                let pkg = common::PackageId(decode_id(kv)?);
                match self.delete_package(pkg).await {
                    Ok(()) => {}
                    // Row already gone: drop the dangling index entry.
                    Err(crate::Error::NotFound { .. }) => {
                        self.meta.delete(&kv.key).await?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        self.meta.delete(&keys::delete_bucket_job(id)).await?;
        Ok(())
    }

    /// Finish deletions interrupted by a crash or restart.
    pub async fn resume_jobs(&self) -> Result<usize> {
        let mut n = 0;
        for kv in self.scan(keys::delete_bucket_job_prefix()).await? {
            if let Some(id) = keys::trailing_id(&kv.key) {
                self.purge_bucket(BucketId(id)).await?;
                n += 1;
            }
        }
        for kv in self.scan(keys::delete_package_job_prefix()).await? {
            if let Some(id) = keys::trailing_id(&kv.key) {
                self.purge_package(common::PackageId(id)).await?;
                n += 1;
            }
        }
        Ok(n)
    }
}
