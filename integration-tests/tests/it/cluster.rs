//! Multi-agent clusters on each metadata backend, surviving a coordinator restart.

use std::collections::HashSet;

use integration_tests::api::file_hash;
use integration_tests::{Api, Meta, TestCluster};
use serde_json::json;

use crate::data;

async fn many_files_survive_a_coordinator_restart(meta: Meta) {
    let Some(mut c) = TestCluster::builder().meta(meta).agents(2).build().await else {
        return;
    };
    let api = c.api().clone();
    let bucket = api.create_bucket("cluster").await;
    let package = api.create_package(bucket, "many").await;

    // 40 files from 0 bytes to ~2.5 MiB, uploaded in batches of 8 per request.
    let files: Vec<(String, Vec<u8>)> = (0..40u64)
        .map(|i| {
            let len = match i % 5 {
                0 => 0,
                1 => 1,
                2 => 4096,
                3 => 1024 * 1024 + 1,
                _ => 2_600_000 + i as usize,
            };
            (format!("dir{}/file-{i}.bin", i % 3), data(100 + i, len))
        })
        .collect();
    let mut ids = Vec::new();
    for batch in files.chunks(8) {
        let refs: Vec<(&str, Vec<u8>)> =
            batch.iter().map(|(p, d)| (p.as_str(), d.clone())).collect();
        for (o, (path, d)) in api.upload(package, &refs).await.iter().zip(batch) {
            assert_eq!(o["path"], path.as_str());
            assert_eq!(o["fileHash"], file_hash(d));
            ids.push(o["objectID"].as_u64().unwrap());
        }
    }
    // Both agents received shards (round-robin placement).
    assert!(!c.shard_files(0).is_empty() && !c.shard_files(1).is_empty());

    let check = |api: Api, ids: Vec<u64>, files: Vec<(String, Vec<u8>)>| async move {
        let listed = api.package_objects(package).await;
        assert_eq!(listed.len(), files.len());
        let listed_paths: HashSet<_> = listed
            .iter()
            .map(|o| o["path"].as_str().unwrap().to_owned())
            .collect();
        for ((path, d), id) in files.iter().zip(&ids) {
            assert!(listed_paths.contains(path));
            let got = api.download_all(*id).await;
            assert_eq!(got.len(), d.len(), "{path}");
            assert_eq!(file_hash(&got), file_hash(d), "{path}");
        }
    };
    check(api.clone(), ids.clone(), files.clone()).await;

    c.restart_coordinator().await;
    check(api.clone(), ids.clone(), files.clone()).await;
    // And writes still work after the restart.
    let more = api
        .upload(package, &[("after-restart", b"still here".to_vec())])
        .await;
    let id = more[0]["objectID"].as_u64().unwrap();
    assert!(!ids.contains(&id), "ids are never reused");
    assert_eq!(&api.download_all(id).await[..], b"still here");
    Api::ok(
        api.post("/v1/package/delete", json!({"packageID": package}))
            .await,
    );
    c.shutdown().await;
}

#[tokio::test]
async fn etcd_cluster_with_two_agents_survives_coordinator_restart() {
    many_files_survive_a_coordinator_restart(Meta::Etcd).await;
}

#[tokio::test]
async fn redb_cluster_with_two_agents_survives_coordinator_restart() {
    many_files_survive_a_coordinator_restart(Meta::Redb).await;
}

#[tokio::test]
async fn upload_fails_clearly_when_no_agent_is_alive() {
    let mut c = TestCluster::builder().build().await.unwrap();
    let api = c.api().clone();
    let bucket = api.create_bucket("b").await;
    let package = api.create_package(bucket, "p").await;
    let up = api.upload(package, &[("f", b"abc".to_vec())]).await;
    let id = up[0]["objectID"].as_u64().unwrap();
    c.stop_agent(0).await;
    // Within the TTL the agent may still count as live; poll until the upload is refused.
    let refused = common::testing::wait_until(std::time::Duration::from_secs(15), || {
        let api = api.clone();
        async move {
            let (status, v) = api
                .post_form(
                    "/v1/object/upload",
                    Api::upload_form(package, &[("g", b"x".to_vec())]),
                )
                .await;
            status.is_server_error()
                && v["code"] == "OperationFailed"
                && !v["message"].as_str().unwrap().is_empty()
        }
    })
    .await;
    assert!(
        refused,
        "upload with no live agent was not refused with a message"
    );
    let (status, _) = api.download(&format!("objectID={id}")).await;
    assert!(status.is_server_error());
    // The failed upload left no object behind.
    assert_eq!(api.package_objects(package).await.len(), 1);
    c.shutdown().await;
}
