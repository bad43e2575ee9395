//! Small-object upload benchmark on etcd: 4 KiB objects uploaded through the gateway by C
//! concurrent clients (default 16), next to raw etcd puts of 4 KiB values with the same
//! concurrency through the same client library (the baseline), in the same run.
//!
//! Both sides run `ROUNDS` times, alternating (etcd and the machine warm up, and a noisy
//! moment hits both); the table shows every round and the ratio of the best rates.
//!
//! Needs `JCS_TEST_ETCD_ENDPOINTS` (see `bench/small-uploads.sh`, which starts etcd).
//! `cargo run --release -p integration-tests --example bench_small_uploads [-- N C ROUNDS]`
//! (`BENCH_STAGES=1` also prints the server-side latency sums and counts per stage).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use integration_tests::{Api, Meta, TestCluster};
use meta::MetaStore;

/// The allocator of the `jcs` binary, so the in-process cluster runs as it does there.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|s| s.parse().unwrap()).unwrap_or(3000);
    let conc: usize = args.next().map(|s| s.parse().unwrap()).unwrap_or(16);
    let rounds: usize = args.next().map(|s| s.parse().unwrap()).unwrap_or(3);
    let endpoints =
        integration_tests::etcd::endpoints().expect("JCS_TEST_ETCD_ENDPOINTS must be set");
    let value = vec![7u8; 4096];
    let store = Arc::new(
        meta::EtcdStore::connect(meta::EtcdOptions {
            endpoints: endpoints.clone(),
            ..Default::default()
        })
        .await
        .unwrap(),
    );
    let c = TestCluster::builder()
        .meta(Meta::Etcd)
        .build()
        .await
        .unwrap();
    let api = c.api().clone();
    let bucket = api.create_bucket("bench").await;

    println!(
        "{n} x 4 KiB, concurrency {conc}, {rounds} rounds, etcd at {}",
        endpoints.join(",")
    );
    println!("{:<36} {:>10} {:>12}", "step", "seconds", "ops/s");
    let rate = |d: std::time::Duration| n as f64 / d.as_secs_f64();
    let (mut best_raw, mut best_jcs) = (0f64, 0f64);
    for round in 1..=rounds {
        let raw = raw_puts(&store, n, conc, &value).await;
        println!(
            "{:<36} {:>10.3} {:>12.0}",
            format!("round {round}: raw etcd put (baseline)"),
            raw.as_secs_f64(),
            rate(raw)
        );
        let jcs = uploads(&api, bucket, round, n, conc, &value).await;
        println!(
            "{:<36} {:>10.3} {:>12.0}",
            format!("round {round}: jcs upload (1 file/request)"),
            jcs.as_secs_f64(),
            rate(jcs)
        );
        best_raw = best_raw.max(rate(raw));
        best_jcs = best_jcs.max(rate(jcs));
    }
    let ratio = best_jcs / best_raw;
    println!("best: raw etcd {best_raw:.0} puts/s, jcs {best_jcs:.0} uploads/s");
    println!(
        "ratio jcs / raw: {ratio:.2} (goal >= 0.30: {})",
        if ratio >= 0.3 { "met" } else { "NOT met" }
    );
    // BENCH_STAGES=1: server-side latency of every stage (HTTP request, each gRPC call),
    // from the process's metrics registry, to see where an upload's time goes.
    if std::env::var("BENCH_STAGES").is_ok() {
        for line in common::metrics::metrics().render().lines() {
            if (line.contains("_sum") || line.contains("_count")) && line.contains("duration") {
                println!("{line}");
            }
        }
    }
    c.shutdown().await;
}

/// `n` raw puts of `value` by `conc` tasks; how long they took.
async fn raw_puts(
    store: &Arc<meta::EtcdStore>,
    n: usize,
    conc: usize,
    value: &[u8],
) -> std::time::Duration {
    let prefix = format!("bench-raw-{}/", uuid::Uuid::new_v4());
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conc {
        let store = store.clone();
        let value = value.to_vec();
        let prefix = prefix.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(conc) {
                store
                    .put(format!("{prefix}{i:08}").into_bytes(), value.clone())
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    t.elapsed()
}

/// `n` uploads of one 4 KiB file per request into a new package, by `conc` clients.
async fn uploads(
    api: &Api,
    bucket: u64,
    round: usize,
    n: usize,
    conc: usize,
    value: &[u8],
) -> std::time::Duration {
    let p = api.create_package(bucket, &format!("small-{round}")).await;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conc {
        let api = api.clone();
        let value = value.to_vec();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(conc) {
                let mut v = value.clone();
                v[..8].copy_from_slice(&(i as u64).to_le_bytes());
                let name = format!("f{i:08}");
                let (_, r) = api
                    .post_form(
                        "/v1/object/upload",
                        Api::upload_form(p, &[(name.as_str(), v)]),
                    )
                    .await;
                assert_eq!(r["code"], "OK", "{r}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = t.elapsed();
    assert_eq!(api.package_objects(p).await.len(), n);
    took
}
