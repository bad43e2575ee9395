//! The JCS agent: serves shard bytes of one or more `Local` user spaces over gRPC
//! (`AgentService`), verifies coordinator-signed tickets locally and registers with the
//! coordinator. It never touches metadata.
//!
//! Library only: the `jcs` binary loads an [`AgentConfig`], binds a listener and calls
//! [`Agent::build`] then [`Agent::serve`].

pub mod config;
pub mod error;
pub mod heartbeat;
pub mod server;
pub mod service;
pub mod store;
pub mod ticket;

pub use config::{AgentConfig, SpaceConfig};
pub use error::Error;
pub use heartbeat::Registration;
pub use server::Agent;
