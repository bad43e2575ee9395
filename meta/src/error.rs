//! Errors of the metadata store, named after the action that failed.

use std::path::PathBuf;

use common::{CodedError, ErrorCode};
use snafu::Snafu;

/// Everything that can go wrong in a [`crate::MetaStore`] backend or helper.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum Error {
    /// Building the etcd client or the first round trip to etcd failed.
    #[snafu(display("failed to connect to etcd at {endpoints}"))]
    ConnectEtcd {
        endpoints: String,
        source: etcd_client::Error,
        #[snafu(implicit)]
        location: snafu::Location,
    },

    /// An etcd RPC (`get`, `range`, `put`, `delete`, `txn`) failed.
    #[snafu(display("etcd {action} request failed"))]
    EtcdRequest {
        action: &'static str,
        source: etcd_client::Error,
        #[snafu(implicit)]
        location: snafu::Location,
    },

    /// An etcd response lacked something every response carries (such as its header).
    #[snafu(display("failed to decode etcd {action} response: {reason}"))]
    DecodeEtcdResponse {
        action: &'static str,
        reason: &'static str,
        #[snafu(implicit)]
        location: snafu::Location,
    },

    /// The parent directory of a redb file could not be created.
    #[snafu(display("failed to create directory {} for the redb file", path.display()))]
    CreateDataDir {
        path: PathBuf,
        source: std::io::Error,
        #[snafu(implicit)]
        location: snafu::Location,
    },

    /// The redb file could not be created or opened (for example, another process holds it).
    #[snafu(display("failed to open redb file {}", path.display()))]
    OpenRedb {
        path: PathBuf,
        #[snafu(source(from(redb::Error, Box::new)))]
        source: Box<redb::Error>,
        #[snafu(implicit)]
        location: snafu::Location,
    },

    /// A redb transaction, table access or commit failed.
    #[snafu(display("redb {action} failed"))]
    RedbRequest {
        action: &'static str,
        #[snafu(source(from(redb::Error, Box::new)))]
        source: Box<redb::Error>,
        #[snafu(implicit)]
        location: snafu::Location,
    },

    /// A stored value is shorter than its revision header.
    #[snafu(display("failed to decode the stored value of key {}: {reason}", key.escape_ascii()))]
    DecodeValue {
        key: Vec<u8>,
        reason: String,
        #[snafu(implicit)]
        location: snafu::Location,
    },

    /// A blocking task (redb work runs on the blocking pool) panicked or was cancelled.
    #[snafu(display("blocking task for {action} did not complete"))]
    Join {
        action: &'static str,
        source: tokio::task::JoinError,
        #[snafu(implicit)]
        location: snafu::Location,
    },

    /// A transaction has more compares, or more operations in one branch, than the store
    /// accepts. Nothing was sent or written.
    #[snafu(display("transaction has {ops} operations in one part, more than the limit of {max}"))]
    TxnTooLarge {
        ops: usize,
        max: usize,
        #[snafu(implicit)]
        location: snafu::Location,
    },

    /// A transaction branch puts one key twice, or puts and deletes the same key (etcd rejects
    /// both). Nothing was sent or written.
    #[snafu(display("transaction writes key {} more than once in one branch", key.escape_ascii()))]
    DuplicateTxnKey {
        key: Vec<u8>,
        #[snafu(implicit)]
        location: snafu::Location,
    },

    /// A lease unknown to an embedded store (never granted here, or revoked).
    #[snafu(display("lease {lease} does not exist"))]
    LeaseNotFound {
        lease: i64,
        #[snafu(implicit)]
        location: snafu::Location,
    },

    /// A write through [`crate::Fenced`] found the fence key changed: the writer is no longer
    /// the leader it was when the fence was taken. Nothing was written.
    #[snafu(display("write refused: fence key {} changed (this node is no longer the leader)", key.escape_ascii()))]
    Fenced {
        key: Vec<u8>,
        #[snafu(implicit)]
        location: snafu::Location,
    },

    /// A fenced transaction had writes in its `otherwise` branch, which the fence cannot guard.
    #[snafu(display("a fenced transaction may only read in its otherwise branch"))]
    FencedOtherwiseWrites {
        #[snafu(implicit)]
        location: snafu::Location,
    },
}

/// `Result` with this crate's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl CodedError for Error {
    fn code(&self) -> ErrorCode {
        match self {
            Error::ConnectEtcd { source, .. } | Error::EtcdRequest { source, .. } => {
                etcd_error_code(source)
            }
            Error::DecodeEtcdResponse { .. }
            | Error::CreateDataDir { .. }
            | Error::OpenRedb { .. }
            | Error::RedbRequest { .. }
            | Error::DecodeValue { .. }
            | Error::Join { .. }
            | Error::TxnTooLarge { .. }
            | Error::DuplicateTxnKey { .. }
            | Error::FencedOtherwiseWrites { .. } => ErrorCode::Internal,
            Error::LeaseNotFound { .. } => ErrorCode::Conflict,
            Error::Fenced { .. } => ErrorCode::NotLeader,
        }
    }
}

/// Transport failures and etcd's own "unavailable" (no leader, server timeout) are worth a
/// retry; a client-side deadline is a timeout; anything else is a bug or a misconfiguration.
fn etcd_error_code(error: &etcd_client::Error) -> ErrorCode {
    match error {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            ErrorCode::Unavailable
        }
        etcd_client::Error::GRpcStatus(status) => match ErrorCode::from_grpc_code(status.code()) {
            code @ (ErrorCode::Unavailable | ErrorCode::Timeout) => code,
            _ => ErrorCode::Internal,
        },
        _ => ErrorCode::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snafu::ResultExt;

    fn etcd_status_error(status: etcd_client::Error) -> Error {
        Err::<(), _>(status)
            .context(EtcdRequestSnafu { action: "get" })
            .unwrap_err()
    }

    #[test]
    fn etcd_errors_map_to_codes_by_cause() {
        let io = etcd_status_error(etcd_client::Error::IoError(std::io::Error::other("reset")));
        assert_eq!(io.code(), ErrorCode::Unavailable);

        let invalid = etcd_status_error(etcd_client::Error::InvalidArgs("bad".into()));
        assert_eq!(invalid.code(), ErrorCode::Internal);
    }

    #[test]
    fn local_failures_are_internal() {
        let too_large = TxnTooLargeSnafu {
            ops: 129usize,
            max: 128usize,
        }
        .build();
        assert_eq!(too_large.code(), ErrorCode::Internal);
        assert_eq!(
            too_large.to_string(),
            "transaction has 129 operations in one part, more than the limit of 128"
        );
        let dup = DuplicateTxnKeySnafu {
            key: b"a\xff".to_vec(),
        }
        .build();
        assert_eq!(dup.code(), ErrorCode::Internal);
        assert_eq!(
            dup.to_string(),
            "transaction writes key a\\xff more than once in one branch"
        );
    }
}
