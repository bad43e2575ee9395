//! Shared set-up of the catalogue's unit tests.

use std::sync::Arc;

use common::{PackageId, UserId};

use super::Catalog;

/// An expiry that never passes.
pub const FAR: i64 = i64::MAX;

/// A catalogue over a memory store with bucket `b` and package `p` (its id returned).
pub async fn setup() -> (Catalog, PackageId) {
    let c = Catalog::new(Arc::new(meta::MemoryStore::new()));
    let b = c.create_bucket(UserId(1), "b").await.unwrap();
    let p = c.create_package(b.bucket_id, "p").await.unwrap();
    (c, p.package_id)
}

/// A valid shard hash: `c` 64 times.
pub fn hash(c: char) -> String {
    c.to_string().repeat(64)
}

/// Every shard reference key (`v1/shard-ref/…`), as strings, in key order.
pub async fn shard_refs(c: &Catalog) -> Vec<String> {
    c.meta
        .range(meta::Range::prefix(b"v1/shard-ref/".to_vec()))
        .await
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| String::from_utf8(kv.key).unwrap())
        .collect()
}
