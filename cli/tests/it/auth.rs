//! `jcs standalone --auth`: `jcs admin key` creates, lists and deletes access keys, and the
//! client commands work with a key and fail with exit code 5 without one.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Standalone, free_port, terminate, wait_healthy};

struct Env {
    s: Standalone,
    coordinator: String,
    dir: tempfile::TempDir,
}

impl Env {
    async fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let (port, cport) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_jcs"))
            .args(["--log", "warn", "standalone", "--auth", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--coordinator-listen")
            .arg(format!("127.0.0.1:{cport}"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let s = Standalone { child, base };
        wait_healthy(&s.base).await;
        Env {
            s,
            coordinator: format!("127.0.0.1:{cport}"),
            dir,
        }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// `jcs` with the gateway URL and no credentials from the environment or a file.
    fn run(&self, creds: Option<(&str, &str)>, args: &[&str]) -> Output {
        std::fs::write(self.path("empty.toml"), "").unwrap();
        let mut c = Command::new(env!("CARGO_BIN_EXE_jcs"));
        c.env("JCS_URL", &self.s.base)
            .env("JCS_COORDINATOR", &self.coordinator)
            .env("JCS_STATE_DIR", self.path("state"))
            .env("JCS_CONFIG", self.path("empty.toml"))
            .env_remove("JCS_ACCESS_KEY")
            .env_remove("JCS_SECRET_KEY");
        if let Some((id, secret)) = creds {
            c.env("JCS_ACCESS_KEY", id).env("JCS_SECRET_KEY", secret);
        }
        c.args(args).output().unwrap()
    }

    fn expect(&self, code: i32, creds: Option<(&str, &str)>, args: &[&str]) -> String {
        crate::stdout_of(self.run(creds, args), code, args)
    }

    fn json(&self, code: i32, creds: Option<(&str, &str)>, args: &[&str]) -> Vec<Value> {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        self.expect(code, creds, &a)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
}

#[tokio::test]
async fn admin_keys_and_signed_client_commands() {
    let env = Env::new().await;

    // Create two keys; the secret is printed once, never listed.
    let created = env.json(0, None, &["admin", "key", "create", "--name", "ci"]);
    let id = created[0]["accessKeyID"].as_str().unwrap().to_owned();
    let secret = created[0]["secretKey"].as_str().unwrap().to_owned();
    assert!(id.starts_with("JCSK") && secret.len() == 40, "{created:?}");
    let other = env.json(0, None, &["admin", "key", "create"]);
    let other_id = other[0]["accessKeyID"].as_str().unwrap().to_owned();
    let listed = env.json(0, None, &["admin", "key", "list"]);
    let ids: Vec<&str> = listed
        .iter()
        .map(|k| k["accessKeyID"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&id.as_str()) && ids.contains(&other_id.as_str()),
        "{listed:?}"
    );
    let text = env.expect(0, None, &["admin", "key", "list"]);
    assert!(!text.contains(&secret), "list never prints secrets");
    assert!(listed.iter().all(|k| k.get("secretKey").is_none()));
    let me = Some((id.as_str(), secret.as_str()));

    // Without credentials, or with a wrong secret: exit code 5, nothing created.
    env.expect(5, None, &["bucket", "create", "nope"]);
    env.expect(
        5,
        Some((id.as_str(), "wrong-secret")),
        &["bucket", "create", "nope"],
    );
    let err = env.json(5, None, &["bucket", "ls"]);
    assert_eq!(err[0]["error"]["kind"], "Unauthenticated", "{err:?}");

    // With the key: create, upload (streamed, UNSIGNED-PAYLOAD), list, download.
    env.expect(0, me, &["bucket", "create", "b"]);
    env.expect(0, me, &["package", "create", "jcs://b/p"]);
    let src = env.path("src.bin");
    let data = crate::data(7, 2_500_000);
    write(&src, &data);
    env.expect(
        0,
        me,
        &["cp", src.to_str().unwrap(), "jcs://b/p/dir/a b.bin"],
    );
    // A multipart upload (parts of 1 MiB).
    env.expect(
        0,
        me,
        &[
            "cp",
            "--multipart-threshold",
            "1MiB",
            "--part-size",
            "1MiB",
            src.to_str().unwrap(),
            "jcs://b/p/parts.bin",
        ],
    );
    let ls = env.json(0, me, &["ls", "-r", "jcs://b/p/"]);
    let mut paths: Vec<&str> = ls.iter().filter_map(|o| o["path"].as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["dir/a b.bin", "parts.bin"], "{ls:?}");
    for name in ["dir/a b.bin", "parts.bin"] {
        let dst = env.path("down.bin");
        let _ = std::fs::remove_file(&dst);
        env.expect(
            0,
            me,
            &["cp", &format!("jcs://b/p/{name}"), dst.to_str().unwrap()],
        );
        assert!(std::fs::read(&dst).unwrap() == data, "{name} differs");
    }
    env.expect(5, None, &["ls", "jcs://b/p/"]);
    // The bucket refused above was never created.
    let buckets = env.json(0, me, &["bucket", "ls"]);
    assert_eq!(buckets.len(), 1, "{buckets:?}");

    // A read-only key lists and downloads; a change is refused (exit 1, PermissionDenied).
    let ro = env.json(
        0,
        None,
        &["admin", "key", "create", "--name", "reader", "--read-only"],
    );
    assert_eq!(ro[0]["readOnly"], true, "{ro:?}");
    let ro_id = ro[0]["accessKeyID"].as_str().unwrap().to_owned();
    let ro_secret = ro[0]["secretKey"].as_str().unwrap().to_owned();
    let reader = Some((ro_id.as_str(), ro_secret.as_str()));
    let listed = env.json(0, None, &["admin", "key", "list"]);
    let flag = |key: &str| {
        listed
            .iter()
            .find(|k| k["accessKeyID"] == key)
            .map(|k| k["readOnly"].clone())
    };
    assert_eq!(
        (flag(&ro_id), flag(&id)),
        (Some(json!(true)), Some(json!(false)))
    );
    assert_eq!(env.json(0, reader, &["ls", "-r", "jcs://b/p/"]).len(), 2);
    let dst = env.path("ro.bin");
    env.expect(
        0,
        reader,
        &["cp", "jcs://b/p/parts.bin", dst.to_str().unwrap()],
    );
    assert!(std::fs::read(&dst).unwrap() == data);
    let err = env.json(1, reader, &["bucket", "create", "ro-bucket"]);
    assert_eq!(err[0]["error"]["kind"], "PermissionDenied", "{err:?}");
    env.expect(1, reader, &["rm", "jcs://b/p/parts.bin"]);
    assert_eq!(
        env.json(0, me, &["bucket", "ls"]).len(),
        1,
        "nothing created"
    );
    assert_eq!(
        env.json(0, me, &["ls", "-r", "jcs://b/p/"]).len(),
        2,
        "nothing deleted"
    );

    // Delete the key: it stops working within the gateway's key cache TTL (5 s).
    env.expect(0, None, &["admin", "key", "delete", &id]);
    env.expect(3, None, &["admin", "key", "delete", &id]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let code = env.run(me, &["bucket", "ls"]).status.code();
        if code == Some(5) {
            break;
        }
        assert_eq!(code, Some(0));
        assert!(Instant::now() < deadline, "deleted key still accepted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The other key still works.
    let other_secret = other[0]["secretKey"].as_str().unwrap();
    env.expect(
        0,
        Some((other_id.as_str(), other_secret)),
        &["bucket", "ls"],
    );
    let listed = env.json(0, None, &["admin", "key", "list"]);
    assert_eq!(listed.len(), 2, "the other key and the reader: {listed:?}");
    terminate(env.s);
}

#[tokio::test]
async fn half_credentials_are_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.toml"), "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jcs"))
        .env("JCS_URL", "http://127.0.0.1:1")
        .env("JCS_CONFIG", dir.path().join("empty.toml"))
        .env("JCS_ACCESS_KEY", "JCSKONLYID")
        .env_remove("JCS_SECRET_KEY")
        .args(["bucket", "ls"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `jcs admin scrub` runs the repair and scrub job on demand; `/v1/admin/scrub/*` needs a
/// signature like the rest of `/v1`.
#[tokio::test]
async fn admin_scrub_runs_on_demand_and_its_routes_need_a_signature() {
    let env = Env::new().await;
    let started = env.json(0, None, &["admin", "scrub", "start", "--deep", "--wait"]);
    let last = started.last().unwrap();
    assert_eq!(last["running"], false, "{started:?}");
    assert_eq!(last["deep"], true, "{started:?}");
    assert_eq!(last["runs"], 1, "{started:?}");
    assert_eq!(last["failed"], 0, "{started:?}");
    let status = env.json(0, None, &["admin", "scrub", "status"]);
    assert_eq!(status[0]["runs"], 1, "{status:?}");
    let text = env.expect(0, None, &["admin", "scrub", "status"]);
    assert!(text.contains("idle"), "{text}");
    // A package that does not exist: NotFound (exit 3).
    env.expect(3, None, &["admin", "scrub", "start", "--package", "999"]);

    let http = reqwest::Client::new();
    for req in [
        http.get(format!("{}/v1/admin/scrub/status", env.s.base)),
        http.post(format!("{}/v1/admin/scrub/start", env.s.base))
            .json(&serde_json::json!({})),
    ] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), reqwest::StatusCode::UNAUTHORIZED);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["code"], "Unauthorized", "{v}");
    }
    terminate(env.s);
}
