//! Re-encode on policy change end to end (docs/redundancy.md, "Re-encode on policy
//! change"): `package/update` converts every object of the package (none ↔ rep ↔ ec) with
//! real agents on Local spaces, on redb and on etcd; a concurrent overwrite wins; a new
//! leader resumes the walk; multipart completions converge to a rep/ec package policy.

use std::time::{Duration, Instant};

use common::testing::wait_for;
use integration_tests::api::file_hash;
use integration_tests::{Api, Meta, TestCluster};
use serde_json::{Value, json};

use crate::data;
use crate::redundancy::{
    STRIPE, blocks, check_reads, ec46, object_row, package_with, shard_files, status, upload,
};

/// On demand only; never rebuild blocks of down agents during these tests.
fn scrub_config() -> coordinator::ScrubConfig {
    coordinator::ScrubConfig {
        interval: Duration::ZERO,
        repair_after_down: Duration::from_secs(3600),
        ..Default::default()
    }
}

/// Six agents on redb, scrub on demand only.
async fn six_agents_on_redb() -> TestCluster {
    TestCluster::builder()
        .meta(Meta::Redb)
        .agents(6)
        .scrub(scrub_config())
        .build()
        .await
        .unwrap()
}

/// Poll until the re-encode job of `package` satisfies `done`; the job. Panics after 60 s.
async fn wait_job(api: &Api, package: u64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let got = wait_for(Duration::from_secs(60), || async {
        let j = job(api, package).await;
        done(&j).then_some(j)
    })
    .await;
    match got {
        Some(j) => j,
        None => panic!("{what}: {}", job(api, package).await),
    }
}

/// The re-encode job of `package` in the admin status.
async fn job(api: &Api, package: u64) -> Value {
    let s = status(api).await;
    s["reencode"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["packageID"] == package)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Change the package's policy and wait until its re-encode job has finished.
async fn update_and_wait(api: &Api, package: u64, policy: &Value) -> Value {
    let v = Api::ok(
        api.post(
            "/v1/package/update",
            json!({"packageID": package, "redundancy": policy}),
        )
        .await,
    );
    assert_eq!(&v["package"]["redundancy"], policy, "{v}");
    wait_job(api, package, "re-encode did not finish", |j| {
        j["running"] == false && &j["redundancy"] == policy
    })
    .await
}

/// Every shard reference held by object `id` (`o{id}` or `b{id}-{i}`), sorted.
async fn refs_of(c: &TestCluster, id: u64) -> Vec<String> {
    let page = c
        .meta()
        .range(meta::Range::prefix(b"v1/shard-ref/".to_vec()))
        .await
        .unwrap();
    let o = format!("/o{id:020}");
    let b = format!("/b{id:020}-");
    let mut out: Vec<String> = page
        .kvs
        .into_iter()
        .map(|kv| String::from_utf8(kv.key).unwrap())
        .filter(|k| k.ends_with(&o) || k.contains(&b))
        .collect();
    out.sort();
    out
}

async fn blocks_key(c: &TestCluster, id: u64) -> Option<Value> {
    c.meta_json(&format!("v1/object-blocks/{id:020}")).await
}

/// The object is stored under `policy` exactly: API form, row, blocks on distinct spaces
/// (row `space_id` = block 0's), one reference per block and nothing else, the right
/// bytes (full and ranged reads).
async fn check_stored(c: &TestCluster, package: u64, path: &str, want: &[u8], policy: &Value) {
    let api = c.api();
    let listed = api.package_objects(package).await;
    let o = listed
        .iter()
        .find(|o| o["path"] == path)
        .unwrap_or_else(|| panic!("{path} not listed: {listed:?}"));
    let id = o["objectID"].as_u64().unwrap();
    assert_eq!(&o["redundancy"], policy, "{o}");
    assert_eq!(o["fileHash"], file_hash(want), "{o}");
    let row = object_row(c, package, path).await;
    let refs = refs_of(c, id).await;
    if policy["type"] == "none" {
        assert!(blocks_key(c, id).await.is_none(), "{path}: blocks key left");
        assert_eq!(row["redundancy"], "none");
        let sha = row["sha256"].as_str().unwrap();
        let space = row["space_id"].as_u64().unwrap();
        assert_eq!(
            refs,
            vec![format!("v1/shard-ref/{space:020}/{sha}/o{id:020}")],
            "{path}"
        );
    } else {
        let bl = blocks(c, id).await;
        let n = match policy["type"].as_str().unwrap() {
            "ec" => policy["n"].as_u64().unwrap(),
            _ => policy["repCount"].as_u64().unwrap(),
        } as usize;
        assert_eq!(bl.len(), n, "{path}: {bl:?}");
        let mut spaces: Vec<u64> = bl.iter().map(|b| b["space_id"].as_u64().unwrap()).collect();
        assert_eq!(
            row["space_id"].as_u64(),
            Some(spaces[0]),
            "row space = block 0's"
        );
        spaces.sort();
        spaces.dedup();
        assert_eq!(spaces.len(), n, "{path}: blocks on distinct spaces: {bl:?}");
        let mut want_refs: Vec<String> = bl
            .iter()
            .map(|b| {
                format!(
                    "v1/shard-ref/{:020}/{}/b{id:020}-{:03}",
                    b["space_id"].as_u64().unwrap(),
                    b["sha256"].as_str().unwrap(),
                    b["index"].as_u64().unwrap()
                )
            })
            .collect();
        want_refs.sort();
        assert_eq!(
            refs, want_refs,
            "{path}: one reference per block, nothing else"
        );
    }
    check_reads(api, id, want).await;
}

async fn policy_changes_reencode_every_object(meta: Meta) {
    let Some(c) = TestCluster::builder()
        .meta(meta)
        .agents(6)
        .scrub(scrub_config())
        .build()
        .await
    else {
        return;
    };
    let api = c.api().clone();
    let (package, _) = package_with(&api, "re", json!({"type": "none"})).await;
    let files: Vec<(String, Vec<u8>)> = vec![
        ("a/one.bin".into(), data(1, 1)),
        ("b.bin".into(), data(2, 3 * STRIPE + 5)),
        ("c/d/e.bin".into(), data(3, 100_000)),
    ];
    for (p, body) in &files {
        let o = upload(&api, package, p, body, None).await;
        assert_eq!(o["redundancy"], json!({"type": "none"}));
    }
    let ec = ec46();
    let rep2 = json!({"type": "rep", "repCount": 2});
    let rep3 = json!({"type": "rep", "repCount": 3});
    let none = json!({"type": "none"});
    for (step, policy) in [&ec, &rep2, &none, &rep3, &ec, &none]
        .into_iter()
        .enumerate()
    {
        let j = update_and_wait(&api, package, policy).await;
        assert_eq!(
            (
                j["total"].as_u64(),
                j["checked"].as_u64(),
                j["reencoded"].as_u64(),
                j["failed"].as_u64(),
                j["superseded"].as_u64()
            ),
            (Some(3), Some(3), Some(3), Some(0), Some(0)),
            "step {step} to {policy}: {j}"
        );
        for (p, body) in &files {
            check_stored(&c, package, p, body, policy).await;
        }
        if step == 0 {
            // ec(4,6) with two of six spaces' blocks gone: reads still work.
            let id = api.package_objects(package).await[1]["objectID"]
                .as_u64()
                .unwrap();
            let bl = blocks(&c, id).await;
            for b in &bl[1..3] {
                for f in shard_files(&c, b["sha256"].as_str().unwrap(), &[]) {
                    std::fs::remove_file(f).unwrap();
                }
            }
            assert!(
                api.download_all(id).await[..] == files[1].1[..],
                "degraded read"
            );
        }
    }
    // The same policy again: nothing to do.
    let j = update_and_wait(&api, package, &none).await;
    assert_eq!(
        (j["checked"].as_u64(), j["reencoded"].as_u64()),
        (Some(3), Some(0)),
        "{j}"
    );
    // Successful conversions are counted by the job, not logged: the repair log keeps
    // room for repairs and failures.
    let s = status(&api).await;
    assert!(
        !s["recent"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["reason"].as_str().unwrap_or("").starts_with("reencode")),
        "{s}"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn policy_changes_reencode_every_object_on_redb() {
    policy_changes_reencode_every_object(Meta::Redb).await;
}

#[tokio::test]
async fn policy_changes_reencode_every_object_on_etcd() {
    policy_changes_reencode_every_object(Meta::Etcd).await;
}

#[tokio::test]
async fn an_overwrite_during_the_reencode_wins() {
    let c = six_agents_on_redb().await;
    let api = c.api().clone();
    let (package, _) = package_with(&api, "race", json!({"type": "none"})).await;
    // Big enough that its re-encode is still writing when the overwrite lands.
    let old = data(20, 48 << 20);
    let o = upload(&api, package, "x.bin", &old, None).await;
    let id = o["objectID"].as_u64().unwrap();
    drop(old);
    Api::ok(
        api.post(
            "/v1/package/update",
            json!({"packageID": package, "redundancy": {"type": "ec", "k": 4, "n": 6}}),
        )
        .await,
    );
    // Wait until the agents write the new blocks (temp files), then overwrite the path
    // with a rep(2) upload.
    let writing = wait_for(Duration::from_secs(60), || async {
        (0..6).any(|i| !c.temp_files(i).is_empty()).then_some(())
    })
    .await;
    assert!(writing.is_some(), "the re-encode never started writing");
    let new = data(21, 3000);
    let rep2 = json!({"type": "rep", "repCount": 2});
    let o2 = upload(&api, package, "x.bin", &new, Some(rep2.clone())).await;
    assert_eq!(
        o2["objectID"].as_u64(),
        Some(id),
        "an overwrite keeps the id"
    );
    let j = wait_job(&api, package, "re-encode did not finish", |j| {
        j["running"] == false
    })
    .await;
    assert_eq!(
        (
            j["superseded"].as_u64(),
            j["reencoded"].as_u64(),
            j["failed"].as_u64()
        ),
        (Some(1), Some(0), Some(0)),
        "{j}"
    );
    // The overwrite keeps its own policy and bytes; no reference to the ec blocks.
    check_stored(&c, package, "x.bin", &new, &rep2).await;
    // The orphan ec blocks are left to shard GC, which reclaims them.
    let report = c.run_gc(Duration::ZERO).await;
    tracing::info!(?report, "gc after the superseded re-encode");
    let stored: usize = (0..6).map(|i| c.shard_files(i).len()).sum();
    assert_eq!(stored, 2, "only the two replicas are left");
    check_stored(&c, package, "x.bin", &new, &rep2).await;
    c.shutdown().await;
}

#[tokio::test]
async fn a_new_leader_resumes_the_reencode_from_the_cursor() {
    let Some(mut c) = TestCluster::builder()
        .meta(Meta::Etcd)
        .coordinators(2)
        .agents(3)
        .scrub(coordinator::ScrubConfig {
            objects_per_step: 1,
            step_pause: Duration::from_millis(250),
            ..scrub_config()
        })
        .build()
        .await
    else {
        return;
    };
    let api = c.api().clone();
    let (package, _) = package_with(&api, "ha", json!({"type": "none"})).await;
    const OBJECTS: u64 = 10;
    let mut files = Vec::new();
    for i in 0..OBJECTS {
        let body = data(60 + i, 1000 + i as usize);
        upload(&api, package, &format!("o{i}"), &body, None).await;
        files.push((format!("o{i}"), body));
    }
    let first_index = c.leader_index().await;
    let rep2 = json!({"type": "rep", "repCount": 2});
    Api::ok(
        api.post(
            "/v1/package/update",
            json!({"packageID": package, "redundancy": rep2}),
        )
        .await,
    );
    let checked_before = wait_job(&api, package, "the job did not progress", |j| {
        j["running"] == true && j["checked"].as_u64().unwrap_or(0) >= 3
    })
    .await["checked"]
        .as_u64()
        .unwrap();
    assert!(
        checked_before < OBJECTS,
        "the job finished before the leader change"
    );
    c.stop_coordinator(first_index).await;

    let done = wait_job(&api, package, "the new leader did not finish", |j| {
        let checked = j["checked"].as_u64().unwrap_or(0);
        assert!(
            checked >= checked_before,
            "the new leader restarted the walk: {j} (had {checked_before})"
        );
        j["running"] == false
    })
    .await;
    assert_ne!(
        c.leader_index().await,
        first_index,
        "another coordinator leads"
    );
    // At most the object in flight at the change is looked at twice.
    let checked = done["checked"].as_u64().unwrap();
    assert!((OBJECTS..=OBJECTS + 1).contains(&checked), "{done}");
    assert_eq!(done["failed"], 0, "{done}");
    for (p, body) in &files {
        check_stored(&c, package, p, body, &rep2).await;
    }
    c.shutdown().await;
}

fn part_form(object: u64, index: u32, body: Vec<u8>) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .text(
            "info",
            json!({"objectID": object, "index": index}).to_string(),
        )
        .part(
            "files",
            reqwest::multipart::Part::bytes(body).file_name("part"),
        )
}

#[tokio::test]
async fn multipart_completion_converges_to_the_package_policy() {
    let c = six_agents_on_redb().await;
    let api = c.api().clone();
    let ec = ec46();
    let (package, _) = package_with(&api, "mpu", ec.clone()).await;
    let d = Api::ok(
        api.post(
            "/v1/object/newMultipartUpload",
            json!({"packageID": package, "path": "big.bin"}),
        )
        .await,
    );
    let id = d["object"]["objectID"].as_u64().unwrap();
    let (p1, p2) = (data(30, 70_000), data(31, 5 * STRIPE + 3));
    for (i, p) in [(1, &p1), (2, &p2)] {
        Api::ok(
            api.post_form("/v1/object/uploadPart", part_form(id, i, p.clone()))
                .await,
        );
    }
    let d = Api::ok(
        api.post(
            "/v1/object/completeMultipartUpload",
            json!({"objectID": id, "indexes": [1, 2]}),
        )
        .await,
    );
    let mut whole = p1.clone();
    whole.extend_from_slice(&p2);
    assert_eq!(d["object"]["fileHash"], file_hash(&whole));
    // Stored plain first, then converted by the leader.
    let converted = wait_for(Duration::from_secs(30), || async {
        (api.package_objects(package).await[0]["redundancy"] == ec).then_some(())
    })
    .await;
    assert!(
        converted.is_some(),
        "not converted: {:?}",
        api.package_objects(package).await
    );
    check_stored(&c, package, "big.bin", &whole, &ec).await;
    assert_eq!(status(&api).await["reencodeQueued"], 0);
    c.shutdown().await;
}

#[tokio::test]
async fn uploads_that_choose_their_redundancy_keep_it() {
    let c = six_agents_on_redb().await;
    let api = c.api().clone();
    let rep2 = json!({"type": "rep", "repCount": 2});
    let (package, _) = package_with(&api, "chosen", rep2.clone()).await;
    // The upload info's redundancy overrides the package policy, plain and rep/ec alike.
    let own_none = data(40, 50_000);
    let o = upload(
        &api,
        package,
        "own-none.bin",
        &own_none,
        Some(json!({"type": "none"})),
    )
    .await;
    assert_eq!(o["redundancy"], json!({"type": "none"}), "{o}");
    let own_ec = data(41, 3 * STRIPE + 5);
    let o = upload(&api, package, "own-ec.bin", &own_ec, Some(ec46())).await;
    assert_eq!(o["redundancy"], ec46(), "{o}");
    // A multipart completion (stored plain, no choice made) converges: once it has, the
    // leader has worked through the queue, which is taken in object-id order.
    let d = Api::ok(
        api.post(
            "/v1/object/newMultipartUpload",
            json!({"packageID": package, "path": "mpu.bin"}),
        )
        .await,
    );
    let id = d["object"]["objectID"].as_u64().unwrap();
    let part = data(42, 70_000);
    Api::ok(
        api.post_form("/v1/object/uploadPart", part_form(id, 1, part.clone()))
            .await,
    );
    Api::ok(
        api.post(
            "/v1/object/completeMultipartUpload",
            json!({"objectID": id, "indexes": [1]}),
        )
        .await,
    );
    let converged = wait_for(Duration::from_secs(30), || async {
        let s = status(&api).await;
        let listed = api.package_objects(package).await;
        let mpu = listed.iter().find(|o| o["path"] == "mpu.bin").cloned();
        (s["reencodeQueued"] == 0 && mpu.is_some_and(|o| o["redundancy"] == rep2)).then_some(())
    })
    .await;
    assert!(
        converged.is_some(),
        "{:?} {}",
        api.package_objects(package).await,
        status(&api).await
    );
    check_stored(&c, package, "mpu.bin", &part, &rep2).await;
    check_stored(
        &c,
        package,
        "own-none.bin",
        &own_none,
        &json!({"type": "none"}),
    )
    .await;
    check_stored(&c, package, "own-ec.bin", &own_ec, &ec46()).await;
    c.shutdown().await;
}

#[tokio::test]
async fn imports_converge_to_the_default_policy() {
    let rep2 = json!({"type": "rep", "repCount": 2});
    let c = TestCluster::builder()
        .meta(Meta::Redb)
        .agents(3)
        .default_redundancy(rep2.clone())
        .scrub(scrub_config())
        .build()
        .await
        .unwrap();
    let api = c.api().clone();
    let dir = c.scratch("import");
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                format!("d{i}/f{i}.bin"),
                data(40 + i, 5000 * (i as usize + 1)),
            )
        })
        .collect();
    for (p, body) in &files {
        let f = dir.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, body).unwrap();
    }
    let space = Api::ok(
        api.post(
            "/v1/userSpace/create",
            json!({"name": "src", "storage": {"type": "Local", "path": dir.to_str().unwrap(), "location": "agent-0"},
                   "credential": {"type": "Local"}, "shardStore": null}),
        )
        .await,
    )["userSpace"]["userSpaceID"]
        .as_u64()
        .unwrap();
    let bucket = api.create_bucket("imp").await;
    let d = Api::ok(
        api.post(
            "/v1/userSpace/createPackage",
            json!({"userSpaceID": space, "path": "", "bucketID": bucket, "name": "imported"}),
        )
        .await,
    );
    assert_eq!(d["imported"].as_u64(), Some(3), "{d}");
    let package = d["package"]["packageID"].as_u64().unwrap();
    assert_eq!(d["package"]["redundancy"], rep2, "{d}");
    let converted = wait_for(Duration::from_secs(30), || async {
        let o = api.package_objects(package).await;
        (o.len() == 3 && o.iter().all(|o| o["redundancy"] == rep2)).then_some(())
    })
    .await;
    assert!(
        converted.is_some(),
        "not converted: {:?}",
        api.package_objects(package).await
    );
    for (p, body) in &files {
        check_stored(&c, package, p, body, &rep2).await;
    }
    c.shutdown().await;
}

/// Measurement, not a check (run by hand, docs/redundancy.md): how long a 64 MiB object
/// takes to convert none → ec(4,6) → rep(2) → none on six Local agents in one process.
/// `cargo nextest run -p integration-tests reencode_throughput --run-ignored only --no-capture`
#[tokio::test]
#[ignore]
#[allow(clippy::print_stderr)]
async fn reencode_throughput_of_a_64_mib_object() {
    let c = six_agents_on_redb().await;
    let api = c.api().clone();
    let (package, _) = package_with(&api, "m", json!({"type": "none"})).await;
    let body = data(99, 64 << 20);
    upload(&api, package, "big.bin", &body, None).await;
    let id = api.package_objects(package).await[0]["objectID"]
        .as_u64()
        .unwrap();
    for policy in [
        json!({"type": "ec", "k": 4, "n": 6, "chunkSize": 1048576}),
        json!({"type": "rep", "repCount": 2}),
        json!({"type": "none"}),
    ] {
        let t = Instant::now();
        let j = update_and_wait(&api, package, &policy).await;
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(
            (j["reencoded"].as_u64(), j["failed"].as_u64()),
            (Some(1), Some(0)),
            "{j}"
        );
        eprintln!(
            "re-encode to {policy}: {secs:.2} s, {:.1} MiB/s of object",
            64.0 / secs
        );
    }
    assert!(api.download_all(id).await[..] == body[..]);
    c.shutdown().await;
}
