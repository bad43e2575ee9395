//! ConcatShards, ListShards and DeleteShard over real gRPC, and the garbage-collection
//! race guard (a dedup put refreshes the shard's mtime).

use std::time::{Duration, SystemTime};

use common::ErrorCode;
use common::error::code_of;
use futures::TryStreamExt;
use proto::agent::{
    ConcatShardsRequest, DeleteShardRequest, GetShardRequest, ListShardsRequest, PutShardResponse,
    ShardInfo,
};
use proto::common::Ticket;
use proto::common::ticket_body::Kind;
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::harness::*;

const MIB: usize = 1024 * 1024;

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

async fn put_data(agent: &TestAgent, data: &[u8]) -> String {
    let mut client = agent.client.clone();
    let msgs = put_messages(agent.put_ticket(0), data, MIB, true);
    let resp = client
        .put_shard(futures::stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.sha256, sha_hex(data));
    resp.sha256
}

async fn get_all(agent: &TestAgent, hash: &str) -> Vec<u8> {
    let mut client = agent.client.clone();
    let stream = client
        .get_shard(GetShardRequest {
            ticket: Some(agent.get_ticket(hash)),
            offset: 0,
            length: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let chunks: Vec<_> = stream.try_collect().await.unwrap();
    assert!(chunks.iter().all(|c| c.data.len() <= MIB));
    chunks.into_iter().flat_map(|c| c.data).collect()
}

async fn concat(agent: &TestAgent, ticket: Ticket) -> Result<PutShardResponse, Status> {
    let mut client = agent.client.clone();
    client
        .concat_shards(ConcatShardsRequest {
            ticket: Some(ticket),
        })
        .await
        .map(|r| r.into_inner())
}

async fn list(agent: &TestAgent, ticket: Ticket) -> Result<Vec<ShardInfo>, Status> {
    let mut client = agent.client.clone();
    let stream = client
        .list_shards(ListShardsRequest {
            ticket: Some(ticket),
        })
        .await?
        .into_inner();
    let batches: Vec<_> = stream.try_collect().await?;
    let mut shards: Vec<ShardInfo> = batches.into_iter().flat_map(|b| b.shards).collect();
    shards.sort_by(|a, b| a.sha256.cmp(&b.sha256));
    Ok(shards)
}

async fn delete(agent: &TestAgent, hash: &str, cutoff_ms: i64) -> Result<bool, Status> {
    let mut client = agent.client.clone();
    client
        .delete_shard(DeleteShardRequest {
            ticket: Some(agent.ticket(&delete_body(FIRST_SPACE_ID, hash, cutoff_ms))),
        })
        .await
        .map(|r| r.into_inner().deleted)
}

fn concat_ticket(agent: &TestAgent, sources: &[&str], max_size: u64) -> Ticket {
    agent.ticket(&concat_body(FIRST_SPACE_ID, sources, max_size))
}

fn list_ticket(agent: &TestAgent) -> Ticket {
    agent.ticket(&body(Kind::List, FIRST_SPACE_ID))
}

fn mtime_ms(path: &std::path::Path) -> i64 {
    agent::store::unix_ms(std::fs::metadata(path).unwrap().modified().unwrap())
}

fn set_mtime(path: &std::path::Path, t: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[tokio::test]
async fn concat_of_parts_with_a_duplicate_and_an_empty_part() {
    let agent = TestAgent::start().await;
    let a = pattern(MIB + MIB / 2 + 3);
    let b: Vec<u8> = Vec::new();
    let c = b"the last part".to_vec();
    let ha = put_data(&agent, &a).await;
    let hb = put_data(&agent, &b).await;
    let hc = put_data(&agent, &c).await;

    let want = [a.as_slice(), &b, &c, &a].concat();
    let resp = concat(&agent, concat_ticket(&agent, &[&ha, &hb, &hc, &ha], 0))
        .await
        .unwrap();
    assert_eq!(resp.size, want.len() as u64);
    assert_eq!(resp.sha256, sha_hex(&want));
    assert_eq!(get_all(&agent, &resp.sha256).await, want);
    let (shards, tmp) = agent.stored_files();
    assert_eq!(shards.len(), 4);
    assert!(tmp.is_empty());

    // Exactly max_size is fine; the empty part alone gives the empty shard.
    let resp = concat(
        &agent,
        concat_ticket(&agent, &[&ha, &hb, &hc, &ha], want.len() as u64),
    )
    .await
    .unwrap();
    assert_eq!(resp.sha256, sha_hex(&want));
    let empty = concat(&agent, concat_ticket(&agent, &[&hb], 0))
        .await
        .unwrap();
    assert_eq!((empty.size, empty.sha256), (0, hb));
    assert_eq!(agent.stored_files().0.len(), 4);
    agent.stop().await;
}

#[tokio::test]
async fn concat_refusals_store_nothing() {
    let agent = TestAgent::start().await;
    let data = pattern(1000);
    let h = put_data(&agent, &data).await;
    let before = agent.stored_files();
    let missing = sha_hex(b"never stored");

    let err = concat(&agent, concat_ticket(&agent, &[&h, &missing], 0))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotFound, "{err:?}");
    assert!(err.message().contains(&missing), "{err:?}");

    let upper = h.to_uppercase();
    for bad in [vec![h.as_str(), "abc"], vec![upper.as_str()], vec![]] {
        let err = concat(&agent, concat_ticket(&agent, &bad, 0))
            .await
            .unwrap_err();
        assert_eq!(code_of(&err), ErrorCode::BadArgument, "{bad:?}: {err:?}");
    }

    let err = concat(&agent, concat_ticket(&agent, &[&h, &h], 1999))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::BadArgument, "{err:?}");
    assert!(err.message().contains("max_size"), "{err:?}");

    // A space this agent does not serve.
    let other = agent.ticket(&concat_body(FIRST_SPACE_ID + 1, &[&h], 0));
    let err = concat(&agent, other).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotFound, "{err:?}");

    assert_eq!(agent.stored_files(), before);
    assert!(before.1.is_empty());
    agent.stop().await;
}

#[tokio::test]
async fn list_returns_exactly_the_stored_shards() {
    let agent = TestAgent::start().await;
    assert!(list(&agent, list_ticket(&agent)).await.unwrap().is_empty());

    let mut want = Vec::new();
    for len in [0, 10, 3 * MIB / 2] {
        let data = pattern(len);
        let hash = put_data(&agent, &data).await;
        want.push(ShardInfo {
            modified_ms: mtime_ms(&agent.shard_path(&hash)),
            sha256: hash,
            size: len as u64,
        });
    }
    // A stray file is not a shard.
    std::fs::write(agent.space_dir.join("shards").join("stray"), b"x").unwrap();
    want.sort_by(|a, b| a.sha256.cmp(&b.sha256));
    assert_eq!(list(&agent, list_ticket(&agent)).await.unwrap(), want);
    agent.stop().await;
}

#[tokio::test]
async fn delete_respects_the_cutoff() {
    let agent = TestAgent::start().await;
    let h = put_data(&agent, &pattern(5000)).await;
    let path = agent.shard_path(&h);
    let written = mtime_ms(&path);

    // Written after the cutoff: refused.
    assert!(!delete(&agent, &h, written - 1).await.unwrap());
    assert!(!delete(&agent, &h, written).await.unwrap());
    assert!(path.exists());
    // Cutoff in the future: deleted.
    assert!(
        delete(&agent, &h, common::time::now_ms() + 1000)
            .await
            .unwrap()
    );
    assert!(!path.exists());
    assert!(list(&agent, list_ticket(&agent)).await.unwrap().is_empty());
    // Missing (now, or never stored): nothing to delete.
    assert!(
        !delete(&agent, &h, common::time::now_ms() + 1000)
            .await
            .unwrap()
    );
    let never = sha_hex(b"never stored");
    assert!(!delete(&agent, &never, i64::MAX).await.unwrap());

    let err = delete(&agent, "not-a-hash", i64::MAX).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::BadArgument, "{err:?}");
    agent.stop().await;
}

#[tokio::test]
async fn dedup_put_or_concat_refreshes_an_old_shard() {
    let agent = TestAgent::start().await;
    let data = pattern(MIB + 17);
    let h = put_data(&agent, &data).await;
    let path = agent.shard_path(&h);
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    // The GC pass "started" half an hour ago: the old shard looked unreferenced then.
    let cutoff = common::time::now_ms() - 1_800_000;

    set_mtime(&path, hour_ago);
    assert_eq!(put_data(&agent, &data).await, h);
    assert!(mtime_ms(&path) > cutoff);
    assert!(!delete(&agent, &h, cutoff).await.unwrap());
    assert!(path.exists());

    set_mtime(&path, hour_ago);
    let resp = concat(&agent, concat_ticket(&agent, &[&h], 0))
        .await
        .unwrap();
    assert_eq!(resp.sha256, h);
    assert!(!delete(&agent, &h, cutoff).await.unwrap());
    assert_eq!(get_all(&agent, &h).await, data);

    // Without a refresh the same cutoff deletes it.
    set_mtime(&path, hour_ago);
    assert!(delete(&agent, &h, cutoff).await.unwrap());
    assert!(!path.exists());
    agent.stop().await;
}

#[tokio::test]
async fn each_rpc_refuses_other_ticket_kinds() {
    let agent = TestAgent::start().await;
    let h = put_data(&agent, b"some shard").await;
    let put = agent.put_ticket(0);
    let get = agent.get_ticket(&h);
    let conc = concat_ticket(&agent, &[&h], 0);
    let lst = list_ticket(&agent);
    let del = agent.ticket(&delete_body(FIRST_SPACE_ID, &h, i64::MAX));

    for ticket in [&put, &get, &lst, &del] {
        let err = concat(&agent, ticket.clone()).await.unwrap_err();
        assert_eq!(code_of(&err), ErrorCode::PermissionDenied, "{err:?}");
    }
    for ticket in [&put, &get, &conc, &del] {
        let err = list(&agent, ticket.clone()).await.unwrap_err();
        assert_eq!(code_of(&err), ErrorCode::PermissionDenied, "{err:?}");
    }
    let mut client = agent.client.clone();
    for ticket in [&put, &get, &conc, &lst] {
        let err = client
            .delete_shard(DeleteShardRequest {
                ticket: Some(ticket.clone()),
            })
            .await
            .unwrap_err();
        assert_eq!(code_of(&err), ErrorCode::PermissionDenied, "{err:?}");
    }
    // The new kinds cannot read or write either.
    for ticket in [&conc, &lst, &del] {
        let err = client
            .get_shard(GetShardRequest {
                ticket: Some(ticket.clone()),
                offset: 0,
                length: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(code_of(&err), ErrorCode::PermissionDenied, "{err:?}");
        let err = client
            .put_shard(futures::stream::iter(put_messages(
                ticket.clone(),
                b"x",
                1,
                true,
            )))
            .await
            .unwrap_err();
        assert_eq!(code_of(&err), ErrorCode::PermissionDenied, "{err:?}");
    }

    // Expired and missing tickets are Unauthenticated.
    let mut expired = body(Kind::List, FIRST_SPACE_ID);
    expired.expires_at_ms = common::time::now_ms() - 1;
    let err = list(&agent, agent.ticket(&expired)).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::Unauthenticated, "{err:?}");
    let err = client
        .delete_shard(DeleteShardRequest { ticket: None })
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::Unauthenticated, "{err:?}");

    // Nothing was deleted or added by the refused calls.
    assert_eq!(agent.stored_files().0, vec![agent.shard_path(&h)]);
    agent.stop().await;
}
