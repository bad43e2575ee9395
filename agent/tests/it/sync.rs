//! RunSync over real gRPC: one pass of a sync task between Local directories and S3
//! spaces (in-process s3s-fs), with every mode, filter and option, failures, cancellation
//! and refused requests.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::ErrorCode;
use common::error::code_of;
use proto::agent::{RunSyncRequest, SyncProgress};
use proto::common::ticket_body::Kind;
use proto::common::{SpaceSpec, TicketBody};
use serde_json::{Value, json};
use tonic::Status;

use crate::harness::*;
use crate::s3::{S3Server, SECRET_KEY};

const SRC: u64 = 1;
const DST: u64 = 2;
const DST_S3: u64 = 3;
const BUCKET: &str = "sync-bucket";

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// Set the mtime of `path` to `secs` after the epoch.
fn set_mtime(path: &Path, secs: u64) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

fn mtime_secs(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Relative paths of the files under `dir`, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = files_under(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fn temps(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".jcs-tmp-")
        })
        .collect()
}

fn local(id: u64, path: &Path) -> SpaceSpec {
    local_spec(id, 1, path, "", 0)
}

fn s3(id: u64, server: &S3Server, working_dir: &str) -> SpaceSpec {
    s3_spec(
        id,
        1,
        &server.endpoint(),
        BUCKET,
        SECRET_KEY,
        working_dir,
        0,
    )
}

/// The JSON of a task from `source` (`src_path`) to `dests` (`(spec, path)`).
fn task(
    mode: Value,
    filters: Value,
    options: Value,
    source: &SpaceSpec,
    src_path: &str,
    dests: &[(&SpaceSpec, &str)],
) -> String {
    json!({
        "trigger": {"type": "Once"},
        "mode": mode,
        "filters": filters,
        "options": options,
        "srcUserSpaceID": source.space_id,
        "srcPath": src_path,
        "destUserSpaceIDs": dests.iter().map(|(s, _)| s.space_id).collect::<Vec<_>>(),
        "destPathes": dests.iter().map(|(_, p)| *p).collect::<Vec<_>>(),
    })
    .to_string()
}

fn diff() -> Value {
    json!({"type": "Diff", "includeSize": true, "includeModTime": true})
}

fn request(
    agent: &TestAgent,
    task_json: String,
    source: SpaceSpec,
    dests: Vec<SpaceSpec>,
) -> RunSyncRequest {
    let digest = agent::sync::request_digest(&task_json, &source, &dests);
    let ticket = agent.ticket(&TicketBody {
        shard_hash: digest,
        ..body(Kind::Sync, source.space_id)
    });
    RunSyncRequest {
        ticket: Some(ticket),
        task_json,
        source: Some(source),
        destinations: dests,
        remotes: vec![],
    }
}

/// The final progress of a pass and every error reported on the way.
struct Outcome {
    last: SyncProgress,
    errors: Vec<String>,
    messages: usize,
}

async fn send(agent: &TestAgent, req: RunSyncRequest) -> Result<Outcome, Status> {
    let mut client = agent.client.clone();
    let mut stream = client.run_sync(req).await?.into_inner();
    let mut errors = Vec::new();
    let mut messages = 0;
    while let Some(msg) = stream.message().await? {
        messages += 1;
        assert!(
            msg.errors.len() <= agent::sync::ERRORS_PER_MESSAGE,
            "{msg:?}"
        );
        errors.extend(msg.errors.iter().cloned());
        if msg.done {
            assert!(stream.message().await?.is_none(), "a message after done");
            return Ok(Outcome {
                last: msg,
                errors,
                messages,
            });
        }
    }
    panic!("the stream ended without done");
}

async fn run(
    agent: &TestAgent,
    task_json: String,
    source: &SpaceSpec,
    dests: &[&SpaceSpec],
) -> Outcome {
    let dests = dests.iter().map(|d| (*d).clone()).collect();
    send(agent, request(agent, task_json, source.clone(), dests))
        .await
        .unwrap()
}

/// `(scanned, copied, skipped, failed, deleted)`.
fn counts(o: &Outcome) -> (u64, u64, u64, u64, u64) {
    let p = &o.last;
    (
        p.files_scanned,
        p.files_copied,
        p.files_skipped,
        p.files_failed,
        p.files_deleted,
    )
}

#[tokio::test]
async fn local_to_local_diff_then_full() {
    let agent = TestAgent::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (src_root, dst_root) = (dir.path().join("src"), dir.path().join("dst"));
    let big = pattern(2 * 1024 * 1024 + 7);
    // The source space's working dir is `jcs`: its shards and temps are not synced.
    write(&src_root.join("data/a.txt"), b"alpha");
    write(&src_root.join("data/d/b.bin"), &big);
    write(&src_root.join("data/d/e/c"), b"");
    write(&src_root.join("data/d/.jcs-tmp-x"), b"temp");
    write(&src_root.join("data/jcs/shards/ab/x"), b"not internal here");
    write(&src_root.join("jcs/shards/ab/abcd"), b"shard");
    write(&src_root.join("jcs/tmp/up"), b"upload");
    std::fs::create_dir_all(src_root.join("data/empty/inner")).unwrap();
    for (f, t) in [
        ("a.txt", 1_600_000_000),
        ("d/b.bin", 1_600_000_100),
        ("d/e/c", 1_600_000_200),
    ] {
        set_mtime(&src_root.join("data").join(f), t);
    }
    let source = local_spec(SRC, 1, &src_root, "jcs", 0);
    let dest = local(DST, &dst_root);
    let diff_task = task(
        diff(),
        json!([]),
        json!({}),
        &source,
        "data",
        &[(&dest, "backup/")],
    );

    let first = run(&agent, diff_task.clone(), &source, &[&dest]).await;
    assert_eq!(counts(&first), (4, 4, 0, 0, 0), "{:?}", first.errors);
    assert_eq!(first.last.bytes_copied, (5 + big.len()) as u64 + 17);
    let backup = dst_root.join("backup");
    assert_eq!(
        tree(&backup),
        ["a.txt", "d/b.bin", "d/e/c", "jcs/shards/ab/x"]
    );
    assert_eq!(std::fs::read(backup.join("d/b.bin")).unwrap(), big);
    assert_eq!(mtime_secs(&backup.join("a.txt")), 1_600_000_000);
    assert_eq!(mtime_secs(&backup.join("d/e/c")), 1_600_000_200);
    assert!(backup.join("empty/inner").is_dir());
    assert!(!dst_root.join("jcs").exists());

    // Nothing changed: nothing copied.
    let second = run(&agent, diff_task.clone(), &source, &[&dest]).await;
    assert_eq!(counts(&second), (4, 0, 4, 0, 0), "{:?}", second.errors);
    assert_eq!(second.last.bytes_copied, 0);

    // Same size, new content and mtime: copied again; an mtime-only change too.
    write(&src_root.join("data/a.txt"), b"ALPHA");
    set_mtime(&src_root.join("data/a.txt"), 1_600_000_900);
    set_mtime(&src_root.join("data/d/e/c"), 1_600_000_901);
    let third = run(&agent, diff_task.clone(), &source, &[&dest]).await;
    assert_eq!(counts(&third), (4, 2, 2, 0, 0), "{:?}", third.errors);
    assert_eq!(std::fs::read(backup.join("a.txt")).unwrap(), b"ALPHA");
    assert_eq!(mtime_secs(&backup.join("d/e/c")), 1_600_000_901);

    // Diff on size only ignores an mtime change; on nothing, only missing files count.
    set_mtime(&src_root.join("data/a.txt"), 1_600_001_000);
    let size_only = task(
        json!({"type": "Diff", "includeSize": true}),
        json!([]),
        json!({}),
        &source,
        "data",
        &[(&dest, "backup")],
    );
    let o = run(&agent, size_only, &source, &[&dest]).await;
    assert_eq!(counts(&o), (4, 0, 4, 0, 0));
    std::fs::remove_file(backup.join("d/e/c")).unwrap();
    write(&src_root.join("data/a.txt"), b"longer alpha");
    let missing_only = task(
        json!({"type": "Diff"}),
        json!([]),
        json!({}),
        &source,
        "data",
        &[(&dest, "backup")],
    );
    let o = run(&agent, missing_only, &source, &[&dest]).await;
    assert_eq!(counts(&o), (4, 1, 3, 0, 0));
    assert_eq!(std::fs::read(backup.join("a.txt")).unwrap(), b"ALPHA");

    // Full copies everything again.
    let full = task(
        json!({"type": "Full"}),
        json!([]),
        json!({"noEmptyDirectories": true}),
        &source,
        "data",
        &[(&dest, "backup")],
    );
    let o = run(&agent, full, &source, &[&dest]).await;
    assert_eq!(counts(&o), (4, 4, 0, 0, 0));
    assert_eq!(
        std::fs::read(backup.join("a.txt")).unwrap(),
        b"longer alpha"
    );
    assert!(temps(&dst_root).is_empty());

    // noEmptyDirectories: only files (and their parents) are created.
    let fresh = task(
        diff(),
        json!([]),
        json!({"noEmptyDirectories": true}),
        &source,
        "data",
        &[(&dest, "fresh")],
    );
    run(&agent, fresh, &source, &[&dest]).await;
    assert!(dst_root.join("fresh/d/e/c").is_file());
    assert!(!dst_root.join("fresh/empty").exists());
    agent.stop().await;
}

#[tokio::test]
async fn one_source_to_fs_and_s3() {
    let agent = TestAgent::start().await;
    let server = S3Server::start(&[BUCKET]).await;
    let dir = tempfile::tempdir().unwrap();
    let src_root = dir.path().join("src");
    let big = pattern(6 * 1024 * 1024 + 3);
    write(&src_root.join("t/one.txt"), b"one");
    write(&src_root.join("t/sub/big.bin"), &big);
    set_mtime(&src_root.join("t/one.txt"), 1_700_000_000);
    set_mtime(&src_root.join("t/sub/big.bin"), 1_700_000_001);
    std::fs::create_dir_all(src_root.join("t/empty")).unwrap();
    let source = local(SRC, &src_root);
    let fs = local(DST, &dir.path().join("dst"));
    let bucket = s3(DST_S3, &server, "wd");
    let t = task(
        diff(),
        json!([]),
        json!({}),
        &source,
        "t",
        &[(&fs, "copy"), (&bucket, "mirror/t")],
    );

    let first = run(&agent, t.clone(), &source, &[&fs, &bucket]).await;
    assert_eq!(counts(&first), (2, 2, 0, 0, 0), "{:?}", first.errors);
    assert_eq!(first.last.bytes_copied, 2 * (3 + big.len() as u64));
    assert_eq!(
        std::fs::read(server.object_path(BUCKET, "mirror/t/one.txt")).unwrap(),
        b"one"
    );
    assert_eq!(
        std::fs::read(server.object_path(BUCKET, "mirror/t/sub/big.bin")).unwrap(),
        big
    );
    assert_eq!(
        std::fs::read(dir.path().join("dst/copy/sub/big.bin")).unwrap(),
        big
    );
    // Object stores have no directories: the empty one exists only on the fs side.
    assert!(dir.path().join("dst/copy/empty").is_dir());
    assert_eq!(server.files(BUCKET, "mirror").len(), 2);

    // The S3 copies record the source mtime: an unchanged tree is not copied again.
    let second = run(&agent, t.clone(), &source, &[&fs, &bucket]).await;
    assert_eq!(counts(&second), (2, 0, 2, 0, 0), "{:?}", second.errors);

    // An mtime-only change is copied to both.
    set_mtime(&src_root.join("t/one.txt"), 1_700_000_500);
    let third = run(&agent, t.clone(), &source, &[&fs, &bucket]).await;
    assert_eq!(counts(&third), (2, 1, 1, 0, 0), "{:?}", third.errors);
    assert_eq!(third.last.bytes_copied, 6);
    assert_eq!(
        mtime_secs(&dir.path().join("dst/copy/one.txt")),
        1_700_000_500
    );
    let fourth = run(&agent, t, &source, &[&fs, &bucket]).await;
    assert_eq!(counts(&fourth), (2, 0, 2, 0, 0));

    // deleteExtraneous on S3: objects of the tree absent from the source go, the space's
    // shards (under its working dir) and keys outside the tree stay.
    write(&server.object_path(BUCKET, "mirror/t/old.txt"), b"old");
    write(&server.object_path(BUCKET, "mirror/t/sub/old2.txt"), b"old");
    write(&server.object_path(BUCKET, "outside.txt"), b"outside");
    write(&server.object_path(BUCKET, "wd/shards/ab/abc"), b"shard");
    let t = task(
        diff(),
        json!([]),
        json!({"deleteExtraneous": true}),
        &source,
        "t",
        &[(&bucket, "mirror/t")],
    );
    let o = run(&agent, t, &source, &[&bucket]).await;
    assert_eq!(counts(&o), (2, 0, 2, 0, 2), "{:?}", o.errors);
    assert!(!server.object_path(BUCKET, "mirror/t/old.txt").exists());
    assert!(!server.object_path(BUCKET, "mirror/t/sub/old2.txt").exists());
    assert!(server.object_path(BUCKET, "outside.txt").exists());
    assert!(server.object_path(BUCKET, "wd/shards/ab/abc").exists());

    // S3 as the source, back to fs: its mtime is the upload time; a second run is a no-op.
    let back = local(DST, &dir.path().join("back"));
    let from_s3 = s3(DST_S3, &server, "wd");
    let t = task(
        diff(),
        json!([]),
        json!({}),
        &from_s3,
        "mirror",
        &[(&back, "")],
    );
    let o = run(&agent, t.clone(), &from_s3, &[&back]).await;
    assert_eq!(counts(&o), (2, 2, 0, 0, 0), "{:?}", o.errors);
    assert_eq!(
        std::fs::read(dir.path().join("back/t/sub/big.bin")).unwrap(),
        big
    );
    let o = run(&agent, t, &from_s3, &[&back]).await;
    assert_eq!(counts(&o), (2, 0, 2, 0, 0), "{:?}", o.errors);
    assert!(temps(dir.path()).is_empty());
    agent.stop().await;
}

#[tokio::test]
async fn each_filter_selects_files() {
    let agent = TestAgent::start().await;
    let dir = tempfile::tempdir().unwrap();
    let src_root = dir.path().join("src");
    let files = [
        ("small.txt", 3, 1_600_000_000),
        ("big.TXT", 300, 1_650_000_000),
        ("img/pic.jpg", 100, 1_700_000_000),
        ("img/deep/raw.png", 200, 1_750_000_000),
        ("notes", 50, 1_760_000_000),
    ];
    for (name, len, mtime) in files {
        write(&src_root.join(name), &pattern(len));
        set_mtime(&src_root.join(name), mtime);
    }
    let source = local(SRC, &src_root);
    let dest = local(DST, &dir.path().join("dst"));
    let cases = [
        (
            "size",
            json!([{"type": "Size", "minSize": 50, "maxSize": 200}]),
            vec!["img/deep/raw.png", "img/pic.jpg", "notes"],
        ),
        (
            "ext",
            json!([{"type": "Extension", "include": ["txt", "png"], "exclude": ["png"]}]),
            vec!["big.TXT", "small.txt"],
        ),
        (
            "glob",
            json!([{"type": "Path", "include": ["*.txt", "img/**"], "exclude": ["**/*.png"]}]),
            vec!["img/pic.jpg", "small.txt"],
        ),
        (
            "mtime",
            json!([{"type": "ModTime", "after": "2022-04-15T05:20:00Z", "before": "2025-06-15T17:06:40+02:00"}]),
            vec!["big.TXT", "img/deep/raw.png", "img/pic.jpg"],
        ),
    ];
    for (name, filters, want) in cases {
        let t = task(
            diff(),
            filters,
            json!({"noEmptyDirectories": true}),
            &source,
            "",
            &[(&dest, name)],
        );
        let o = run(&agent, t, &source, &[&dest]).await;
        let n = want.len() as u64;
        assert_eq!(counts(&o), (5, n, 5 - n, 0, 0), "{name}: {:?}", o.errors);
        assert_eq!(tree(&dir.path().join("dst").join(name)), want, "{name}");
    }
    // A bad glob is the call's error.
    let t = task(
        diff(),
        json!([{"type": "Path", "include": ["a[b"]}]),
        json!({}),
        &source,
        "",
        &[(&dest, "x")],
    );
    let err = send(
        &agent,
        request(&agent, t, source.clone(), vec![dest.clone()]),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(code_of(&err), ErrorCode::BadArgument, "{err:?}");
    assert!(err.message().contains("filters[0]"), "{err:?}");
    agent.stop().await;
}

#[tokio::test]
async fn delete_source_moves_verified_files() {
    let agent = TestAgent::start().await;
    let server = S3Server::start(&[BUCKET]).await;
    let dir = tempfile::tempdir().unwrap();
    let src_root = dir.path().join("src");
    write(&src_root.join("in/a.txt"), b"a");
    write(&src_root.join("in/d/b.txt"), b"bb");
    write(&src_root.join("in/keep.log"), b"log");
    let source = local(SRC, &src_root);
    let fs = local(DST, &dir.path().join("dst"));
    let bucket = s3(DST_S3, &server, "");
    let t = task(
        diff(),
        json!([{"type": "Extension", "exclude": ["log"]}]),
        json!({"deleteSource": true}),
        &source,
        "in",
        &[(&fs, "out"), (&bucket, "out")],
    );
    let o = run(&agent, t, &source, &[&fs, &bucket]).await;
    assert_eq!(counts(&o), (3, 2, 1, 0, 0), "{:?}", o.errors);
    assert_eq!(tree(&src_root), ["in/keep.log"]);
    assert_eq!(tree(&dir.path().join("dst/out")), ["a.txt", "d/b.txt"]);
    assert_eq!(
        std::fs::read(server.object_path(BUCKET, "out/d/b.txt")).unwrap(),
        b"bb"
    );

    // Already identical everywhere counts as held: moved without copying.
    write(&src_root.join("in/a.txt"), b"a");
    set_mtime(
        &src_root.join("in/a.txt"),
        mtime_secs(&dir.path().join("dst/out/a.txt")),
    );
    let t = task(
        diff(),
        json!([]),
        json!({"deleteSource": true}),
        &source,
        "in",
        &[(&fs, "out")],
    );
    // Same size and second: skipped, then deleted from the source (keep.log is copied).
    let o = run(&agent, t, &source, &[&fs]).await;
    assert_eq!(counts(&o), (2, 1, 1, 0, 0), "{:?}", o.errors);
    assert_eq!(tree(&src_root), Vec::<String>::new());

    // Diff on existence only: a destination file of another size is left alone, and so is
    // the source.
    write(&src_root.join("in/a.txt"), b"a new version");
    let t = task(
        json!({"type": "Diff"}),
        json!([]),
        json!({"deleteSource": true}),
        &source,
        "in",
        &[(&fs, "out")],
    );
    let o = run(&agent, t, &source, &[&fs]).await;
    assert_eq!(counts(&o), (1, 0, 1, 0, 0), "{:?}", o.errors);
    assert_eq!(tree(&src_root), ["in/a.txt"]);
    assert!(
        o.errors.iter().any(|e| e.contains("kept")),
        "{:?}",
        o.errors
    );
    agent.stop().await;
}

#[tokio::test]
async fn delete_extraneous_respects_max_delete_filters_and_failures() {
    let agent = TestAgent::start().await;
    let dir = tempfile::tempdir().unwrap();
    let src_root = dir.path().join("src");
    let dst_root = dir.path().join("dst");
    write(&src_root.join("a.txt"), b"a");
    write(&src_root.join("skip.bin"), b"filtered out but present");
    let source = local(SRC, &src_root);
    // The destination space keeps its shards under `m/wd`: never touched.
    let dest = local_spec(DST, 1, &dst_root, "m/wd", 0);
    for f in ["x1.txt", "x2.txt", "d/x3.txt", "skip.bin", "other.bin"] {
        write(&dst_root.join("m").join(f), b"extra");
    }
    write(&dst_root.join("m/wd/shards/ab/abc"), b"shard");
    write(&dst_root.join("m/wd/tmp/t"), b"tmp");
    let t = task(
        diff(),
        json!([{"type": "Extension", "include": ["txt"]}]),
        json!({"deleteExtraneous": true, "maxDelete": 2, "noEmptyDirectories": true}),
        &source,
        "",
        &[(&dest, "m")],
    );
    let o = run(&agent, t.clone(), &source, &[&dest]).await;
    assert_eq!(counts(&o), (2, 1, 1, 0, 2), "{:?}", o.errors);
    assert!(
        o.errors.iter().any(|e| e.contains("maxDelete (2)")),
        "{:?}",
        o.errors
    );
    let o = run(&agent, t.clone(), &source, &[&dest]).await;
    assert_eq!(counts(&o), (2, 0, 2, 0, 1), "{:?}", o.errors);
    // `other.bin` does not pass the filters, `skip.bin` is in the source: both stay.
    assert_eq!(
        tree(&dst_root.join("m")),
        [
            "a.txt",
            "other.bin",
            "skip.bin",
            "wd/shards/ab/abc",
            "wd/tmp/t"
        ]
    );

    // A run with a failing destination (an S3 endpoint nobody listens on) deletes nothing.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let broken = s3_spec(DST_S3, 1, &dead, BUCKET, SECRET_KEY, "", 0);
    write(&dst_root.join("m/x4.txt"), b"extra");
    write(&src_root.join("b.txt"), b"b");
    let t = task(
        diff(),
        json!([]),
        json!({"deleteExtraneous": true}),
        &source,
        "",
        &[(&dest, "m"), (&broken, "m")],
    );
    let started = std::time::Instant::now();
    let o = run(&agent, t, &source, &[&dest, &broken]).await;
    assert_eq!(counts(&o), (3, 0, 0, 3, 0), "{:?}", o.errors);
    assert!(started.elapsed() < Duration::from_secs(10));
    // The fs destination got its copies, and nothing was deleted.
    assert!(dst_root.join("m/b.txt").is_file());
    assert!(dst_root.join("m/x4.txt").is_file());
    assert!(
        o.errors.iter().any(|e| e.contains("user space 3")),
        "{:?}",
        o.errors
    );
    assert!(
        o.errors
            .iter()
            .any(|e| e.contains("deleteExtraneous skipped")),
        "{:?}",
        o.errors
    );
    agent.stop().await;
}

#[tokio::test]
async fn delete_extraneous_merges_sorted_listings_of_many_files() {
    let agent = TestAgent::start().await;
    let dir = tempfile::tempdir().unwrap();
    let src_root = dir.path().join("src");
    let dst_root = dir.path().join("dst");
    // 2,000 source files in nested folders whose names sort around '/' ("a", "a.x", "a0")
    // and 700 extraneous destination files interleaved with them.
    let mut extraneous = 0;
    for i in 0..2000 {
        let folder = ["a", "a.x", "a0", "b/c"][i % 4];
        write(&src_root.join(format!("{folder}/f{i:05}")), b"s");
        write(&dst_root.join(format!("{folder}/f{i:05}")), b"s");
        if i % 3 == 0 && extraneous < 700 {
            write(&dst_root.join(format!("{folder}/f{i:05}.old")), b"x");
            extraneous += 1;
        }
    }
    write(&dst_root.join("a/zzz"), b"x");
    write(&dst_root.join("a-"), b"x");
    write(&dst_root.join("b/c/d/e"), b"x");
    extraneous += 3;
    let source = local(SRC, &src_root);
    let dest = local(DST, &dst_root);
    let t = task(
        json!({"type": "Diff", "includeSize": true, "includeModTime": false}),
        json!([]),
        json!({"deleteExtraneous": true, "maxDelete": 100_000, "noEmptyDirectories": true}),
        &source,
        "",
        &[(&dest, "")],
    );
    let o = run(&agent, t, &source, &[&dest]).await;
    assert_eq!(counts(&o), (2000, 0, 2000, 0, extraneous), "{:?}", o.errors);
    assert_eq!(tree(&dst_root), tree(&src_root));
    agent.stop().await;
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_pass() {
    let agent = TestAgent::start().await;
    let server = S3Server::start(&[BUCKET]).await;
    let dir = tempfile::tempdir().unwrap();
    let src_root = dir.path().join("src");
    let data = pattern(64 * 1024);
    for i in 0..500 {
        write(
            &src_root.join(format!("many/{:02}/f{i}.bin", i % 10)),
            &data,
        );
    }
    let source = local(SRC, &src_root);
    let fs = local(DST, &dir.path().join("dst"));
    let bucket = s3(DST_S3, &server, "");
    let t = task(
        json!({"type": "Full"}),
        json!([]),
        json!({"deleteExtraneous": true}),
        &source,
        "many",
        &[(&fs, "out"), (&bucket, "out")],
    );
    write(&dir.path().join("dst/out/extra.bin"), b"x");
    let req = request(&agent, t, source.clone(), vec![fs.clone(), bucket.clone()]);
    let mut client = agent.client.clone();
    let mut stream = client.run_sync(req).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(!first.done);
    drop(stream);

    // The pass stops: the copies settle well short of 500 with no temp file left.
    let fs_out = dir.path().join("dst/out");
    let mut last = usize::MAX;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = files_under(&fs_out).len();
        if now == last && temps(&fs_out).is_empty() {
            break;
        }
        last = now;
    }
    assert!(temps(&fs_out).is_empty());
    let copied = files_under(&fs_out).len();
    assert!(copied < 500, "{copied} files copied after the cancel");
    assert!(dir.path().join("dst/out/extra.bin").is_file());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(files_under(&fs_out).len(), copied);
    assert!(server.files(BUCKET, "out").len() < 500);
    agent.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused() {
    let agent = TestAgent::start().await;
    let dir = tempfile::tempdir().unwrap();
    let src_root = dir.path().join("src");
    write(&src_root.join("d/a.txt"), b"a");
    let source = local(SRC, &src_root);
    let dest = local(DST, &dir.path().join("dst"));
    let t = task(diff(), json!([]), json!({}), &source, "d", &[(&dest, "")]);
    let good = request(&agent, t.clone(), source.clone(), vec![dest.clone()]);
    let refused = |code: ErrorCode, needle: &'static str| {
        move |r: Result<Outcome, Status>| {
            let err = r.err().expect("accepted");
            assert_eq!(code_of(&err), code, "{err:?}");
            assert!(err.message().contains(needle), "{needle}: {err:?}");
        }
    };

    let mut bad_sig = good.clone();
    bad_sig.ticket.as_mut().unwrap().signature[0] ^= 1;
    refused(ErrorCode::Unauthenticated, "signature")(send(&agent, bad_sig).await);

    // Anything changed after signing: task, source or a destination.
    let mut other_task = good.clone();
    other_task.task_json = task(
        json!({"type": "Full"}),
        json!([]),
        json!({}),
        &source,
        "d",
        &[(&dest, "")],
    );
    refused(ErrorCode::Unauthenticated, "not issued")(send(&agent, other_task).await);
    let mut other_dest = good.clone();
    other_dest.destinations[0].working_dir = "elsewhere".into();
    refused(ErrorCode::Unauthenticated, "not issued")(send(&agent, other_dest).await);

    let mut wrong_kind = good.clone();
    wrong_kind.ticket = Some(agent.ticket(&TicketBody {
        shard_hash: agent::sync::request_digest(&t, &source, std::slice::from_ref(&dest)),
        ..body(Kind::ListFiles, SRC)
    }));
    refused(ErrorCode::PermissionDenied, "KIND_SYNC")(send(&agent, wrong_kind).await);

    let bad_json = request(
        &agent,
        "{not json".into(),
        source.clone(),
        vec![dest.clone()],
    );
    refused(ErrorCode::BadArgument, "invalid task_json")(send(&agent, bad_json).await);
    let mismatch = task(diff(), json!([]), json!({}), &source, "d", &[(&source, "")]);
    let r = send(
        &agent,
        request(&agent, mismatch, source.clone(), vec![dest.clone()]),
    )
    .await;
    refused(ErrorCode::BadArgument, "destinations")(r);
    let bad_spec = SpaceSpec {
        storage_json: r#"{"type":"S3","endpoint":"http://h"}"#.into(),
        ..dest.clone()
    };
    let r = send(
        &agent,
        request(&agent, t.clone(), source.clone(), vec![bad_spec]),
    )
    .await;
    refused(ErrorCode::BadArgument, "destinations[0]")(r);

    let missing = task(
        diff(),
        json!([]),
        json!({}),
        &source,
        "nope",
        &[(&dest, "")],
    );
    let r = send(
        &agent,
        request(&agent, missing, source.clone(), vec![dest.clone()]),
    )
    .await;
    refused(ErrorCode::NotFound, "\"nope\" does not exist")(r);

    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = s3_spec(
        SRC,
        1,
        &format!("http://{}", closed.local_addr().unwrap()),
        BUCKET,
        SECRET_KEY,
        "",
        0,
    );
    drop(closed);
    let t_dead = task(diff(), json!([]), json!({}), &dead, "", &[(&dest, "")]);
    let r = send(
        &agent,
        request(&agent, t_dead, dead.clone(), vec![dest.clone()]),
    )
    .await;
    let err = r.err().expect("accepted");
    assert_eq!(code_of(&err), ErrorCode::Unavailable, "{err:?}");

    // The good request still runs.
    let o = send(&agent, good).await.unwrap();
    assert_eq!(counts(&o), (1, 1, 0, 0, 0));
    assert!(o.messages >= 1);
    agent.stop().await;
}
