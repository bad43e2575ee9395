//! Wiring: [`Agent::build`] checks the config and opens the stores; [`Agent::serve`] runs the
//! gRPC server on a bound listener plus the registration loop until shutdown.

use std::collections::HashMap;
use std::time::Duration;

use client::ChannelOptions;
use common::secret::Secret;
use proto::agent::agent_service_server::AgentServiceServer;
use proto::coordinator::{RegisterAgentRequest, SpaceDecl};
use snafu::ResultExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

use crate::config::AgentConfig;
use crate::error::{
    CoordinatorClientSnafu, InvalidConfigSnafu, ListenerAddressSnafu, Result, ServeSnafu,
};
use crate::heartbeat::{Registrar, Registration};
use crate::registry::SpaceRegistry;
use crate::service::AgentGrpc;
use crate::store::{Locations, SpaceStore, TMP_MAX_AGE};

/// Connect timeout towards the coordinator.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Deadline of one `RegisterAgent` call.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// A configured agent, ready to serve.
pub struct Agent {
    config: AgentConfig,
    secret: Secret,
    stores: Vec<SpaceStore>,
    registry: SpaceRegistry,
    locations: Locations,
    registration: watch::Sender<Option<Registration>>,
    tls: Option<std::sync::Arc<common::tls::TlsMaterial>>,
}

impl Agent {
    /// Validate `config`, load the cluster secret and open (creating when missing) the
    /// directory of every space. Does no network IO; its only filesystem work is reading
    /// the secret file and creating the space directories, once at start-up.
    pub fn build(config: AgentConfig) -> Result<Agent> {
        config
            .validate()
            .map_err(|message| InvalidConfigSnafu { message }.build())?;
        let secret = config
            .secret()
            .map_err(|message| InvalidConfigSnafu { message }.build())?;
        let tls = config
            .tls
            .load()
            .map_err(|message| InvalidConfigSnafu { message }.build())?;
        if let Some(material) = &tls {
            client::tls::check(material).map_err(|e| {
                InvalidConfigSnafu {
                    message: e.to_string(),
                }
                .build()
            })?;
        }
        let locations = Locations::default();
        let stores = config
            .spaces
            .iter()
            .map(|space| SpaceStore::open_local_in(&space.name, &space.path, &locations))
            .collect::<Result<Vec<_>>>()?;
        let (registration, _) = watch::channel(None);
        Ok(Agent {
            config,
            secret,
            stores,
            registry: SpaceRegistry::default(),
            locations,
            registration,
            tls,
        })
    }

    /// The effective configuration (its `Debug` redacts the secret).
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// The latest successful registration (`None` until the coordinator first answers).
    /// Tests wait on it with `wait_for(Option::is_some)`.
    pub fn registration(&self) -> watch::Receiver<Option<Registration>> {
        self.registration.subscribe()
    }

    /// Serve the agent's gRPC service on `listener` and keep registering with the
    /// coordinator, until `shutdown` is cancelled. The service answers before registration
    /// succeeds (tickets are then refused with `Unavailable`).
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
        let local = listener.local_addr().context(ListenerAddressSnafu)?;
        let advertise = match &self.config.advertise {
            Some(a) => a.clone(),
            None => {
                if local.ip().is_unspecified() {
                    warn!(
                        address = %local,
                        "listening on an unspecified address without `advertise`; \
                         others cannot reach this agent at it"
                    );
                }
                local.to_string()
            }
        };
        let coordinator = client::coordinator(
            &self.config.coordinator,
            &ChannelOptions {
                connect_timeout: CONNECT_TIMEOUT,
                request_timeout: Some(REGISTER_TIMEOUT),
                tls: self.tls.clone(),
            },
        )
        .context(CoordinatorClientSnafu)?;
        // Several coordinators: heartbeat to each (see `Registrar::with_peers`).
        let addresses = client::coordinator_addresses(&self.config.coordinator);
        let mut peers = Vec::new();
        if addresses.len() > 1 {
            for address in &addresses {
                peers.push(
                    client::coordinator(
                        address,
                        &ChannelOptions {
                            connect_timeout: CONNECT_TIMEOUT,
                            request_timeout: Some(REGISTER_TIMEOUT),
                            tls: self.tls.clone(),
                        },
                    )
                    .context(CoordinatorClientSnafu)?,
                );
            }
        }

        let request = RegisterAgentRequest {
            name: self.config.name.clone(),
            address: advertise.clone(),
            spaces: self
                .stores
                .iter()
                .map(|s| SpaceDecl {
                    name: s.name().to_owned(),
                    storage_type: "Local".to_owned(),
                    path: s
                        .local_root()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                })
                .collect(),
        };

        // Background work stops on this token: on shutdown, or when the server fails.
        let tasks_token = shutdown.child_token();
        let mut tasks = JoinSet::new();
        for store in &self.stores {
            let store = store.clone();
            let token = tasks_token.clone();
            tasks.spawn(async move {
                tokio::select! {
                    () = token.cancelled() => {}
                    r = store.sweep_tmp(TMP_MAX_AGE) => if let Err(e) = r {
                        warn!(space = %store.name(), error = %common::error::ErrorChain(&e), "temp sweep failed");
                    }
                }
            });
        }
        let registrar = Registrar::new(
            coordinator,
            request,
            self.stores
                .iter()
                .map(|s| (s.name().to_owned(), s.clone()))
                .collect::<HashMap<_, _>>(),
            self.registry.clone(),
            self.registration.clone(),
            self.config.heartbeat_interval,
            self.locations.clone(),
        )
        .with_peers(peers);
        tasks.spawn(registrar.run(tasks_token.clone()));

        // In-flight streams are cut only when the drain after `shutdown` times out (or the
        // server has stopped), not as soon as `shutdown` fires: requests in flight finish.
        let abort = CancellationToken::new();
        let service = AgentServiceServer::new(
            AgentGrpc::new(self.secret, self.registry, abort.clone())
                .with_agent_tls(self.tls.clone()),
        )
        .max_decoding_message_size(proto::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(proto::MAX_MESSAGE_SIZE);
        // Standard gRPC health (`grpc.health.v1.Health`): SERVING once the stores are open
        // and the service is built, i.e. from here on.
        let (health, health_svc) = tonic_health::server::health_reporter();
        health.set_serving::<AgentServiceServer<AgentGrpc>>().await;

        info!(
            agent = %self.config.name,
            address = %local,
            advertise = %advertise,
            coordinator = %self.config.coordinator,
            spaces = self.stores.len(),
            mtls = self.tls.is_some(),
            "agent serving"
        );
        let _in_process = client::local::serve_until(
            &advertise,
            "agent",
            tonic::service::Routes::new(health_svc.clone()).add_service(service.clone()),
            shutdown.clone().cancelled_owned(),
        );
        let mut builder = Server::builder();
        if let Some(material) = &self.tls {
            builder = builder
                .tls_config(client::tls::server_config(material))
                .context(ServeSnafu)?;
        }
        // The clients' fixed windows (client/src/lib.rs), not the adaptive one: with the BDP
        // estimate hyper lets every stream use the whole connection window, so one PutShard
        // whose writer stalls (a slow space) would hold back every other upload on the
        // gateway's connection; fixed, a stream holds at most `STREAM_WINDOW` unread.
        let server = builder
            .initial_stream_window_size(client::STREAM_WINDOW)
            .initial_connection_window_size(client::CONNECTION_WINDOW)
            .layer(common::grpc::RpcLayer::new("agent"))
            .add_service(health_svc)
            .add_service(service)
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown.clone().cancelled_owned(),
            );
        let served = common::shutdown::drain_within(
            server,
            &shutdown,
            self.config.shutdown_timeout,
            "agent",
        )
        .await
        .unwrap_or(Ok(()));
        abort.cancel();

        tasks_token.cancel();
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                warn!(error = %e, "agent background task failed");
            }
        }
        info!(agent = %self.config.name, "agent stopped");
        served.context(ServeSnafu)
    }
}
