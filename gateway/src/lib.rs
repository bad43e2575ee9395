//! The JCS gateway: a stateless axum server that translates the `/v1` REST API into
//! coordinator gRPC calls and streams object bytes straight to and from agents. It never
//! touches metadata storage. The `jcs` binary builds it with [`Gateway::build`] and runs it
//! with [`Gateway::serve`]; the API is described in `docs/api.md`.

pub mod auth;
pub mod batch;
pub mod config;
pub mod data_path;
pub mod error;
pub mod extract;
pub mod grant;
pub mod model;
pub mod openapi;
pub mod ops;
pub mod redundant;
pub mod routes;
pub mod serve;
pub mod server;
pub mod state;

#[cfg(test)]
mod testing;

pub use config::{AuthConfig, GatewayConfig};
pub use error::{ApiError, Error};
pub use server::{Gateway, router};
pub use state::AppState;
