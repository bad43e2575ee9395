//! `/v1` handlers (thin: parse, validate, call the coordinator, render) and the fallbacks
//! shared by all routes (the probes live in `ops`).

pub mod admin;
pub mod bucket;
pub mod multipart;
pub mod object;
pub mod package;
pub mod space_syncer;
pub mod user_space;

use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use common::ErrorCode;

use crate::error::{ApiError, envelope_response, http_status};

/// An id field: missing (or `null`) and 0 are both bad arguments naming `field`.
pub(crate) fn require_id(field: &str, value: Option<u64>) -> Result<u64, ApiError> {
    match value {
        None => Err(ApiError::bad_argument(format!("missing field `{field}`"))),
        Some(0) => Err(ApiError::bad_argument(format!(
            "field `{field}` must be a positive id (got 0)"
        ))),
        Some(id) => Ok(id),
    }
}

/// A bucket, package or user space name, checked with [`common::path::validate_name`].
pub(crate) fn require_name(kind: &str, name: &str) -> Result<(), ApiError> {
    common::path::validate_name(kind, name).map_err(ApiError::bad_argument)
}

/// Unknown path: a `DataNotFound` envelope with HTTP 404.
pub(crate) async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {method} {}", uri.path()))
}

/// Known path, wrong method: a `BadArgument` envelope with HTTP 405 (axum adds `Allow`).
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let (_, code) = http_status(ErrorCode::BadArgument);
    envelope_response(
        StatusCode::METHOD_NOT_ALLOWED,
        code,
        &format!("method {method} is not allowed on {}", uri.path()),
        (),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_present_and_positive() {
        assert_eq!(require_id("bucketID", Some(7)), Ok(7));
        assert_eq!(
            require_id("bucketID", None).unwrap_err().message,
            "missing field `bucketID`"
        );
        assert!(
            require_id("packageID", Some(0))
                .unwrap_err()
                .message
                .contains("`packageID`")
        );
    }
}
