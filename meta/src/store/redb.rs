//! [`RedbStore`]: the embedded backend for standalone mode, one redb file.
//!
//! Layout: table `kv` maps each key to a 16-byte header (`create_rev` i64 LE, `mod_rev`
//! i64 LE) followed by the value; table `meta` holds the store revision under `"revision"`.
//! Every write (put, delete, txn) is evaluated inside one redb write transaction, so it is
//! atomic; a write that changes nothing is aborted instead of committed (no fsync). Every redb
//! call runs on the blocking pool: `begin_write` waits for the single writer and `commit`
//! fsyncs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};
use snafu::ResultExt;

use crate::error::{CreateDataDirSnafu, JoinSnafu, OpenRedbSnafu, RedbRequestSnafu, Result};
use crate::store::local::{self, KvState, Stored};
use crate::store::{DEFAULT_MAX_TXN_OPS, check_txn};
use crate::{KeyValue, MetaStore, Op, Page, Range, Revision, Txn, TxnResult};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const REVISION_KEY: &str = "revision";

/// A [`MetaStore`] in one redb file. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    path: PathBuf,
    leases: Arc<crate::store::local::Leases>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Run `f` on the blocking pool, mapping its redb error to `RedbRequest { action }`.
async fn blocking<T, F>(action: &'static str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .context(JoinSnafu { action })?
}

/// Attach the failed action to any redb error.
fn redb_context<T, E: Into<redb::Error>>(
    action: &'static str,
) -> impl FnOnce(std::result::Result<T, E>) -> Result<T> {
    move |r| r.map_err(Into::into).context(RedbRequestSnafu { action })
}

impl RedbStore {
    /// Open the redb file at `path`, creating it (and its parent directories) if missing.
    pub async fn open(path: impl AsRef<Path>) -> Result<RedbStore> {
        let path = path.as_ref().to_path_buf();
        let open_path = path.clone();
        let db = blocking("open", move || {
            if let Some(parent) = open_path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).context(CreateDataDirSnafu {
                    path: parent.to_path_buf(),
                })?;
            }
            let opened = Database::create(&open_path).map_err(redb::Error::from);
            let db = opened.context(OpenRedbSnafu {
                path: open_path.clone(),
            })?;
            // Create both tables up front so read transactions can always open them.
            let txn = redb_context("begin write")(db.begin_write())?;
            redb_context("open table kv")(txn.open_table(KV))?;
            redb_context("open table meta")(txn.open_table(META))?;
            redb_context("commit")(txn.commit())?;
            Ok(db)
        })
        .await?;
        tracing::info!(path = %path.display(), "opened redb store");
        Ok(RedbStore {
            db: Arc::new(db),
            path,
            leases: Arc::default(),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current store revision (0 before the first write).
    pub async fn revision(&self) -> Result<Revision> {
        let db = self.db.clone();
        blocking("read revision", move || {
            let txn = redb_context("begin read")(db.begin_read())?;
            let meta = redb_context("open table meta")(txn.open_table(META))?;
            let revision = redb_context("read revision")(meta.get(REVISION_KEY))?;
            Ok(Revision(revision.map_or(0, |g| g.value())))
        })
        .await
    }

    /// Evaluate an already checked `txn` in one write transaction.
    async fn apply(&self, action: &'static str, txn: Txn) -> Result<TxnResult> {
        let db = self.db.clone();
        blocking(action, move || {
            let write = redb_context("begin write")(db.begin_write())?;
            let applied = {
                let mut meta = redb_context("open table meta")(write.open_table(META))?;
                let revision =
                    redb_context("read revision")(meta.get(REVISION_KEY))?.map_or(0, |g| g.value());
                let kv = redb_context("open table kv")(write.open_table(KV))?;
                let applied = local::apply_txn(&mut RedbKv(kv), revision, txn)?;
                if applied.wrote {
                    let rev = applied.result.revision.0;
                    redb_context("write revision")(meta.insert(REVISION_KEY, rev))?;
                }
                applied
            };
            if applied.wrote {
                redb_context("commit")(write.commit())?;
            } else {
                redb_context("abort")(write.abort())?;
            }
            Ok(applied.result)
        })
        .await
    }
}

/// The `kv` table inside a write transaction.
struct RedbKv<'txn>(Table<'txn, &'static [u8], &'static [u8]>);

impl KvState for RedbKv<'_> {
    fn read(&self, key: &[u8]) -> Result<Option<Stored>> {
        let found = redb_context("read key")(self.0.get(key))?;
        found
            .map(|g| Stored::decode(key, g.value(), false))
            .transpose()
    }

    fn write(&mut self, key: Vec<u8>, stored: Stored) -> Result<()> {
        redb_context("write key")(self.0.insert(key.as_slice(), stored.encode().as_slice()))?;
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<bool> {
        Ok(redb_context("remove key")(self.0.remove(key))?.is_some())
    }
}

#[async_trait::async_trait]
impl MetaStore for RedbStore {
    fn backend(&self) -> &'static str {
        "redb"
    }

    /// Runs on the calling task, not the blocking pool: a point read is a walk down the
    /// B-tree through redb's page cache (microseconds, never waiting for the writer: redb
    /// reads a committed snapshot), while a blocking-pool hop cost two thread wake-ups.
    /// Those hops were the largest source of context switches in a small-object download
    /// (docs/performance.md, seventh session). Ranges and writes stay on the pool.
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let txn = redb_context("begin read")(self.db.begin_read())?;
        let kv = redb_context("open table kv")(txn.open_table(KV))?;
        let found = redb_context("read key")(kv.get(key))?;
        let stored = found
            .map(|g| Stored::decode(key, g.value(), false))
            .transpose()?;
        Ok(stored.map(|s| s.into_key_value(key.to_vec())))
    }

    async fn range(&self, range: Range) -> Result<Page> {
        let db = self.db.clone();
        blocking("range", move || {
            let Some(bounds) = local::bounds(&range) else {
                return Ok(Page::default());
            };
            let txn = redb_context("begin read")(db.begin_read())?;
            let kv = redb_context("open table kv")(txn.open_table(KV))?;
            let mut kvs = Vec::new();
            let iter = redb_context("range")(kv.range::<&[u8]>(bounds))?;
            for entry in iter.take(local::read_budget(&range)) {
                let (key, value) = redb_context("range")(entry)?;
                let key = key.value().to_vec();
                let stored = Stored::decode(&key, value.value(), range.keys_only)?;
                kvs.push(stored.into_key_value(key));
            }
            let more = range.limit != 0 && kvs.len() > range.limit;
            kvs.truncate(if more { range.limit } else { kvs.len() });
            Ok(Page { kvs, more })
        })
        .await
    }

    async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<Revision> {
        let txn = Txn {
            when: vec![],
            then: vec![Op::Put(key, value)],
            otherwise: vec![],
        };
        Ok(self.apply("put", txn).await?.revision)
    }

    async fn delete(&self, key: &[u8]) -> Result<bool> {
        let ops = vec![Op::Get(key.to_vec()), Op::Delete(key.to_vec())];
        let result = self
            .apply(
                "delete",
                Txn {
                    when: vec![],
                    then: ops,
                    otherwise: vec![],
                },
            )
            .await?;
        Ok(result.gets.first().is_some_and(Option::is_some))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        check_txn(&txn, self.max_txn_ops())?;
        self.apply("txn", txn).await
    }

    fn max_txn_ops(&self) -> usize {
        DEFAULT_MAX_TXN_OPS
    }

    async fn lease_grant(&self, _ttl: std::time::Duration) -> Result<crate::LeaseId> {
        Ok(self.leases.grant())
    }

    async fn lease_keep_alive(&self, lease: crate::LeaseId) -> Result<bool> {
        Ok(self.leases.alive(lease))
    }

    async fn lease_revoke(&self, lease: crate::LeaseId) -> Result<()> {
        self.leases.revoke(self, lease).await
    }

    async fn create_leased(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        lease: crate::LeaseId,
    ) -> Result<Option<Revision>> {
        self.leases.create(self, key, value, lease).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MetaStoreRef;
    use crate::testsuite::Guarded;

    /// A store in its own temp dir; the dir lives as long as the store.
    async fn temp_store() -> Option<MetaStoreRef> {
        let dir = tempfile::tempdir().expect("create temp dir");
        let store = RedbStore::open(dir.path().join("nested/meta.redb"))
            .await
            .expect("open redb");
        Some(Arc::new(Guarded::new(Arc::new(store), dir)) as MetaStoreRef)
    }

    crate::meta_store_test_suite!(crate::store::redb::tests::temp_store());

    #[tokio::test]
    async fn data_and_revision_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        let store = RedbStore::open(&path).await.unwrap();
        assert_eq!(store.revision().await.unwrap(), Revision(0));
        assert_eq!(
            store.put(b"a".to_vec(), b"1".to_vec()).await.unwrap(),
            Revision(1)
        );
        assert_eq!(
            store.put(b"b".to_vec(), b"2".to_vec()).await.unwrap(),
            Revision(2)
        );
        assert!(!store.delete(b"missing").await.unwrap());
        assert!(store.delete(b"b").await.unwrap());
        drop(store);

        let store = RedbStore::open(&path).await.unwrap();
        assert_eq!(store.revision().await.unwrap(), Revision(3));
        let a = store.get(b"a").await.unwrap().unwrap();
        assert_eq!(
            (a.value.as_slice(), a.create_rev, a.mod_rev),
            (&b"1"[..], Revision(1), Revision(1))
        );
        assert!(store.get(b"b").await.unwrap().is_none());
        assert_eq!(
            store.put(b"a".to_vec(), b"3".to_vec()).await.unwrap(),
            Revision(4)
        );
    }

    #[tokio::test]
    async fn second_open_of_one_file_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        let _store = RedbStore::open(&path).await.unwrap();
        let err = RedbStore::open(&path).await.unwrap_err();
        assert!(matches!(err, crate::Error::OpenRedb { .. }), "{err:?}");
    }
}
