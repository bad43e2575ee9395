//! `/v1` handlers (thin: parse, validate, call the coordinator, render) and the probes and
//! fallbacks shared by all routes.

pub mod bucket;
pub mod multipart;
pub mod object;
pub mod package;
pub mod space_syncer;
pub mod user_space;

use std::time::Duration;

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::ErrorCode;
use proto::coordinator::ListBucketsRequest;

use crate::error::{ApiError, envelope_response, http_status};
use crate::state::AppState;

/// Deadline of the `/readyz` coordinator probe.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

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

/// `GET /healthz`: the process is up.
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: the coordinator answers. Any answer other than "unavailable" or "timeout"
/// (even an error) proves it is reachable.
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let user_id = state.config().default_user_id;
    let mut coordinator = state.coordinator();
    let probe = coordinator.list_buckets(ListBucketsRequest { user_id });
    let failure = match tokio::time::timeout(READY_TIMEOUT, probe).await {
        Err(_) => Some(format!(
            "coordinator did not answer within {READY_TIMEOUT:?}"
        )),
        Ok(Ok(_)) => None,
        Ok(Err(status)) => {
            let err = ApiError::from(status);
            match err.code {
                ErrorCode::Unavailable | ErrorCode::Timeout => {
                    Some(format!("coordinator unavailable: {}", err.message))
                }
                _ => None,
            }
        }
    };
    match failure {
        None => (StatusCode::OK, "ok").into_response(),
        Some(reason) => {
            tracing::warn!(%reason, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, reason).into_response()
        }
    }
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
