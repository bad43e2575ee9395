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
