//! The [`crate::MetaStore`] backends and decorators, plus the rules they share.

pub mod etcd;
pub mod fenced;
pub(crate) mod local;
pub mod memory;
pub mod prefixed;
pub mod redb;

use std::collections::HashSet;

use snafu::ensure;

use crate::error::{DuplicateTxnKeySnafu, Result, TxnTooLargeSnafu};
use crate::{Op, Txn};

/// etcd's default `--max-txn-ops`; every backend uses it so code that works on one works on all.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

/// Reject what etcd rejects before anything is sent or written: more than `max` compares or
/// operations in one branch (`TxnTooLarge`), and a branch that puts one key twice or puts and
/// deletes the same key (`DuplicateTxnKey`; deleting a key twice is allowed, as in etcd).
pub(crate) fn check_txn(txn: &Txn, max: usize) -> Result<()> {
    for ops in [txn.when.len(), txn.then.len(), txn.otherwise.len()] {
        ensure!(ops <= max, TxnTooLargeSnafu { ops, max });
    }
    check_branch(&txn.then)?;
    check_branch(&txn.otherwise)
}

fn check_branch(ops: &[Op]) -> Result<()> {
    let deletes: HashSet<&[u8]> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Delete(key) => Some(key.as_slice()),
            Op::Get(_) | Op::Put(..) => None,
        })
        .collect();
    let mut puts = HashSet::new();
    for op in ops {
        if let Op::Put(key, _) = op {
            ensure!(
                !deletes.contains(key.as_slice()) && puts.insert(key.as_slice()),
                DuplicateTxnKeySnafu { key: key.clone() }
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Compare, Error};

    fn puts(n: usize) -> Vec<Op> {
        (0..n)
            .map(|i| Op::Put(i.to_string().into_bytes(), vec![]))
            .collect()
    }

    #[test]
    fn check_txn_limits_each_part() {
        let ok = Txn {
            when: vec![],
            then: puts(3),
            otherwise: puts(3),
        };
        assert!(check_txn(&ok, 3).is_ok());
        let big_then = Txn {
            when: vec![],
            then: puts(4),
            otherwise: vec![],
        };
        assert!(matches!(
            check_txn(&big_then, 3),
            Err(Error::TxnTooLarge { ops: 4, max: 3, .. })
        ));
        let big_else = Txn {
            when: vec![],
            then: vec![],
            otherwise: puts(4),
        };
        assert!(matches!(
            check_txn(&big_else, 3),
            Err(Error::TxnTooLarge { ops: 4, .. })
        ));
        let when = (0..4).map(|i| Compare::Absent(vec![i])).collect();
        let big_when = Txn {
            when,
            then: vec![],
            otherwise: vec![],
        };
        assert!(matches!(
            check_txn(&big_when, 3),
            Err(Error::TxnTooLarge { ops: 4, .. })
        ));
    }

    #[test]
    fn check_txn_rejects_duplicate_writes_like_etcd() {
        let k = || b"k".to_vec();
        let cases = [
            (vec![Op::Put(k(), vec![]), Op::Put(k(), vec![])], false),
            (vec![Op::Put(k(), vec![]), Op::Delete(k())], false),
            (vec![Op::Delete(k()), Op::Put(k(), vec![])], false),
            (vec![Op::Delete(k()), Op::Delete(k())], true),
            (vec![Op::Put(k(), vec![]), Op::Get(k()), Op::Get(k())], true),
        ];
        for (ops, ok) in cases {
            let txn = Txn {
                when: vec![],
                then: vec![],
                otherwise: ops.clone(),
            };
            assert_eq!(check_txn(&txn, 128).is_ok(), ok, "{ops:?}");
        }
    }
}
