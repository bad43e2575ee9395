//! Write grants: reservations of uploads into a package made before their paths are known.
//!
//! [`Catalog::grant_uploads`] answers `count` pending uploads with an empty path, like
//! [`Catalog::begin_upload`] writes nothing. The gateway keeps them and names the path when
//! it commits; [`Catalog::bind_grant`] validates that path and fills it in, after which the
//! commit is the ordinary one (`commit_upload` / `commit_uploads`): same transaction, same
//! retry guard (the upload's id, which a new object takes), same package-revision and
//! shard-GC conditions. An unused reservation
//! leaves nothing behind (its id is skipped); a shard stored under one and never committed
//! is an orphan like that of any failed upload, reclaimed by shard GC after its grace.

use common::{PackageId, SpaceId};

use super::Catalog;
use super::rows::{UploadRow, UploadTarget};
use crate::error::{Result, bad};

/// Most reservations one grant answers.
pub const MAX_GRANT: usize = 128;

impl Catalog {
    /// `count` (1..=[`MAX_GRANT`]) path-less reservations of uploads into `package`, stored
    /// in `space`. NotFound when the package does not exist. Nothing is written.
    pub async fn grant_uploads(
        &self,
        package: PackageId,
        space: SpaceId,
        count: usize,
        expires_at_ms: i64,
    ) -> Result<Vec<UploadRow>> {
        self.reserve_uploads(package, "", space, count.clamp(1, MAX_GRANT), expires_at_ms)
            .await
    }
}

/// Whether `up` (from a commit token) is a reservation of a grant: an object upload
/// without a path.
pub fn is_granted(up: &UploadRow) -> bool {
    up.path.is_empty() && matches!(up.target, UploadTarget::Object) && up.blocks.is_none()
}

/// The upload `up` of a grant committed at `path`: the path must be valid (BadArgument
/// otherwise). Uploads that are not granted come back unchanged (their path is fixed).
pub fn bind_grant(mut up: UploadRow, path: &str) -> Result<UploadRow> {
    if !is_granted(&up) {
        return Ok(up);
    }
    if path.is_empty() {
        return Err(bad(
            "this upload was reserved by a grant: its commit must name the path",
        ));
    }
    common::path::validate_object_path(path).map_err(bad)?;
    path.clone_into(&mut up.path);
    Ok(up)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::testing::{FAR, hash, setup};
    use crate::error::Error;

    #[tokio::test]
    async fn granted_uploads_commit_at_the_path_named_at_commit() {
        let (c, p) = setup().await;
        let granted = c.grant_uploads(p, SpaceId(1), 3, FAR).await.unwrap();
        assert_eq!(granted.len(), 3);
        let ids: std::collections::HashSet<_> = granted.iter().map(|u| u.upload_id).collect();
        assert_eq!(ids.len(), 3, "every reservation has its own upload id");
        assert!(granted.iter().all(is_granted));
        // Nothing is written by a grant.
        for prefix in [
            super::super::keys::upload_prefix(),
            super::super::keys::upload_o_prefix(),
        ] {
            assert!(c.scan(prefix).await.unwrap().is_empty());
        }

        let a = bind_grant(granted[0].clone(), "dir/a").unwrap();
        let row = c.commit_upload(&a, 4, &hash('a')).await.unwrap();
        assert_eq!(row.path, "dir/a");
        // A retried commit returns the same object, also when it names another path.
        let again = bind_grant(granted[0].clone(), "dir/other").unwrap();
        assert_eq!(c.commit_upload(&again, 4, &hash('a')).await.unwrap(), row);
        // Two grants of a batch commit together.
        let items: Vec<_> = granted[1..]
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let u = bind_grant(u.clone(), &format!("b{i}")).unwrap();
                (u, 1, hash('b'))
            })
            .collect();
        for r in c.commit_uploads(&items).await {
            r.unwrap();
        }
        let (listed, _) = c.list_objects(p, "", "", 0).await.unwrap();
        let paths: Vec<&str> = listed.iter().map(|o| o.path.as_str()).collect();
        assert_eq!(paths, ["b0", "b1", "dir/a"]);
    }

    #[tokio::test]
    async fn a_grant_needs_a_package_and_its_commit_a_valid_path() {
        let (c, p) = setup().await;
        assert!(matches!(
            c.grant_uploads(PackageId(p.0 + 99), SpaceId(1), 1, FAR)
                .await
                .unwrap_err(),
            Error::NotFound { .. }
        ));
        let up = c
            .grant_uploads(p, SpaceId(1), 1, FAR)
            .await
            .unwrap()
            .remove(0);
        for path in ["", "/abs", "a//b", "../x"] {
            assert!(
                matches!(
                    bind_grant(up.clone(), path),
                    Err(Error::InvalidArgument { .. })
                ),
                "{path:?} must be refused"
            );
        }
        // A begun upload keeps its path whatever the commit names.
        let begun = c.begin_upload(p, "fixed", SpaceId(1), FAR).await.unwrap();
        assert!(!is_granted(&begun));
        assert_eq!(bind_grant(begun, "other").unwrap().path, "fixed");
        // The package is deleted after the grant: the commit fails, nothing is published.
        c.delete_package(p).await.unwrap();
        let up = bind_grant(up, "late").unwrap();
        assert!(matches!(
            c.commit_upload(&up, 1, &hash('c')).await.unwrap_err(),
            Error::NotFound { .. }
        ));
    }
}
