//! Transaction evaluation shared by the in-process backends (memory and redb), so both follow
//! etcd's revision rules through one implementation:
//! - the store revision starts at 0, and the first write gets revision 1;
//! - a put, an effective delete, or a transaction with at least one put or effective delete
//!   bumps the store revision by exactly 1, and every write of that transaction carries it;
//! - deleting a missing key, a transaction without writes, and a failed compare do not bump it;
//! - a key's `create_rev` is the revision that created it since its last deletion, `mod_rev`
//!   the revision of its last write;
//! - a branch runs in order: a `Get` after a `Put` of the same key sees the new value.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Mutex;

use snafu::ensure;

use crate::error::{DecodeValueSnafu, Result};
use crate::{Compare, KeyValue, Op, Range, Revision, Txn, TxnResult};

/// Leases of an embedded store. They never expire (one process serves the store, so it is
/// trivially the leader); revoking one deletes the keys created with it, unless rewritten.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    inner: Mutex<LeaseTable>,
}

#[derive(Debug, Default)]
struct LeaseTable {
    next: i64,
    held: HashMap<i64, Vec<(Vec<u8>, Revision)>>,
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, LeaseTable> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn grant(&self) -> crate::LeaseId {
        let mut table = self.lock();
        table.next += 1;
        let id = table.next;
        table.held.insert(id, Vec::new());
        crate::LeaseId(id)
    }

    pub fn alive(&self, lease: crate::LeaseId) -> bool {
        self.lock().held.contains_key(&lease.0)
    }

    /// `store` must be the store owning these leases.
    pub async fn create(
        &self,
        store: &dyn crate::MetaStore,
        key: Vec<u8>,
        value: Vec<u8>,
        lease: crate::LeaseId,
    ) -> Result<Option<Revision>> {
        ensure!(
            self.alive(lease),
            crate::error::LeaseNotFoundSnafu { lease: lease.0 }
        );
        let result = store
            .txn(Txn {
                when: vec![Compare::Absent(key.clone())],
                then: vec![Op::Put(key.clone(), value)],
                otherwise: vec![],
            })
            .await?;
        if !result.succeeded {
            return Ok(None);
        }
        if let Some(keys) = self.lock().held.get_mut(&lease.0) {
            keys.push((key, result.revision));
        }
        Ok(Some(result.revision))
    }

    pub async fn revoke(&self, store: &dyn crate::MetaStore, lease: crate::LeaseId) -> Result<()> {
        let keys = self.lock().held.remove(&lease.0).unwrap_or_default();
        for (key, rev) in keys {
            store
                .txn(Txn {
                    when: vec![Compare::ModRev(key.clone(), rev)],
                    then: vec![Op::Delete(key)],
                    otherwise: vec![],
                })
                .await?;
        }
        Ok(())
    }
}

/// A value with its revisions, as a backend stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    pub create_rev: i64,
    pub mod_rev: i64,
    pub value: Vec<u8>,
}

/// Bytes of the revision header in front of every stored value.
const HEADER_LEN: usize = 16;

impl Stored {
    /// Header (`create_rev` i64 LE, `mod_rev` i64 LE) followed by the value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.value.len());
        out.extend_from_slice(&self.create_rev.to_le_bytes());
        out.extend_from_slice(&self.mod_rev.to_le_bytes());
        out.extend_from_slice(&self.value);
        out
    }

    /// Inverse of [`Stored::encode`]; `keys_only` skips copying the value.
    pub fn decode(key: &[u8], bytes: &[u8], keys_only: bool) -> Result<Stored> {
        ensure!(
            bytes.len() >= HEADER_LEN,
            DecodeValueSnafu {
                key: key.to_vec(),
                reason: format!(
                    "{} bytes, shorter than the {HEADER_LEN}-byte header",
                    bytes.len()
                ),
            }
        );
        let (create, rest) = bytes.split_at(8);
        let (modified, value) = rest.split_at(8);
        let create_rev = i64::from_le_bytes(create.try_into().expect("split_at(8) gives 8 bytes"));
        let mod_rev = i64::from_le_bytes(modified.try_into().expect("split_at(8) gives 8 bytes"));
        let value = if keys_only {
            Vec::new()
        } else {
            value.to_vec()
        };
        Ok(Stored {
            create_rev,
            mod_rev,
            value,
        })
    }

    pub fn into_key_value(self, key: Vec<u8>) -> KeyValue {
        KeyValue {
            key,
            value: self.value,
            create_rev: Revision(self.create_rev),
            mod_rev: Revision(self.mod_rev),
        }
    }
}

/// The key space of a backend, as seen from inside one atomic write.
pub(crate) trait KvState {
    fn read(&self, key: &[u8]) -> Result<Option<Stored>>;
    fn write(&mut self, key: Vec<u8>, stored: Stored) -> Result<()>;
    /// Whether the key existed.
    fn remove(&mut self, key: &[u8]) -> Result<bool>;
}

/// What [`apply_txn`] did.
pub(crate) struct Applied {
    pub result: TxnResult,
    /// Whether anything was written; if so, the caller must persist `result.revision` as the
    /// new store revision, else it may discard the write transaction.
    pub wrote: bool,
}

/// Evaluate `txn` (already checked with [`crate::store::check_txn`]) on `state`, whose store
/// revision is `revision`.
pub(crate) fn apply_txn(state: &mut impl KvState, revision: i64, txn: Txn) -> Result<Applied> {
    let next = revision + 1;
    let mut succeeded = true;
    for compare in &txn.when {
        if !holds(state, compare)? {
            succeeded = false;
            break;
        }
    }
    let ops = if succeeded { txn.then } else { txn.otherwise };
    let mut gets = Vec::new();
    let mut wrote = false;
    for op in ops {
        match op {
            Op::Get(key) => {
                let found = state.read(&key)?;
                gets.push(found.map(|stored| stored.into_key_value(key)));
            }
            Op::Put(key, value) => {
                let create_rev = state.read(&key)?.map_or(next, |old| old.create_rev);
                state.write(
                    key,
                    Stored {
                        create_rev,
                        mod_rev: next,
                        value,
                    },
                )?;
                wrote = true;
            }
            Op::Delete(key) => wrote |= state.remove(&key)?,
        }
    }
    let revision = Revision(if wrote { next } else { revision });
    Ok(Applied {
        result: TxnResult {
            succeeded,
            revision,
            gets,
        },
        wrote,
    })
}

/// etcd compares an absent key as if all its revisions were 0, except that a value compare on
/// an absent key always fails.
fn holds(state: &impl KvState, compare: &Compare) -> Result<bool> {
    Ok(match compare {
        Compare::Absent(key) => state.read(key)?.is_none(),
        Compare::ModRev(key, rev) => state.read(key)?.map_or(0, |s| s.mod_rev) == rev.0,
        Compare::Value(key, value) => state.read(key)?.is_some_and(|s| &s.value == value),
    })
}

/// Lower and upper bound of a key range.
pub(crate) type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The key bounds of `range`, or `None` when it is empty (`end` not after `start`).
pub(crate) fn bounds(range: &Range) -> Option<KeyBounds<'_>> {
    let start = Bound::Included(range.start.as_slice());
    if range.end.is_empty() {
        Some((start, Bound::Unbounded))
    } else if range.end > range.start {
        Some((start, Bound::Excluded(range.end.as_slice())))
    } else {
        None
    }
}

/// How many entries to read for `range`: one past the limit, to learn whether more remain.
pub(crate) fn read_budget(range: &Range) -> usize {
    if range.limit == 0 {
        usize::MAX
    } else {
        range.limit.saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_round_trips_through_its_header() {
        let stored = Stored {
            create_rev: 3,
            mod_rev: 1 << 40,
            value: b"v\xff".to_vec(),
        };
        let bytes = stored.encode();
        assert_eq!(bytes.len(), 18);
        assert_eq!(&bytes[..8], &3i64.to_le_bytes());
        assert_eq!(Stored::decode(b"k", &bytes, false).unwrap(), stored);
        let keys_only = Stored::decode(b"k", &bytes, true).unwrap();
        assert!(keys_only.value.is_empty());
        assert_eq!(keys_only.mod_rev, 1 << 40);
    }

    #[test]
    fn short_stored_value_fails_to_decode() {
        let err = Stored::decode(b"k", &[0; 15], false).unwrap_err();
        assert!(err.to_string().contains("key k"), "{err}");
    }

    #[test]
    fn bounds_treat_empty_end_as_unbounded_and_reversed_as_empty() {
        let r = |start: &[u8], end: &[u8]| Range {
            start: start.to_vec(),
            end: end.to_vec(),
            limit: 0,
            keys_only: false,
        };
        assert_eq!(
            bounds(&r(b"a", b"")),
            Some((Bound::Included(&b"a"[..]), Bound::Unbounded))
        );
        assert!(bounds(&r(b"b", b"b")).is_none());
        assert!(bounds(&r(b"c", b"b")).is_none());
    }
}
