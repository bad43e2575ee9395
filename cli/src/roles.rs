//! One cluster role per process, each from a TOML config (`deploy/config/*.example.toml`)
//! with environment overrides (`JCS_COORDINATOR__…`, `JCS_AGENT__…`, `JCS_GATEWAY__…`).
//! Each serves until the shutdown token fires (SIGTERM/ctrl-c), then stops accepting,
//! drains in-flight requests for at most its `shutdown_timeout`, and returns `Ok` (exit 0).
//! The coordinator and agent also serve `GET /metrics` on `metrics_addr` when it is set;
//! the gateway serves it on its own port.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serve `GET /metrics` on `addr` (when set) until `shutdown`.
async fn metrics_endpoint(
    addr: Option<SocketAddr>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    if let Some(addr) = addr {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics address {addr}"))?;
        let token = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = common::metrics::serve(listener, token).await {
                tracing::warn!(error = %e, "metrics endpoint failed");
            }
        });
    }
    Ok(())
}

fn load<T: serde::de::DeserializeOwned>(file: Option<&Path>, prefix: &str) -> anyhow::Result<T> {
    common::config::load(file, prefix).map_err(anyhow::Error::msg)
}

pub async fn coordinator(file: Option<&Path>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config: coordinator::CoordinatorConfig = load(file, "JCS_COORDINATOR__")?;
    tracing::info!(?config, "coordinator configuration");
    let meta = coordinator::server::open_meta(&config).await?;
    let coord = coordinator::Coordinator::build(&config, meta)?;
    metrics_endpoint(config.metrics_addr, &shutdown).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    Ok(coord.serve(listener, shutdown).await?)
}

pub async fn agent(file: Option<&Path>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config: agent::AgentConfig = load(file, "JCS_AGENT__")?;
    tracing::info!(?config, "agent configuration");
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    metrics_endpoint(config.metrics_addr, &shutdown).await?;
    let agent = agent::Agent::build(config)?;
    Ok(agent.serve(listener, shutdown).await?)
}

pub async fn gateway(file: Option<&Path>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config: gateway::GatewayConfig = load(file, "JCS_GATEWAY__")?;
    tracing::info!(?config, "gateway configuration");
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let gateway = gateway::Gateway::build(config)?;
    Ok(gateway.serve(listener, shutdown).await?)
}
