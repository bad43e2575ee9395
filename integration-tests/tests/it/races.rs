//! Races on etcd and redb: concurrent uploads of one path leave one winner and no orphan
//! reference; move/clone/delete racing with uploads never leave an object pointing at a
//! missing shard, even after garbage collection.

use std::time::Duration;

use integration_tests::api::file_hash;
use integration_tests::{Api, Meta, TestCluster};
use serde_json::json;

use crate::data;

/// Every shard reference belongs to a listed object and every listed object downloads
/// with its reported hash.
async fn assert_consistent(c: &TestCluster, package: u64) {
    let api = c.api();
    let objects = api.package_objects(package).await;
    let refs = c
        .meta()
        .range(meta::Range::prefix(b"v1/shard-ref/".to_vec()))
        .await
        .unwrap()
        .kvs
        .len();
    assert_eq!(
        refs,
        objects.len(),
        "shard references must match objects one to one"
    );
    for o in &objects {
        let id = o["objectID"].as_u64().unwrap();
        let body = api.download_all(id).await;
        assert_eq!(
            file_hash(&body),
            o["fileHash"].as_str().unwrap(),
            "object {o}"
        );
    }
}

async fn same_path_uploads_leave_one_winner(meta: Meta) {
    let Some(c) = TestCluster::builder().meta(meta).agents(2).build().await else {
        return;
    };
    let api = c.api().clone();
    let bucket = api.create_bucket("race").await;
    let p = api.create_package(bucket, "p").await;
    let mut contents = Vec::new();
    let mut tasks = Vec::new();
    for client in 0..4u64 {
        let api = api.clone();
        let d = data(1000 + client, 50_000 + client as usize);
        contents.push(file_hash(&d));
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                let (status, v) = api
                    .post_form(
                        "/v1/object/upload",
                        Api::upload_form(p, &[("same", d.clone())]),
                    )
                    .await;
                // A lost race may be reported as a conflict; it must never be a 500.
                assert!(v["code"] == "OK" || status.as_u16() == 409, "{status} {v}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let objects = api.package_objects(p).await;
    assert_eq!(objects.len(), 1);
    assert!(contents.contains(&objects[0]["fileHash"].as_str().unwrap().to_owned()));
    assert_consistent(&c, p).await;
    c.run_gc(Duration::ZERO).await;
    assert_consistent(&c, p).await;
    c.shutdown().await;
}

async fn move_clone_delete_racing_uploads(meta: Meta) {
    let Some(c) = TestCluster::builder().meta(meta).build().await else {
        return;
    };
    let api = c.api().clone();
    let bucket = api.create_bucket("race").await;
    let p = api.create_package(bucket, "p").await;
    api.upload(p, &[("x", data(1, 1000))]).await;
    let x_id = api.package_objects(p).await[0]["objectID"]
        .as_u64()
        .unwrap();

    let uploader = {
        let api = api.clone();
        tokio::spawn(async move {
            for i in 0..15u64 {
                api.upload(p, &[("x", data(100 + i, 20_000))]).await;
            }
        })
    };
    let cloner = {
        let api = api.clone();
        tokio::spawn(async move {
            for i in 0..15 {
                let d = Api::ok(
                    api.post("/v1/object/clone", json!({"clonings": [{"objectID": x_id, "newPath": format!("c{i}"), "newPackageID": p}]}))
                        .await,
                );
                let clone = d["objects"][0]["objectID"].as_u64().unwrap();
                // Move every clone, delete every third.
                let d = Api::ok(
                    api.post("/v1/object/move", json!({"movings": [{"objectID": clone, "packageID": p, "path": format!("m/{i}")}]}))
                        .await,
                );
                assert_eq!(d["successes"], json!([clone]));
                if i % 3 == 0 {
                    Api::ok(
                        api.post("/v1/object/delete", json!({"objectIDs": [clone]}))
                            .await,
                    );
                }
            }
        })
    };
    uploader.await.unwrap();
    cloner.await.unwrap();
    assert_consistent(&c, p).await;
    let report = c.run_gc(Duration::ZERO).await;
    assert!(
        report.deleted > 0,
        "replaced versions are collected: {report:?}"
    );
    assert_consistent(&c, p).await;
    c.shutdown().await;
}

#[tokio::test]
async fn same_path_uploads_on_etcd() {
    same_path_uploads_leave_one_winner(Meta::Etcd).await;
}

#[tokio::test]
async fn same_path_uploads_on_redb() {
    same_path_uploads_leave_one_winner(Meta::Redb).await;
}

#[tokio::test]
async fn move_clone_delete_race_uploads_on_etcd() {
    move_clone_delete_racing_uploads(Meta::Etcd).await;
}

#[tokio::test]
async fn move_clone_delete_race_uploads_on_redb() {
    move_clone_delete_racing_uploads(Meta::Redb).await;
}

/// The gateway groups the small files of one request and of concurrent requests into
/// shared reservation, agent and commit calls (and new objects into shared metadata
/// transactions): every file still becomes exactly one object with its own bytes, new
/// versions keep their object id, and references match objects one to one.
async fn grouped_small_uploads_stay_consistent(meta: Meta) {
    let Some(c) = TestCluster::builder().meta(meta).agents(2).build().await else {
        return;
    };
    let api = c.api().clone();
    let bucket = api.create_bucket("group").await;
    let p = api.create_package(bucket, "p").await;
    // One request with 100 small files and one 2 MiB file among them.
    let mut files: Vec<(String, Vec<u8>)> = (0..100u64)
        .map(|i| (format!("many/{i:03}"), data(i, 100 + i as usize * 37)))
        .collect();
    files.insert(50, ("many/large".to_owned(), data(999, 2 << 20)));
    let form: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, d)| (p.as_str(), d.clone())).collect();
    let (status, v) = api
        .post_form("/v1/object/upload", Api::upload_form(p, &form))
        .await;
    assert_eq!(v["code"], "OK", "{status} {v}");
    let uploaded = v["data"]["uploadeds"].as_array().unwrap();
    assert_eq!(uploaded.len(), files.len());
    for ((path, d), o) in files.iter().zip(uploaded) {
        assert_eq!(o["path"], path.as_str(), "results are in request order");
        assert_eq!(o["fileHash"], file_hash(d).as_str());
    }
    let before: Vec<u64> = uploaded
        .iter()
        .take(10)
        .map(|o| o["objectID"].as_u64().unwrap())
        .collect();
    // 8 concurrent clients: new paths, new versions of the first 10 files, and one path
    // all of them write.
    let mut tasks = Vec::new();
    for client in 0..8u64 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..10u64 {
                let path = match round % 3 {
                    0 => format!("c{client}/{round}"),
                    1 => format!("many/{:03}", (client + round) % 10),
                    _ => "shared".to_owned(),
                };
                let d = data(client * 100 + round, 64 + round as usize);
                let (status, v) = api
                    .post_form(
                        "/v1/object/upload",
                        Api::upload_form(p, &[(path.as_str(), d)]),
                    )
                    .await;
                assert!(v["code"] == "OK" || status.as_u16() == 409, "{status} {v}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let objects = api.package_objects(p).await;
    // 101 from the big request, 8 clients x 4 new paths (rounds 0, 3, 6, 9), "shared".
    assert_eq!(objects.len(), 101 + 8 * 4 + 1);
    for o in objects
        .iter()
        .filter(|o| o["path"].as_str().unwrap().starts_with("many/00"))
    {
        let id = o["objectID"].as_u64().unwrap();
        assert!(
            before.contains(&id),
            "a new version keeps its object id: {o}"
        );
    }
    assert_consistent(&c, p).await;
    c.shutdown().await;
}

#[tokio::test]
async fn grouped_small_uploads_on_etcd() {
    grouped_small_uploads_stay_consistent(Meta::Etcd).await;
}

#[tokio::test]
async fn grouped_small_uploads_on_redb() {
    grouped_small_uploads_stay_consistent(Meta::Redb).await;
}

/// Coordinator `BeginUpload`/`BeginUploads` calls answered so far in this process
/// (nextest runs each test in its own process).
fn begin_calls() -> u64 {
    common::metrics::metrics()
        .render()
        .lines()
        .filter(|l| {
            l.starts_with("jcs_grpc_requests_total{")
                && l.contains(r#"role="coordinator""#)
                && (l.contains(r#"CoordinatorService/BeginUploads""#)
                    || l.contains(r#"CoordinatorService/BeginUpload""#))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Small uploads into a `none` package use the gateway's cached write grant (no
/// reservation call per upload). A grant taken before a policy change still commits (as
/// `none`) and the object converges to the new policy like any other `none` commit; the
/// next grants are refused, so later uploads are begun under the new policy. After the
/// package is deleted, granted reservations fail as NotFound.
async fn write_grants_follow_the_package(meta: Meta) {
    let Some(c) = TestCluster::builder().meta(meta).agents(2).build().await else {
        return;
    };
    let api = c.api().clone();
    let bucket = api.create_bucket("grants").await;
    let p = api.create_package(bucket, "p").await;
    let upload = |path: &'static str, seed: u64| {
        let api = api.clone();
        async move {
            api.post_form(
                "/v1/object/upload",
                Api::upload_form(p, &[(path, data(seed, 1000))]),
            )
            .await
        }
    };
    // Granted uploads, also concurrent ones, each land at their own path, and none of
    // them makes a reservation call.
    let begins = begin_calls();
    let mut tasks = Vec::new();
    for i in 0..20u64 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            let path = format!("g/{i:02}");
            let (status, v) = api
                .post_form(
                    "/v1/object/upload",
                    Api::upload_form(p, &[(path.as_str(), data(i, 500 + i as usize))]),
                )
                .await;
            assert_eq!(v["code"], "OK", "{status} {v}");
            assert_eq!(v["data"]["uploadeds"][0]["path"], path.as_str());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        begin_calls(),
        begins,
        "small uploads into a none package must use write grants"
    );
    assert_eq!(api.package_objects(p).await.len(), 20);
    assert_consistent(&c, p).await;
    let mut coord = client::coordinator(
        &c.coordinator_addr().to_string(),
        &client::ChannelOptions::default(),
    )
    .unwrap();
    // The counter does count reservation calls (an unused reservation writes nothing).
    coord
        .begin_upload(proto::coordinator::BeginUploadRequest {
            package_id: p,
            path: "unused".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(begin_calls(), begins + 1);

    // A commit of a granted reservation must name a valid path; one granted before a
    // policy change commits (as none) and converges.
    let grant = coord
        .grant_uploads(proto::coordinator::GrantUploadsRequest {
            package_id: p,
            affinity: 0,
            count: 3,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(grant.granted, "{grant:?}");
    assert_eq!(grant.uploads.len(), 3);
    let commit = |i: usize, path: &str| proto::coordinator::CommitUploadRequest {
        upload_id: grant.uploads[i].upload_id,
        size: 3,
        sha256: file_hash(b"abc"),
        commit_token: grant.uploads[i].commit_token.clone(),
        blocks: Vec::new(),
        path: path.to_owned(),
    };
    for bad in ["", "/abs", "a//b"] {
        let status = coord.commit_upload(commit(0, bad)).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{bad:?}: {status}"
        );
    }
    // The bytes of reservation 1 are stored before the change, its commit comes after.
    let late = data(100, 1000);
    let put = client::agent(
        &grant.uploads[1].agent_address,
        &client::ChannelOptions::default(),
    )
    .unwrap()
    .put_small_shard(proto::agent::PutSmallShardRequest {
        ticket: grant.uploads[1].ticket.clone(),
        data: late.clone().into(),
    })
    .await
    .unwrap()
    .into_inner();
    Api::ok(
        api.post(
            "/v1/package/update",
            json!({"packageID": p, "redundancy": {"type": "rep", "repCount": 2}}),
        )
        .await,
    );
    let refused = coord
        .grant_uploads(proto::coordinator::GrantUploadsRequest {
            package_id: p,
            affinity: 0,
            count: 3,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !refused.granted && refused.uploads.is_empty(),
        "{refused:?}"
    );
    assert!(refused.reason.contains("rep"), "{refused:?}");
    let committed = coord
        .commit_upload(proto::coordinator::CommitUploadRequest {
            size: put.size,
            sha256: put.sha256,
            ..commit(1, "late")
        })
        .await
        .unwrap()
        .into_inner()
        .object
        .unwrap();
    assert_eq!(committed.path, "late");
    assert_eq!(
        (committed.redundancy.as_str(), committed.size),
        ("none", late.len() as u64)
    );

    // Through the gateway: small uploads right after the change succeed (whether under a
    // reservation granted before it or begun under the new policy).
    for (i, path) in ["after/0", "after/1", "after/2"].into_iter().enumerate() {
        let (status, v) = upload(path, 200 + i as u64).await;
        assert_eq!(v["code"], "OK", "{status} {v}");
    }
    assert_eq!(api.package_objects(p).await.len(), 24);
    let stored: Vec<_> = api.package_objects(p).await;
    let late_row = stored.iter().find(|o| o["path"] == "late").unwrap();
    assert_eq!(late_row["fileHash"], file_hash(&late).as_str());
    // Every object, those committed as none after the change included, converges to rep.
    let rep = json!({"type": "rep", "repCount": 2});
    let converged = common::testing::wait_until(Duration::from_secs(60), || {
        let api = api.clone();
        let rep = rep.clone();
        async move {
            api.package_objects(p)
                .await
                .iter()
                .all(|o| o["redundancy"] == rep)
        }
    })
    .await;
    let objects = api.package_objects(p).await;
    assert!(converged, "not converged to rep: {objects:?}");
    for o in &objects {
        let id = o["objectID"].as_u64().unwrap();
        assert_eq!(
            file_hash(&api.download_all(id).await),
            o["fileHash"].as_str().unwrap(),
            "object {o}"
        );
    }

    // A deleted package: reservations granted before fail as NotFound.
    let q = api.create_package(bucket, "q").await;
    let one = |path: &'static str| {
        let api = api.clone();
        async move {
            api.post_form(
                "/v1/object/upload",
                Api::upload_form(q, &[(path, data(7, 10))]),
            )
            .await
        }
    };
    assert_eq!(one("first").await.1["code"], "OK");
    Api::ok(
        api.post("/v1/package/delete", json!({"packageID": q}))
            .await,
    );
    let (status, v) = one("second").await;
    assert_eq!(status.as_u16(), 404, "{v}");
    assert!(v["message"].as_str().unwrap().contains("package"), "{v}");
    c.shutdown().await;
}

#[tokio::test]
async fn write_grants_on_etcd() {
    write_grants_follow_the_package(Meta::Etcd).await;
}

#[tokio::test]
async fn write_grants_on_redb() {
    write_grants_follow_the_package(Meta::Redb).await;
}
