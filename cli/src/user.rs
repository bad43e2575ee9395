//! The client side of `jcs`: commands that talk to a gateway's `/v1` API
//! (docs/cli.md). Addresses are `jcs://bucket/package/path`; anything else is local.

pub mod addr;
pub mod api;
pub mod commands;
pub mod config;
pub mod error;
pub mod output;
pub mod transfer;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use common::secret::Secret;

pub use error::{Error, exit};

/// Options every client command shares.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Gateway URL [default: http://127.0.0.1:7890].
    #[arg(long, global = true, env = "JCS_URL")]
    pub url: Option<String>,
    /// Access key id: with the secret key, every request to the gateway is signed.
    #[arg(long, global = true, env = "JCS_ACCESS_KEY")]
    pub access_key: Option<String>,
    /// Secret key of the access key (`jcs admin key create` prints it once).
    #[arg(long, global = true, env = "JCS_SECRET_KEY", hide_env_values = true, value_parser = parse_secret)]
    pub secret_key: Option<Secret>,
    /// Client config file [default: ~/.config/jcs/config.toml].
    #[arg(long, global = true, env = "JCS_CONFIG")]
    pub config_file: Option<PathBuf>,
    /// Print JSON lines on stdout instead of text (no progress bars).
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bars and no notes on stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

/// Options of transfers (`cp`).
#[derive(Debug, Clone, Args)]
pub struct TransferArgs {
    /// Copy directory trees / whole prefixes.
    #[arg(long, short)]
    pub recursive: bool,
    /// Requests in flight at once (packs of small files, single files, or parts).
    #[arg(long, short = 'j', default_value_t = 8)]
    pub jobs: usize,
    /// Files at least this big are uploaded in parts (resumable), e.g. 64MiB.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub multipart_threshold: u64,
    /// Size of one part of a multipart upload, e.g. 16MiB.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub part_size: u64,
    /// Upload: files at most this big are packed with others into one request.
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub pack_file_max: u64,
    /// Upload: at most this many files in one packed request (1 turns packing off).
    #[arg(long, default_value_t = 32)]
    pub pack_files: usize,
    /// Upload: at most this many bytes of files in one packed request.
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    pub pack_bytes: u64,
    /// Where the state of unfinished uploads is kept [default: ~/.local/state/jcs].
    #[arg(long, env = "JCS_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Secrets stay wrapped so `Debug` never prints them.
fn parse_secret(s: &str) -> Result<Secret, String> {
    Ok(Secret::new(s))
}

/// `10`, `4KiB`, `16MiB`, `1GiB` (also `K`, `M`, `G`, `KB`, `MB`, `GB` as powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s}: not a size"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{s}: unknown unit (use KiB, MiB or GiB)")),
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("{s}: out of range"))
}

#[derive(Debug, Subcommand)]
pub enum BucketCommand {
    /// List buckets.
    Ls,
    /// Create a bucket.
    Create { name: String },
    /// Delete a bucket and its packages.
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
pub enum PackageCommand {
    /// List the packages of a bucket (jcs://bucket).
    Ls { bucket: String },
    /// Create a package (jcs://bucket/package).
    Create { target: String },
    /// Delete a package and its objects (jcs://bucket/package).
    Rm { target: String },
}

/// Flags that describe a user space (instead of, or on top of, `--file`).
#[derive(Debug, Clone, Args)]
pub struct SpaceSpecArgs {
    /// JSON or TOML file with the request body (see docs/user-spaces.md).
    #[arg(long, short)]
    pub file: Option<PathBuf>,
    #[arg(long)]
    pub name: Option<String>,
    /// Storage type: Local, S3, OBS, OSS or COS.
    #[arg(long = "type")]
    pub storage_type: Option<String>,
    /// Local: absolute path on the agent's machine.
    #[arg(long)]
    pub path: Option<String>,
    /// Local: the agent location that serves the path.
    #[arg(long)]
    pub location: Option<String>,
    #[arg(long)]
    pub endpoint: Option<String>,
    #[arg(long)]
    pub bucket: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long)]
    pub access_key_id: Option<String>,
    #[arg(long, env = "JCS_SPACE_SECRET_ACCESS_KEY", hide_env_values = true, value_parser = parse_secret)]
    pub secret_access_key: Option<Secret>,
    /// Give the space a shard store of at most this many bytes (0 = no limit).
    #[arg(long)]
    pub shard_store_max_size: Option<u64>,
    #[arg(long)]
    pub working_dir: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SpaceCommand {
    /// Register a user space.
    Create(SpaceSpecArgs),
    /// Show a user space.
    Get { id: u64 },
    /// Change a user space's name and/or credential.
    Update {
        id: u64,
        #[command(flatten)]
        spec: SpaceSpecArgs,
    },
    /// Delete a user space.
    Rm { id: u64 },
    /// Check that a storage configuration works, without registering it.
    Test(SpaceSpecArgs),
}

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Create a sync task from a JSON or TOML file (see docs/sync.md).
    Create {
        #[arg(long, short)]
        file: PathBuf,
        /// Wait until the task settles (its run is recorded; long poll, no client polling)
        /// and print it; exit code 1 when it ended Failed or Cancelled.
        #[arg(long)]
        wait: bool,
    },
    /// Show a task's state and runs; --watch follows the current run live.
    Status {
        id: u64,
        #[arg(long, short)]
        watch: bool,
        /// Seconds between polls with --watch.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// Cancel a task (the running run too).
    Cancel { id: u64 },
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Buckets.
    #[command(subcommand)]
    Bucket(BucketCommand),
    /// Packages.
    #[command(subcommand)]
    Package(PackageCommand),
    /// List buckets, packages or objects (paged through the whole listing).
    Ls {
        /// Nothing (buckets), jcs://bucket (packages) or jcs://bucket/package[/prefix].
        target: Option<String>,
        /// Long format: size, update time, object id.
        #[arg(short, long)]
        long: bool,
        /// List everything under the prefix instead of one directory level.
        #[arg(short, long)]
        recursive: bool,
        /// Entries requested per page (1..=1000).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
        page_size: u32,
    },
    /// Copy files: local → jcs:// (upload), jcs:// → local (download), jcs:// → jcs:// (clone).
    Cp {
        src: String,
        dst: String,
        #[command(flatten)]
        transfer: TransferArgs,
    },
    /// Delete objects (an exact path, or a whole prefix with -r).
    Rm {
        target: String,
        #[arg(short, long)]
        recursive: bool,
    },
    /// Move/rename objects inside JCS (metadata only; an exact path, or a prefix with -r).
    Mv {
        src: String,
        dst: String,
        #[arg(short, long)]
        recursive: bool,
    },
    /// User spaces.
    #[command(subcommand)]
    Space(SpaceCommand),
    /// Sync tasks.
    #[command(subcommand)]
    Sync(SyncCommand),
}

/// Run one client command; returns the process exit code.
pub async fn run(args: ClientArgs, command: ClientCommand) -> u8 {
    let out = output::Out::new(args.json, args.quiet);
    match commands::run(&args, command, &out).await {
        Ok(()) => exit::OK,
        Err(e) => {
            let code = e.exit_code();
            if args.json {
                out.json(&serde_json::json!({
                    "error": { "kind": e.kind(), "message": e.to_string(), "exitCode": code }
                }));
            }
            out.error(&format!("jcs: {e}"));
            code
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("10").unwrap(), 10);
        assert_eq!(parse_size("4KiB").unwrap(), 4096);
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert!(parse_size("0").is_err());
        assert!(parse_size("1x").is_err());
        assert!(parse_size("MiB").is_err());
    }
}
