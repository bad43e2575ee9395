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
            auth,
        } => {
            let opts = cli::standalone::StandaloneOptions {
                data_dir,
                listen,
                max_wait: std::time::Duration::from_millis(max_wait_ms),
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

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
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
