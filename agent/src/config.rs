//! Configuration of one agent process: where it listens, which coordinator it registers
//! with, the cluster secret that signs tickets, and the user spaces it serves.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::secret::Secret;
use serde::Deserialize;

/// Configuration of the agent (`[agent]`-less TOML; env prefix chosen by the binary).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Unique, stable name of this agent in the cluster.
    pub name: String,
    /// Address the gRPC server binds to (the binary binds it; tests pass their own listener).
    pub listen: SocketAddr,
    /// `host:port` others use to reach this agent; default: the bound listener's address.
    pub advertise: Option<String>,
    /// `host:port` (or URI) of the coordinator to register with; several coordinators
    /// separated by commas (`"c1:7900,c2:7900"`): calls fail over between them and every
    /// heartbeat goes to each, so every coordinator knows this agent is alive.
    pub coordinator: String,
    /// File holding the cluster secret (must not be readable by other users).
    pub cluster_secret_file: Option<PathBuf>,
    /// Inline cluster secret, for development and tests; `cluster_secret_file` wins.
    pub cluster_secret: Option<Secret>,
    /// The `Local` user spaces declared here (may be empty: the coordinator also assigns
    /// spaces created through the API, of any storage type, at registration).
    pub spaces: Vec<SpaceConfig>,
    /// How often to heartbeat; the interval returned by the coordinator overrides it.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Address of the Prometheus `GET /metrics` endpoint (plain HTTP); `None` = no endpoint.
    pub metrics_addr: Option<SocketAddr>,
    /// On SIGTERM/ctrl-c: how long in-flight calls may still run after the server stops
    /// accepting; the ones still running then are cut.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// mTLS for the gRPC server and towards the coordinator and other agents (`[tls]`: ca,
    /// cert, key); without it, plain TCP only on loopback or with `insecure_plaintext`.
    pub tls: common::tls::TlsConfig,
}

/// One `Local` user space: a directory on this machine.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SpaceConfig {
    /// Cluster-wide unique name of the space; the coordinator assigns its id by name.
    pub name: String,
    /// Directory holding the space (created when missing).
    pub path: PathBuf,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            name: "agent-1".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7910)),
            advertise: None,
            coordinator: "127.0.0.1:7900".to_owned(),
            cluster_secret_file: None,
            cluster_secret: None,
            spaces: Vec::new(),
            heartbeat_interval: Duration::from_secs(2),
            metrics_addr: None,
            shutdown_timeout: Duration::from_secs(30),
            tls: common::tls::TlsConfig::default(),
        }
    }
}

impl AgentConfig {
    /// Check the config is usable: a name, unique non-empty space names and paths, a
    /// coordinator address and a configured secret.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name must not be empty".to_owned());
        }
        if self.coordinator.trim().is_empty() {
            return Err("coordinator must not be empty".to_owned());
        }
        if self
            .advertise
            .as_deref()
            .is_some_and(|a| a.trim().is_empty())
        {
            return Err("advertise must not be empty when set".to_owned());
        }
        if self.heartbeat_interval.is_zero() {
            return Err("heartbeat_interval must be positive".to_owned());
        }
        let mut names = HashSet::new();
        // Two spaces on one directory would not share their shard locks (GC safety).
        let mut paths = HashSet::new();
        for (i, space) in self.spaces.iter().enumerate() {
            if space.name.trim().is_empty() {
                return Err(format!("spaces[{i}].name must not be empty"));
            }
            if space.path.as_os_str().is_empty() {
                return Err(format!("spaces[{i}].path must not be empty"));
            }
            if !names.insert(space.name.as_str()) {
                return Err(format!("spaces[{i}].name {:?} is used twice", space.name));
            }
            let path = std::path::absolute(&space.path).unwrap_or_else(|_| space.path.clone());
            let path: PathBuf = path.components().collect();
            if !paths.insert(path) {
                return Err(format!(
                    "spaces[{i}].path {} is used twice",
                    space.path.display()
                ));
            }
        }
        let has_inline = self.cluster_secret.as_ref().is_some_and(|s| !s.is_empty());
        if self.cluster_secret_file.is_none() && !has_inline {
            return Err("cluster_secret_file or cluster_secret must be set".to_owned());
        }
        let listen = self.listen.to_string();
        let mut grpc = vec![listen.as_str()];
        grpc.extend(self.advertise.as_deref());
        let coordinators = client::coordinator_addresses(&self.coordinator);
        grpc.extend(coordinators.iter().map(String::as_str));
        self.tls.check("agent", &grpc)
    }

    /// The cluster secret: read from `cluster_secret_file` when set, else the inline value.
    pub fn secret(&self) -> Result<Secret, String> {
        if let Some(path) = &self.cluster_secret_file {
            return Secret::from_file(path);
        }
        match &self.cluster_secret {
            Some(s) if !s.is_empty() => Ok(s.clone()),
            _ => Err("cluster_secret_file or cluster_secret must be set".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> AgentConfig {
        AgentConfig {
            cluster_secret: Some(Secret::new("s3cret")),
            spaces: vec![SpaceConfig {
                name: "local".into(),
                path: "/tmp/jcs-space".into(),
            }],
            ..AgentConfig::default()
        }
    }

    #[test]
    fn defaults_parse_from_empty_toml() {
        let c: AgentConfig = common::config::from_toml("").unwrap();
        assert_eq!(c, AgentConfig::default());
        assert_eq!(c.listen.to_string(), "127.0.0.1:7910");
        assert_eq!(c.heartbeat_interval, Duration::from_secs(2));
    }

    #[test]
    fn full_toml_parses() {
        let c: AgentConfig = common::config::from_toml(
            r#"
            name = "a7"
            listen = "0.0.0.0:9000"
            advertise = "agent7.local:9000"
            coordinator = "coord:7900"
            cluster_secret = "abc"
            heartbeat_interval = "500ms"
            [tls]
            insecure_plaintext = true
            [[spaces]]
            name = "s1"
            path = "/data/s1"
            "#,
        )
        .unwrap();
        assert_eq!(c.name, "a7");
        assert_eq!(c.advertise.as_deref(), Some("agent7.local:9000"));
        assert_eq!(c.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(c.spaces[0].path, PathBuf::from("/data/s1"));
        assert_eq!(c.secret().unwrap().expose(), "abc");
        assert!(c.tls.insecure_plaintext);
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = common::config::from_toml::<AgentConfig>("spaecs = []").unwrap_err();
        assert!(err.contains("spaecs"), "{err}");
    }

    #[test]
    fn validate_rejects_bad_configs() {
        valid().validate().unwrap();

        // No declared space: the agent serves only what the coordinator assigns.
        let mut c = valid();
        c.spaces.clear();
        c.validate().unwrap();

        let mut c = valid();
        c.spaces.push(c.spaces[0].clone());
        assert!(c.validate().unwrap_err().contains("used twice"));

        let mut c = valid();
        let mut twin = c.spaces[0].clone();
        twin.name = "twin".into();
        twin.path = twin.path.join("./");
        c.spaces.push(twin);
        assert!(c.validate().unwrap_err().contains("path"));

        let mut c = valid();
        c.spaces[0].name = " ".into();
        assert!(c.validate().unwrap_err().contains("spaces[0].name"));

        let mut c = valid();
        c.cluster_secret = None;
        assert!(c.validate().unwrap_err().contains("cluster_secret"));
        assert!(c.secret().is_err());

        let mut c = valid();
        c.cluster_secret = Some(Secret::new(""));
        assert!(c.validate().is_err());
    }

    #[test]
    fn secret_file_wins_over_inline() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "from-file\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut c = valid();
        c.cluster_secret_file = Some(file);
        assert_eq!(c.secret().unwrap().expose(), "from-file");
    }

    #[test]
    fn debug_output_redacts_the_secret() {
        let text = format!("{:?}", valid());
        assert!(!text.contains("s3cret"), "{text}");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn example_config_loads() {
        let text = include_str!("../../deploy/config/agent.example.toml");
        let cfg: AgentConfig = common::config::from_toml(text).unwrap();
        assert_eq!(
            cfg,
            AgentConfig {
                name: "agent-1".into(),
                listen: "0.0.0.0:7910".parse().unwrap(),
                advertise: Some("agent-1.internal:7910".into()),
                coordinator: "coordinator.internal:7900".into(),
                cluster_secret_file: Some(PathBuf::from("/etc/jcs/cluster.secret")),
                cluster_secret: None,
                spaces: vec![SpaceConfig {
                    name: "local-1".into(),
                    path: PathBuf::from("/var/lib/jcs/space-1"),
                }],
                heartbeat_interval: Duration::from_secs(2),
                metrics_addr: Some("0.0.0.0:9910".parse().unwrap()),
                shutdown_timeout: Duration::from_secs(25),
                tls: common::tls::TlsConfig::files(
                    "/etc/jcs/tls/ca.pem",
                    "/etc/jcs/tls/agent.pem",
                    "/etc/jcs/tls/agent.key"
                ),
            }
        );
        // mTLS configured: the public addresses are accepted.
        let mut cfg = cfg;
        cfg.cluster_secret = Some(Secret::new("x"));
        cfg.cluster_secret_file = None;
        cfg.validate().unwrap();
        cfg.tls = common::tls::TlsConfig::default();
        assert!(cfg.validate().unwrap_err().contains("insecure_plaintext"));
    }
}
