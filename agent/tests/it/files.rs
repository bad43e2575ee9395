//! Package import/export RPCs over real gRPC: ListFiles, ImportFile and ExportFile between
//! filesystem spaces and S3 spaces (in-process s3s-fs), on one agent and across two agents
//! sharing the cluster secret.

use std::path::Path;

use common::ErrorCode;
use common::error::code_of;
use common::secret::Secret;
use futures::TryStreamExt;
use proto::agent::{
    ExportFileRequest, GetShardRequest, ImportFileRequest, ListFilesRequest, PutShardResponse,
};
use proto::common::ticket_body::Kind;
use proto::common::{SpaceSpec, Ticket, TicketBody};
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::harness::*;
use crate::s3::{S3Server, SECRET_KEY};

const MIB: usize = 1024 * 1024;
const BUCKET: &str = "jcs-bucket";
/// Bucket of the space without a shard store (working dir = bucket root).
const PLAIN_BUCKET: &str = "jcs-plain";
/// The declared fs space of every test agent.
const FS: u64 = FIRST_SPACE_ID;
/// S3 space storing shards under working dir `w1` of `BUCKET`.
const S3: u64 = 500;
/// S3 space without a shard store on `PLAIN_BUCKET`.
const S3_PLAIN: u64 = 501;
/// Local API space whose working dir is `jcs` inside its directory.
const LOCAL_WD: u64 = 600;

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn file_body(kind: Kind, space: u64, path: &str) -> TicketBody {
    TicketBody {
        file_path: path.to_owned(),
        ..body(kind, space)
    }
}

/// `(path, full_path, size)` of every listed file, sorted.
async fn list_files(
    agent: &TestAgent,
    ticket: Ticket,
) -> Result<Vec<(String, String, u64)>, Status> {
    let mut client = agent.client.clone();
    let stream = client
        .list_files(ListFilesRequest {
            ticket: Some(ticket),
        })
        .await?
        .into_inner();
    let batches: Vec<_> = stream.try_collect().await?;
    let files: Vec<_> = batches.into_iter().flat_map(|b| b.files).collect();
    assert!(files.iter().all(|f| f.modified_ms > 0), "{files:?}");
    let mut out: Vec<_> = files
        .into_iter()
        .map(|f| (f.path, f.full_path, f.size))
        .collect();
    out.sort();
    Ok(out)
}

async fn list(
    agent: &TestAgent,
    space: u64,
    path: &str,
) -> Result<Vec<(String, String, u64)>, Status> {
    list_files(
        agent,
        agent.ticket(&file_body(Kind::ListFiles, space, path)),
    )
    .await
}

fn entry(path: &str, full: &str, size: usize) -> (String, String, u64) {
    (path.to_owned(), full.to_owned(), size as u64)
}

async fn import_file(
    on: &TestAgent,
    read: TicketBody,
    dest: &str,
    put: TicketBody,
) -> Result<PutShardResponse, Status> {
    let mut client = on.client.clone();
    client
        .import_file(ImportFileRequest {
            read_ticket: Some(on.ticket(&read)),
            dest_agent_address: dest.to_owned(),
            put_ticket: Some(on.ticket(&put)),
        })
        .await
        .map(|r| r.into_inner())
}

/// Import file `path` of `space` on `on` into `dest_space` of `dest`.
async fn import(
    on: &TestAgent,
    space: u64,
    path: &str,
    dest: &TestAgent,
    dest_space: u64,
) -> Result<PutShardResponse, Status> {
    import_file(
        on,
        file_body(Kind::ReadFile, space, path),
        &dest.address,
        put_body(dest_space, 0),
    )
    .await
}

async fn export_file(
    on: &TestAgent,
    write: TicketBody,
    source: &str,
    get: TicketBody,
    size: u64,
    sha256: &str,
) -> Result<u64, Status> {
    let mut client = on.client.clone();
    client
        .export_file(ExportFileRequest {
            write_ticket: Some(on.ticket(&write)),
            source_agent_address: source.to_owned(),
            get_ticket: Some(on.ticket(&get)),
            size,
            sha256: sha256.to_owned(),
        })
        .await
        .map(|r| r.into_inner().size)
}

/// Export shard `hash` (`size` bytes) of `src_space` on `source` as file `path` of
/// `space` on `on`.
async fn export(
    on: &TestAgent,
    space: u64,
    path: &str,
    source: &TestAgent,
    src_space: u64,
    hash: &str,
    size: u64,
) -> Result<u64, Status> {
    export_file(
        on,
        file_body(Kind::WriteFile, space, path),
        &source.address,
        get_body(src_space, hash),
        size,
        hash,
    )
    .await
}

async fn put(agent: &TestAgent, space: u64, data: &[u8]) -> String {
    let mut client = agent.client.clone();
    let resp = client
        .put_shard(futures::stream::iter(put_messages(
            agent.ticket(&put_body(space, 0)),
            data,
            MIB,
            true,
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.sha256, sha_hex(data));
    resp.sha256
}

async fn get(agent: &TestAgent, space: u64, hash: &str) -> Result<Vec<u8>, Status> {
    let mut client = agent.client.clone();
    let stream = client
        .get_shard(GetShardRequest {
            ticket: Some(agent.ticket(&get_body(space, hash))),
            offset: 0,
            length: 0,
        })
        .await?
        .into_inner();
    let chunks: Vec<_> = stream.try_collect().await?;
    Ok(chunks.into_iter().flat_map(|c| c.data).collect())
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

fn denied<T>(r: Result<T, Status>, what: &str) {
    let Err(err) = r else {
        panic!("{what}: accepted")
    };
    assert_eq!(
        code_of(&err),
        ErrorCode::PermissionDenied,
        "{what}: {err:?}"
    );
}

/// Names of the entries of directory `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Leftover multipart uploads of the s3s-fs server.
fn upload_leftovers(s3: &S3Server) -> Vec<String> {
    names(s3.root())
        .into_iter()
        .filter(|n| n.starts_with(".upload_id-"))
        .collect()
}

/// Agent A (fs space + the S3 spaces + a Local API space with a working dir) and agent B
/// (its own fs space), sharing one cluster secret.
struct Cluster {
    s3: S3Server,
    a: TestAgent,
    b: TestAgent,
    local_dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let s3 = S3Server::start(&[BUCKET, PLAIN_BUCKET]).await;
        let local_dir = tempfile::tempdir().unwrap();
        let fake = FakeCoordinator::default();
        fake.put_spec(s3_spec(S3, 1, &s3.endpoint(), BUCKET, SECRET_KEY, "w1", 0));
        fake.put_spec(SpaceSpec {
            stores_shards: false,
            ..s3_spec(S3_PLAIN, 1, &s3.endpoint(), PLAIN_BUCKET, SECRET_KEY, "", 0)
        });
        fake.put_spec(local_spec(LOCAL_WD, 1, local_dir.path(), "jcs", 0));
        let secret = Secret::random();
        let (a, b) = tokio::join!(
            TestAgent::start_fake_with_secret(fake, secret.clone()),
            TestAgent::start_fake_with_secret(FakeCoordinator::default(), secret),
        );
        for space in [S3, S3_PLAIN, LOCAL_WD] {
            a.wait_api_space(space, 1).await;
        }
        Cluster {
            s3,
            a,
            b,
            local_dir,
        }
    }

    async fn stop(self) {
        self.a.stop().await;
        self.b.stop().await;
    }
}

#[tokio::test]
async fn list_files_on_fs_and_s3_trees() {
    let c = Cluster::start().await;
    let (a, s3) = (&c.a, &c.s3);

    // Declared fs space: its root is the configured directory, its shards live there too.
    let big = pattern(2 * MIB + 5);
    write(&a.space_dir.join("data/a.txt"), b"abc");
    write(&a.space_dir.join("data/sub/b.bin"), &big);
    write(&a.space_dir.join("data/sub/deep/c"), b"");
    write(&a.space_dir.join("top.txt"), b"top");
    write(&a.space_dir.join("data/.jcs-tmp-leftover"), b"x");
    write(&a.space_dir.join("tmp/upload"), b"x");
    std::fs::create_dir_all(a.space_dir.join("data/empty-dir")).unwrap();
    put(a, FS, b"a shard").await;
    assert_eq!(a.stored_files().0.len(), 1);

    let data = vec![
        entry("a.txt", "data/a.txt", 3),
        entry("sub/b.bin", "data/sub/b.bin", big.len()),
        entry("sub/deep/c", "data/sub/deep/c", 0),
    ];
    assert_eq!(list(a, FS, "data").await.unwrap(), data);
    assert_eq!(list(a, FS, "data/").await.unwrap(), data);
    // The root: everything but the space's shards, temp files and export temps.
    let root: Vec<_> = data
        .iter()
        .map(|(_, full, size)| (full.clone(), full.clone(), *size))
        .chain([entry("top.txt", "top.txt", 3)])
        .collect();
    assert_eq!(list(a, FS, "").await.unwrap(), root);
    assert_eq!(
        list(a, FS, "data/sub/b.bin").await.unwrap(),
        [entry("b.bin", "data/sub/b.bin", big.len())]
    );
    assert!(list(a, FS, "data/empty-dir").await.unwrap().is_empty());
    for missing in ["nope", "data/nope", "data/a.txt/x"] {
        let err = list(a, FS, missing).await.unwrap_err();
        assert_eq!(code_of(&err), ErrorCode::NotFound, "{missing}: {err:?}");
        assert!(
            err.message().contains(&format!(
                "path {missing:?} does not exist in user space {FS}"
            )),
            "{err:?}"
        );
    }

    // S3 space with working dir `w1`: files are addressed from the bucket root, its
    // shards under `w1/` stay out of the listing.
    put(a, S3, b"an s3 shard").await;
    assert_eq!(s3.files(BUCKET, "w1/shards").len(), 1);
    write(&s3.object_path(BUCKET, "docs/x.txt"), b"xx");
    write(&s3.object_path(BUCKET, "docs/y/z.txt"), &big);
    write(&s3.object_path(BUCKET, "top.bin"), b"t");
    let docs = vec![
        entry("x.txt", "docs/x.txt", 2),
        entry("y/z.txt", "docs/y/z.txt", big.len()),
    ];
    assert_eq!(list(a, S3, "docs").await.unwrap(), docs);
    assert_eq!(
        list(a, S3, "").await.unwrap(),
        [
            entry("docs/x.txt", "docs/x.txt", 2),
            entry("docs/y/z.txt", "docs/y/z.txt", big.len()),
            entry("top.bin", "top.bin", 1),
        ]
    );
    assert_eq!(
        list(a, S3, "docs/y/z.txt").await.unwrap(),
        [entry("z.txt", "docs/y/z.txt", big.len())]
    );
    let err = list(a, S3, "docs/nope").await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotFound, "{err:?}");
    assert!(
        err.message().contains("does not exist in user space 500"),
        "{err:?}"
    );

    // Local API space with working dir `jcs`: the root is the directory, not `jcs/`.
    put(a, LOCAL_WD, b"a local shard").await;
    write(&c.local_dir.path().join("in/hello.txt"), b"hello");
    assert_eq!(
        list(a, LOCAL_WD, "").await.unwrap(),
        [entry("in/hello.txt", "in/hello.txt", 5)]
    );

    // Many files stream through the bounded channel.
    for i in 0..300 {
        write(&a.space_dir.join(format!("many/d{}/f{i}", i % 7)), b"m");
    }
    let many = list(a, FS, "many").await.unwrap();
    assert_eq!(many.len(), 300);
    assert!(
        many.iter()
            .all(|(p, full, size)| full == &format!("many/{p}") && *size == 1)
    );
    c.stop().await;
}

#[tokio::test]
async fn import_file_between_fs_and_s3_across_agents() {
    let c = Cluster::start().await;
    let (a, b, s3) = (&c.a, &c.b, &c.s3);
    let big = pattern(2 * MIB + 333);
    write(&a.space_dir.join("data/big.bin"), &big);

    // fs file of agent A → shard of A's S3 space (A calls itself).
    let resp = import(a, FS, "data/big.bin", a, S3).await.unwrap();
    assert_eq!(
        (resp.size, resp.sha256.clone()),
        (big.len() as u64, sha_hex(&big))
    );
    assert_eq!(get(a, S3, &resp.sha256).await.unwrap(), big);
    assert!(s3.files(BUCKET, "w1/tmp").is_empty());

    // S3 file (space without a shard store) of agent A → shard of agent B's fs space.
    let doc = pattern(MIB + MIB / 2);
    write(&s3.object_path(PLAIN_BUCKET, "docs/x.bin"), &doc);
    let resp = import(a, S3_PLAIN, "docs/x.bin", b, FS).await.unwrap();
    assert_eq!(resp.sha256, sha_hex(&doc));
    assert_eq!(get(b, FS, &resp.sha256).await.unwrap(), doc);
    assert_eq!(b.stored_files(), (vec![b.shard_path(&resp.sha256)], vec![]));

    // And back: an S3 shard's bytes arrive as a file through ExportFile, then a file of
    // the S3 space with a working dir imports into the fs space.
    write(&s3.object_path(BUCKET, "in/small.txt"), b"small");
    let resp = import(a, S3, "in/small.txt", b, FS).await.unwrap();
    assert_eq!(get(b, FS, &resp.sha256).await.unwrap(), b"small");

    // An empty file is an empty shard.
    write(&a.space_dir.join("data/empty"), b"");
    let resp = import(a, FS, "data/empty", b, FS).await.unwrap();
    assert_eq!((resp.size, resp.sha256.clone()), (0, sha_hex(b"")));

    // Refusals: nothing reaches the destination's shards.
    let before = b.stored_files();
    let err = import(a, FS, "data/missing.bin", b, FS).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotFound, "{err:?}");
    assert!(err.message().contains("\"data/missing.bin\""), "{err:?}");
    let err = import(a, FS, "data", b, FS).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::BadArgument, "{err:?}");
    // The destination's own refusal comes back with its code.
    let err = import_file(
        a,
        file_body(Kind::ReadFile, FS, "data/big.bin"),
        &b.address,
        put_body(FS, 1000),
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::BadArgument, "{err:?}");
    assert!(err.message().contains("max_size of 1000"), "{err:?}");
    let err = import(a, FS, "data/big.bin", a, S3_PLAIN)
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::BadArgument, "{err:?}");
    assert!(err.message().contains("has no shard store"), "{err:?}");
    let err = import(a, FS, "data/big.bin", b, 999).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotFound, "{err:?}");
    assert!(err.message().contains("user space 999"), "{err:?}");
    // An unreachable destination.
    let err = import_file(
        a,
        file_body(Kind::ReadFile, FS, "data/big.bin"),
        "127.0.0.1:1",
        put_body(FS, 0),
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::Unavailable, "{err:?}");
    assert_eq!(b.stored_files(), before);
    c.stop().await;
}

#[tokio::test]
async fn export_file_into_fs_and_s3_is_atomic_and_checked() {
    let c = Cluster::start().await;
    let (a, b, s3) = (&c.a, &c.b, &c.s3);
    // Shards on agent B (source), files on agent A (target).
    let x = pattern(2 * MIB + 7);
    let y = b"second version".to_vec();
    let hx = put(b, FS, &x).await;
    let hy = put(b, FS, &y).await;
    let (nx, ny) = (x.len() as u64, y.len() as u64);

    let file = a.space_dir.join("out/deep/file.bin");
    assert_eq!(
        export(a, FS, "out/deep/file.bin", b, FS, &hx, nx)
            .await
            .unwrap(),
        nx
    );
    assert_eq!(std::fs::read(&file).unwrap(), x);
    // Overwrites.
    assert_eq!(
        export(a, FS, "out/deep/file.bin", b, FS, &hy, ny)
            .await
            .unwrap(),
        ny
    );
    assert_eq!(std::fs::read(&file).unwrap(), y);

    let intact = |what: &str| {
        assert_eq!(std::fs::read(&file).unwrap(), y, "{what}");
        assert_eq!(names(&a.space_dir.join("out/deep")), ["file.bin"], "{what}");
    };
    // Wrong size: detected while streaming (too many bytes) or at the end (too few).
    for size in [nx - 1, nx + 1] {
        let err = export(a, FS, "out/deep/file.bin", b, FS, &hx, size)
            .await
            .unwrap_err();
        assert_eq!(code_of(&err), ErrorCode::BadArgument, "{err:?}");
        assert!(err.message().contains("did not match"), "{err:?}");
        intact("wrong size");
    }
    // A sha256 other than the get ticket's shard is refused before anything is read.
    let err = export_file(
        a,
        file_body(Kind::WriteFile, FS, "out/deep/file.bin"),
        &b.address,
        get_body(FS, &hx),
        nx,
        &sha_hex(b"other"),
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::BadArgument, "{err:?}");
    intact("wrong sha256");
    // A source whose bytes do not hash to the shard's address: refused, nothing written.
    let corrupt: Vec<u8> = x.iter().map(|v| v ^ 1).collect();
    std::fs::write(b.shard_path(&hx), &corrupt).unwrap();
    let err = export(a, FS, "out/deep/file.bin", b, FS, &hx, nx)
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::BadArgument, "{err:?}");
    assert!(err.message().contains("SHA-256"), "{err:?}");
    intact("corrupt source");
    std::fs::write(b.shard_path(&hx), &x).unwrap();
    // A missing shard: the source's NotFound.
    let missing = sha_hex(b"never stored");
    let err = export(a, FS, "out/deep/file.bin", b, FS, &missing, 3)
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotFound, "{err:?}");
    intact("missing shard");
    // The space's own shard store cannot be written.
    let err = export(a, FS, &format!("shards/{}/{hx}", &hx[..2]), b, FS, &hx, nx)
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::BadArgument, "{err:?}");
    assert!(err.message().contains("shard store"), "{err:?}");
    assert!(!a.space_dir.join("shards").exists());

    // Into an S3 space without a shard store; over 5 MiB, so a multipart upload.
    let big = pattern(6 * MIB + 1);
    let hbig = put(b, FS, &big).await;
    let nbig = big.len() as u64;
    let key = "exp/a/b.bin";
    assert_eq!(
        export(a, S3_PLAIN, key, b, FS, &hbig, nbig).await.unwrap(),
        nbig
    );
    assert_eq!(
        std::fs::read(s3.object_path(PLAIN_BUCKET, key)).unwrap(),
        big
    );
    // Replaced by a small one, then a mismatching big one leaves it in place, with no
    // upload behind.
    assert_eq!(export(a, S3_PLAIN, key, b, FS, &hy, ny).await.unwrap(), ny);
    assert_eq!(std::fs::read(s3.object_path(PLAIN_BUCKET, key)).unwrap(), y);
    for size in [nbig - 1, nbig + 1] {
        let err = export(a, S3_PLAIN, key, b, FS, &hbig, size)
            .await
            .unwrap_err();
        assert_eq!(code_of(&err), ErrorCode::BadArgument, "{err:?}");
        assert_eq!(std::fs::read(s3.object_path(PLAIN_BUCKET, key)).unwrap(), y);
    }
    assert_eq!(s3.files(PLAIN_BUCKET, "exp").len(), 1);
    assert!(
        upload_leftovers(s3).is_empty(),
        "{:?}",
        upload_leftovers(s3)
    );
    // The S3 space with a working dir: its files live at the bucket root.
    assert_eq!(
        export(a, S3, "exp/x.bin", b, FS, &hx, nx).await.unwrap(),
        nx
    );
    assert_eq!(
        std::fs::read(s3.object_path(BUCKET, "exp/x.bin")).unwrap(),
        x
    );
    // The exported files list back (and import again to the same shard).
    assert_eq!(
        list(a, S3_PLAIN, "exp").await.unwrap(),
        [entry("a/b.bin", "exp/a/b.bin", y.len())]
    );
    let resp = import(a, S3, "exp/x.bin", b, FS).await.unwrap();
    assert_eq!(resp.sha256, hx);
    c.stop().await;
}

#[tokio::test]
async fn bad_paths_and_wrong_ticket_kinds_are_refused() {
    let agent = TestAgent::start().await;
    let a = &agent;
    write(&a.space_dir.join("f.txt"), b"f");
    let h = put(a, FS, b"f").await;

    for bad in ["../x", "/x", "a//b", "a/./b", "a\\b", ".."] {
        let err = list(a, FS, bad).await.unwrap_err();
        assert_eq!(code_of(&err), ErrorCode::BadArgument, "{bad}: {err:?}");
        assert!(err.message().contains("invalid file path"), "{err:?}");
        let err = import(a, FS, bad, a, FS).await.unwrap_err();
        assert_eq!(code_of(&err), ErrorCode::BadArgument, "{bad}: {err:?}");
        let err = export(a, FS, bad, a, FS, &h, 1).await.unwrap_err();
        assert_eq!(code_of(&err), ErrorCode::BadArgument, "{bad}: {err:?}");
    }
    for empty in ["", "f.txt/"] {
        let err = import(a, FS, empty, a, FS).await.unwrap_err();
        assert_eq!(code_of(&err), ErrorCode::BadArgument, "{empty:?}: {err:?}");
        let err = export(a, FS, empty, a, FS, &h, 1).await.unwrap_err();
        assert_eq!(code_of(&err), ErrorCode::BadArgument, "{empty:?}: {err:?}");
    }

    let lf = file_body(Kind::ListFiles, FS, "f.txt");
    let rf = file_body(Kind::ReadFile, FS, "f.txt");
    let wf = file_body(Kind::WriteFile, FS, "g.txt");
    for kind in [Kind::ReadFile, Kind::WriteFile, Kind::List, Kind::Get] {
        let ticket = a.ticket(&file_body(kind, FS, "f.txt"));
        denied(list_files(a, ticket).await, "list_files");
    }
    for read in [&lf, &wf, &get_body(FS, &h)] {
        denied(
            import_file(a, read.clone(), &a.address, put_body(FS, 0)).await,
            "import read ticket",
        );
    }
    for put in [&rf, &wf, &get_body(FS, &h)] {
        denied(
            import_file(a, rf.clone(), &a.address, put.clone()).await,
            "import put ticket",
        );
    }
    for write in [&lf, &rf, &put_body(FS, 0)] {
        denied(
            export_file(a, write.clone(), &a.address, get_body(FS, &h), 1, &h).await,
            "export write ticket",
        );
    }
    for get in [&rf, &wf, &put_body(FS, 0)] {
        let get = TicketBody {
            shard_hash: h.clone(),
            ..get.clone()
        };
        denied(
            export_file(a, wf.clone(), &a.address, get, 1, &h).await,
            "export get ticket",
        );
    }
    // The file kinds cannot read or write shards.
    let mut client = a.client.clone();
    for kind in [Kind::ListFiles, Kind::ReadFile, Kind::WriteFile] {
        let ticket = a.ticket(&TicketBody {
            shard_hash: h.clone(),
            ..file_body(kind, FS, "f.txt")
        });
        let got = client
            .get_shard(GetShardRequest {
                ticket: Some(ticket.clone()),
                offset: 0,
                length: 0,
            })
            .await;
        denied(got.map(drop), "get_shard");
        let put = client
            .put_shard(futures::stream::iter(put_messages(ticket, b"x", 1, true)))
            .await;
        denied(put.map(drop), "put_shard");
    }
    // Expired and missing tickets.
    let mut expired = lf.clone();
    expired.expires_at_ms = common::time::now_ms() - 1;
    let err = list_files(a, a.ticket(&expired)).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::Unauthenticated, "{err:?}");
    let err = client
        .export_file(ExportFileRequest {
            write_ticket: Some(a.ticket(&wf)),
            source_agent_address: a.address.clone(),
            get_ticket: None,
            size: 1,
            sha256: h.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::Unauthenticated, "{err:?}");

    // Nothing was written by the refused calls.
    assert!(!a.space_dir.join("g.txt").exists());
    assert_eq!(a.stored_files().0, vec![a.shard_path(&h)]);
    agent.stop().await;
}
