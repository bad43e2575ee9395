//! The real `jcs` binary: `jcs standalone` keeps its data across a process restart.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::testing::{wait_for, wait_until};
use sha2::Digest;

mod auth;
mod client;
mod ha;
mod shutdown;
mod tls;

/// The stdout of a finished `jcs` run after asserting it exited with `code` (the failure
/// message shows both outputs).
pub fn stdout_of(out: std::process::Output, code: i32, args: &[&str]) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "jcs {args:?}: stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    common::testing::pseudo_random(seed, len)
}

struct Standalone {
    child: Child,
    base: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_healthy(base: &str) {
    let http = reqwest::Client::new();
    let healthy = wait_until(Duration::from_secs(30), || async {
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(healthy, "{base} did not become healthy");
}

async fn start(data_dir: &std::path::Path, port: u16) -> Standalone {
    let child = Command::new(env!("CARGO_BIN_EXE_jcs"))
        .args(["--log", "warn", "standalone", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base).await;
    Standalone { child, base }
}

fn terminate(s: Standalone) {
    stop(s.child);
}

/// Send `sig` (`-TERM`, `-STOP`, …) to `child` with kill(1).
fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {sig} failed");
}

fn sigterm(child: &Child) {
    signal(child, "-TERM");
}

/// SIGTERM, then expect a clean exit.
fn stop(mut child: Child) {
    sigterm(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "jcs exited with {status} on SIGTERM");
}

/// Total size of the files under `dir` (recursively; 0 when it does not exist).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Wait until the agent storing in `space` holds at least `bytes` of unfinished shards
/// (its `tmp/` directory): the upload's bytes are flowing through the gateway.
async fn wait_agent_receiving(space: &Path, bytes: u64) {
    let tmp = space.join("tmp");
    assert!(
        wait_until(Duration::from_secs(30), || async {
            dir_bytes(&tmp) >= bytes
        })
        .await,
        "the agent never received {bytes} bytes of the upload (has {})",
        dir_bytes(&tmp)
    );
}

/// The multipart form of one upload to `package`.
fn upload_form(package: u64, part: reqwest::multipart::Part) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .text(
            "info",
            serde_json::json!({"packageID": package}).to_string(),
        )
        .part("files", part)
}

/// An upload whose file body is fed piece by piece through `tx`.
struct SlowUpload {
    tx: tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    answer: tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
}

impl SlowUpload {
    fn start(http: &reqwest::Client, base: &str, package: u64, name: &str) -> SlowUpload {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
        let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(stream))
            .file_name(name.to_owned());
        let answer = tokio::spawn(
            http.post(format!("{base}/v1/object/upload"))
                .multipart(upload_form(package, part))
                .send(),
        );
        SlowUpload { tx, answer }
    }

    /// Send `bytes` in pieces of at most 1 MiB, waiting at most 10 s for each; false when
    /// the server stopped reading.
    async fn send(&self, bytes: &[u8]) -> bool {
        self.send_within(bytes, Duration::from_secs(10)).await
    }

    /// [`SlowUpload::send`] waiting at most `within` for each piece.
    async fn send_within(&self, bytes: &[u8], within: Duration) -> bool {
        for piece in bytes.chunks(1 << 20) {
            let sent = tokio::time::timeout(within, self.tx.send(Ok(piece.to_vec()))).await;
            if !matches!(sent, Ok(Ok(()))) {
                return false;
            }
        }
        true
    }
}

/// GET `url`, retried for up to 30 s while it fails (e.g. 503 until an agent is back);
/// the bytes of the first 200.
async fn download_when_back(http: &reqwest::Client, url: &str) -> Vec<u8> {
    let got = wait_for(Duration::from_secs(30), || async {
        let r = http.get(url).send().await.unwrap();
        if r.status() == 200 {
            Some(r.bytes().await.unwrap().to_vec())
        } else {
            None
        }
    })
    .await;
    match got {
        Some(bytes) => bytes,
        None => {
            let r = http.get(url).send().await.unwrap();
            let status = r.status();
            panic!(
                "GET {url} still fails: {status} {}",
                r.text().await.unwrap_or_default()
            )
        }
    }
}

async fn post(http: &reqwest::Client, url: String, body: serde_json::Value) -> serde_json::Value {
    let v: serde_json::Value = http
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["code"], "OK", "{v}");
    v["data"].clone()
}

#[tokio::test]
async fn standalone_keeps_objects_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let http = reqwest::Client::new();
    let s = start(dir.path(), port).await;

    let b = post(
        &http,
        format!("{}/v1/bucket/create", s.base),
        serde_json::json!({"name": "b"}),
    )
    .await;
    let bucket = b["bucket"]["bucketID"].as_u64().unwrap();
    let p = post(
        &http,
        format!("{}/v1/package/create", s.base),
        serde_json::json!({"bucketID": bucket, "name": "p"}),
    )
    .await;
    let package = p["package"]["packageID"].as_u64().unwrap();
    let content: Vec<u8> = (0..2_500_000u32).map(|i| (i % 251) as u8).collect();
    let form = reqwest::multipart::Form::new()
        .text(
            "info",
            serde_json::json!({"packageID": package}).to_string(),
        )
        .part(
            "files",
            reqwest::multipart::Part::bytes(content.clone()).file_name("dir%2Fdata.bin"),
        );
    let v: serde_json::Value = http
        .post(format!("{}/v1/object/upload", s.base))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["code"], "OK", "{v}");
    let object = v["data"]["uploadeds"][0]["objectID"].as_u64().unwrap();
    let hash = format!("Full{}", hex::encode_upper(sha2::Sha256::digest(&content)));
    assert_eq!(v["data"]["uploadeds"][0]["fileHash"], hash);

    terminate(s);
    let s = start(dir.path(), port).await;

    let got = http
        .get(format!("{}/v1/object/download?objectID={object}", s.base))
        .send()
        .await
        .unwrap();
    assert!(got.status().is_success());
    assert_eq!(got.bytes().await.unwrap(), content);
    let list: serde_json::Value = http
        .get(format!(
            "{}/v1/object/getPackageObjects?packageID={package}",
            s.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"]["objects"][0]["path"], "dir/data.bin");
    terminate(s);
}

fn role(name: &str, config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_jcs"))
        .args(["--log", "warn", name, "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// A coordinator (redb), an agent (one Local space) and a gateway as separate processes,
/// configured by TOML files in `dir` (a shared secret file, free ports).
struct ThreeRoles {
    coordinator: Child,
    agent: Child,
    gateway: Child,
    /// The gateway's config file, to start it again.
    gateway_config: PathBuf,
    /// The agent's Local space.
    space: PathBuf,
    /// `http://127.0.0.1:<gateway port>`.
    base: String,
}

impl ThreeRoles {
    /// Start the three roles (the gateway's config ends with `gateway_extra`, TOML lines
    /// such as `shutdown_timeout = "1s"\n`) and wait until the gateway is healthy.
    async fn start(dir: &Path, gateway_extra: &str) -> ThreeRoles {
        use std::os::unix::fs::PermissionsExt;
        let secret = dir.join("cluster.secret");
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (cp, ap, gp) = (free_port(), free_port(), free_port());
        let write = |name: &str, text: String| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let coord = write(
            "coordinator.toml",
            format!(
                "listen = \"127.0.0.1:{cp}\"\ncluster_secret_file = {secret:?}\n[meta]\nbackend = \"redb\"\npath = {:?}\n",
                dir.join("meta.redb")
            ),
        );
        let space = dir.join("space");
        let agent = write(
            "agent.toml",
            format!(
                "name = \"a1\"\nlisten = \"127.0.0.1:{ap}\"\ncoordinator = \"127.0.0.1:{cp}\"\ncluster_secret_file = {secret:?}\n[[spaces]]\nname = \"s1\"\npath = {space:?}\n"
            ),
        );
        let gateway_config = write(
            "gateway.toml",
            format!(
                "listen = \"127.0.0.1:{gp}\"\ncoordinator = \"127.0.0.1:{cp}\"\n{gateway_extra}"
            ),
        );
        let roles = ThreeRoles {
            coordinator: role("coordinator", &coord),
            agent: role("agent", &agent),
            gateway: role("gateway", &gateway_config),
            gateway_config,
            space,
            base: format!("http://127.0.0.1:{gp}"),
        };
        wait_healthy(&roles.base).await;
        roles
    }

    /// SIGTERM each role (gateway first) and expect clean exits.
    fn stop(self) {
        for c in [self.gateway, self.agent, self.coordinator] {
            stop(c);
        }
    }
}

/// The three cluster roles as separate processes, configured by TOML files.
#[tokio::test]
async fn cluster_roles_run_as_separate_processes() {
    let dir = tempfile::tempdir().unwrap();
    let roles = ThreeRoles::start(dir.path(), "").await;
    let base = roles.base.clone();

    let http = reqwest::Client::new();
    let b = post(
        &http,
        format!("{base}/v1/bucket/create"),
        serde_json::json!({"name": "b"}),
    )
    .await;
    let bucket = b["bucket"]["bucketID"].as_u64().unwrap();
    let p = post(
        &http,
        format!("{base}/v1/package/create"),
        serde_json::json!({"bucketID": bucket, "name": "p"}),
    )
    .await;
    let package = p["package"]["packageID"].as_u64().unwrap();
    // The agent registers asynchronously: retry the upload until a space is live.
    let object = wait_for(Duration::from_secs(30), || async {
        let part = reqwest::multipart::Part::bytes(b"hello cluster".to_vec()).file_name("x");
        let v: serde_json::Value = http
            .post(format!("{base}/v1/object/upload"))
            .multipart(upload_form(package, part))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["data"]["uploadeds"][0]["objectID"].as_u64()
    })
    .await
    .expect("upload never succeeded");
    let got = http
        .get(format!("{base}/v1/object/download?objectID={object}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&got[..], b"hello cluster");
    roles.stop();
}
