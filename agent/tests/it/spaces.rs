//! API-created user spaces (specs from the coordinator) over real gRPC: S3 through an
//! in-process s3s-fs server, Local directories, revision bumps, refresh on unknown spaces,
//! `maxSize`, and `TestStorage`.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use agent::probe::PROBE_TIMEOUT;
use common::ErrorCode;
use common::error::code_of;
use futures::TryStreamExt;
use prost::Message;
use proto::agent::{
    ConcatShardsRequest, DeleteShardRequest, GetShardRequest, ListShardsRequest, PutShardResponse,
    ShardInfo, TestStorageRequest,
};
use proto::common::ticket_body::Kind;
use proto::common::{SpaceSpec, TicketBody};
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::harness::*;
use crate::s3::{S3Server, SECRET_KEY};

const MIB: usize = 1024 * 1024;
const BUCKET: &str = "jcs-bucket";
const S3_SPACE: u64 = 500;

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn at(kind: Kind, space: u64, revision: u64) -> TicketBody {
    TicketBody {
        space_revision: revision,
        ..body(kind, space)
    }
}

async fn put(agent: &TestAgent, space: u64, revision: u64, data: &[u8]) -> Result<String, Status> {
    let mut client = agent.client.clone();
    let ticket = agent.ticket(&TicketBody {
        space_revision: revision,
        ..put_body(space, 0)
    });
    let resp = client
        .put_shard(futures::stream::iter(put_messages(ticket, data, MIB, true)))
        .await?
        .into_inner();
    assert_eq!(resp.sha256, sha_hex(data));
    assert_eq!(resp.size, data.len() as u64);
    Ok(resp.sha256)
}

async fn get(
    agent: &TestAgent,
    space: u64,
    hash: &str,
    offset: u64,
    length: u64,
) -> Result<Vec<u8>, Status> {
    let mut client = agent.client.clone();
    let stream = client
        .get_shard(GetShardRequest {
            ticket: Some(agent.ticket(&get_body(space, hash))),
            offset,
            length,
        })
        .await?
        .into_inner();
    let chunks: Vec<_> = stream.try_collect().await?;
    assert!(chunks.iter().all(|c| c.data.len() <= MIB));
    Ok(chunks.into_iter().flat_map(|c| c.data).collect())
}

async fn concat(
    agent: &TestAgent,
    space: u64,
    sources: &[&str],
) -> Result<PutShardResponse, Status> {
    let mut client = agent.client.clone();
    client
        .concat_shards(ConcatShardsRequest {
            ticket: Some(agent.ticket(&concat_body(space, sources, 0))),
        })
        .await
        .map(|r| r.into_inner())
}

async fn list(agent: &TestAgent, space: u64) -> Result<Vec<ShardInfo>, Status> {
    let mut client = agent.client.clone();
    let stream = client
        .list_shards(ListShardsRequest {
            ticket: Some(agent.ticket(&body(Kind::List, space))),
        })
        .await?
        .into_inner();
    let batches: Vec<_> = stream.try_collect().await?;
    let mut shards: Vec<ShardInfo> = batches.into_iter().flat_map(|b| b.shards).collect();
    shards.sort_by(|a, b| a.sha256.cmp(&b.sha256));
    Ok(shards)
}

async fn delete(agent: &TestAgent, space: u64, hash: &str, cutoff_ms: i64) -> Result<bool, Status> {
    let mut client = agent.client.clone();
    client
        .delete_shard(DeleteShardRequest {
            ticket: Some(agent.ticket(&delete_body(space, hash, cutoff_ms))),
        })
        .await
        .map(|r| r.into_inner().deleted)
}

fn shard_key(dir: &str, hash: &str) -> String {
    format!("{dir}/shards/{}/{hash}", &hash[..2])
}

#[tokio::test]
async fn s3_space_serves_every_rpc_byte_identical() {
    let s3 = S3Server::start(&[BUCKET]).await;
    let fake = FakeCoordinator::default();
    fake.put_spec(s3_spec(
        S3_SPACE,
        1,
        &s3.endpoint(),
        BUCKET,
        SECRET_KEY,
        "w1",
        0,
    ));
    let agent = TestAgent::start_fake(fake).await;
    agent.wait_api_space(S3_SPACE, 1).await;

    let a = pattern(2 * MIB + 333);
    let b: Vec<u8> = Vec::new();
    let c = pattern(1000);
    let ha = put(&agent, S3_SPACE, 1, &a).await.unwrap();
    let hb = put(&agent, S3_SPACE, 1, &b).await.unwrap();
    let hc = put(&agent, S3_SPACE, 1, &c).await.unwrap();
    // The layout in the bucket is the filesystem's, under the working dir.
    assert_eq!(
        std::fs::read(s3.object_path(BUCKET, &shard_key("w1", &ha))).unwrap(),
        a
    );
    assert_eq!(
        std::fs::read(s3.object_path(BUCKET, &shard_key("w1", &hb))).unwrap(),
        b
    );
    assert!(s3.files(BUCKET, "w1/tmp").is_empty());
    assert_eq!(
        agent.stored_files(),
        (vec![], vec![]),
        "declared space untouched"
    );

    // Ranged reads.
    assert_eq!(get(&agent, S3_SPACE, &ha, 0, 0).await.unwrap(), a);
    let mid = (MIB - 5) as u64;
    assert_eq!(
        get(&agent, S3_SPACE, &ha, mid, 10).await.unwrap(),
        &a[MIB - 5..MIB + 5]
    );
    assert_eq!(get(&agent, S3_SPACE, &hc, 999, 0).await.unwrap(), &c[999..]);
    assert!(get(&agent, S3_SPACE, &hb, 0, 0).await.unwrap().is_empty());
    let missing = sha_hex(b"never stored");
    let err = get(&agent, S3_SPACE, &missing, 0, 0).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotFound, "{err:?}");

    // Concat, then the same again (dedup through copy).
    let want = [a.as_slice(), &b, &c, &a].concat();
    for _ in 0..2 {
        let resp = concat(&agent, S3_SPACE, &[&ha, &hb, &hc, &ha])
            .await
            .unwrap();
        assert_eq!(
            (resp.size, resp.sha256.as_str()),
            (want.len() as u64, sha_hex(&want).as_str())
        );
    }
    let hw = sha_hex(&want);
    assert_eq!(get(&agent, S3_SPACE, &hw, 0, 0).await.unwrap(), want);
    assert!(s3.files(BUCKET, "w1/tmp").is_empty());

    // Over the 5 MiB part size: a multipart upload of the temp object, then a copy.
    let big = [a.as_slice(), &a, &a].concat();
    let hbig = put(&agent, S3_SPACE, 1, &big).await.unwrap();
    assert_eq!(
        std::fs::read(s3.object_path(BUCKET, &shard_key("w1", &hbig))).unwrap(),
        big
    );
    assert_eq!(get(&agent, S3_SPACE, &hbig, 0, 0).await.unwrap(), big);
    assert!(s3.files(BUCKET, "w1/tmp").is_empty());

    // An aborted upload of several parts leaves no temp object and no upload parts.
    let mut client = agent.client.clone();
    let err = client
        .put_shard(futures::stream::iter(put_messages(
            agent.ticket(&put_body(S3_SPACE, 0)),
            &pattern(16 * MIB + 1),
            MIB,
            false,
        )))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::BadArgument, "{err:?}");
    assert!(s3.files(BUCKET, "w1/tmp").is_empty());
    let parts: Vec<String> = std::fs::read_dir(s3.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".upload_id-"))
        .collect();
    assert!(parts.is_empty(), "{parts:?}");

    // A stray object is not a shard; the listing has exactly the shards.
    std::fs::write(s3.object_path(BUCKET, "w1/shards/stray"), b"x").unwrap();
    let before = common::time::now_ms();
    let listed = list(&agent, S3_SPACE).await.unwrap();
    let mut want_list: Vec<(String, u64)> = [
        (ha.clone(), a.len()),
        (hb.clone(), 0),
        (hc.clone(), c.len()),
        (hw.clone(), want.len()),
        (hbig.clone(), big.len()),
    ]
    .into_iter()
    .map(|(h, n)| (h, n as u64))
    .collect();
    want_list.sort();
    let got: Vec<(String, u64)> = listed.iter().map(|s| (s.sha256.clone(), s.size)).collect();
    assert_eq!(got, want_list);
    assert!(
        listed
            .iter()
            .all(|s| s.modified_ms > before - 60_000 && s.modified_ms <= before + 1000),
        "{listed:?}"
    );

    // Delete: refused for a cutoff before the write, done for one after it.
    assert!(
        !delete(&agent, S3_SPACE, &hc, before - 60_000)
            .await
            .unwrap()
    );
    assert!(
        delete(&agent, S3_SPACE, &hc, common::time::now_ms() + 5000)
            .await
            .unwrap()
    );
    assert!(!s3.object_path(BUCKET, &shard_key("w1", &hc)).exists());
    assert!(!delete(&agent, S3_SPACE, &hc, i64::MAX).await.unwrap());
    let err = get(&agent, S3_SPACE, &hc, 0, 0).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotFound, "{err:?}");
    assert_eq!(list(&agent, S3_SPACE).await.unwrap().len(), 4);
    // Stored again after the delete.
    assert_eq!(put(&agent, S3_SPACE, 1, &c).await.unwrap(), hc);
    assert_eq!(get(&agent, S3_SPACE, &hc, 0, 0).await.unwrap(), c);
    agent.stop().await;
}

#[tokio::test]
async fn a_newer_revision_in_a_ticket_is_picked_up_at_once() {
    let s3 = S3Server::start(&[BUCKET]).await;
    let fake = FakeCoordinator::default();
    // No heartbeat during the test: only the ticket can make the agent re-register.
    fake.heartbeat_ms.store(60_000, Ordering::SeqCst);
    fake.put_spec(s3_spec(
        S3_SPACE,
        1,
        &s3.endpoint(),
        BUCKET,
        SECRET_KEY,
        "w1",
        0,
    ));
    let agent = TestAgent::start_fake(fake.clone()).await;
    agent.wait_api_space(S3_SPACE, 1).await;

    let one = pattern(5000);
    let h1 = put(&agent, S3_SPACE, 1, &one).await.unwrap();
    assert!(s3.object_path(BUCKET, &shard_key("w1", &h1)).exists());

    fake.put_spec(s3_spec(
        S3_SPACE,
        2,
        &s3.endpoint(),
        BUCKET,
        SECRET_KEY,
        "w2",
        0,
    ));
    let calls = fake.calls();
    let two = pattern(7000);
    let h2 = put(&agent, S3_SPACE, 2, &two).await.unwrap();
    assert_eq!(fake.calls(), calls + 1, "exactly one refresh");
    agent.wait_api_space(S3_SPACE, 2).await;
    assert!(s3.object_path(BUCKET, &shard_key("w2", &h2)).exists());
    assert!(!s3.object_path(BUCKET, &shard_key("w1", &h2)).exists());
    // The new working dir does not hold the old shard; older tickets use the new revision.
    let err = get(&agent, S3_SPACE, &h1, 0, 0).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotFound, "{err:?}");
    assert_eq!(put(&agent, S3_SPACE, 1, &one).await.unwrap(), h1);
    assert!(s3.object_path(BUCKET, &shard_key("w2", &h1)).exists());
    agent.stop().await;
}

#[tokio::test]
async fn an_unknown_space_triggers_a_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeCoordinator::default();
    fake.heartbeat_ms.store(60_000, Ordering::SeqCst);
    // The coordinator knows the space only from the second registration on.
    fake.put_spec_from(2, local_spec(600, 1, dir.path(), "jcs", 0));
    let agent = TestAgent::start_fake(fake.clone()).await;
    assert_eq!(fake.calls(), 1);

    let data = pattern(3000);
    let h = put(&agent, 600, 1, &data).await.unwrap();
    assert_eq!(fake.calls(), 2);
    let on_disk = dir.path().join("jcs/shards").join(&h[..2]).join(&h);
    assert_eq!(std::fs::read(on_disk).unwrap(), data);
    assert_eq!(get(&agent, 600, &h, 0, 0).await.unwrap(), data);

    // Still unknown after the refresh: NotFound, without waiting for the bound.
    let started = Instant::now();
    let err = put(&agent, 601, 1, b"x").await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotFound, "{err:?}");
    assert!(
        err.message()
            .contains("user space 601 is not served by this agent"),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(fake.calls(), 3);
    agent.stop().await;
}

#[tokio::test]
async fn spaces_without_a_shard_store_refuse_writes_and_dropped_spaces_go_away() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeCoordinator::default();
    fake.put_spec(SpaceSpec {
        stores_shards: false,
        ..local_spec(700, 1, dir.path(), "", 0)
    });
    fake.put_spec(local_spec(701, 1, &dir.path().join("other"), "", 0));
    let agent = TestAgent::start_fake(fake.clone()).await;
    agent.wait_api_space(700, 1).await;

    let err = put(&agent, 700, 1, b"abc").await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::BadArgument, "{err:?}");
    assert!(
        err.message().contains("user space 700 has no shard store"),
        "{err:?}"
    );
    let err = concat(&agent, 700, &[&sha_hex(b"abc")]).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::BadArgument, "{err:?}");
    assert!(list(&agent, 700).await.unwrap().is_empty());
    assert!(files_under(dir.path()).is_empty());

    let h = put(&agent, 701, 1, b"abc").await.unwrap();
    // The coordinator stops listing 701: the next heartbeat drops it.
    fake.specs
        .lock()
        .unwrap()
        .retain(|(_, s)| s.space_id != 701);
    let mut reg = agent.registration.clone();
    let dropped = common::testing::wait_until(Duration::from_secs(10), || {
        let gone = reg
            .borrow_and_update()
            .as_ref()
            .is_some_and(|r| !r.api_spaces.contains_key(&common::SpaceId(701)));
        async move { gone }
    })
    .await;
    assert!(dropped);
    let err = get(&agent, 701, &h, 0, 0).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotFound, "{err:?}");
    agent.stop().await;
}

#[tokio::test]
async fn max_size_is_enforced_on_fs_and_s3() {
    let s3 = S3Server::start(&[BUCKET]).await;
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeCoordinator::default();
    fake.put_spec(local_spec(800, 1, dir.path(), "lim", 3000));
    fake.put_spec(s3_spec(
        801,
        1,
        &s3.endpoint(),
        BUCKET,
        SECRET_KEY,
        "lim",
        3000,
    ));
    let agent = TestAgent::start_fake(fake).await;
    agent.wait_api_space(801, 1).await;

    let files = |space: u64, sub: &str| match space {
        800 => files_under(&dir.path().join("lim").join(sub)),
        _ => s3.files(BUCKET, &format!("lim/{sub}")),
    };
    for space in [800, 801] {
        let big = put(&agent, space, 1, &pattern(2000)).await.unwrap();
        let err = put(&agent, space, 1, &pattern(1500)).await.unwrap_err();
        assert_eq!(code_of(&err), ErrorCode::BadArgument, "{space}: {err:?}");
        assert!(
            err.message().contains(&format!(
                "user space {space} is full: storing 1500 more bytes would use 3500 of max 3000 bytes"
            )),
            "{err:?}"
        );
        assert_eq!(files(space, "shards").len(), 1, "{space}");
        assert!(files(space, "tmp").is_empty(), "{space}");

        // Exactly full fits; a dedup adds nothing; a concat that would add is refused.
        let small = put(&agent, space, 1, &pattern(1000)).await.unwrap();
        assert_eq!(put(&agent, space, 1, &pattern(2000)).await.unwrap(), big);
        concat(&agent, space, &[&big]).await.unwrap();
        let err = concat(&agent, space, &[&small, &small]).await.unwrap_err();
        assert!(err.message().contains("is full"), "{err:?}");
        assert_eq!(files(space, "shards").len(), 2, "{space}");
        assert!(files(space, "tmp").is_empty(), "{space}");

        // GC makes room.
        assert!(delete(&agent, space, &big, i64::MAX).await.unwrap());
        put(&agent, space, 1, &pattern(1999)).await.unwrap();
    }
    agent.stop().await;
}

fn test_ticket(agent: &TestAgent, spec: &SpaceSpec) -> proto::common::Ticket {
    agent.ticket(&TicketBody {
        shard_hash: sha_hex(&spec.encode_to_vec()),
        ..at(Kind::Test, spec.space_id, spec.revision)
    })
}

async fn test_storage(agent: &TestAgent, spec: &SpaceSpec) -> Result<(), Status> {
    let mut client = agent.client.clone();
    client
        .test_storage(TestStorageRequest {
            ticket: Some(test_ticket(agent, spec)),
            spec: Some(spec.clone()),
        })
        .await
        .map(drop)
}

#[tokio::test]
async fn test_storage_classifies_failures() {
    let s3 = S3Server::start(&[BUCKET]).await;
    let agent = TestAgent::start().await;
    let endpoint = s3.endpoint();
    let spec = |endpoint: &str, bucket: &str, secret: &str| {
        s3_spec(0, 0, endpoint, bucket, secret, "probe", 0)
    };

    test_storage(&agent, &spec(&endpoint, BUCKET, SECRET_KEY))
        .await
        .unwrap();
    assert!(s3.files(BUCKET, "probe").is_empty(), "probe left behind");

    let wrong = "wrong-secret-value";
    let err = test_storage(&agent, &spec(&endpoint, BUCKET, wrong))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::PermissionDenied, "{err:?}");
    assert!(
        err.message().starts_with("the credential was refused"),
        "{err:?}"
    );
    assert!(!err.message().contains(wrong), "{err:?}");

    let err = test_storage(&agent, &spec(&endpoint, "no-such-bucket", SECRET_KEY))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotFound, "{err:?}");
    assert!(
        err.message()
            .contains("bucket no-such-bucket does not exist"),
        "{err:?}"
    );
    assert!(!s3.root().join("no-such-bucket").exists());

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let started = Instant::now();
    let err = test_storage(&agent, &spec(&closed_endpoint, BUCKET, SECRET_KEY))
        .await
        .unwrap_err();
    assert!(started.elapsed() < PROBE_TIMEOUT, "{:?}", started.elapsed());
    assert_eq!(code_of(&err), ErrorCode::Unavailable, "{err:?}");
    assert!(
        err.message()
            .contains(&format!("cannot reach endpoint {closed_endpoint}")),
        "{err:?}"
    );

    // Local: a path that cannot be created (its parent is a file) is named.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    let bad = dir.path().join("file").join("space");
    let err = test_storage(&agent, &local_spec(0, 0, &bad, "", 0))
        .await
        .unwrap_err();
    assert_ne!(code_of(&err), ErrorCode::Internal, "{err:?}");
    assert!(err.message().contains(bad.to_str().unwrap()), "{err:?}");
    test_storage(&agent, &local_spec(0, 0, &dir.path().join("ok"), "w", 0))
        .await
        .unwrap();

    // A malformed spec names the field.
    let mut malformed = spec(&endpoint, BUCKET, SECRET_KEY);
    malformed.credential_json = r#"{"type":"S3","accessKeyId":"a"}"#.into();
    let err = test_storage(&agent, &malformed).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::BadArgument, "{err:?}");
    assert!(err.message().contains("secretAccessKey"), "{err:?}");

    // The ticket covers exactly the spec it was issued for, and only TestStorage.
    let good = spec(&endpoint, BUCKET, SECRET_KEY);
    let mut tampered = good.clone();
    tampered.working_dir = "elsewhere".into();
    let mut client = agent.client.clone();
    let err = client
        .test_storage(TestStorageRequest {
            ticket: Some(test_ticket(&agent, &good)),
            spec: Some(tampered),
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::Unauthenticated, "{err:?}");
    let err = client
        .test_storage(TestStorageRequest {
            ticket: Some(agent.ticket(&body(Kind::Put, 0))),
            spec: Some(good.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::PermissionDenied, "{err:?}");
    let err = client
        .list_shards(ListShardsRequest {
            ticket: Some(test_ticket(&agent, &good)),
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::PermissionDenied, "{err:?}");
    agent.stop().await;
}
