//! The closed set of error codes every crate maps its errors to, and the gRPC boundary helpers.

use std::fmt;

/// Closed set of error codes. Every crate's error type maps to one of these exhaustively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    AlreadyExists,
    /// A compare-and-swap or precondition failed; retrying the whole operation may succeed.
    Conflict,
    NotLeader,
    Unavailable,
    Timeout,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::BadArgument,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::Conflict,
        ErrorCode::NotLeader,
        ErrorCode::Unavailable,
        ErrorCode::Timeout,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadArgument => "BadArgument",
            ErrorCode::Unauthenticated => "Unauthenticated",
            ErrorCode::PermissionDenied => "PermissionDenied",
            ErrorCode::NotFound => "NotFound",
            ErrorCode::AlreadyExists => "AlreadyExists",
            ErrorCode::Conflict => "Conflict",
            ErrorCode::NotLeader => "NotLeader",
            ErrorCode::Unavailable => "Unavailable",
            ErrorCode::Timeout => "Timeout",
            ErrorCode::Internal => "Internal",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorCode::BadArgument => tonic::Code::InvalidArgument,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
            ErrorCode::Conflict => tonic::Code::Aborted,
            ErrorCode::NotLeader => tonic::Code::FailedPrecondition,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::Timeout => tonic::Code::DeadlineExceeded,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }

    /// Best guess for a status that did not carry `x-jcs-code` (e.g. produced by tonic itself).
    pub fn from_grpc_code(code: tonic::Code) -> ErrorCode {
        match code {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => ErrorCode::BadArgument,
            tonic::Code::Unauthenticated => ErrorCode::Unauthenticated,
            tonic::Code::PermissionDenied => ErrorCode::PermissionDenied,
            tonic::Code::NotFound => ErrorCode::NotFound,
            tonic::Code::AlreadyExists => ErrorCode::AlreadyExists,
            tonic::Code::Aborted => ErrorCode::Conflict,
            tonic::Code::FailedPrecondition => ErrorCode::NotLeader,
            tonic::Code::Unavailable => ErrorCode::Unavailable,
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => ErrorCode::Timeout,
            tonic::Code::Ok
            | tonic::Code::Unknown
            | tonic::Code::ResourceExhausted
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::DataLoss => ErrorCode::Internal,
        }
    }

    /// Unavailable, Timeout and NotLeader may succeed when retried; nothing else does.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Unavailable | ErrorCode::Timeout | ErrorCode::NotLeader
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error that knows its [`ErrorCode`].
pub trait CodedError: std::error::Error {
    fn code(&self) -> ErrorCode;
}

/// gRPC metadata key carrying the [`ErrorCode`] across a hop.
pub const CODE_HEADER: &str = "x-jcs-code";
/// gRPC metadata key carrying whether a retry may succeed.
pub const RETRYABLE_HEADER: &str = "x-jcs-retryable";

/// Build the `tonic::Status` for an error at a gRPC boundary. Internal errors get a generic
/// message (the caller logs the chain); every other code keeps its message.
pub fn status(code: ErrorCode, message: impl Into<String>) -> tonic::Status {
    let message = if code == ErrorCode::Internal {
        "internal error".to_owned()
    } else {
        message.into()
    };
    let mut status = tonic::Status::new(code.grpc_code(), message);
    let md = status.metadata_mut();
    md.insert(
        CODE_HEADER,
        tonic::metadata::MetadataValue::from_static(code.as_str()),
    );
    md.insert(
        RETRYABLE_HEADER,
        tonic::metadata::MetadataValue::from_static(if code.is_retryable() {
            "true"
        } else {
            "false"
        }),
    );
    status
}

/// Turn any coded error into a status, logging internal ones with their whole chain.
pub fn to_status<E: CodedError>(err: &E) -> tonic::Status {
    let code = err.code();
    if code == ErrorCode::Internal {
        tracing::error!(error = %ErrorChain(err), "rpc failed");
    }
    status(code, ErrorChain(err).to_string())
}

/// The code a status carries: `x-jcs-code` when present, else derived from the gRPC code.
pub fn code_of(status: &tonic::Status) -> ErrorCode {
    status
        .metadata()
        .get(CODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(ErrorCode::parse)
        .unwrap_or_else(|| ErrorCode::from_grpc_code(status.code()))
}

/// Displays an error followed by its sources: `a: b: c`.
pub struct ErrorChain<'a, E: ?Sized>(pub &'a E);

impl<E: std::error::Error + ?Sized> fmt::Display for ErrorChain<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_survives_a_status_round_trip() {
        for code in ErrorCode::ALL {
            let s = status(code, "boom");
            assert_eq!(code_of(&s), code);
            let retry = s
                .metadata()
                .get(RETRYABLE_HEADER)
                .unwrap()
                .to_str()
                .unwrap();
            assert_eq!(retry == "true", code.is_retryable());
        }
    }

    #[test]
    fn internal_status_hides_the_message() {
        assert_eq!(
            status(ErrorCode::Internal, "secret path").message(),
            "internal error"
        );
        assert_eq!(
            status(ErrorCode::NotFound, "no bucket 7").message(),
            "no bucket 7"
        );
    }

    #[test]
    fn status_without_header_maps_from_grpc_code() {
        let s = tonic::Status::unavailable("down");
        assert_eq!(code_of(&s), ErrorCode::Unavailable);
        assert!(code_of(&s).is_retryable());
    }
}
