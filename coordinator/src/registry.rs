//! Agent liveness, in memory. Agents call `RegisterAgent` periodically; an agent not heard
//! from within the TTL is down. After a coordinator restart the table starts empty and
//! refills within one heartbeat interval; until one TTL has passed since start-up, agents
//! not yet heard from are given the benefit of the doubt ([`Liveness::Unknown`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{AgentId, SpaceId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Not heard from since this coordinator started, which was less than one TTL ago.
    Unknown,
    Down,
}

#[derive(Debug, Clone)]
struct LiveAgent {
    address: String,
    spaces: Vec<SpaceId>,
    last_seen: Instant,
    /// The registration request this entry answers, to skip metadata writes on heartbeats.
    fingerprint: String,
}

/// What a registration was answered with: the agent's id and its spaces by name.
pub type Assignment = (AgentId, Vec<(String, SpaceId)>);

pub struct Registry {
    started: Instant,
    ttl: Duration,
    agents: Mutex<HashMap<AgentId, LiveAgent>>,
    by_fingerprint: Mutex<HashMap<String, Assignment>>,
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

    /// A registration seen before (same agent name, address and spaces): refresh liveness
    /// and return the earlier answer without touching metadata.
    pub fn refresh(&self, fingerprint: &str) -> Option<Assignment> {
        let known = lock(&self.by_fingerprint).get(fingerprint).cloned()?;
        let mut agents = lock(&self.agents);
        let entry = agents.get_mut(&known.0)?;
        if entry.fingerprint != fingerprint {
            return None;
        }
        entry.last_seen = Instant::now();
        Some(known)
    }

    pub fn record(
        &self,
        fingerprint: String,
        agent: AgentId,
        address: String,
        spaces: Vec<(String, SpaceId)>,
    ) {
        lock(&self.by_fingerprint).insert(fingerprint.clone(), (agent, spaces.clone()));
        lock(&self.agents).insert(
            agent,
            LiveAgent {
                address,
                spaces: spaces.iter().map(|(_, id)| *id).collect(),
                last_seen: Instant::now(),
                fingerprint,
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

    /// Spaces of live agents, with the agent's id and address, sorted by space id.
    pub fn live_spaces(&self) -> Vec<(SpaceId, AgentId, String)> {
        let agents = lock(&self.agents);
        let mut out: Vec<_> = agents
            .iter()
            .filter(|(_, a)| a.last_seen.elapsed() <= self.ttl)
            .flat_map(|(id, a)| a.spaces.iter().map(|s| (*s, *id, a.address.clone())))
            .collect();
        out.sort_by_key(|(s, _, _)| *s);
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
        r.record(
            "fp".into(),
            AgentId(1),
            "a:1".into(),
            vec![("s".into(), SpaceId(3))],
        );
        assert_eq!(r.liveness(AgentId(1)), Liveness::Alive);
        assert_eq!(r.refresh("fp").unwrap().0, AgentId(1));
        assert!(r.refresh("other").is_none());
        assert_eq!(
            r.live_spaces(),
            vec![(SpaceId(3), AgentId(1), "a:1".into())]
        );
    }

    #[test]
    fn silent_agent_goes_down_after_ttl() {
        let r = Registry::new(Duration::ZERO);
        r.record("fp".into(), AgentId(1), "a:1".into(), vec![]);
        // With a zero TTL any elapsed time means down; Instant is monotonic.
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline && r.liveness(AgentId(1)) == Liveness::Alive {}
        assert_eq!(r.liveness(AgentId(1)), Liveness::Down);
        assert_eq!(r.liveness(AgentId(2)), Liveness::Down);
        assert!(r.live_spaces().is_empty());
    }
}
