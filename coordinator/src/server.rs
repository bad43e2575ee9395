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
use crate::registry::Registry;
use crate::service::Service;
use crate::tickets::TicketSigner;

/// How often leader-only housekeeping runs (expired uploads).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub struct Coordinator {
    service: Arc<Service>,
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
        let service = Service {
            catalog: Catalog::new(meta),
            registry: Arc::new(Registry::new(config.agent_ttl)),
            signer: TicketSigner::new(secret),
            ticket_ttl: config.ticket_ttl,
            upload_expiry: config.upload_expiry,
            heartbeat_interval: config.heartbeat_interval,
            turn: AtomicU64::new(0),
        };
        Ok(Coordinator {
            service: Arc::new(service),
        })
    }

    pub fn catalog(&self) -> &Catalog {
        &self.service.catalog
    }

    /// Serve gRPC on an already bound listener until `shutdown` is cancelled. Also resumes
    /// interrupted deletions and sweeps expired uploads (single node: always the leader).
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
        let catalog = self.service.catalog.clone();
        let housekeeping = tokio::spawn(housekeeping(catalog, shutdown.clone()));
        let svc = CoordinatorServiceServer::from_arc(self.service)
            .max_decoding_message_size(proto::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(proto::MAX_MESSAGE_SIZE);
        tracing::info!(addr = ?listener.local_addr().ok(), "coordinator serving");
        let result = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                shutdown.clone().cancelled_owned(),
            )
            .await
            .context(ServeSnafu);
        shutdown.cancel();
        let _ = housekeeping.await;
        result
    }
}

async fn housekeeping(catalog: Catalog, shutdown: CancellationToken) {
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
        match catalog.sweep_uploads(common::time::now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(uploads = n, "forgot expired uploads"),
            Err(e) => tracing::warn!(error = %common::error::ErrorChain(&e), "upload sweep failed"),
        }
    }
}
