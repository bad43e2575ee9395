//! `TestStorage`: check that a storage configuration works from this agent by listing its
//! working dir, then writing, reading back and deleting a small probe object, all within a
//! bounded time. Failures are classified so the message says what is wrong (endpoint,
//! credential, bucket, path) and never contains the secret.

use std::time::Duration;

use bytes::Bytes;
use common::ErrorCode;
use common::space::{Credential, MASK, Storage};
use futures::TryStreamExt;
use proto::common::SpaceSpec;
use snafu::ResultExt;
use tracing::{debug, warn};

use crate::backend;
use crate::error::{BuildTaskSnafu, Error, Result};

/// Longest a whole probe (building the operator included) may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Prefix of the probe object's name, inside the working dir.
pub const PROBE_PREFIX: &str = ".jcs-probe-";

/// One step of the probe, named in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    List,
    Write,
    Read,
    Delete,
}

impl Step {
    fn as_str(self) -> &'static str {
        match self {
            Step::List => "listing the working dir",
            Step::Write => "writing a probe object",
            Step::Read => "reading the probe object back",
            Step::Delete => "deleting the probe object",
        }
    }
}

/// Why the probe failed, before classification.
enum Failure {
    Storage(Step, opendal::Error),
    Mismatch { wrote: usize, read: usize },
}

/// Probe the storage of `spec` within `bound`. `Ok` when the working dir lists and a probe
/// object can be written, read back identical and deleted.
///
/// Errors: malformed spec → `BadArgument` naming the field; unreachable endpoint (refused,
/// DNS, no answer within `bound`) → `Unavailable` "cannot reach endpoint …"; refused
/// credential → `PermissionDenied` "the credential was refused: …"; missing bucket →
/// `NotFound` "bucket … does not exist"; a `Local` directory that cannot be created or
/// used → `NotFound` / `PermissionDenied` / `BadArgument` naming the path.
pub async fn test_storage(spec: &SpaceSpec, bound: Duration) -> Result<()> {
    let (storage, credential) = backend::parse_spec(spec)?;
    let secret = credential
        .keys()
        .map(|(_, secret)| secret.to_owned())
        .unwrap_or_default();
    let target = Target::of(&storage, &spec.working_dir);
    let probe = probe(storage, credential, spec.working_dir.clone());
    let outcome = match tokio::time::timeout(bound, probe).await {
        Ok(outcome) => outcome,
        Err(_) => {
            return Err(fail(
                ErrorCode::Unavailable,
                match &target.endpoint {
                    Some(endpoint) => format!(
                        "cannot reach endpoint {endpoint}: no answer within {} s",
                        bound.as_secs_f32()
                    ),
                    None => format!(
                        "directory {} did not answer within {} s",
                        target.place,
                        bound.as_secs_f32()
                    ),
                },
                &secret,
            ));
        }
    };
    match outcome {
        Ok(Ok(())) => {
            debug!(storage = %target.place, "storage probe succeeded");
            Ok(())
        }
        // Building the operator: bad spec, local directory unusable.
        Err(err) => Err(scrub(err, &secret)),
        Ok(Err(failure)) => Err(classify(&target, failure, &secret)),
    }
}

/// What messages say about the storage.
struct Target {
    /// `http(s)://…` of an object store.
    endpoint: Option<String>,
    bucket: Option<String>,
    /// Human description: `bucket b at http://…` or the local directory.
    place: String,
    local: bool,
}

impl Target {
    fn of(storage: &Storage, working_dir: &str) -> Target {
        match storage {
            Storage::Local { .. } => {
                let dir = backend::local_root(storage, working_dir).unwrap_or_default();
                Target {
                    endpoint: None,
                    bucket: None,
                    place: dir.display().to_string(),
                    local: true,
                }
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
            } => Target {
                endpoint: Some(endpoint.clone()),
                bucket: Some(bucket.clone()),
                place: format!("bucket {bucket} at {endpoint}"),
                local: false,
            },
        }
    }
}

/// Build the operator (on the blocking pool: `Local` creates its directory), then run the
/// steps. The outer `Result` is the build, the inner one the steps.
async fn probe(
    storage: Storage,
    credential: Credential,
    working_dir: String,
) -> Result<std::result::Result<(), Failure>> {
    let op =
        tokio::task::spawn_blocking(move || backend::operator(&storage, &credential, &working_dir))
            .await
            .context(BuildTaskSnafu)??;
    Ok(run_steps(&op).await)
}

async fn run_steps(op: &opendal::Operator) -> std::result::Result<(), Failure> {
    // Listing first: it fails on a missing bucket even where a write would create it, and
    // GC needs it anyway.
    let mut lister = op
        .lister_with("")
        .limit(1)
        .await
        .map_err(|e| Failure::Storage(Step::List, e))?;
    lister
        .try_next()
        .await
        .map_err(|e| Failure::Storage(Step::List, e))?;
    drop(lister);

    let id = uuid::Uuid::new_v4();
    let path = format!("{PROBE_PREFIX}{id}");
    let wrote = Bytes::from(format!("jcs storage probe {id}\n"));
    op.write(&path, wrote.clone())
        .await
        .map_err(|e| Failure::Storage(Step::Write, e))?;
    let checked = async {
        let read = op
            .read(&path)
            .await
            .map_err(|e| Failure::Storage(Step::Read, e))?
            .to_bytes();
        if read != wrote {
            return Err(Failure::Mismatch {
                wrote: wrote.len(),
                read: read.len(),
            });
        }
        Ok(())
    }
    .await;
    let deleted = op
        .delete(&path)
        .await
        .map_err(|e| Failure::Storage(Step::Delete, e));
    if checked.is_err()
        && let Err(Failure::Storage(_, e)) = &deleted
    {
        warn!(path = %path, error = %e, "could not remove the storage probe object");
    }
    checked.and(deleted)
}

/// Turn a probe failure into the error the caller sees.
fn classify(target: &Target, failure: Failure, secret: &str) -> Error {
    let (step, err) = match failure {
        Failure::Mismatch { wrote, read } => {
            return fail(
                ErrorCode::BadArgument,
                format!(
                    "{} returned different bytes for the probe object: wrote {wrote}, read {read}",
                    target.place
                ),
                secret,
            );
        }
        Failure::Storage(step, err) => (step, err),
    };
    let step_name = step.as_str();
    let text = err.to_string();
    // Opendal reports a missing bucket on listing as ConfigInvalid; the S3 code says it.
    let no_bucket = !target.local && text.contains("NoSuchBucket");
    let refused = !target.local && REFUSED_CODES.iter().any(|c| text.contains(c));
    let kind = if no_bucket {
        opendal::ErrorKind::NotFound
    } else if refused {
        opendal::ErrorKind::PermissionDenied
    } else {
        err.kind()
    };
    let (code, message) = match kind {
        opendal::ErrorKind::PermissionDenied if target.local => (
            ErrorCode::PermissionDenied,
            format!(
                "permission denied on {} while {step_name}: {err}",
                target.place
            ),
        ),
        opendal::ErrorKind::PermissionDenied => (
            ErrorCode::PermissionDenied,
            format!("the credential was refused while {step_name}: {err}"),
        ),
        opendal::ErrorKind::NotFound if target.local => (
            ErrorCode::NotFound,
            format!("directory {} does not exist: {err}", target.place),
        ),
        opendal::ErrorKind::NotFound if no_bucket || matches!(step, Step::List | Step::Write) => (
            ErrorCode::NotFound,
            format!(
                "bucket {} does not exist: {err}",
                target.bucket.as_deref().unwrap_or_default()
            ),
        ),
        _ if is_connect_error(&err) => (
            ErrorCode::Unavailable,
            format!(
                "cannot reach endpoint {}: {err}",
                target.endpoint.as_deref().unwrap_or(&target.place)
            ),
        ),
        _ if err.is_temporary() => (
            ErrorCode::Unavailable,
            format!("{} is unavailable while {step_name}: {err}", target.place),
        ),
        _ => (
            ErrorCode::BadArgument,
            format!("{} failed while {step_name}: {err}", target.place),
        ),
    };
    fail(code, message, secret)
}

/// S3-style error codes meaning the credential was refused, whatever HTTP status carries
/// them.
const REFUSED_CODES: [&str; 4] = [
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidSecurity",
];

/// Whether `err` (or a source of it) is a failure to connect: refused, reset, DNS, timeout,
/// unreachable network.
fn is_connect_error(err: &opendal::Error) -> bool {
    const MARKERS: [&str; 10] = [
        "connection refused",
        "dns error",
        "failed to lookup address",
        "name or service not known",
        "tcp connect error",
        "error trying to connect",
        "connection reset",
        "timed out",
        "network is unreachable",
        "no route to host",
    ];
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            if matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::TimedOut
                    | K::HostUnreachable
                    | K::NetworkUnreachable
                    | K::AddrNotAvailable
            ) {
                return true;
            }
        }
        let text = e.to_string().to_lowercase();
        if MARKERS.iter().any(|m| text.contains(m)) {
            return true;
        }
        source = e.source();
    }
    false
}

/// A `StorageTest` error with `message`, the secret masked out of it.
fn fail(code: ErrorCode, message: String, secret: &str) -> Error {
    Error::StorageTest {
        code,
        message: mask(message, secret),
    }
}

/// `err` as a `StorageTest` error with the same code, the secret masked out of its message.
fn scrub(err: Error, secret: &str) -> Error {
    use common::CodedError;
    let code = err.code();
    if code == ErrorCode::Internal {
        return err;
    }
    fail(code, common::error::ErrorChain(&err).to_string(), secret)
}

/// Shortest secret masked out of messages: our messages never include the secret, masking
/// guards against a service echoing it; a shorter one would garble ordinary words.
const MIN_MASKED_SECRET: usize = 4;

fn mask(message: String, secret: &str) -> String {
    if secret.len() < MIN_MASKED_SECRET {
        message
    } else {
        message.replace(secret, MASK)
    }
}

#[cfg(test)]
mod tests {
    use common::CodedError;

    use super::*;

    fn local_spec(path: &std::path::Path, working_dir: &str) -> SpaceSpec {
        SpaceSpec {
            storage_json: format!(
                r#"{{"type":"Local","path":{}}}"#,
                serde_json::to_string(path.to_str().unwrap()).unwrap()
            ),
            credential_json: r#"{"type":"Local"}"#.into(),
            working_dir: working_dir.into(),
            ..SpaceSpec::default()
        }
    }

    #[tokio::test]
    async fn local_probe_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("space");
        test_storage(&local_spec(&root, "w"), PROBE_TIMEOUT)
            .await
            .unwrap();
        assert!(root.join("w").is_dir());
        assert_eq!(std::fs::read_dir(root.join("w")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn local_path_that_cannot_be_created_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let bad = file.join("space");
        let err = test_storage(&local_spec(&bad, ""), PROBE_TIMEOUT)
            .await
            .unwrap_err();
        assert_ne!(err.code(), ErrorCode::Internal, "{err}");
        assert!(err.to_string().contains(bad.to_str().unwrap()), "{err}");
    }

    #[tokio::test]
    async fn malformed_specs_name_the_field() {
        let spec = SpaceSpec {
            storage_json: r#"{"type":"S3","endpoint":"http://127.0.0.1:1","bucket":""}"#.into(),
            credential_json: r#"{"type":"S3","accessKeyId":"a","secretAccessKey":"s"}"#.into(),
            ..SpaceSpec::default()
        };
        let err = test_storage(&spec, PROBE_TIMEOUT).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadArgument);
        assert!(err.to_string().contains("storage.bucket"), "{err}");
    }

    #[test]
    fn connect_errors_are_recognized_through_the_chain() {
        let refused = opendal::Error::new(opendal::ErrorKind::Unexpected, "send http request")
            .set_source(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_connect_error(&refused));
        let dns = opendal::Error::new(opendal::ErrorKind::Unexpected, "dns error: nope");
        assert!(is_connect_error(&dns));
        let other = opendal::Error::new(opendal::ErrorKind::Unexpected, "bad xml");
        assert!(!is_connect_error(&other));
    }

    #[test]
    fn the_secret_is_masked() {
        let target = Target {
            endpoint: Some("http://h".into()),
            bucket: Some("b".into()),
            place: "bucket b at http://h".into(),
            local: false,
        };
        let err = opendal::Error::new(
            opendal::ErrorKind::PermissionDenied,
            "signature of hunter2 does not match",
        );
        let e = classify(&target, Failure::Storage(Step::Write, err), "hunter2");
        assert_eq!(e.code(), ErrorCode::PermissionDenied);
        assert!(
            e.to_string().starts_with("the credential was refused"),
            "{e}"
        );
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
