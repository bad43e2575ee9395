//! Repair and scrub of rep/ec objects end to end (docs/redundancy.md, "Repair and scrub"):
//! real agents on Local spaces (and on an in-process S3 server), blocks deleted, corrupted
//! or behind a stopped agent, the scrub job run on demand through `/v1/admin/scrub/*`, a
//! degraded download queueing a repair, and a run resumed by a new leader.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::testing::{wait_for, wait_until};
use integration_tests::s3::S3Server;
use integration_tests::{AGENT_TTL, Api, HEARTBEAT_INTERVAL, Meta, TestCluster};
use serde_json::{Value, json};

use crate::data;
use crate::redundancy::{
    STRIPE, blocks, check_reads, corrupt, create_s3_spaces, ec46, object_row, package_with,
    shard_files, status, upload, upload_once_served,
};

/// On demand only, repairs of down agents after `repair_after_down`.
fn scrub_config(repair_after_down: Duration) -> coordinator::ScrubConfig {
    coordinator::ScrubConfig {
        interval: Duration::ZERO,
        repair_after_down,
        ..Default::default()
    }
}

/// Start a run and wait until it has finished; its final status.
async fn scrub(api: &Api, deep: bool) -> Value {
    let runs = status(api).await["runs"].as_u64().unwrap();
    let started = Api::ok(
        api.post("/v1/admin/scrub/start", json!({"deep": deep}))
            .await,
    );
    assert_eq!(started["running"], true, "{started}");
    let done = wait_for(Duration::from_secs(60), || async {
        let s = status(api).await;
        (s["running"] == false && s["runs"].as_u64().unwrap() > runs).then_some(s)
    })
    .await;
    match done {
        Some(s) => s,
        None => panic!("scrub did not finish: {}", status(api).await),
    }
}

/// Whether the coordinator's registry holds agent `name` down (no heartbeat for the TTL):
/// a storage test on its machine is then refused as `AgentDown` ("agent … is down")
/// instead of being tried on the agent.
async fn reported_down(api: &Api, name: &str, dir: &Path) -> bool {
    let probe = json!({
        "storage": {"type": "Local", "location": name, "path": dir.to_str().unwrap()},
        "credential": {"type": "Local"},
    });
    let (_, v) = api.post("/v1/userSpace/test", probe).await;
    v["message"]
        .as_str()
        .is_some_and(|m| m.contains(&format!("agent {name} serving user space 0 is down")))
}

fn damage(kind: &str) -> u64 {
    common::metrics::metrics()
        .read_damage
        .with_label_values(&[kind])
        .get()
}

/// A full read and ranged reads return `want`, and none of them was degraded.
async fn check_healthy(api: &Api, id: u64, want: &[u8]) {
    let before = (
        damage("degraded_stripes"),
        damage("corrupt_pieces"),
        damage("failed_blocks"),
    );
    check_reads(api, id, want).await;
    let after = (
        damage("degraded_stripes"),
        damage("corrupt_pieces"),
        damage("failed_blocks"),
    );
    assert_eq!(before, after, "reads after the repair were degraded");
}

/// The directory of a declared Local space (its row's `path`).
async fn space_dir(c: &TestCluster, space: u64) -> PathBuf {
    let row = c
        .meta_json(&format!("v1/space/{space:020}"))
        .await
        .expect("space row");
    PathBuf::from(row["path"].as_str().unwrap())
}

fn spaces_of(bl: &[Value]) -> Vec<u64> {
    bl.iter().map(|b| b["space_id"].as_u64().unwrap()).collect()
}

fn distinct(v: &[u64]) -> usize {
    let mut s = v.to_vec();
    s.sort();
    s.dedup();
    s.len()
}

/// The stored file of block `b` (exactly one).
fn block_file(c: &TestCluster, b: &Value, extra: &[PathBuf]) -> PathBuf {
    let f = shard_files(c, b["sha256"].as_str().unwrap(), extra);
    assert_eq!(f.len(), 1, "{b}: {f:?}");
    f[0].clone()
}

#[tokio::test]
async fn deep_scrub_rebuilds_a_deleted_and_a_corrupt_ec_block_on_free_spaces() {
    let c = TestCluster::builder()
        .agents(8)
        .scrub(scrub_config(Duration::from_secs(3600)))
        .build()
        .await
        .unwrap();
    let api = c.api().clone();
    let (package, _) = package_with(&api, "ec", ec46()).await;
    let body = data(11, 7 * STRIPE + 1234);
    let obj = upload(&api, package, "a.bin", &body, None).await;
    let id = obj["objectID"].as_u64().unwrap();
    // A healthy object in the same package stays as it is.
    let body2 = data(12, 3 * STRIPE + 10);
    let obj2 = upload(&api, package, "b.bin", &body2, None).await;
    let id2 = obj2["objectID"].as_u64().unwrap();
    let before2 = blocks(&c, id2).await;

    let before = blocks(&c, id).await;
    let old_spaces = spaces_of(&before);
    std::fs::remove_file(block_file(&c, &before[0], &[])).unwrap();
    corrupt(&block_file(&c, &before[3], &[]), 3 * (4096 + 4) + 17);

    // A shallow run sees the missing block only (the corrupt one has the right size).
    let s = scrub(&api, false).await;
    assert_eq!(
        (
            s["objectsChecked"].as_u64(),
            s["damaged"].as_u64(),
            s["repaired"].as_u64()
        ),
        (Some(2), Some(1), Some(1)),
        "{s}"
    );
    let mid = blocks(&c, id).await;
    assert_ne!(mid[0]["space_id"], before[0]["space_id"]);
    // The object row names block 0's new space (same transaction as the swap).
    let row = object_row(&c, package, "a.bin").await;
    assert_eq!(row["space_id"], mid[0]["space_id"], "{row}");
    assert_eq!(mid[3], before[3], "a shallow run cannot see the corruption");

    let s = scrub(&api, true).await;
    assert_eq!(s["deep"], true);
    assert_eq!(
        (
            s["damaged"].as_u64(),
            s["repaired"].as_u64(),
            s["failed"].as_u64()
        ),
        (Some(1), Some(1), Some(0)),
        "{s}"
    );
    let entry = &s["recent"][0];
    assert_eq!(entry["objectID"].as_u64(), Some(id), "{s}");
    assert_eq!(entry["result"], "repaired");
    assert_eq!(entry["blocks"], json!([3]));
    assert_eq!(entry["reason"], "corrupt");
    assert_eq!(s["recent"][1]["reason"], "missing");

    let after = blocks(&c, id).await;
    let new_spaces = spaces_of(&after);
    assert_eq!(distinct(&new_spaces), 6, "one block per space: {after:?}");
    for i in [0, 3] {
        assert!(
            !old_spaces.contains(&new_spaces[i]),
            "block {i} rebuilt on a space that held a block: {old_spaces:?} → {new_spaces:?}"
        );
        assert_eq!(
            after[i]["sha256"], before[i]["sha256"],
            "same bytes as encoded"
        );
        let sha = after[i]["sha256"].as_str().unwrap();
        let digest = sha
            .strip_prefix("b3-")
            .expect("an ec block has a BLAKE3 name");
        let stored = space_dir(&c, new_spaces[i])
            .await
            .join("shards")
            .join(&digest[..2])
            .join(sha);
        assert!(stored.is_file(), "{} is missing", stored.display());
    }
    for i in [1, 2, 4, 5] {
        assert_eq!(after[i], before[i]);
    }
    assert_eq!(blocks(&c, id2).await, before2);
    check_healthy(&api, id, &body).await;
    check_healthy(&api, id2, &body2).await;

    // Everything is healthy now: a new deep run finds nothing.
    let s = scrub(&api, true).await;
    assert_eq!(
        (s["damaged"].as_u64(), s["objectsChecked"].as_u64()),
        (Some(0), Some(2)),
        "{s}"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn rep_scrub_restores_a_missing_and_a_corrupt_replica() {
    let c = TestCluster::builder()
        .agents(4)
        .scrub(scrub_config(Duration::from_secs(3600)))
        .build()
        .await
        .unwrap();
    let api = c.api().clone();
    let rep2 = json!({"type": "rep", "repCount": 2});
    let (package, _) = package_with(&api, "rep", rep2).await;
    let a = data(21, 300_000);
    let b = data(22, 200_001);
    let ida = upload(&api, package, "a", &a, None).await["objectID"]
        .as_u64()
        .unwrap();
    let idb = upload(&api, package, "b", &b, None).await["objectID"]
        .as_u64()
        .unwrap();
    let bla = blocks(&c, ida).await;
    let blb = blocks(&c, idb).await;
    let files_a = shard_files(&c, bla[0]["sha256"].as_str().unwrap(), &[]);
    assert_eq!(files_a.len(), 2);
    std::fs::remove_file(&files_a[0]).unwrap();
    let files_b = shard_files(&c, blb[0]["sha256"].as_str().unwrap(), &[]);
    corrupt(&files_b[1], 100_000);

    let s = scrub(&api, true).await;
    assert_eq!(
        (
            s["damaged"].as_u64(),
            s["repaired"].as_u64(),
            s["failed"].as_u64()
        ),
        (Some(2), Some(2), Some(0)),
        "{s}"
    );
    for (id, before, body) in [(ida, &bla, &a), (idb, &blb, &b)] {
        let after = blocks(&c, id).await;
        let spaces = spaces_of(&after);
        assert_eq!(distinct(&spaces), 2, "{after:?}");
        assert_ne!(spaces_of(before), spaces, "one replica moved");
        // Two good copies again (a corrupt leftover may remain where it was).
        let good: Vec<PathBuf> = shard_files(&c, after[0]["sha256"].as_str().unwrap(), &[])
            .into_iter()
            .filter(|f| std::fs::read(f).unwrap() == **body)
            .collect();
        assert!(good.len() >= 2, "{good:?}");
        assert!(api.download_all(id).await[..] == body[..]);
    }
    c.shutdown().await;
}

#[tokio::test]
async fn a_stopped_agent_is_not_repaired_before_repair_after_down() {
    let after_down = Duration::from_secs(8);
    let mut c = TestCluster::builder()
        .agents(7)
        .scrub(scrub_config(after_down))
        .build()
        .await
        .unwrap();
    let api = c.api().clone();
    let (package, _) = package_with(&api, "down", ec46()).await;
    let body = data(31, 3 * STRIPE + 5);
    let id = upload(&api, package, "x", &body, None).await["objectID"]
        .as_u64()
        .unwrap();
    let before = blocks(&c, id).await;
    let file = block_file(&c, &before[2], &[]);
    let holder = c
        .agents
        .iter()
        .position(|a| file.starts_with(&a.space_dir))
        .unwrap();
    // The registry counts "down for" from the agent's last heartbeat, at most one
    // interval before it stops: `last_beat` is a lower bound of that instant, so
    // `last_beat.elapsed()` bounds how long the agent has been down from above.
    let name = format!("agent-{holder}");
    let probe_dir = c.scratch("probe");
    assert!(
        !reported_down(&api, &name, &probe_dir).await,
        "{name} is up"
    );
    let last_beat = Instant::now() - HEARTBEAT_INTERVAL;
    c.stop_agent(holder).await;

    // Known down (TTL passed), but for less than repair_after_down: unavailable, not rebuilt.
    assert!(
        wait_until(3 * AGENT_TTL, || reported_down(&api, &name, &probe_dir)).await,
        "the coordinator never saw {name} down"
    );
    let s = scrub(&api, false).await;
    assert!(
        last_beat.elapsed() < after_down,
        "the machine is too slow for this test"
    );
    assert_eq!(
        (
            s["unavailable"].as_u64(),
            s["damaged"].as_u64(),
            s["repaired"].as_u64()
        ),
        (Some(1), Some(0), Some(0)),
        "{s}"
    );
    assert_eq!(blocks(&c, id).await, before);
    // The object still reads (degraded).
    assert!(api.download_all(id).await[..] == body[..]);

    // Once down for longer, the next run rebuilds the block elsewhere.
    let s = wait_for(Duration::from_secs(40), || async {
        // The degraded read above queued the object: wait for that check too.
        let s = scrub(&api, false).await;
        (s["repaired"].as_u64() == Some(1)).then_some(s)
    })
    .await;
    let Some(s) = s else {
        panic!("never repaired: {}", status(&api).await)
    };
    // The agent's last heartbeat came after `last_beat`: had the repair come before
    // repair_after_down, this would be less than it.
    assert!(last_beat.elapsed() >= after_down, "repaired too early: {s}");
    let after = blocks(&c, id).await;
    assert_ne!(after[2]["space_id"], before[2]["space_id"]);
    assert_eq!(distinct(&spaces_of(&after)), 6);
    check_healthy(&api, id, &body).await;
    c.shutdown().await;
}

#[tokio::test]
async fn a_degraded_download_queues_a_repair_without_a_walk() {
    let c = TestCluster::builder()
        .agents(7)
        .scrub(scrub_config(Duration::from_secs(3600)))
        .build()
        .await
        .unwrap();
    let api = c.api().clone();
    let (package, _) = package_with(&api, "report", ec46()).await;
    let body = data(41, 5 * STRIPE + 3);
    let id = upload(&api, package, "x", &body, None).await["objectID"]
        .as_u64()
        .unwrap();
    let before = blocks(&c, id).await;
    std::fs::remove_file(block_file(&c, &before[1], &[])).unwrap();

    let degraded = damage("degraded_stripes");
    assert!(api.download_all(id).await[..] == body[..]);
    let seen = wait_until(Duration::from_secs(10), || async {
        damage("degraded_stripes") > degraded
    })
    .await;
    assert!(seen, "the read was not degraded");

    let moved = wait_until(Duration::from_secs(30), || async {
        blocks(&c, id).await[1]["space_id"] != before[1]["space_id"]
    })
    .await;
    assert!(moved, "no repair after the report");
    let s = status(&api).await;
    assert_eq!(s["runs"], 0, "repaired by the queue, not by a walk: {s}");
    assert_eq!(s["queued"], 0, "{s}");
    assert_eq!(s["recent"][0]["objectID"].as_u64(), Some(id), "{s}");
    assert_eq!(s["recent"][0]["result"], "repaired", "{s}");
    check_healthy(&api, id, &body).await;

    // A corrupt piece (same size: only a deep check sees it) is reported as such.
    let body2 = data(42, 4 * STRIPE + 1);
    let id2 = upload(&api, package, "y", &body2, None).await["objectID"]
        .as_u64()
        .unwrap();
    let before2 = blocks(&c, id2).await;
    corrupt(&block_file(&c, &before2[2], &[]), 4096 + 4 + 9);
    assert!(api.download_all(id2).await[..] == body2[..]);
    let moved = wait_until(Duration::from_secs(30), || async {
        blocks(&c, id2).await[2]["space_id"] != before2[2]["space_id"]
    })
    .await;
    assert!(moved, "corrupt block not repaired after the report");
    let s = status(&api).await;
    assert_eq!(s["runs"], 0, "{s}");
    assert_eq!(s["recent"][0]["reason"], "corrupt", "{s}");
    check_healthy(&api, id2, &body2).await;
    c.shutdown().await;
}

#[tokio::test]
async fn scrub_repairs_ec_blocks_on_s3_spaces() {
    let c = TestCluster::builder()
        .agents(1)
        .scrub(scrub_config(Duration::from_secs(3600)))
        .build()
        .await
        .unwrap();
    let api = c.api().clone();
    let s3 = S3Server::start(&c.scratch("s3"), &["ec-bucket"]).await;
    let s3_spaces = create_s3_spaces(&api, &s3, 7).await;
    let (package, _) = package_with(&api, "s3", ec46()).await;
    let body = data(51, 4 * STRIPE + 99);
    let obj = upload_once_served(&api, package, "s3.bin", &body, s3_spaces[0]).await;
    let id = obj["objectID"].as_u64().unwrap();
    let before = blocks(&c, id).await;
    let root = vec![s3.root.clone()];
    let on_s3: Vec<usize> = (0..6)
        .filter(|i| s3_spaces.contains(&before[*i]["space_id"].as_u64().unwrap()))
        .collect();
    let victim = on_s3[1];
    std::fs::remove_file(block_file(&c, &before[victim], &root)).unwrap();

    let s = scrub(&api, false).await;
    assert_eq!(
        (s["damaged"].as_u64(), s["repaired"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    let after = blocks(&c, id).await;
    assert_ne!(after[victim]["space_id"], before[victim]["space_id"]);
    assert!(!spaces_of(&before).contains(&after[victim]["space_id"].as_u64().unwrap()));
    assert_eq!(distinct(&spaces_of(&after)), 6);
    block_file(&c, &after[victim], &root);
    check_healthy(&api, id, &body).await;
    c.shutdown().await;
}

/// The run's state as the leader persisted it.
async fn job_state(c: &TestCluster) -> Value {
    c.meta_json("v1/job/scrub")
        .await
        .unwrap_or_else(|| json!({}))
}

#[tokio::test]
async fn a_new_leader_resumes_the_walk_from_the_cursor() {
    let Some(mut c) = TestCluster::builder()
        .meta(Meta::Etcd)
        .coordinators(2)
        .agents(3)
        .scrub(coordinator::ScrubConfig {
            objects_per_step: 1,
            step_pause: Duration::from_millis(250),
            ..scrub_config(Duration::from_secs(3600))
        })
        .build()
        .await
    else {
        return;
    };
    let api = c.api().clone();
    let (package, _) = package_with(&api, "ha", json!({"type": "rep", "repCount": 2})).await;
    const OBJECTS: u64 = 10;
    for i in 0..OBJECTS {
        upload(&api, package, &format!("o{i}"), &data(60 + i, 1000), None).await;
    }
    let first_index = c.leader_index().await;

    Api::ok(api.post("/v1/admin/scrub/start", json!({})).await);
    let checked_before = wait_for(Duration::from_secs(30), || async {
        let s = job_state(&c).await;
        let checked = s["checked"].as_u64().unwrap_or(0);
        (s["running"] == true && checked >= 3).then_some(checked)
    })
    .await;
    let Some(checked_before) = checked_before else {
        panic!("the run did not progress: {}", job_state(&c).await)
    };
    assert!(
        checked_before < OBJECTS,
        "the run finished before the leader change"
    );
    c.stop_coordinator(first_index).await;

    let done = wait_for(Duration::from_secs(60), || async {
        let s = job_state(&c).await;
        let checked = s["checked"].as_u64().unwrap_or(0);
        assert!(
            checked >= checked_before,
            "the new leader restarted the walk: {s} (had {checked_before})"
        );
        (s["running"] == false && s["runs"] == 1).then_some(s)
    })
    .await;
    let Some(done) = done else {
        panic!("the new leader did not finish: {}", job_state(&c).await)
    };
    assert_ne!(
        c.leader_index().await,
        first_index,
        "another coordinator leads"
    );
    let checked = done["checked"].as_u64().unwrap();
    // At most the page in flight at the change is checked twice.
    assert!(
        (OBJECTS..=OBJECTS + 1).contains(&checked),
        "checked {checked} of {OBJECTS}: {done}"
    );
    assert_eq!(done["damaged"], 0, "{done}");
    c.shutdown().await;
}
