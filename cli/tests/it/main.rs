//! The real `jcs` binary: `jcs standalone` keeps its data across a process restart.

#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    let deadline = Instant::now() + Duration::from_secs(30);
    let http = reqwest::Client::new();
    loop {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(Instant::now() < deadline, "{base} did not become healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    let deadline = Instant::now() + Duration::from_secs(30);
    let http = reqwest::Client::new();
    loop {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "jcs standalone did not become healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Standalone { child, base }
}

fn terminate(s: Standalone) {
    stop(s.child);
}

/// SIGTERM, then expect a clean exit.
fn stop(mut child: Child) {
    let pid = child.id().to_string();
    let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(ok.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "jcs exited with {status} on SIGTERM");
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

fn role(name: &str, config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_jcs"))
        .args(["--log", "warn", name, "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// The three cluster roles as separate processes, configured by TOML files.
#[tokio::test]
async fn cluster_roles_run_as_separate_processes() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("cluster.secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (cp, ap, gp) = (free_port(), free_port(), free_port());
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let coord = write(
        "coordinator.toml",
        format!(
            "listen = \"127.0.0.1:{cp}\"\ncluster_secret_file = {secret:?}\n[meta]\nbackend = \"redb\"\npath = {:?}\n",
            dir.path().join("meta.redb")
        ),
    );
    let agent = write(
        "agent.toml",
        format!(
            "name = \"a1\"\nlisten = \"127.0.0.1:{ap}\"\ncoordinator = \"127.0.0.1:{cp}\"\ncluster_secret_file = {secret:?}\n[[spaces]]\nname = \"s1\"\npath = {:?}\n",
            dir.path().join("space")
        ),
    );
    let gateway = write(
        "gateway.toml",
        format!("listen = \"127.0.0.1:{gp}\"\ncoordinator = \"127.0.0.1:{cp}\"\n"),
    );
    let children = vec![
        role("coordinator", &coord),
        role("agent", &agent),
        role("gateway", &gateway),
    ];
    let base = format!("http://127.0.0.1:{gp}");
    wait_healthy(&base).await;

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
    let deadline = Instant::now() + Duration::from_secs(30);
    let object = loop {
        let form = reqwest::multipart::Form::new()
            .text(
                "info",
                serde_json::json!({"packageID": package}).to_string(),
            )
            .part(
                "files",
                reqwest::multipart::Part::bytes(b"hello cluster".to_vec()).file_name("x"),
            );
        let v: serde_json::Value = http
            .post(format!("{base}/v1/object/upload"))
            .multipart(form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["code"] == "OK" {
            break v["data"]["uploadeds"][0]["objectID"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "upload never succeeded: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let got = http
        .get(format!("{base}/v1/object/download?objectID={object}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&got[..], b"hello cluster");
    for c in children.into_iter().rev() {
        stop(c);
    }
}
