use std::sync::Arc;

use bytes::Bytes;
use common::{CodedError, ErrorCode};
use redundancy::layout::EcLayout;
use redundancy::memory::{Fault, MemoryBlock};
use redundancy::{BlockSourceRef, Error, Policy, ReadStats};

use crate::{corrupt, encode, healthy, pattern, read, sources};

const CS: usize = 64;

/// ec(4,6) with 64-byte pieces: a stripe is 256 bytes; 7 stripes and a bit.
async fn ec46() -> (Policy, Vec<u8>, Vec<Bytes>) {
    let policy = Policy::ec(4, 6, CS as u32).unwrap();
    let data = pattern(7 * 256 + 100, 46);
    let (_, blocks) = encode(policy, &data, 333).await;
    (policy, data, blocks)
}

/// Offsets and lengths around every piece and stripe boundary, plus pseudo-random ones.
fn ranges(size: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let marks: Vec<u64> = (0..=size)
        .filter(|o| {
            let m = o % CS as u64;
            m == 0 || m == 1 || m == CS as u64 - 1
        })
        .collect();
    for &o in marks.iter().step_by(3) {
        for len in [1, 2, 63, 64, 65, 255, 256, 257, 700] {
            if o < size {
                out.push((o, len));
            }
        }
    }
    let rnd = pattern(400, 7);
    for w in rnd.chunks(4) {
        let o = u64::from(u16::from_le_bytes([w[0], w[1]])) % size;
        let len = 1 + u64::from(u16::from_le_bytes([w[2], w[3]])) % 900;
        out.push((o, len));
    }
    out
}

fn expect(data: &[u8], offset: u64, len: u64) -> &[u8] {
    let end = (offset + len).min(data.len() as u64) as usize;
    &data[offset as usize..end]
}

#[tokio::test]
async fn ranged_reads_match_the_plain_bytes_and_fetch_only_what_they_need() {
    let (policy, data, blocks) = ec46().await;
    let layout = EcLayout::of(&policy).unwrap();
    let size = data.len() as u64;
    // Chunks that split pieces, that are exactly a piece (the piece is handed on without a
    // copy, the checksum comes in the next chunk), exactly a frame, and several frames.
    let chunkings = [100, CS, CS + 4, 3 * CS + 5];
    for ((offset, len), chunk) in ranges(size)
        .into_iter()
        .flat_map(|r| chunkings.map(|c| (r, c)))
    {
        let mems: Vec<Arc<MemoryBlock>> = blocks
            .iter()
            .map(|b| MemoryBlock::new(b.clone(), chunk, Fault::None))
            .collect();
        let srcs: Vec<Option<BlockSourceRef>> = mems.iter().map(|m| Some(m.as_source())).collect();
        let (got, stats) = read(policy, size, srcs, offset, Some(len)).await.unwrap();
        assert!(
            got == expect(&data, offset, len),
            "range {offset}+{len}, chunks of {chunk}"
        );
        assert_eq!(ReadStats::get(&stats.degraded_stripes), 0);
        // Exactly the per-block ranges of a healthy read, parity untouched, one open each.
        let end = (offset + len).min(size);
        let want = layout.block_ranges(offset, end);
        for (i, m) in mems.iter().enumerate() {
            let want_len = want[i].as_ref().map_or(0, |r| r.end - r.start);
            assert_eq!(m.requested(), want_len, "block {i} range {offset}+{len}");
            assert_eq!(
                m.opens(),
                u64::from(want_len > 0),
                "block {i} range {offset}+{len}"
            );
        }
    }
}

#[tokio::test]
async fn ranges_at_and_past_the_end() {
    let (policy, data, blocks) = ec46().await;
    let size = data.len() as u64;
    let (got, _) = read(policy, size, sources(&blocks, &healthy(6), 64), size, None)
        .await
        .unwrap();
    assert!(got.is_empty());
    let (got, _) = read(
        policy,
        size,
        sources(&blocks, &healthy(6), 64),
        size - 3,
        Some(1000),
    )
    .await
    .unwrap();
    assert_eq!(got, data[data.len() - 3..]);
    let err = read(
        policy,
        size,
        sources(&blocks, &healthy(6), 64),
        size + 1,
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::BadRange { .. }), "{err}");
    assert_eq!(err.code(), ErrorCode::BadArgument);
    let err = read(
        policy,
        size,
        sources(&blocks[..5], &healthy(5), 64),
        0,
        None,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::BlockCount {
                expected: 6,
                got: 5,
                ..
            }
        ),
        "{err}"
    );
}

/// Every way of losing one or two of six blocks still reads every range correctly.
#[tokio::test]
async fn reads_survive_one_and_two_lost_blocks() {
    let (policy, data, blocks) = ec46().await;
    let layout = EcLayout::of(&policy).unwrap();
    let size = data.len() as u64;
    let mid_block = layout.frame_len() * 3 + 10; // fails inside stripe 3
    let scenarios: Vec<Vec<(usize, Option<Fault>)>> = vec![
        vec![(0, None)],
        vec![(2, Some(Fault::Unreachable))],
        vec![(1, Some(Fault::FailAt(mid_block)))],
        vec![(4, None)],
        vec![(0, None), (3, Some(Fault::Unreachable))],
        vec![(1, Some(Fault::FailAt(mid_block))), (2, None)],
        vec![(3, None), (5, Some(Fault::Unreachable))],
        vec![
            (0, Some(Fault::FailAt(0))),
            (1, Some(Fault::FailAt(layout.frame_len() * 6))),
        ],
        vec![(4, None), (5, None)],
    ];
    let rs = ranges(size);
    for scenario in &scenarios {
        let mut faults = healthy(6);
        for &(i, f) in scenario {
            faults[i] = f;
        }
        let (full, stats) = read(policy, size, sources(&blocks, &faults, 100), 0, None)
            .await
            .unwrap();
        assert!(full == data, "{scenario:?}: full read differs");
        let lost_data = scenario.iter().any(|&(i, _)| i < 4);
        assert_eq!(
            ReadStats::get(&stats.degraded_stripes) > 0,
            lost_data,
            "{scenario:?}"
        );
        for &(offset, len) in rs.iter().step_by(5) {
            let (got, _) = read(
                policy,
                size,
                sources(&blocks, &faults, 100),
                offset,
                Some(len),
            )
            .await
            .unwrap();
            assert!(
                got == expect(&data, offset, len),
                "{scenario:?} range {offset}+{len}"
            );
        }
    }
}

#[tokio::test]
async fn corrupt_pieces_are_detected_and_rebuilt() {
    let (policy, data, blocks) = ec46().await;
    let layout = EcLayout::of(&policy).unwrap();
    let size = data.len() as u64;
    let frame = layout.frame_len() as usize;
    let mut bad = blocks.clone();
    bad[2] = corrupt(&bad[2], frame + 5); // data block 2, stripe 1, piece byte
    bad[0] = corrupt(&bad[0], 4 * frame + CS + 1); // data block 0, stripe 4, checksum byte
    bad[4] = corrupt(&bad[4], frame + 9); // parity, stripe 1
    let (got, stats) = read(policy, size, sources(&bad, &healthy(6), 100), 0, None)
        .await
        .unwrap();
    assert!(got == data);
    assert_eq!(
        ReadStats::get(&stats.corrupt_pieces),
        3,
        "2 data pieces + the parity piece tried for stripe 1"
    );
    assert_eq!(ReadStats::get(&stats.degraded_stripes), 2);
    // A ranged read inside the corrupt piece alone.
    let start = 256 + 2 * 64 + 3;
    let (got, stats) = read(
        policy,
        size,
        sources(&bad, &healthy(6), 100),
        start,
        Some(10),
    )
    .await
    .unwrap();
    assert_eq!(got, data[start as usize..start as usize + 10]);
    assert_eq!(ReadStats::get(&stats.corrupt_pieces), 2);
    // Corruption plus one lost block is still within parity for stripe 4.
    let mut faults = healthy(6);
    faults[5] = None;
    let (got, _) = read(
        policy,
        size,
        sources(&bad, &faults, 100),
        4 * 256,
        Some(256),
    )
    .await
    .unwrap();
    assert_eq!(got, data[4 * 256..5 * 256]);
}

#[tokio::test]
async fn losing_more_blocks_than_parity_is_a_clear_error() {
    let (policy, data, blocks) = ec46().await;
    let size = data.len() as u64;
    let mut faults = healthy(6);
    faults[0] = None;
    faults[2] = Some(Fault::Unreachable);
    faults[5] = None;
    let err = read(policy, size, sources(&blocks, &faults, 100), 0, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotEnoughBlocks {
                stripe: 0,
                usable: 3,
                needed: 4
            }
        ),
        "{err}"
    );
    assert_eq!(err.code(), ErrorCode::Unavailable);
    assert!(
        err.to_string()
            .contains("only 3 usable blocks of the 4 needed"),
        "{err}"
    );
    // Two lost and a corrupt piece in the stripe read: also too few.
    let mut faults = healthy(6);
    faults[1] = None;
    faults[4] = None;
    let frame = EcLayout::of(&policy).unwrap().frame_len() as usize;
    let mut bad = blocks.clone();
    bad[3] = corrupt(&bad[3], 2 * frame);
    let err = read(
        policy,
        size,
        sources(&bad, &faults, 100),
        2 * 256,
        Some(256),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::NotEnoughBlocks { stripe: 2, .. }),
        "{err}"
    );
    // But a range that avoids the corrupt stripe still reads.
    let (got, _) = read(policy, size, sources(&bad, &faults, 100), 0, Some(2 * 256))
        .await
        .unwrap();
    assert_eq!(got, data[..512]);
}

#[tokio::test]
async fn other_ec_shapes_rebuild_too() {
    for (k, n, cs) in [
        (1u32, 2u32, 64u32),
        (2, 3, 128),
        (3, 5, 64),
        (10, 14, 64),
        (3, 5, 65_728),
    ] {
        let policy = Policy::ec(k, n, cs).unwrap();
        let data = pattern((k * cs * 3 + 17) as usize, u64::from(k));
        let (_, blocks) = encode(policy, &data, 50).await;
        let mut faults = healthy(n as usize);
        for f in faults.iter_mut().take((n - k) as usize) {
            *f = None;
        }
        let (got, _) = read(
            policy,
            data.len() as u64,
            sources(&blocks, &faults, 77),
            0,
            None,
        )
        .await
        .unwrap();
        assert!(
            got == data,
            "ec({k},{n}) with the first {} blocks lost",
            n - k
        );
        faults[(n - k) as usize] = None;
        let err = read(
            policy,
            data.len() as u64,
            sources(&blocks, &faults, 77),
            0,
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::NotEnoughBlocks { .. }), "{err}");
    }
}

#[tokio::test]
async fn rep_reads_fall_over_to_the_next_replica() {
    let policy = Policy::rep(3).unwrap();
    let data = pattern(5000, 3);
    let (_, blocks) = encode(policy, &data, 999).await;
    let cases = [
        vec![None, Some(Fault::None), Some(Fault::None)],
        vec![
            Some(Fault::Unreachable),
            Some(Fault::FailAt(2500)),
            Some(Fault::None),
        ],
        vec![Some(Fault::FailAt(1200)), None, Some(Fault::None)],
        vec![
            Some(Fault::FailAt(4000)),
            Some(Fault::FailAt(600)),
            Some(Fault::None),
        ],
    ];
    for faults in &cases {
        for (offset, len) in [(0, None), (1000, Some(3000)), (3999, Some(5))] {
            let (got, _) = read(policy, 5000, sources(&blocks, faults, 256), offset, len)
                .await
                .unwrap();
            let end = len.map_or(5000, |l| offset + l) as usize;
            assert!(
                got == data[offset as usize..end],
                "{faults:?} {offset} {len:?}"
            );
        }
    }
    let faults = vec![Some(Fault::FailAt(1200)), None, Some(Fault::Unreachable)];
    let err = read(policy, 5000, sources(&blocks, &faults, 256), 0, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ReplicasExhausted {
                offset: 1024,
                tried: 3
            }
        ),
        "{err}"
    );
    assert_eq!(err.code(), ErrorCode::Unavailable);
}
