//! [`Prefixed`]: a decorator that confines a store to the keys under one root (a "chroot"),
//! for cluster namespaces and per-test isolation.

use crate::error::Result;
use crate::helpers::prefix_end;
use crate::{
    Compare, KeyValue, MetaStore, MetaStoreRef, Op, Page, Range, Revision, Txn, TxnResult,
};

/// Prepends `root` to every key of every operation, compare and range, and strips it from the
/// keys it returns. A range with an empty `end` stops at the end of the namespace, so callers
/// never see keys outside it.
///
/// Roots should end with a separator (`"/jcs/cluster-a/"`): the namespace of `"a"` contains
/// the one of `"ab"`. Revisions are the inner store's, shared by all namespaces.
pub struct Prefixed {
    root: Vec<u8>,
    inner: MetaStoreRef,
}

impl std::fmt::Debug for Prefixed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefixed")
            .field("root", &self.root.escape_ascii().to_string())
            .field("backend", &self.inner.backend())
            .finish()
    }
}

impl Prefixed {
    /// A view of `inner` confined to the keys starting with `root`.
    pub fn new(root: impl Into<Vec<u8>>, inner: MetaStoreRef) -> Prefixed {
        Prefixed {
            root: root.into(),
            inner,
        }
    }

    /// The prefix every key gets in the inner store.
    pub fn root(&self) -> &[u8] {
        &self.root
    }

    /// The undecorated store.
    pub fn inner(&self) -> &MetaStoreRef {
        &self.inner
    }

    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.root.len() + key.len());
        full.extend_from_slice(&self.root);
        full.extend_from_slice(key);
        full
    }

    fn strip(&self, mut kv: KeyValue) -> KeyValue {
        debug_assert!(
            kv.key.starts_with(&self.root),
            "inner store returned a key outside the root"
        );
        kv.key.drain(..self.root.len().min(kv.key.len()));
        kv
    }

    fn op(&self, op: Op) -> Op {
        match op {
            Op::Get(key) => Op::Get(self.key(&key)),
            Op::Put(key, value) => Op::Put(self.key(&key), value),
            Op::Delete(key) => Op::Delete(self.key(&key)),
        }
    }

    fn compare(&self, compare: Compare) -> Compare {
        match compare {
            Compare::Absent(key) => Compare::Absent(self.key(&key)),
            Compare::ModRev(key, rev) => Compare::ModRev(self.key(&key), rev),
            Compare::Value(key, value) => Compare::Value(self.key(&key), value),
        }
    }
}

#[async_trait::async_trait]
impl MetaStore for Prefixed {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        Ok(self
            .inner
            .get(&self.key(key))
            .await?
            .map(|kv| self.strip(kv)))
    }

    async fn range(&self, range: Range) -> Result<Page> {
        let end = if range.end.is_empty() {
            prefix_end(&self.root)
        } else {
            self.key(&range.end)
        };
        let inner = Range {
            start: self.key(&range.start),
            end,
            ..range
        };
        let page = self.inner.range(inner).await?;
        let kvs = page.kvs.into_iter().map(|kv| self.strip(kv)).collect();
        Ok(Page {
            kvs,
            more: page.more,
        })
    }

    async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<Revision> {
        self.inner.put(self.key(&key), value).await
    }

    async fn delete(&self, key: &[u8]) -> Result<bool> {
        self.inner.delete(&self.key(key)).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        let txn = Txn {
            when: txn.when.into_iter().map(|c| self.compare(c)).collect(),
            then: txn.then.into_iter().map(|op| self.op(op)).collect(),
            otherwise: txn.otherwise.into_iter().map(|op| self.op(op)).collect(),
        };
        let result = self.inner.txn(txn).await?;
        let gets = result
            .gets
            .into_iter()
            .map(|kv| kv.map(|kv| self.strip(kv)))
            .collect();
        Ok(TxnResult { gets, ..result })
    }

    fn max_txn_ops(&self) -> usize {
        self.inner.max_txn_ops()
    }

    async fn lease_grant(&self, ttl: std::time::Duration) -> Result<crate::LeaseId> {
        self.inner.lease_grant(ttl).await
    }

    async fn lease_keep_alive(&self, lease: crate::LeaseId) -> Result<bool> {
        self.inner.lease_keep_alive(lease).await
    }

    async fn lease_revoke(&self, lease: crate::LeaseId) -> Result<()> {
        self.inner.lease_revoke(lease).await
    }

    async fn create_leased(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        lease: crate::LeaseId,
    ) -> Result<Option<Revision>> {
        self.inner.create_leased(self.key(&key), value, lease).await
    }
}
