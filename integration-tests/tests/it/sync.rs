//! `/v1/spaceSyncer`: tasks scheduled by the coordinator and run on an agent, between a
//! Local space and another Local space (on the same agent or another one) or a real S3
//! server.

use std::path::Path;
use std::time::Duration;

use integration_tests::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use integration_tests::{Api, TestCluster};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn local_space(api: &Api, name: &str, dir: &Path) -> u64 {
    local_space_on(api, "agent-0", name, dir).await
}

/// A Local space on the machine of agent `agent`.
async fn local_space_on(api: &Api, agent: &str, name: &str, dir: &Path) -> u64 {
    let d = Api::ok(
        api.post(
            "/v1/userSpace/create",
            json!({"name": name, "storage": {"type": "Local", "location": agent, "path": dir.to_str().unwrap()},
                   "credential": {"type": "Local"}, "shardStore": null}),
        )
        .await,
    );
    d["userSpace"]["userSpaceID"].as_u64().unwrap()
}

async fn get_task(api: &Api, id: u64) -> Value {
    Api::ok(
        api.get(&format!("/v1/spaceSyncer/getTask?taskID={id}"))
            .await,
    )["task"]
        .clone()
}

/// Poll until the task has `runs` finished runs (and is not running).
async fn wait_runs(api: &Api, id: u64, runs: usize) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let t = get_task(api, id).await;
        let done = t["status"]["runs"]
            .as_array()
            .map(|r| r.iter().filter(|r| !r["endTime"].is_null()).count())
            .unwrap_or(0);
        if done >= runs && t["status"]["state"] != "Running" {
            return t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "task {id} did not finish {runs} runs: {t}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn write_tree(root: &Path, files: &[(&str, &[u8])]) {
    for (p, d) in files {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, d).unwrap();
    }
}

#[tokio::test]
async fn interval_task_copies_then_skips_unchanged_and_recopies_changes() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    let src = c.scratch("src");
    let dst = c.scratch("dst");
    write_tree(
        &src,
        &[
            ("cli/a.txt", b"alpha"),
            ("cli/sub/b.log", b"bravo!"),
            ("other/x", b"no"),
        ],
    );
    let s = local_space(api, "src", &src).await;
    let d = local_space(api, "dst", &dst).await;
    let task = Api::ok(
        api.post(
            "/v1/spaceSyncer/createTask",
            json!({
                "trigger": {"type": "Interval", "interval": 1},
                "mode": {"type": "Diff", "includeSize": true, "includeModTime": true},
                "filters": [],
                "options": {"noEmptyDirectories": true},
                "srcUserSpaceID": s, "srcPath": "cli",
                "destUserSpaceIDs": [d], "destPathes": ["mirror"]
            }),
        )
        .await,
    )["task"]
        .clone();
    let id = task["taskID"].as_u64().unwrap();
    assert_eq!(task["srcPath"], "cli");
    assert!(
        task["status"]["state"] == "Pending" || task["status"]["state"] == "Running",
        "{task}"
    );

    let t = wait_runs(api, id, 1).await;
    let run = &t["status"]["runs"][0];
    assert_eq!(
        (run["filesCopied"].as_u64(), run["result"].as_str()),
        (Some(2), Some("Succeeded")),
        "{t}"
    );
    assert_eq!(std::fs::read(dst.join("mirror/a.txt")).unwrap(), b"alpha");
    assert_eq!(
        std::fs::read(dst.join("mirror/sub/b.log")).unwrap(),
        b"bravo!"
    );
    assert!(!dst.join("mirror/x").exists() && !dst.join("mirror/other").exists());

    // The next run finds nothing to do.
    let t = wait_runs(api, id, 2).await;
    let run = &t["status"]["runs"][1];
    assert_eq!(run["filesCopied"], 0, "{t}");
    assert_eq!(run["filesScanned"], 2, "{t}");

    // A changed file is copied again.
    write_tree(&src, &[("cli/a.txt", b"alpha, changed")]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = std::fs::read(dst.join("mirror/a.txt")).unwrap_or_default();
        if got == b"alpha, changed" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "changed file was not re-copied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    Api::ok(
        api.post("/v1/spaceSyncer/cancelTask", json!({"taskID": id}))
            .await,
    );
    Api::ok(
        api.post("/v1/spaceSyncer/cancelTask", json!({"taskID": id}))
            .await,
    );
    let t = get_task(api, id).await;
    assert_eq!(t["status"]["state"], "Cancelled", "{t}");
    c.shutdown().await;
}

#[tokio::test]
async fn once_task_to_local_and_s3_with_a_filter() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    let src = c.scratch("src");
    let dst = c.scratch("dst");
    let s3 = S3Server::start(&c.scratch("s3"), &["sync-bucket"]).await;
    write_tree(
        &src,
        &[
            ("a.txt", b"keep"),
            ("b.bin", b"skip me"),
            ("d/c.txt", b"keep too"),
        ],
    );
    let s = local_space(api, "src", &src).await;
    let d = local_space(api, "dst", &dst).await;
    let cloud = Api::ok(
        api.post(
            "/v1/userSpace/create",
            json!({"name": "cloud",
                   "storage": {"type": "S3", "region": "us-east-1", "endpoint": s3.endpoint(), "bucket": "sync-bucket"},
                   "credential": {"type": "S3", "accessKeyId": ACCESS_KEY, "secretAccessKey": SECRET_KEY},
                   "shardStore": null}),
        )
        .await,
    )["userSpace"]["userSpaceID"]
        .as_u64()
        .unwrap();
    let task = Api::ok(
        api.post(
            "/v1/spaceSyncer/createTask",
            json!({
                "trigger": {"type": "Once"},
                "mode": {"type": "Full"},
                "filters": [{"type": "Extension", "include": ["txt"]}],
                "srcUserSpaceID": s, "srcPath": "",
                "destUserSpaceIDs": [d, cloud], "destPathes": ["copy", "backup"]
            }),
        )
        .await,
    )["task"]
        .clone();
    let id = task["taskID"].as_u64().unwrap();
    let t = wait_runs(api, id, 1).await;
    assert_eq!(t["status"]["runs"][0]["result"], "Succeeded", "{t}");
    assert_eq!(std::fs::read(dst.join("copy/a.txt")).unwrap(), b"keep");
    assert_eq!(
        std::fs::read(dst.join("copy/d/c.txt")).unwrap(),
        b"keep too"
    );
    assert!(!dst.join("copy/b.bin").exists());
    assert!(
        s3.files("sync-bucket", "backup").len() >= 2,
        "{:?}",
        s3.files("sync-bucket", "")
    );
    // Once: no second run.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        get_task(api, id).await["status"]["runs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    c.shutdown().await;
}

/// Symlinks in a Local source: skipped by default; with `copyLinks` a link to a file is
/// copied as a regular file holding the target's bytes. Links to directories are skipped
/// either way.
#[tokio::test]
async fn copy_links_copies_the_files_links_point_to() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    let src = c.scratch("src");
    let outside = c.scratch("outside");
    let dst = c.scratch("dst");
    write_tree(&src, &[("plain.txt", b"plain"), ("d/inner.txt", b"inner")]);
    write_tree(
        &outside,
        &[("target.txt", b"linked bytes"), ("sub/x.txt", b"x")],
    );
    std::os::unix::fs::symlink(outside.join("target.txt"), src.join("d/link.txt")).unwrap();
    std::os::unix::fs::symlink(outside.join("sub"), src.join("dirlink")).unwrap();
    let s = local_space(api, "src", &src).await;
    let d = local_space(api, "dst", &dst).await;
    for (folder, copy_links) in [("plain", false), ("links", true)] {
        let task = Api::ok(
            api.post(
                "/v1/spaceSyncer/createTask",
                json!({
                    "trigger": {"type": "Once"},
                    "mode": {"type": "Full"},
                    "options": {"copyLinks": copy_links},
                    "srcUserSpaceID": s, "srcPath": "",
                    "destUserSpaceIDs": [d], "destPathes": [folder]
                }),
            )
            .await,
        )["task"]
            .clone();
        assert_eq!(task["options"]["copyLinks"], copy_links, "{task}");
        let id = task["taskID"].as_u64().unwrap();
        let t = wait_runs(api, id, 1).await;
        assert_eq!(t["status"]["runs"][0]["result"], "Succeeded", "{t}");
        let run = &t["status"]["runs"][0];
        assert_eq!(run["filesCopied"], if copy_links { 3 } else { 2 }, "{t}");
    }
    assert_eq!(
        std::fs::read(dst.join("plain/d/inner.txt")).unwrap(),
        b"inner"
    );
    assert!(!dst.join("plain/d/link.txt").exists());
    let copied = dst.join("links/d/link.txt");
    assert_eq!(std::fs::read(&copied).unwrap(), b"linked bytes");
    assert!(std::fs::symlink_metadata(&copied).unwrap().is_file());
    assert!(!dst.join("plain/dirlink").exists() && !dst.join("links/dirlink").exists());
    c.shutdown().await;
}

#[tokio::test]
async fn bad_tasks_are_rejected_naming_the_field() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    let s = local_space(api, "src", &c.scratch("src")).await;
    let base = json!({
        "trigger": {"type": "Interval", "interval": 30},
        "mode": {"type": "Diff", "includeSize": false, "includeModTime": true},
        "filters": [{"type": "Size", "minSize": 10, "maxSize": 20000}],
        "options": {"noEmptyDirectories": false},
        "srcUserSpaceID": s, "srcPath": "space1/cli",
        "destUserSpaceIDs": [s], "destPathes": ["space2/svr"]
    });
    // The API document's example (adapted to existing spaces) is accepted.
    Api::ok(api.post("/v1/spaceSyncer/createTask", base.clone()).await);
    for (pointer, value, needle) in [
        ("/destPathes/0", json!("space1/cli/inner"), "inside"),
        ("/destPathes/0", json!("space1/cli"), "destPathes[0]"),
        ("/destUserSpaceIDs/0", json!(424242), "424242"),
        ("/srcUserSpaceID", json!(424242), "424242"),
        ("/trigger/interval", json!(0), "interval"),
        ("/filters/0/minSize", json!(999_999), "minSize"),
    ] {
        let mut body = base.clone();
        *body.pointer_mut(pointer).unwrap() = value;
        let (status, v) = api.post("/v1/spaceSyncer/createTask", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{pointer}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{pointer}: {v}"
        );
    }
    let (status, _) = api.get("/v1/spaceSyncer/getTask?taskID=999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    c.shutdown().await;
}

#[tokio::test]
async fn cancel_stops_a_running_pass() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    let src = c.scratch("src");
    let dst = c.scratch("dst");
    let blob = vec![7u8; 256 * 1024];
    for i in 0..400 {
        write_tree(&src, &[(&format!("d{}/f{i}.bin", i % 8), &blob)]);
    }
    let s = local_space(api, "src", &src).await;
    let d = local_space(api, "dst", &dst).await;
    let id = Api::ok(
        api.post(
            "/v1/spaceSyncer/createTask",
            json!({"trigger": {"type": "Once"}, "mode": {"type": "Full"},
                   "srcUserSpaceID": s, "srcPath": "", "destUserSpaceIDs": [d], "destPathes": ["out"]}),
        )
        .await,
    )["task"]["taskID"]
        .as_u64()
        .unwrap();
    // Wait until the pass is running, then cancel it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while get_task(api, id).await["status"]["state"] != "Running" {
        assert!(
            std::time::Instant::now() < deadline,
            "the pass never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Api::ok(
        api.post("/v1/spaceSyncer/cancelTask", json!({"taskID": id}))
            .await,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let t = loop {
        let t = get_task(api, id).await;
        if !t["status"]["runs"][0]["endTime"].is_null() {
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pass did not stop: {t}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(t["status"]["state"], "Cancelled", "{t}");
    assert_eq!(t["status"]["runs"][0]["result"], "Cancelled", "{t}");
    let copied = integration_tests::list_files(&dst.join("out")).len();
    assert!(
        copied < 400,
        "the pass ran to the end despite the cancel ({copied} files)"
    );
    // The run reports Cancelled when the coordinator drops the agent's call; a copy the
    // agent had in flight then still ends (placed, or its temp file removed) a moment
    // later (docs/sync.md, "Cancel"), so nothing may be left once that has happened.
    let temp_files = || {
        integration_tests::list_files(&dst)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".jcs-tmp-"))
            .collect::<Vec<_>>()
    };
    let settled = common::testing::wait_for(Duration::from_secs(10), || {
        let left = temp_files();
        async move { left.is_empty().then_some(()) }
    })
    .await;
    assert!(
        settled.is_some(),
        "temp files left behind: {:?}",
        temp_files()
    );
    c.shutdown().await;
}

#[tokio::test]
async fn tasks_survive_a_restart_and_interrupted_runs_are_marked_failed() {
    let mut c = TestCluster::builder()
        .meta(integration_tests::Meta::Redb)
        .build()
        .await
        .unwrap();
    let api = c.api().clone();
    let src = c.scratch("src");
    write_tree(&src, &[("a", b"a")]);
    let s = local_space(&api, "src", &src).await;
    let d = local_space(&api, "dst", &c.scratch("dst")).await;
    let id = Api::ok(
        api.post(
            "/v1/spaceSyncer/createTask",
            json!({"trigger": {"type": "Interval", "interval": 3600}, "mode": {"type": "Full"},
                   "srcUserSpaceID": s, "srcPath": "", "destUserSpaceIDs": [d], "destPathes": ["out"]}),
        )
        .await,
    )["task"]["taskID"]
        .as_u64()
        .unwrap();
    wait_runs(&api, id, 1).await;
    // Simulate a crash in the middle of a pass: the stored status says Running.
    let key = format!("v1/sync-status/{id:020}");
    let mut status = c.meta_json(&key).await.expect("sync status row");
    status["state"] = json!("Running");
    let mut run = status["runs"][0].clone();
    run["runID"] = json!(2);
    run["endTimeMs"] = Value::Null;
    run["result"] = json!("Running");
    status["runs"].as_array_mut().unwrap().push(run);
    c.meta()
        .put(key.into_bytes(), serde_json::to_vec(&status).unwrap())
        .await
        .unwrap();

    c.restart_coordinator().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let t = loop {
        let t = get_task(&api, id).await;
        if t["status"]["state"] != "Running" {
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "interrupted run still Running: {t}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(t["srcUserSpaceID"], s, "the task survived the restart: {t}");
    assert_eq!(t["status"]["state"], "Idle", "{t}");
    assert_eq!(t["status"]["runs"][1]["result"], "Failed", "{t}");
    assert!(
        t["status"]["lastErrors"].to_string().contains("restarted"),
        "{t}"
    );
    c.shutdown().await;
}

fn mtime_secs(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn cross_agent_sync_streams_to_the_destination_agent() {
    let c = TestCluster::builder().agents(2).build().await.unwrap();
    let api = c.api();
    let src = c.scratch("src");
    let dst = c.scratch("dst");
    let s3 = S3Server::start(&c.scratch("s3"), &["cross"]).await;
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 5).map(|i| (i % 251) as u8).collect();
    write_tree(
        &src,
        &[
            ("t/a.txt", b"alpha"),
            ("t/sub/b.bin", &big),
            ("t/sub.txt", b"sorts between sub/ entries"),
            ("t/z/c.txt", b"charlie"),
        ],
    );
    std::fs::create_dir_all(src.join("t/empty")).unwrap();
    // An extraneous file and one that the Diff mode must find current.
    write_tree(&dst, &[("m/old.txt", b"extraneous"), ("m/keep/x", b"x")]);
    let s = local_space_on(api, "agent-0", "src", &src).await;
    let d = local_space_on(api, "agent-1", "dst", &dst).await;
    let cloud = Api::ok(
        api.post(
            "/v1/userSpace/create",
            json!({"name": "cloud",
                   "storage": {"type": "S3", "region": "us-east-1", "endpoint": s3.endpoint(), "bucket": "cross"},
                   "credential": {"type": "S3", "accessKeyId": ACCESS_KEY, "secretAccessKey": SECRET_KEY},
                   "shardStore": null}),
        )
        .await,
    )["userSpace"]["userSpaceID"]
        .as_u64()
        .unwrap();
    let id = Api::ok(
        api.post(
            "/v1/spaceSyncer/createTask",
            json!({
                "trigger": {"type": "Interval", "interval": 1},
                "mode": {"type": "Diff", "includeSize": true, "includeModTime": true},
                "filters": [{"type": "Path", "exclude": ["keep/**"]}],
                "options": {"deleteExtraneous": true},
                "srcUserSpaceID": s, "srcPath": "t",
                "destUserSpaceIDs": [d, cloud], "destPathes": ["m", "b"]
            }),
        )
        .await,
    )["task"]["taskID"]
        .as_u64()
        .unwrap();
    let t = wait_runs(api, id, 1).await;
    let run = &t["status"]["runs"][0];
    assert_eq!(run["result"], "Succeeded", "{t}");
    assert_eq!(run["filesCopied"], 4, "{t}");
    assert_eq!(run["filesDeleted"], 1, "{t}");
    assert_eq!(
        run["bytesCopied"],
        (2 * (5 + big.len() + 26 + 7)).to_string(),
        "{t}"
    );
    assert_eq!(std::fs::read(dst.join("m/a.txt")).unwrap(), b"alpha");
    assert_eq!(std::fs::read(dst.join("m/sub/b.bin")).unwrap(), big);
    assert_eq!(std::fs::read(dst.join("m/z/c.txt")).unwrap(), b"charlie");
    assert!(dst.join("m/empty").is_dir(), "empty directory not created");
    assert!(!dst.join("m/old.txt").exists(), "extraneous file kept");
    assert!(
        dst.join("m/keep/x").exists(),
        "a file the filters exclude was deleted"
    );
    assert_eq!(
        mtime_secs(&dst.join("m/sub/b.bin")),
        mtime_secs(&src.join("t/sub/b.bin"))
    );
    assert_eq!(
        s3.files("cross", "b").len(),
        4,
        "{:?}",
        s3.files("cross", "")
    );
    assert!(
        integration_tests::list_files(&dst)
            .iter()
            .all(|p| !p.to_string_lossy().contains(".jcs-tmp-")),
        "temp files left behind"
    );

    // Unchanged: the next run copies nothing (Diff against the remote listing).
    let t = wait_runs(api, id, 2).await;
    let run = &t["status"]["runs"][1];
    assert_eq!(
        (&run["filesCopied"], &run["filesSkipped"], &run["result"]),
        (&json!(0), &json!(4), &json!("Succeeded")),
        "{t}"
    );
    // A changed file is copied again.
    write_tree(&src, &[("t/z/c.txt", b"charlie, changed")]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read(dst.join("m/z/c.txt")).unwrap_or_default() != b"charlie, changed" {
        assert!(
            std::time::Instant::now() < deadline,
            "changed file was not re-copied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Api::ok(
        api.post("/v1/spaceSyncer/cancelTask", json!({"taskID": id}))
            .await,
    );
    c.shutdown().await;
}

#[tokio::test]
async fn a_destination_agent_stopped_mid_run_records_errors_and_deletes_nothing() {
    let mut c = TestCluster::builder().agents(2).build().await.unwrap();
    let api = c.api().clone();
    let src = c.scratch("src");
    let dst = c.scratch("dst");
    let blob = vec![3u8; 256 * 1024];
    for i in 0..400 {
        write_tree(&src, &[(&format!("d{}/f{i:03}.bin", i % 4), &blob)]);
    }
    write_tree(&dst, &[("out/extraneous", b"must stay")]);
    let s = local_space_on(&api, "agent-0", "src", &src).await;
    let d = local_space_on(&api, "agent-1", "dst", &dst).await;
    let id = Api::ok(
        api.post(
            "/v1/spaceSyncer/createTask",
            json!({"trigger": {"type": "Once"}, "mode": {"type": "Full"},
                   "options": {"deleteExtraneous": true},
                   "srcUserSpaceID": s, "srcPath": "", "destUserSpaceIDs": [d], "destPathes": ["out"]}),
        )
        .await,
    )["task"]["taskID"]
        .as_u64()
        .unwrap();
    // Stop the destination's agent as soon as the first copy landed.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while integration_tests::list_files(&dst.join("out"))
        .iter()
        .all(|p| p.ends_with("extraneous") || p.to_string_lossy().contains(".jcs-tmp-"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no copy reached the destination"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.stop_agent(1).await;
    let t = wait_runs(&api, id, 1).await;
    let run = &t["status"]["runs"][0];
    assert_eq!(run["result"], "Failed", "{t}");
    assert_eq!(run["filesScanned"], 400, "{t}");
    assert!(run["filesFailed"].as_u64().unwrap() > 0, "{t}");
    assert_eq!(run["filesDeleted"], 0, "{t}");
    assert!(
        t["status"]["lastErrors"]
            .to_string()
            .contains("destination agent"),
        "{t}"
    );
    assert_eq!(
        std::fs::read(dst.join("out/extraneous")).unwrap(),
        b"must stay"
    );
    let copied = integration_tests::list_files(&dst.join("out")).len();
    assert!(
        copied < 401,
        "every file was copied: the agent stopped too late"
    );
    c.shutdown().await;
}

/// `getTask?waitMs=` is a long poll: it answers once the run is recorded (one request, no
/// client-side polling), and a task that stays `Pending` holds the request only for the
/// time asked.
#[tokio::test]
async fn get_task_long_polls_until_the_task_settles() {
    let c = TestCluster::builder().build().await.unwrap();
    let api = c.api();
    let src = c.scratch("src");
    let dst = c.scratch("dst");
    let files: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| (format!("d{}/f{i}", i % 7), vec![i as u8; 1000 + i]))
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    write_tree(&src, &refs);
    let s = local_space(api, "src", &src).await;
    let d = local_space(api, "dst", &dst).await;
    let create = |trigger: Value| {
        api.post(
            "/v1/spaceSyncer/createTask",
            json!({"trigger": trigger, "mode": {"type": "Full"},
                   "srcUserSpaceID": s, "srcPath": "", "destUserSpaceIDs": [d], "destPathes": [""]}),
        )
    };
    let id = Api::ok(create(json!({"type": "Once"})).await)["task"]["taskID"]
        .as_u64()
        .unwrap();
    let t = Api::ok(
        api.get(&format!("/v1/spaceSyncer/getTask?taskID={id}&waitMs=20000"))
            .await,
    )["task"]
        .clone();
    assert_eq!(t["status"]["state"], "Idle", "{t}");
    assert_eq!(t["status"]["runs"][0]["result"], "Succeeded", "{t}");
    assert_eq!(t["status"]["runs"][0]["filesCopied"], 300, "{t}");
    assert_eq!(std::fs::read(dst.join("d3/f10")).unwrap(), files[10].1);

    // A schedule window that opens in two hours: the task stays Pending.
    let hour = (common::time::now_ms() / 3_600_000) % 24;
    let window = json!({"type": "Schedule",
        "start": format!("{:02}:00", (hour + 2) % 24), "end": format!("{:02}:00", (hour + 3) % 24)});
    let pending = Api::ok(create(window).await)["task"]["taskID"]
        .as_u64()
        .unwrap();
    let t0 = std::time::Instant::now();
    let t = Api::ok(
        api.get(&format!(
            "/v1/spaceSyncer/getTask?taskID={pending}&waitMs=400"
        ))
        .await,
    )["task"]
        .clone();
    let took = t0.elapsed();
    assert_eq!(t["status"]["state"], "Pending", "{t}");
    assert!(took >= Duration::from_millis(400), "waited {took:?}");
    assert!(took < Duration::from_secs(10), "waited {took:?}");
    // An unknown task is NotFound at once, whatever the wait.
    let t0 = std::time::Instant::now();
    let (status, _) = api
        .get("/v1/spaceSyncer/getTask?taskID=999999&waitMs=20000")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(t0.elapsed() < Duration::from_secs(5));
    c.shutdown().await;
}
