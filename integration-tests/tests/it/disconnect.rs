//! A client that disconnects in the middle of an upload body leaves no trace: no object,
//! no pending upload, no shard, no temp file; the previous version of the path is intact.

use std::time::Duration;

use integration_tests::api::file_hash;
use integration_tests::{Api, TestCluster};
use tokio::io::AsyncWriteExt;

use crate::data;

#[tokio::test]
async fn client_disconnect_mid_body_keeps_previous_version() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api().clone();
    let bucket = api.create_bucket("b").await;
    let package = api.create_package(bucket, "p").await;
    let v1 = data(9, 300_000);
    let up = api.upload(package, &[("x.bin", v1.clone())]).await;
    let id = up[0]["objectID"].as_u64().unwrap();
    let shards_before = c.shard_files(0);

    // Hand-written request: declares 10 MiB, sends 3 MiB of the file, then hangs up.
    let boundary = "XyZBoundary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"info\"\r\n\r\n{{\"packageID\":{package}}}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"x.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    let declared = head.len() + 10 * 1024 * 1024;
    let mut sock = tokio::net::TcpStream::connect(c.gateway_addr())
        .await
        .unwrap();
    let req = format!(
        "POST /v1/object/upload HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: {declared}\r\n\r\n{head}"
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let partial = data(10, 3 * 1024 * 1024);
    sock.write_all(&partial).await.unwrap();
    sock.flush().await.unwrap();
    drop(sock);

    // The gateway notices, aborts the agent stream and forgets the pending upload.
    let meta = c.meta();
    let clean = common::testing::wait_until(Duration::from_secs(15), || {
        let meta = meta.clone();
        async move {
            let page = meta
                .range(meta::Range::prefix(b"v1/upload/".to_vec()))
                .await
                .unwrap();
            page.kvs
                .iter()
                .all(|kv| !String::from_utf8_lossy(&kv.value).contains("\"pending\""))
        }
    })
    .await;
    assert!(clean, "a pending upload was left behind");
    let no_temp = common::testing::wait_until(Duration::from_secs(15), || async {
        c.temp_files(0).is_empty()
    })
    .await;
    assert!(no_temp, "temp files left: {:?}", c.temp_files(0));
    assert_eq!(
        c.shard_files(0),
        shards_before,
        "a shard of the aborted upload was stored"
    );

    let objs = api.package_objects(package).await;
    assert_eq!(objs.len(), 1);
    assert_eq!(objs[0]["fileHash"], file_hash(&v1));
    assert_eq!(api.download_all(id).await, v1);
    Api::ok(api.get("/v1/bucket/listAll").await);
    c.shutdown().await;
}
