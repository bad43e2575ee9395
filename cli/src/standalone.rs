//! `jcs standalone`: coordinator, one agent and the gateway in one process, metadata in a
//! redb file and one Local user space, all under one data directory:
//!
//! ```text
//! <data-dir>/meta.redb        metadata
//! <data-dir>/cluster.secret   ticket signing key (generated on first start, mode 600)
//! <data-dir>/space/           the Local user space "local" (shards/, tmp/)
//! ```
//! Internal gRPC ports are ephemeral on 127.0.0.1 (`--coordinator-listen` fixes the
//! coordinator's, for `jcs admin`); only the gateway's `/v1` is meant for clients. `/v1`
//! is open unless `--auth` is given.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use common::secret::Secret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct StandaloneOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// The gateway's `max_wait` (longest long poll).
    pub max_wait: std::time::Duration,
    /// Internal calls over loopback gRPC instead of in-process (`client::local`).
    pub grpc_over_tcp: bool,
    pub auth: AuthArgs,
}

impl Default for StandaloneOptions {
    fn default() -> Self {
        StandaloneOptions {
            data_dir: PathBuf::from("jcs-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7890)),
            max_wait: gateway::GatewayConfig::default().max_wait,
            grpc_over_tcp: false,
            auth: AuthArgs::default(),
        }
    }
}

/// Authentication of `jcs standalone` (off unless asked for).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthArgs {
    /// Require signed /v1 requests (access keys: `jcs admin key create --coordinator
    /// <--coordinator-listen address>`).
    #[arg(long, env = "JCS_AUTH")]
    pub auth: bool,
    /// Address of the internal coordinator's gRPC port, for `jcs admin` [default: an
    /// ephemeral port on 127.0.0.1].
    #[arg(long, env = "JCS_COORDINATOR_LISTEN")]
    pub coordinator_listen: Option<SocketAddr>,
}

/// Read the cluster secret of a data dir, creating it (mode 600) on first start.
fn load_or_create_secret(data_dir: &Path) -> anyhow::Result<Secret> {
    let path = data_dir.join("cluster.secret");
    if !path.exists() {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let secret = Secret::random();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        f.write_all(secret.expose().as_bytes())?;
        f.sync_all()?;
    }
    Secret::from_file(&path).map_err(anyhow::Error::msg)
}

/// Run until `shutdown` is cancelled. `ready` receives the gateway's address once every
/// part is listening.
pub async fn run(
    opts: StandaloneOptions,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating data dir {}", opts.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&opts.data_dir)?;
    let secret = load_or_create_secret(&data_dir)?;
    if !opts.grpc_over_tcp {
        // The three roles call each other in-process (client::local); their gRPC ports
        // still serve `jcs admin` and anything else outside the process.
        client::local::enable();
    }

    let gateway_listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("binding the API address {}", opts.listen))?;
    let coord_bind = opts
        .auth
        .coordinator_listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let coord_listener = TcpListener::bind(coord_bind)
        .await
        .with_context(|| format!("binding the coordinator address {coord_bind}"))?;
    let agent_listener = TcpListener::bind("127.0.0.1:0").await?;
    let coord_addr = coord_listener.local_addr()?;

    let coord_config = coordinator::CoordinatorConfig {
        listen: coord_addr,
        meta: coordinator::MetaConfig::Redb {
            path: data_dir.join("meta.redb"),
        },
        cluster_secret: Some(secret.clone()),
        ..Default::default()
    };
    let meta = coordinator::server::open_meta(&coord_config).await?;
    let coord = coordinator::Coordinator::build(&coord_config, meta)?;

    let agent_config = agent::AgentConfig {
        name: "standalone".to_owned(),
        listen: agent_listener.local_addr()?,
        coordinator: coord_addr.to_string(),
        cluster_secret: Some(secret),
        spaces: vec![agent::SpaceConfig {
            name: "local".to_owned(),
            path: data_dir.join("space"),
        }],
        ..Default::default()
    };
    let agent = agent::Agent::build(agent_config)?;

    let gateway_config = gateway::GatewayConfig {
        listen: gateway_listener.local_addr()?,
        coordinator: coord_addr.to_string(),
        max_wait: opts.max_wait,
        auth: gateway::AuthConfig {
            enabled: opts.auth.auth,
            ..Default::default()
        },
        ..Default::default()
    };
    let gateway = gateway::Gateway::build(gateway_config)?;
    let api_addr = gateway_listener.local_addr()?;

    // Shutdown order: the gateway stops accepting and drains first, so that uploads in
    // flight can still commit; the coordinator and the agent (on `backend`) stop after it.
    let backend = CancellationToken::new();
    let c = tokio::spawn(coord.serve(coord_listener, backend.child_token()));
    let a = tokio::spawn(agent.serve(agent_listener, backend.child_token()));
    let g = tokio::spawn(gateway.serve(gateway_listener, shutdown.child_token()));
    tracing::info!(
        api = %api_addr,
        coordinator = %coord_addr,
        auth = opts.auth.auth,
        data_dir = %data_dir.display(),
        "jcs standalone ready"
    );
    if let Some(tx) = ready {
        let _ = tx.send(api_addr);
    }

    // The first part to stop (error or shutdown) stops the others.
    let everything = [shutdown.clone(), backend.clone()];
    let (cr, ar, gr) = tokio::join!(
        watch(c, "coordinator", everything.clone()),
        watch(a, "agent", everything),
        watch(g, "gateway", [backend.clone(), backend]),
    );
    cr.and(ar).and(gr)
}

async fn watch<E>(
    handle: tokio::task::JoinHandle<Result<(), E>>,
    name: &'static str,
    stop: [CancellationToken; 2],
) -> anyhow::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let r = handle.await;
    for token in stop {
        token.cancel();
    }
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context(format!("{name} failed"))),
        Err(e) => Err(anyhow::Error::new(e).context(format!("{name} panicked"))),
    }
}
