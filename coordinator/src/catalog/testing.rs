//! Shared set-up of the catalogue's unit tests.

use std::sync::Arc;

use common::{ObjectId, PackageId, SpaceId, UserId};
use redundancy::Policy;

use super::Catalog;
use super::rows::{BlockPlan, UploadRow};

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

/// An upload of `path` begun as ec(2,3) with 64-byte pieces on spaces 1, 2, 3.
pub async fn begin_ec(c: &Catalog, p: PackageId, path: &str) -> UploadRow {
    let mut up = c.begin_upload(p, path, SpaceId(1), FAR).await.unwrap();
    up.blocks = Some(BlockPlan {
        policy: Policy::ec(2, 3, 64).unwrap(),
        spaces: vec![SpaceId(1), SpaceId(2), SpaceId(3)],
    });
    up
}

/// 100 bytes in ec(2,3) with 64-byte pieces: 1 stripe, 68 stored bytes per block, named
/// like ec blocks are ([`b3`]) by `tag`, `tag`+1, `tag`+2.
pub fn ec_blocks(tag: char) -> Vec<(u64, String)> {
    (0..3)
        .map(|i| (68, b3(char::from(tag as u8 + i))))
        .collect()
}

/// A BLAKE3 shard name (an ec block's) made of `c`.
pub fn b3(c: char) -> String {
    format!("{}{}", common::shard_hash::BLAKE3_PREFIX, hash(c))
}

/// A committed ec(2,3) object of 100 bytes (hash `f…`) at `path`, blocks `b3-a…`, `b3-b…`,
/// `b3-c…`.
pub async fn ec_object(c: &Catalog, p: PackageId, path: &str) -> ObjectId {
    let up = begin_ec(c, p, path).await;
    c.commit_block_upload(&up, 100, &hash('f'), &ec_blocks('a'))
        .await
        .unwrap()
        .object_id
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
