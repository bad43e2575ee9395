//! Buckets, packages and objects through `/v1`, as a user walks through them.

use integration_tests::api::file_hash;
use integration_tests::{Api, TestCluster};
use reqwest::StatusCode;
use serde_json::json;

use crate::data;

/// An object takes its upload's id; the files of one request get ascending ids in request
/// order, whichever of their stores finishes first (small ones are stored concurrently),
/// also across a large file streamed between them and across grant refills (40 files, 8
/// per first grant). It fails when the grant pool hands its reservations out of order.
/// That the gateway takes each reservation while reading the request, not in the file's
/// store task, is by construction (`stream_files`): the race it prevents does not show
/// reliably on this test's runtime.
#[tokio::test]
async fn the_files_of_a_request_get_ascending_object_ids_in_request_order() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    let bucket = api.create_bucket("ids").await;
    let package = api.create_package(bucket, "p").await;
    let mut files: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| (format!("f{i:02}"), data(i, 100 + 37 * i as usize)))
        .collect();
    files.insert(20, ("large".to_owned(), data(99, 3 * 1024 * 1024)));
    let named: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
    let up = api.upload(package, &named).await;
    let paths: Vec<&str> = up.iter().map(|o| o["path"].as_str().unwrap()).collect();
    let want: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(paths, want);
    let ids: Vec<u64> = up.iter().map(|o| o["objectID"].as_u64().unwrap()).collect();
    let small: Vec<u64> = ids
        .iter()
        .zip(&want)
        .filter(|(_, n)| **n != "large")
        .map(|(id, _)| *id)
        .collect();
    assert!(small.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len());
}

#[tokio::test]
async fn walkthrough_create_upload_list_download_delete() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();

    let bucket = api.create_bucket("bkt1").await;
    let got = Api::ok(api.get("/v1/bucket/getByName?name=bkt1").await);
    assert_eq!(got["bucket"], json!({"bucketID": bucket, "name": "bkt1"}));
    let all = Api::ok(api.get("/v1/bucket/listAll").await);
    assert_eq!(
        all["buckets"],
        json!([{"bucketID": bucket, "name": "bkt1"}])
    );

    let package = api.create_package(bucket, "pkg1").await;
    let p = Api::ok(
        api.get("/v1/package/getByFullName?bucketName=bkt1&packageName=pkg1")
            .await,
    );
    assert_eq!(p["package"]["packageID"], package);
    assert_eq!(p["package"]["bucketID"], bucket);
    assert_eq!(p["package"]["name"], "pkg1");
    assert!(chrono_like(p["package"]["createTime"].as_str().unwrap()));
    let list = Api::ok(
        api.get(&format!("/v1/package/listBucketPackages?bucketID={bucket}"))
            .await,
    );
    assert_eq!(list["packages"].as_array().unwrap().len(), 1);

    let a = b"testdata".to_vec();
    let b = data(1, 3 * 1024 * 1024 + 17);
    let up = api
        .upload(
            package,
            &[("test.txt", a.clone()), ("a/b/test2.txt", b.clone())],
        )
        .await;
    assert_eq!(up.len(), 2);
    assert_eq!(up[0]["path"], "test.txt");
    assert_eq!(up[0]["size"], "8");
    assert_eq!(up[0]["fileHash"], file_hash(&a));
    assert_eq!(up[0]["redundancy"], json!({"type": "none"}));
    assert_eq!(up[0]["packageID"], package);
    assert_eq!(up[1]["path"], "a/b/test2.txt");
    assert_eq!(up[1]["size"], b.len().to_string());
    assert_eq!(up[1]["fileHash"], file_hash(&b));
    assert!(up[1]["fileHash"].as_str().unwrap().starts_with("Full"));

    let objs = api.package_objects(package).await;
    let paths: Vec<_> = objs.iter().map(|o| o["path"].as_str().unwrap()).collect();
    assert_eq!(paths, vec!["a/b/test2.txt", "test.txt"]);

    let id_b = up[1]["objectID"].as_u64().unwrap();
    assert_eq!(api.download_all(id_b).await, b);
    let (status, range) = api
        .download(&format!("objectID={id_b}&offset=1000&length=5000"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&range[..], &b[1000..6000]);
    // Length past the end is clamped; offset == size is an empty body.
    let (_, tail) = api
        .download(&format!(
            "objectID={id_b}&offset={}&length=100",
            b.len() - 3
        ))
        .await;
    assert_eq!(&tail[..], &b[b.len() - 3..]);
    let (status, empty) = api
        .download(&format!("objectID={id_b}&offset={}", b.len()))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(empty.is_empty());

    let id_a = up[0]["objectID"].as_u64().unwrap();
    Api::ok(
        api.post("/v1/object/delete", json!({"objectIDs": [id_a, 999_999]}))
            .await,
    );
    let objs = api.package_objects(package).await;
    assert_eq!(objs.len(), 1);
    let (status, v) = api.download(&format!("objectID={id_a}")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "{}",
        String::from_utf8_lossy(&v)
    );

    Api::ok(
        api.post("/v1/package/delete", json!({"packageID": package}))
            .await,
    );
    let (status, v) = api
        .get(&format!("/v1/object/getPackageObjects?packageID={package}"))
        .await;
    assert_eq!(
        (status, v["code"].as_str().unwrap()),
        (StatusCode::NOT_FOUND, "DataNotFound")
    );
    let (status, _) = api.download(&format!("objectID={id_b}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    Api::ok(
        api.post("/v1/bucket/delete", json!({"bucketID": bucket}))
            .await,
    );
    let (_, v) = api.get("/v1/bucket/getByName?name=bkt1").await;
    assert_eq!(v["code"], "DataNotFound");
    c.shutdown().await;
}

fn chrono_like(s: &str) -> bool {
    // RFC 3339: 2025-06-24T16:31:28.514Z or with an offset.
    s.len() >= 20
        && s.as_bytes()[4] == b'-'
        && s.as_bytes()[10] == b'T'
        && (s.ends_with('Z') || s.contains('+'))
}

#[tokio::test]
async fn reupload_replaces_content_and_keeps_id_and_create_time() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    let bucket = api.create_bucket("b").await;
    let package = api.create_package(bucket, "p").await;
    let first = api.upload(package, &[("x/y.bin", data(2, 1000))]).await;
    let second = api.upload(package, &[("x/y.bin", data(3, 2000))]).await;
    assert_eq!(first[0]["objectID"], second[0]["objectID"]);
    assert_eq!(first[0]["createTime"], second[0]["createTime"]);
    assert_eq!(second[0]["size"], "2000");
    let id = second[0]["objectID"].as_u64().unwrap();
    assert_eq!(api.download_all(id).await, data(3, 2000));
    assert_eq!(api.package_objects(package).await.len(), 1);
    c.shutdown().await;
}

#[tokio::test]
async fn identical_content_is_stored_once() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    let bucket = api.create_bucket("b").await;
    let package = api.create_package(bucket, "p").await;
    let d = data(4, 100_000);
    api.upload(
        package,
        &[("one", d.clone()), ("two", d.clone()), ("three", d)],
    )
    .await;
    assert_eq!(c.shard_files(0).len(), 1, "{:?}", c.shard_files(0));
    assert_eq!(api.package_objects(package).await.len(), 3);
    c.shutdown().await;
}

#[tokio::test]
async fn deleting_a_bucket_deletes_its_packages_and_objects() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    let bucket = api.create_bucket("b").await;
    let p1 = api.create_package(bucket, "p1").await;
    let p2 = api.create_package(bucket, "p2").await;
    for p in [p1, p2] {
        let files: Vec<(String, Vec<u8>)> =
            (0..60).map(|i| (format!("f{i}"), data(i, 10))).collect();
        let refs: Vec<(&str, Vec<u8>)> =
            files.iter().map(|(p, d)| (p.as_str(), d.clone())).collect();
        api.upload(p, &refs).await;
    }
    Api::ok(
        api.post("/v1/bucket/delete", json!({"bucketID": bucket}))
            .await,
    );
    for p in [p1, p2] {
        let (status, _) = api
            .get(&format!("/v1/object/getPackageObjects?packageID={p}"))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    // Nothing of the bucket is left in metadata: no objects, packages or pending jobs.
    let meta = c.meta();
    for prefix in [
        "v1/object/",
        "v1/object-id/",
        "v1/package/",
        "v1/package-name/",
        "v1/job/",
    ] {
        let page = meta
            .range(meta::Range::prefix(prefix.as_bytes().to_vec()))
            .await
            .unwrap();
        assert!(
            page.kvs.is_empty(),
            "{prefix} still has {} keys",
            page.kvs.len()
        );
    }
    // The name is free again.
    api.create_bucket("b").await;
    c.shutdown().await;
}

#[tokio::test]
async fn names_are_unique_per_scope() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    let b1 = api.create_bucket("same").await;
    let (status, v) = api
        .post("/v1/bucket/create", json!({"userID": 1, "name": "same"}))
        .await;
    assert_eq!(
        (status, v["code"].as_str().unwrap()),
        (StatusCode::CONFLICT, "DataExists")
    );
    assert!(v["message"].as_str().unwrap().contains("same"), "{v}");
    // Another user may use the name.
    Api::ok(
        api.post("/v1/bucket/create", json!({"userID": 2, "name": "same"}))
            .await,
    );

    api.create_package(b1, "pkg").await;
    let (status, v) = api
        .post("/v1/package/create", json!({"bucketID": b1, "name": "pkg"}))
        .await;
    assert_eq!(
        (status, v["code"].as_str().unwrap()),
        (StatusCode::CONFLICT, "DataExists")
    );
    let b2 = api.create_bucket("other").await;
    api.create_package(b2, "pkg").await;
    c.shutdown().await;
}
