use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{CodedError, ErrorCode};
use redundancy::layout::EcLayout;
use redundancy::{EncodeOptions, Error, Policy};

use crate::{drain, encode, encode_with, healthy, pattern, read, sha, sources};

/// Options that make the encoder hash every block (tests that check block hashes).
fn hashing() -> EncodeOptions {
    EncodeOptions {
        hash_blocks: true,
        ..EncodeOptions::default()
    }
}

fn policies() -> Vec<Policy> {
    vec![
        Policy::ec(4, 6, 64).unwrap(),
        Policy::ec(2, 3, 128).unwrap(),
        Policy::ec(1, 2, 64).unwrap(),
        Policy::rep(2).unwrap(),
        Policy::None,
    ]
}

fn sizes(policy: &Policy) -> Vec<usize> {
    let (cs, stripe) = match EcLayout::of(policy) {
        Some(l) => (l.chunk_size, l.stripe_len() as usize),
        None => (64, 256),
    };
    vec![
        0,
        1,
        cs - 1,
        cs,
        cs + 1,
        stripe - 1,
        stripe,
        stripe + 1,
        3 * stripe,
        5 * stripe + cs + 7,
    ]
}

#[tokio::test]
async fn every_policy_round_trips_every_size() {
    for policy in policies() {
        for size in sizes(&policy) {
            for input_chunk in [7, 1000] {
                let data = pattern(size, size as u64 + 1);
                let (summary, blocks) = encode_with(policy, hashing(), &data, input_chunk).await;
                let ctx = format!("{policy:?} size {size} input {input_chunk}");
                assert_eq!(summary.size, size as u64, "{ctx}");
                assert_eq!(summary.sha256, sha(&data), "{ctx}");
                assert_eq!(blocks.len(), policy.block_count(), "{ctx}");
                for (b, s) in blocks.iter().zip(&summary.blocks) {
                    assert_eq!(s.size, b.len() as u64, "{ctx}");
                    assert_eq!(s.sha256, Some(sha(b)), "{ctx}");
                }
                match EcLayout::of(&policy) {
                    Some(l) => {
                        for b in &blocks {
                            assert_eq!(b.len() as u64, l.block_len(size as u64), "{ctx}");
                        }
                    }
                    None => assert!(blocks.iter().all(|b| b[..] == data[..]), "{ctx}"),
                }
                let (back, _) = read(
                    policy,
                    size as u64,
                    sources(&blocks, &healthy(blocks.len()), 100),
                    0,
                    None,
                )
                .await
                .unwrap();
                assert!(back == data, "{ctx}: bytes differ");
            }
        }
    }
}

#[tokio::test]
async fn file_hash_is_full_plus_upper_hex() {
    let (summary, _) = encode(Policy::ec(2, 3, 64).unwrap(), b"abc", 1).await;
    assert_eq!(
        summary.file_hash(),
        "FullBA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"
    );
}

/// The encoder must stop pulling input when nobody reads its blocks: at most the stripe it
/// fills, the stripe it sends and the channel capacity can be in memory.
#[tokio::test]
async fn encoder_memory_is_bounded_by_its_channels() {
    let policy = Policy::ec(4, 6, 4096).unwrap();
    let layout = EcLayout::of(&policy).unwrap();
    let capacity = 3;
    let (encoder, mut streams) = redundancy::encoder(
        policy,
        EncodeOptions {
            channel_capacity: capacity,
            ..EncodeOptions::default()
        },
    )
    .unwrap();
    let bound = encoder.memory_bound();
    assert_eq!(
        bound,
        layout.stripe_len() + (capacity as u64 + 1) * 6 * layout.frame_len()
    );
    assert!(streams.iter().all(|s| s.capacity() == 2 * capacity));

    let stripes = 64u64;
    let total = stripes * layout.stripe_len();
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = pulled.clone();
    let chunk = Bytes::from(pattern(1000, 9));
    let input = futures::stream::iter((0..total.div_ceil(1000)).map(move |i| {
        let len = (total - i * 1000).min(1000) as usize;
        counter.fetch_add(len as u64, Ordering::SeqCst);
        Ok::<_, io::Error>(chunk.slice(..len))
    }));
    let task = tokio::spawn(encoder.run(input));

    // Nobody reads: wait until every channel is full, then give the encoder time to misbehave.
    let full = common::testing::wait_until(Duration::from_secs(10), || {
        let full = streams.iter().all(|s| s.queued() == s.capacity());
        async move { full }
    })
    .await;
    assert!(full, "channels never filled");
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
    let held = pulled.load(Ordering::SeqCst);
    // Input held = what the channels carry (capacity frames of data per data block) + the
    // stripe being sent + the stripe being filled.
    let max_input = (capacity as u64 + 2) * layout.stripe_len();
    assert!(
        held <= max_input,
        "pulled {held} bytes, more than {max_input}"
    );
    assert!(held < total / 4, "encoder read ahead {held} of {total}");
    assert!(!task.is_finished());

    // Reading the blocks lets it finish.
    let readers: Vec<_> = streams.drain(..).map(|s| tokio::spawn(drain(s))).collect();
    let summary = task.await.unwrap().unwrap();
    assert_eq!(summary.size, total);
    for r in readers {
        assert_eq!(r.await.unwrap() as u64, stripes * layout.frame_len());
    }
}

#[tokio::test]
async fn rep_encoder_is_bounded_too() {
    let (encoder, streams) = redundancy::encoder(
        Policy::rep(2).unwrap(),
        EncodeOptions {
            channel_capacity: 2,
            ..EncodeOptions::default()
        },
    )
    .unwrap();
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = pulled.clone();
    let input = futures::stream::iter((0..1000).map(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok::<_, io::Error>(Bytes::from_static(&[1u8; 100]))
    }));
    let task = tokio::spawn(encoder.run(input));
    let full = common::testing::wait_until(Duration::from_secs(10), || {
        let full = streams.iter().all(|s| s.queued() == s.capacity());
        async move { full }
    })
    .await;
    assert!(full);
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
    assert!(
        pulled.load(Ordering::SeqCst) <= 3,
        "read ahead past its channels"
    );
    drop(streams);
    let err = task.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::SendBlock { .. }), "{err}");
}

#[tokio::test]
async fn input_errors_and_vanished_consumers_fail_the_encode() {
    let (encoder, streams) =
        redundancy::encoder(Policy::ec(2, 3, 64).unwrap(), EncodeOptions::default()).unwrap();
    let input = futures::stream::iter(vec![
        Ok(Bytes::from(pattern(300, 1))),
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ]);
    let readers: Vec<_> = streams
        .into_iter()
        .map(|s| tokio::spawn(drain(s)))
        .collect();
    let err = encoder.run(input).await.unwrap_err();
    assert!(matches!(err, Error::ReadInput { .. }), "{err}");
    assert_eq!(err.code(), ErrorCode::Unavailable);
    for r in readers {
        r.await.unwrap();
    }

    let (encoder, mut streams) =
        redundancy::encoder(Policy::ec(2, 3, 64).unwrap(), EncodeOptions::default()).unwrap();
    streams.remove(1);
    let readers: Vec<_> = streams
        .into_iter()
        .map(|s| tokio::spawn(drain(s)))
        .collect();
    let input = futures::stream::iter(vec![Ok::<_, io::Error>(Bytes::from(pattern(10_000, 2)))]);
    let err = encoder.run(input).await.unwrap_err();
    assert!(matches!(err, Error::SendBlock { index: 1 }), "{err}");
    for r in readers {
        r.await.unwrap();
    }
}

/// Without block hashes an encoder stores exactly the same blocks and object hash, and
/// reports no block hashes (the caller takes the agents' instead).
#[tokio::test]
async fn blocks_without_hashes_are_the_same_blocks() {
    for policy in policies() {
        let data = pattern(3 * 1000 + 17, 5);
        let (hashed, hashed_blocks) = encode_with(policy, hashing(), &data, 100).await;
        let (plain, blocks) = encode(policy, &data, 100).await;
        assert_eq!(blocks, hashed_blocks, "{policy:?}");
        assert_eq!(plain.sha256, hashed.sha256, "{policy:?}");
        assert_eq!(plain.size, hashed.size, "{policy:?}");
        for (p, h) in plain.blocks.iter().zip(&hashed.blocks) {
            assert_eq!(p.size, h.size, "{policy:?}");
            assert!(h.sha256.is_some(), "{policy:?}");
            match policy {
                // rep/none blocks are the object: their hash is the object's, free.
                Policy::None | Policy::Rep { .. } => assert_eq!(p.sha256, h.sha256),
                Policy::Ec { .. } => assert_eq!(p.sha256, None, "{policy:?}"),
            }
        }
    }
}

#[tokio::test]
async fn invalid_policies_do_not_build_encoders() {
    let err = redundancy::encoder(
        Policy::Ec {
            k: 4,
            n: 4,
            chunk_size: 64,
        },
        EncodeOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::BadArgument);
}
