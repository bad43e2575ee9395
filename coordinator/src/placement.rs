//! Where an upload's shard goes. Pure function, tested exhaustively.
//!
//! Policy: the `affinity` space when it is live; otherwise the live spaces in turn
//! (round robin by a caller-held counter), so consecutive uploads spread over spaces.

use common::SpaceId;

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

#[cfg(test)]
mod tests {
    use super::*;

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
