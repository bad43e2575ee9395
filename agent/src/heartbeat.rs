//! Registration with the coordinator. `RegisterAgent` is idempotent and doubles as the
//! heartbeat: the agent calls it at start-up and then every interval, which also
//! re-registers it after a coordinator restart.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use client::CoordinatorClient;
use common::{AgentId, SpaceId};
use proto::coordinator::{RegisterAgentRequest, RegisterAgentResponse};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::store::{SpaceRegistry, SpaceStore};

/// First delay after a failed registration; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest delay between attempts while the coordinator is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Shortest heartbeat interval honoured, whatever the coordinator asks for.
const MIN_INTERVAL: Duration = Duration::from_millis(50);

/// What the coordinator answered to the last successful registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Id the coordinator knows this agent by.
    pub agent_id: AgentId,
    /// Space id of each declared space the coordinator assigned, by space name.
    pub spaces: BTreeMap<String, SpaceId>,
    /// How often the agent heartbeats.
    pub heartbeat_interval: Duration,
}

/// The registration/heartbeat loop of one agent.
pub(crate) struct Registrar {
    pub client: CoordinatorClient,
    pub request: RegisterAgentRequest,
    /// Stores by space name.
    pub stores: HashMap<String, SpaceStore>,
    pub registry: SpaceRegistry,
    pub registration: watch::Sender<Option<Registration>>,
    pub default_interval: Duration,
}

impl Registrar {
    /// Register, then heartbeat every interval until `shutdown` is cancelled. Failures are
    /// logged once per streak and retried with bounded exponential backoff.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut interval = self.default_interval;
        let mut backoff = MIN_BACKOFF;
        let mut failing = false;
        loop {
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
                    interval = self.apply(resp.into_inner());
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
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
        debug!(agent = %self.request.name, "registration loop stopped");
    }

    /// Install the space ids of `resp`; returns the heartbeat interval to use.
    fn apply(&self, resp: RegisterAgentResponse) -> Duration {
        let interval = match resp.heartbeat_interval_ms {
            0 => self.default_interval,
            ms => Duration::from_millis(ms).max(MIN_INTERVAL),
        };
        let mut by_id = HashMap::new();
        let mut spaces = BTreeMap::new();
        let mut unexpected = Vec::new();
        for assignment in resp.spaces {
            match self.stores.get(&assignment.name) {
                Some(store) => {
                    by_id.insert(SpaceId(assignment.space_id), store.clone());
                    spaces.insert(assignment.name, SpaceId(assignment.space_id));
                }
                None => unexpected.push(assignment.name),
            }
        }
        let registration = Registration {
            agent_id: AgentId(resp.agent_id),
            spaces,
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
                heartbeat_ms = interval.as_millis() as u64,
                "registered with coordinator"
            );
        }
        self.registry.set(by_id);
        self.registration.send_replace(Some(registration));
        interval
    }
}
