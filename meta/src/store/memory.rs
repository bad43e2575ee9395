//! [`MemoryStore`]: a `BTreeMap` under a mutex with etcd's revision rules. For unit tests and
//! `backend = "memory"` in development; nothing survives the process.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::error::Result;
use crate::store::local::{self, KvState, Stored};
use crate::store::{DEFAULT_MAX_TXN_OPS, check_txn};
use crate::{KeyValue, MetaStore, Op, Page, Range, Revision, Txn, TxnResult};

/// An in-memory [`MetaStore`]. The lock is never held across an `.await`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    leases: crate::store::local::Leases,
}

#[derive(Debug, Default)]
struct Inner {
    kvs: BTreeMap<Vec<u8>, Stored>,
    revision: i64,
}

impl KvState for BTreeMap<Vec<u8>, Stored> {
    fn read(&self, key: &[u8]) -> Result<Option<Stored>> {
        Ok(self.get(key).cloned())
    }

    fn write(&mut self, key: Vec<u8>, stored: Stored) -> Result<()> {
        self.insert(key, stored);
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<bool> {
        Ok(BTreeMap::remove(self, key).is_some())
    }
}

impl MemoryStore {
    /// An empty store at revision 0.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// The current store revision (0 before the first write).
    pub fn revision(&self) -> Revision {
        Revision(self.lock().revision)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every mutation completes before the guard is released (nothing in `apply_txn` panics
        // halfway on a map), so the state behind a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn apply(&self, txn: Txn) -> Result<TxnResult> {
        let mut inner = self.lock();
        let Inner { kvs, revision } = &mut *inner;
        let applied = local::apply_txn(kvs, *revision, txn)?;
        if applied.wrote {
            *revision = applied.result.revision.0;
        }
        Ok(applied.result)
    }
}

#[async_trait::async_trait]
impl MetaStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let inner = self.lock();
        Ok(inner
            .kvs
            .get(key)
            .map(|stored| stored.clone().into_key_value(key.to_vec())))
    }

    async fn range(&self, range: Range) -> Result<Page> {
        let Some(bounds) = local::bounds(&range) else {
            return Ok(Page::default());
        };
        let inner = self.lock();
        let mut kvs: Vec<_> = inner
            .kvs
            .range::<[u8], _>(bounds)
            .take(local::read_budget(&range))
            .map(|(key, stored)| {
                let value = if range.keys_only {
                    Vec::new()
                } else {
                    stored.value.clone()
                };
                let stored = Stored { value, ..*stored };
                stored.into_key_value(key.clone())
            })
            .collect();
        drop(inner);
        let more = range.limit != 0 && kvs.len() > range.limit;
        kvs.truncate(if more { range.limit } else { kvs.len() });
        Ok(Page { kvs, more })
    }

    async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<Revision> {
        let txn = Txn {
            when: vec![],
            then: vec![Op::Put(key, value)],
            otherwise: vec![],
        };
        Ok(self.apply(txn)?.revision)
    }

    async fn delete(&self, key: &[u8]) -> Result<bool> {
        let ops = vec![Op::Get(key.to_vec()), Op::Delete(key.to_vec())];
        let result = self.apply(Txn {
            when: vec![],
            then: ops,
            otherwise: vec![],
        })?;
        Ok(result.gets.first().is_some_and(Option::is_some))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        check_txn(&txn, self.max_txn_ops())?;
        self.apply(txn)
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
    use std::sync::Arc;

    use super::*;
    use crate::{Compare, MetaStoreRef};

    crate::meta_store_test_suite!(async { Some(Arc::new(MemoryStore::new()) as MetaStoreRef) });

    /// Store-wide revision rules, which the shared suite cannot check on a shared etcd.
    #[tokio::test]
    async fn only_effective_writes_bump_the_revision() {
        let store = MemoryStore::new();
        assert_eq!(store.revision(), Revision(0));
        assert_eq!(
            store.put(b"a".to_vec(), b"1".to_vec()).await.unwrap(),
            Revision(1)
        );
        assert!(!store.delete(b"missing").await.unwrap());
        assert_eq!(store.revision(), Revision(1));

        let read_only = Txn {
            when: vec![],
            then: vec![Op::Get(b"a".to_vec())],
            otherwise: vec![],
        };
        assert_eq!(store.txn(read_only).await.unwrap().revision, Revision(1));

        let failed = Txn {
            when: vec![Compare::Absent(b"a".to_vec())],
            then: vec![Op::Put(b"a".to_vec(), vec![])],
            otherwise: vec![Op::Delete(b"missing".to_vec())],
        };
        let result = store.txn(failed).await.unwrap();
        assert!(!result.succeeded);
        assert_eq!(result.revision, Revision(1));

        let two_writes = Txn {
            when: vec![],
            then: vec![Op::Put(b"b".to_vec(), vec![]), Op::Delete(b"a".to_vec())],
            otherwise: vec![],
        };
        assert_eq!(store.txn(two_writes).await.unwrap().revision, Revision(2));
        assert!(store.delete(b"b").await.unwrap());
        assert_eq!(store.revision(), Revision(3));
    }
}
