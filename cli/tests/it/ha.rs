//! Fault injection on a real cluster of `jcs` processes on loopback: an etcd of the test's
//! own (so it can be stopped), 2 coordinators, agents and a gateway configured with both
//! coordinators. Gated on etcd like the other etcd tests: without `JCS_TEST_ETCD_ENDPOINTS`
//! (and not required by `CI=true` / `JCS_TEST_REQUIRE_ETCD=1`) they print a skip line; the
//! `etcd` and `etcdctl` binaries come from PATH (or `ETCD_BIN` / `ETCDCTL_BIN`).
//! The JCS processes talk mTLS with each other: a CA and one certificate per process made by
//! `jcs cert` (as `deploy/local-cluster.sh` does). The agent kill waits until bytes are
//! flowing (1 MiB read by the client, 1 MiB in the agent's `tmp/`) before `kill -9`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{SlowUpload, dir_bytes, download_when_back, free_port, signal, wait_agent_receiving};

fn etcd_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("JCS_TEST_REQUIRE_ETCD").is_ok_and(|v| v == "1")
}

/// Whether to run: etcd tests are enabled (same rule as the integration tests).
fn enabled(test: &str) -> bool {
    if std::env::var("JCS_TEST_ETCD_ENDPOINTS").is_ok_and(|v| !v.trim().is_empty()) {
        return true;
    }
    assert!(
        !etcd_required(),
        "JCS_TEST_ETCD_ENDPOINTS is not set but etcd is required; run scripts/test.sh"
    );
    #[allow(clippy::print_stderr)]
    {
        eprintln!("skipped {test}: JCS_TEST_ETCD_ENDPOINTS not set (run scripts/test.sh)");
    }
    false
}

fn etcd_bin() -> String {
    std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into())
}

fn etcdctl_bin() -> String {
    std::env::var("ETCDCTL_BIN").unwrap_or_else(|_| "etcdctl".into())
}

/// A process with its log file; killed (SIGKILL) when dropped.
struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, dir: &Path, cmd: &mut Command) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Proc {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    fn child(&self) -> &Child {
        self.child.as_ref().unwrap()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    etcd_port: u16,
    etcd: Proc,
    root: String,
    coord_addrs: Vec<String>,
    coords: Vec<Proc>,
    agents: Vec<Proc>,
    _gateway: Proc,
    base: String,
    http: reqwest::Client,
}

async fn start_etcd(dir: &Path, port: u16) -> Proc {
    let peer = port + 1;
    let p = Proc::spawn(
        "etcd",
        dir,
        Command::new(etcd_bin())
            .args(["--name", "jcs-ha-test", "--data-dir"])
            .arg(dir.join("etcd-data"))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{port}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{port}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-cluster",
                &format!("jcs-ha-test=http://127.0.0.1:{peer}"),
                "--logger",
                "zap",
                "--log-level",
                "warn",
            ]),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = Command::new(etcdctl_bin())
            .env("ETCDCTL_API", "3")
            .args([
                &format!("--endpoints=127.0.0.1:{port}"),
                "endpoint",
                "health",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "etcd did not start: {}",
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two free ports in a row (etcd client + peer).
fn free_port_pair() -> u16 {
    loop {
        let p = free_port();
        if p < 65000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

/// Run `jcs` with `args` (a short command such as `jcs cert`), asserting success.
fn jcs(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_jcs"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "jcs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `[tls]` section of process `name`: its certificate, issued with `jcs cert` by the
/// test's CA (created on first use) for 127.0.0.1 and localhost.
fn tls_section(dir: &Path, name: &str) -> String {
    let ca = dir.join("ca");
    let certs = dir.join("certs");
    if !ca.join("ca.pem").exists() {
        jcs(&["cert", "ca", "--out", ca.to_str().unwrap()]);
    }
    jcs(&[
        "cert",
        "issue",
        "--ca",
        ca.to_str().unwrap(),
        "--name",
        name,
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--out",
        certs.to_str().unwrap(),
    ]);
    format!(
        "[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
        ca.join("ca.pem"),
        certs.join(format!("{name}.pem")),
        certs.join(format!("{name}.key"))
    )
}

impl Cluster {
    async fn start(agents: usize) -> Cluster {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_owned();
        let secret = d.join("cluster.secret");
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let etcd_port = free_port_pair();
        let etcd = start_etcd(&d, etcd_port).await;
        let root = format!("ha{}", free_port());
        let coord_addrs: Vec<String> = (0..2)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let list = coord_addrs.join(",");
        let write = |name: &str, text: String| {
            let p = d.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let tls = |name: &str| tls_section(&d, name);
        let mut coords = Vec::new();
        for (i, addr) in coord_addrs.iter().enumerate() {
            let cfg = write(
                &format!("coordinator-{i}.toml"),
                format!(
                    "listen = \"{addr}\"\nroot = \"{root}\"\ncluster_secret_file = {secret:?}\n\
                     heartbeat_interval = \"300ms\"\nagent_ttl = \"3s\"\nleader_ttl = \"2s\"\n\
                     [meta]\nbackend = \"etcd\"\nendpoints = [\"http://127.0.0.1:{etcd_port}\"]\n\
                     connect_timeout = \"1s\"\nrequest_timeout = \"2s\"\n{}",
                    tls(&format!("coordinator-{i}"))
                ),
            );
            coords.push(Proc::spawn(
                &format!("coordinator-{i}"),
                &d,
                Command::new(env!("CARGO_BIN_EXE_jcs"))
                    .args(["--log", "info", "coordinator", "--config"])
                    .arg(cfg),
            ));
        }
        let mut agent_procs = Vec::new();
        for i in 0..agents {
            let cfg = write(
                &format!("agent-{i}.toml"),
                format!(
                    "name = \"agent-{i}\"\nlisten = \"127.0.0.1:{}\"\ncoordinator = \"{list}\"\n\
                     cluster_secret_file = {secret:?}\nheartbeat_interval = \"300ms\"\n\
                     [[spaces]]\nname = \"{root}-s{i}\"\npath = {:?}\n{}",
                    free_port(),
                    d.join(format!("space-{i}")),
                    tls(&format!("agent-{i}"))
                ),
            );
            agent_procs.push(Proc::spawn(
                &format!("agent-{i}"),
                &d,
                Command::new(env!("CARGO_BIN_EXE_jcs"))
                    .args(["--log", "info", "agent", "--config"])
                    .arg(cfg),
            ));
        }
        let gp = free_port();
        let gcfg = write(
            "gateway.toml",
            format!(
                "listen = \"127.0.0.1:{gp}\"\ncoordinator = \"{list}\"\nrequest_timeout = \"40s\"\n{}",
                tls("gateway")
            ),
        );
        let gateway = Proc::spawn(
            "gateway",
            &d,
            Command::new(env!("CARGO_BIN_EXE_jcs"))
                .args(["--log", "info", "gateway", "--config"])
                .arg(gcfg),
        );
        let base = format!("http://127.0.0.1:{gp}");
        crate::wait_healthy(&base).await;
        Cluster {
            dir,
            etcd_port,
            etcd,
            root,
            coord_addrs,
            coords,
            agents: agent_procs,
            _gateway: gateway,
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    /// The leader key's value (a coordinator address), read with etcdctl.
    fn leader(&self) -> Option<String> {
        let out = Command::new(etcdctl_bin())
            .env("ETCDCTL_API", "3")
            .args([
                &format!("--endpoints=127.0.0.1:{}", self.etcd_port),
                "--command-timeout=2s",
                "get",
                "--print-value-only",
                &format!("{}/v1/leader", self.root),
            ])
            .output()
            .ok()?;
        let v = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !v.is_empty()).then_some(v)
    }

    async fn wait_leader(&self, not: Option<&str>, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.leader()
                && Some(l.as_str()) != not
            {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no (new) leader within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn coord_index(&self, addr: &str) -> usize {
        self.coord_addrs.iter().position(|a| a == addr).unwrap()
    }

    async fn call(&self, req: reqwest::RequestBuilder) -> serde_json::Value {
        match req.send().await {
            Ok(r) => r.json().await.unwrap_or_else(
                |e| serde_json::json!({"code": "Transport", "message": e.to_string()}),
            ),
            Err(e) => serde_json::json!({"code": "Transport", "message": e.to_string()}),
        }
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        self.call(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    /// Bucket and package, retried until the cluster answers (agents register meanwhile).
    async fn package(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let b = self
                .post("/v1/bucket/create", serde_json::json!({"name": "b"}))
                .await;
            if b["code"] == "OK" {
                let bucket = b["data"]["bucket"]["bucketID"].as_u64().unwrap();
                let p = self
                    .post(
                        "/v1/package/create",
                        serde_json::json!({"bucketID": bucket, "name": "p"}),
                    )
                    .await;
                assert_eq!(p["code"], "OK", "{p}");
                return p["data"]["package"]["packageID"].as_u64().unwrap();
            }
            assert!(Instant::now() < deadline, "bucket create: {b}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn upload(&self, package: u64, path: &str, content: Vec<u8>) -> serde_json::Value {
        let form = reqwest::multipart::Form::new()
            .text(
                "info",
                serde_json::json!({"packageID": package}).to_string(),
            )
            .part(
                "files",
                reqwest::multipart::Part::bytes(content).file_name(path.to_owned()),
            );
        self.call(
            self.http
                .post(format!("{}/v1/object/upload", self.base))
                .multipart(form),
        )
        .await
    }

    async fn download(&self, object: u64) -> Result<Vec<u8>, String> {
        let r = self
            .http
            .get(format!(
                "{}/v1/object/download?objectID={object}",
                self.base
            ))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("status {}", r.status()));
        }
        r.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| e.to_string())
    }

    async fn paths(&self, package: u64) -> Vec<String> {
        let v = self
            .call(self.http.get(format!(
                "{}/v1/object/getPackageObjects?packageID={package}",
                self.base
            )))
            .await;
        assert_eq!(v["code"], "OK", "{v}");
        v["data"]["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["path"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Wait until an upload succeeds (every agent has registered with the coordinators).
    async fn warm_up(&self, package: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.upload(package, "warm-up", b"warm".to_vec()).await;
            if v["code"] == "OK" {
                return;
            }
            assert!(Instant::now() < deadline, "warm-up upload: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// `text` without ANSI colour sequences (`ESC [ … m`), as logs written to a file may carry.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn content(i: u64) -> Vec<u8> {
    let len = 100_000 + (i as usize * 7919) % 200_000;
    crate::data(i, len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_during_uploads_loses_no_acknowledged_upload() {
    if !enabled("killing_the_leader_during_uploads_loses_no_acknowledged_upload") {
        return;
    }
    let mut c = Cluster::start(2).await;
    let leader = c.wait_leader(None, Duration::from_secs(20)).await;
    let package = c.package().await;
    c.warm_up(package).await;
    // The cluster really runs on mTLS (an upload went gateway → coordinator → agent).
    for p in c.coords.iter().chain(&c.agents) {
        let log = strip_ansi(&p.log_text());
        assert!(log.contains("mtls=true"), "{log}");
    }

    const UPLOADS: u64 = 40;
    const KILL_AT: u64 = 10;
    let mut acked = Vec::new();
    let mut failed = Vec::new();
    let mut new_leader = None;
    for i in 0..UPLOADS {
        if i == KILL_AT {
            let idx = c.coord_index(&leader);
            c.coords[idx].kill9();
        }
        let path = format!("u{i}");
        let v = c.upload(package, &path, content(i)).await;
        if v["code"] == "OK" {
            acked.push((i, v["data"]["uploadeds"][0]["objectID"].as_u64().unwrap()));
        } else {
            failed.push((i, v.to_string()));
        }
        if i == KILL_AT {
            new_leader = Some(c.wait_leader(Some(&leader), Duration::from_secs(20)).await);
        }
    }
    let new_leader = new_leader.unwrap();
    assert_ne!(new_leader, leader);
    let mut verified = 0;
    for (i, object) in &acked {
        let got = c
            .download(*object)
            .await
            .unwrap_or_else(|e| panic!("u{i}: {e}"));
        assert!(got == content(*i), "u{i} differs after the failover");
        verified += 1;
    }
    let visible = c.paths(package).await;
    for (i, why) in &failed {
        assert!(
            !visible.contains(&format!("u{i}")),
            "failed upload u{i} ({why}) is visible"
        );
    }
    let lost = acked.len() - verified;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "leader failover: uploads={UPLOADS} acknowledged={} verified={verified} failed={} lost={lost} (old leader {leader}, new leader {new_leader})",
            acked.len(),
            failed.len()
        );
    }
    assert_eq!(lost, 0);
    assert!(
        acked.iter().filter(|(i, _)| *i > KILL_AT).count() as u64 >= (UPLOADS - KILL_AT - 1) / 2,
        "uploads must keep succeeding after the failover; failed: {failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_cannot_write() {
    if !enabled("a_deposed_leader_cannot_write") {
        return;
    }
    let c = Cluster::start(1).await;
    let leader = c.wait_leader(None, Duration::from_secs(20)).await;
    let idx = c.coord_index(&leader);
    let old = &c.coords[idx];
    signal(old.child(), "-STOP");
    // Past its lease (2 s): the other coordinator takes over.
    let new_leader = c.wait_leader(Some(&leader), Duration::from_secs(20)).await;
    signal(old.child(), "-CONT");
    // The resumed leader's next leader-only write is refused by the fence.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !old.log_text().contains("deposed: fenced write refused") {
        assert!(
            Instant::now() < deadline,
            "the resumed leader never hit its fence; log:\n{}",
            old.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And no leader-only effect of the old term landed: the state key names the new leader.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(c.leader().as_deref(), Some(new_leader.as_str()));
    let out = Command::new(etcdctl_bin())
        .env("ETCDCTL_API", "3")
        .args([
            &format!("--endpoints=127.0.0.1:{}", c.etcd_port),
            "get",
            "--print-value-only",
            &format!("{}/v1/leader-state", c.root),
        ])
        .output()
        .unwrap();
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state["leader"], new_leader.as_str(), "{state}");
    #[allow(clippy::print_stdout)]
    {
        println!("deposed leader {leader}: fenced write refused; leader now {new_leader}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_outage_fails_requests_then_recovers_without_restarts() {
    if !enabled("etcd_outage_fails_requests_then_recovers_without_restarts") {
        return;
    }
    let mut c = Cluster::start(1).await;
    c.wait_leader(None, Duration::from_secs(20)).await;
    let package = c.package().await;
    c.warm_up(package).await;

    c.etcd.kill9();
    let v = c
        .call(c.http.get(format!("{}/v1/bucket/listAll?userID=1", c.base)))
        .await;
    assert_eq!(v["code"], "OperationFailed", "{v}");
    let v = c.upload(package, "during-outage", b"x".to_vec()).await;
    assert_eq!(v["code"], "OperationFailed", "{v}");

    c.etcd = start_etcd(c.dir.path(), c.etcd_port).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    let object = loop {
        let v = c.upload(package, "after-outage", b"back".to_vec()).await;
        if v["code"] == "OK" {
            break v["data"]["uploadeds"][0]["objectID"].as_u64().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after etcd restart: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(c.download(object).await.unwrap(), b"back");
    let paths = c.paths(package).await;
    assert!(!paths.contains(&"during-outage".to_owned()), "{paths:?}");
    c.wait_leader(None, Duration::from_secs(20)).await;
    for p in c.coords.iter().chain(c.agents.iter()) {
        assert!(
            p.child.as_ref().is_some_and(|ch| Command::new("kill")
                .args(["-0", &ch.id().to_string()])
                .status()
                .is_ok_and(|s| s.success())),
            "{} exited",
            p.name
        );
    }
}

impl Cluster {
    /// Start agent `i` again with its config (after [`Proc::kill9`]).
    fn restart_agent(&mut self, i: usize) {
        let d = self.dir.path();
        self.agents[i] = Proc::spawn(
            &format!("agent-{i}"),
            d,
            Command::new(env!("CARGO_BIN_EXE_jcs"))
                .args(["--log", "info", "agent", "--config"])
                .arg(d.join(format!("agent-{i}.toml"))),
        );
    }

    /// The objects listByPath finds at exactly `path`.
    async fn at_path(&self, package: u64, path: &str) -> Vec<serde_json::Value> {
        let v = self
            .call(self.http.get(format!(
                "{}/v1/object/listByPath?packageID={package}&path={path}",
                self.base
            )))
            .await;
        assert_eq!(v["code"], "OK", "{v}");
        v["data"]["objects"].as_array().unwrap().clone()
    }

    /// Download `path` of `package`, retried while the agent is not back (503) for up to
    /// 30 s; the bytes of the first 200.
    async fn download_path_when_back(&self, package: u64, path: &str) -> Vec<u8> {
        let url = format!(
            "{}/v1/object/downloadByPath?packageID={package}&path={path}",
            self.base
        );
        download_when_back(&self.http, &url).await
    }
}

/// kill -9 of the only agent while bytes flow, deterministically:
/// - mid-download: the client has read 1 MiB of a 48 MiB object when the agent dies; the
///   body ends in an error before its `Content-Length` (never a clean short EOF); after a
///   restart of the agent the same download is byte-identical;
/// - mid-upload: a new version of a path is streaming and the agent has received at least
///   1 MiB of it (its `tmp/`) when it dies; the rest is sent after; the client gets an
///   error envelope (non-OK code and a message) or a broken stream, never a 200; listByPath
///   still shows only the previous version, which downloads byte-identical once the agent
///   is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_agent_mid_transfer_is_a_clear_error_and_leaves_nothing() {
    if !enabled("killing_an_agent_mid_transfer_is_a_clear_error_and_leaves_nothing") {
        return;
    }
    const MIB: usize = 1 << 20;
    let mut c = Cluster::start(1).await;
    c.wait_leader(None, Duration::from_secs(20)).await;
    let package = c.package().await;
    c.warm_up(package).await;
    let space = c.dir.path().join("space-0");

    // Stored before anything is killed: a big object, and version 1 of `doc`.
    let big = crate::data(7, 48 * MIB);
    let v = c.upload(package, "big", big.clone()).await;
    assert_eq!(v["code"], "OK", "{v}");
    let object = v["data"]["uploadeds"][0]["objectID"].as_u64().unwrap();
    let doc_v1 = crate::data(8, 3 * MIB + 11);
    let v = c.upload(package, "doc", doc_v1.clone()).await;
    assert_eq!(v["code"], "OK", "{v}");
    let doc_v1_id = v["data"]["uploadeds"][0]["objectID"].as_u64().unwrap();

    // Mid-download.
    let mut r = c
        .http
        .get(format!("{}/v1/object/download?objectID={object}", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let length = r.content_length();
    assert_eq!(
        length,
        Some(big.len() as u64),
        "no Content-Length to detect a cut"
    );
    let mut got = 0usize;
    while got < MIB {
        got += r
            .chunk()
            .await
            .unwrap()
            .expect("the body ended early")
            .len();
    }
    c.agents[0].kill9();
    let download_error = loop {
        match tokio::time::timeout(Duration::from_secs(30), r.chunk())
            .await
            .expect("the download hung after the agent died")
        {
            Ok(Some(b)) => got += b.len(),
            Ok(None) => break None,
            Err(e) => break Some(e.to_string()),
        }
    };
    assert!(
        download_error.is_some() && got < big.len(),
        "a download cut by the agent's death ended cleanly after {got} of {} bytes",
        big.len()
    );
    c.restart_agent(0);
    let again = c.download_path_when_back(package, "big").await;
    assert!(again == big, "the download after the restart differs");

    // Mid-upload: version 2 of `doc`, its body fed piece by piece.
    let doc_v2 = crate::data(9, 8 * MIB);
    let up = SlowUpload::start(&c.http, &c.base, package, "doc");
    // The gateway may stop reading once the agent is gone: never wait on it forever.
    let within = Duration::from_secs(5);
    assert!(
        up.send_within(&doc_v2[..3 * MIB], within).await,
        "the gateway stopped reading early"
    );
    wait_agent_receiving(&space, MIB as u64).await;
    let tmp = space.join("tmp");
    let at_kill = dir_bytes(&tmp);
    c.agents[0].kill9();
    let mut sent_after = 0usize;
    for piece in doc_v2[3 * MIB..].chunks(MIB) {
        if !up.send_within(piece, within).await {
            break;
        }
        sent_after += piece.len();
    }
    drop(up.tx);
    let answer = match tokio::time::timeout(Duration::from_secs(60), up.answer)
        .await
        .expect("the upload hung after the agent died")
        .unwrap()
    {
        Ok(r) => {
            let status = r.status();
            match r.json::<serde_json::Value>().await {
                Ok(v) => {
                    assert_ne!(v["code"], "OK", "upload to a dead agent acknowledged: {v}");
                    assert_ne!(status, 200, "{v}");
                    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
                    assert_ne!(
                        v["message"], "internal error",
                        "the error names what broke: {v}"
                    );
                    format!("{status} {v}")
                }
                Err(e) => format!("{status}, broken body: {e}"),
            }
        }
        Err(e) => format!("transport error: {e}"),
    };
    let listed = c.at_path(package, "doc").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        listed[0]["objectID"].as_u64(),
        Some(doc_v1_id),
        "{listed:?}"
    );
    assert_eq!(listed[0]["size"], doc_v1.len().to_string(), "{listed:?}");
    c.restart_agent(0);
    let doc = c.download_path_when_back(package, "doc").await;
    assert!(doc == doc_v1, "the previous version of doc changed");
    #[allow(clippy::print_stdout)]
    {
        println!(
            "agent killed mid-download: error after {got} of {} bytes ({}); \
             mid-upload ({at_kill} bytes at the agent, {sent_after} sent after): {answer}",
            big.len(),
            download_error.unwrap_or_default()
        );
    }
}
