//! Operations end to end: request ids reach the coordinator's and the agent's logs,
//! `/metrics` (gateway port and a `metrics_addr` endpoint) moves with real traffic, and
//! coordinator and agents answer the standard gRPC health check.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use integration_tests::{Api, TestCluster};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::data;

/// JSON log lines captured in memory.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// `(role, path, request_id)` of every `rpc` span that logged a line.
    fn rpc_spans(&self) -> Vec<(String, String, String)> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| {
                let s = v.get("span")?;
                (s["name"] == "rpc").then(|| {
                    let f = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
                    (f("role"), f("path"), f("request_id"))
                })
            })
            .collect()
    }
}

async fn upload_with_id(api: &Api, package: u64, content: Vec<u8>, rid: &str) -> u64 {
    let resp = api
        .http()
        .post(api.url("/v1/object/upload"))
        .header("x-request-id", rid)
        .multipart(Api::upload_form(package, &[("ops/a.bin", content)]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], rid);
    let body: Value = resp.json().await.unwrap();
    body["data"]["uploadeds"][0]["objectID"].as_u64().unwrap()
}

async fn download_with_id(api: &Api, object_id: u64, rid: &str) -> bytes::Bytes {
    let resp = api
        .http()
        .get(api.url(&format!("/v1/object/download?objectID={object_id}")))
        .header("x-request-id", rid)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], rid);
    resp.bytes().await.unwrap()
}

/// The id a client sends (or the gateway makes) is in the span of the coordinator's and
/// the agent's handling of every call made for that request, and only there.
#[tokio::test]
async fn request_ids_reach_coordinator_and_agent_logs() {
    // Current-thread runtime: every task of the in-process cluster logs through this
    // thread-local subscriber.
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_env_filter("info,common::grpc=debug")
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let cluster = TestCluster::builder().agents(1).build().await.unwrap();
    let api = cluster.api();
    let bucket = api.create_bucket("rid").await;
    let package = api.create_package(bucket, "p").await;
    let content = data(7, 3 * 1024 * 1024 + 11);
    let up = format!("up-{}", uuid::Uuid::new_v4());
    let down = format!("down-{}", uuid::Uuid::new_v4());
    let id = upload_with_id(api, package, content.clone(), &up).await;
    assert_eq!(download_with_id(api, id, &down).await, content);

    let spans = logs.rpc_spans();
    let has = |role: &str, method: &str, rid: &str| {
        spans
            .iter()
            .any(|(r, p, i)| r == role && p.ends_with(method) && i == rid)
    };
    for (role, method, rid) in [
        ("coordinator", "CoordinatorService/BeginUploads", &up),
        ("agent", "AgentService/PutShard", &up),
        ("coordinator", "CoordinatorService/CommitUploads", &up),
        ("coordinator", "CoordinatorService/ResolveObject", &down),
        ("agent", "AgentService/GetShard", &down),
    ] {
        assert!(
            has(role, method, rid),
            "no {role} {method} span with {rid}: {spans:?}"
        );
    }
    // No call of the upload carries the download's id, and vice versa.
    assert!(!has("agent", "AgentService/PutShard", &down));
    assert!(!has("agent", "AgentService/GetShard", &up));
    cluster.shutdown().await;
}

/// The text of the metrics endpoint at `url`.
async fn scrape(url: String) -> String {
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

fn value_of(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A `metrics_addr` endpoint and the gateway's `/metrics` show the traffic just made: RPC
/// counts per role and method, shard and object bytes, GC passes; in-flight goes back to 0.
#[tokio::test]
async fn metrics_move_with_traffic() {
    let cluster = TestCluster::builder().agents(1).build().await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let server = tokio::spawn(common::metrics::serve(listener, stop.clone()));

    let api = cluster.api();
    let before = scrape(metrics_url.clone()).await;
    let put = r#"jcs_grpc_requests_total{code="Ok",method="jcs.agent.v1.AgentService/PutShard",role="agent"}"#;
    assert_eq!(value_of(&before, put), 0.0);

    let bucket = api.create_bucket("metrics").await;
    let package = api.create_package(bucket, "p").await;
    let content = data(9, 2 * 1024 * 1024 + 3);
    let id = api.upload(package, &[("m.bin", content.clone())]).await[0]["objectID"]
        .as_u64()
        .unwrap();
    assert_eq!(api.download_all(id).await, content);
    let (status, _) = api.get("/v1/object/download?objectID=999999").await;
    assert_eq!(status, 404);
    cluster.run_gc(Duration::ZERO).await;

    let len = content.len() as f64;
    let after = scrape(metrics_url).await;
    for (series, want) in [
        (put, 1.0),
        (
            r#"jcs_grpc_requests_total{code="Ok",method="jcs.agent.v1.AgentService/GetShard",role="agent"}"#,
            1.0,
        ),
        (
            r#"jcs_grpc_requests_total{code="Ok",method="jcs.coordinator.v1.CoordinatorService/CommitUploads",role="coordinator"}"#,
            1.0,
        ),
        (
            r#"jcs_grpc_requests_total{code="NotFound",method="jcs.coordinator.v1.CoordinatorService/ResolveObject",role="coordinator"}"#,
            1.0,
        ),
        (r#"jcs_agent_shard_bytes_total{op="write"}"#, len),
        (r#"jcs_agent_shard_bytes_total{op="read"}"#, len),
        (r#"jcs_gateway_object_bytes_total{direction="in"}"#, len),
        (r#"jcs_gateway_object_bytes_total{direction="out"}"#, len),
        ("jcs_gc_passes_total", 1.0),
        (
            r#"jcs_http_requests_total{method="POST",route="/v1/object/upload",status="200"}"#,
            1.0,
        ),
        (
            r#"jcs_http_requests_total{method="GET",route="/v1/object/download",status="404"}"#,
            1.0,
        ),
    ] {
        assert_eq!(value_of(&after, series), want, "{series} in\n{after}");
    }
    assert!(
        value_of(
            &after,
            r#"jcs_grpc_request_duration_seconds_count{code="Ok",method="jcs.agent.v1.AgentService/PutShard",role="agent"}"#
        ) >= 1.0
    );

    // The gateway's own port serves the same registry; nothing is left in flight.
    let gw = scrape(api.url("/metrics")).await;
    assert_eq!(value_of(&gw, put), 1.0);
    assert_eq!(
        value_of(&gw, r#"jcs_grpc_requests_in_flight{role="agent"}"#),
        0.0
    );

    stop.cancel();
    server.await.unwrap().unwrap();
    cluster.shutdown().await;
}

async fn health_client(addr: std::net::SocketAddr) -> HealthClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

#[tokio::test]
async fn coordinator_and_agents_report_grpc_health() {
    let cluster = TestCluster::builder().agents(2).build().await.unwrap();
    for addr in [
        cluster.coordinator_addr(),
        cluster.agent_addr(0),
        cluster.agent_addr(1),
    ] {
        let mut health = health_client(addr).await;
        let status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{addr}");
    }
    let mut health = health_client(cluster.coordinator_addr()).await;
    let named = health
        .check(HealthCheckRequest {
            service: "jcs.coordinator.v1.CoordinatorService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(named, ServingStatus::Serving as i32);
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    cluster.shutdown().await;
}

/// A client that stops reading a download is cut after `download_stall_timeout`: the
/// gateway counts it, drops the agent stream and ends the response short; a client that
/// reads gets the whole object.
#[tokio::test]
async fn a_download_whose_client_stops_reading_is_cut() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = TestCluster::builder()
        .download_stall_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let api = cluster.api();
    let bucket = api.create_bucket("stall").await;
    let package = api.create_package(bucket, "p").await;
    // Far more than the socket buffers and the gateway's one-chunk channel hold.
    let content = data(11, 48 * 1024 * 1024);
    let id = api.upload(package, &[("big.bin", content.clone())]).await[0]["objectID"]
        .as_u64()
        .unwrap();
    let stalled = |text: &str| value_of(text, "jcs_gateway_downloads_stalled_total");
    let metrics = || scrape(api.url("/metrics"));
    assert_eq!(stalled(&metrics().await), 0.0);

    let mut sock = tokio::net::TcpStream::connect(cluster.gateway_addr())
        .await
        .unwrap();
    let request = format!(
        "GET /v1/object/download?objectID={id} HTTP/1.1\r\nHost: jcs\r\nConnection: close\r\n\r\n"
    );
    sock.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 16 * 1024];
    let n = sock.read(&mut head).await.unwrap();
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    // The client now reads nothing: the gateway gives up on it.
    let cut = common::testing::wait_for(Duration::from_secs(30), || async {
        (stalled(&metrics().await) >= 1.0).then_some(())
    })
    .await;
    assert!(cut.is_some(), "the stalled download was not cut");
    // What is left to read ends before the whole object.
    let mut got = n;
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(k) => got += k,
        }
    }
    assert!(
        got < content.len(),
        "{got} bytes arrived: the download was not cut"
    );
    // A client that reads gets everything.
    assert_eq!(api.download_all(id).await, content);
    cluster.shutdown().await;
}
