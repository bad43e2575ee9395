//! Graceful shutdown of the gateway (docs/operations.md "Graceful shutdown"): after the
//! signal new connections are refused and idle kept-alive ones are closed, but every
//! request already started completes: a download delivers every byte, an upload whose body
//! is still arriving is read to its end and committed (answered with `Connection: close`),
//! also when its connection was accepted just before the signal. The process exits 0. When
//! `shutdown_timeout` passes first, the requests left are aborted and an upload still
//! streaming leaves no object.

use std::io::{Read, Write};
use std::process::Child;
use std::time::{Duration, Instant};

use common::testing::wait_until;
use tokio_util::sync::CancellationToken;

use crate::{
    SlowUpload, Standalone, ThreeRoles, dir_bytes, download_when_back, free_port, post, sigterm,
    start, upload_form, wait_agent_receiving,
};

const MIB: usize = 1024 * 1024;

fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed)
        .collect::<Vec<u8>>()
}

/// A bucket and a package; returns the package id.
async fn package(http: &reqwest::Client, base: &str) -> u64 {
    let b = post(
        http,
        format!("{base}/v1/bucket/create"),
        serde_json::json!({"name": "b"}),
    )
    .await;
    let bucket = b["bucket"]["bucketID"].as_u64().unwrap();
    let p = post(
        http,
        format!("{base}/v1/package/create"),
        serde_json::json!({"bucketID": bucket, "name": "p"}),
    )
    .await;
    p["package"]["packageID"].as_u64().unwrap()
}

async fn upload(
    http: &reqwest::Client,
    base: &str,
    package: u64,
    name: &str,
    data: Vec<u8>,
) -> u64 {
    let v: serde_json::Value = http
        .post(format!("{base}/v1/object/upload"))
        .multipart(upload_form(
            package,
            reqwest::multipart::Part::bytes(data).file_name(name.to_owned()),
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["code"], "OK", "{v}");
    v["data"]["uploadeds"][0]["objectID"].as_u64().unwrap()
}

/// A download in flight: upload `mib` MiB (pattern `seed`) to `package`, open its download
/// and read the first chunk. Returns the uploaded bytes, the open response (status checked)
/// and the bytes read so far.
async fn download_in_flight(
    http: &reqwest::Client,
    base: &str,
    package: u64,
    mib: usize,
    seed: u8,
) -> (Vec<u8>, reqwest::Response, Vec<u8>) {
    let big = content(mib * MIB, seed);
    let id = upload(http, base, package, "big.bin", big.clone()).await;
    let mut download = http
        .get(format!("{base}/v1/object/download?objectID={id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    let got = download.chunk().await.unwrap().unwrap().to_vec();
    (big, download, got)
}

/// In-process `jcs standalone`: a download is in flight when the token is cancelled; it
/// completes, new connections are refused meanwhile, and `run` returns Ok. The roles call
/// each other in-process (`client::local`) until they stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_after_the_shutdown_signal() {
    common::testing::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    // A known coordinator address, to ask whether it is called in-process.
    let coordinator = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let opts = cli::standalone::StandaloneOptions {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        auth: cli::standalone::AuthArgs {
            auth: false,
            coordinator_listen: Some(coordinator),
        },
        ..Default::default()
    };
    let run = tokio::spawn(cli::standalone::run(opts, shutdown.clone(), Some(ready_tx)));
    let addr = ready_rx.await.unwrap();
    // Registered once its server task runs (until then calls go over TCP, as they may).
    assert!(
        wait_until(Duration::from_secs(10), || async {
            client::local::is_local(&coordinator.to_string())
        })
        .await,
        "the coordinator is not called in-process"
    );
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let package = package(&http, &base).await;

    // A download in flight: head received, first chunk read, 15 MiB still to come.
    let (big, mut download, mut got) = download_in_flight(&http, &base, package, 16, 1).await;

    shutdown.cancel();
    // The gateway stops accepting: new connections are refused while the two drain.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(addr).await.is_err()
        })
        .await,
        "the gateway still accepts connections after the shutdown signal"
    );

    let limit = Duration::from_secs(20);
    while let Some(chunk) = tokio::time::timeout(limit, download.chunk())
        .await
        .expect("download stalled")
        .unwrap()
    {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got.len(), big.len());
    assert!(got == big, "downloaded bytes differ");

    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("standalone did not stop after draining")
        .unwrap()
        .unwrap();
    assert!(!client::local::is_local(&coordinator.to_string()));
}

/// The real binary: SIGTERM during a download; the download completes and `jcs` exits 0.
#[tokio::test]
async fn sigterm_lets_a_download_finish_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), free_port()).await;
    let http = reqwest::Client::new();
    let package = package(&http, &s.base).await;
    let (big, mut download, mut got) = download_in_flight(&http, &s.base, package, 16, 3).await;

    let mut child = s.child;
    sigterm(&child);
    while let Some(chunk) = download.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert!(
        got == big,
        "downloaded {} of {} bytes",
        got.len(),
        big.len()
    );
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "jcs exited with {status} on SIGTERM");
}

/// Wait for `child` to exit (at most `within`); returns its status and how long it took.
async fn exit_within(mut child: Child, within: Duration) -> (std::process::ExitStatus, Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, start.elapsed());
        }
        if start.elapsed() > within {
            let _ = child.kill();
            panic!("jcs did not exit within {within:?} of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_refused(addr: &str) {
    assert!(
        wait_until(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(addr).await.is_err()
        })
        .await,
        "the gateway still accepts connections after SIGTERM"
    );
}

/// The real binary: SIGTERM while an upload's body is still arriving (part of it already
/// at the agent) and a download is in flight. New connections are refused; the rest of the
/// upload is sent after the signal and the upload is answered OK; the download delivers
/// every byte; `jcs` exits 0 well within `shutdown_timeout`; after a restart the uploaded
/// object downloads byte-identical (it was committed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_upload_and_a_download_in_flight_finish() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = start(dir.path(), port).await;
    let http = reqwest::Client::new();
    let package = package(&http, &s.base).await;

    let (big, mut download, mut got) = download_in_flight(&http, &s.base, package, 16, 3).await;

    let slow = content(8 * MIB + 123, 5);
    let (head, tail) = slow.split_at(3 * MIB);
    // Its own client: a connection of its own, opened before the signal.
    let up = SlowUpload::start(&reqwest::Client::new(), &s.base, package, "dir/slow.bin");
    assert!(up.send(head).await);
    wait_agent_receiving(&dir.path().join("space"), MIB as u64).await;

    let Standalone { child, base } = s;
    sigterm(&child);
    wait_refused(&format!("127.0.0.1:{port}")).await;

    assert!(
        up.send(tail).await,
        "the gateway stopped reading the upload"
    );
    drop(up.tx);
    let answer = up.answer.await.unwrap().unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["connection"], "close");
    let v: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(v["code"], "OK", "{v}");
    let uploaded = &v["data"]["uploadeds"][0];
    assert_eq!(uploaded["size"], slow.len().to_string());
    let new_id = uploaded["objectID"].as_u64().unwrap();

    while let Some(chunk) = download.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert!(
        got == big,
        "downloaded {} of {} bytes",
        got.len(),
        big.len()
    );

    // Default shutdown_timeout: 30 s; the drain ends as soon as both requests are done.
    let (status, took) = exit_within(child, Duration::from_secs(30)).await;
    assert!(status.success(), "jcs exited with {status} on SIGTERM");
    assert!(took < Duration::from_secs(10), "the drain took {took:?}");

    let s = start(dir.path(), port).await;
    assert_eq!(s.base, base);
    // The agent registers again asynchronously: 503 until it has.
    let url = format!("{base}/v1/object/download?objectID={new_id}");
    let again = download_when_back(&http, &url).await;
    assert!(again == slow, "the uploaded object differs");
    crate::terminate(s);
}

/// A multipart upload request written by hand: (head, body), `Content-Length` set.
fn raw_upload(package: u64, name: &str, data: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let boundary = "jcs-shutdown-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"info\"\r\n\r\n{{\"packageID\": {package}}}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let head = format!(
        "POST /v1/object/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    (head, body)
}

/// A client that connected just before SIGTERM and sends its request right after it (within
/// `gateway::serve::FIRST_REQUEST_GRACE`) is still served, with `Connection: close`. A
/// kept-alive connection that is idle at the signal is closed without an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_opened_before_sigterm_is_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = start(dir.path(), port).await;
    let http = reqwest::Client::new();
    let package = package(&http, &s.base).await;
    let addr = format!("127.0.0.1:{port}");

    // An idle kept-alive connection: one request answered, then nothing.
    let mut idle = std::net::TcpStream::connect(&addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = idle.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );

    let data = content(3 * MIB + 7, 11);
    let (head, body) = raw_upload(package, "raw.bin", &data);
    // Connected before the signal, but the request is only sent once the gateway refuses
    // new connections: hyper alone would close this connection at the signal.
    let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
    sigterm(&s.child);
    wait_refused(&addr).await;
    let (answer, idle_read) = tokio::task::spawn_blocking(move || {
        tcp.write_all(&head).unwrap();
        tcp.write_all(&body).unwrap();
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).unwrap();
        idle.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        (answer, idle.read(&mut buf))
    })
    .await
    .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{answer}"
    );
    assert!(answer.contains(r#""code":"OK""#), "{answer}");
    assert!(
        answer.contains(&format!(r#""size":"{}""#, data.len())),
        "{answer}"
    );
    // The idle connection was closed by the server (EOF or reset), not left open.
    assert!(matches!(idle_read, Ok(0) | Err(_)), "{idle_read:?}");
    assert!(
        idle_read
            .as_ref()
            .err()
            .is_none_or(|e| e.kind() != std::io::ErrorKind::WouldBlock),
        "the idle connection stayed open"
    );

    let (status, _) = exit_within(s.child, Duration::from_secs(30)).await;
    assert!(status.success(), "jcs exited with {status} on SIGTERM");
}

/// The three roles as processes, the gateway with `shutdown_timeout = "1s"`: an upload
/// still streaming when the drain deadline passes is aborted. The gateway exits 0 soon after
/// the deadline, the client gets an error (never a 200), the agent drops the partial shard,
/// and no object appears at the path (checked through a new gateway).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_deadline_aborts_an_upload_still_streaming() {
    let dir = tempfile::tempdir().unwrap();
    let ThreeRoles {
        coordinator,
        agent,
        gateway: g,
        gateway_config,
        space,
        base,
    } = ThreeRoles::start(dir.path(), "shutdown_timeout = \"1s\"\n").await;
    let http = reqwest::Client::new();
    let package = package(&http, &base).await;
    // The agent registers asynchronously: the first upload is retried until it is accepted.
    assert!(
        wait_until(Duration::from_secs(30), || async {
            let v: serde_json::Value = http
                .post(format!("{base}/v1/object/upload"))
                .multipart(upload_form(
                    package,
                    reqwest::multipart::Part::bytes(b"warm".to_vec()).file_name("warm"),
                ))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["code"] == "OK"
        })
        .await,
        "no upload succeeded"
    );

    let data = content(8 * MIB, 13);
    let up = SlowUpload::start(&reqwest::Client::new(), &base, package, "late.bin");
    assert!(up.send(&data[..3 * MIB]).await);
    wait_agent_receiving(&space, MIB as u64).await;
    sigterm(&g);
    // The rest of the body never comes; the deadline (1 s) cuts the request.
    let (status, took) = exit_within(g, Duration::from_secs(20)).await;
    assert!(status.success(), "the gateway exited with {status}");
    assert!(
        took >= Duration::from_millis(900),
        "exited before the deadline: {took:?}"
    );
    let answer = tokio::time::timeout(Duration::from_secs(20), up.answer)
        .await
        .expect("the client was left hanging")
        .unwrap();
    match answer {
        Err(_) => {}
        Ok(r) => {
            let status = r.status();
            let body = r.text().await;
            assert!(
                status != 200 || body.is_err(),
                "an upload cut by the drain deadline was answered {status}: {body:?}"
            );
        }
    }
    drop(up.tx);
    // The agent saw its PutShard stream end without `Finish`: the temp file goes.
    assert!(
        wait_until(Duration::from_secs(20), || async {
            dir_bytes(&space.join("tmp")) == 0
        })
        .await,
        "the partial shard was left in the agent's tmp/"
    );

    let g = crate::role("gateway", &gateway_config);
    crate::wait_healthy(&base).await;
    let listed: serde_json::Value = http
        .get(format!(
            "{base}/v1/object/listByPath?packageID={package}&path=late.bin"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["code"], "OK", "{listed}");
    assert_eq!(listed["data"]["objects"], serde_json::json!([]), "{listed}");
    for c in [g, agent, coordinator] {
        crate::stop(c);
    }
}

/// The cause of the former "upload in flight does not complete on SIGTERM" limit, without
/// any signal: a download whose client stops reading must not stall other calls between
/// the gateway and the same agent (one HTTP/2 connection). With the adaptive window, the
/// stalled download's unread data filled the connection window and the upload's PutShard
/// answer could not reach the gateway until the download's connection closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_download_does_not_block_uploads_to_the_same_agent() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), free_port()).await;
    let http = reqwest::Client::new();
    let package = package(&http, &s.base).await;
    let big = content(64 * MIB, 17);
    let id = upload(&http, &s.base, package, "big.bin", big.clone()).await;
    let mut stalled = http
        .get(format!("{}/v1/object/download?objectID={id}", s.base))
        .send()
        .await
        .unwrap();
    let mut got = stalled.chunk().await.unwrap().unwrap().to_vec();

    // Meanwhile (the download is not read): uploads of several chunks, each a PutShard
    // whose answer travels on the agent connection the download fills.
    for i in 0..3u8 {
        let data = content(4 * MIB + usize::from(i), 20 + i);
        let name = format!("up{i}");
        let up = upload(&http, &s.base, package, &name, data);
        tokio::time::timeout(Duration::from_secs(20), up)
            .await
            .expect("an upload hung behind a stalled download");
    }

    while let Some(chunk) = stalled.chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert!(
        got == big,
        "downloaded {} of {} bytes",
        got.len(),
        big.len()
    );
    crate::terminate(s);
}
