//! Replication and erasure coding end to end (issue 8, docs/redundancy.md): real agents
//! with Local spaces and an in-process S3 server; blocks removed (files deleted, agents
//! stopped) or corrupted, and reads that must still return the right bytes.

use std::path::PathBuf;
use std::time::Duration;

use common::testing::wait_for;

use integration_tests::api::file_hash;
use integration_tests::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use integration_tests::{Api, TestCluster, list_files};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::data;

/// ec(4,6) with 4 KiB pieces: a stripe is 16 KiB, so small objects span many stripes.
pub(crate) fn ec46() -> Value {
    json!({"type": "ec", "k": 4, "n": 6, "chunkSize": 4096})
}

pub(crate) const STRIPE: usize = 4 * 4096;

pub(crate) async fn package_with(api: &Api, name: &str, redundancy: Value) -> (u64, Value) {
    let bucket = api.create_bucket(&format!("b-{name}")).await;
    let d = Api::ok(
        api.post(
            "/v1/package/create",
            json!({"bucketID": bucket, "name": name, "redundancy": redundancy}),
        )
        .await,
    );
    (
        d["package"]["packageID"].as_u64().unwrap(),
        d["package"].clone(),
    )
}

/// Upload one file with an optional per-upload policy; the raw envelope.
pub(crate) async fn upload_raw(
    api: &Api,
    package: u64,
    path: &str,
    body: &[u8],
    redundancy: Option<Value>,
    affinity: Option<u64>,
) -> (StatusCode, Value) {
    let mut info = json!({"packageID": package});
    if let Some(r) = redundancy {
        info["redundancy"] = r;
    }
    if let Some(a) = affinity {
        info["affinity"] = json!(a);
    }
    let form = reqwest::multipart::Form::new()
        .text("info", info.to_string())
        .part(
            "files",
            reqwest::multipart::Part::bytes(body.to_vec())
                .file_name(integration_tests::api::encode_path(path)),
        );
    api.post_form("/v1/object/upload", form).await
}

pub(crate) async fn upload(
    api: &Api,
    package: u64,
    path: &str,
    body: &[u8],
    redundancy: Option<Value>,
) -> Value {
    let res = upload_raw(api, package, path, body, redundancy, None).await;
    Api::ok(res)["uploadeds"][0].clone()
}

/// The blocks row of an object, straight from the coordinator's store.
pub(crate) async fn blocks(c: &TestCluster, object_id: u64) -> Vec<Value> {
    let row = c
        .meta_json(&format!("v1/object-blocks/{object_id:020}"))
        .await
        .expect("blocks key");
    row["blocks"].as_array().unwrap().clone()
}

/// The object row of `path` in `package`, straight from the coordinator's store.
pub(crate) async fn object_row(c: &TestCluster, package: u64, path: &str) -> Value {
    c.meta_json(&format!("v1/object/{package:020}/{path}"))
        .await
        .expect("object row")
}

/// The admin status of the repair and scrub job (with the 50 latest repairs).
pub(crate) async fn status(api: &Api) -> Value {
    Api::ok(api.get("/v1/admin/scrub/status?recent=50").await)
}

/// Every stored file named `sha256` in the Local spaces of the cluster's agents and under
/// `extra` roots (S3 buckets).
pub(crate) fn shard_files(c: &TestCluster, sha256: &str, extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = c.agents.iter().map(|a| a.space_dir.clone()).collect();
    roots.extend(extra.iter().cloned());
    roots
        .iter()
        .flat_map(|r| list_files(r))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == sha256))
        .collect()
}

/// The agent whose Local space stores the shard `sha256`.
pub(crate) fn agent_holding(c: &TestCluster, sha256: &str) -> usize {
    let file = shard_files(c, sha256, &[]).pop().expect("a stored shard");
    c.agents
        .iter()
        .position(|a| file.starts_with(&a.space_dir))
        .unwrap()
}

/// Download `[offset, offset+length)` and compare with `want`.
pub(crate) async fn check_range(api: &Api, id: u64, want: &[u8], offset: usize, length: usize) {
    let (status, body) = api
        .download(&format!("objectID={id}&offset={offset}&length={length}"))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
    let end = (offset + length).min(want.len());
    assert!(
        body[..] == want[offset..end],
        "range {offset}+{length}: {} bytes differ from the expected {}",
        body.len(),
        end - offset
    );
}

/// Full read plus ranged reads at and across piece and stripe boundaries (those that
/// start inside the object: small objects skip the rest).
pub(crate) async fn check_reads(api: &Api, id: u64, want: &[u8]) {
    assert!(
        api.download_all(id).await[..] == want[..],
        "full read differs"
    );
    let len = want.len();
    for (offset, length) in [
        (0, 1),
        (len / 3, len / 2 + 1),
        (4095, 2),
        (4096, 4096),
        (STRIPE - 1, 2),
        (STRIPE - 100, STRIPE + 200),
        (STRIPE, 3 * STRIPE),
        (2 * STRIPE + 4097, 9000),
        (len.saturating_sub(7), 7),
        (len.saturating_sub(5), 5),
    ] {
        if offset < len {
            check_range(api, id, want, offset, length).await;
        }
    }
}

pub(crate) fn corrupt(path: &PathBuf, at: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    let mut b = [0u8; 1];
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0x5a]).unwrap();
}

#[tokio::test]
async fn ec_round_trip_ranges_and_degraded_reads_on_local_spaces() {
    ec_round_trip_ranges_and_degraded_reads(TestCluster::builder(), false).await;
}

/// The same with every call between the roles in-process (`client::local`, what `jcs
/// standalone` does): streamed block writes, ranged and degraded reads, and stopped
/// agents that must become unreachable.
#[tokio::test]
async fn ec_round_trip_ranges_and_degraded_reads_in_process() {
    ec_round_trip_ranges_and_degraded_reads(TestCluster::builder().in_process(), true).await;
}

async fn ec_round_trip_ranges_and_degraded_reads(
    builder: integration_tests::TestClusterBuilder,
    in_process: bool,
) {
    let mut c = builder.agents(6).build().await.unwrap();
    let local = |addr: std::net::SocketAddr| client::local::is_local(&addr.to_string());
    assert_eq!(local(c.coordinator_addr()), in_process);
    for i in 0..6 {
        assert_eq!(local(c.agent_addr(i)), in_process, "agent {i}");
    }
    let api = c.api().clone();
    let (package, json) = package_with(&api, "ec", ec46()).await;
    assert_eq!(json["redundancy"], ec46());

    // 7 stripes and a tail.
    let body = data(1, 7 * STRIPE + 1234);
    let obj = upload(&api, package, "dir/ec.bin", &body, None).await;
    assert_eq!(obj["redundancy"], ec46());
    assert_eq!(obj["fileHash"], file_hash(&body));
    assert_eq!(obj["size"], body.len().to_string());
    let id = obj["objectID"].as_u64().unwrap();
    let listed = api.package_objects(package).await;
    assert_eq!(listed[0]["redundancy"], ec46());

    let bl = blocks(&c, id).await;
    assert_eq!(bl.len(), 6);
    let mut spaces: Vec<u64> = bl.iter().map(|b| b["space_id"].as_u64().unwrap()).collect();
    spaces.sort();
    spaces.dedup();
    assert_eq!(spaces.len(), 6, "one block per distinct space: {bl:?}");
    let files: Vec<PathBuf> = bl
        .iter()
        .map(|b| {
            let f = shard_files(&c, b["sha256"].as_str().unwrap(), &[]);
            assert_eq!(f.len(), 1, "{b}");
            f[0].clone()
        })
        .collect();
    // ec blocks are named by the BLAKE3 of their stored bytes (common::shard_hash).
    for (b, file) in bl.iter().zip(&files) {
        let content = std::fs::read(file).unwrap();
        assert_eq!(
            b["sha256"],
            format!("b3-{}", blake3::hash(&content).to_hex()),
            "{}",
            file.display()
        );
    }
    // Each block holds 8 frames of 4 KiB + 4 bytes.
    assert_eq!(std::fs::metadata(&files[0]).unwrap().len(), 8 * (4096 + 4));
    check_reads(&api, id, &body).await;

    // One and then two data blocks gone.
    std::fs::remove_file(&files[0]).unwrap();
    check_reads(&api, id, &body).await;
    std::fs::remove_file(&files[2]).unwrap();
    check_reads(&api, id, &body).await;
    // A third loss (a corrupt piece in the first stripe of block 1) is one too many: a
    // clear error before any byte.
    corrupt(&files[1], 10);
    let (status, raw) = api.download(&format!("objectID={id}")).await;
    let v: Value = serde_json::from_slice(&raw).expect("an error envelope");
    assert_ne!(status, StatusCode::OK, "{v}");
    assert_eq!(v["code"], "OperationFailed", "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("usable blocks"),
        "{v}"
    );

    // A corrupted block alone is detected and rebuilt.
    let body2 = data(2, 3 * STRIPE + 77);
    let obj2 = upload(&api, package, "corrupt.bin", &body2, None).await;
    let id2 = obj2["objectID"].as_u64().unwrap();
    let bl2 = blocks(&c, id2).await;
    let f1 = shard_files(&c, bl2[1]["sha256"].as_str().unwrap(), &[]);
    corrupt(&f1[0], 4096 + 4 + 100); // a piece of stripe 1
    corrupt(&f1[0], 4096 + 2); // the checksum of stripe 0
    check_reads(&api, id2, &body2).await;

    // Agents stopped: two of six spaces unreachable still read; three fail clearly.
    let body3 = data(3, 5 * STRIPE + 9);
    let obj3 = upload(&api, package, "agents.bin", &body3, None).await;
    let id3 = obj3["objectID"].as_u64().unwrap();
    let bl3 = blocks(&c, id3).await;
    let holders: Vec<usize> = bl3
        .iter()
        .map(|b| agent_holding(&c, b["sha256"].as_str().unwrap()))
        .collect();
    c.stop_agent(holders[0]).await;
    assert!(
        !local(c.agent_addr(holders[0])),
        "a stopped agent is not called"
    );
    check_reads(&api, id3, &body3).await;
    c.stop_agent(holders[3]).await;
    check_reads(&api, id3, &body3).await;
    c.stop_agent(holders[5]).await;
    let (status, raw) = api.download(&format!("objectID={id3}")).await;
    let v: Value = serde_json::from_slice(&raw).expect("an error envelope");
    assert_ne!(status, StatusCode::OK, "{v}");
    assert_eq!(v["code"], "OperationFailed", "{v}");
    // Uploads need six live spaces: the answer names how many are missing.
    let (_, v) = upload_raw(&api, package, "more.bin", b"x", None, None).await;
    assert_eq!(v["code"], "OperationFailed", "{v}");
    c.shutdown().await;
}

#[tokio::test]
async fn rep_uploads_clone_move_delete_and_gc_release_blocks() {
    let c = TestCluster::builder().agents(3).build().await.unwrap();
    let api = c.api().clone();
    let (package, json) = package_with(&api, "plain", Value::Null).await;
    assert_eq!(json["redundancy"], json!({"type": "none"}));
    let rep2 = json!({"type": "rep", "repCount": 2});

    // Per-upload policy overrides the package's.
    let body = data(4, 300_000);
    let obj = upload(&api, package, "r.bin", &body, Some(rep2.clone())).await;
    assert_eq!(obj["redundancy"], rep2);
    let id = obj["objectID"].as_u64().unwrap();
    let bl = blocks(&c, id).await;
    assert_eq!(bl.len(), 2);
    assert_ne!(bl[0]["space_id"], bl[1]["space_id"]);
    let sha = bl[0]["sha256"].as_str().unwrap();
    // Whole copies keep the SHA-256 name, the object's fileHash in lower case.
    assert_eq!(
        format!("Full{}", sha.to_uppercase()),
        obj["fileHash"].as_str().unwrap()
    );
    let replicas = shard_files(&c, sha, &[]);
    assert_eq!(replicas.len(), 2, "two full copies");
    assert!(api.download_all(id).await[..] == body[..]);
    check_range(&api, id, &body, 123_456, 100_000).await;

    // Clone shares the blocks; move keeps them; deleting the source keeps the clone's.
    let (p2, _) = package_with(&api, "other", ec46()).await;
    let v = Api::ok(
        api.post(
            "/v1/object/clone",
            json!({"clonings": [{"objectID": id, "newPath": "copy", "newPackageID": p2}]}),
        )
        .await,
    );
    let clone_id = v["objects"][0]["objectID"].as_u64().unwrap();
    assert_eq!(v["objects"][0]["redundancy"], rep2);
    Api::ok(
        api.post(
            "/v1/object/move",
            json!({"movings": [{"objectID": clone_id, "packageID": p2, "path": "moved"}]}),
        )
        .await,
    );
    Api::ok(
        api.post("/v1/object/delete", json!({"objectIDs": [id]}))
            .await,
    );
    let report = c.run_gc(Duration::ZERO).await;
    assert_eq!(report.deleted, 0, "{report:?}");
    assert!(api.download_all(clone_id).await[..] == body[..]);
    // Deleting the package of the last holder releases the blocks: GC removes them.
    Api::ok(
        api.post("/v1/package/delete", json!({"packageID": p2}))
            .await,
    );
    let report = c.run_gc(Duration::ZERO).await;
    assert_eq!(report.deleted, 2, "{report:?}");
    assert!(shard_files(&c, sha, &[]).is_empty());

    // Bad policies are refused naming the field; too few spaces → how many are missing.
    let (status, v) = upload_raw(
        &api,
        package,
        "x",
        b"x",
        Some(json!({"type": "ec", "k": 4, "n": 3})),
        None,
    )
    .await;
    assert_eq!(
        (status, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("BadArgument"))
    );
    assert!(v["message"].as_str().unwrap().contains("redundancy"), "{v}");
    // More blocks than the cluster has spaces at all: a bad request, not an outage.
    let (status, v) = upload_raw(&api, package, "x", b"x", Some(ec46()), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["code"], "BadArgument", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("this cluster has 3"),
        "{v}"
    );

    // package/update changes what new uploads get.
    let v = Api::ok(
        api.post(
            "/v1/package/update",
            json!({"packageID": package, "redundancy": {"type": "rep", "repCount": 3}}),
        )
        .await,
    );
    assert_eq!(
        v["package"]["redundancy"],
        json!({"type": "rep", "repCount": 3})
    );
    let obj = upload(&api, package, "r3.bin", b"three copies", None).await;
    assert_eq!(obj["redundancy"], json!({"type": "rep", "repCount": 3}));
    let id = obj["objectID"].as_u64().unwrap();
    assert_eq!(blocks(&c, id).await.len(), 3);
    assert_eq!(&api.download_all(id).await[..], b"three copies");

    // One replica gone: reads fail over to the others. (Last: the read reports the damage
    // and the leader's repair job may rebuild the replica meanwhile, see repair.rs.)
    let sha = blocks(&c, id).await[0]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let replicas = shard_files(&c, &sha, &[]);
    assert_eq!(replicas.len(), 3, "three full copies");
    std::fs::remove_file(&replicas[0]).unwrap();
    std::fs::remove_file(&replicas[1]).unwrap();
    assert_eq!(&api.download_all(id).await[..], b"three copies");
    c.shutdown().await;
}

pub(crate) fn s3_space(name: &str, s3: &S3Server, dir: &str) -> Value {
    json!({
        "name": name,
        "storage": {"type": "S3", "region": "us-east-1", "endpoint": s3.endpoint(), "bucket": "ec-bucket"},
        "credential": {"type": "S3", "accessKeyId": ACCESS_KEY, "secretAccessKey": SECRET_KEY},
        "shardStore": {"maxSize": 0},
        "features": [],
        "workingDir": dir
    })
}

/// `n` S3 user spaces on `s3` (bucket `ec-bucket`, working dirs `jcs-0..`); their ids.
pub(crate) async fn create_s3_spaces(api: &Api, s3: &S3Server, n: usize) -> Vec<u64> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let v = Api::ok(
            api.post(
                "/v1/userSpace/create",
                s3_space(&format!("s3-{i}"), s3, &format!("jcs-{i}")),
            )
            .await,
        );
        ids.push(v["userSpace"]["userSpaceID"].as_u64().unwrap());
    }
    ids
}

/// Upload `body` to `path` with `affinity`, retrying until the agent serves the spaces just
/// created (it learns them with its next heartbeat); the uploaded object's JSON.
pub(crate) async fn upload_once_served(
    api: &Api,
    package: u64,
    path: &str,
    body: &[u8],
    affinity: u64,
) -> Value {
    upload_when_served(api, package, path, body, Some(affinity)).await
}

/// Upload `body` to `path` (with an optional `affinity`), retrying for up to 20 s while the
/// upload is refused (agents learn new spaces with their next heartbeat); the object's JSON.
async fn upload_when_served(
    api: &Api,
    package: u64,
    path: &str,
    body: &[u8],
    affinity: Option<u64>,
) -> Value {
    let ok = wait_for(Duration::from_secs(20), || async {
        let res = upload_raw(api, package, path, body, None, affinity).await;
        (res.1["code"] == "OK").then(|| res.1["data"]["uploadeds"][0].clone())
    })
    .await;
    match ok {
        Some(obj) => obj,
        None => panic!(
            "upload of {path} still refused: {:?}",
            upload_raw(api, package, path, body, None, affinity).await
        ),
    }
}

#[tokio::test]
async fn ec_and_rep_on_s3_spaces() {
    let c = TestCluster::builder().agents(1).build().await.unwrap();
    let api = c.api().clone();
    let s3 = S3Server::start(&c.scratch("s3"), &["ec-bucket"]).await;
    let s3_spaces = create_s3_spaces(&api, &s3, 6).await;
    let (package, _) = package_with(&api, "s3", ec46()).await;
    let body = data(5, 6 * STRIPE + 5);
    let obj = upload_once_served(&api, package, "s3.bin", &body, s3_spaces[0]).await;
    let id = obj["objectID"].as_u64().unwrap();
    let bl = blocks(&c, id).await;
    let on_s3: Vec<&Value> = bl
        .iter()
        .filter(|b| s3_spaces.contains(&b["space_id"].as_u64().unwrap()))
        .collect();
    // Seven live spaces (six S3, one Local): at least five blocks are on S3.
    assert!(on_s3.len() >= 5, "{bl:?}");
    let root = vec![s3.root.clone()];
    for b in &on_s3 {
        assert_eq!(
            shard_files(&c, b["sha256"].as_str().unwrap(), &root).len(),
            1
        );
    }
    check_reads(&api, id, &body).await;
    // Two S3 blocks lost.
    for b in &on_s3[..2] {
        for f in shard_files(&c, b["sha256"].as_str().unwrap(), &root) {
            std::fs::remove_file(f).unwrap();
        }
    }
    check_reads(&api, id, &body).await;

    // rep(2) with the first copy on S3.
    let rep2 = json!({"type": "rep", "repCount": 2});
    let body = data(6, 70_000);
    let (_, v) = upload_raw(
        &api,
        package,
        "rep.bin",
        &body,
        Some(rep2.clone()),
        Some(s3_spaces[3]),
    )
    .await;
    let obj = Api::ok((StatusCode::OK, v))["uploadeds"][0].clone();
    assert_eq!(obj["redundancy"], rep2);
    let id = obj["objectID"].as_u64().unwrap();
    let bl = blocks(&c, id).await;
    assert_eq!(bl[0]["space_id"].as_u64(), Some(s3_spaces[3]));
    assert!(api.download_all(id).await[..] == body[..]);
    check_range(&api, id, &body, 65_000, 10_000).await;
    c.shutdown().await;
}

/// Several blocks served by one agent share one HTTP/2 connection from the gateway: reads
/// of 1 MiB pieces from four of them at once must not stall on flow control.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec_with_all_blocks_on_one_agent_and_1_mib_pieces() {
    let c = TestCluster::builder().agents(1).build().await.unwrap();
    let api = c.api().clone();
    let mut spaces = Vec::new();
    for i in 0..5 {
        let dir = c.scratch(&format!("local-{i}"));
        let v = Api::ok(
            api.post(
                "/v1/userSpace/create",
                json!({
                    "name": format!("local-{i}"),
                    "storage": {"type": "Local", "location": "agent-0", "path": dir.to_str().unwrap()},
                    "credential": {"type": "Local"},
                    "shardStore": {"maxSize": 0},
                    "features": [],
                    "workingDir": ""
                }),
            )
            .await,
        );
        spaces.push(v["userSpace"]["userSpaceID"].as_u64().unwrap());
    }
    let policy = json!({"type": "ec", "k": 4, "n": 6, "chunkSize": 1048576});
    let (package, _) = package_with(&api, "one-agent", policy.clone()).await;
    let body = data(7, 8 * 4 * 1024 * 1024);
    let obj = upload_when_served(&api, package, "big.bin", &body, None).await;
    assert_eq!(obj["redundancy"], policy);
    let id = obj["objectID"].as_u64().unwrap();
    let got = tokio::time::timeout(Duration::from_secs(60), api.download_all(id))
        .await
        .expect("the read stalled");
    assert!(got[..] == body[..]);
    check_range(&api, id, &body, 3 * 1024 * 1024 + 7, 9 * 1024 * 1024).await;
    c.shutdown().await;
}
