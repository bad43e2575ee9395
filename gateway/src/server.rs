//! Wiring: [`Gateway::build`], [`router`] and [`Gateway::serve`].

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use client::{AgentPool, ChannelOptions};
use common::ErrorCode;
use snafu::ResultExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::config::GatewayConfig;
use crate::error::{ApiError, CoordinatorClientSnafu, Error, Result, ServeSnafu};
use crate::routes::{self, bucket, object, package};
use crate::state::AppState;

/// Header carrying the request id (taken from the request when sane, else generated).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A stateless HTTP gateway: `/v1` over coordinator gRPC, bytes straight to/from agents.
pub struct Gateway {
    state: AppState,
}

impl Gateway {
    /// Validate `config` and create the clients. The coordinator channel connects lazily, so
    /// the coordinator need not be up yet. Must be called inside a Tokio runtime.
    pub fn build(config: GatewayConfig) -> Result<Gateway> {
        config
            .validate()
            .map_err(|message| Error::InvalidConfig { message })?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime);
        }
        let coordinator_opts = ChannelOptions {
            request_timeout: Some(config.request_timeout),
            ..ChannelOptions::default()
        };
        let coordinator = client::coordinator(&config.coordinator, &coordinator_opts).context(
            CoordinatorClientSnafu {
                address: config.coordinator.clone(),
            },
        )?;
        // Agent calls stream object bytes: no per-call deadline.
        let agents = AgentPool::new(ChannelOptions::default());
        Ok(Gateway {
            state: AppState::new(config, coordinator, agents),
        })
    }

    /// The handler state (configuration and clients).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The configuration the gateway was built with.
    pub fn config(&self) -> &GatewayConfig {
        self.state.config()
    }

    /// The complete HTTP application.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serve on an already bound `listener` until `shutdown` is cancelled, then finish the
    /// in-flight requests (graceful shutdown) and return.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
        let local = listener.local_addr().ok();
        tracing::info!(
            addr = ?local,
            coordinator = %self.state.config().coordinator,
            "gateway listening"
        );
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context(ServeSnafu)?;
        tracing::info!(addr = ?local, "gateway stopped");
        Ok(())
    }
}

/// The `/v1` application over `state`: metadata routes under a deadline, upload and download
/// streaming without one (and without a body limit on upload), probes, and envelope
/// fallbacks for unknown paths (404) and wrong methods (405).
pub fn router(state: AppState) -> Router {
    let deadline = state.config().request_timeout;
    let metadata = Router::new()
        .route("/v1/bucket/create", post(bucket::create))
        .route("/v1/bucket/getByName", get(bucket::get_by_name))
        .route("/v1/bucket/listAll", get(bucket::list_all))
        .route("/v1/bucket/delete", post(bucket::delete))
        .route("/v1/package/create", post(package::create))
        .route("/v1/package/getByFullName", get(package::get_by_full_name))
        .route(
            "/v1/package/listBucketPackages",
            get(package::list_bucket_packages),
        )
        .route("/v1/package/delete", post(package::delete))
        .route(
            "/v1/object/getPackageObjects",
            get(object::get_package_objects),
        )
        .route("/v1/object/delete", post(object::delete))
        .route_layer(middleware::from_fn_with_state(deadline, deadline_layer));
    let data = Router::new()
        .route(
            "/v1/object/upload",
            post(object::upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/object/download", get(object::download));
    let probes = Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz));

    Router::new()
        .merge(metadata)
        .merge(data)
        .merge(probes)
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let path = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or("<unmatched>", MatchedPath::as_str);
                    let request_id = req
                        .headers()
                        .get(REQUEST_ID_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!("http", method = %req.method(), path, request_id)
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(middleware::from_fn(request_id_layer))
        .with_state(state)
}

/// Answer a `Timeout` envelope (504) when a metadata request takes longer than `deadline`.
async fn deadline_layer(State(deadline): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(deadline, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            ErrorCode::Timeout,
            format!("request did not finish within {deadline:?}"),
        )
        .into_response(),
    }
}

/// Ensure every request has an `x-request-id` (kept if sane, else generated) and echo it.
async fn request_id_layer(mut req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .filter(|v| {
            let b = v.as_bytes();
            !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
        })
        .cloned();
    let id = match given {
        Some(id) => id,
        None => match HeaderValue::try_from(uuid::Uuid::new_v4().to_string()) {
            Ok(id) => id,
            Err(_) => return next.run(req).await,
        },
    };
    req.headers_mut().insert(REQUEST_ID_HEADER, id.clone());
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(REQUEST_ID_HEADER, id);
    resp
}
