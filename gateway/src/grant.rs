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
//! reservation costs nothing (no metadata was written for it).

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
        let pool = self.pool((package, affinity));
        let mut pool = pool.lock().await;
        let now = Instant::now();
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
                    pool.granted_at = Some(Instant::now());
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
    /// agent went away, its space changed), so the next upload asks again.
    pub fn forget(&self, package: u64, affinity: u64) {
        self.pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(package, affinity));
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
