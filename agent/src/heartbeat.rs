//! Registration with the coordinator. `RegisterAgent` is idempotent and doubles as the
//! heartbeat: the agent calls it at start-up and then every interval, which also
//! re-registers it after a coordinator restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use client::CoordinatorClient;
use common::{AgentId, SpaceId};
use proto::common::SpaceSpec;
use proto::coordinator::{RegisterAgentRequest, RegisterAgentResponse};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::registry::{Refresh, Served, Snapshot, SpaceRegistry};
use crate::store::{Locations, SpaceStore, TMP_MAX_AGE};

/// First delay after a failed registration; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest delay between attempts while the coordinator is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Longest the registration loop waits for one API space's store to open (a `Local`
/// directory on a hung mount must not stop the heartbeat).
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Shortest heartbeat interval honoured, whatever the coordinator asks for.
const MIN_INTERVAL: Duration = Duration::from_millis(50);

/// What the coordinator answered to the last successful registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Id the coordinator knows this agent by.
    pub agent_id: AgentId,
    /// Space id of each declared space the coordinator assigned, by space name.
    pub spaces: BTreeMap<String, SpaceId>,
    /// API-created spaces served, with the revision of their configuration in use (spaces
    /// whose configuration could not be used are left out).
    pub api_spaces: BTreeMap<SpaceId, u64>,
    /// How often the agent heartbeats.
    pub heartbeat_interval: Duration,
}

/// An API space being served: its configuration's revision and its store.
struct ApiSpace {
    revision: u64,
    store: SpaceStore,
}

/// The registration/heartbeat loop of one agent.
pub(crate) struct Registrar {
    client: CoordinatorClient,
    request: RegisterAgentRequest,
    /// Declared stores by space name.
    stores: HashMap<String, SpaceStore>,
    registry: SpaceRegistry,
    refresh: Arc<Refresh>,
    registration: watch::Sender<Option<Registration>>,
    default_interval: Duration,
    locations: Locations,
    /// API spaces served, by id.
    api: HashMap<SpaceId, ApiSpace>,
    /// API spaces whose current revision could not be opened: revision and reason.
    broken: HashMap<SpaceId, (u64, String)>,
    /// Temp sweeps of newly opened API stores.
    sweeps: JoinSet<()>,
    /// One client per configured coordinator when there are several: each heartbeat is
    /// also sent to every one of them, so every coordinator (whichever leads, whichever a
    /// gateway asks) knows this agent is alive.
    peers: Vec<CoordinatorClient>,
    /// The heartbeats to `peers` of the current round (a round is skipped while the last
    /// one still runs, so a dead coordinator never piles calls up).
    peer_calls: JoinSet<()>,
}

impl Registrar {
    /// A loop registering `request` (whose declared spaces are `stores`) and serving what
    /// the coordinator assigns through `registry`.
    pub(crate) fn new(
        client: CoordinatorClient,
        request: RegisterAgentRequest,
        stores: HashMap<String, SpaceStore>,
        registry: SpaceRegistry,
        registration: watch::Sender<Option<Registration>>,
        default_interval: Duration,
        locations: Locations,
    ) -> Registrar {
        Registrar {
            client,
            request,
            stores,
            refresh: registry.refresh(),
            registry,
            registration,
            default_interval,
            locations,
            api: HashMap::new(),
            broken: HashMap::new(),
            sweeps: JoinSet::new(),
            peers: Vec::new(),
            peer_calls: JoinSet::new(),
        }
    }

    /// Also heartbeat to each of `peers` (one client per coordinator), see the field doc.
    pub(crate) fn with_peers(mut self, peers: Vec<CoordinatorClient>) -> Registrar {
        self.peers = peers;
        self
    }

    fn heartbeat_peers(&mut self) {
        while self.peer_calls.try_join_next().is_some() {}
        if !self.peer_calls.is_empty() {
            return;
        }
        for (i, peer) in self.peers.iter().enumerate() {
            let mut peer = peer.clone();
            let request = self.request.clone();
            self.peer_calls.spawn(async move {
                if let Err(status) = peer.register_agent(request).await {
                    debug!(peer = i, error = %client::Error::from(status), "heartbeat to a coordinator failed");
                }
            });
        }
    }

    /// Register, then heartbeat every interval (or at once when a request asks for a
    /// refresh) until `shutdown` is cancelled. Failures are logged once per streak and
    /// retried with bounded exponential backoff.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut interval = self.default_interval;
        let mut backoff = MIN_BACKOFF;
        let mut failing = false;
        loop {
            while self.sweeps.try_join_next().is_some() {}
            self.heartbeat_peers();
            let seq = self.refresh.begin();
            let attempt = tokio::select! {
                () = shutdown.cancelled() => break,
                r = self.client.register_agent(self.request.clone()) => r,
            };
            let delay = match attempt {
                Ok(resp) => {
                    if failing {
                        info!(agent = %self.request.name, "registration with coordinator restored");
                    }
                    failing = false;
                    backoff = MIN_BACKOFF;
                    let applied = tokio::select! {
                        () = shutdown.cancelled() => None,
                        interval = self.apply(resp.into_inner(), &shutdown) => Some(interval),
                    };
                    let Some(applied) = applied else { break };
                    interval = applied;
                    interval
                }
                Err(status) => {
                    let err = client::Error::from(status);
                    if failing {
                        debug!(agent = %self.request.name, error = %err, "registration still failing");
                    } else {
                        warn!(
                            agent = %self.request.name,
                            coordinator_error = %err,
                            "registration with coordinator failed; retrying"
                        );
                    }
                    failing = true;
                    let delay = backoff.min(interval);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    delay
                }
            };
            self.refresh.finish(seq);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
                () = self.refresh.requested() => {
                    debug!(agent = %self.request.name, "re-registering now for an unknown or updated space");
                }
            }
        }
        // Wake every request still waiting for a registration: none will come.
        self.refresh.finish(u64::MAX);
        self.sweeps.shutdown().await;
        self.peer_calls.shutdown().await;
        debug!(agent = %self.request.name, "registration loop stopped");
    }

    /// Install the space ids and API spaces of `resp`; returns the heartbeat interval to
    /// use.
    async fn apply(
        &mut self,
        resp: RegisterAgentResponse,
        shutdown: &CancellationToken,
    ) -> Duration {
        let interval = match resp.heartbeat_interval_ms {
            0 => self.default_interval,
            ms => Duration::from_millis(ms).max(MIN_INTERVAL),
        };
        let mut served = HashMap::new();
        let mut spaces = BTreeMap::new();
        let mut unexpected = Vec::new();
        for assignment in resp.spaces {
            match self.stores.get(&assignment.name) {
                Some(store) => {
                    let id = SpaceId(assignment.space_id);
                    served.insert(
                        id,
                        Served {
                            store: store.clone().with_id(id),
                            revision: None,
                        },
                    );
                    spaces.insert(assignment.name, id);
                }
                None => unexpected.push(assignment.name),
            }
        }
        self.apply_specs(resp.specs, &served, shutdown).await;
        let mut api_spaces = BTreeMap::new();
        for (id, space) in &self.api {
            api_spaces.insert(*id, space.revision);
            served.insert(
                *id,
                Served {
                    store: space.store.clone(),
                    revision: Some(space.revision),
                },
            );
        }
        let registration = Registration {
            agent_id: AgentId(resp.agent_id),
            spaces,
            api_spaces,
            heartbeat_interval: interval,
        };
        let changed = self.registration.borrow().as_ref() != Some(&registration);
        if changed {
            let missing: Vec<&str> = self
                .stores
                .keys()
                .filter(|name| !registration.spaces.contains_key(*name))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() || !unexpected.is_empty() {
                warn!(
                    agent_id = %registration.agent_id,
                    ?missing,
                    ?unexpected,
                    "coordinator's space assignment does not match the declared spaces"
                );
            }
            info!(
                agent_id = %registration.agent_id,
                spaces = ?registration.spaces,
                api_spaces = ?registration.api_spaces,
                heartbeat_ms = interval.as_millis() as u64,
                "registered with coordinator"
            );
        }
        self.registry.set(Snapshot {
            spaces: served,
            broken: self.broken.clone(),
        });
        self.registration.send_replace(Some(registration));
        interval
    }

    /// Open a store for every spec whose (id, revision) is new, drop the stores of API
    /// spaces no longer listed. A spec that cannot be opened is remembered as broken with
    /// its revision and reason (requests for it get the reason) and retried on the next
    /// registration; the reason never holds the credential.
    async fn apply_specs(
        &mut self,
        specs: Vec<SpaceSpec>,
        declared: &HashMap<SpaceId, Served>,
        shutdown: &CancellationToken,
    ) {
        let listed: HashMap<SpaceId, u64> = specs
            .iter()
            .map(|s| (SpaceId(s.space_id), s.revision))
            .collect();
        self.api.retain(|id, space| {
            let keep = listed.get(id) == Some(&space.revision);
            if !keep && !listed.contains_key(id) {
                info!(space_id = %id, "user space no longer served by this agent");
            }
            keep
        });
        self.broken
            .retain(|id, (revision, _)| listed.get(id) == Some(revision));
        for spec in specs {
            let id = SpaceId(spec.space_id);
            if declared.contains_key(&id) {
                warn!(space_id = %id, "coordinator sent a spec for a declared space; ignored");
                continue;
            }
            if self.api.contains_key(&id) {
                continue;
            }
            let revision = spec.revision;
            let locations = self.locations.clone();
            let opening =
                tokio::task::spawn_blocking(move || crate::backend::spec_store(&spec, &locations));
            let reason = match tokio::time::timeout(OPEN_TIMEOUT, opening).await {
                Ok(Ok(Ok(store))) => {
                    self.broken.remove(&id);
                    self.serve(id, revision, store, shutdown);
                    continue;
                }
                Ok(Ok(Err(err))) => common::error::ErrorChain(&err).to_string(),
                Ok(Err(err)) => format!("opening the space failed: {err}"),
                Err(_) => format!(
                    "opening the space took more than {} s",
                    OPEN_TIMEOUT.as_secs()
                ),
            };
            // Retried on every registration; logged when it starts failing or changes.
            let same = self.broken.get(&id) == Some(&(revision, reason.clone()));
            if same {
                debug!(space_id = %id, revision, error = %reason, "user space still unusable");
            } else {
                warn!(space_id = %id, revision, error = %reason, "cannot serve user space");
            }
            self.broken.insert(id, (revision, reason));
        }
    }

    /// Start serving API space `id` at `revision` with `store` (and sweep its old temp
    /// files in the background).
    fn serve(
        &mut self,
        id: SpaceId,
        revision: u64,
        store: SpaceStore,
        shutdown: &CancellationToken,
    ) {
        info!(
            space_id = %id,
            revision,
            name = %store.name(),
            backend = store.scheme(),
            stores_shards = store.stores_shards(),
            max_size = store.max_size(),
            "serving user space"
        );
        let sweeper = store.clone();
        let token = shutdown.clone();
        self.sweeps.spawn(async move {
            tokio::select! {
                () = token.cancelled() => {}
                r = sweeper.sweep_tmp(TMP_MAX_AGE) => if let Err(e) = r {
                    warn!(space = %sweeper.name(), error = %common::error::ErrorChain(&e), "temp sweep failed");
                }
            }
        });
        self.api.insert(id, ApiSpace { revision, store });
    }
}
