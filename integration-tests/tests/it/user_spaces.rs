//! `/v1/userSpace/*` against a Local directory and a real in-process S3 server (s3s-fs).

use std::time::Duration;

use integration_tests::api::file_hash;
use integration_tests::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use integration_tests::{Api, TestCluster};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::data;

fn s3_body(name: &str, s3: &S3Server, bucket: &str, secret: &str, max_size: Option<u64>) -> Value {
    json!({
        "name": name,
        "storage": {"type": "S3", "region": "us-east-1", "endpoint": s3.endpoint(), "bucket": bucket},
        "credential": {"type": "S3", "accessKeyId": ACCESS_KEY, "secretAccessKey": secret},
        "shardStore": max_size.map(|m| json!({"maxSize": m})),
        "features": [],
        "workingDir": "jcs"
    })
}

async fn create(api: &Api, body: Value) -> Value {
    Api::ok(api.post("/v1/userSpace/create", body).await)["userSpace"].clone()
}

/// Polls an upload with affinity until the agent serving the new space has its
/// configuration (it arrives with the next heartbeat).
async fn upload_to(api: &Api, package: u64, space: u64, files: &[(&str, Vec<u8>)]) -> Vec<Value> {
    let mut form_files = Vec::new();
    for (p, d) in files {
        form_files.push((p.to_string(), d.clone()));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut form = reqwest::multipart::Form::new().text(
            "info",
            json!({"packageID": package, "affinity": space}).to_string(),
        );
        for (p, d) in &form_files {
            form = form.part(
                "files",
                reqwest::multipart::Part::bytes(d.clone())
                    .file_name(integration_tests::api::encode_path(p)),
            );
        }
        let (status, v) = api.post_form("/v1/object/upload", form).await;
        if v["code"] == "OK" {
            return v["data"]["uploadeds"].as_array().unwrap().clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "upload to space {space} failed: {status} {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn s3_space_round_trip_with_masked_secret_and_guarded_delete() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    let s3 = S3Server::start(&c.scratch("s3"), &["jcs-bucket"]).await;

    // test: good, wrong secret, missing bucket, unreachable endpoint.
    let probe = |bucket: &str, secret: &str, endpoint: String| {
        json!({
            "storage": {"type": "S3", "region": "us-east-1", "endpoint": endpoint, "bucket": bucket},
            "credential": {"type": "S3", "accessKeyId": ACCESS_KEY, "secretAccessKey": secret},
            "workingDir": "jcs"
        })
    };
    Api::ok(
        api.post(
            "/v1/userSpace/test",
            probe("jcs-bucket", SECRET_KEY, s3.endpoint()),
        )
        .await,
    );
    let (status, v) = api
        .post(
            "/v1/userSpace/test",
            probe("jcs-bucket", "wrong", s3.endpoint()),
        )
        .await;
    assert_ne!(v["code"], "OK", "{v}");
    assert!(status.is_client_error(), "{status} {v}");
    assert!(
        !v["message"].as_str().unwrap().contains("wrong"),
        "no secret in messages: {v}"
    );
    let (_, v) = api
        .post(
            "/v1/userSpace/test",
            probe("no-such-bucket", SECRET_KEY, s3.endpoint()),
        )
        .await;
    assert_ne!(v["code"], "OK", "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("no-such-bucket"),
        "{v}"
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (status, v) = api
        .post(
            "/v1/userSpace/test",
            probe("b", SECRET_KEY, format!("http://{closed}")),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");

    // create / get / update.
    let space = create(
        api,
        s3_body("s3-one", &s3, "jcs-bucket", SECRET_KEY, Some(0)),
    )
    .await;
    let id = space["userSpaceID"].as_u64().unwrap();
    assert_eq!(space["revision"], 1);
    assert_eq!(space["credential"]["accessKeyId"], ACCESS_KEY);
    assert_ne!(space["credential"]["secretAccessKey"], SECRET_KEY);
    let got = Api::ok(
        api.get(&format!("/v1/userSpace/get?userSpaceID={id}"))
            .await,
    )["userSpace"]
        .clone();
    assert_eq!(got, space);
    assert!(!got.to_string().contains(SECRET_KEY));

    // Objects uploaded with affinity land in the bucket and read back byte-identical.
    let bucket = api.create_bucket("b").await;
    let p = api.create_package(bucket, "p").await;
    let big = data(42, 3 * 1024 * 1024 + 5);
    let up = upload_to(
        api,
        p,
        id,
        &[("dir/big.bin", big.clone()), ("small", b"tiny".to_vec())],
    )
    .await;
    assert_eq!(up[0]["fileHash"], file_hash(&big));
    assert!(
        s3.files("jcs-bucket", "jcs/shards").len() >= 2,
        "{:?}",
        integration_tests::list_files(&s3.root)
    );
    assert!(
        c.shard_files(0).is_empty(),
        "nothing went to the agent's declared space"
    );
    let oid = up[0]["objectID"].as_u64().unwrap();
    assert_eq!(api.download_all(oid).await, big);
    let (_, part) = api
        .download(&format!("objectID={oid}&offset=1048570&length=20"))
        .await;
    assert_eq!(&part[..], &big[1_048_570..1_048_590]);

    // Update: name and credential only; revision moves.
    let upd = Api::ok(
        api.post(
            "/v1/userSpace/update",
            json!({"userSpaceID": id, "name": "s3-renamed",
                   "credential": {"type": "S3", "accessKeyId": ACCESS_KEY, "secretAccessKey": SECRET_KEY}}),
        )
        .await,
    )["userSpace"]
        .clone();
    assert_eq!(
        (upd["name"].as_str(), upd["revision"].as_u64()),
        (Some("s3-renamed"), Some(2))
    );
    // Still readable after the agent picked up the new revision.
    assert_eq!(api.download_all(oid).await, big);

    // Delete is refused while objects live there, then allowed.
    let (status, v) = api
        .post("/v1/userSpace/delete", json!({"userSpaceID": id}))
        .await;
    assert!(
        status.is_client_error() && v["code"] != "OK",
        "{status} {v}"
    );
    let ids: Vec<u64> = up.iter().map(|o| o["objectID"].as_u64().unwrap()).collect();
    Api::ok(
        api.post("/v1/object/delete", json!({"objectIDs": ids}))
            .await,
    );
    Api::ok(
        api.post("/v1/userSpace/delete", json!({"userSpaceID": id}))
            .await,
    );
    Api::ok(
        api.post("/v1/userSpace/delete", json!({"userSpaceID": id}))
            .await,
    );
    let (status, _) = api
        .get(&format!("/v1/userSpace/get?userSpaceID={id}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    c.shutdown().await;
}

#[tokio::test]
async fn local_api_space_and_max_size() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    let dir = c.scratch("local-space");
    let body = json!({
        "name": "local-api",
        "storage": {"type": "Local", "location": "agent-0", "path": dir.to_str().unwrap()},
        "credential": {"type": "Local"},
        "shardStore": {"maxSize": 100_000},
        "workingDir": "w"
    });
    Api::ok(api.post("/v1/userSpace/test", json!({"storage": body["storage"], "credential": body["credential"], "workingDir": "w"})).await);
    let space = create(api, body).await;
    let id = space["userSpaceID"].as_u64().unwrap();
    let bucket = api.create_bucket("b").await;
    let p = api.create_package(bucket, "p").await;
    let ok = upload_to(api, p, id, &[("fits", data(1, 60_000))]).await;
    assert_eq!(
        api.download_all(ok[0]["objectID"].as_u64().unwrap()).await,
        data(1, 60_000)
    );
    assert!(!integration_tests::list_files(&dir.join("w/shards")).is_empty());
    // Over the limit: refused cleanly, nothing visible, the earlier object intact.
    let form = reqwest::multipart::Form::new()
        .text("info", json!({"packageID": p, "affinity": id}).to_string())
        .part(
            "files",
            reqwest::multipart::Part::bytes(data(2, 60_000)).file_name("too-big"),
        );
    let (status, v) = api.post_form("/v1/object/upload", form).await;
    assert!(
        v["code"] != "OK" && status.is_client_error(),
        "{status} {v}"
    );
    assert!(v["message"].as_str().unwrap().contains("full"), "{v}");
    assert_eq!(api.package_objects(p).await.len(), 1);
    // get / update / guarded delete on the Local space too.
    let got = Api::ok(
        api.get(&format!("/v1/userSpace/get?userSpaceID={id}"))
            .await,
    )["userSpace"]
        .clone();
    assert_eq!(
        (got["storage"]["type"].as_str(), got["revision"].as_u64()),
        (Some("Local"), Some(1))
    );
    let upd = Api::ok(
        api.post(
            "/v1/userSpace/update",
            json!({"userSpaceID": id, "name": "local-renamed", "credential": {"type": "Local"}}),
        )
        .await,
    )["userSpace"]
        .clone();
    assert_eq!(
        (upd["name"].as_str(), upd["revision"].as_u64()),
        (Some("local-renamed"), Some(2))
    );
    let (status, _) = api
        .post("/v1/userSpace/delete", json!({"userSpaceID": id}))
        .await;
    assert!(status.is_client_error());
    Api::ok(
        api.post("/v1/package/delete", json!({"packageID": p}))
            .await,
    );
    Api::ok(
        api.post("/v1/userSpace/delete", json!({"userSpaceID": id}))
            .await,
    );
    // Bad input: unknown type, missing field, mismatched credential, unknown agent.
    for (body, needle) in [
        (
            json!({"name": "x", "storage": {"type": "FTP"}, "credential": {"type": "Local"}}),
            "FTP",
        ),
        (
            json!({"name": "x", "storage": {"type": "S3", "endpoint": "http://h"}, "credential": {"type": "S3", "accessKeyId": "a", "secretAccessKey": "s"}}),
            "bucket",
        ),
        (
            json!({"name": "x", "storage": {"type": "Local", "path": "/tmp/x"}, "credential": {"type": "S3", "accessKeyId": "a", "secretAccessKey": "s"}}),
            "credential",
        ),
        (
            json!({"name": "x", "storage": {"type": "Local", "location": "nobody", "path": "/tmp/x"}, "credential": {"type": "Local"}}),
            "nobody",
        ),
        (
            json!({"name": "", "storage": {"type": "Local", "path": "/tmp/x"}, "credential": {"type": "Local"}}),
            "name",
        ),
    ] {
        let (status, v) = api.post("/v1/userSpace/create", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{needle}: {v}"
        );
    }
    c.shutdown().await;
}

/// The walk-through of docs/user-spaces.md: a Local and an S3 space, tested; objects
/// uploaded with affinity to S3; the package exported to the Local space and imported back.
#[tokio::test]
async fn export_to_local_and_import_back() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    let s3 = S3Server::start(&c.scratch("s3"), &["jcs-bucket"]).await;
    let local_dir = c.scratch("exchange");
    let local = json!({
        "name": "exchange",
        "storage": {"type": "Local", "location": "agent-0", "path": local_dir.to_str().unwrap()},
        "credential": {"type": "Local"},
        "shardStore": null,
        "workingDir": ""
    });
    Api::ok(api.post("/v1/userSpace/test", json!({"storage": local["storage"], "credential": local["credential"], "workingDir": ""})).await);
    let local_id = create(api, local).await["userSpaceID"].as_u64().unwrap();
    let s3_id = create(
        api,
        s3_body("cloud", &s3, "jcs-bucket", SECRET_KEY, Some(0)),
    )
    .await["userSpaceID"]
        .as_u64()
        .unwrap();

    let bucket = api.create_bucket("b").await;
    let p = api.create_package(bucket, "original").await;
    let files: Vec<(String, Vec<u8>)> = vec![
        ("a.txt".into(), b"alpha".to_vec()),
        ("dir/b.bin".into(), data(7, 1_500_000)),
        ("dir/sub/c.bin".into(), data(8, 10)),
        ("empty".into(), Vec::new()),
    ];
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, d)| (p.as_str(), d.clone())).collect();
    upload_to(api, p, s3_id, &refs).await;

    // Export into the Local space, then check the files on disk.
    let d = Api::ok(
        api.post(
            "/v1/userSpace/downloadPackage",
            json!({"userSpaceID": local_id, "packageID": p, "rootPath": "export/v1"}),
        )
        .await,
    );
    assert_eq!(d["exported"], files.len(), "{d}");
    for (path, content) in &files {
        let on_disk = std::fs::read(local_dir.join("export/v1").join(path)).unwrap();
        assert_eq!(&on_disk, content, "{path}");
    }

    // A file whose name is not a valid object path is reported, not fatal.
    std::fs::write(local_dir.join("export/v1/bad\\name"), b"x").unwrap();
    // Import the exported tree back as a new package with shards in S3.
    let d = Api::ok(
        api.post(
            "/v1/userSpace/createPackage",
            json!({"userSpaceID": local_id, "path": "export/v1", "bucketID": bucket, "name": "reimported", "spaceAffinity": s3_id}),
        )
        .await,
    );
    let p2 = d["package"]["packageID"].as_u64().unwrap();
    assert_eq!(d["imported"], files.len(), "{d}");
    assert_eq!(d["failures"].as_array().unwrap().len(), 1, "{d}");
    assert!(
        d["failures"][0]["path"].as_str().unwrap().contains("bad"),
        "{d}"
    );
    let objects = api.package_objects(p2).await;
    assert_eq!(objects.len(), files.len());
    for o in &objects {
        let (_, content) = files.iter().find(|(p, _)| o["path"] == p.as_str()).unwrap();
        assert_eq!(o["fileHash"], file_hash(content));
        assert_eq!(
            api.download_all(o["objectID"].as_u64().unwrap()).await,
            *content
        );
    }
    // A single file imports as one object named after the file.
    let d = Api::ok(
        api.post(
            "/v1/userSpace/createPackage",
            json!({"userSpaceID": local_id, "path": "export/v1/dir/b.bin", "bucketID": bucket, "name": "single"}),
        )
        .await,
    );
    let single = api
        .package_objects(d["package"]["packageID"].as_u64().unwrap())
        .await;
    assert_eq!(single.len(), 1);
    assert_eq!(single[0]["path"], "b.bin");
    // A missing path creates nothing.
    let (status, v) = api
        .post(
            "/v1/userSpace/createPackage",
            json!({"userSpaceID": local_id, "path": "nope", "bucketID": bucket, "name": "ghost"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let (status, _) = api
        .get("/v1/package/getByFullName?bucketName=b&packageName=ghost")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    c.shutdown().await;
}

/// A thousand files in, a thousand files out, with per-file results.
#[tokio::test]
async fn import_and_export_a_thousand_files() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    let dir = c.scratch("many");
    for i in 0..1000 {
        let p = dir.join(format!("src/d{}/f{i:04}.txt", i % 10));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("file {i}")).unwrap();
    }
    let space = create(
        api,
        json!({"name": "many", "storage": {"type": "Local", "path": dir.to_str().unwrap()},
               "credential": {"type": "Local"}, "shardStore": null}),
    )
    .await["userSpaceID"]
        .as_u64()
        .unwrap();
    let bucket = api.create_bucket("b").await;
    let d = Api::ok(
        api.post(
            "/v1/userSpace/createPackage",
            json!({"userSpaceID": space, "path": "src", "bucketID": bucket, "name": "many"}),
        )
        .await,
    );
    assert_eq!(
        (
            d["imported"].as_u64(),
            d["failures"].as_array().map(Vec::len)
        ),
        (Some(1000), Some(0)),
        "{d}"
    );
    let p = d["package"]["packageID"].as_u64().unwrap();
    let d = Api::ok(
        api.post(
            "/v1/userSpace/downloadPackage",
            json!({"userSpaceID": space, "packageID": p, "rootPath": "dst"}),
        )
        .await,
    );
    assert_eq!(d["exported"], 1000, "{d}");
    assert_eq!(integration_tests::list_files(&dir.join("dst")).len(), 1000);
    assert_eq!(
        std::fs::read_to_string(dir.join("dst/d7/f0417.txt")).unwrap(),
        "file 417"
    );
    c.shutdown().await;
}
