//! Agent liveness, in memory. Agents call `RegisterAgent` periodically; an agent not heard
//! from within the TTL is down. After a coordinator restart the table starts empty and
//! refills within one heartbeat interval; until one TTL has passed since start-up, agents
//! not yet heard from are given the benefit of the doubt ([`Liveness::Unknown`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{AgentId, SpaceId};
use proto::coordinator::RegisterAgentResponse;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Not heard from since this coordinator started, which was less than one TTL ago.
    Unknown,
    Down,
}

/// A space that can take new shards, on a live agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSpace {
    pub space: SpaceId,
    pub revision: u64,
    pub agent: AgentId,
    pub address: String,
}

#[derive(Debug, Clone)]
struct LiveAgent {
    address: String,
    /// Spaces of this agent that store shards, with their revisions.
    spaces: Vec<(SpaceId, u64)>,
    last_seen: Instant,
    /// The registration request this entry answers, to skip metadata work on heartbeats.
    fingerprint: String,
    response: RegisterAgentResponse,
}

pub struct Registry {
    started: Instant,
    ttl: Duration,
    agents: Mutex<HashMap<AgentId, LiveAgent>>,
    by_fingerprint: Mutex<HashMap<String, AgentId>>,
}

impl Registry {
    pub fn new(ttl: Duration) -> Self {
        Registry {
            started: Instant::now(),
            ttl,
            agents: Mutex::default(),
            by_fingerprint: Mutex::default(),
        }
    }

    /// A registration seen before (same request and same space configuration generation):
    /// refresh liveness and return the earlier answer without touching metadata.
    pub fn refresh(&self, fingerprint: &str) -> Option<RegisterAgentResponse> {
        let agent = *lock(&self.by_fingerprint).get(fingerprint)?;
        let mut agents = lock(&self.agents);
        let entry = agents.get_mut(&agent)?;
        if entry.fingerprint != fingerprint {
            return None;
        }
        entry.last_seen = Instant::now();
        Some(entry.response.clone())
    }

    pub fn record(
        &self,
        fingerprint: String,
        agent: AgentId,
        address: String,
        spaces: Vec<(SpaceId, u64)>,
        response: RegisterAgentResponse,
    ) {
        lock(&self.by_fingerprint).insert(fingerprint.clone(), agent);
        lock(&self.agents).insert(
            agent,
            LiveAgent {
                address,
                spaces,
                last_seen: Instant::now(),
                fingerprint,
                response,
            },
        );
    }

    pub fn liveness(&self, agent: AgentId) -> Liveness {
        match lock(&self.agents).get(&agent) {
            Some(a) if a.last_seen.elapsed() <= self.ttl => Liveness::Alive,
            Some(_) => Liveness::Down,
            None if self.started.elapsed() <= self.ttl => Liveness::Unknown,
            None => Liveness::Down,
        }
    }

    /// How long `agent` has been down: since it was last heard from, or (never heard from
    /// by this coordinator) since this coordinator started. `None` while it is alive or
    /// not yet known to be down.
    pub fn down_for(&self, agent: AgentId) -> Option<Duration> {
        match self.liveness(agent) {
            Liveness::Alive | Liveness::Unknown => None,
            Liveness::Down => Some(match lock(&self.agents).get(&agent) {
                Some(a) => a.last_seen.elapsed(),
                None => self.started.elapsed(),
            }),
        }
    }

    /// Live agents and their addresses, by id.
    pub fn live_agents(&self) -> Vec<(AgentId, String)> {
        let agents = lock(&self.agents);
        let mut out: Vec<_> = agents
            .iter()
            .filter(|(_, a)| a.last_seen.elapsed() <= self.ttl)
            .map(|(id, a)| (*id, a.address.clone()))
            .collect();
        out.sort();
        out
    }

    /// Shard-storing spaces of live agents, sorted by space id.
    pub fn live_spaces(&self) -> Vec<LiveSpace> {
        let agents = lock(&self.agents);
        let mut out: Vec<_> = agents
            .iter()
            .filter(|(_, a)| a.last_seen.elapsed() <= self.ttl)
            .flat_map(|(id, a)| {
                a.spaces.iter().map(|(s, rev)| LiveSpace {
                    space: *s,
                    revision: *rev,
                    agent: *id,
                    address: a.address.clone(),
                })
            })
            .collect();
        out.sort_by_key(|l| l.space);
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_agent_is_alive_and_refreshable() {
        let r = Registry::new(Duration::from_secs(60));
        assert_eq!(r.liveness(AgentId(1)), Liveness::Unknown);
        let resp = RegisterAgentResponse {
            agent_id: 1,
            ..Default::default()
        };
        r.record(
            "fp".into(),
            AgentId(1),
            "a:1".into(),
            vec![(SpaceId(3), 2)],
            resp.clone(),
        );
        assert_eq!(r.liveness(AgentId(1)), Liveness::Alive);
        assert_eq!(r.refresh("fp"), Some(resp));
        assert!(r.refresh("other").is_none());
        assert_eq!(
            r.live_spaces(),
            vec![LiveSpace {
                space: SpaceId(3),
                revision: 2,
                agent: AgentId(1),
                address: "a:1".into()
            }]
        );
        assert_eq!(r.live_agents(), vec![(AgentId(1), "a:1".into())]);
    }

    #[test]
    fn silent_agent_goes_down_after_ttl() {
        let r = Registry::new(Duration::ZERO);
        r.record(
            "fp".into(),
            AgentId(1),
            "a:1".into(),
            vec![],
            RegisterAgentResponse::default(),
        );
        // With a zero TTL any elapsed time means down; Instant is monotonic.
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline && r.liveness(AgentId(1)) == Liveness::Alive {}
        assert_eq!(r.liveness(AgentId(1)), Liveness::Down);
        assert_eq!(r.liveness(AgentId(2)), Liveness::Down);
        assert!(r.live_spaces().is_empty());
    }
}
