//! Wiring: build the coordinator from its config and a metadata store, and serve it.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use meta::MetaStoreRef;
use proto::coordinator::coordinator_service_server::CoordinatorServiceServer;
use snafu::ResultExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::config::{CoordinatorConfig, MetaConfig};
use crate::error::{Error, Result, ServeSnafu};
use crate::gc::Gc;
use crate::registry::Registry;
use crate::service::Service;
use crate::tickets::TicketSigner;

/// How often leader-only housekeeping runs (expired uploads).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub struct Coordinator {
    service: Arc<Service>,
    meta: MetaStoreRef,
    advertise: String,
    leader_ttl: Duration,
    leadership: tokio::sync::watch::Sender<crate::leader::Leadership>,
    gc: Gc,
    scrubber: crate::scrub::Scrubber,
    gc_interval: Duration,
    gc_grace: Duration,
    multipart_expiry: Duration,
    shutdown_timeout: Duration,
    tls: Option<Arc<common::tls::TlsMaterial>>,
}

/// Open the metadata store a config names, wrapped in the cluster's key prefix.
pub async fn open_meta(config: &CoordinatorConfig) -> Result<MetaStoreRef> {
    let inner: MetaStoreRef = match &config.meta {
        MetaConfig::Memory => Arc::new(meta::MemoryStore::new()),
        MetaConfig::Redb { path } => Arc::new(meta::RedbStore::open(path).await?),
        MetaConfig::Etcd {
            endpoints,
            connect_timeout,
            request_timeout,
        } => Arc::new(
            meta::EtcdStore::connect(meta::EtcdOptions {
                endpoints: endpoints.clone(),
                connect_timeout: *connect_timeout,
                request_timeout: *request_timeout,
            })
            .await?,
        ),
    };
    let mut root = config.root.clone().into_bytes();
    root.push(b'/');
    Ok(Arc::new(meta::Prefixed::new(root, inner)))
}

impl Coordinator {
    /// Build from a validated config and an opened metadata store (see [`open_meta`]).
    pub fn build(config: &CoordinatorConfig, meta: MetaStoreRef) -> Result<Coordinator> {
        config
            .validate()
            .map_err(|message| Error::Startup { message })?;
        let secret = config
            .secret()
            .map_err(|message| Error::Startup { message })?;
        let tls = config
            .tls
            .load()
            .map_err(|message| Error::Startup { message })?;
        if let Some(material) = &tls {
            client::tls::check(material).map_err(|e| Error::Startup {
                message: e.to_string(),
            })?;
        }
        let catalog = Catalog::new(meta.clone());
        let registry = Arc::new(Registry::new(config.agent_ttl));
        let signer = TicketSigner::new(secret.clone());
        let agents =
            client::AgentPool::new(client::ChannelOptions::default().with_tls(tls.clone()));
        let gc = Gc {
            catalog: catalog.clone(),
            registry: registry.clone(),
            signer: signer.clone(),
            agents: agents.clone(),
        };
        let scrub_wakeup = Arc::new(tokio::sync::Notify::new());
        let scrubber = crate::scrub::Scrubber {
            catalog: catalog.clone(),
            registry: registry.clone(),
            signer: signer.clone(),
            agents: agents.clone(),
            config: config.scrub.clone(),
            wakeup: scrub_wakeup.clone(),
            turn: Arc::default(),
            default_redundancy: config.default_redundancy,
            log_written: Arc::default(),
            reencode_seen: Arc::default(),
        };
        let service = Service {
            catalog,
            registry,
            signer,
            cipher: crate::crypto::CredentialCipher::new(&secret),
            agents,
            spaces_generation: AtomicU64::new(0),
            sync_runs: crate::sync::Runs::default(),
            sync_wakeup: tokio::sync::Notify::new(),
            ticket_ttl: config.ticket_ttl,
            upload_expiry: config.upload_expiry,
            heartbeat_interval: config.heartbeat_interval,
            turn: AtomicU64::new(0),
            default_redundancy: config.default_redundancy,
            scrub_wakeup,
        };
        Ok(Coordinator {
            service: Arc::new(service),
            meta,
            advertise: config.advertised(),
            leader_ttl: config.leader_ttl,
            leadership: tokio::sync::watch::Sender::new(Default::default()),
            gc,
            scrubber,
            gc_interval: config.gc_interval,
            gc_grace: config.gc_grace,
            multipart_expiry: config.multipart_expiry,
            shutdown_timeout: config.shutdown_timeout,
            tls,
        })
    }

    /// A handle on shard garbage collection, e.g. to run a pass on demand.
    pub fn gc(&self) -> Gc {
        self.gc.clone()
    }

    pub fn catalog(&self) -> &Catalog {
        &self.service.catalog
    }

    /// Who leads, as this node sees it (updated by the election loop of [`Coordinator::serve`]).
    pub fn leadership(&self) -> tokio::sync::watch::Receiver<crate::leader::Leadership> {
        self.leadership.subscribe()
    }

    /// Serve gRPC on an already bound listener until `shutdown` is cancelled. Also resumes
    /// interrupted deletions and sweeps expired uploads while this node leads.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
        // mTLS (when configured): checked at build, so this does not fail in practice.
        let mut builder = tonic::transport::Server::builder();
        if let Some(material) = &self.tls {
            builder = builder
                .tls_config(client::tls::server_config(material))
                .context(ServeSnafu)?;
        }
        // Leader-only work (housekeeping, GC, sync scheduler) runs per term: see leader.rs.
        let election = tokio::spawn(
            crate::leader::Election {
                meta: self.meta.clone(),
                me: self.advertise.clone(),
                ttl: self.leader_ttl,
                state: self.leadership.clone(),
            }
            .run(
                crate::leader::LeaderWork {
                    service: self.service.clone(),
                    gc: self.gc,
                    scrubber: self.scrubber,
                    gc_interval: self.gc_interval,
                    gc_grace: self.gc_grace,
                    multipart_expiry: self.multipart_expiry,
                },
                shutdown.clone(),
            ),
        );
        let svc = CoordinatorServiceServer::from_arc(self.service)
            .max_decoding_message_size(proto::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(proto::MAX_MESSAGE_SIZE);
        // Standard gRPC health (`grpc.health.v1.Health`): SERVING from here on, for the
        // whole server ("") and the coordinator service by name.
        let (health, health_svc) = tonic_health::server::health_reporter();
        health
            .set_serving::<CoordinatorServiceServer<crate::service::Service>>()
            .await;
        tracing::info!(
            addr = ?listener.local_addr().ok(),
            mtls = self.tls.is_some(),
            "coordinator serving"
        );
        let _in_process = listener.local_addr().ok().and_then(|address| {
            client::local::serve_until(
                &address.to_string(),
                "coordinator",
                tonic::service::Routes::new(health_svc.clone()).add_service(svc.clone()),
                shutdown.clone().cancelled_owned(),
            )
        });
        let server = builder
            .layer(common::grpc::RpcLayer::new("coordinator"))
            .add_service(health_svc)
            .add_service(svc)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown.clone().cancelled_owned(),
            );
        let result = match common::shutdown::drain_within(
            server,
            &shutdown,
            self.shutdown_timeout,
            "coordinator",
        )
        .await
        {
            Some(served) => served.context(ServeSnafu),
            None => Ok(()),
        };
        shutdown.cancel();
        let _ = election.await;
        result
    }
}

pub(crate) async fn housekeeping(
    catalog: Catalog,
    multipart_expiry: Duration,
    shutdown: CancellationToken,
) {
    match catalog.resume_jobs().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(jobs = n, "resumed interrupted deletions"),
        Err(e) => {
            tracing::warn!(error = %common::error::ErrorChain(&e), "failed to resume deletions")
        }
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        let now = common::time::now_ms();
        match catalog.sweep_uploads(now).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(uploads = n, "forgot expired uploads"),
            Err(e) => tracing::warn!(error = %common::error::ErrorChain(&e), "upload sweep failed"),
        }
        let max_age = i64::try_from(multipart_expiry.as_millis()).unwrap_or(i64::MAX);
        match catalog.sweep_multipart(now, max_age).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(multipart_uploads = n, "cleaned up multipart uploads"),
            Err(e) => {
                tracing::warn!(error = %common::error::ErrorChain(&e), "multipart sweep failed")
            }
        }
    }
}
