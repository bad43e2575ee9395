//! `AgentService` over real gRPC: put/get round trips and every refusal path.

use std::time::Duration;

use common::ErrorCode;
use common::error::code_of;
use futures::TryStreamExt;
use proto::agent::put_shard_request::Msg;
use proto::agent::{GetShardRequest, PutShardRequest, PutShardResponse, PutSmallShardRequest};
use proto::common::Ticket;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::harness::*;

const MIB: usize = 1024 * 1024;

async fn put(agent: &TestAgent, msgs: Vec<PutShardRequest>) -> Result<PutShardResponse, Status> {
    let mut client = agent.client.clone();
    client
        .put_shard(futures::stream::iter(msgs))
        .await
        .map(|r| r.into_inner())
}

async fn get(
    agent: &TestAgent,
    ticket: Ticket,
    offset: u64,
    length: u64,
) -> Result<Vec<bytes::Bytes>, Status> {
    let mut client = agent.client.clone();
    let stream = client
        .get_shard(GetShardRequest {
            ticket: Some(ticket),
            offset,
            length,
        })
        .await?
        .into_inner();
    let chunks: Vec<_> = stream.try_collect().await?;
    Ok(chunks.into_iter().map(|c| c.data).collect())
}

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[tokio::test]
async fn registers_local_spaces_with_the_coordinator() {
    let agent = TestAgent::start().await;
    let reg = agent.registration.borrow().clone().unwrap();
    assert_eq!(reg.agent_id, common::AgentId(AGENT_ID));
    assert_eq!(
        reg.spaces.get("local"),
        Some(&common::SpaceId(FIRST_SPACE_ID))
    );
    assert_eq!(reg.heartbeat_interval, Duration::from_millis(100));
    {
        let requests = agent.coordinator.requests.lock().unwrap();
        let req = &requests[0];
        assert_eq!(req.name, "agent-test");
        assert_eq!(req.address, agent.address);
        assert_eq!(req.spaces.len(), 1);
        assert_eq!(req.spaces[0].name, "local");
        assert_eq!(req.spaces[0].storage_type, "Local");
        assert_eq!(std::path::Path::new(&req.spaces[0].path), agent.space_dir);
    }
    // RegisterAgent is also the heartbeat: it keeps coming.
    let coordinator = agent.coordinator.clone();
    let heartbeats = common::testing::wait_until(Duration::from_secs(10), || {
        let n = coordinator.requests.lock().unwrap().len();
        async move { n >= 3 }
    })
    .await;
    assert!(heartbeats, "no heartbeats after registration");
    agent.stop().await;
}

#[tokio::test]
async fn put_then_get_full_and_ranged() {
    let agent = TestAgent::start().await;
    let data = pattern(5 * MIB);
    let resp = put(&agent, put_messages(agent.put_ticket(0), &data, MIB, true))
        .await
        .unwrap();
    assert_eq!(resp.size, data.len() as u64);
    assert_eq!(resp.sha256, sha_hex(&data));
    let (shards, tmp) = agent.stored_files();
    assert_eq!(shards.len(), 1);
    assert!(tmp.is_empty());

    let ticket = agent.get_ticket(&resp.sha256);
    let full = get(&agent, ticket.clone(), 0, 0).await.unwrap();
    assert!(full.iter().all(|c| !c.is_empty() && c.len() <= MIB));
    assert_eq!(full.concat(), data);

    let ranges = [
        (MIB as u64 - 10, 2 * MIB as u64),
        (3, 7),
        (4 * MIB as u64, 0),
        (data.len() as u64 - 5, 1000),
    ];
    for (offset, length) in ranges {
        let got = get(&agent, ticket.clone(), offset, length).await.unwrap();
        let end = if length == 0 {
            data.len()
        } else {
            (offset + length).min(data.len() as u64) as usize
        };
        assert!(got.iter().all(|c| c.len() <= MIB));
        assert_eq!(
            got.concat(),
            &data[offset as usize..end],
            "range {offset}+{length}"
        );
    }
    let empty = get(&agent, ticket.clone(), data.len() as u64, 0)
        .await
        .unwrap();
    assert!(empty.is_empty());

    let err = get(&agent, ticket, data.len() as u64 + 1, 0)
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::BadArgument, "{err:?}");
    agent.stop().await;
}

#[tokio::test]
async fn same_content_twice_is_stored_once() {
    let agent = TestAgent::start().await;
    let data = pattern(3 * MIB / 2);
    let a = put(&agent, put_messages(agent.put_ticket(0), &data, MIB, true))
        .await
        .unwrap();
    let b = put(
        &agent,
        put_messages(agent.put_ticket(0), &data, MIB / 3, true),
    )
    .await
    .unwrap();
    assert_eq!(a, b);
    assert_eq!(agent.stored_files().0.len(), 1);
    agent.stop().await;
}

#[tokio::test]
async fn missing_shard_is_not_found() {
    let agent = TestAgent::start().await;
    let err = get(&agent, agent.get_ticket(&sha_hex(b"nothing")), 0, 0)
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotFound, "{err:?}");

    let err = get(&agent, agent.get_ticket("NOT-A-HASH"), 0, 0)
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::BadArgument, "{err:?}");
    agent.stop().await;
}

/// Decision: an expired ticket is `Unauthenticated` (the credential is no longer valid),
/// like a bad signature; `PermissionDenied` is kept for a valid ticket of the wrong kind.
#[tokio::test]
async fn expired_ticket_is_unauthenticated() {
    let agent = TestAgent::start().await;
    let data = pattern(1000);
    let stored = put(&agent, put_messages(agent.put_ticket(0), &data, 100, true))
        .await
        .unwrap();

    let mut body = put_body(FIRST_SPACE_ID, 0);
    body.expires_at_ms = common::time::now_ms() - 1;
    let err = put(&agent, put_messages(agent.ticket(&body), &data, 100, true))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::Unauthenticated, "{err:?}");

    let mut body = get_body(FIRST_SPACE_ID, &stored.sha256);
    body.expires_at_ms = common::time::now_ms() - 1;
    let err = get(&agent, agent.ticket(&body), 0, 0).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::Unauthenticated, "{err:?}");
    agent.stop().await;
}

#[tokio::test]
async fn tampered_or_foreign_tickets_are_refused() {
    let agent = TestAgent::start().await;
    let data = pattern(1000);

    let mut tampered = agent.put_ticket(0);
    let last = tampered.signature.len() - 1;
    tampered.signature[last] ^= 0x01;
    let err = put(&agent, put_messages(tampered, &data, 100, true))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::Unauthenticated, "{err:?}");

    // A body changed after signing (here: a bigger max_size).
    let mut forged = agent.put_ticket(10);
    let signature = forged.signature.clone();
    forged = agent.put_ticket(1 << 40);
    forged.signature = signature;
    let err = put(&agent, put_messages(forged, &data, 100, true))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::Unauthenticated, "{err:?}");

    let foreign = sign(
        &common::secret::Secret::new("not the cluster secret"),
        &put_body(FIRST_SPACE_ID, 0),
    );
    let err = put(&agent, put_messages(foreign, &data, 100, true))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::Unauthenticated, "{err:?}");

    // A get ticket cannot be used to put.
    let get_ticket = agent.get_ticket(&sha_hex(&data));
    let err = put(&agent, put_messages(get_ticket, &data, 100, true))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::PermissionDenied, "{err:?}");

    // A valid ticket for a space this agent does not serve.
    let other = agent.ticket(&put_body(FIRST_SPACE_ID + 50, 0));
    let err = put(&agent, put_messages(other, &data, 100, true))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::NotFound, "{err:?}");

    assert_eq!(agent.stored_files(), (vec![], vec![]));
    agent.stop().await;
}

#[tokio::test]
async fn put_without_finish_stores_nothing() {
    let agent = TestAgent::start().await;
    let data = pattern(3 * MIB);
    let err = put(&agent, put_messages(agent.put_ticket(0), &data, MIB, false))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::BadArgument, "{err:?}");
    assert!(err.message().contains("without finish"), "{err:?}");
    assert_eq!(agent.stored_files(), (vec![], vec![]));
    agent.stop().await;
}

/// `finish` with the CRC32C of what was sent: a mismatch (bytes damaged on the way) stores
/// nothing and says so; the right CRC32C stores the shard under the SHA-256 of the bytes.
#[tokio::test]
async fn put_with_a_wrong_transit_checksum_stores_nothing() {
    let agent = TestAgent::start().await;
    let data = pattern(3 * MIB + 5);
    let with_crc = |crc: u32| {
        let mut msgs = put_messages(agent.put_ticket(0), &data, MIB, false);
        msgs.push(PutShardRequest {
            msg: Some(Msg::Finish(proto::agent::Finish { crc32c: Some(crc) })),
        });
        msgs
    };
    let crc = crc32c::crc32c(&data);
    let err = put(&agent, with_crc(crc ^ 1)).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::Unavailable, "{err:?}");
    assert!(err.message().contains("damaged in transit"), "{err:?}");
    assert_eq!(agent.stored_files(), (vec![], vec![]));

    let stored = put(&agent, with_crc(crc)).await.unwrap();
    assert_eq!(stored.size, data.len() as u64);
    assert_eq!(stored.sha256, hex::encode(Sha256::digest(&data)));
    agent.stop().await;
}

#[tokio::test]
async fn protocol_violations_store_nothing() {
    let agent = TestAgent::start().await;
    let data = pattern(2 * MIB);

    // A chunk over 1 MiB.
    let err = put(
        &agent,
        put_messages(agent.put_ticket(0), &data, MIB + 1, true),
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::BadArgument, "{err:?}");
    assert!(err.message().contains("exceeds the limit"), "{err:?}");

    // More than the ticket's max_size.
    let err = put(
        &agent,
        put_messages(agent.put_ticket(MIB as u64), &data, MIB / 2, true),
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::BadArgument, "{err:?}");
    assert!(err.message().contains("max_size"), "{err:?}");

    // Data before the ticket.
    let mut msgs = put_messages(agent.put_ticket(0), &data, MIB, true);
    msgs.swap(0, 1);
    let err = put(&agent, msgs).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::BadArgument, "{err:?}");
    assert!(
        err.message().contains("first message must be the ticket"),
        "{err:?}"
    );

    // A message after finish.
    let mut msgs = put_messages(agent.put_ticket(0), &data, MIB, true);
    msgs.push(PutShardRequest {
        msg: Some(Msg::Data(bytes::Bytes::from_static(b"late"))),
    });
    let err = put(&agent, msgs).await.unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::BadArgument, "{err:?}");
    assert!(err.message().contains("follow finish"), "{err:?}");

    assert_eq!(agent.stored_files(), (vec![], vec![]));

    // Exactly max_size is fine.
    let ok = put(
        &agent,
        put_messages(agent.put_ticket(data.len() as u64), &data, MIB, true),
    )
    .await
    .unwrap();
    assert_eq!(ok.size, data.len() as u64);
    agent.stop().await;
}

#[tokio::test]
async fn tickets_are_unavailable_until_registered() {
    // A coordinator address where nothing listens.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = closed.local_addr().unwrap().to_string();
    drop(closed);
    let agent = TestAgent::start_with(
        address,
        FakeCoordinator::default(),
        CancellationToken::new(),
    )
    .await;

    let err = put(&agent, put_messages(agent.put_ticket(0), b"abc", 100, true))
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), ErrorCode::Unavailable, "{err:?}");
    assert!(err.message().contains("not registered"), "{err:?}");
    assert!(agent.registration.borrow().is_none());
    agent.stop().await;
}

async fn put_small(
    agent: &TestAgent,
    ticket: Ticket,
    data: Vec<u8>,
) -> Result<PutShardResponse, Status> {
    let mut client = agent.client.clone();
    client
        .put_small_shard(PutSmallShardRequest {
            ticket: Some(ticket),
            data: data.into(),
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn put_small_stores_dedups_and_touches() {
    let agent = TestAgent::start().await;
    let data = pattern(4096);
    let resp = put_small(&agent, agent.put_ticket(0), data.clone())
        .await
        .unwrap();
    assert_eq!(resp.size, data.len() as u64);
    assert_eq!(resp.sha256, sha_hex(&data));
    let (shards, tmp) = agent.stored_files();
    assert_eq!(shards, [agent.shard_path(&resp.sha256)]);
    assert!(tmp.is_empty(), "{tmp:?}");
    let got = get(&agent, agent.get_ticket(&resp.sha256), 0, 0)
        .await
        .unwrap();
    assert_eq!(got.concat(), data);

    // The same content again (through PutShard too): stored once, mtime refreshed.
    let path = agent.shard_path(&resp.sha256);
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let again = put_small(&agent, agent.put_ticket(0), data.clone())
        .await
        .unwrap();
    assert_eq!(again, resp);
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    assert!(mtime > old + Duration::from_secs(1800), "touched");
    let streamed = put(&agent, put_messages(agent.put_ticket(0), &data, MIB, true))
        .await
        .unwrap();
    assert_eq!(streamed, resp);
    let (shards, tmp) = agent.stored_files();
    assert_eq!(shards.len(), 1);
    assert!(tmp.is_empty(), "{tmp:?}");

    // An empty shard is a shard too.
    let empty = put_small(&agent, agent.put_ticket(0), Vec::new())
        .await
        .unwrap();
    assert_eq!((empty.size, empty.sha256), (0, sha_hex(b"")));
    agent.stop().await;
}

#[tokio::test]
async fn put_small_refusals_store_nothing() {
    let agent = TestAgent::start().await;
    let too_big = put_small(&agent, agent.put_ticket(0), pattern(MIB + 1))
        .await
        .unwrap_err();
    assert_eq!(code_of(&too_big), ErrorCode::BadArgument, "{too_big:?}");
    let over_ticket = put_small(&agent, agent.put_ticket(100), pattern(101))
        .await
        .unwrap_err();
    assert_eq!(
        code_of(&over_ticket),
        ErrorCode::BadArgument,
        "{over_ticket:?}"
    );
    let wrong_kind = put_small(&agent, agent.get_ticket(&sha_hex(b"x")), pattern(10))
        .await
        .unwrap_err();
    assert_eq!(
        code_of(&wrong_kind),
        ErrorCode::PermissionDenied,
        "{wrong_kind:?}"
    );
    let mut forged = agent.put_ticket(0);
    forged.signature[0] ^= 1;
    let forged = put_small(&agent, forged, pattern(10)).await.unwrap_err();
    assert_eq!(code_of(&forged), ErrorCode::Unauthenticated, "{forged:?}");
    let (shards, tmp) = agent.stored_files();
    assert!(shards.is_empty() && tmp.is_empty(), "{shards:?} {tmp:?}");
    agent.stop().await;
}
