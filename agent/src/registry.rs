//! The spaces this agent serves, by the ids the coordinator assigned, and the "refresh now"
//! signal a request for an unknown or stale space sends to the registration loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use common::SpaceId;
use tokio::sync::{Notify, watch};

use crate::error::{
    NotRegisteredSnafu, Result, SpaceUnusableSnafu, StaleSpaceSnafu, UnknownSpaceSnafu,
};
use crate::store::SpaceStore;

/// Longest a request waits for the re-registration its unknown or stale space triggered.
pub const REFRESH_WAIT: Duration = Duration::from_secs(5);

/// A space being served.
#[derive(Debug, Clone)]
pub struct Served {
    pub store: SpaceStore,
    /// Revision of an API space's configuration; `None` for a space declared in the agent's
    /// config (only the config changes it, so tickets' revisions do not apply).
    pub revision: Option<u64>,
}

/// What the registry holds after a registration.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub spaces: HashMap<SpaceId, Served>,
    /// API spaces whose configuration could not be turned into a store: revision and why.
    pub broken: HashMap<SpaceId, (u64, String)>,
}

/// Outcome of one lookup.
enum Lookup {
    Ready(SpaceStore),
    NotRegistered,
    Unknown,
    Stale { held: u64 },
    Broken { revision: u64, reason: String },
}

/// Registration attempts counted so a waiter can tell "an attempt that started after I
/// asked has finished" (its answer reflects every space created before the request).
#[derive(Debug)]
pub(crate) struct Refresh {
    notify: Notify,
    started: AtomicU64,
    finished: watch::Sender<u64>,
}

impl Refresh {
    fn new() -> Refresh {
        Refresh {
            notify: Notify::new(),
            started: AtomicU64::new(0),
            finished: watch::channel(0).0,
        }
    }

    /// The registration loop starts attempt number … (returned; pass it to `finish`).
    pub(crate) fn begin(&self) -> u64 {
        self.started.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Attempt `seq` finished (successfully or not).
    pub(crate) fn finish(&self, seq: u64) {
        self.finished.send_if_modified(|done| {
            let newer = seq > *done;
            if newer {
                *done = seq;
            }
            newer
        });
    }

    /// Resolves when someone asked for a registration now (one stored permit: requests
    /// arriving during an attempt coalesce into the next one).
    pub(crate) async fn requested(&self) {
        self.notify.notified().await;
    }

    /// Ask for a registration now and wait, at most `bound`, until one that started after
    /// this call has finished.
    async fn request_and_wait(&self, bound: Duration) {
        let mut finished = self.finished.subscribe();
        let want = self.started.load(Ordering::SeqCst) + 1;
        self.notify.notify_one();
        // Timing out, or the loop having stopped, both leave the registry as it is.
        let _ = tokio::time::timeout(bound, finished.wait_for(|done| *done >= want)).await;
    }
}

/// The stores this agent serves, by space id. `None` until the first registration
/// succeeds. Cheap to clone; clones share the map and the refresh signal.
#[derive(Clone, Debug)]
pub struct SpaceRegistry {
    inner: Arc<RwLock<Option<Snapshot>>>,
    refresh: Arc<Refresh>,
    wait: Duration,
}

impl Default for SpaceRegistry {
    fn default() -> Self {
        SpaceRegistry::with_wait(REFRESH_WAIT)
    }
}

impl SpaceRegistry {
    /// A registry whose lookups wait at most `wait` for a triggered re-registration.
    pub fn with_wait(wait: Duration) -> SpaceRegistry {
        SpaceRegistry {
            inner: Arc::default(),
            refresh: Arc::new(Refresh::new()),
            wait,
        }
    }

    /// The store of space `id` as of now, ignoring revisions and without refreshing:
    /// `NotRegistered` before the first registration, `UnknownSpace` for an id this agent
    /// does not serve.
    pub fn get(&self, id: SpaceId) -> Result<SpaceStore> {
        match self.lookup(id, 0) {
            Lookup::Ready(store) => Ok(store),
            other => Self::refusal(id, 0, other),
        }
    }

    /// The store to serve a ticket for space `id` issued at configuration `revision`. When
    /// the space is unknown, broken at an older revision, or held at an older revision,
    /// trigger a re-registration and wait for it (at most the registry's wait), then look
    /// again: still unknown → `UnknownSpace` (`NotFound`); still older → `StaleSpace`
    /// (`Unavailable`); broken → `SpaceUnusable`; never registered → `NotRegistered`.
    pub async fn resolve(&self, id: SpaceId, revision: u64) -> Result<SpaceStore> {
        match self.lookup(id, revision) {
            Lookup::Ready(store) => return Ok(store),
            Lookup::Broken {
                revision: held,
                reason,
            } if held >= revision => {
                return SpaceUnusableSnafu {
                    space_id: id,
                    reason,
                }
                .fail();
            }
            _ => {}
        }
        self.refresh.request_and_wait(self.wait).await;
        match self.lookup(id, revision) {
            Lookup::Ready(store) => Ok(store),
            other => Self::refusal(id, revision, other),
        }
    }

    fn refusal(id: SpaceId, wanted: u64, lookup: Lookup) -> Result<SpaceStore> {
        match lookup {
            Lookup::Ready(store) => Ok(store),
            Lookup::NotRegistered => NotRegisteredSnafu.fail(),
            Lookup::Unknown => UnknownSpaceSnafu { space_id: id }.fail(),
            Lookup::Stale { held } => StaleSpaceSnafu {
                space_id: id,
                held,
                wanted,
            }
            .fail(),
            Lookup::Broken { reason, .. } => SpaceUnusableSnafu {
                space_id: id,
                reason,
            }
            .fail(),
        }
    }

    fn lookup(&self, id: SpaceId, revision: u64) -> Lookup {
        let guard = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let Some(snapshot) = guard.as_ref() else {
            return Lookup::NotRegistered;
        };
        if let Some(served) = snapshot.spaces.get(&id) {
            return match served.revision {
                Some(held) if held < revision => Lookup::Stale { held },
                _ => Lookup::Ready(served.store.clone()),
            };
        }
        match snapshot.broken.get(&id) {
            Some((revision, reason)) => Lookup::Broken {
                revision: *revision,
                reason: reason.clone(),
            },
            None => Lookup::Unknown,
        }
    }

    /// Replace what is served (after a registration or heartbeat).
    pub fn set(&self, snapshot: Snapshot) {
        *self.inner.write().unwrap_or_else(PoisonError::into_inner) = Some(snapshot);
    }

    /// The refresh signal shared with the registration loop.
    pub(crate) fn refresh(&self) -> Arc<Refresh> {
        self.refresh.clone()
    }
}

#[cfg(test)]
mod tests {
    use common::{CodedError, ErrorCode};

    use super::*;
    use crate::Error;

    fn store(dir: &tempfile::TempDir) -> SpaceStore {
        SpaceStore::open_local("test", &dir.path().join("space")).unwrap()
    }

    fn served(store: &SpaceStore, revision: Option<u64>) -> Served {
        Served {
            store: store.clone(),
            revision,
        }
    }

    #[test]
    fn registry_refuses_until_registered_then_maps_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let reg = SpaceRegistry::default();
        assert!(matches!(reg.get(SpaceId(1)), Err(Error::NotRegistered)));
        reg.set(Snapshot {
            spaces: HashMap::from([(SpaceId(1), served(&store, None))]),
            broken: HashMap::new(),
        });
        assert_eq!(reg.get(SpaceId(1)).unwrap().name(), "test");
        let err = reg.get(SpaceId(2)).unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound);
        assert_eq!(err.to_string(), "user space 2 is not served by this agent");
    }

    #[tokio::test]
    async fn resolve_waits_for_a_registration_started_after_the_request() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let reg = SpaceRegistry::with_wait(Duration::from_secs(5));
        reg.set(Snapshot::default());
        let refresh = reg.refresh();

        // A fake registration loop: on request, "register" and add space 9 at revision 2.
        let looper = tokio::spawn({
            let reg = reg.clone();
            let store = store.clone();
            async move {
                refresh.requested().await;
                let seq = refresh.begin();
                reg.set(Snapshot {
                    spaces: HashMap::from([(SpaceId(9), served(&store, Some(2)))]),
                    broken: HashMap::new(),
                });
                refresh.finish(seq);
            }
        });
        let got = reg.resolve(SpaceId(9), 2).await.unwrap();
        assert_eq!(got.name(), "test");
        looper.await.unwrap();

        // Declared spaces ignore revisions; a newer revision than held is stale once the
        // (now absent) loop does not answer within the bound.
        let reg = SpaceRegistry::with_wait(Duration::from_millis(50));
        reg.set(Snapshot {
            spaces: HashMap::from([
                (SpaceId(1), served(&store, None)),
                (SpaceId(2), served(&store, Some(3))),
            ]),
            broken: HashMap::from([(SpaceId(3), (4, "bad bucket".to_owned()))]),
        });
        reg.resolve(SpaceId(1), 99).await.unwrap();
        reg.resolve(SpaceId(2), 3).await.unwrap();
        let err = reg.resolve(SpaceId(2), 4).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::StaleSpace {
                    held: 3,
                    wanted: 4,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(err.code(), ErrorCode::Unavailable);
        let err = reg.resolve(SpaceId(3), 4).await.unwrap_err();
        assert!(err.to_string().contains("bad bucket"), "{err}");
        let err = reg.resolve(SpaceId(4), 1).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound);
    }
}
