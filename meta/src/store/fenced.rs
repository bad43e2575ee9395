//! [`Fenced`]: a decorator that makes every write conditional on a fence key still being at
//! the revision it had when the fence was taken. A leader wraps its store in one with the
//! leader key it created: once its lease expired and another node created the key anew, the
//! key's revision differs and every write of the deposed leader fails with
//! [`Error::Fenced`](crate::Error::Fenced), atomically (the compare is part of the same
//! transaction).

use snafu::ensure;

use crate::error::{FencedOtherwiseWritesSnafu, FencedSnafu, Result};
use crate::{
    Compare, KeyValue, LeaseId, MetaStore, MetaStoreRef, Op, Page, Range, Revision, Txn, TxnResult,
};

/// The key and revision every fenced write compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub key: Vec<u8>,
    pub revision: Revision,
}

/// Reads pass through; `put`, `delete` and `txn` carry `Compare::ModRev(fence)`. A `txn`
/// whose conditions fail is told apart from a broken fence by reading the fence key in the
/// same transaction; its `otherwise` branch may therefore only read (the fence could not
/// guard writes there).
pub struct Fenced {
    inner: MetaStoreRef,
    fence: Fence,
}

impl std::fmt::Debug for Fenced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fenced")
            .field("fence", &self.fence)
            .finish_non_exhaustive()
    }
}

impl Fenced {
    pub fn new(inner: MetaStoreRef, fence: Fence) -> Fenced {
        Fenced { inner, fence }
    }

    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    fn compare(&self) -> Compare {
        Compare::ModRev(self.fence.key.clone(), self.fence.revision)
    }

    fn holds(&self, kv: Option<&KeyValue>) -> bool {
        kv.is_some_and(|kv| kv.mod_rev == self.fence.revision)
    }
}

#[async_trait::async_trait]
impl MetaStore for Fenced {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        self.inner.get(key).await
    }

    async fn range(&self, range: Range) -> Result<Page> {
        self.inner.range(range).await
    }

    async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<Revision> {
        let result = self
            .inner
            .txn(Txn {
                when: vec![self.compare()],
                then: vec![Op::Put(key, value)],
                otherwise: vec![],
            })
            .await?;
        ensure!(
            result.succeeded,
            FencedSnafu {
                key: self.fence.key.clone()
            }
        );
        Ok(result.revision)
    }

    async fn delete(&self, key: &[u8]) -> Result<bool> {
        let result = self
            .inner
            .txn(Txn {
                when: vec![self.compare()],
                then: vec![Op::Get(key.to_vec()), Op::Delete(key.to_vec())],
                otherwise: vec![],
            })
            .await?;
        ensure!(
            result.succeeded,
            FencedSnafu {
                key: self.fence.key.clone()
            }
        );
        Ok(result.gets.first().is_some_and(Option::is_some))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        ensure!(
            txn.otherwise.iter().all(|op| matches!(op, Op::Get(_))),
            FencedOtherwiseWritesSnafu
        );
        let mut when = txn.when;
        when.push(self.compare());
        let mut otherwise = Vec::with_capacity(txn.otherwise.len() + 1);
        otherwise.push(Op::Get(self.fence.key.clone()));
        otherwise.extend(txn.otherwise);
        let mut result = self
            .inner
            .txn(Txn {
                when,
                then: txn.then,
                otherwise,
            })
            .await?;
        if !result.succeeded {
            let fence = if result.gets.is_empty() {
                None
            } else {
                result.gets.remove(0)
            };
            ensure!(
                self.holds(fence.as_ref()),
                FencedSnafu {
                    key: self.fence.key.clone()
                }
            );
        }
        Ok(result)
    }

    fn max_txn_ops(&self) -> usize {
        // One compare and one read are spent on the fence.
        self.inner.max_txn_ops().saturating_sub(1)
    }

    async fn lease_grant(&self, ttl: std::time::Duration) -> Result<LeaseId> {
        self.inner.lease_grant(ttl).await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<bool> {
        self.inner.lease_keep_alive(lease).await
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.inner.lease_revoke(lease).await
    }

    async fn create_leased(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        lease: LeaseId,
    ) -> Result<Option<Revision>> {
        self.inner.create_leased(key, value, lease).await
    }
}
