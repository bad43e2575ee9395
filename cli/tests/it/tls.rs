//! `jcs cert` and the start-up rule on plain TCP, with the real binary. (A whole cluster on
//! mTLS runs in `ha.rs`; in-process clusters in integration-tests `tls.rs`.)

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

fn jcs(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_jcs"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

#[test]
fn jcs_cert_creates_a_ca_and_node_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let out = dir.path().join("tls");
    let (ca_s, out_s) = (ca.to_str().unwrap(), out.to_str().unwrap());
    let r = jcs(&["cert", "ca", "--out", ca_s]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let printed = String::from_utf8(r.stdout).unwrap();
    assert!(
        printed.contains("ca.pem") && printed.contains("ca.key"),
        "{printed}"
    );
    let args = [
        "cert",
        "issue",
        "--ca",
        ca_s,
        "--name",
        "node-1",
        "--dns",
        "a.internal,b.internal",
        "--ip",
        "127.0.0.1,::1",
        "--out",
        out_s,
    ];
    let r = jcs(&args);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    for (file, mode) in [
        (ca.join("ca.key"), 0o600),
        (out.join("node-1.key"), 0o600),
        (out.join("node-1.pem"), 0o644),
    ] {
        let m = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, mode, "{}", file.display());
    }
    // The files load as a role's [tls] section.
    let tls = common::tls::TlsConfig::files(
        ca.join("ca.pem"),
        out.join("node-1.pem"),
        out.join("node-1.key"),
    );
    assert!(tls.load().unwrap().is_some());

    // Issuing again over existing files, or a malformed name, fails with a message.
    let r = jcs(&args);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("exists"));
    let r = jcs(&[
        "cert", "issue", "--ca", ca_s, "--name", "n2", "--dns", "bad name", "--out", out_s,
    ]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("invalid DNS name"));
    let r = jcs(&[
        "cert", "issue", "--ca", out_s, "--name", "n3", "--out", out_s,
    ]);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("ca.pem"));
}

/// Start `jcs coordinator` with `config`; `Err(stderr)` when it exits within 20 s, `Ok`
/// (after a clean SIGTERM stop) when it serves on `port`.
async fn run_coordinator(config: &std::path::Path, port: u16) -> Result<(), String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jcs"))
        .args(["--log", "warn", "coordinator", "--config"])
        .arg(config)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return Err(err);
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            crate::stop(child);
            return Ok(());
        }
        assert!(
            Instant::now() < deadline,
            "coordinator neither served nor exited"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_role_on_a_public_address_without_tls_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!(
        "listen = \"0.0.0.0:{port}\"\ncluster_secret = \"0123456789abcdef\"\n[meta]\nbackend = \"memory\"\n"
    );
    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, &base).unwrap();
    let err = run_coordinator(&plain, port).await.unwrap_err();
    assert!(
        err.contains("refusing plain TCP on non-loopback address 0.0.0.0")
            && err.contains("insecure_plaintext"),
        "{err}"
    );

    let opt_in = dir.path().join("opt-in.toml");
    std::fs::write(&opt_in, format!("{base}[tls]\ninsecure_plaintext = true\n")).unwrap();
    run_coordinator(&opt_in, port).await.unwrap();
}
