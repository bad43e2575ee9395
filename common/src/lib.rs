//! Shared vocabulary of JCS. Depends on neither `proto` nor `meta` (STYLE.md §7.2).

pub mod config;
pub mod error;
pub mod grpc;
pub mod hash;
pub mod id;
pub mod metrics;
pub mod path;
pub mod request_id;
pub mod secret;
pub mod shard_hash;
pub mod shutdown;
pub mod signing;
pub mod space;
pub mod sync;
pub mod telemetry;
pub mod testing;
pub mod ticket;
pub mod time;
pub mod tls;

pub use error::{CodedError, ErrorCode};
pub use id::{AgentId, BucketId, ObjectId, PackageId, SpaceId, UploadId, UserId};
