//! The JCS agent: serves shard bytes of user spaces over gRPC (`AgentService`): the `Local`
//! directories declared in its config, plus every space of any storage type (Local, S3,
//! OBS, OSS, COS) the coordinator assigns it at registration. Verifies coordinator-signed
//! tickets locally, probes storage configurations (`TestStorage`), runs sync passes
//! (`RunSync`) between storages. Never touches metadata.
//!
//! Library only: the `jcs` binary loads an [`AgentConfig`], binds a listener and calls
//! [`Agent::build`] then [`Agent::serve`].

pub mod backend;
pub mod config;
pub mod error;
pub mod files;
pub mod heartbeat;
pub mod probe;
pub mod registry;
pub mod repair;
pub mod server;
pub mod service;
pub mod store;
pub mod sync;
pub mod ticket;

pub use config::{AgentConfig, SpaceConfig};
pub use error::Error;
pub use heartbeat::Registration;
pub use server::Agent;
