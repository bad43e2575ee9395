//! Coordinator configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::secret::Secret;
use serde::Deserialize;

/// Where metadata lives.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "backend", rename_all = "lowercase", deny_unknown_fields)]
pub enum MetaConfig {
    /// In memory; lost on exit. Tests and throw-away dev runs only.
    Memory,
    /// An embedded redb file (single node).
    Redb { path: PathBuf },
    /// An etcd cluster (production).
    Etcd {
        endpoints: Vec<String>,
        #[serde(default = "default_connect_timeout", with = "humantime_serde")]
        connect_timeout: Duration,
        #[serde(default = "default_request_timeout", with = "humantime_serde")]
        request_timeout: Duration,
    },
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(3)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for MetaConfig {
    fn default() -> Self {
        MetaConfig::Redb {
            path: PathBuf::from("jcs-data/meta.redb"),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Key prefix of this cluster inside the metadata store.
    pub root: String,
    pub meta: MetaConfig,
    /// File holding the cluster secret shared with agents (signs tickets). Must be mode 600.
    pub cluster_secret_file: Option<PathBuf>,
    /// Inline cluster secret (dev and tests; prefer `cluster_secret_file`).
    pub cluster_secret: Option<Secret>,
    /// How often agents are asked to heartbeat.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// An agent not heard from for this long is down.
    #[serde(with = "humantime_serde")]
    pub agent_ttl: Duration,
    /// Lifetime of upload and download tickets (checked when a stream starts).
    #[serde(with = "humantime_serde")]
    pub ticket_ttl: Duration,
    /// A pending upload not committed within this time is forgotten.
    #[serde(with = "humantime_serde")]
    pub upload_expiry: Duration,
    /// How often shard garbage collection runs.
    #[serde(with = "humantime_serde")]
    pub gc_interval: Duration,
    /// Unreferenced shards younger than this are kept (at least `upload_expiry`).
    #[serde(with = "humantime_serde")]
    pub gc_grace: Duration,
    /// Multipart uploads not completed within this time are deleted with their parts.
    #[serde(with = "humantime_serde")]
    pub multipart_expiry: Duration,
    /// Lease of the leader key: a leader silent for this long (crashed, paused, cut off) is
    /// replaced, and its writes are refused from then on (fencing). etcd counts in seconds.
    #[serde(with = "humantime_serde")]
    pub leader_ttl: Duration,
    /// Address this coordinator is reached at, published in the leader key (default: `listen`).
    pub advertise: Option<String>,
    /// Address of the Prometheus `GET /metrics` endpoint (plain HTTP); `None` = no endpoint.
    pub metrics_addr: Option<SocketAddr>,
    /// On SIGTERM/ctrl-c: how long in-flight calls may still run after the server stops
    /// accepting; the ones still running then are cut.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// mTLS towards agents and gateways (`[tls]`: ca, cert, key); without it, plain TCP
    /// only on loopback or with `insecure_plaintext` (see `common::tls`).
    pub tls: common::tls::TlsConfig,
    /// Redundancy policy of packages created without one (and of packages created before
    /// policies existed), e.g. `{ type = "ec", k = 4, n = 6 }`; see docs/redundancy.md.
    pub default_redundancy: redundancy::Policy,
    /// Repair and scrub of rep/ec objects (`[scrub]`, docs/operations.md).
    pub scrub: ScrubConfig,
}

/// `[scrub]`: the leader's repair and scrub job (docs/redundancy.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ScrubConfig {
    /// How often a scheduled run starts; 0 = only on demand.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Every N-th scheduled run is deep (the agents re-hash every block); 0 = never.
    pub deep_every: u32,
    /// A block whose agent has been down this long is rebuilt elsewhere; a shorter outage
    /// only counts the object as unavailable.
    #[serde(with = "humantime_serde")]
    pub repair_after_down: Duration,
    /// Objects checked per step (one agent call per space and step).
    pub objects_per_step: usize,
    /// Pause between two steps of a run (throttles the job's I/O); 0 = none.
    #[serde(with = "humantime_serde")]
    pub step_pause: Duration,
}

impl Default for ScrubConfig {
    fn default() -> Self {
        ScrubConfig {
            interval: Duration::from_secs(24 * 3600),
            deep_every: 7,
            repair_after_down: Duration::from_secs(3600),
            objects_per_step: 50,
            step_pause: Duration::ZERO,
        }
    }
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7900)),
            root: "jcs".to_owned(),
            meta: MetaConfig::default(),
            cluster_secret_file: None,
            cluster_secret: None,
            heartbeat_interval: Duration::from_secs(2),
            agent_ttl: Duration::from_secs(10),
            ticket_ttl: Duration::from_secs(3600),
            upload_expiry: Duration::from_secs(24 * 3600),
            gc_interval: Duration::from_secs(3600),
            gc_grace: Duration::from_secs(24 * 3600),
            multipart_expiry: Duration::from_secs(7 * 24 * 3600),
            leader_ttl: Duration::from_secs(10),
            advertise: None,
            metrics_addr: None,
            shutdown_timeout: Duration::from_secs(30),
            tls: common::tls::TlsConfig::default(),
            default_redundancy: redundancy::Policy::None,
            scrub: ScrubConfig::default(),
        }
    }
}

impl CoordinatorConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.root.is_empty() || self.root.contains('\0') {
            return Err("root must be a non-empty key prefix".into());
        }
        if let MetaConfig::Etcd { endpoints, .. } = &self.meta
            && endpoints.is_empty()
        {
            return Err("meta.endpoints must list at least one etcd endpoint".into());
        }
        if self.agent_ttl <= self.heartbeat_interval {
            return Err("agent_ttl must be longer than heartbeat_interval".into());
        }
        if self.ticket_ttl.is_zero() || self.upload_expiry < self.ticket_ttl {
            return Err("ticket_ttl must be > 0 and upload_expiry at least ticket_ttl".into());
        }
        if self.gc_grace < self.upload_expiry {
            return Err(
                "gc_grace must be at least upload_expiry (it protects uploads not yet committed)"
                    .into(),
            );
        }
        if self.gc_interval.is_zero() || self.multipart_expiry.is_zero() {
            return Err("gc_interval and multipart_expiry must be > 0".into());
        }
        if self.leader_ttl < Duration::from_secs(1) {
            return Err("leader_ttl must be at least 1s".into());
        }
        self.tls.check(
            "coordinator",
            &[&self.listen.to_string(), &self.advertised()],
        )?;
        self.default_redundancy
            .validate()
            .map_err(|e| format!("default_redundancy: {e}"))?;
        if self.scrub.objects_per_step == 0 || self.scrub.objects_per_step > 1000 {
            return Err("scrub.objects_per_step must be between 1 and 1000".into());
        }
        self.secret().map(|_| ())
    }

    /// The address published in the leader key.
    pub fn advertised(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    /// The cluster secret: from `cluster_secret_file`, else inline.
    pub fn secret(&self) -> Result<Secret, String> {
        match (&self.cluster_secret_file, &self.cluster_secret) {
            (Some(path), _) => Secret::from_file(path),
            (None, Some(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err("no cluster secret: set cluster_secret_file".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_loads() {
        let text = include_str!("../../deploy/config/coordinator.example.toml");
        let cfg: CoordinatorConfig = common::config::from_toml(text).unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:7900".parse().unwrap());
        assert_eq!(
            cfg.meta,
            MetaConfig::Etcd {
                endpoints: vec!["http://127.0.0.1:2379".into()],
                connect_timeout: Duration::from_secs(3),
                request_timeout: Duration::from_secs(10),
            }
        );
        assert_eq!(
            cfg.cluster_secret_file.as_deref(),
            Some(std::path::Path::new("/etc/jcs/cluster.secret"))
        );
        assert_eq!(cfg.agent_ttl, Duration::from_secs(10));
        assert_eq!(cfg.metrics_addr, Some("0.0.0.0:9900".parse().unwrap()));
        assert_eq!(cfg.shutdown_timeout, Duration::from_secs(25));
        assert_eq!(cfg.scrub, ScrubConfig::default());
        assert_eq!(
            cfg.tls,
            common::tls::TlsConfig::files(
                "/etc/jcs/tls/ca.pem",
                "/etc/jcs/tls/coordinator.pem",
                "/etc/jcs/tls/coordinator.key"
            )
        );
        let mut plain = cfg.clone();
        plain.cluster_secret = Some(Secret::new("x"));
        plain.cluster_secret_file = None;
        plain.validate().unwrap();
        plain.tls = common::tls::TlsConfig::default();
        assert!(plain.validate().unwrap_err().contains("insecure_plaintext"));
    }

    #[test]
    fn default_redundancy_parses_from_toml() {
        let cfg: CoordinatorConfig = common::config::from_toml(
            "cluster_secret = 'x'\ndefault_redundancy = { type = 'ec', k = 4, n = 6 }\n",
        )
        .unwrap();
        assert_eq!(
            cfg.default_redundancy,
            redundancy::Policy::Ec {
                k: 4,
                n: 6,
                chunk_size: 1 << 20
            }
        );
        assert!(
            common::config::from_toml::<CoordinatorConfig>(
                "cluster_secret = 'x'\ndefault_redundancy = { type = 'ec', k = 6, n = 4 }\n",
            )
            .is_err()
        );
    }

    #[test]
    fn scrub_section_parses_with_defaults() {
        let cfg: CoordinatorConfig = common::config::from_toml(
            "cluster_secret = 'x'\n[scrub]\ninterval = '0s'\nrepair_after_down = '5m'\n",
        )
        .unwrap();
        assert_eq!(cfg.scrub.interval, Duration::ZERO);
        assert_eq!(cfg.scrub.repair_after_down, Duration::from_secs(300));
        assert_eq!(cfg.scrub.objects_per_step, 50);
        assert_eq!(cfg.scrub.deep_every, 7);
        let mut bad = cfg.clone();
        bad.scrub.objects_per_step = 0;
        assert!(bad.validate().unwrap_err().contains("objects_per_step"));
    }

    #[test]
    fn etcd_without_endpoints_is_invalid() {
        let cfg: CoordinatorConfig = common::config::from_toml(
            "cluster_secret = 'x'\n[meta]\nbackend = 'etcd'\nendpoints = []\n",
        )
        .unwrap();
        assert!(cfg.validate().unwrap_err().contains("endpoints"));
    }
}
