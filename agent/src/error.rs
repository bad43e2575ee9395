//! Errors of the agent, each named after the action that failed, mapped exhaustively to
//! [`ErrorCode`] and turned into a `tonic::Status` at the gRPC boundary.

use common::{CodedError, ErrorCode, SpaceId};
use snafu::Snafu;

/// Everything that can go wrong in the agent.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum Error {
    /// The configuration is unusable.
    #[snafu(display("invalid agent configuration: {message}"))]
    InvalidConfig { message: String },

    /// A space's path cannot be used.
    #[snafu(display("invalid path {} of space {name}: {reason}", path.display()))]
    SpacePath {
        name: String,
        path: std::path::PathBuf,
        reason: String,
    },

    /// A space's directory could not be opened as an opendal operator.
    #[snafu(display("failed to open space {name}"))]
    OpenSpace {
        name: String,
        source: opendal::Error,
    },

    /// The ticket's signature does not verify or its body does not decode.
    #[snafu(display("invalid ticket: {reason}"))]
    BadTicket { reason: String },

    /// The ticket's expiry time has passed.
    #[snafu(display("ticket expired at {expires_at_ms} ms"))]
    TicketExpired { expires_at_ms: i64 },

    /// The ticket is valid but authorises a different operation.
    #[snafu(display("ticket of kind {actual} cannot be used for {expected}"))]
    WrongTicketKind {
        expected: &'static str,
        actual: String,
    },

    /// The agent has not registered with the coordinator, so it knows no space ids yet.
    #[snafu(display("agent not registered yet"))]
    NotRegistered,

    /// The ticket names a space this agent does not serve, even after re-registering.
    #[snafu(display("user space {space_id} is not served by this agent"))]
    UnknownSpace { space_id: SpaceId },

    /// The ticket was issued for a newer configuration of the space than the one this
    /// agent could fetch from the coordinator.
    #[snafu(display(
        "user space {space_id} is at revision {held} on this agent, the ticket needs {wanted}; retry"
    ))]
    StaleSpace {
        space_id: SpaceId,
        held: u64,
        wanted: u64,
    },

    /// The coordinator's configuration of an API space could not be turned into a store.
    #[snafu(display("user space {space_id} cannot be served by this agent: {reason}"))]
    SpaceUnusable { space_id: SpaceId, reason: String },

    /// A write names a space that has no shard store (`shardStore: null`).
    #[snafu(display("user space {space_id} has no shard store"))]
    NoShardStore { space_id: SpaceId },

    /// Storing the shard would exceed the space's `maxSize`.
    #[snafu(display(
        "{space} is full: storing {size} more bytes would use {wanted} of max {max_size} bytes"
    ))]
    SpaceFull {
        space: String,
        size: u64,
        wanted: u64,
        max_size: u64,
    },

    /// A space spec (storage, credential, working dir) is malformed; the message names the
    /// field.
    #[snafu(display("{message}"))]
    InvalidSpec { message: String },

    /// The operator of a storage could not be built from its (valid) configuration.
    #[snafu(display("failed to open {storage_type} storage"))]
    OpenStorage {
        storage_type: &'static str,
        source: opendal::Error,
    },

    /// The directory of a `Local` space cannot be created or used.
    #[snafu(display("cannot use directory {}", path.display()))]
    LocalRoot {
        path: std::path::PathBuf,
        source: std::io::Error,
    },

    /// The blocking task building a store panicked or was cancelled.
    #[snafu(display("store builder task failed"))]
    BuildTask { source: tokio::task::JoinError },

    /// TestStorage: the probe failed; the message says what failed (never the secret).
    #[snafu(display("{message}"))]
    StorageTest { code: ErrorCode, message: String },

    /// The request is malformed (wrong message order, bad field).
    #[snafu(display("{message}"))]
    BadRequest { message: String },

    /// A shard hash is not 64 lower-case hex digits.
    #[snafu(display("invalid shard hash {hash:?}: expected 64 lower-case hex digits"))]
    InvalidShardHash { hash: String },

    /// A data chunk exceeds the wire chunk limit.
    #[snafu(display("chunk of {size} bytes exceeds the limit of {limit} bytes"))]
    ChunkTooLarge { size: usize, limit: usize },

    /// The upload exceeds the ticket's `max_size`.
    #[snafu(display("shard exceeds the ticket's max_size of {max_size} bytes"))]
    ShardTooLarge { max_size: u64 },

    /// The put stream ended without a `finish` message; nothing was stored.
    #[snafu(display("put stream ended without finish; nothing was stored"))]
    StreamAborted,

    /// The bytes received do not have the CRC32C the client sent with `finish`.
    #[snafu(display(
        "the shard's bytes were damaged in transit: CRC32C {actual:08x} received, {expected:08x} sent; nothing was stored"
    ))]
    TransitChecksum { expected: u32, actual: u32 },

    /// Receiving the next message of the client stream failed.
    #[snafu(display("failed to receive the put stream"))]
    ReceivePut { source: tonic::Status },

    /// Writing shard bytes (temp file, rename, cleanup) failed.
    #[snafu(display("failed to write shard in space {space}"))]
    WriteShard {
        space: String,
        source: opendal::Error,
    },

    /// The task writing a shard panicked or was cancelled.
    #[snafu(display("shard writer task failed"))]
    WriterTask { source: tokio::task::JoinError },

    /// The task reading a local shard panicked or was cancelled.
    #[snafu(display("shard reader task failed"))]
    ReaderTask { source: tokio::task::JoinError },

    /// Writing a shard with `std::fs` (local stores) failed.
    #[snafu(display("failed to write a shard to space {space}"))]
    WriteLocalShard {
        space: String,
        source: std::io::Error,
    },

    /// The agent is shutting down; the stream was cut short.
    #[snafu(display("agent is shutting down"))]
    ShuttingDown,

    /// Hashing a chunk on the blocking pool failed.
    #[snafu(display("failed to hash chunk"))]
    HashChunk { source: tokio::task::JoinError },

    /// Reading or stating a shard failed.
    #[snafu(display("failed to read shard {hash}"))]
    ReadShard {
        hash: String,
        source: opendal::Error,
    },

    /// Reading a shard of a local space with `std::fs` failed.
    #[snafu(display("failed to read shard {hash}"))]
    ReadLocalShard {
        hash: String,
        source: std::io::Error,
    },

    /// The shard does not exist in the space.
    #[snafu(display("shard {hash} not found"))]
    ShardNotFound { hash: String },

    /// The shard ended before the size its metadata reported.
    #[snafu(display("shard {hash} ended at {at} bytes, expected {expected}"))]
    ShardTruncated {
        hash: String,
        at: u64,
        expected: u64,
    },

    /// Setting a shard's modification time (dedup touch, finalize) failed.
    #[snafu(display("failed to touch shard {hash}"))]
    TouchShard {
        hash: String,
        source: std::io::Error,
    },

    /// Listing the shards of a space failed.
    #[snafu(display("failed to list shards of space {space}"))]
    ListShards {
        space: String,
        source: opendal::Error,
    },

    /// Stating or removing a shard for deletion failed.
    #[snafu(display("failed to delete shard {hash}"))]
    DeleteShard {
        hash: String,
        source: opendal::Error,
    },

    /// A concat was stopped before it finished (agent shutting down or caller gone);
    /// nothing was stored.
    #[snafu(display("concat interrupted; nothing was stored"))]
    Interrupted,

    /// The requested offset lies past the end of the shard.
    #[snafu(display("offset {offset} is past the end of the shard ({size} bytes)"))]
    RangeOutOfBounds { offset: u64, size: u64 },

    /// A ticket's `file_path` is not a relative path inside the storage.
    #[snafu(display("invalid file path {path:?}: {reason}"))]
    InvalidFilePath { path: String, reason: &'static str },

    /// Nothing exists at a file path of a space.
    #[snafu(display("path {path:?} does not exist in {space}"))]
    FileNotFound { path: String, space: String },

    /// A file path names something that is not a regular file (a directory).
    #[snafu(display("path {path:?} of {space} is not a regular file"))]
    NotAFile { path: String, space: String },

    /// A file path names the space's own shard store (`<working_dir>/shards` or `/tmp`).
    #[snafu(display("path {path:?} of {space} belongs to its shard store and cannot be written"))]
    ReservedPath { path: String, space: String },

    /// Listing the files below a path failed.
    #[snafu(display("failed to list files under {path:?}"))]
    ListFiles {
        path: String,
        source: opendal::Error,
    },

    /// Stating or reading a file failed.
    #[snafu(display("failed to read file {path:?}"))]
    ReadFile {
        path: String,
        source: opendal::Error,
    },

    /// Writing a file (temp file, rename, cleanup) failed.
    #[snafu(display("failed to write file {path:?}"))]
    WriteFile {
        path: String,
        source: opendal::Error,
    },

    /// A file shrank while being read.
    #[snafu(display(
        "file {path:?} changed while being read: it ended at {at} of {expected} bytes"
    ))]
    FileChanged {
        path: String,
        at: u64,
        expected: u64,
    },

    /// The bytes of an export did not have the expected size or SHA-256; nothing was
    /// written.
    #[snafu(display(
        "content of {path:?} in {space} did not match: {detail}; the file was not written"
    ))]
    ContentMismatch {
        path: String,
        space: String,
        detail: String,
    },

    /// A file transfer was stopped (agent shutting down or caller gone); nothing was
    /// written.
    #[snafu(display("file transfer interrupted; nothing was written"))]
    TransferInterrupted,

    /// Setting the modification time of a copied file (sync, fs destinations) failed.
    #[snafu(display("failed to set the modification time of {}", path.display()))]
    SetModified {
        path: std::path::PathBuf,
        source: std::io::Error,
    },

    /// A local-to-local sync copy (`std::fs::copy` fast path) failed.
    #[snafu(display("failed to copy {} to {}", from.display(), to.display()))]
    CopyLocal {
        from: std::path::PathBuf,
        to: std::path::PathBuf,
        source: std::io::Error,
    },

    /// The blocking task setting a file's modification time panicked or was cancelled.
    #[snafu(display("modification time task failed"))]
    SetModifiedTask { source: tokio::task::JoinError },

    /// The blocking task listing a local directory panicked or was cancelled.
    #[snafu(display("directory listing task failed"))]
    ListTask { source: tokio::task::JoinError },

    /// Stating a file (sync: a destination file before deciding to copy) failed.
    #[snafu(display("failed to stat file {path:?}"))]
    StatFile {
        path: String,
        source: opendal::Error,
    },

    /// Deleting a file (sync: moved source file, extraneous destination file) failed.
    #[snafu(display("failed to delete file {path:?}"))]
    DeleteFile {
        path: String,
        source: opendal::Error,
    },

    /// Another agent (the destination of an import, the source of an export) refused or
    /// failed; its code is kept.
    #[snafu(display("{role} agent {address}"))]
    RemoteAgent {
        role: &'static str,
        address: String,
        source: client::Error,
    },

    /// RebuildBlocks: a target agent stored something other than the block it was sent
    /// (size or CRC32C differ); the target is at fault, not the request.
    #[snafu(display("target agent {address} stored a different block: {message}"))]
    TargetMismatch { address: String, message: String },

    /// RebuildBlocks: reading the object from its sources or re-encoding it failed.
    #[snafu(display("failed to rebuild blocks"))]
    Rebuild { source: redundancy::Error },

    /// Building the coordinator client failed.
    #[snafu(display("failed to build coordinator client"))]
    CoordinatorClient { source: client::Error },

    /// A RegisterAgent call (registration or heartbeat) failed.
    #[snafu(display("failed to register with coordinator"))]
    Register { source: client::Error },

    /// The local address of the listener is unavailable.
    #[snafu(display("failed to read the listener address"))]
    ListenerAddress { source: std::io::Error },

    /// The gRPC server stopped with an error.
    #[snafu(display("grpc server failed"))]
    Serve { source: tonic::transport::Error },
}

/// Result with the agent's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Code of a storage error: by opendal kind, temporary failures are retryable.
fn storage_code(err: &opendal::Error) -> ErrorCode {
    // `opendal::ErrorKind` is non-exhaustive, so this one match needs a catch-all.
    match err.kind() {
        opendal::ErrorKind::NotFound => ErrorCode::NotFound,
        opendal::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
        opendal::ErrorKind::RateLimited => ErrorCode::Unavailable,
        _ if err.is_temporary() => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    }
}

/// Code of an error building a storage operator: a configuration the builder refuses is
/// the caller's fault.
fn open_code(err: &opendal::Error) -> ErrorCode {
    match err.kind() {
        opendal::ErrorKind::ConfigInvalid => ErrorCode::BadArgument,
        _ => storage_code(err),
    }
}

/// Code of a local space directory that cannot be created: never `Internal`, so the message
/// (which names the path) reaches the caller.
fn local_root_code(err: &std::io::Error) -> ErrorCode {
    // `std::io::ErrorKind` is non-exhaustive, so this match needs a catch-all.
    match err.kind() {
        std::io::ErrorKind::NotFound => ErrorCode::NotFound,
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            ErrorCode::PermissionDenied
        }
        _ => ErrorCode::BadArgument,
    }
}

/// Code of a local filesystem error (the touch done with `std::fs`).
fn io_code(err: &std::io::Error) -> ErrorCode {
    // `std::io::ErrorKind` is non-exhaustive, so this match needs a catch-all.
    match err.kind() {
        std::io::ErrorKind::NotFound => ErrorCode::NotFound,
        std::io::ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
        _ => ErrorCode::Internal,
    }
}

impl CodedError for Error {
    fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidConfig { .. } => ErrorCode::BadArgument,
            Error::SpacePath { .. } => ErrorCode::BadArgument,
            Error::OpenSpace { source, .. } => storage_code(source),
            Error::BadTicket { .. } => ErrorCode::Unauthenticated,
            Error::TicketExpired { .. } => ErrorCode::Unauthenticated,
            Error::WrongTicketKind { .. } => ErrorCode::PermissionDenied,
            Error::NotRegistered => ErrorCode::Unavailable,
            Error::UnknownSpace { .. } => ErrorCode::NotFound,
            Error::StaleSpace { .. } => ErrorCode::Unavailable,
            Error::SpaceUnusable { .. } => ErrorCode::Unavailable,
            Error::NoShardStore { .. } => ErrorCode::BadArgument,
            Error::SpaceFull { .. } => ErrorCode::BadArgument,
            Error::InvalidSpec { .. } => ErrorCode::BadArgument,
            Error::OpenStorage { source, .. } => open_code(source),
            Error::LocalRoot { source, .. } => local_root_code(source),
            Error::BuildTask { .. } => ErrorCode::Internal,
            Error::StorageTest { code, .. } => *code,
            Error::BadRequest { .. } => ErrorCode::BadArgument,
            Error::InvalidShardHash { .. } => ErrorCode::BadArgument,
            Error::ChunkTooLarge { .. } => ErrorCode::BadArgument,
            Error::ShardTooLarge { .. } => ErrorCode::BadArgument,
            Error::StreamAborted => ErrorCode::BadArgument,
            Error::TransitChecksum { .. } => ErrorCode::Unavailable,
            Error::ReceivePut { source } => common::error::code_of(source),
            Error::WriteShard { source, .. } => storage_code(source),
            Error::WriterTask { .. } => ErrorCode::Internal,
            Error::ReaderTask { .. } => ErrorCode::Internal,
            Error::WriteLocalShard { source, .. } => io_code(source),
            Error::ShuttingDown => ErrorCode::Unavailable,
            Error::HashChunk { .. } => ErrorCode::Internal,
            Error::ReadShard { source, .. } => storage_code(source),
            Error::ReadLocalShard { source, .. } => io_code(source),
            Error::ShardNotFound { .. } => ErrorCode::NotFound,
            Error::ShardTruncated { .. } => ErrorCode::Internal,
            Error::TouchShard { source, .. } => io_code(source),
            Error::ListShards { source, .. } => storage_code(source),
            Error::DeleteShard { source, .. } => storage_code(source),
            Error::Interrupted => ErrorCode::Unavailable,
            Error::RangeOutOfBounds { .. } => ErrorCode::BadArgument,
            Error::InvalidFilePath { .. } => ErrorCode::BadArgument,
            Error::FileNotFound { .. } => ErrorCode::NotFound,
            Error::NotAFile { .. } => ErrorCode::BadArgument,
            Error::ReservedPath { .. } => ErrorCode::BadArgument,
            Error::ListFiles { source, .. } => storage_code(source),
            Error::ReadFile { source, .. } => storage_code(source),
            Error::WriteFile { source, .. } => storage_code(source),
            Error::FileChanged { .. } => ErrorCode::Conflict,
            Error::ContentMismatch { .. } => ErrorCode::BadArgument,
            Error::TransferInterrupted => ErrorCode::Unavailable,
            Error::SetModified { source, .. } => io_code(source),
            Error::CopyLocal { source, .. } => io_code(source),
            Error::SetModifiedTask { .. } => ErrorCode::Internal,
            Error::ListTask { .. } => ErrorCode::Internal,
            Error::StatFile { source, .. } => storage_code(source),
            Error::DeleteFile { source, .. } => storage_code(source),
            Error::RemoteAgent { source, .. } => source.code(),
            Error::TargetMismatch { .. } => ErrorCode::Internal,
            Error::Rebuild { source } => source.code(),
            Error::CoordinatorClient { source } => source.code(),
            Error::Register { source } => source.code(),
            Error::ListenerAddress { .. } => ErrorCode::Internal,
            Error::Serve { .. } => ErrorCode::Internal,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        common::error::to_status(&err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_map_by_kind() {
        let nf = opendal::Error::new(opendal::ErrorKind::NotFound, "x");
        assert_eq!(storage_code(&nf), ErrorCode::NotFound);
        let pd = opendal::Error::new(opendal::ErrorKind::PermissionDenied, "x");
        assert_eq!(storage_code(&pd), ErrorCode::PermissionDenied);
        let tmp = opendal::Error::new(opendal::ErrorKind::Unexpected, "x").set_temporary();
        assert_eq!(storage_code(&tmp), ErrorCode::Unavailable);
        let other = opendal::Error::new(opendal::ErrorKind::Unexpected, "x");
        assert_eq!(storage_code(&other), ErrorCode::Internal);

        let nf = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(io_code(&nf), ErrorCode::NotFound);
        let other = std::io::Error::other("disk on fire");
        assert_eq!(io_code(&other), ErrorCode::Internal);

        let cfg = opendal::Error::new(opendal::ErrorKind::ConfigInvalid, "x");
        assert_eq!(open_code(&cfg), ErrorCode::BadArgument);
        let ro = std::io::Error::from(std::io::ErrorKind::ReadOnlyFilesystem);
        assert_eq!(local_root_code(&ro), ErrorCode::PermissionDenied);
        let not_dir = std::io::Error::from(std::io::ErrorKind::NotADirectory);
        assert_eq!(local_root_code(&not_dir), ErrorCode::BadArgument);
    }

    #[test]
    fn status_keeps_the_code_and_message() {
        let s = tonic::Status::from(Error::RangeOutOfBounds {
            offset: 10,
            size: 5,
        });
        assert_eq!(common::error::code_of(&s), ErrorCode::BadArgument);
        assert!(s.message().contains("offset 10"), "{}", s.message());

        let s = tonic::Status::from(Error::TicketExpired { expires_at_ms: 1 });
        assert_eq!(common::error::code_of(&s), ErrorCode::Unauthenticated);

        let s = tonic::Status::from(Error::NotRegistered);
        assert_eq!(s.code(), tonic::Code::Unavailable);
    }

    #[test]
    fn internal_errors_hide_details() {
        let s = tonic::Status::from(Error::ShardTruncated {
            hash: "ab".into(),
            at: 1,
            expected: 2,
        });
        assert_eq!(common::error::code_of(&s), ErrorCode::Internal);
        assert_eq!(s.message(), "internal error");
    }
}
