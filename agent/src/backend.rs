//! Opendal operators for the storage of a user space, and the [`SpaceStore`] of an
//! API-created space (`SpaceSpec` from the coordinator).
//!
//! Every backend gets the same layout under its root (the space's working dir), see
//! [`crate::store`]. Credentials are passed to the builders only; they are never logged and
//! never part of an error message (the builders' `Debug` output redacts them too).

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::SpaceId;
use common::space::{Credential, Storage};
use proto::common::SpaceSpec;
use snafu::ResultExt;

use crate::error::{InvalidSpecSnafu, LocalRootSnafu, OpenStorageSnafu, Result};
use crate::files::FileRoot;
use crate::store::{Locations, SpaceStore, StoreOptions};

/// Region used for S3 when the storage names none (the signature needs one; S3-compatible
/// services ignore it).
pub const DEFAULT_S3_REGION: &str = "us-east-1";

/// Deadline of one object-store operation that moves no body (stat, delete, list page,
/// server-side copy of a shard up to several GiB).
pub const OBJECT_OP_TIMEOUT: Duration = Duration::from_secs(300);
/// Deadline of one body read or write step against an object store: a stalled connection
/// fails (temporary, so `Unavailable`) instead of hanging a put or a read forever.
pub const OBJECT_IO_TIMEOUT: Duration = Duration::from_secs(30);

/// `working_dir` as a relative path: no leading or trailing `/` (`""` = the storage root).
fn relative_dir(working_dir: &str) -> &str {
    working_dir.trim_matches('/')
}

/// Local directory holding a `Local` space: `path/working_dir`; `None` for other types.
pub fn local_root(storage: &Storage, working_dir: &str) -> Option<PathBuf> {
    match storage {
        Storage::Local { path, .. } => {
            let dir = relative_dir(working_dir);
            let root = Path::new(path);
            Some(if dir.is_empty() {
                root.to_owned()
            } else {
                root.join(dir)
            })
        }
        Storage::S3 { .. } | Storage::OBS { .. } | Storage::OSS { .. } | Storage::COS { .. } => {
            None
        }
    }
}

/// Identity of the place a storage + working dir designates: two stores with the same key
/// share their shard locks and usage counter (see [`Locations`]).
pub fn location_key(storage: &Storage, working_dir: &str) -> String {
    let dir = relative_dir(working_dir);
    match storage {
        Storage::Local { path, .. } => {
            let root = local_root(storage, working_dir).unwrap_or_else(|| PathBuf::from(path));
            local_key(&root)
        }
        Storage::S3 {
            endpoint, bucket, ..
        }
        | Storage::OBS {
            endpoint, bucket, ..
        }
        | Storage::OSS {
            endpoint, bucket, ..
        }
        | Storage::COS {
            endpoint, bucket, ..
        } => format!(
            "{}|{}|{bucket}|/{dir}",
            storage.type_name(),
            endpoint.trim_end_matches('/')
        ),
    }
}

/// Location key of a local directory (normalized: `a/./b/` and `a/b` are the same).
pub fn local_key(root: &Path) -> String {
    let normalized: PathBuf = root.components().collect();
    format!("Local|{}", normalized.display())
}

/// Root given to the object-store builders: `/working_dir`.
fn object_root(working_dir: &str) -> String {
    format!("/{}", relative_dir(working_dir))
}

/// Build the operator of `storage` rooted at `working_dir`, after checking that the
/// credential fits the storage and the working dir is valid (`InvalidSpec`, naming the
/// field). `Local` creates its directory when missing (blocking: call it from
/// `spawn_blocking` on the runtime); the object stores do no IO here.
pub fn operator(
    storage: &Storage,
    credential: &Credential,
    working_dir: &str,
) -> Result<opendal::Operator> {
    common::space::validate_pair(storage, credential)
        .map_err(|message| InvalidSpecSnafu { message }.build())?;
    common::space::validate_working_dir(working_dir)
        .map_err(|message| InvalidSpecSnafu { message }.build())?;
    let storage_type = storage.type_name();
    let root = object_root(working_dir);
    let (key_id, secret) = credential.keys().unwrap_or_default();
    let op = match storage {
        Storage::Local { .. } => {
            let dir = local_root(storage, working_dir).unwrap_or_default();
            // Created here (not by the fs builder) so a failure names the path and keeps
            // its io kind.
            std::fs::create_dir_all(&dir).context(LocalRootSnafu { path: &dir })?;
            let dir_str = dir.to_str().unwrap_or_default();
            opendal::Operator::new(opendal::services::Fs::default().root(dir_str))
        }
        Storage::S3 {
            region,
            endpoint,
            bucket,
            path_style,
        } => {
            opendal::install_default();
            let region = if region.trim().is_empty() {
                DEFAULT_S3_REGION
            } else {
                region.as_str()
            };
            let mut builder = opendal::services::S3::default()
                .endpoint(endpoint)
                .bucket(bucket)
                .region(region)
                .access_key_id(key_id)
                .secret_access_key(secret)
                .root(&root)
                // Never read AWS_* variables or ~/.aws, never probe instance metadata: the
                // spec's credential is the only one.
                .disable_config_load()
                .disable_ec2_metadata();
            if !path_style {
                builder = builder.enable_virtual_host_style();
            }
            opendal::Operator::new(builder)
        }
        Storage::OBS {
            endpoint, bucket, ..
        } => {
            opendal::install_default();
            opendal::Operator::new(
                opendal::services::Obs::default()
                    .endpoint(endpoint)
                    .bucket(bucket)
                    .access_key_id(key_id)
                    .secret_access_key(secret)
                    .root(&root),
            )
        }
        Storage::OSS {
            endpoint, bucket, ..
        } => {
            opendal::install_default();
            opendal::Operator::new(
                opendal::services::Oss::default()
                    .endpoint(endpoint)
                    .bucket(bucket)
                    .access_key_id(key_id)
                    .access_key_secret(secret)
                    .root(&root),
            )
        }
        Storage::COS {
            endpoint, bucket, ..
        } => {
            opendal::install_default();
            opendal::Operator::new(
                opendal::services::Cos::default()
                    .endpoint(endpoint)
                    .bucket(bucket)
                    .secret_id(key_id)
                    .secret_key(secret)
                    .root(&root)
                    .disable_config_load(),
            )
        }
    };
    let op = op.context(OpenStorageSnafu { storage_type })?;
    Ok(match storage {
        Storage::Local { .. } => op,
        Storage::S3 { .. } | Storage::OBS { .. } | Storage::OSS { .. } | Storage::COS { .. } => op
            .layer(
                opendal::layers::TimeoutLayer::new()
                    .with_timeout(OBJECT_OP_TIMEOUT)
                    .with_io_timeout(OBJECT_IO_TIMEOUT),
            ),
    })
}

/// The storage and credential of `spec`, parsed from their JSON (`InvalidSpec` naming
/// `storage` or `credential`; serde names the offending field).
pub fn parse_spec(spec: &SpaceSpec) -> Result<(Storage, Credential)> {
    let storage: Storage = serde_json::from_str(&spec.storage_json).map_err(|e| {
        InvalidSpecSnafu {
            message: format!("invalid storage: {e}"),
        }
        .build()
    })?;
    let credential: Credential = serde_json::from_str(&spec.credential_json).map_err(|e| {
        InvalidSpecSnafu {
            message: format!("invalid credential: {e}"),
        }
        .build()
    })?;
    Ok((storage, credential))
}

/// The store serving API space `spec`: parse, build the operator (blocking for `Local`: call
/// from `spawn_blocking`) and attach the shared state of its location. Its files (package
/// import/export) get an operator of their own on the storage root (no working dir).
pub fn spec_store(spec: &SpaceSpec, locations: &Locations) -> Result<SpaceStore> {
    let (storage, credential) = parse_spec(spec)?;
    let op = operator(&storage, &credential, &spec.working_dir)?;
    // Package import/export address the storage root, working dir not prepended.
    let root_op = operator(&storage, &credential, "")?;
    let local = local_root(&storage, &spec.working_dir);
    let shared = locations.get(&location_key(&storage, &spec.working_dir));
    let name = if spec.name.is_empty() {
        format!("space-{}", spec.space_id)
    } else {
        spec.name.clone()
    };
    Ok(SpaceStore::new(
        &name,
        op,
        local,
        StoreOptions {
            stores_shards: spec.stores_shards,
            max_size: spec.max_size,
        },
        shared,
    )
    .with_files(FileRoot::new(root_op, &spec.working_dir))
    .with_id(SpaceId(spec.space_id)))
}

#[cfg(test)]
mod tests {
    use common::{CodedError, ErrorCode};

    use super::*;
    use crate::Error;

    fn keys(kind: &str) -> Credential {
        serde_json::from_str(&format!(
            r#"{{"type":"{kind}","accessKeyId":"AKID","secretAccessKey":"very-secret"}}"#
        ))
        .unwrap()
    }

    fn storage(json: &str) -> Storage {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn every_cloud_type_builds_from_the_documented_fields() {
        let cases = [
            (
                r#"{"type":"S3","endpoint":"http://127.0.0.1:9","bucket":"b1"}"#,
                "S3",
                "s3",
            ),
            (
                r#"{"type":"S3","region":"eu-west-1","endpoint":"https://s3.example","bucket":"b1","pathStyle":false}"#,
                "S3",
                "s3",
            ),
            (
                r#"{"type":"OBS","region":"cn-north-4","endpoint":"https://obs.cn-north-4.example","bucket":"b1","projectID":"p"}"#,
                "OBS",
                "obs",
            ),
            (
                r#"{"type":"OSS","region":"cn-hangzhou","endpoint":"https://oss-cn-hangzhou.example","bucket":"b1"}"#,
                "OSS",
                "oss",
            ),
            (
                r#"{"type":"COS","region":"ap-guangzhou","endpoint":"https://cos.ap-guangzhou.example","bucket":"b1"}"#,
                "COS",
                "cos",
            ),
        ];
        for (json, kind, scheme) in cases {
            let s = storage(json);
            for (dir, want_root) in [("", "/"), ("jcs/work", "/jcs/work/"), ("/x/", "/x/")] {
                let op = operator(&s, &keys(kind), dir).unwrap();
                let info = op.info();
                assert_eq!(info.scheme(), scheme, "{json}");
                assert_eq!(info.root(), want_root, "{json} {dir:?}");
                assert_eq!(info.name(), "b1", "{json}");
                let cap = info.capability();
                // No object store renames; all copy server-side (finalize relies on it).
                assert!(!cap.rename && cap.copy && cap.list, "{json}: {cap:?}");
            }
        }
    }

    #[test]
    fn local_builds_under_path_and_working_dir() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("space");
        let s = Storage::Local {
            location: "agent-1".into(),
            path: path.to_str().unwrap().into(),
        };
        let op = operator(&s, &Credential::Local {}, "jcs/work").unwrap();
        assert_eq!(op.info().scheme(), "fs");
        assert!(path.join("jcs/work").is_dir());
        assert!(op.info().capability().rename);
        assert_eq!(
            local_root(&s, "/jcs/work/").unwrap(),
            path.join("jcs").join("work")
        );
        assert_eq!(local_root(&s, "").unwrap(), path);
        assert_eq!(location_key(&s, "jcs/work"), location_key(&s, "/jcs/work/"));
        assert_ne!(location_key(&s, "jcs/work"), location_key(&s, ""));
    }

    #[test]
    fn local_root_that_cannot_be_created_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let path = file.join("space");
        let s = Storage::Local {
            location: String::new(),
            path: path.to_str().unwrap().into(),
        };
        let err = operator(&s, &Credential::Local {}, "").unwrap_err();
        assert!(matches!(err, Error::LocalRoot { .. }), "{err}");
        assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
        assert_ne!(err.code(), ErrorCode::Internal);
    }

    #[test]
    fn mismatched_or_invalid_specs_are_bad_arguments_naming_the_field() {
        let s3 = storage(r#"{"type":"S3","endpoint":"http://h","bucket":"b"}"#);
        let err = operator(&s3, &keys("OSS"), "").unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadArgument);
        assert!(err.to_string().contains("credential.type"), "{err}");

        let err = operator(&s3, &keys("S3"), "a/../b").unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadArgument);
        assert!(err.to_string().contains("workingDir"), "{err}");

        let no_bucket = storage(r#"{"type":"S3","endpoint":"http://h","bucket":" "}"#);
        let err = operator(&no_bucket, &keys("S3"), "").unwrap_err();
        assert!(err.to_string().contains("storage.bucket"), "{err}");

        let spec = SpaceSpec {
            storage_json: r#"{"type":"S3","endpoint":"http://h","buckt":"b"}"#.into(),
            credential_json: r#"{"type":"S3"}"#.into(),
            ..SpaceSpec::default()
        };
        let err = parse_spec(&spec).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadArgument);
        assert!(err.to_string().contains("invalid storage"), "{err}");
        assert!(err.to_string().contains("buckt"), "{err}");

        let spec = SpaceSpec {
            storage_json: r#"{"type":"S3","endpoint":"http://h","bucket":"b"}"#.into(),
            credential_json: r#"{"type":"S3","accessKeyId":"a"}"#.into(),
            ..SpaceSpec::default()
        };
        let err = parse_spec(&spec).unwrap_err();
        assert!(err.to_string().contains("invalid credential"), "{err}");
        assert!(err.to_string().contains("secretAccessKey"), "{err}");
    }

    #[test]
    fn spec_stores_follow_the_spec() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("space");
        let spec = SpaceSpec {
            space_id: 12,
            revision: 3,
            storage_json: format!(
                r#"{{"type":"Local","path":{}}}"#,
                serde_json::to_string(path.to_str().unwrap()).unwrap()
            ),
            credential_json: r#"{"type":"Local"}"#.into(),
            working_dir: "w".into(),
            stores_shards: false,
            max_size: 77,
            name: "twelve".into(),
        };
        let locations = Locations::default();
        let store = spec_store(&spec, &locations).unwrap();
        assert_eq!(store.name(), "twelve");
        assert_eq!(store.local_root(), Some(path.join("w").as_path()));
        assert!(!store.stores_shards());
        assert_eq!(store.max_size(), 77);
        assert_eq!(store.label(), "user space 12");

        let s3 = SpaceSpec {
            storage_json: r#"{"type":"S3","endpoint":"http://127.0.0.1:9","bucket":"b"}"#.into(),
            credential_json: r#"{"type":"S3","accessKeyId":"a","secretAccessKey":"s"}"#.into(),
            ..spec.clone()
        };
        let store = spec_store(&s3, &locations).unwrap();
        assert_eq!(store.local_root(), None);
    }

    #[test]
    fn credential_never_appears_in_debug_output() {
        let s3 = storage(r#"{"type":"S3","endpoint":"http://h","bucket":"b"}"#);
        let op = operator(&s3, &keys("S3"), "").unwrap();
        let text = format!("{op:?} {:?}", keys("S3"));
        assert!(!text.contains("very-secret"), "{text}");
    }
}
