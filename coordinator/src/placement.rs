//! Where an upload's shard goes. Pure function, tested exhaustively.
//!
//! Policy: the `affinity` space when it is live; otherwise the live spaces in turn
//! (round robin by a caller-held counter), so consecutive uploads spread over spaces.

use common::SpaceId;

use crate::registry::LiveSpace;

/// Choose among `live` (sorted, deduplicated) spaces; `None` when there is none.
pub fn choose(live: &[SpaceId], affinity: Option<SpaceId>, turn: u64) -> Option<SpaceId> {
    if let Some(a) = affinity
        && live.contains(&a)
    {
        return Some(a);
    }
    if live.is_empty() {
        return None;
    }
    Some(live[(turn % live.len() as u64) as usize])
}

/// `count` distinct spaces among `live` (sorted, deduplicated) for the blocks of a rep/ec
/// object: the `affinity` space first when it is live, then the others in turn starting
/// at `turn` (so consecutive uploads spread their first blocks). `Err(missing)` when fewer
/// than `count` are live.
pub fn choose_distinct(
    live: &[SpaceId],
    affinity: Option<SpaceId>,
    turn: u64,
    count: usize,
) -> Result<Vec<SpaceId>, usize> {
    if live.len() < count {
        return Err(count - live.len());
    }
    let mut out = Vec::with_capacity(count);
    if let Some(a) = affinity
        && live.contains(&a)
        && count > 0
    {
        out.push(a);
    }
    let start = (turn % live.len().max(1) as u64) as usize;
    for i in 0..live.len() {
        if out.len() == count {
            break;
        }
        let s = live[(start + i) % live.len()];
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// [`choose_distinct`] over the live spaces themselves (sorted by space, as
/// `Registry::live_spaces` lists them): the chosen ones, in order. Used by rep/ec uploads,
/// repair and re-encode.
pub fn choose_live(
    live: &[LiveSpace],
    affinity: Option<SpaceId>,
    turn: u64,
    count: usize,
) -> Result<Vec<LiveSpace>, usize> {
    let ids: Vec<SpaceId> = live.iter().map(|l| l.space).collect();
    let chosen = choose_distinct(&ids, affinity, turn, count)?;
    Ok(chosen
        .into_iter()
        .filter_map(|s| live.iter().find(|l| l.space == s).cloned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_blocks_take_affinity_first_and_never_repeat() {
        let live: Vec<SpaceId> = (1..=6).map(SpaceId).collect();
        for turn in 0..12 {
            let got = choose_distinct(&live, Some(SpaceId(4)), turn, 6).unwrap();
            assert_eq!(got[0], SpaceId(4));
            let mut sorted = got.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted, live, "turn {turn}: {got:?}");
        }
        assert_eq!(
            choose_distinct(&live, None, 1, 2).unwrap(),
            vec![SpaceId(2), SpaceId(3)]
        );
        assert_eq!(
            choose_distinct(&live, Some(SpaceId(9)), 5, 2).unwrap(),
            vec![SpaceId(6), SpaceId(1)]
        );
        assert_eq!(choose_distinct(&live[..4], None, 0, 6), Err(2));
        assert_eq!(choose_distinct(&[], None, 0, 2), Err(2));
    }

    #[test]
    fn affinity_wins_when_live() {
        let live = [SpaceId(1), SpaceId(2), SpaceId(3)];
        for turn in 0..6 {
            assert_eq!(choose(&live, Some(SpaceId(2)), turn), Some(SpaceId(2)));
        }
    }

    #[test]
    fn dead_or_unknown_affinity_falls_back_to_round_robin() {
        let live = [SpaceId(1), SpaceId(2)];
        let picks: Vec<_> = (0..4).map(|t| choose(&live, Some(SpaceId(9)), t)).collect();
        assert_eq!(
            picks,
            vec![
                Some(SpaceId(1)),
                Some(SpaceId(2)),
                Some(SpaceId(1)),
                Some(SpaceId(2))
            ]
        );
    }

    #[test]
    fn nothing_live_means_no_placement() {
        assert_eq!(choose(&[], None, 0), None);
        assert_eq!(choose(&[], Some(SpaceId(1)), 0), None);
    }
}
