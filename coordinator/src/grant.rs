//! Cached write grants in the service (`GrantUploads`; docs/architecture.md, "Write
//! grants"). A grant is a batch of path-less reservations into one package, all placed on
//! one space, each with its agent ticket and commit token, exactly as `BeginUpload` would
//! answer them. The gateway hands them to small uploads, so a small upload makes no
//! reservation call of its own; the commit names the path ([`Service::open_commit`]).
//! The catalogue side is `catalog/grant.rs`.

use common::{PackageId, SpaceId};
use proto::coordinator as pb;
use redundancy::Policy;

use crate::catalog::grant::bind_grant;
use crate::catalog::rows::UploadRow;
use crate::error::{Error, bad};
use crate::service::{Service, id_arg};

impl Service {
    /// `GrantUploads`: up to `count` reservations into a package whose effective policy is
    /// `none`; `granted = false` for a rep/ec package (those uploads need `BeginUpload`,
    /// which places every block).
    pub(crate) async fn grant_uploads_one(
        &self,
        r: pb::GrantUploadsRequest,
    ) -> Result<pb::GrantUploadsResponse, Error> {
        let package = PackageId(id_arg(r.package_id, "packageID")?);
        let policy = self.effective_policy(package).await?;
        if policy != Policy::None {
            return Ok(pb::GrantUploadsResponse {
                granted: false,
                reason: format!(
                    "package {package} stores new objects as {}: every upload is begun on its own",
                    policy.kind()
                ),
                uploads: Vec::new(),
            });
        }
        let affinity = (r.affinity != 0).then_some(SpaceId(r.affinity));
        let target = self.place_with_affinity(affinity).await?;
        let rows = self
            .catalog
            .grant_uploads(
                package,
                target.space.0,
                r.count as usize,
                self.upload_expires_at(),
            )
            .await?;
        let uploads = rows
            .iter()
            .map(|up| self.plain_reservation(up, target.clone()))
            .collect();
        Ok(pb::GrantUploadsResponse {
            granted: true,
            reason: String::new(),
            uploads,
        })
    }

    /// The pending upload in a commit request's token (`CommitUpload`, `CommitUploads`).
    /// A reservation of a grant gets the request's path (validated); the package's
    /// existence is a condition of the commit transaction, the expiry is checked by the
    /// commit. A grant taken before the package's policy became rep/ec still commits as
    /// `none`, and the commit queues the object for re-encoding like any other `none`
    /// commit ([`Service::converge_policy`]).
    pub(crate) async fn open_commit(
        &self,
        r: &pb::CommitUploadRequest,
    ) -> Result<UploadRow, Error> {
        let up = self
            .signer
            .open_commit_token(&r.commit_token)
            .filter(|u| u.upload_id.0 == r.upload_id)
            .ok_or_else(|| bad("commit_token is missing, forged, or belongs to another upload"))?;
        bind_grant(up, &r.path)
    }
}
