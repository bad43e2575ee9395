//! The redundancy engine of JCS (issue 8): policies (`none`, `rep`, `ec`) and their JSON form,
//! a streaming striped Reed–Solomon encoder with per-block and whole-object SHA-256, ranged
//! and degraded reads, and replication helpers with the same interfaces. Pure library: no
//! metadata, no network; the gateway or an agent plugs it into the data path (see
//! `docs/redundancy.md`).

pub mod decode;
pub mod encode;
pub mod error;
pub mod layout;
pub mod memory;
pub mod policy;

pub use decode::{BlockSource, BlockSourceRef, ByteStream, ObjectStream, ReadStats, read_range};
pub use encode::{
    BlockStream, BlockSummary, EncodeOptions, EncodeSummary, Encoder, StripeEncoder, encoder,
};
pub use error::{Error, Result};
pub use layout::EcLayout;
pub use policy::{ObjectRedundancy, Policy};
