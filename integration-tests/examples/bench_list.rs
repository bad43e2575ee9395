//! Listing benchmark: a package with N objects (default 100,000) in a redb-backed cluster
//! (the standalone configuration), walked with `listByPath` pages of 1000 through the
//! gateway, next to a raw range scan of the same keys in the metadata store (the floor).
//!
//! `cargo run --release -p integration-tests --example bench_list [-- N]`

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Instant;

use integration_tests::{Api, Meta, TestCluster};

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(100_000);
    let c = TestCluster::builder()
        .meta(Meta::Redb)
        .build()
        .await
        .unwrap();
    let api = c.api().clone();
    let bucket = api.create_bucket("bench").await;
    let p = api.create_package(bucket, "list").await;

    let t = Instant::now();
    let per_request = 1000;
    let requests: Vec<usize> = (0..n.div_ceil(per_request)).collect();
    for wave in requests.chunks(4) {
        let mut tasks = Vec::new();
        for &r in wave {
            let api = api.clone();
            tasks.push(tokio::spawn(async move {
                let names: Vec<String> = (r * per_request..((r + 1) * per_request).min(n))
                    .map(|i| format!("dir{:03}/obj{i:08}", i % 100))
                    .collect();
                let files: Vec<(&str, Vec<u8>)> = names
                    .iter()
                    .map(|s| (s.as_str(), s.as_bytes().to_vec()))
                    .collect();
                api.upload(p, &files).await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    let load = t.elapsed();

    let t = Instant::now();
    let mut token = String::new();
    let mut listed = 0;
    let mut pages = 0;
    loop {
        let q = format!(
            "/v1/object/listByPath?packageID={p}&path=&isPrefix=true&maxKeys=1000&continuationToken={token}"
        );
        let d = Api::ok(api.get(&q).await);
        listed += d["objects"].as_array().unwrap().len();
        pages += 1;
        if d["isTruncated"] == false {
            break;
        }
        token = d["nextContinuationToken"].as_str().unwrap().to_owned();
    }
    let list = t.elapsed();
    assert_eq!(listed, n, "the walk must see every object once");

    let t = Instant::now();
    let mut scanned = 0;
    let meta = c.meta();
    let mut start = b"v1/object/".to_vec();
    let end = meta::prefix_end(b"v1/object/");
    loop {
        let page = meta
            .range(meta::Range {
                start: start.clone(),
                end: end.clone(),
                limit: 1000,
                keys_only: false,
            })
            .await
            .unwrap();
        scanned += page.kvs.len();
        if !page.more {
            break;
        }
        start = page.kvs.last().unwrap().key.clone();
        start.push(0);
    }
    let raw = t.elapsed();
    assert_eq!(scanned, n);

    let rate = |d: std::time::Duration| n as f64 / d.as_secs_f64();
    println!(
        "objects: {n} (loaded in {:.1} s, {:.0} uploads/s)",
        load.as_secs_f64(),
        rate(load)
    );
    println!("{:<40} {:>10} {:>14}", "step", "seconds", "objects/s");
    println!(
        "{:<40} {:>10.3} {:>14.0}",
        "raw metadata range scan (baseline)",
        raw.as_secs_f64(),
        rate(raw)
    );
    println!(
        "{:<40} {:>10.3} {:>14.0}",
        format!("listByPath, {pages} pages of 1000"),
        list.as_secs_f64(),
        rate(list)
    );
    println!(
        "ratio listByPath / raw scan: {:.2}",
        raw.as_secs_f64() / list.as_secs_f64()
    );
    println!(
        "goal: >= 50000 objects/s -> {}",
        if rate(list) >= 50_000.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    c.shutdown().await;
}
