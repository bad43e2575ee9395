//! The real `jcs` binary: `jcs standalone` keeps its data across a process restart.

#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest;

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

fn terminate(mut s: Standalone) {
    let pid = s.child.id().to_string();
    let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(ok.success());
    let status = s.child.wait().unwrap();
    assert!(
        status.success(),
        "jcs standalone exited with {status} on SIGTERM"
    );
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
