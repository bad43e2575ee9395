//! Id allocation: counters under `seq/{name}` advanced by compare-and-swap in batches, so
//! several coordinators can allocate without colliding and most ids cost no round trip.

use std::collections::HashMap;

use meta::{Compare, MetaStoreRef, Op, Txn};
use tokio::sync::Mutex;

use crate::catalog::keys;
use crate::error::{Error, Result};

/// How many ids one CAS reserves.
const BATCH: u64 = 64;

pub struct IdAllocator {
    meta: MetaStoreRef,
    /// name → (next id, end of the reserved batch, exclusive)
    ranges: Mutex<HashMap<&'static str, (u64, u64)>>,
}

impl IdAllocator {
    pub fn new(meta: MetaStoreRef) -> Self {
        IdAllocator {
            meta,
            ranges: Mutex::new(HashMap::new()),
        }
    }

    /// Next id of sequence `name`; ids start at 1 and are never reused.
    pub async fn next(&self, name: &'static str) -> Result<u64> {
        let mut ranges = self.ranges.lock().await;
        let entry = ranges.entry(name).or_insert((0, 0));
        if entry.0 >= entry.1 {
            let (start, end) = self.reserve(name).await?;
            *entry = (start, end);
        }
        let id = entry.0;
        entry.0 += 1;
        Ok(id)
    }

    async fn reserve(&self, name: &'static str) -> Result<(u64, u64)> {
        let key = keys::seq(name);
        for _ in 0..64 {
            let current = self.meta.get(&key).await?;
            let (last, cmp) = match &current {
                None => (0u64, Compare::Absent(key.clone())),
                Some(kv) => {
                    let text = std::str::from_utf8(&kv.value).unwrap_or_default();
                    let last = text.trim().parse::<u64>().map_err(|_| Error::Startup {
                        message: format!("sequence {name} holds a non-numeric value"),
                    })?;
                    (last, Compare::ModRev(key.clone(), kv.mod_rev))
                }
            };
            let end = last + BATCH;
            let res = self
                .meta
                .txn(Txn {
                    when: vec![cmp],
                    then: vec![Op::Put(key.clone(), end.to_string().into_bytes())],
                    otherwise: vec![],
                })
                .await?;
            if res.succeeded {
                return Ok((last + 1, end + 1));
            }
        }
        Err(Error::Contention {
            what: format!("sequence {name}"),
            attempts: 64,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn ids_are_unique_across_allocators_sharing_a_store() {
        let meta: MetaStoreRef = Arc::new(meta::MemoryStore::new());
        let a = Arc::new(IdAllocator::new(meta.clone()));
        let b = Arc::new(IdAllocator::new(meta));
        let mut handles = Vec::new();
        for alloc in [a, b] {
            handles.push(tokio::spawn(async move {
                let mut v = Vec::new();
                for _ in 0..200 {
                    v.push(alloc.next("object").await.unwrap());
                }
                v
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.unwrap());
        }
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        assert!(all[0] >= 1);
    }

    #[tokio::test]
    async fn a_restarted_allocator_never_reissues_an_id() {
        let meta: MetaStoreRef = Arc::new(meta::MemoryStore::new());
        let first = IdAllocator::new(meta.clone());
        let x = first.next("bucket").await.unwrap();
        drop(first);
        let second = IdAllocator::new(meta);
        assert!(second.next("bucket").await.unwrap() > x);
    }
}
