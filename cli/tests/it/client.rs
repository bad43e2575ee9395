//! The real `jcs` client commands against a real `jcs standalone`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use super::{Standalone, free_port, start, terminate};

struct Env {
    s: Standalone,
    dir: tempfile::TempDir,
}

impl Env {
    async fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let s = start(&dir.path().join("data"), free_port()).await;
        Env { s, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_jcs"));
        c.env("JCS_URL", &self.s.base)
            .env("JCS_STATE_DIR", self.path("state"))
            .env("JCS_CONFIG", self.path("no-config.toml"))
            .env_remove("JCS_TEST_ABORT_AFTER_PARTS");
        // An absent explicit config file is an error: give it an empty one.
        std::fs::write(self.path("no-config.toml"), "").unwrap();
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Run and expect exit code `code`; returns stdout.
    fn expect(&self, code: i32, args: &[&str]) -> String {
        crate::stdout_of(self.run(args), code, args)
    }

    fn ok(&self, args: &[&str]) -> String {
        self.expect(0, args)
    }

    fn json_lines(&self, args: &[&str]) -> Vec<Value> {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        self.ok(&a)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn setup(&self) {
        self.ok(&["bucket", "create", "b"]);
        self.ok(&["package", "create", "jcs://b/p"]);
    }

    fn finish(self) {
        terminate(self.s);
    }
}

/// Deterministic but not repetitive content.
fn content(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn files_under(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn cp_copies_a_tree_up_and_down_byte_identical() {
    let env = Env::new().await;
    env.setup();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    std::fs::write(src.join("top.txt"), b"top").unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::fs::write(src.join("a/b/deep name.bin"), content(70_000, 1)).unwrap();
    // Above the threshold: goes through multipart.
    std::fs::write(src.join("a/big.bin"), content(1_300_000, 2)).unwrap();
    for i in 0..20 {
        std::fs::write(
            src.join(format!("a/f{i:02}")),
            content(1000 + i, 3 + i as u32),
        )
        .unwrap();
    }
    let src_s = src.to_str().unwrap();
    let reports = env.json_lines(&[
        "cp",
        "-r",
        "--jobs",
        "4",
        "--multipart-threshold",
        "1MiB",
        "--part-size",
        "300KiB",
        src_s,
        "jcs://b/p/tree",
    ]);
    assert_eq!(reports.len(), 24, "{reports:?}");
    let big = reports
        .iter()
        .find(|r| r["path"] == "tree/a/big.bin")
        .unwrap();
    assert_eq!(big["uploadedParts"], 5, "{big}");
    assert_eq!(big["bytes"], 1_300_000);

    let listed = env.json_lines(&["ls", "-r", "jcs://b/p/tree/"]);
    assert_eq!(listed.len(), 24);
    assert!(listed.iter().all(|o| o["redundancy"]["type"] == "none"));

    let dl = env.path("dl");
    env.ok(&["-q", "cp", "-r", "jcs://b/p/tree", dl.to_str().unwrap()]);
    assert_eq!(files_under(&src), files_under(&dl));

    // A single file, into an existing directory and to an explicit name.
    env.ok(&["cp", "jcs://b/p/tree/a/big.bin", dl.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(dl.join("big.bin")).unwrap(),
        content(1_300_000, 2)
    );
    // Uploading over an existing object with multipart replaces it.
    let f = env.path("new.bin");
    std::fs::write(&f, content(1_100_000, 9)).unwrap();
    env.ok(&[
        "cp",
        "--multipart-threshold",
        "1MiB",
        "--part-size",
        "512KiB",
        f.to_str().unwrap(),
        "jcs://b/p/tree/a/big.bin",
    ]);
    let out = env.path("again.bin");
    env.ok(&["cp", "jcs://b/p/tree/a/big.bin", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), content(1_100_000, 9));
    assert_eq!(env.json_lines(&["ls", "-r", "jcs://b/p/tree/"]).len(), 24);
    env.finish();
}

#[tokio::test]
async fn packed_uploads_report_every_file_and_retry_a_failed_pack_file_by_file() {
    let env = Env::new().await;
    env.setup();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..10 {
        std::fs::write(
            src.join(format!("d/f{i}")),
            content(5000 + i, 40 + i as u32),
        )
        .unwrap();
    }
    // Packs of 4 files: d/f0..f3, d/f4..f7, d/f8 + d/f9.
    let up = env.json_lines(&[
        "cp",
        "-r",
        "--pack-files",
        "4",
        src.to_str().unwrap(),
        "jcs://b/p/t",
    ]);
    assert_eq!(up.len(), 10, "{up:?}");
    let bytes: u64 = up.iter().map(|r| r["bytes"].as_u64().unwrap()).sum();
    assert_eq!(bytes, (0..10).map(|i| 5000 + i).sum::<u64>());
    let mut ids: Vec<u64> = up.iter().map(|r| r["objectID"].as_u64().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10, "{up:?}");
    let listed = env.json_lines(&["ls", "-r", "jcs://b/p/t/"]);
    let by_path: std::collections::BTreeMap<String, u64> = listed
        .iter()
        .map(|o| {
            (
                o["path"].as_str().unwrap().to_owned(),
                o["objectID"].as_u64().unwrap(),
            )
        })
        .collect();
    for r in &up {
        assert_eq!(
            by_path[r["path"].as_str().unwrap()],
            r["objectID"].as_u64().unwrap()
        );
    }

    // A file name the gateway refuses (a backslash) fails its whole pack; the pack is then
    // retried file by file: the others are uploaded, the error names the bad file.
    let bad = env.path("bad");
    std::fs::create_dir_all(&bad).unwrap();
    for i in 0..5 {
        std::fs::write(bad.join(format!("g{i}")), content(100 + i, i as u32)).unwrap();
    }
    std::fs::write(bad.join("g2\\x"), b"refused").unwrap();
    let out = env.run(&["--json", "cp", "-r", bad.to_str().unwrap(), "jcs://b/p/bad"]);
    // Exit code 4: some files failed.
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l.get("path").is_some())
        .collect();
    assert_eq!(lines.len(), 6, "{lines:?}");
    let failed: Vec<&Value> = lines.iter().filter(|l| l.get("error").is_some()).collect();
    assert_eq!(failed.len(), 1, "{lines:?}");
    assert!(
        failed[0]["path"].as_str().unwrap().ends_with("g2\\x"),
        "{failed:?}"
    );
    let listed = env.json_lines(&["ls", "-r", "jcs://b/p/bad/"]);
    let mut paths: Vec<&str> = listed.iter().map(|o| o["path"].as_str().unwrap()).collect();
    paths.sort();
    assert_eq!(paths, ["bad/g0", "bad/g1", "bad/g2", "bad/g3", "bad/g4"]);
    env.finish();
}

#[tokio::test]
async fn ls_pages_through_the_whole_listing() {
    let env = Env::new().await;
    env.setup();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..23 {
        std::fs::write(src.join(format!("f{i:02}")), format!("{i}")).unwrap();
    }
    std::fs::write(src.join("d/x"), b"x").unwrap();
    env.ok(&["cp", "-r", src.to_str().unwrap(), "jcs://b/p"]);

    // 24 objects, 5 per page: five pages.
    let all = env.json_lines(&["ls", "-r", "--page-size", "5", "jcs://b/p"]);
    let paths: Vec<&str> = all.iter().map(|o| o["path"].as_str().unwrap()).collect();
    let mut want: Vec<String> = (0..23).map(|i| format!("f{i:02}")).collect();
    want.insert(0, "d/x".into());
    assert_eq!(paths, want);

    // One level: the directory folds into a prefix.
    let top = env.json_lines(&["ls", "--page-size", "4", "jcs://b/p"]);
    assert_eq!(top.len(), 24);
    assert_eq!(top[0], serde_json::json!({"prefix": "d/"}));
    // A prefix, and long format.
    let long = env.ok(&["ls", "-l", "jcs://b/p/f1"]);
    let lines: Vec<&str> = long.lines().collect();
    assert_eq!(lines.len(), 10, "{long}");
    assert!(lines[0].trim_start().starts_with("2 "), "{long}");
    assert!(lines[0].ends_with(" f10"), "{long}");
    // Buckets and packages.
    assert_eq!(env.ok(&["ls"]), "b\n");
    assert_eq!(env.ok(&["ls", "jcs://b"]), "p\n");
    env.finish();
}

#[tokio::test]
async fn rm_and_mv_change_objects_and_report_failures() {
    let env = Env::new().await;
    env.setup();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("dir")).unwrap();
    for n in ["a", "b", "dir/1", "dir/2"] {
        std::fs::write(src.join(n), n).unwrap();
    }
    env.ok(&["cp", "-r", src.to_str().unwrap(), "jcs://b/p"]);

    env.ok(&["mv", "jcs://b/p/a", "jcs://b/p/moved/a2"]);
    // The target is taken: exit 4, the source stays.
    env.expect(4, &["mv", "jcs://b/p/b", "jcs://b/p/moved/a2"]);
    env.ok(&["mv", "-r", "jcs://b/p/dir", "jcs://b/p/dir2/"]);
    let paths: Vec<String> = env
        .json_lines(&["ls", "-r", "jcs://b/p"])
        .iter()
        .map(|o| o["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paths, ["b", "dir2/1", "dir2/2", "moved/a2"]);
    let got = env.path("a2");
    env.ok(&["cp", "jcs://b/p/moved/a2", got.to_str().unwrap()]);
    assert_eq!(std::fs::read(&got).unwrap(), b"a");

    env.ok(&["rm", "jcs://b/p/b"]);
    env.expect(3, &["rm", "jcs://b/p/b"]);
    let deleted = env.json_lines(&["rm", "-r", "jcs://b/p/dir2"]);
    assert_eq!(deleted.len(), 2);
    let left = env.json_lines(&["ls", "-r", "jcs://b/p"]);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["path"], "moved/a2");

    // Clone between packages.
    env.ok(&["package", "create", "jcs://b/q"]);
    env.ok(&["cp", "jcs://b/p/moved/a2", "jcs://b/q/"]);
    assert_eq!(env.json_lines(&["ls", "-r", "jcs://b/q"])[0]["path"], "a2");
    env.ok(&["package", "rm", "jcs://b/q"]);
    env.expect(3, &["ls", "jcs://b/q"]);
    env.finish();
}

#[tokio::test]
async fn an_interrupted_multipart_upload_resumes_from_its_parts() {
    let env = Env::new().await;
    env.setup();
    let f = env.path("big.bin");
    let data = content(1_000_000, 42);
    std::fs::write(&f, &data).unwrap();
    let args = [
        "--json",
        "cp",
        "--jobs",
        "1",
        "--multipart-threshold",
        "100KiB",
        "--part-size",
        "100KiB",
        f.to_str().unwrap(),
        "jcs://b/p/big.bin",
    ];
    let out = env
        .cmd()
        .args(args)
        .env("JCS_TEST_ABORT_AFTER_PARTS", "4")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // The unfinished object is visible as a multipart upload.
    let listed = env.json_lines(&["ls", "jcs://b/p/big.bin"]);
    assert_eq!(listed[0]["redundancy"]["type"], "multipartUpload");
    let state: Vec<_> = std::fs::read_dir(env.path("state/uploads"))
        .unwrap()
        .collect();
    assert_eq!(state.len(), 1);

    let report = env.json_lines(&args[1..]);
    assert_eq!(report.len(), 1);
    assert_eq!(report[0]["resumedParts"], 4, "{report:?}");
    assert_eq!(report[0]["uploadedParts"], 6, "{report:?}");
    assert_eq!(report[0]["objectID"], listed[0]["objectID"]);
    let got = env.path("got.bin");
    env.ok(&["cp", "jcs://b/p/big.bin", got.to_str().unwrap()]);
    assert_eq!(std::fs::read(&got).unwrap(), data);
    // The state file is gone once the upload is complete.
    assert_eq!(
        std::fs::read_dir(env.path("state/uploads"))
            .unwrap()
            .count(),
        0
    );
    env.finish();
}

#[tokio::test]
async fn downloads_resume_from_a_partial_file_and_check_the_hash() {
    let env = Env::new().await;
    env.setup();
    let f = env.path("obj.bin");
    // Larger than one chunk: objects of at most 1 MiB are fetched whole, never resumed.
    let data = content(1_600_000, 7);
    std::fs::write(&f, &data).unwrap();
    let up = env.json_lines(&["cp", f.to_str().unwrap(), "jcs://b/p/obj.bin"]);
    assert_eq!(up[0]["bytes"], 1_600_000);
    let listed = env.json_lines(&["ls", "jcs://b/p/obj.bin"]);
    let hash = listed[0]["fileHash"].as_str().unwrap();
    let dest = env.path("out.bin");
    let partial = env.path(&format!(".out.bin.{}.jcs-part", &hash[4..20]));

    std::fs::write(&partial, &data[..250_000]).unwrap();
    let r = env.json_lines(&["cp", "jcs://b/p/obj.bin", dest.to_str().unwrap()]);
    assert_eq!(r[0]["resumedBytes"], 250_000, "{r:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert!(!partial.exists());

    // A corrupt partial file is detected, removed, and the next try succeeds.
    std::fs::remove_file(&dest).unwrap();
    std::fs::write(&partial, vec![0u8; 1000]).unwrap();
    env.expect(1, &["cp", "jcs://b/p/obj.bin", dest.to_str().unwrap()]);
    assert!(!partial.exists() && !dest.exists());
    env.ok(&["cp", "jcs://b/p/obj.bin", dest.to_str().unwrap()]);
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    env.finish();
}

#[tokio::test]
async fn small_downloads_are_whole_and_replace_a_partial_file() {
    let env = Env::new().await;
    env.setup();
    let f = env.path("small.bin");
    let data = content(300_000, 9);
    std::fs::write(&f, &data).unwrap();
    env.ok(&["cp", f.to_str().unwrap(), "jcs://b/p/small.bin"]);
    let listed = env.json_lines(&["ls", "jcs://b/p/small.bin"]);
    let hash = listed[0]["fileHash"].as_str().unwrap();
    let dest = env.path("new/dir/small.bin");
    std::fs::create_dir_all(env.path("new/dir")).unwrap();
    let partial = env.path(&format!("new/dir/.small.bin.{}.jcs-part", &hash[4..20]));
    std::fs::write(&partial, vec![0u8; 400_000]).unwrap();
    let r = env.json_lines(&["cp", "jcs://b/p/small.bin", dest.to_str().unwrap()]);
    assert_eq!(r[0]["bytes"], 300_000, "{r:?}");
    assert!(r[0].get("resumedBytes").is_none(), "{r:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert!(!partial.exists());
    // Into a directory that does not exist yet.
    let deep = env.path("a/b/c/small.bin");
    env.ok(&["cp", "jcs://b/p/small.bin", deep.to_str().unwrap()]);
    assert_eq!(std::fs::read(&deep).unwrap(), data);
    env.finish();
}

#[tokio::test]
async fn json_output_and_exit_codes_are_stable() {
    let env = Env::new().await;
    let b = env.json_lines(&["bucket", "create", "b"]);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0]["name"], "b");
    assert!(b[0]["bucketID"].as_u64().unwrap() > 0);
    let p = env.json_lines(&["package", "create", "jcs://b/p"]);
    assert_eq!(p[0]["name"], "p");
    assert_eq!(p[0]["bucketID"], b[0]["bucketID"]);
    assert!(p[0]["createTime"].is_string());

    // Conflict: the name is taken.
    let out = env.run(&["--json", "bucket", "create", "b"]);
    assert_eq!(out.status.code(), Some(4));
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["error"]["kind"], "AlreadyExists", "{err}");
    assert_eq!(err["error"]["exitCode"], 4);
    // Not found.
    let out = env.run(&["--json", "cp", "jcs://b/p/missing", "x"]);
    assert_eq!(out.status.code(), Some(3));
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["error"]["kind"], "NotFound");
    env.expect(3, &["ls", "jcs://nobucket"]);
    env.expect(3, &["bucket", "rm", "nobucket"]);
    // Usage: unknown flag, local-to-local copy, a directory without -r.
    env.expect(2, &["ls", "--bogus"]);
    env.expect(2, &["cp", "a", "b"]);
    std::fs::create_dir_all(env.path("d")).unwrap();
    env.expect(2, &["cp", env.path("d").to_str().unwrap(), "jcs://b/p"]);
    // An unreachable gateway is a plain error.
    let out = env
        .cmd()
        .env("JCS_URL", format!("http://127.0.0.1:{}", free_port()))
        .args(["ls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // The config file supplies the URL when neither flag nor env does.
    let cfg = env.path("cfg.toml");
    std::fs::write(&cfg, format!("url = \"{}\"\n", env.s.base)).unwrap();
    let out = env
        .cmd()
        .env_remove("JCS_URL")
        .args(["--config-file", cfg.to_str().unwrap(), "ls"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "b\n", "{out:?}");

    let comp = env.ok(&["completions", "bash"]);
    assert!(
        comp.contains("_jcs()") && comp.contains("standalone"),
        "{comp}"
    );
    env.finish();
}

#[tokio::test]
async fn user_spaces_and_sync_tasks_from_the_cli() {
    let env = Env::new().await;
    let root = env.path("spaces");
    std::fs::create_dir_all(root.join("src/sub")).unwrap();
    std::fs::create_dir_all(root.join("dst")).unwrap();
    std::fs::write(root.join("src/one.txt"), b"one").unwrap();
    std::fs::write(root.join("src/sub/two.txt"), b"two").unwrap();
    let root_s = root.to_str().unwrap();

    env.ok(&["space", "test", "--type", "Local", "--path", root_s]);
    let spec = env.path("space.toml");
    std::fs::write(
        &spec,
        format!("name = \"s1\"\n[storage]\ntype = \"Local\"\npath = {root_s:?}\n[credential]\ntype = \"Local\"\n"),
    )
    .unwrap();
    let s1 = env.json_lines(&["space", "create", "--file", spec.to_str().unwrap()]);
    let id1 = s1[0]["userSpaceID"].as_u64().unwrap();
    assert_eq!(s1[0]["name"], "s1");
    let id1s = id1.to_string();
    let got = env.json_lines(&["space", "get", &id1s]);
    assert_eq!(got[0]["revision"], 1);
    let upd = env.json_lines(&["space", "update", &id1s, "--name", "s1b"]);
    assert_eq!(upd[0]["name"], "s1b");
    assert_eq!(upd[0]["revision"], 2);

    let task_file = env.path("task.json");
    std::fs::write(
        &task_file,
        serde_json::json!({
            "trigger": {"type": "Once"},
            "mode": {"type": "Diff", "includeSize": true, "includeModTime": false},
            "srcUserSpaceID": id1, "srcPath": "src",
            "destUserSpaceIDs": [id1], "destPathes": ["dst"]
        })
        .to_string(),
    )
    .unwrap();
    let t = env.json_lines(&["sync", "create", "--file", task_file.to_str().unwrap()]);
    let tid = t[0]["taskID"].as_u64().unwrap().to_string();
    // --watch returns once the run is over; the last line is the whole task.
    let lines = env.json_lines(&["sync", "status", "--watch", "--interval", "0.1", &tid]);
    let task = lines.last().unwrap();
    assert_eq!(task["status"]["state"], "Idle", "{task}");
    assert_eq!(task["status"]["runs"][0]["filesCopied"], 2, "{task}");
    assert_eq!(std::fs::read(root.join("dst/sub/two.txt")).unwrap(), b"two");
    env.ok(&["sync", "cancel", &tid]);
    let st = env.json_lines(&["sync", "status", &tid]);
    assert_eq!(st[0]["status"]["state"], "Cancelled");
    env.expect(3, &["sync", "status", "999"]);

    // `create --wait` long-polls until the run is recorded and prints the settled task.
    std::fs::write(root.join("src/three.txt"), b"three").unwrap();
    let waited = env.json_lines(&[
        "sync",
        "create",
        "--wait",
        "--file",
        task_file.to_str().unwrap(),
    ]);
    let task = waited.last().unwrap();
    assert_eq!(task["status"]["state"], "Idle", "{task}");
    assert_eq!(task["status"]["runs"][0]["result"], "Succeeded", "{task}");
    assert_eq!(task["status"]["runs"][0]["filesCopied"], 1, "{task}");
    assert_eq!(std::fs::read(root.join("dst/three.txt")).unwrap(), b"three");

    env.ok(&["space", "rm", &id1s]);
    env.expect(3, &["space", "get", &id1s]);
    env.finish();
}
