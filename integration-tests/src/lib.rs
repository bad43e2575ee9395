//! Test harness: [`TestCluster`] starts a coordinator (memory, redb or a real etcd), any
//! number of agents (each with its own Local space in a temp dir) and a gateway, all
//! in-process on pre-bound `127.0.0.1:0` listeners, and offers a small `/v1` client.

#![allow(clippy::unwrap_used)]

pub mod api;
pub mod etcd;
pub mod s3;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::secret::Secret;
use meta::MetaStoreRef;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use api::Api;

/// How often the cluster's agents heartbeat (and the coordinators expect them to).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(200);
/// How long after its last heartbeat the coordinators consider an agent down.
pub const AGENT_TTL: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meta {
    Memory,
    Redb,
    Etcd,
}

pub struct TestClusterBuilder {
    meta: Meta,
    agents: usize,
    mtls: bool,
    coordinators: usize,
    scrub: Option<coordinator::ScrubConfig>,
    default_redundancy: Option<serde_json::Value>,
    download_stall_timeout: Option<Duration>,
    in_process: bool,
}

impl TestClusterBuilder {
    /// Let the coordinator, the agents and the gateway call each other in-process
    /// (`client::local`), as `jcs standalone` does, instead of over loopback gRPC. This is
    /// process-wide from here on: nextest runs every test in a process of its own.
    pub fn in_process(mut self) -> Self {
        self.in_process = true;
        self
    }

    /// The gateway's `download_stall_timeout`.
    pub fn download_stall_timeout(mut self, stall: Duration) -> Self {
        self.download_stall_timeout = Some(stall);
        self
    }

    pub fn meta(mut self, meta: Meta) -> Self {
        self.meta = meta;
        self
    }

    pub fn agents(mut self, n: usize) -> Self {
        self.agents = n;
        self
    }

    /// Run `n` coordinators on the same metadata: agents and the gateway get all their
    /// addresses and fail over between them. n > 1 needs [`Meta::Etcd`] (checked by
    /// [`TestClusterBuilder::build`]): memory stores would not be shared (two leaders) and
    /// redb allows one process-wide opener.
    pub fn coordinators(mut self, n: usize) -> Self {
        self.coordinators = n.max(1);
        self
    }

    /// The coordinators' `[scrub]` section.
    pub fn scrub(mut self, scrub: coordinator::ScrubConfig) -> Self {
        self.scrub = Some(scrub);
        self
    }

    /// The coordinators' `default_redundancy` (API JSON form, e.g.
    /// `{"type": "rep", "repCount": 2}`).
    pub fn default_redundancy(mut self, policy: serde_json::Value) -> Self {
        self.default_redundancy = Some(policy);
        self
    }

    /// Run every gRPC connection on mTLS: a CA of the test's own and one certificate per
    /// process (for 127.0.0.1 and localhost), see [`TestCluster::tls_config`].
    pub fn mtls(mut self) -> Self {
        self.mtls = true;
        self
    }

    /// Start everything and wait until every agent has registered. `None` when the
    /// backend's fixture is unavailable outside CI (see [`etcd::endpoints`]).
    pub async fn build(self) -> Option<TestCluster> {
        common::testing::init_logging();
        if self.in_process {
            client::local::enable();
        }
        assert!(
            self.coordinators == 1 || self.meta == Meta::Etcd,
            "{} coordinators need Meta::Etcd (shared metadata), not {:?}",
            self.coordinators,
            self.meta
        );
        let dir = TempDir::new().unwrap();
        let secret = Secret::random();
        let meta = match self.meta {
            Meta::Memory => coordinator::MetaConfig::Memory,
            Meta::Redb => coordinator::MetaConfig::Redb {
                path: dir.path().join("meta.redb"),
            },
            Meta::Etcd => coordinator::MetaConfig::Etcd {
                endpoints: etcd::endpoints()?,
                connect_timeout: Duration::from_secs(3),
                request_timeout: Duration::from_secs(10),
            },
        };
        let ca_dir = self.mtls.then(|| {
            let ca_dir = dir.path().join("ca");
            common::tls::generate::Ca::new("test ca", 1)
                .unwrap()
                .write(&ca_dir)
                .unwrap();
            ca_dir
        });
        let tls = |name: &str| match &ca_dir {
            Some(ca) => issue_tls(ca, name),
            None => common::tls::TlsConfig::default(),
        };
        let coord_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let coord_addr = coord_listener.local_addr().unwrap();
        let coord_config = coordinator::CoordinatorConfig {
            listen: coord_addr,
            // A fresh namespace per test, so tests share one etcd safely.
            root: format!("test-{}", uuid::Uuid::new_v4()),
            meta,
            cluster_secret: Some(secret.clone()),
            heartbeat_interval: HEARTBEAT_INTERVAL,
            agent_ttl: AGENT_TTL,
            tls: tls("coordinator"),
            scrub: self.scrub.clone().unwrap_or_default(),
            default_redundancy: match &self.default_redundancy {
                Some(v) => serde_json::from_value(v.clone()).unwrap(),
                None => Default::default(),
            },
            ..Default::default()
        };
        let mut extra_listeners = Vec::new();
        for _ in 1..self.coordinators {
            extra_listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let coordinator_list = std::iter::once(coord_addr)
            .chain(extra_listeners.iter().map(|l| l.local_addr().unwrap()))
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let gateway_tls = tls("gateway");
        let mut cluster = TestCluster {
            ca_dir,
            dir,
            secret,
            shutdown: CancellationToken::new(),
            coord_config,
            coord: None,
            extra_coords: Vec::new(),
            coordinator_list: coordinator_list.clone(),
            agents: Vec::new(),
            gateway: None,
            api: None,
        };
        cluster.start_coordinator(coord_listener).await;
        for listener in extra_listeners {
            let mut config = cluster.coord_config.clone();
            config.listen = listener.local_addr().unwrap();
            let running = spawn_coordinator(&config, listener, &cluster.shutdown).await;
            cluster.extra_coords.push(Some(running));
        }
        for i in 0..self.agents {
            cluster.start_agent(i).await;
        }
        let gw_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gw_addr = gw_listener.local_addr().unwrap();
        let defaults = gateway::GatewayConfig::default();
        let gateway = gateway::Gateway::build(gateway::GatewayConfig {
            listen: gw_addr,
            coordinator: coordinator_list,
            tls: gateway_tls,
            download_stall_timeout: self
                .download_stall_timeout
                .unwrap_or(defaults.download_stall_timeout),
            ..defaults
        })
        .unwrap();
        cluster.gateway = Some(tokio::spawn(
            gateway.serve(gw_listener, cluster.shutdown.child_token()),
        ));
        cluster.api = Some(Api::new(gw_addr));
        cluster.wait_for_agents(self.agents).await;
        Some(cluster)
    }
}

struct RunningCoordinator {
    meta: MetaStoreRef,
    gc: coordinator::gc::Gc,
    token: CancellationToken,
    handle: JoinHandle<Result<(), coordinator::Error>>,
}

pub struct RunningAgent {
    pub space_dir: PathBuf,
    pub addr: SocketAddr,
    token: CancellationToken,
    handle: Option<JoinHandle<Result<(), agent::Error>>>,
}

pub struct TestCluster {
    ca_dir: Option<PathBuf>,
    dir: TempDir,
    secret: Secret,
    shutdown: CancellationToken,
    coord_config: coordinator::CoordinatorConfig,
    coord: Option<RunningCoordinator>,
    /// Coordinators 1.. (see [`TestClusterBuilder::coordinators`]); `None` once stopped.
    extra_coords: Vec<Option<RunningCoordinator>>,
    coordinator_list: String,
    pub agents: Vec<RunningAgent>,
    gateway: Option<JoinHandle<Result<(), gateway::Error>>>,
    api: Option<Api>,
}

impl TestCluster {
    pub fn builder() -> TestClusterBuilder {
        TestClusterBuilder {
            meta: Meta::Memory,
            agents: 1,
            mtls: false,
            coordinators: 1,
            scrub: None,
            default_redundancy: None,
            download_stall_timeout: None,
            in_process: false,
        }
    }

    /// With [`TestClusterBuilder::mtls`]: the `[tls]` section of a new certificate named
    /// `name` (for 127.0.0.1 and localhost) signed by the cluster's CA.
    pub fn tls_config(&self, name: &str) -> common::tls::TlsConfig {
        issue_tls(
            self.ca_dir.as_ref().expect("cluster built with mtls()"),
            name,
        )
    }

    pub fn api(&self) -> &Api {
        self.api.as_ref().unwrap()
    }

    pub fn gateway_addr(&self) -> SocketAddr {
        self.api().addr()
    }

    /// The first coordinator's gRPC address (see [`TestCluster::coordinator_addrs`] for
    /// all of them).
    pub fn coordinator_addr(&self) -> SocketAddr {
        self.coord_config.listen
    }

    /// The gRPC address of agent `i`.
    pub fn agent_addr(&self, i: usize) -> SocketAddr {
        self.agents[i].addr
    }

    /// The metadata store (inside the cluster prefix) of the first coordinator still
    /// running, for inspection. Panics when every coordinator is stopped.
    pub fn meta(&self) -> MetaStoreRef {
        self.running_coordinator().meta.clone()
    }

    /// The JSON row at `key` of [`TestCluster::meta`], or `None` when the key is absent.
    pub async fn meta_json(&self, key: &str) -> Option<serde_json::Value> {
        let kv = self.meta().get(key.as_bytes()).await.unwrap()?;
        Some(serde_json::from_slice(&kv.value).unwrap())
    }

    /// The first coordinator still running, in start order.
    fn running_coordinator(&self) -> &RunningCoordinator {
        self.coord
            .iter()
            .chain(self.extra_coords.iter().flatten())
            .next()
            .expect("every coordinator of the cluster is stopped")
    }

    async fn start_coordinator(&mut self, listener: TcpListener) {
        self.coord = Some(spawn_coordinator(&self.coord_config, listener, &self.shutdown).await);
    }

    async fn start_agent(&mut self, i: usize) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let space_dir = self.dir.path().join(format!("space-{i}"));
        let config = agent::AgentConfig {
            name: format!("agent-{i}"),
            listen: listener.local_addr().unwrap(),
            coordinator: self.coordinator_list.clone(),
            cluster_secret: Some(self.secret.clone()),
            spaces: vec![agent::SpaceConfig {
                name: format!("space-{i}"),
                path: space_dir.clone(),
            }],
            heartbeat_interval: HEARTBEAT_INTERVAL,
            tls: match &self.ca_dir {
                Some(ca) => issue_tls(ca, &format!("agent-{i}")),
                None => common::tls::TlsConfig::default(),
            },
            ..Default::default()
        };
        let addr = config.listen;
        let agent = agent::Agent::build(config).unwrap();
        let token = self.shutdown.child_token();
        let handle = tokio::spawn(agent.serve(listener, token.clone()));
        self.agents.push(RunningAgent {
            space_dir,
            addr,
            token,
            handle: Some(handle),
        });
    }

    /// Poll until `n` user spaces have been registered by live agents.
    pub async fn wait_for_agents(&self, n: usize) {
        let meta = self.meta();
        let ok = common::testing::wait_until(Duration::from_secs(20), || {
            let meta = meta.clone();
            async move {
                let page = meta
                    .range(meta::Range::prefix(b"v1/space/".to_vec()))
                    .await
                    .unwrap();
                page.kvs.len() >= n
            }
        })
        .await;
        assert!(ok, "agents did not register within 20 s");
    }

    /// Run one shard GC pass now with the given grace period (on the first coordinator
    /// still running).
    pub async fn run_gc(&self, grace: Duration) -> coordinator::gc::GcReport {
        self.running_coordinator().gc.collect(grace).await.unwrap()
    }

    /// Stop the coordinator and start a new one on the same address and metadata.
    pub async fn restart_coordinator(&mut self) {
        let RunningCoordinator {
            meta,
            gc,
            token,
            handle,
        } = self.coord.take().unwrap();
        token.cancel();
        handle.await.unwrap().unwrap();
        // Every handle on the store must be gone before redb can open the file again.
        drop((gc, meta));
        let listener = bind_retry(self.coord_config.listen).await;
        self.start_coordinator(listener).await;
    }

    /// gRPC addresses of every coordinator, in start order.
    pub fn coordinator_addrs(&self) -> Vec<String> {
        self.coordinator_list
            .split(',')
            .map(str::to_owned)
            .collect()
    }

    /// Index (in [`TestCluster::coordinator_addrs`]) of the coordinator that leads now, as
    /// the leader key in the metadata says.
    pub async fn leader_index(&self) -> usize {
        let kv = self
            .meta()
            .get(b"v1/leader")
            .await
            .unwrap()
            .expect("a leader key");
        let leader = String::from_utf8(kv.value).unwrap();
        self.coordinator_addrs()
            .iter()
            .position(|a| *a == leader)
            .unwrap_or_else(|| panic!("leader {leader} is not a coordinator of the cluster"))
    }

    /// Stop coordinator `i` (0 = the first; it resigns its leadership if it led).
    /// [`TestCluster::meta`] and [`TestCluster::run_gc`] then use a coordinator still running.
    pub async fn stop_coordinator(&mut self, i: usize) {
        let running = if i == 0 {
            self.coord.take()
        } else {
            self.extra_coords[i - 1].take()
        };
        if let Some(c) = running {
            c.token.cancel();
            c.handle.await.unwrap().unwrap();
        }
    }

    /// Stop agent `i` (its space stays on disk).
    pub async fn stop_agent(&mut self, i: usize) {
        let a = &mut self.agents[i];
        a.token.cancel();
        if let Some(h) = a.handle.take() {
            h.await.unwrap().unwrap();
        }
    }

    /// A scratch directory that lives as long as the cluster.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// Files below agent `i`'s `tmp/` directory (should be none when idle).
    pub fn temp_files(&self, i: usize) -> Vec<PathBuf> {
        list_files(&self.agents[i].space_dir.join("tmp"))
    }

    /// Shard files stored by agent `i`.
    pub fn shard_files(&self, i: usize) -> Vec<PathBuf> {
        list_files(&self.agents[i].space_dir.join("shards"))
    }

    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(c) = self.coord.take() {
            c.handle.await.unwrap().unwrap();
        }
        for c in self.extra_coords.drain(..).flatten() {
            c.handle.await.unwrap().unwrap();
        }
        for a in self.agents.drain(..) {
            if let Some(h) = a.handle {
                h.await.unwrap().unwrap();
            }
        }
        if let Some(g) = self.gateway.take() {
            g.await.unwrap().unwrap();
        }
    }
}

/// Open the metadata `config` names, build a coordinator on it and serve on `listener`
/// until `shutdown` (or the handle's own token) is cancelled.
async fn spawn_coordinator(
    config: &coordinator::CoordinatorConfig,
    listener: TcpListener,
    shutdown: &CancellationToken,
) -> RunningCoordinator {
    let meta = coordinator::server::open_meta(config).await.unwrap();
    let coord = coordinator::Coordinator::build(config, meta.clone()).unwrap();
    let token = shutdown.child_token();
    let gc = coord.gc();
    let handle = tokio::spawn(coord.serve(listener, token.clone()));
    RunningCoordinator {
        meta,
        gc,
        token,
        handle,
    }
}

/// A certificate `name` for 127.0.0.1 and localhost, signed by the CA in `ca_dir` and
/// written next to it (`<ca_dir>/../certs/<name>.{pem,key}`); its `[tls]` section.
pub fn issue_tls(ca_dir: &std::path::Path, name: &str) -> common::tls::TlsConfig {
    use common::tls::generate::{CA_CERT_FILE, Ca};
    let certs = ca_dir.with_file_name("certs");
    let (cert, key) = Ca::load(ca_dir)
        .unwrap()
        .issue(
            name,
            &["localhost".to_owned()],
            &["127.0.0.1".parse().unwrap()],
            1,
        )
        .unwrap()
        .write(&certs, name)
        .unwrap();
    common::tls::TlsConfig::files(ca_dir.join(CA_CERT_FILE), cert, key)
}

async fn bind_retry(addr: SocketAddr) -> TcpListener {
    let bound = common::testing::wait_for(Duration::from_secs(10), || async {
        TcpListener::bind(addr).await.ok()
    })
    .await;
    match bound {
        Some(l) => l,
        None => panic!(
            "cannot rebind {addr}: {:?}",
            TcpListener::bind(addr).await.err()
        ),
    }
}

/// Every file below `dir`, sorted.
pub fn list_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
