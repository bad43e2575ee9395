//! Wiring: [`Gateway::build`], [`router`] and [`Gateway::serve`].

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use client::{AgentPool, ChannelOptions};
use common::ErrorCode;
use snafu::ResultExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::GatewayConfig;
use crate::error::{ApiError, CoordinatorClientSnafu, Error, Result};
use crate::openapi::{ApiDoc, DOCS_PATH, OPENAPI_PATH};
use crate::ops;
use crate::routes::{self, admin, bucket, multipart, object, package, space_syncer, user_space};
use crate::state::AppState;

pub use crate::ops::REQUEST_ID_HEADER;

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
        // mTLS towards coordinators and agents when `[tls]` is configured.
        let tls = config
            .tls
            .load()
            .map_err(|message| Error::InvalidConfig { message })?;
        if let Some(material) = &tls {
            client::tls::check(material).map_err(|e| Error::InvalidConfig {
                message: e.to_string(),
            })?;
        }
        let plain = ChannelOptions::default().with_tls(tls);
        let coordinator_opts = ChannelOptions {
            request_timeout: Some(config.request_timeout),
            ..plain.clone()
        };
        let coordinator = client::coordinator(&config.coordinator, &coordinator_opts).context(
            CoordinatorClientSnafu {
                address: config.coordinator.clone(),
            },
        )?;
        // Package import and export are single RPCs that copy a whole package: they get a
        // channel without the per-call deadline (`GrpcTimeout` only ever shortens it).
        let bulk_coordinator =
            client::coordinator(&config.coordinator, &plain).context(CoordinatorClientSnafu {
                address: config.coordinator.clone(),
            })?;
        // Agent calls stream object bytes: no per-call deadline.
        let agents = AgentPool::new(plain);
        Ok(Gateway {
            state: AppState::with_bulk_coordinator(config, coordinator, bulk_coordinator, agents),
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
    /// requests already started, uploads whose body is still arriving included, for at most
    /// `shutdown_timeout` (see [`crate::serve`]); the requests still running then are
    /// aborted (an upload still streaming is not committed).
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
        let local = listener.local_addr().ok();
        tracing::info!(
            addr = ?local,
            coordinator = %self.state.config().coordinator,
            "gateway listening"
        );
        let drain = self.state.config().shutdown_timeout;
        let server = crate::serve::serve(listener, self.router(), shutdown.clone());
        if common::shutdown::drain_within(server, &shutdown, drain, "gateway")
            .await
            .is_none()
        {
            tracing::warn!(addr = ?local, "requests still in progress were aborted");
        }
        tracing::info!(addr = ?local, "gateway stopped");
        Ok(())
    }
}

/// Every `/v1` route, registered through `utoipa_axum::routes!` so that the router and
/// the OpenAPI document ([`crate::openapi`]) are built from the same handlers: metadata
/// routes under a deadline; the data routes (upload, uploadPart, download, downloadByPath,
/// completeMultipartUpload, whose agent copies bytes, and userSpace createPackage and
/// downloadPackage, which copy whole packages) without one, and without a body limit on
/// upload and uploadPart; at most `parts_in_flight` uploadParts of this router stream at
/// once (the others wait before their body is read).
pub(crate) fn api_routes(deadline: Duration, parts_in_flight: usize) -> OpenApiRouter<AppState> {
    let metadata = OpenApiRouter::new()
        .routes(routes!(bucket::create))
        .routes(routes!(bucket::get_by_name))
        .routes(routes!(bucket::list_all))
        .routes(routes!(bucket::delete))
        .routes(routes!(package::create))
        .routes(routes!(package::update))
        .routes(routes!(package::get_by_full_name))
        .routes(routes!(package::list_bucket_packages))
        .routes(routes!(package::delete))
        .routes(routes!(object::get_package_objects))
        .routes(routes!(object::delete))
        .routes(routes!(object::list_by_path))
        .routes(routes!(object::move_objects))
        .routes(routes!(object::clone_objects))
        .routes(routes!(multipart::new_multipart_upload))
        .routes(routes!(user_space::create))
        .routes(routes!(user_space::get))
        .routes(routes!(user_space::update))
        .routes(routes!(user_space::delete))
        .routes(routes!(user_space::test))
        .routes(routes!(space_syncer::create_task))
        .routes(routes!(space_syncer::get_task))
        .routes(routes!(space_syncer::cancel_task))
        .routes(routes!(admin::start))
        .routes(routes!(admin::status))
        .route_layer(middleware::from_fn_with_state(deadline, deadline_layer));
    let uploads = OpenApiRouter::new()
        .routes(routes!(object::upload))
        .route_layer(DefaultBodyLimit::disable());
    let parts = OpenApiRouter::new()
        .routes(routes!(multipart::upload_part))
        .route_layer(DefaultBodyLimit::disable())
        .route_layer(multipart::part_turns(parts_in_flight));
    let data = OpenApiRouter::new()
        .routes(routes!(object::download))
        .routes(routes!(object::download_by_path))
        .routes(routes!(multipart::complete_multipart_upload))
        .routes(routes!(user_space::create_package))
        .routes(routes!(user_space::download_package));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(metadata)
        .merge(uploads)
        .merge(parts)
        .merge(data)
}

/// The application over `state`: the `/v1` routes of [`api_routes`], the OpenAPI document
/// at `/openapi.json` with Swagger UI at `/docs`, the probes, and envelope fallbacks for
/// unknown paths (404) and wrong methods (405).
pub fn router(state: AppState) -> Router {
    let config = state.config();
    let (mut api, mut spec) =
        api_routes(config.request_timeout, config.max_parts_in_flight).split_for_parts();
    if config.auth.enabled {
        let auth = crate::auth::Authenticator::new(config.auth.clone(), state.coordinator());
        api = api.layer(middleware::from_fn_with_state(auth, crate::auth::layer));
    }
    crate::openapi::finish(&mut spec, config.auth.enabled);
    let docs = SwaggerUi::new(DOCS_PATH).url(OPENAPI_PATH, spec);

    Router::new()
        .merge(api)
        .merge(docs)
        .merge(ops::routes())
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
        .layer(middleware::from_fn(ops::metrics_layer))
        .layer(middleware::from_fn(ops::request_id_layer))
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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request as HttpRequest;
    use axum::routing::get;
    use serde_json::json;

    use super::*;
    use crate::testing::*;

    #[tokio::test]
    async fn unknown_routes_and_methods_are_envelopes() {
        let app = router(unreachable_state().await);
        let (status, body) = json(call(app.clone(), http_get("/v1/nope")).await).await;
        assert_eq!(
            (status, body),
            (
                404,
                json!({"code": "DataNotFound", "message": "no such endpoint: GET /v1/nope", "data": null})
            )
        );
        let resp = call(app.clone(), post_json("/v1/bucket/listAll", "{}")).await;
        assert_eq!(resp.headers()["allow"], "GET,HEAD");
        let (status, body) = json(resp).await;
        assert_eq!(
            (status, body),
            (
                405,
                json!({"code": "BadArgument", "message": "method POST is not allowed on /v1/bucket/listAll", "data": null})
            )
        );
        let (status, _) = json(call(app, http_get("/v1/bucket/create")).await).await;
        assert_eq!(status, 405);
    }

    #[tokio::test]
    async fn probes_report_liveness_and_readiness() {
        let app = router(unreachable_state().await);
        let resp = call(app.clone(), http_get("/healthz")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(body_bytes(resp).await, "ok");
        let (status, body) = json(call(app, http_get("/readyz")).await).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (503, Some("OperationFailed"))
        );
        let message = body["message"].as_str().unwrap();
        assert!(
            // The coordinator client retries across its endpoints (failover), so an unreachable
            // coordinator shows either as refused or as the probe's own deadline.
            message.starts_with("not ready: coordinator ")
                && (message.contains("unavailable") || message.contains("did not answer")),
            "{message}"
        );

        let fx = Fixture::start().await;
        let (status, body) = json(call(fx.app(), http_get("/readyz")).await).await;
        assert_eq!((status, body["code"].as_str()), (200, Some("OK")));
    }

    #[tokio::test]
    async fn request_ids_are_kept_or_generated() {
        let app = router(unreachable_state().await);
        let req = HttpRequest::get("/healthz")
            .header(REQUEST_ID_HEADER, "abc-123")
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            call(app.clone(), req).await.headers()[REQUEST_ID_HEADER],
            "abc-123"
        );
        let resp = call(app, http_get("/healthz")).await;
        assert_eq!(resp.headers()[REQUEST_ID_HEADER].len(), 36);
    }

    #[tokio::test]
    async fn slow_metadata_requests_time_out_with_an_envelope() {
        let app: Router = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route_layer(middleware::from_fn_with_state(
                Duration::from_millis(20),
                deadline_layer,
            ));
        let (status, body) = json(call(app, http_get("/slow")).await).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (504, Some("OperationFailed"))
        );
        assert_eq!(body["message"], "request did not finish within 20ms");
    }

    #[test]
    fn build_needs_a_runtime_and_a_valid_config() {
        assert!(matches!(
            Gateway::build(GatewayConfig::default()),
            Err(Error::NoRuntime)
        ));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let bad = GatewayConfig {
                max_upload_files: 0,
                ..Default::default()
            };
            let err = Gateway::build(bad).err().unwrap();
            assert!(err.to_string().contains("max_upload_files"), "{err}");
            let bad = GatewayConfig {
                coordinator: "not a uri ::".into(),
                // Not loopback: plain TCP must be allowed explicitly to reach the URI check.
                tls: common::tls::TlsConfig {
                    insecure_plaintext: true,
                    ..Default::default()
                },
                ..Default::default()
            };
            assert!(matches!(
                Gateway::build(bad),
                Err(Error::CoordinatorClient { .. })
            ));
            assert!(Gateway::build(GatewayConfig::default()).is_ok());
        });
    }

    /// Full HTTP over a real socket: build from config, serve on a pre-bound port-0 listener,
    /// upload and download with reqwest, then shut down with the token.
    #[tokio::test]
    async fn serves_over_http_until_cancelled() {
        let fx = Fixture::start().await;
        let gateway = Gateway::build(fx.state.config().clone()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(gateway.serve(listener, shutdown.clone()));

        let http = reqwest::Client::new();
        let content: Vec<u8> = (0..3 * proto::CHUNK_SIZE + 7)
            .map(|i| (i % 13) as u8)
            .collect();
        let form = reqwest::multipart::Form::new()
            .part(
                "info",
                reqwest::multipart::Part::text(r#"{"packageID": 1}"#)
                    .mime_str("application/json")
                    .unwrap(),
            )
            .part(
                "files",
                reqwest::multipart::Part::bytes(content.clone()).file_name("d%2Fbig.bin"),
            );
        let resp = http
            .post(format!("{base}/v1/object/upload"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: serde_json::Value = resp.json().await.unwrap();
        let object = &body["data"]["uploadeds"][0];
        assert_eq!(object["path"], "d/big.bin");
        let id = object["objectID"].as_u64().unwrap();

        let resp = http
            .get(format!("{base}/v1/object/download?objectID={id}&offset=5"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.content_length(), Some(content.len() as u64 - 5));
        assert_eq!(
            resp.headers()["content-disposition"],
            "attachment; filename*=UTF-8''big.bin"
        );
        assert_eq!(resp.bytes().await.unwrap(), content[5..]);

        // The scrape shows this traffic: request counts by route and status, object bytes
        // in and out (per-process registry: nextest runs each test in its own process).
        let resp = http.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let text = resp.text().await.unwrap();
        for series in [
            r#"jcs_http_requests_total{method="POST",route="/v1/object/upload",status="200"} 1"#.to_owned(),
            r#"jcs_http_requests_total{method="GET",route="/v1/object/download",status="200"} 1"#.to_owned(),
            format!(r#"jcs_gateway_object_bytes_total{{direction="in"}} {}"#, content.len()),
            format!(r#"jcs_gateway_object_bytes_total{{direction="out"}} {}"#, content.len() - 5),
            r#"jcs_http_request_duration_seconds_count{method="GET",route="/v1/object/download",status="200"} 1"#.to_owned(),
        ] {
            assert!(text.contains(&series), "missing {series} in\n{text}");
        }

        shutdown.cancel();
        server.await.unwrap().unwrap();
        assert!(http.get(format!("{base}/healthz")).send().await.is_err());
    }
}
