//! `jcs admin`: operator commands that talk gRPC to the coordinator directly (not through
//! a gateway). `jcs admin key create|list|delete` manages the access keys the gateway
//! checks `/v1` signatures with (docs/api.md, "Authentication"; docs/cli.md); `jcs admin
//! scrub start|status` drives the repair and scrub job (`scrub.rs`).

use clap::{Args, Subcommand};
use common::{CodedError, ErrorCode};
use proto::coordinator as pb;
use serde_json::json;
use snafu::Snafu;

use crate::user::exit;
use crate::user::output::Out;

/// `jcs admin …`
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Coordinator gRPC address(es), comma-separated (the same list as a gateway's
    /// `coordinator`); calls fail over between them.
    #[arg(
        long,
        global = true,
        env = "JCS_COORDINATOR",
        default_value = "127.0.0.1:7900"
    )]
    pub coordinator: String,
    /// mTLS towards the coordinators (clusters with `[tls]`): the cluster CA certificate
    /// (PEM) ...
    #[arg(long, global = true, env = "JCS_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<std::path::PathBuf>,
    /// ... a certificate the CA signed (e.g. `jcs cert issue --name admin`) ...
    #[arg(long, global = true, env = "JCS_TLS_CERT", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<std::path::PathBuf>,
    /// ... and its key.
    #[arg(long, global = true, env = "JCS_TLS_KEY", requires_all = ["tls_ca", "tls_cert"])]
    pub tls_key: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// API access keys (the credentials of signed /v1 requests).
    #[command(subcommand)]
    Key(KeyCommand),
    /// The repair and scrub job of replicated and erasure-coded objects.
    #[command(subcommand)]
    Scrub(crate::scrub::ScrubCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an access key; prints its secret (shown this once only).
    Create {
        /// A note for operators (who or what uses the key).
        #[arg(long)]
        name: Option<String>,
        /// A key that may only read: gateways refuse it for anything but GET requests
        /// (listing, getting and downloading).
        #[arg(long)]
        read_only: bool,
    },
    /// List the access keys (never their secrets).
    List,
    /// Delete an access key: gateways refuse it within their key_cache_ttl.
    Delete {
        /// The access key id (JCSK…).
        id: String,
    },
}

#[derive(Debug, Snafu)]
pub enum Error {
    #[snafu(display("cannot reach the coordinator at {address}: {source}"))]
    Connect {
        address: String,
        source: client::Error,
    },
    #[snafu(display("{source}"))]
    Coordinator { source: client::Error },
    #[snafu(display("cannot load the TLS files: {message}"))]
    Tls { message: String },
    #[snafu(display("{failed} repairs failed; last error: {last_error}"))]
    ScrubFailed { failed: u64, last_error: String },
}

impl CodedError for Error {
    fn code(&self) -> ErrorCode {
        match self {
            Error::Connect { source, .. } | Error::Coordinator { source } => source.code(),
            Error::Tls { .. } => ErrorCode::BadArgument,
            Error::ScrubFailed { .. } => ErrorCode::Internal,
        }
    }
}

impl Error {
    fn exit_code(&self) -> u8 {
        match self.code() {
            ErrorCode::NotFound => exit::NOT_FOUND,
            ErrorCode::AlreadyExists | ErrorCode::Conflict => exit::CONFLICT,
            ErrorCode::Unauthenticated => exit::AUTH,
            ErrorCode::BadArgument => exit::USAGE,
            ErrorCode::PermissionDenied
            | ErrorCode::NotLeader
            | ErrorCode::Unavailable
            | ErrorCode::Timeout
            | ErrorCode::Internal => exit::ERROR,
        }
    }
}

fn key_json(k: &pb::AccessKey) -> serde_json::Value {
    json!({
        "accessKeyID": k.access_key_id,
        "name": k.name,
        "createTime": common::time::rfc3339_ms(k.create_time_ms),
        "readOnly": k.read_only,
    })
}

async fn run_inner(args: AdminArgs, out: &Out) -> Result<(), Error> {
    let tls = match (&args.tls_ca, &args.tls_cert, &args.tls_key) {
        (Some(ca), Some(cert), Some(key)) => common::tls::TlsConfig::files(ca, cert, key)
            .load()
            .map_err(|message| Error::Tls { message })?,
        _ => None,
    };
    let opts = client::ChannelOptions {
        request_timeout: Some(std::time::Duration::from_secs(30)),
        tls,
        ..client::ChannelOptions::default()
    };
    let mut coordinator =
        client::coordinator(&args.coordinator, &opts).map_err(|source| Error::Connect {
            address: args.coordinator.clone(),
            source,
        })?;
    let rpc = |status: tonic::Status| Error::Coordinator {
        source: client::Error::from(status),
    };
    match args.command {
        AdminCommand::Scrub(command) => {
            crate::scrub::run(&mut coordinator, command, out).await?;
        }
        AdminCommand::Key(KeyCommand::Create { name, read_only }) => {
            let resp = coordinator
                .create_access_key(pb::CreateAccessKeyRequest {
                    name: name.unwrap_or_default(),
                    read_only,
                })
                .await
                .map_err(rpc)?
                .into_inner();
            let key = resp.key.unwrap_or_default();
            let mut value = key_json(&key);
            value["secretKey"] = json!(resp.secret_key);
            out.either(
                &value,
                &format!(
                    "access key id: {}\nsecret key:    {}\n(the secret is shown only now; \
                     use them with --access-key/--secret-key, JCS_ACCESS_KEY/JCS_SECRET_KEY \
                     or access_key/secret_key in ~/.config/jcs/config.toml)",
                    key.access_key_id, resp.secret_key
                ),
            );
        }
        AdminCommand::Key(KeyCommand::List) => {
            let resp = coordinator
                .list_access_keys(pb::ListAccessKeysRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            for k in &resp.keys {
                out.either(
                    &key_json(k),
                    &format!(
                        "{}  {}  {}  {}",
                        k.access_key_id,
                        common::time::rfc3339_ms(k.create_time_ms),
                        if k.read_only {
                            "read-only "
                        } else {
                            "read-write"
                        },
                        k.name
                    ),
                );
            }
        }
        AdminCommand::Key(KeyCommand::Delete { id }) => {
            coordinator
                .delete_access_key(pb::DeleteAccessKeyRequest {
                    access_key_id: id.clone(),
                })
                .await
                .map_err(rpc)?;
            out.either(
                &json!({ "deleted": { "accessKeyID": id } }),
                &format!("deleted access key {id}"),
            );
        }
    }
    Ok(())
}

/// Run one admin command; returns the process exit code (the codes of the client
/// commands, docs/cli.md).
pub async fn run(args: AdminArgs, json_output: bool, quiet: bool) -> u8 {
    let out = Out::new(json_output, quiet);
    match run_inner(args, &out).await {
        Ok(()) => exit::OK,
        Err(e) => {
            let code = e.exit_code();
            if json_output {
                out.json(&json!({
                    "error": { "kind": e.code().as_str(), "message": e.to_string(), "exitCode": code }
                }));
            }
            out.error(&format!("jcs: {e}"));
            code
        }
    }
}
