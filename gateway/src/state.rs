//! Shared state of the handlers: configuration and gRPC clients (cheap to clone).

use std::sync::Arc;

use client::{AgentPool, CoordinatorClient};

use crate::config::GatewayConfig;
use crate::error::ApiError;

/// Handler state: the configuration, the coordinator clients and the agent channel pool.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: GatewayConfig,
    coordinator: CoordinatorClient,
    /// For calls that may legitimately run for minutes (package import and export): no
    /// per-call deadline.
    bulk_coordinator: CoordinatorClient,
    agents: AgentPool,
}

impl AppState {
    /// State over already-built clients (tests may point them anywhere); long-running calls
    /// share `coordinator`.
    pub fn new(config: GatewayConfig, coordinator: CoordinatorClient, agents: AgentPool) -> Self {
        let bulk_coordinator = coordinator.clone();
        AppState::with_bulk_coordinator(config, coordinator, bulk_coordinator, agents)
    }

    /// Like [`AppState::new`], with a separate client (`bulk_coordinator`, normally without a
    /// per-call deadline) for the calls that may run for minutes: package import and export.
    pub fn with_bulk_coordinator(
        config: GatewayConfig,
        coordinator: CoordinatorClient,
        bulk_coordinator: CoordinatorClient,
        agents: AgentPool,
    ) -> Self {
        AppState {
            inner: Arc::new(Inner {
                config,
                coordinator,
                bulk_coordinator,
                agents,
            }),
        }
    }

    /// The gateway configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    /// A handle on the coordinator client (clones share one channel).
    pub fn coordinator(&self) -> CoordinatorClient {
        self.inner.coordinator.clone()
    }

    /// The coordinator client for package import and export (clones share one channel),
    /// whose calls are not bounded by `request_timeout`: they copy every file of a package.
    pub fn bulk_coordinator(&self) -> CoordinatorClient {
        self.inner.bulk_coordinator.clone()
    }

    /// Agent clients cached by address.
    pub fn agents(&self) -> &AgentPool {
        &self.inner.agents
    }

    /// The user a request acts for: `userID` when given (it must not be 0), else the
    /// configured default.
    pub(crate) fn user_id(&self, requested: Option<u64>) -> Result<u64, ApiError> {
        match requested {
            None => Ok(self.inner.config.default_user_id),
            Some(0) => Err(ApiError::bad_argument(
                "field `userID` must be a positive id (got 0)",
            )),
            Some(id) => Ok(id),
        }
    }
}
