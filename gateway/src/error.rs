//! Errors: the crate's own [`Error`] (building and serving) and [`ApiError`], the JCS
//! envelope every failed `/v1` request answers with.
//!
//! [`http_status`] is the one place that maps an [`ErrorCode`] to an HTTP status and a JCS
//! `code` string.

use std::fmt;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use common::{CodedError, ErrorCode};
use serde::Serialize;
use snafu::Snafu;

/// Failure to build or run a [`crate::Gateway`].
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum Error {
    /// The configuration failed [`crate::GatewayConfig::validate`].
    #[snafu(display("invalid gateway configuration: {message}"))]
    InvalidConfig { message: String },
    /// `Gateway::build` was called outside a Tokio runtime (gRPC channels need one).
    #[snafu(display("the gateway must be built inside a tokio runtime"))]
    NoRuntime,
    /// The coordinator address could not be turned into a gRPC channel.
    #[snafu(display("failed to create the coordinator client for {address}"))]
    CoordinatorClient {
        address: String,
        source: client::Error,
    },
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl CodedError for Error {
    fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidConfig { .. } => ErrorCode::BadArgument,
            Error::NoRuntime => ErrorCode::Internal,
            Error::CoordinatorClient { source, .. } => source.code(),
        }
    }
}

/// JCS `code` of every successful response.
pub const OK_CODE: &str = "OK";

/// HTTP status and JCS `code` string of an [`ErrorCode`]: the single mapping used by every
/// error response of the gateway.
pub fn http_status(code: ErrorCode) -> (StatusCode, &'static str) {
    match code {
        ErrorCode::BadArgument => (StatusCode::BAD_REQUEST, "BadArgument"),
        ErrorCode::NotFound => (StatusCode::NOT_FOUND, "DataNotFound"),
        ErrorCode::AlreadyExists => (StatusCode::CONFLICT, "DataExists"),
        ErrorCode::Conflict => (StatusCode::CONFLICT, "OperationFailed"),
        ErrorCode::Unauthenticated => (StatusCode::UNAUTHORIZED, "Unauthorized"),
        ErrorCode::PermissionDenied => (StatusCode::FORBIDDEN, "OperationFailed"),
        ErrorCode::Unavailable | ErrorCode::NotLeader => {
            (StatusCode::SERVICE_UNAVAILABLE, "OperationFailed")
        }
        ErrorCode::Timeout => (StatusCode::GATEWAY_TIMEOUT, "OperationFailed"),
        ErrorCode::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "OperationFailed"),
    }
}

/// Message sent instead of the real one for [`ErrorCode::Internal`] (which is logged).
pub const INTERNAL_MESSAGE: &str = "internal error";

/// A failed `/v1` request: answered as `{"code": <JCS code>, "message": ..., "data": null}`
/// with the HTTP status of [`http_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// What kind of failure this is.
    pub code: ErrorCode,
    /// Human-readable cause; for client errors it names the offending field.
    pub message: String,
}

impl ApiError {
    /// An error with any code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// Invalid input ([`ErrorCode::BadArgument`]).
    pub fn bad_argument(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::BadArgument, message)
    }

    /// Something that does not exist ([`ErrorCode::NotFound`]).
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::NotFound, message)
    }

    /// A fault of the system ([`ErrorCode::Internal`]); the message is logged, not sent.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Internal, message)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<client::Error> for ApiError {
    fn from(err: client::Error) -> Self {
        match err {
            client::Error::Remote { code, message, .. } => ApiError::new(code, message),
            // An address handed out by the coordinator (or configured) that is not a URI.
            client::Error::InvalidAddress { .. } | client::Error::TlsConfig { .. } => {
                ApiError::internal(common::error::ErrorChain(&err).to_string())
            }
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        client::Error::from(status).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, jcs_code) = http_status(self.code);
        let message = if self.code == ErrorCode::Internal {
            tracing::error!(error = %self.message, "request failed with an internal error");
            INTERNAL_MESSAGE.to_owned()
        } else {
            if status.is_server_error() {
                tracing::warn!(code = %self.code, error = %self.message, "request failed");
            } else {
                tracing::debug!(code = %self.code, error = %self.message, "request rejected");
            }
            self.message
        };
        envelope_response(status, jcs_code, &message, ())
    }
}

/// A successful response: `{"code": "OK", "message": "", "data": <T>}` with HTTP 200.
/// `ApiOk(())` answers `"data": null`.
#[derive(Debug, Clone)]
pub struct ApiOk<T>(pub T);

impl<T: Serialize> IntoResponse for ApiOk<T> {
    fn into_response(self) -> Response {
        envelope_response(StatusCode::OK, OK_CODE, "", self.0)
    }
}

#[derive(Serialize)]
struct Envelope<'a, T> {
    code: &'a str,
    message: &'a str,
    data: T,
}

/// The JSON envelope as bytes.
pub(crate) fn envelope_json<T: Serialize>(
    code: &str,
    message: &str,
    data: T,
) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&Envelope {
        code,
        message,
        data,
    })
}

/// An envelope response with an explicit status; used by [`ApiError`], [`ApiOk`] and the
/// 405 fallback.
pub(crate) fn envelope_response<T: Serialize>(
    status: StatusCode,
    code: &str,
    message: &str,
    data: T,
) -> Response {
    match envelope_json(code, message, data) {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "failed to serialize a response envelope");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                r#"{"code":"OperationFailed","message":"internal error","data":null}"#,
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_string(resp: Response) -> String {
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn every_code_has_a_status_and_jcs_code() {
        let table = [
            (ErrorCode::BadArgument, 400, "BadArgument"),
            (ErrorCode::Unauthenticated, 401, "Unauthorized"),
            (ErrorCode::PermissionDenied, 403, "OperationFailed"),
            (ErrorCode::NotFound, 404, "DataNotFound"),
            (ErrorCode::AlreadyExists, 409, "DataExists"),
            (ErrorCode::Conflict, 409, "OperationFailed"),
            (ErrorCode::NotLeader, 503, "OperationFailed"),
            (ErrorCode::Unavailable, 503, "OperationFailed"),
            (ErrorCode::Timeout, 504, "OperationFailed"),
            (ErrorCode::Internal, 500, "OperationFailed"),
        ];
        assert_eq!(table.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            let (_, status, jcs) = table.iter().find(|(c, ..)| *c == code).unwrap();
            assert_eq!(
                http_status(code),
                (StatusCode::from_u16(*status).unwrap(), *jcs)
            );
        }
    }

    #[tokio::test]
    async fn error_envelope_golden() {
        let resp = ApiError::not_found("bucket \"b\" not found").into_response();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            body_string(resp).await,
            r#"{"code":"DataNotFound","message":"bucket \"b\" not found","data":null}"#
        );
    }

    #[tokio::test]
    async fn internal_error_hides_the_message() {
        let resp = ApiError::internal("disk /secret/path exploded").into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body_string(resp).await,
            r#"{"code":"OperationFailed","message":"internal error","data":null}"#
        );
    }

    #[tokio::test]
    async fn ok_envelope_golden() {
        assert_eq!(
            body_string(ApiOk(()).into_response()).await,
            r#"{"code":"OK","message":"","data":null}"#
        );
        let resp =
            ApiOk(serde_json::json!({"bucket": {"bucketID": 1, "name": "b"}})).into_response();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            body_string(resp).await,
            r#"{"code":"OK","message":"","data":{"bucket":{"bucketID":1,"name":"b"}}}"#
        );
    }

    #[test]
    fn remote_errors_keep_their_code() {
        let status = common::error::status(ErrorCode::AlreadyExists, "bucket b exists");
        let err = ApiError::from(status);
        assert_eq!(
            err,
            ApiError::new(ErrorCode::AlreadyExists, "bucket b exists")
        );
        let plain = ApiError::from(tonic::Status::unavailable("connection refused"));
        assert_eq!(plain.code, ErrorCode::Unavailable);
        assert!(
            plain.message.contains("connection refused"),
            "{}",
            plain.message
        );
    }
}
