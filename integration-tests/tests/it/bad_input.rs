//! Bad input: every case answers a 4xx envelope whose message names the problem, and
//! writes nothing.

use integration_tests::{Api, TestCluster};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

fn assert_bad(res: (StatusCode, Value), code: &str, needle: &str) {
    let (status, v) = res;
    assert!(status.is_client_error(), "expected 4xx, got {status}: {v}");
    assert_eq!(v["code"], code, "{v}");
    assert!(v["data"].is_null(), "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.to_lowercase().contains(&needle.to_lowercase()),
        "message {msg:?} should mention {needle:?}"
    );
}

#[tokio::test]
async fn malformed_and_mistyped_json_is_rejected() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    assert_bad(
        api.post_raw("/v1/bucket/create", "{\"name\": ").await,
        "BadArgument",
        "",
    );
    assert_bad(
        api.post("/v1/bucket/create", json!({"userID": 1})).await,
        "BadArgument",
        "name",
    );
    assert_bad(
        api.post("/v1/bucket/create", json!({"name": 5})).await,
        "BadArgument",
        "",
    );
    assert_bad(
        api.post("/v1/bucket/create", json!({"name": ""})).await,
        "BadArgument",
        "empty",
    );
    assert_bad(
        api.post("/v1/package/create", json!({"bucketID": "x", "name": "p"}))
            .await,
        "BadArgument",
        "",
    );
    assert_bad(
        api.post("/v1/package/create", json!({"name": "p"})).await,
        "BadArgument",
        "bucketID",
    );
    assert_bad(
        api.post("/v1/object/delete", json!({"objectIDs": "1"}))
            .await,
        "BadArgument",
        "",
    );
    assert_bad(api.get("/v1/bucket/getByName").await, "BadArgument", "name");
    assert_bad(
        api.get("/v1/package/listBucketPackages?bucketID=abc").await,
        "BadArgument",
        "",
    );
    assert_bad(
        api.get("/v1/object/download?objectID=-1").await,
        "BadArgument",
        "",
    );
    // Nothing was created.
    assert_eq!(
        Api::ok(api.get("/v1/bucket/listAll").await)["buckets"],
        json!([])
    );
    c.shutdown().await;
}

#[tokio::test]
async fn unknown_ids_are_data_not_found() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    assert_bad(
        api.post("/v1/package/create", json!({"bucketID": 77, "name": "p"}))
            .await,
        "DataNotFound",
        "77",
    );
    assert_bad(
        api.get("/v1/package/listBucketPackages?bucketID=77").await,
        "DataNotFound",
        "77",
    );
    assert_bad(
        api.post("/v1/bucket/delete", json!({"bucketID": 77})).await,
        "DataNotFound",
        "77",
    );
    assert_bad(
        api.post("/v1/package/delete", json!({"packageID": 78}))
            .await,
        "DataNotFound",
        "78",
    );
    assert_bad(
        api.get("/v1/object/getPackageObjects?packageID=78").await,
        "DataNotFound",
        "78",
    );
    assert_bad(
        api.get("/v1/package/getByFullName?bucketName=x&packageName=y")
            .await,
        "DataNotFound",
        "x",
    );
    let (status, body) = api.download("objectID=79").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_bad((status, v), "DataNotFound", "79");
    let form = Api::upload_form(78, &[("a", b"x".to_vec())]);
    assert_bad(
        api.post_form("/v1/object/upload", form).await,
        "DataNotFound",
        "78",
    );
    // Deleting objects that do not exist is OK.
    Api::ok(
        api.post("/v1/object/delete", json!({"objectIDs": [1, 2, 3]}))
            .await,
    );
    c.shutdown().await;
}

fn info(package: u64) -> Part {
    Part::text(json!({"packageID": package}).to_string())
}

fn file(name: &str, data: &'static [u8]) -> Part {
    Part::bytes(data).file_name(name.to_owned())
}

#[tokio::test]
async fn malformed_uploads_are_rejected_and_write_nothing() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    let bucket = api.create_bucket("b").await;
    let p = api.create_package(bucket, "p").await;
    let cases: Vec<(Form, &str)> = vec![
        (Form::new().part("files", file("a.txt", b"x")), "info"),
        (
            Form::new()
                .part("files", file("a.txt", b"x"))
                .part("info", info(p)),
            "info",
        ),
        (Form::new().part("info", info(p)), "file"),
        (
            Form::new()
                .part("info", Part::text("{not json"))
                .part("files", file("a", b"x")),
            "info",
        ),
        (
            Form::new()
                .part("info", Part::text("{}"))
                .part("files", file("a", b"x")),
            "packageID",
        ),
        (
            Form::new()
                .part("info", info(p))
                .part("files", file("bad%zz", b"x")),
            "bad%zz",
        ),
        (
            Form::new()
                .part("info", info(p))
                .part("files", file("%FF%FE", b"x")),
            "%FF%FE",
        ),
        (
            Form::new()
                .part("info", info(p))
                .part("files", file("", b"x")),
            "empty",
        ),
        (
            Form::new()
                .part("info", info(p))
                .part("files", file("%2Fetc%2Fpasswd", b"x")),
            "absolute",
        ),
        (
            Form::new()
                .part("info", info(p))
                .part("files", file("a%2F..%2F..%2Fx", b"x")),
            "..",
        ),
        (
            Form::new()
                .part("info", info(p))
                .part("files", file("a%2F%2Fb", b"x")),
            "//",
        ),
        // A good file followed by a bad one: the good one must not be committed either.
        (
            Form::new()
                .part("info", info(p))
                .part("files", file("good.txt", b"good"))
                .part("files", file("..", b"x")),
            "..",
        ),
    ];
    for (form, needle) in cases {
        assert_bad(
            api.post_form("/v1/object/upload", form).await,
            "BadArgument",
            needle,
        );
    }
    assert!(api.package_objects(p).await.is_empty());
    // A request that is not multipart at all.
    assert_bad(
        api.post("/v1/object/upload", json!({"packageID": p})).await,
        "BadArgument",
        "multipart",
    );
    c.shutdown().await;
}

#[tokio::test]
async fn bad_download_ranges_are_rejected_before_any_byte() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    let bucket = api.create_bucket("b").await;
    let p = api.create_package(bucket, "p").await;
    let up = api.upload(p, &[("f", vec![7u8; 100])]).await;
    let id = up[0]["objectID"].as_u64().unwrap();
    for (query, needle) in [
        (format!("objectID={id}&offset=101"), "offset"),
        (format!("objectID={id}&offset=-1"), "offset"),
        (format!("objectID={id}&length=-5"), "length"),
        ("objectID=abc".to_owned(), "objectID"),
        ("".to_owned(), "objectID"),
    ] {
        let (status, body) = api.download(&query).await;
        let v: Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
            panic!(
                "{query}: not an envelope: {status} {:?}",
                String::from_utf8_lossy(&body)
            )
        });
        assert_bad((status, v), "BadArgument", needle);
    }
    c.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_envelopes() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    let (status, v) = api.get("/v1/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_ne!(v["code"], "OK");
    let (status, v) = api.get("/v1/bucket/create").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_ne!(v["code"], "OK");
    c.shutdown().await;
}
