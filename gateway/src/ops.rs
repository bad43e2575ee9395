//! Operations endpoints and layers of the gateway: `/healthz`, `/readyz`, `/metrics`, the
//! request-id layer and the HTTP metrics layer. `server::router` wires them in.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::ErrorCode;
use common::metrics::{InFlight, metrics};
use proto::coordinator::ListBucketsRequest;

use crate::error::{ApiError, envelope_response};
use crate::state::AppState;

/// Header carrying the request id (taken from the request when sane, else generated).
pub const REQUEST_ID_HEADER: &str = common::request_id::HEADER;

/// Deadline of the `/readyz` coordinator probe.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Route label of requests that matched no route (keeps the label set bounded).
const UNMATCHED: &str = "<unmatched>";

/// `/healthz`, `/readyz` and `/metrics`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(common::metrics::handler))
}

/// `GET /healthz`: the process is up (liveness).
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: the coordinator answers a cheap call (readiness). Any answer other than
/// "unavailable" or "timeout" (even an error) proves it is reachable. Not ready is a 503
/// envelope whose message names the coordinator and the cause.
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let user_id = state.config().default_user_id;
    let address = state.config().coordinator.clone();
    let mut coordinator = state.coordinator();
    let probe = coordinator.list_buckets(ListBucketsRequest { user_id });
    let failure = match tokio::time::timeout(READY_TIMEOUT, probe).await {
        Err(_) => Some(format!(
            "not ready: coordinator {address} did not answer within {READY_TIMEOUT:?}"
        )),
        Ok(Ok(_)) => None,
        Ok(Err(status)) => {
            let err = ApiError::from(status);
            match err.code {
                ErrorCode::Unavailable | ErrorCode::Timeout => Some(format!(
                    "not ready: coordinator {address} unavailable: {}",
                    err.message
                )),
                _ => None,
            }
        }
    };
    match failure {
        None => envelope_response(StatusCode::OK, "OK", "ready", ()),
        Some(reason) => {
            tracing::warn!(%reason, "readiness probe failed");
            ApiError::new(ErrorCode::Unavailable, reason).into_response()
        }
    }
}

/// Ensure every request has an `x-request-id` (kept if sane, else generated), run the
/// handler with it as the current request id (so every gRPC call carries it), and echo it.
pub(crate) async fn request_id_layer(mut req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| common::request_id::sanitize(v.as_bytes()))
        .map(str::to_owned);
    let id = given.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let Ok(value) = HeaderValue::try_from(id.as_str()) else {
        return next.run(req).await;
    };
    req.headers_mut().insert(REQUEST_ID_HEADER, value.clone());
    let mut resp = common::request_id::scope(id, next.run(req)).await;
    resp.headers_mut().insert(REQUEST_ID_HEADER, value);
    resp
}

/// Count and time every request by method, matched route and status; track in-flight ones.
pub(crate) async fn metrics_layer(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let method = req.method().clone();
    let start = Instant::now();
    let resp = {
        let _in_flight = InFlight::new(&metrics().http_in_flight, &route);
        next.run(req).await
    };
    metrics().observe_http(
        method.as_str(),
        &route,
        resp.status().as_u16(),
        start.elapsed(),
    );
    resp
}
