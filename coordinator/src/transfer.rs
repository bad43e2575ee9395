//! Package import (`/v1/userSpace/createPackage`) and export
//! (`/v1/userSpace/downloadPackage`). The coordinator lists, places, signs and commits;
//! agents move the bytes between a space's plain files and shards, agent to agent,
//! streaming. Files are handled with bounded parallelism and per-file failures are
//! reported, not fatal.

use common::shard_hash::Algorithm;
use common::{BucketId, PackageId, SpaceId};
use futures::{StreamExt, TryStreamExt};
use proto::agent::{ExportFileRequest, ImportFileRequest, ListFilesRequest};
use proto::coordinator as pb;

use crate::catalog::rows::ObjectRow;
use crate::error::{Error, bad};
use crate::service::{Service, SpaceTarget, ms};

/// Files copied at once by one import or export.
const PARALLEL: usize = 8;
/// Most per-file failures reported in one answer (the rest are counted in the log).
const MAX_REPORTED_FAILURES: usize = 1000;

/// A path inside a storage: relative, no `.`/`..` segments; leading and trailing `/` are
/// dropped ("" = the storage's root).
pub(crate) fn storage_path(field: &str, path: &str) -> Result<String, Error> {
    let trimmed = path.trim_matches('/');
    if trimmed.split('/').any(|s| s == "." || s == "..")
        || trimmed.contains("//")
        || path.contains('\\')
    {
        return Err(bad(format!(
            "{field} {path:?} must not contain '.', '..', '//' or '\\'"
        )));
    }
    Ok(trimmed.to_owned())
}

fn join(root: &str, path: &str) -> String {
    if root.is_empty() {
        path.to_owned()
    } else {
        format!("{root}/{path}")
    }
}

fn agent_error(status: tonic::Status) -> Error {
    Error::Agent {
        source: status.into(),
    }
}

fn failure(path: String, e: &Error) -> pb::FileFailure {
    let message = if common::CodedError::code(e) == common::ErrorCode::Internal {
        tracing::error!(path = %path, error = %common::error::ErrorChain(e), "file transfer failed");
        "internal error".to_owned()
    } else {
        common::error::ErrorChain(e).to_string()
    };
    pb::FileFailure { path, message }
}

impl Service {
    pub(crate) async fn import_package(
        &self,
        r: pb::ImportPackageRequest,
    ) -> Result<pb::ImportPackageResponse, Error> {
        let space = SpaceId(crate::service::id_arg(r.user_space_id, "userSpaceID")?);
        let bucket = BucketId(crate::service::id_arg(r.bucket_id, "bucketID")?);
        common::path::validate_name("package", &r.name).map_err(bad)?;
        let root = storage_path("path", &r.path)?;
        let affinity = (r.space_affinity != 0).then_some(SpaceId(r.space_affinity));
        let src = self.space_agent(space).await?;
        let now = common::time::now_ms();
        let mut client = self
            .agents
            .get(&src.address)
            .map_err(|source| Error::Agent { source })?;
        let ticket = self
            .signer
            .list_files(src.space, &root, now + ms(self.ticket_ttl));
        // List before creating anything: a missing path creates no package.
        let mut listing = client
            .list_files(ListFilesRequest {
                ticket: Some(ticket),
            })
            .await
            .map_err(agent_error)?
            .into_inner()
            .map_err(agent_error)
            .map_ok(|batch| futures::stream::iter(batch.files.into_iter().map(Ok)))
            .try_flatten()
            .peekable();
        if let Some(Err(_)) = std::pin::Pin::new(&mut listing).peek().await
            && let Some(Err(e)) = listing.next().await
        {
            return Err(e);
        }
        let package = self.catalog.create_package(bucket, &r.name).await?;
        let pkg = package.package_id;
        let results = listing
            .map(|item| async {
                match item {
                    Ok(file) => {
                        let path = file.path.clone();
                        self.import_file(pkg, &src, file, affinity)
                            .await
                            .map_err(|e| failure(path, &e))
                    }
                    Err(e) => Err(failure(String::new(), &e)),
                }
            })
            .buffer_unordered(PARALLEL);
        let (imported, failures) = collect(results).await;
        tracing::info!(package = %pkg, imported, failed = failures.len(), "package imported");
        Ok(pb::ImportPackageResponse {
            // With its effective policy (the objects converge to it, reencode.rs).
            package: Some(self.package_with_policy(package).await?),
            imported,
            failures,
        })
    }

    async fn import_file(
        &self,
        package: PackageId,
        src: &SpaceTarget,
        file: proto::agent::FileInfo,
        affinity: Option<SpaceId>,
    ) -> Result<(), Error> {
        common::path::validate_object_path(&file.path).map_err(bad)?;
        let dest = self.place_with_affinity(affinity).await?;
        let now = common::time::now_ms();
        let up = self
            .catalog
            .begin_upload(
                package,
                &file.path,
                dest.space.0,
                now + ms(self.upload_expiry),
            )
            .await?;
        let expires = now + ms(self.ticket_ttl);
        let read_ticket = self.signer.read_file(src.space, &file.full_path, expires);
        let put_ticket = self
            .signer
            .put(dest.space, up.upload_id, 0, Algorithm::Sha256, expires);
        let mut client = self
            .agents
            .get(&src.address)
            .map_err(|source| Error::Agent { source })?;
        let stored = client
            .import_file(ImportFileRequest {
                read_ticket: Some(read_ticket),
                dest_agent_address: dest.address,
                put_ticket: Some(put_ticket),
            })
            .await
            .map_err(agent_error)?
            .into_inner();
        let o = self
            .catalog
            .commit_upload(&up, stored.size, &stored.sha256)
            .await?;
        // Imports are stored `none`; reencode.rs converges them to the package's policy.
        self.converge_policy(&o).await;
        Ok(())
    }

    pub(crate) async fn export_package(
        &self,
        r: pb::ExportPackageRequest,
    ) -> Result<pb::ExportPackageResponse, Error> {
        let space = SpaceId(crate::service::id_arg(r.user_space_id, "userSpaceID")?);
        let package = PackageId(crate::service::id_arg(r.package_id, "packageID")?);
        let root = storage_path("rootPath", &r.root_path)?;
        self.catalog.get_package(package).await?;
        let dest = self.space_agent(space).await?;
        // Page by page (bounded memory); within a page, PARALLEL files at a time.
        let mut exported = 0u64;
        let mut failures = Vec::new();
        let mut after = String::new();
        loop {
            let (rows, more) = self.catalog.list_objects(package, "", &after, 1000).await?;
            let next = rows.last().map(|o| o.path.clone());
            let results = futures::stream::iter(rows)
                .map(|obj| async {
                    let path = obj.path.clone();
                    self.export_object(&dest, &root, obj)
                        .await
                        .map_err(|e| failure(path, &e))
                })
                .buffer_unordered(PARALLEL);
            let (ok, mut failed) = collect(results).await;
            exported += ok;
            failed.truncate(MAX_REPORTED_FAILURES.saturating_sub(failures.len()));
            failures.append(&mut failed);
            match next {
                Some(last) if more => after = last,
                _ => break,
            }
        }
        tracing::info!(package = %package, space = %space, exported, failed = failures.len(), "package exported");
        Ok(pb::ExportPackageResponse { exported, failures })
    }

    async fn export_object(
        &self,
        dest: &SpaceTarget,
        root: &str,
        obj: ObjectRow,
    ) -> Result<(), Error> {
        if obj.is_multipart() {
            return Err(bad("unfinished multipart upload: nothing to export"));
        }
        let src = self.space_agent(obj.space_id).await?;
        let expires = common::time::now_ms() + ms(self.ticket_ttl);
        let get_ticket = self.signer.get(src.space, &obj.sha256, expires);
        let write_ticket = self
            .signer
            .write_file(dest.space, &join(root, &obj.path), expires);
        let mut client = self
            .agents
            .get(&dest.address)
            .map_err(|source| Error::Agent { source })?;
        client
            .export_file(ExportFileRequest {
                write_ticket: Some(write_ticket),
                source_agent_address: src.address,
                get_ticket: Some(get_ticket),
                size: obj.size,
                sha256: obj.sha256,
            })
            .await
            .map_err(agent_error)?;
        Ok(())
    }
}

/// Count successes and keep the first failures.
async fn collect(
    results: impl futures::Stream<Item = Result<(), pb::FileFailure>>,
) -> (u64, Vec<pb::FileFailure>) {
    let mut ok = 0u64;
    let mut failures = Vec::new();
    let mut dropped = 0usize;
    futures::pin_mut!(results);
    while let Some(r) = results.next().await {
        match r {
            Ok(()) => ok += 1,
            Err(f) if failures.len() < MAX_REPORTED_FAILURES => failures.push(f),
            Err(_) => dropped += 1,
        }
    }
    if dropped > 0 {
        tracing::warn!(dropped, "more file failures than reported");
    }
    (ok, failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_paths_are_relative_and_contained() {
        assert_eq!(storage_path("path", "/data/x/").unwrap(), "data/x");
        assert_eq!(storage_path("path", "").unwrap(), "");
        assert!(storage_path("path", "a/../b").is_err());
        assert!(storage_path("rootPath", "a//b").is_err());
        assert_eq!(join("", "a/b"), "a/b");
        assert_eq!(join("r", "a/b"), "r/a/b");
    }
}
