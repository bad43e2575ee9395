//! listByPath, downloadByPath, move, clone and multipart upload through `/v1`.

use std::collections::BTreeSet;
use std::time::Duration;

use integration_tests::api::{encode_path, file_hash};
use integration_tests::{Api, TestCluster};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::data;

async fn setup(c: &TestCluster) -> u64 {
    let bucket = c.api().create_bucket("b").await;
    c.api().create_package(bucket, "p").await
}

async fn list(api: &Api, package: u64, query: &str) -> (StatusCode, Value) {
    api.get(&format!(
        "/v1/object/listByPath?packageID={package}&{query}"
    ))
    .await
}

#[tokio::test]
async fn list_by_path_pages_through_a_tree() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    let p = setup(&c).await;
    let mut paths = Vec::new();
    for d in 0..5 {
        for s in 0..4 {
            for f in 0..6 {
                paths.push(format!("d{d}/s{s}/f{f}"));
            }
        }
        paths.push(format!("d{d}/top.txt"));
    }
    paths.push("root.txt".into());
    for chunk in paths.chunks(50) {
        let files: Vec<(&str, Vec<u8>)> = chunk
            .iter()
            .map(|p| (p.as_str(), p.as_bytes().to_vec()))
            .collect();
        api.upload(p, &files).await;
    }

    // Exact path.
    let d = Api::ok(list(api, p, "path=d1/top.txt").await);
    assert_eq!(d["objects"].as_array().unwrap().len(), 1);
    assert_eq!(d["isTruncated"], false);
    let d = Api::ok(list(api, p, "path=d1").await);
    assert!(d["objects"].as_array().unwrap().is_empty());

    // Recursive walk with small pages: every object once, in order.
    let walk = |no_recursive: bool, prefix: &'static str, max: usize| {
        let api = api.clone();
        async move {
            let mut seen = Vec::new();
            let mut token = String::new();
            loop {
                let q = format!(
                    "path={}&isPrefix=true&noRecursive={no_recursive}&maxKeys={max}&continuationToken={token}",
                    encode_path(prefix)
                );
                let d = Api::ok(list(&api, p, &q).await);
                let objs = d["objects"].as_array().unwrap();
                let cps = d["commonPrefixes"].as_array().unwrap();
                assert!(objs.len() + cps.len() <= max);
                seen.extend(cps.iter().map(|c| c.as_str().unwrap().to_owned()));
                seen.extend(objs.iter().map(|o| o["path"].as_str().unwrap().to_owned()));
                if d["isTruncated"] == false {
                    assert_eq!(d["nextContinuationToken"], "");
                    break;
                }
                token = d["nextContinuationToken"].as_str().unwrap().to_owned();
                assert!(!token.is_empty());
            }
            seen
        }
    };
    let all = walk(false, "", 7).await;
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(all, sorted);
    let level = walk(true, "d2/", 2).await;
    let level: BTreeSet<_> = level.into_iter().collect();
    let expected: BTreeSet<String> = ["d2/s0/", "d2/s1/", "d2/s2/", "d2/s3/", "d2/top.txt"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(level, expected);
    let root: BTreeSet<_> = walk(true, "", 1000).await.into_iter().collect();
    assert_eq!(root.len(), 6, "{root:?}");

    // maxKeys above the cap is capped, not an error.
    let d = Api::ok(list(api, p, "path=&isPrefix=true&maxKeys=100000").await);
    assert_eq!(d["objects"].as_array().unwrap().len(), paths.len());

    // A bad token is a BadArgument, not a 500.
    let (status, v) = list(api, p, "path=&isPrefix=true&continuationToken=nonsense").await;
    assert_eq!(
        (status, v["code"].as_str().unwrap()),
        (StatusCode::BAD_REQUEST, "BadArgument")
    );
    let (status, _) = list(api, 999_999, "path=a").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    c.shutdown().await;
}

#[tokio::test]
async fn download_by_path_serves_ranges() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    let p = setup(&c).await;
    let d = data(5, 2_000_000);
    api.upload(p, &[("dir/ü file.bin", d.clone())]).await;
    let url = format!(
        "/v1/object/downloadByPath?packageID={p}&path={}&offset=100&length=1000",
        encode_path("dir/ü file.bin")
    );
    let resp = api.http().get(api.url(&url)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(&resp.bytes().await.unwrap()[..], &d[100..1100]);
    let (status, v) = api
        .get(&format!(
            "/v1/object/downloadByPath?packageID={p}&path=missing"
        ))
        .await;
    assert_eq!(
        (status, v["code"].as_str().unwrap()),
        (StatusCode::NOT_FOUND, "DataNotFound")
    );
    c.shutdown().await;
}

#[tokio::test]
async fn move_renames_without_copying_and_reports_per_entry() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    let bucket = api.create_bucket("b").await;
    let p1 = api.create_package(bucket, "p1").await;
    let p2 = api.create_package(bucket, "p2").await;
    let up = api
        .upload(
            p1,
            &[
                ("a", b"AAA".to_vec()),
                ("b", b"BBB".to_vec()),
                ("c", b"CCC".to_vec()),
            ],
        )
        .await;
    let ids: Vec<u64> = up.iter().map(|o| o["objectID"].as_u64().unwrap()).collect();
    let shards = c.shard_files(0);
    let d = Api::ok(
        api.post(
            "/v1/object/move",
            json!({"movings": [
                {"objectID": ids[0], "packageID": p2, "path": "moved/a"},
                {"objectID": ids[1], "packageID": p1, "path": "c"},          // taken
                {"objectID": 999_999, "packageID": p1, "path": "x"},        // missing object
                {"objectID": ids[2], "packageID": 999_999, "path": "x"},    // missing package
                {"objectID": ids[2], "packageID": p1, "path": "../x"},      // bad path
            ]}),
        )
        .await,
    );
    assert_eq!(d["successes"], json!([ids[0]]));
    assert_eq!(c.shard_files(0), shards, "no bytes were copied");
    let moved = api.package_objects(p2).await;
    assert_eq!(moved[0]["path"], "moved/a");
    assert_eq!(moved[0]["objectID"], ids[0]);
    assert_eq!(moved[0]["createTime"], up[0]["createTime"]);
    assert_eq!(&api.download_all(ids[0]).await[..], b"AAA");
    let left: Vec<_> = api
        .package_objects(p1)
        .await
        .iter()
        .map(|o| o["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left, ["b", "c"]);
    c.shutdown().await;
}

#[tokio::test]
async fn clone_shares_shards_and_survives_source_deletion_and_gc() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    let p = setup(&c).await;
    let d = data(6, 500_000);
    let up = api.upload(p, &[("src", d.clone())]).await;
    let src = up[0]["objectID"].as_u64().unwrap();
    let r = Api::ok(
        api.post(
            "/v1/object/clone",
            json!({"clonings": [
                {"objectID": src, "newPath": "copy", "newPackageID": p},
                {"objectID": src, "newPath": "src", "newPackageID": p},     // taken
                {"objectID": 424242, "newPath": "x", "newPackageID": p},   // missing
            ]}),
        )
        .await,
    );
    let objs = r["objects"].as_array().unwrap();
    assert_eq!(objs.len(), 3);
    assert!(objs[1].is_null() && objs[2].is_null());
    let clone = objs[0]["objectID"].as_u64().unwrap();
    assert_ne!(clone, src);
    assert_eq!(objs[0]["fileHash"], file_hash(&d));
    assert_eq!(c.shard_files(0).len(), 1, "clone copied no bytes");
    Api::ok(
        api.post("/v1/object/delete", json!({"objectIDs": [src]}))
            .await,
    );
    let report = c.run_gc(Duration::ZERO).await;
    assert_eq!(report.deleted, 0, "{report:?}");
    assert_eq!(api.download_all(clone).await, d);
    c.shutdown().await;
}

#[tokio::test]
async fn gc_deletes_only_unreferenced_shards() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    let p = setup(&c).await;
    let v1 = data(7, 100_000);
    let v2 = data(8, 100_000);
    api.upload(p, &[("x", v1), ("gone", b"bye".to_vec())]).await;
    let up = api.upload(p, &[("x", v2.clone())]).await;
    let gone = api
        .package_objects(p)
        .await
        .iter()
        .find(|o| o["path"] == "gone")
        .unwrap()["objectID"]
        .as_u64()
        .unwrap();
    Api::ok(
        api.post("/v1/object/delete", json!({"objectIDs": [gone]}))
            .await,
    );
    assert_eq!(c.shard_files(0).len(), 3);
    // With the default grace nothing is old enough.
    let report = c.run_gc(Duration::from_secs(3600)).await;
    assert_eq!((report.deleted, report.recent), (0, 3), "{report:?}");
    let report = c.run_gc(Duration::ZERO).await;
    assert_eq!((report.deleted, report.referenced), (2, 1), "{report:?}");
    assert_eq!(c.shard_files(0).len(), 1);
    assert_eq!(
        api.download_all(up[0]["objectID"].as_u64().unwrap()).await,
        v2
    );
    c.shutdown().await;
}

fn part_form(object: u64, index: u32, data: Vec<u8>) -> Form {
    Form::new()
        .part(
            "info",
            Part::text(json!({"objectID": object, "index": index}).to_string()),
        )
        .part("files", Part::bytes(data).file_name("part"))
}

#[tokio::test]
async fn multipart_upload_concatenates_listed_parts() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    let p = setup(&c).await;
    let d = Api::ok(
        api.post(
            "/v1/object/newMultipartUpload",
            json!({"packageID": p, "path": "big.bin"}),
        )
        .await,
    );
    let obj = &d["object"];
    let id = obj["objectID"].as_u64().unwrap();
    assert_eq!(obj["redundancy"], json!({"type": "multipartUpload"}));
    assert_eq!(obj["size"], "0");
    assert_eq!(obj["fileHash"], format!("Full{}", "0".repeat(64)));
    // Visible to queries while in progress.
    assert_eq!(api.package_objects(p).await[0]["objectID"], id);

    let (p1, p2, p3) = (data(9, 1_500_000), data(10, 10), data(11, 700_000));
    Api::ok(
        api.post_form("/v1/object/uploadPart", part_form(id, 1, p1.clone()))
            .await,
    );
    Api::ok(
        api.post_form(
            "/v1/object/uploadPart",
            part_form(id, 2, b"replaced".to_vec()),
        )
        .await,
    );
    Api::ok(
        api.post_form("/v1/object/uploadPart", part_form(id, 2, p2.clone()))
            .await,
    );
    Api::ok(
        api.post_form("/v1/object/uploadPart", part_form(id, 3, p3.clone()))
            .await,
    );
    Api::ok(
        api.post_form(
            "/v1/object/uploadPart",
            part_form(id, 4, b"unused".to_vec()),
        )
        .await,
    );

    // Bad completions.
    let (status, v) = api
        .post(
            "/v1/object/completeMultipartUpload",
            json!({"objectID": id, "indexes": []}),
        )
        .await;
    assert_eq!(
        (status, v["code"].as_str().unwrap()),
        (StatusCode::BAD_REQUEST, "BadArgument")
    );
    let (status, v) = api
        .post(
            "/v1/object/completeMultipartUpload",
            json!({"objectID": id, "indexes": [1, 9]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["message"].as_str().unwrap().contains('9'), "{v}");

    let d = Api::ok(
        api.post(
            "/v1/object/completeMultipartUpload",
            json!({"objectID": id, "indexes": [3, 1, 2, 1]}),
        )
        .await,
    );
    let mut whole = p3.clone();
    whole.extend_from_slice(&p1);
    whole.extend_from_slice(&p2);
    whole.extend_from_slice(&p1);
    let o = &d["object"];
    assert_eq!(o["objectID"], id);
    assert_eq!(o["size"], whole.len().to_string());
    assert_eq!(o["fileHash"], file_hash(&whole));
    assert_eq!(o["redundancy"], json!({"type": "none"}));
    assert_eq!(api.download_all(id).await, whole);

    // Completing a finished (non-multipart) object is a clear error.
    let (status, v) = api
        .post(
            "/v1/object/completeMultipartUpload",
            json!({"objectID": id, "indexes": [1]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["message"].as_str().unwrap().contains("not a multipart"),
        "{v}"
    );
    // Unused and replaced parts are garbage once complete: GC keeps only the object's shard.
    let report = c.run_gc(Duration::ZERO).await;
    assert_eq!(report.referenced, 1, "{report:?}");
    assert_eq!(api.download_all(id).await, whole);
    // A path that is taken cannot start a multipart upload.
    let (status, v) = api
        .post(
            "/v1/object/newMultipartUpload",
            json!({"packageID": p, "path": "big.bin"}),
        )
        .await;
    assert_eq!(
        (status, v["code"].as_str().unwrap()),
        (StatusCode::CONFLICT, "DataExists")
    );
    c.shutdown().await;
}
