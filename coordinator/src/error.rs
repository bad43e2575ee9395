//! Coordinator errors and their codes.

use common::{CodedError, ErrorCode};
use snafu::Snafu;

#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum Error {
    #[snafu(display("{message}"))]
    InvalidArgument { message: String },

    #[snafu(display("{what} not found"))]
    NotFound { what: String },

    #[snafu(display("{what} already exists"))]
    AlreadyExists { what: String },

    #[snafu(display("{what} cannot be deleted: {reason}"))]
    InUse { what: String, reason: String },

    #[snafu(display("no live user space can take the upload: {reason}"))]
    NoLiveSpace { reason: String },

    #[snafu(display("agent {agent} serving user space {space} is down"))]
    AgentDown { agent: String, space: u64 },

    #[snafu(display("metadata request failed"))]
    Meta { source: meta::Error },

    #[snafu(display("failed to decode metadata value at {key}"))]
    DecodeRow {
        key: String,
        source: serde_json::Error,
    },

    #[snafu(display("gave up after {attempts} conflicting concurrent updates of {what}"))]
    Contention { what: String, attempts: usize },

    #[snafu(display("the shard of this upload is being garbage-collected; upload it again"))]
    ShardCollecting,

    #[snafu(display("agent request failed"))]
    Agent { source: client::Error },

    #[snafu(display("agent {address}"))]
    AgentAt {
        address: String,
        source: client::Error,
    },

    /// An agent's `RebuildBlocks` answer does not match the object (a corrupt source block,
    /// a block missing or of the wrong size).
    #[snafu(display("{reason}"))]
    RebuildMismatch { reason: String },

    #[snafu(display("failed to start: {message}"))]
    Startup { message: String },

    #[snafu(display("gRPC server failed"))]
    Serve { source: tonic::transport::Error },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl CodedError for Error {
    fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument { .. } => ErrorCode::BadArgument,
            Error::NotFound { .. } => ErrorCode::NotFound,
            Error::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            Error::NoLiveSpace { .. } | Error::AgentDown { .. } => ErrorCode::Unavailable,
            Error::Meta { source } => source.code(),
            Error::Agent { source } | Error::AgentAt { source, .. } => {
                common::CodedError::code(source)
            }
            Error::RebuildMismatch { .. } => ErrorCode::Internal,
            Error::DecodeRow { .. } | Error::Startup { .. } | Error::Serve { .. } => {
                ErrorCode::Internal
            }
            Error::Contention { .. } | Error::ShardCollecting | Error::InUse { .. } => {
                ErrorCode::Conflict
            }
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        common::error::to_status(&e)
    }
}

impl From<meta::Error> for Error {
    fn from(source: meta::Error) -> Self {
        Error::Meta { source }
    }
}

pub(crate) fn bad(message: impl Into<String>) -> Error {
    Error::InvalidArgument {
        message: message.into(),
    }
}

pub(crate) fn not_found(what: impl Into<String>) -> Error {
    Error::NotFound { what: what.into() }
}

pub(crate) fn exists(what: impl Into<String>) -> Error {
    Error::AlreadyExists { what: what.into() }
}
