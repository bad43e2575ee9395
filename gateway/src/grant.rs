//! Cached write grants (docs/architecture.md, "Write grants"): reservations of small
//! uploads fetched ahead of time, so a small upload into a `none` package needs no
//! reservation call of its own (hash → `PutSmallShards` → `CommitUploads`).
//!
//! Per (package, affinity) the gateway keeps a pool of path-less reservations from one
//! `GrantUploads` call. A pool is used for at most [`MAX_AGE`] (placement and agent liveness
//! are then asked again); a package the coordinator refuses to grant (rep/ec policy) or a
//! failed grant call turns grants off for that key for [`DENIED_FOR`], and its uploads take
//! the begin path. The grant size adapts: it doubles while pools run dry within their age
//! (busy) and falls back to [`MIN_GRANT`] when reservations expire unused (idle), so an
//! idle gateway reserves few ids and a busy one makes few grant calls. An unused
//! reservation costs only its id, an object id never given out (no metadata was written
//! for it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use client::CoordinatorClient;
use proto::coordinator as pb;

/// Longest time a grant's reservations are handed out.
pub const MAX_AGE: Duration = Duration::from_secs(2);
/// How long grants stay off for a key after a refusal or a failed grant call.
pub const DENIED_FOR: Duration = Duration::from_secs(2);
/// Smallest and largest number of reservations asked for in one grant.
pub const MIN_GRANT: u32 = 8;
pub const MAX_GRANT: u32 = 128;
/// Keys (package, affinity) remembered before the map is emptied.
const MAX_KEYS: usize = 4096;

type Key = (u64, u64);

pub struct Grants {
    coordinator: CoordinatorClient,
    pools: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<Pool>>>>,
}

struct Pool {
    /// Unused reservations; handed out from the end.
    reservations: Vec<pb::BeginUploadResponse>,
    /// When the reservations were granted.
    granted_at: Option<Instant>,
    /// Grants are off for this key until then.
    denied_until: Option<Instant>,
    /// How many reservations the next grant asks for.
    size: u32,
}

impl Grants {
    pub fn new(coordinator: CoordinatorClient) -> Self {
        Grants {
            coordinator,
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// A reservation of one upload into `package` (placed with `affinity`), or `None` when
    /// this upload must be begun on its own.
    pub async fn take(&self, package: u64, affinity: u64) -> Option<pb::BeginUploadResponse> {
        self.take_at(package, affinity, Instant::now()).await
    }

    /// [`Grants::take`] at time `now` (tests step the clock).
    async fn take_at(
        &self,
        package: u64,
        affinity: u64,
        now: Instant,
    ) -> Option<pb::BeginUploadResponse> {
        let pool = self.pool((package, affinity));
        let mut pool = pool.lock().await;
        if pool.denied_until.is_some_and(|until| now < until) {
            return None;
        }
        if let Some(at) = pool.granted_at {
            let age = now.duration_since(at);
            if age >= MAX_AGE {
                if !pool.reservations.is_empty() {
                    // Idle: fewer next time.
                    pool.size = MIN_GRANT;
                }
                pool.reservations.clear();
            } else if pool.reservations.is_empty() && age < MAX_AGE / 4 {
                // Busy: the grant ran dry quickly.
                pool.size = (pool.size * 2).min(MAX_GRANT);
            }
        }
        if pool.reservations.is_empty() {
            let request = pb::GrantUploadsRequest {
                package_id: package,
                affinity,
                count: pool.size,
            };
            match self.coordinator.clone().grant_uploads(request).await {
                Ok(answer) => {
                    let answer = answer.into_inner();
                    if !answer.granted || answer.uploads.is_empty() {
                        tracing::debug!(package, reason = %answer.reason, "no write grant");
                        pool.denied_until = Some(now + DENIED_FOR);
                        return None;
                    }
                    pool.reservations = answer.uploads;
                    pool.reservations.reverse();
                    pool.granted_at = Some(now);
                    pool.denied_until = None;
                }
                Err(status) => {
                    // The begin path gives the caller the real answer (package missing, no
                    // live space, an older coordinator without grants).
                    tracing::debug!(package, error = %status, "write grant failed");
                    pool.denied_until = Some(now + DENIED_FOR);
                    return None;
                }
            }
        }
        pool.reservations.pop()
    }

    /// Drop the unused reservations for (`package`, `affinity`): one of them failed (its
    /// agent went away, its token was refused), so the next upload asks again. The pool stays
    /// (cleared in place, so a concurrent `take` sees the same pool) with its grant size and
    /// any refusal; the next grant asks for the same size (no "ran dry" doubling).
    pub async fn forget(&self, package: u64, affinity: u64) {
        let pool = self
            .pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(package, affinity))
            .cloned();
        if let Some(pool) = pool {
            let mut pool = pool.lock().await;
            pool.reservations.clear();
            pool.granted_at = None;
        }
    }

    fn pool(&self, key: Key) -> Arc<tokio::sync::Mutex<Pool>> {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        if pools.len() >= MAX_KEYS && !pools.contains_key(&key) {
            pools.clear();
        }
        pools
            .entry(key)
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(Pool {
                    reservations: Vec::new(),
                    granted_at: None,
                    denied_until: None,
                    size: MIN_GRANT,
                }))
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{DENIED_FOR, Grants, MAX_AGE, MAX_GRANT, MIN_GRANT};
    use crate::testing::Fixture;

    /// Grant sizes the fake coordinator was asked for so far.
    fn asked(fx: &Fixture) -> Vec<u32> {
        fx.coord().grant_requests.iter().map(|r| r.count).collect()
    }

    /// Take `n` reservations of package 1 at `now`; all must be granted, with distinct ids.
    async fn take_n(grants: &Grants, now: Instant, n: usize) -> Vec<u64> {
        let mut ids = Vec::new();
        for _ in 0..n {
            let r = grants.take_at(1, 0, now).await.expect("a reservation");
            ids.push(r.upload_id);
        }
        ids
    }

    #[tokio::test]
    async fn grants_grow_while_busy_shrink_when_idle_and_expire() {
        let fx = Fixture::start().await;
        fx.coord().grant = Some(true);
        let grants = Grants::new(fx.state.coordinator());
        let t0 = Instant::now();
        // Pools that run dry within their age double the next grant, up to MAX_GRANT.
        let mut ids = Vec::new();
        for size in [8, 16, 32, 64, 128, 128] {
            ids.extend(take_n(&grants, t0, size).await);
        }
        assert_eq!(asked(&fx), [8, 16, 32, 64, 128, 128]);
        assert_eq!(MIN_GRANT, 8);
        assert_eq!(MAX_GRANT, 128);
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            ids.len(),
            "each reservation is handed out once"
        );

        // One more (a fresh grant of 128), then the rest ages out unused: dropped, and the
        // next grant falls back to MIN_GRANT.
        let first = take_n(&grants, t0, 1).await[0];
        assert_eq!(asked(&fx).len(), 7);
        let later = take_n(&grants, t0 + MAX_AGE, 1).await[0];
        assert_eq!(asked(&fx), [8, 16, 32, 64, 128, 128, 128, 8]);
        assert!(
            later > first,
            "a new grant, not the old pool: {later} vs {first}"
        );
        // Within the age, the pool serves without asking.
        take_n(&grants, t0 + MAX_AGE + Duration::from_millis(1), 7).await;
        assert_eq!(asked(&fx).len(), 8);
    }

    #[tokio::test]
    async fn a_refusal_turns_grants_off_for_a_while() {
        let fx = Fixture::start().await;
        fx.coord().grant = Some(false);
        let grants = Grants::new(fx.state.coordinator());
        let t0 = Instant::now();
        assert!(grants.take_at(1, 0, t0).await.is_none());
        assert_eq!(asked(&fx).len(), 1);
        // Denied: not asked again until DENIED_FOR has passed, even if it would grant now.
        fx.coord().grant = Some(true);
        let almost = t0 + DENIED_FOR - Duration::from_millis(1);
        assert!(grants.take_at(1, 0, almost).await.is_none());
        assert_eq!(asked(&fx).len(), 1);
        // Another key is not affected.
        assert!(grants.take_at(2, 0, almost).await.is_some());
        assert!(grants.take_at(1, 0, t0 + DENIED_FOR).await.is_some());
        assert_eq!(asked(&fx), [8, 8, 8]);

        // A failed grant call turns grants off too.
        fx.coord().grant = None;
        grants.forget(3, 0).await; // no pool yet: nothing to forget
        assert!(grants.take_at(3, 0, t0).await.is_none());
        fx.coord().grant = Some(true);
        assert!(
            grants
                .take_at(3, 0, t0 + Duration::from_millis(1))
                .await
                .is_none()
        );
        assert_eq!(asked(&fx).len(), 4);
    }

    #[tokio::test]
    async fn forget_clears_the_pool_in_place_and_keeps_its_state() {
        let fx = Fixture::start().await;
        fx.coord().grant = Some(true);
        let grants = Grants::new(fx.state.coordinator());
        let t0 = Instant::now();
        take_n(&grants, t0, 8 + 1).await; // grew to 16
        assert_eq!(asked(&fx), [8, 16]);
        grants.forget(1, 0).await;
        // Asked again at once, for the same size (no "ran dry" doubling, no reset).
        take_n(&grants, t0, 1).await;
        assert_eq!(asked(&fx), [8, 16, 16]);

        // A refusal survives a forget.
        fx.coord().grant = Some(false);
        grants.forget(1, 0).await;
        assert!(grants.take_at(1, 0, t0).await.is_none());
        fx.coord().grant = Some(true);
        grants.forget(1, 0).await;
        assert!(grants.take_at(1, 0, t0).await.is_none());
        assert_eq!(asked(&fx).len(), 4);
    }
}
