//! `jcs`: JointCloud storage. `jcs standalone` runs everything in one process; the
//! `coordinator`, `agent` and `gateway` subcommands run one cluster role each; every other
//! subcommand is a client of a gateway's `/v1` API (docs/cli.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// mimalloc: fewer cycles per allocation than glibc malloc and no arena-lock contention
/// between the many small allocations of concurrent requests (bench/small-uploads.sh).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "jcs", version, about = "JointCloud storage")]
struct Cli {
    /// Log filter of the server roles (RUST_LOG overrides it).
    #[arg(long, global = true, default_value = "info")]
    log: String,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(flatten)]
    client: cli::user::ClientArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Coordinator, agent and gateway in one process (redb metadata, one Local space).
    Standalone {
        /// Where metadata and the Local user space live.
        #[arg(long, env = "JCS_DATA_DIR", default_value = "jcs-data")]
        data_dir: PathBuf,
        /// Address of the /v1 HTTP API.
        #[arg(long, env = "JCS_LISTEN", default_value = "127.0.0.1:7890")]
        listen: SocketAddr,
        /// Longest long poll of the API (`getTask?waitMs=`), in milliseconds.
        #[arg(long, env = "JCS_MAX_WAIT_MS", default_value_t = 20_000)]
        max_wait_ms: u64,
        /// Send the internal calls between gateway, coordinator and agent over loopback
        /// gRPC (TCP) instead of in-process, as separate processes would (for comparisons
        /// and debugging; slower).
        #[arg(long, env = "JCS_GRPC_OVER_TCP")]
        grpc_over_tcp: bool,
        #[command(flatten)]
        auth: cli::standalone::AuthArgs,
    },
    /// Run a coordinator (metadata owner).
    Coordinator(RoleArgs),
    /// Run an agent (serves user spaces).
    Agent(RoleArgs),
    /// Run a gateway (the /v1 HTTP API).
    Gateway(RoleArgs),
    /// Create a cluster CA and node certificates for mTLS (`jcs cert ca`, `jcs cert issue`).
    Cert(cli::cert::CertArgs),
    /// Operator commands that talk to the coordinator (access keys).
    Admin(cli::admin::AdminArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    #[command(flatten)]
    Client(Box<cli::user::ClientCommand>),
}

#[derive(clap::Args)]
struct RoleArgs {
    /// TOML config file (see deploy/config/).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    common::telemetry::init(&cli.log, cli.log_json);
    let shutdown = cli::shutdown_on_signals();
    match cli.command {
        Command::Standalone {
            data_dir,
            listen,
            max_wait_ms,
            grpc_over_tcp,
            auth,
        } => {
            let opts = cli::standalone::StandaloneOptions {
                data_dir,
                listen,
                max_wait: std::time::Duration::from_millis(max_wait_ms),
                grpc_over_tcp,
                auth,
            };
            cli::standalone::run(opts, shutdown, None).await
        }
        Command::Coordinator(a) => cli::roles::coordinator(a.config.as_deref(), shutdown).await,
        Command::Agent(a) => cli::roles::agent(a.config.as_deref(), shutdown).await,
        Command::Gateway(a) => cli::roles::gateway(a.config.as_deref(), shutdown).await,
        Command::Completions { .. } | Command::Client(_) | Command::Cert(_) | Command::Admin(_) => {
            Ok(())
        }
    }
}

/// mimalloc's `mi_option_purge_delay` (its index in `mi_option_t`, mimalloc.h of v3, the
/// version the `mimalloc` crate builds without its `v2` feature). Hard-coded: neither the
/// `mimalloc` crate (its `extended` feature keeps `libmimalloc_sys` private) nor
/// `libmimalloc-sys` (which leaves these options out "for stability reasons") names it;
/// `tests::mimalloc_option_indices_are_v3s` fails if a new mimalloc renumbers the enum.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
/// How long mimalloc keeps freed pages before it returns them to the OS.
const PURGE_DELAY_MS: std::ffi::c_long = 10;
/// mimalloc's `mi_option_allow_thp` (same enum, v3).
const MI_OPTION_ALLOW_THP: std::ffi::c_int = 43;

#[allow(unsafe_code)]
unsafe extern "C" {
    /// `void mi_option_set(mi_option_t option, long value)` (mimalloc.h).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// Keep the allocator's resident memory close to what is live (docs/performance.md, "peak
/// RSS"), unless the environment sets the option (mimalloc reads `MIMALLOC_*` when the
/// process starts; the environment wins):
/// - `purge_delay` [`PURGE_DELAY_MS`] instead of mimalloc's 1 s: with many short-lived
///   stream buffers the retained pages were 30–40 MiB of the peak. Not 0: purging every
///   free at once made large downloads ~30 % slower (madvise and page faults per buffer);
///   10 ms keeps the peak as low (docs/performance.md, "peak RSS");
/// - no transparent huge pages (`allow_thp` 0 and `PR_SET_THP_DISABLE`, Linux): with THP
///   every page fault maps and zeroes 2 MiB, so purged buffers came back as whole huge
///   pages (60 MiB more peak, and page zeroing was 15 % of the server's CPU on small
///   uploads).
///
/// Called first thing in `main`, before any other thread exists.
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY (both calls): `mi_option_set` is a plain C function of the mimalloc library
    // that the `mimalloc` crate links as the global allocator; `mi_option_t` is a C enum
    // (an `int`) and the constants are its values; it stores one option value and takes
    // no pointers. No other thread runs yet, so nothing reads the options meanwhile.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        unsafe { mi_option_set(MI_OPTION_ALLOW_THP, 0) }
        // SAFETY: prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) takes no pointers and only sets a
        // flag of this process (future page faults map 4 KiB pages). Best effort: a kernel
        // without it leaves THP as it was.
        #[cfg(target_os = "linux")]
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

fn main() -> anyhow::Result<ExitCode> {
    tune_allocator();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "jcs", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Client(c) => Ok(ExitCode::from(cli::user::run(cli.client, *c).await)),
        Command::Cert(args) => cli::cert::run(args).map(|()| ExitCode::SUCCESS),
        Command::Admin(a) => Ok(ExitCode::from(
            cli::admin::run(a, cli.client.json, cli.client.quiet).await,
        )),
        _ => serve(cli).await.map(|()| ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use super::{MI_OPTION_ALLOW_THP, MI_OPTION_PURGE_DELAY};

    #[allow(unsafe_code)]
    unsafe extern "C" {
        /// `long mi_option_get(mi_option_t option)` (mimalloc.h).
        fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    }

    /// The option the environment sets, else mimalloc v3's default (src/options.c).
    fn expected(env: &str, default: std::ffi::c_long) -> std::ffi::c_long {
        std::env::var(env).map_or(default, |v| v.parse().unwrap())
    }

    /// The hard-coded indices name the options they mean: v3's defaults are 1000 ms for
    /// `purge_delay` and 1 for `allow_thp` (Linux), and `tune_allocator` is not called
    /// in this test binary. A mimalloc that renumbers `mi_option_t` fails here.
    #[test]
    #[allow(unsafe_code)]
    fn mimalloc_option_indices_are_v3s() {
        // SAFETY: `mi_option_get` reads one option value; no pointers.
        let (purge, thp) = unsafe {
            (
                mi_option_get(MI_OPTION_PURGE_DELAY),
                mi_option_get(MI_OPTION_ALLOW_THP),
            )
        };
        assert_eq!(purge, expected("MIMALLOC_PURGE_DELAY", 1000));
        assert_eq!(thp, expected("MIMALLOC_ALLOW_THP", 1));
    }
}
