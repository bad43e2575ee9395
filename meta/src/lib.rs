//! The metadata substrate: one async KV trait ([`MetaStore`]) with three backends
//! (etcd, redb, memory) and helpers shared by all of them.
//!
//! Keys and values are bytes. Every write gets a store-wide, strictly increasing
//! [`Revision`]; each key remembers the revision that created it and the one that last
//! modified it, so callers can compare-and-swap on revisions (etcd semantics).

use std::sync::Arc;
use std::time::Duration;

pub mod error;
pub mod helpers;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testsuite;

pub use error::{Error, Result};
pub use helpers::{cas, prefix_end, put_if_absent, scan_prefix};
pub use store::etcd::{EtcdOptions, EtcdStore};
pub use store::fenced::{Fence, Fenced};
pub use store::memory::MemoryStore;
pub use store::prefixed::Prefixed;
pub use store::redb::RedbStore;

/// A store-wide revision. Starts at 1 for the first write; 0 means "never written".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision(pub i64);

/// A lease (etcd semantics): keys created with [`MetaStore::create_leased`] disappear when it
/// expires (its TTL passes without a [`MetaStore::lease_keep_alive`]) or is revoked. The
/// embedded backends (memory, redb) serve one process, so their leases never expire; revoking
/// one still deletes its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeaseId(pub i64);

/// A stored key with its value and revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    /// Empty when read by a `keys_only` range.
    pub value: Vec<u8>,
    /// Revision of the write that created this key (since its last deletion).
    pub create_rev: Revision,
    /// Revision of the last write to this key.
    pub mod_rev: Revision,
}

/// A condition of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key does not exist.
    Absent(Vec<u8>),
    /// The key exists and was last modified at exactly this revision. As in etcd, an absent
    /// key counts as modified at `Revision(0)`, so `ModRev(key, Revision(0))` means absent.
    ModRev(Vec<u8>, Revision),
    /// The key exists and holds exactly this value (never true for an absent key, even
    /// against an empty value).
    Value(Vec<u8>, Vec<u8>),
}

/// An operation of a transaction. A branch runs its operations in order, so a `Get` sees the
/// writes before it. As in etcd, a branch may not put one key twice nor put and delete one
/// key (`Error::DuplicateTxnKey`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read a key; its result goes to [`TxnResult::gets`].
    Get(Vec<u8>),
    /// Write a key.
    Put(Vec<u8>, Vec<u8>),
    /// Delete a key, if present.
    Delete(Vec<u8>),
}

/// If every `when` holds, run `then`, else run `otherwise`; atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub when: Vec<Compare>,
    pub then: Vec<Op>,
    pub otherwise: Vec<Op>,
}

/// The outcome of [`MetaStore::txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether the `when` conditions held (so `then` ran).
    pub succeeded: bool,
    /// The store revision after the transaction.
    pub revision: Revision,
    /// One entry per `Op::Get` of the branch that ran, in order.
    pub gets: Vec<Option<KeyValue>>,
}

/// Keys in `[start, end)`, in lexical byte order. An empty `end` means "to the end of the
/// key space". `limit` 0 means no limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Range {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    pub limit: usize,
    pub keys_only: bool,
}

impl Range {
    /// Every key starting with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Range {
        let start = prefix.into();
        let end = prefix_end(&start);
        Range {
            start,
            end,
            limit: 0,
            keys_only: false,
        }
    }

    /// The same range, returning at most `limit` keys per page (0: no limit).
    pub fn with_limit(mut self, limit: usize) -> Range {
        self.limit = limit;
        self
    }
}

/// One page of a range: `more` is true when keys past the last returned one remain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    pub kvs: Vec<KeyValue>,
    pub more: bool,
}

/// The metadata KV store. Every backend passes the same conformance suite
/// ([`meta_store_test_suite!`](crate::meta_store_test_suite), feature `testing`).
#[async_trait::async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// "etcd" | "redb" | "memory" (decorators report their inner backend).
    fn backend(&self) -> &'static str;
    /// The key, or `None` if absent.
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>>;
    /// One page of keys in `range`; follow `more` to get the rest (see [`scan_prefix`]).
    async fn range(&self, range: Range) -> Result<Page>;
    /// Write the key; returns the revision of this write (the key's new `mod_rev`).
    async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<Revision>;
    /// Whether the key existed.
    async fn delete(&self, key: &[u8]) -> Result<bool>;
    /// Atomic compare-then-ops. Rejects (with `TxnTooLarge`) a transaction whose larger
    /// branch has more than [`MetaStore::max_txn_ops`] operations, or more compares than that.
    async fn txn(&self, txn: Txn) -> Result<TxnResult>;
    /// Largest number of operations in one transaction branch (etcd's default is 128).
    fn max_txn_ops(&self) -> usize;
    /// Grant a lease that expires `ttl` after its last keep-alive (etcd rounds up to seconds).
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId>;
    /// Renew the lease; `false` when it has already expired or been revoked.
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<bool>;
    /// Revoke the lease and delete every key attached to it (no error if it is gone).
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()>;
    /// Create `key` attached to `lease` if it is absent: the revision of the write, or `None`
    /// when the key exists (leader election: whoever creates the key leads while the lease
    /// lives). A lease that does not exist fails with `LeaseNotFound` (etcd: a request error).
    async fn create_leased(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        lease: LeaseId,
    ) -> Result<Option<Revision>>;
}

/// A shared, type-erased [`MetaStore`].
pub type MetaStoreRef = Arc<dyn MetaStore>;
