//! Process-wide Prometheus metrics and the `/metrics` endpoint.
//!
//! Every role records into one registry per process, so `jcs standalone` exposes the
//! coordinator, agent and gateway series on one `/metrics`; the `role` label tells them
//! apart. The metric names are listed in `docs/operations.md`; keep that table in step.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Latency buckets in seconds: 1 ms … 60 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    /// `/v1` requests answered by the gateway: `method`, `route`, `status`.
    pub http_requests: IntCounterVec,
    /// Time to the response head of gateway requests (streamed bodies not included).
    pub http_duration: HistogramVec,
    /// Gateway requests being handled (head not yet sent): `route`.
    pub http_in_flight: IntGaugeVec,
    /// gRPC calls answered: `role`, `method` (the gRPC path), `code`.
    pub grpc_requests: IntCounterVec,
    /// Time to the response head of gRPC calls.
    pub grpc_duration: HistogramVec,
    /// gRPC calls in flight: `role`.
    pub grpc_in_flight: IntGaugeVec,
    /// Object bytes through the gateway: `direction` = `in` (uploads) | `out` (downloads).
    pub gateway_bytes: IntCounterVec,
    /// Shard bytes on agents: `op` = `write` (PutShard) | `read` (GetShard).
    pub shard_bytes: IntCounterVec,
    /// Sync runs: `event` = `started` | `finished` (succeeded) | `failed` | `cancelled`.
    pub sync_runs: IntCounterVec,
    /// Downloads the gateway cut because the client took no data for
    /// `download_stall_timeout`.
    pub downloads_stalled: IntCounter,
    /// Completed shard GC passes.
    pub gc_passes: IntCounter,
    /// Shards deleted by GC.
    pub gc_shards_deleted: IntCounter,
    /// Degraded reads of rep/ec objects in the gateway: `kind` = `degraded_stripes` |
    /// `corrupt_pieces` | `failed_blocks` (summed over reads).
    pub read_damage: IntCounterVec,
    /// Repairs by the scrub job: `result` = `repaired` | `failed` | `superseded`.
    pub repairs: IntCounterVec,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

// The definitions below are constants: a failure is a programming error that the unit
// test `every_metric_renders` catches, so `expect` cannot fire in a build that passed CI.
#[allow(clippy::expect_used)]
fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, m: T) -> T {
    registry
        .register(Box::new(m.clone()))
        .expect("metric definitions are unique and valid");
    m
}

#[allow(clippy::expect_used)]
impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"),
            )
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                    labels,
                )
                .expect("valid histogram"),
            )
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge"),
            )
        };
        let http_requests = counter(
            "jcs_http_requests_total",
            "HTTP requests answered by the gateway",
            &["method", "route", "status"],
        );
        let http_duration = histogram(
            "jcs_http_request_duration_seconds",
            "Time from request to response head at the gateway",
            &["method", "route", "status"],
        );
        let http_in_flight = gauge(
            "jcs_http_requests_in_flight",
            "Gateway requests whose response head is not sent yet",
            &["route"],
        );
        let grpc_requests = counter(
            "jcs_grpc_requests_total",
            "gRPC calls answered",
            &["role", "method", "code"],
        );
        let grpc_duration = histogram(
            "jcs_grpc_request_duration_seconds",
            "Time from gRPC call to response head",
            &["role", "method", "code"],
        );
        let grpc_in_flight = gauge(
            "jcs_grpc_requests_in_flight",
            "gRPC calls whose response head is not sent yet",
            &["role"],
        );
        let gateway_bytes = counter(
            "jcs_gateway_object_bytes_total",
            "Object bytes through the gateway (in = uploads, out = downloads)",
            &["direction"],
        );
        let shard_bytes = counter(
            "jcs_agent_shard_bytes_total",
            "Shard bytes written (PutShard) and read (GetShard) by agents",
            &["op"],
        );
        let sync_runs = counter(
            "jcs_sync_runs_total",
            "Sync runs started, finished (succeeded), failed and cancelled",
            &["event"],
        );
        let downloads_stalled = register(
            &r,
            IntCounter::new(
                "jcs_gateway_downloads_stalled_total",
                "Downloads cut because the client took no data for download_stall_timeout",
            )
            .expect("valid counter"),
        );
        let gc_passes = register(
            &r,
            IntCounter::new("jcs_gc_passes_total", "Completed shard GC passes")
                .expect("valid counter"),
        );
        let gc_shards_deleted = register(
            &r,
            IntCounter::new("jcs_gc_shards_deleted_total", "Shards deleted by GC")
                .expect("valid counter"),
        );
        let read_damage = counter(
            "jcs_gateway_read_damage_total",
            "Damage seen by reads of rep/ec objects: degraded stripes, corrupt pieces, failed blocks",
            &["kind"],
        );
        let repairs = counter(
            "jcs_repairs_total",
            "Objects repaired by the scrub job, by result",
            &["result"],
        );
        Metrics {
            registry: r,
            http_requests,
            http_duration,
            http_in_flight,
            grpc_requests,
            grpc_duration,
            grpc_in_flight,
            gateway_bytes,
            shard_bytes,
            sync_runs,
            downloads_stalled,
            gc_passes,
            gc_shards_deleted,
            read_damage,
            repairs,
        }
    }

    /// All series in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Count one answered HTTP request.
    pub fn observe_http(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        let labels = [method, route, status.as_str()];
        self.http_requests.with_label_values(&labels).inc();
        self.http_duration
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Count one answered gRPC call.
    pub fn observe_grpc(&self, role: &str, method: &str, code: &str, elapsed: Duration) {
        let labels = [role, method, code];
        self.grpc_requests.with_label_values(&labels).inc();
        self.grpc_duration
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }
}

/// Increments a gauge now and decrements it when dropped (also on cancellation).
pub struct InFlight(prometheus::IntGauge);

impl InFlight {
    pub fn new(gauge: &IntGaugeVec, label: &str) -> InFlight {
        let g = gauge.with_label_values(&[label]);
        g.inc();
        InFlight(g)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `GET /metrics` as an axum handler (the gateway mounts it on its own router).
pub async fn handler() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
        metrics().render(),
    )
}

/// Serve `GET /metrics` on `listener` until `shutdown` is cancelled (coordinator and agent
/// `metrics_addr`).
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    let app = axum::Router::new().route("/metrics", axum::routing::get(handler));
    tracing::info!(addr = ?listener.local_addr().ok(), "metrics listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_renders() {
        let m = metrics();
        m.observe_http("GET", "/v1/x", 200, Duration::from_millis(3));
        m.observe_grpc(
            "agent",
            "jcs.agent.v1.AgentService/GetShard",
            "Ok",
            Duration::ZERO,
        );
        let _f = InFlight::new(&m.http_in_flight, "/v1/x");
        m.gateway_bytes.with_label_values(&["in"]).inc_by(5);
        m.shard_bytes.with_label_values(&["read"]).inc_by(7);
        m.sync_runs.with_label_values(&["started"]).inc();
        m.gc_passes.inc();
        m.gc_shards_deleted.inc_by(2);
        m.downloads_stalled.inc();
        let text = m.render();
        for line in [
            r#"jcs_http_requests_total{method="GET",route="/v1/x",status="200"} 1"#,
            r#"jcs_http_requests_in_flight{route="/v1/x"} 1"#,
            r#"jcs_grpc_requests_total{code="Ok",method="jcs.agent.v1.AgentService/GetShard",role="agent"} 1"#,
            r#"jcs_gateway_object_bytes_total{direction="in"} 5"#,
            r#"jcs_agent_shard_bytes_total{op="read"} 7"#,
            r#"jcs_sync_runs_total{event="started"} 1"#,
            "jcs_gc_passes_total 1",
            "jcs_gc_shards_deleted_total 2",
            "jcs_gateway_downloads_stalled_total 1",
            "jcs_http_request_duration_seconds_bucket",
            "jcs_grpc_request_duration_seconds_count",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
