//! The JCS coordinator: the only owner of metadata (buckets, packages, objects, agents,
//! user spaces, pending uploads), kept in a [`meta::MetaStore`]. It hands out placements
//! with signed tickets and resolves objects for downloads; it never carries object bytes.

pub mod catalog;
pub mod config;
pub mod crypto;
pub mod error;
pub mod gc;
pub mod grant;
pub mod ids;
pub mod leader;
pub mod placement;
pub mod redundant;
pub mod reencode;
pub mod registry;
pub mod scrub;
pub mod server;
pub mod service;
pub mod sync;
pub mod tickets;
pub mod transfer;

pub use config::{CoordinatorConfig, MetaConfig, ScrubConfig};
pub use error::Error;
pub use server::Coordinator;
