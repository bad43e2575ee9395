//! Errors of the client commands and the exit code each one maps to.

use common::error::{CodedError, ErrorCode};
use snafu::Snafu;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exit codes scripts can rely on (documented in docs/cli.md).
pub mod exit {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    /// Bad command line (clap uses 2 too).
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    /// Name or path taken, concurrent change, or some items of a batch failed.
    pub const CONFLICT: u8 = 4;
    /// The gateway refused the request as unauthenticated (HTTP 401: missing or wrong
    /// credentials, unknown or deleted access key, clock too far off).
    pub const AUTH: u8 = 5;
}

#[derive(Debug, Snafu)]
#[snafu(visibility(pub))]
pub enum Error {
    #[snafu(display("{message}"))]
    Usage { message: String },

    #[snafu(display("{what} not found"))]
    NotFound { what: String },

    #[snafu(display("failed to read config {path}: {message}"))]
    LoadConfig { path: String, message: String },

    #[snafu(display("request to {url} failed: {source}"))]
    SendRequest { url: String, source: reqwest::Error },

    #[snafu(display("bad answer from {url}: {message}"))]
    DecodeAnswer { url: String, message: String },

    /// The gateway answered with an error envelope.
    #[snafu(display("{endpoint}: {code} ({status}): {message}"))]
    Api {
        endpoint: String,
        status: u16,
        code: String,
        message: String,
    },

    #[snafu(display("{action} {path}: {source}"))]
    LocalIo {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },

    #[snafu(display("download of {path} was cut short: got {got} of {expected} bytes"))]
    ShortDownload {
        path: String,
        got: u64,
        expected: u64,
    },

    #[snafu(display("downloaded {path} does not match its hash (expected {expected}, got {got})"))]
    HashMismatch {
        path: String,
        expected: String,
        got: String,
    },

    #[snafu(display("{failed} of {total} items failed"))]
    Partial { failed: usize, total: usize },

    #[snafu(display("interrupted by test hook after {parts} parts"))]
    TestAbort { parts: u64 },

    #[snafu(display("sync task {id} ended {state}"))]
    RunFailed { id: u64, state: String },
}

impl Error {
    pub fn usage(message: impl Into<String>) -> Error {
        Error::Usage {
            message: message.into(),
        }
    }

    pub fn not_found(what: impl Into<String>) -> Error {
        Error::NotFound { what: what.into() }
    }

    pub fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Error {
        Error::LocalIo {
            action,
            path: path.display().to_string(),
            source,
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage { .. } => exit::USAGE,
            Error::Partial { .. } => exit::CONFLICT,
            _ => match self.code() {
                ErrorCode::NotFound => exit::NOT_FOUND,
                ErrorCode::AlreadyExists | ErrorCode::Conflict => exit::CONFLICT,
                ErrorCode::Unauthenticated => exit::AUTH,
                ErrorCode::BadArgument
                | ErrorCode::PermissionDenied
                | ErrorCode::NotLeader
                | ErrorCode::Unavailable
                | ErrorCode::Timeout
                | ErrorCode::Internal => exit::ERROR,
            },
        }
    }

    /// A short machine-readable name for `--json` error output.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Usage { .. } => "Usage",
            Error::NotFound { .. } => "NotFound",
            Error::LoadConfig { .. } => "Config",
            Error::SendRequest { .. } => "Unavailable",
            Error::DecodeAnswer { .. } => "BadAnswer",
            Error::Api { .. } => self.code().as_str(),
            Error::LocalIo { .. } => "LocalIo",
            Error::ShortDownload { .. } => "ShortDownload",
            Error::HashMismatch { .. } => "HashMismatch",
            Error::Partial { .. } => "Partial",
            Error::TestAbort { .. } => "Interrupted",
            Error::RunFailed { .. } => "RunFailed",
        }
    }
}

/// The internal code of a gateway answer, from its HTTP status and envelope `code`.
pub fn code_of_answer(status: u16, code: &str) -> ErrorCode {
    match (status, code) {
        (400, _) | (405, _) => ErrorCode::BadArgument,
        (401, _) => ErrorCode::Unauthenticated,
        (403, _) => ErrorCode::PermissionDenied,
        (404, _) => ErrorCode::NotFound,
        (409, "DataExists") => ErrorCode::AlreadyExists,
        (409, _) => ErrorCode::Conflict,
        (503, _) => ErrorCode::Unavailable,
        (504, _) => ErrorCode::Timeout,
        (_, "DataNotFound") => ErrorCode::NotFound,
        (_, "DataExists") => ErrorCode::AlreadyExists,
        (_, "BadArgument") => ErrorCode::BadArgument,
        _ => ErrorCode::Internal,
    }
}

impl CodedError for Error {
    fn code(&self) -> ErrorCode {
        match self {
            Error::Usage { .. } => ErrorCode::BadArgument,
            Error::NotFound { .. } => ErrorCode::NotFound,
            Error::LoadConfig { .. } => ErrorCode::BadArgument,
            Error::SendRequest { .. } => ErrorCode::Unavailable,
            Error::DecodeAnswer { .. } => ErrorCode::Internal,
            Error::Api { status, code, .. } => code_of_answer(*status, code),
            Error::LocalIo { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => ErrorCode::NotFound,
                std::io::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
                std::io::ErrorKind::AlreadyExists => ErrorCode::AlreadyExists,
                _ => ErrorCode::Internal,
            },
            Error::ShortDownload { .. } => ErrorCode::Unavailable,
            Error::HashMismatch { .. } => ErrorCode::Internal,
            Error::Partial { .. } => ErrorCode::Conflict,
            Error::TestAbort { .. } => ErrorCode::Internal,
            Error::RunFailed { .. } => ErrorCode::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_exit_codes() {
        let api = |status, code: &str| Error::Api {
            endpoint: "x".into(),
            status,
            code: code.into(),
            message: String::new(),
        };
        assert_eq!(api(404, "DataNotFound").exit_code(), exit::NOT_FOUND);
        assert_eq!(api(409, "DataExists").exit_code(), exit::CONFLICT);
        assert_eq!(api(409, "OperationFailed").exit_code(), exit::CONFLICT);
        assert_eq!(api(500, "OperationFailed").exit_code(), exit::ERROR);
        assert_eq!(api(400, "BadArgument").exit_code(), exit::ERROR);
        assert_eq!(api(401, "Unauthorized").exit_code(), exit::AUTH);
        assert_eq!(Error::usage("x").exit_code(), exit::USAGE);
        assert_eq!(
            Error::Partial {
                failed: 1,
                total: 2
            }
            .exit_code(),
            exit::CONFLICT
        );
    }
}
