//! One cluster role per process, each from a TOML config (`deploy/config/*.example.toml`)
//! with environment overrides (`JCS_COORDINATOR__…`, `JCS_AGENT__…`, `JCS_GATEWAY__…`).

use std::path::Path;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn load<T: serde::de::DeserializeOwned>(file: Option<&Path>, prefix: &str) -> anyhow::Result<T> {
    common::config::load(file, prefix).map_err(anyhow::Error::msg)
}

pub async fn coordinator(file: Option<&Path>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config: coordinator::CoordinatorConfig = load(file, "JCS_COORDINATOR__")?;
    tracing::info!(?config, "coordinator configuration");
    let meta = coordinator::server::open_meta(&config).await?;
    let coord = coordinator::Coordinator::build(&config, meta)?;
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
