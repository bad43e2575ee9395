//! Group commit: the uploads of concurrent requests published together.
//!
//! The gateway sends the commits that queue up while one `CommitUploads` call is in flight
//! as the next call. New objects (the common case) then go to the metadata store in one
//! transaction per [`GROUP`] items instead of one each. Anything the group transaction
//! cannot settle — a path that exists (a new version), a retried commit, a package that
//! changed, a parts commit — is committed one by one exactly as `CommitUpload` does, so a
//! group never changes what a commit means.

use std::collections::{HashMap, HashSet};

use meta::Txn;

use super::Catalog;
use common::shard_hash::is_sha256_hex;

use super::object::object_commit;
use super::rows::{ObjectRow, UploadRow, UploadTarget};
use crate::error::Result;

/// Most uploads in one group transaction: each adds 4 conditions (its marker, its object
/// id, its shard's GC marker, its path) and 3 writes (object row, id index, shard
/// reference), and etcd accepts at most 128 of each per transaction by default
/// (`--max-txn-ops`).
pub const GROUP: usize = 24;

impl Catalog {
    /// Commit each `(upload, size, sha256)` like [`Catalog::commit_upload`]; one result per
    /// item, in order. Items fail or succeed independently.
    pub async fn commit_uploads(
        &self,
        items: &[(UploadRow, u64, String)],
    ) -> Vec<Result<ObjectRow>> {
        let now = common::time::now_ms();
        let mut paths = HashSet::new();
        let mut uploads = HashSet::new();
        let groupable: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, (u, _, sha256))| {
                matches!(u.target, UploadTarget::Object)
                    && is_sha256_hex(sha256)
                    && u.expires_at_ms >= now
                    && paths.insert((u.package_id, u.path.as_str()))
                    && uploads.insert(u.upload_id)
            })
            .map(|(i, _)| i)
            .collect();
        // Rows of the items a group transaction committed, by index.
        let mut grouped = HashMap::new();
        for group in groupable.chunks(GROUP).filter(|g| g.len() > 1) {
            match self.commit_group(items, group).await {
                Ok(Some(rows)) => grouped.extend(group.iter().copied().zip(rows)),
                Ok(None) => tracing::debug!(
                    items = group.len(),
                    "group commit met a concurrent change; committing one by one"
                ),
                Err(e) => tracing::warn!(
                    items = group.len(),
                    error = %common::error::ErrorChain(&e),
                    "group commit failed; committing one by one"
                ),
            }
        }
        // Everything else commits on its own, concurrently.
        let each = items.iter().enumerate().map(|(i, (u, size, sha256))| {
            let done = grouped.remove(&i);
            async move {
                match done {
                    Some(row) => Ok(row),
                    None => self.commit_upload(u, *size, sha256).await,
                }
            }
        });
        futures::future::join_all(each).await
    }

    /// All of `group` (indexes into `items`, new paths assumed) in one transaction:
    /// `Some(rows)` when it committed, `None` when a condition failed (nothing written).
    async fn commit_group(
        &self,
        items: &[(UploadRow, u64, String)],
        group: &[usize],
    ) -> Result<Option<Vec<ObjectRow>>> {
        let mut txn = Txn {
            when: Vec::with_capacity(group.len() * 4),
            then: Vec::with_capacity(group.len() * 4),
            otherwise: vec![],
        };
        let mut rows = Vec::with_capacity(group.len());
        for &i in group {
            let (u, size, sha256) = &items[i];
            let id = self.new_object_id(u).await?;
            let (row, when, then) = object_commit(u, *size, sha256, None, id);
            // The uploads of one package share its revision condition: state it once.
            let fresh: Vec<_> = when.into_iter().filter(|c| !txn.when.contains(c)).collect();
            txn.when.extend(fresh);
            txn.then.extend(then);
            rows.push(row);
        }
        Ok(self.meta.txn(txn).await?.succeeded.then_some(rows))
    }
}

#[cfg(test)]
mod tests {
    use common::{PackageId, SpaceId};

    use super::*;
    use crate::catalog::testing::setup;
    use crate::error::Error;

    fn hash(i: usize) -> String {
        format!("{i:064x}")
    }

    async fn item(c: &Catalog, p: PackageId, path: &str, i: usize) -> (UploadRow, u64, String) {
        let up = c.begin_upload(p, path, SpaceId(1), i64::MAX).await.unwrap();
        (up, i as u64, hash(i))
    }

    #[tokio::test]
    async fn a_batch_of_new_paths_commits_every_item_in_order() {
        let (c, p) = setup().await;
        let mut items = Vec::new();
        for i in 0..(GROUP * 2 + 3) {
            items.push(item(&c, p, &format!("f{i:03}"), i).await);
        }
        let rows = c.commit_uploads(&items).await;
        assert_eq!(rows.len(), items.len());
        let mut ids = HashSet::new();
        for (i, row) in rows.into_iter().enumerate() {
            let row = row.unwrap();
            assert_eq!(row.path, format!("f{i:03}"));
            assert_eq!(row.sha256, hash(i));
            assert!(ids.insert(row.object_id), "object ids are distinct");
        }
        let (listed, _) = c.list_objects(p, "", "", 0).await.unwrap();
        assert_eq!(listed.len(), items.len());
        // Retrying the whole batch returns the same objects (commit markers).
        let again = c.commit_uploads(&items).await;
        for (row, listed) in again.into_iter().zip(&listed) {
            assert_eq!(&row.unwrap(), listed);
        }
    }

    #[tokio::test]
    async fn items_that_cannot_join_a_group_commit_on_their_own() {
        let (c, p) = setup().await;
        let old = item(&c, p, "exists", 1).await;
        let first = c.commit_upload(&old.0, old.1, &old.2).await.unwrap();
        let mut items = vec![
            item(&c, p, "new-a", 2).await,
            item(&c, p, "exists", 3).await, // a new version: keeps the object id
            item(&c, p, "twice", 4).await,
            item(&c, p, "twice", 5).await, // same path twice in one batch
            item(&c, p, "new-b", 6).await,
        ];
        let mut bad = item(&c, p, "bad-hash", 7).await;
        bad.2 = "not-a-hash".to_owned();
        items.push(bad);
        let mut expired = item(&c, p, "expired", 8).await;
        expired.0.expires_at_ms = 1;
        items.push(expired);
        let rows = c.commit_uploads(&items).await;
        assert_eq!(rows[0].as_ref().unwrap().path, "new-a");
        let version = rows[1].as_ref().unwrap();
        assert_eq!(version.object_id, first.object_id);
        assert_eq!(version.sha256, hash(3));
        let (a, b) = (rows[2].as_ref().unwrap(), rows[3].as_ref().unwrap());
        assert_eq!(a.object_id, b.object_id, "one object at a path");
        assert_eq!(rows[4].as_ref().unwrap().path, "new-b");
        assert!(matches!(rows[5], Err(Error::InvalidArgument { .. })));
        assert!(matches!(rows[6], Err(Error::NotFound { .. })));
        let (listed, _) = c.list_objects(p, "", "", 0).await.unwrap();
        let paths: Vec<&str> = listed.iter().map(|o| o.path.as_str()).collect();
        assert_eq!(paths, ["exists", "new-a", "new-b", "twice"]);
    }
}
