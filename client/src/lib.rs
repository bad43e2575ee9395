//! gRPC clients of JCS: [`CoordinatorClient`] and [`AgentPool`] (cached channels per agent
//! address). This crate is the only place that builds tonic channels and decides timeouts
//! and message limits; it turns every `Status` into [`Error::Remote`] with the JCS code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::ErrorCode;
use common::tls::TlsMaterial;
use proto::agent::agent_service_client::AgentServiceClient;
use proto::coordinator::coordinator_service_client::CoordinatorServiceClient;
use snafu::Snafu;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

pub mod batch;
mod block;
pub mod failover;
pub mod local;
pub mod tls;
pub use block::{AgentBlock, check_stored_block, put_block_requests};
pub use failover::{FailoverChannel, RetryPolicy};
pub use local::Transport;
pub use request_id::RequestIdInterceptor;

mod request_id;

#[derive(Debug, Snafu)]
#[snafu(visibility(pub))]
pub enum Error {
    #[snafu(display("invalid address {address:?}: {source}"))]
    InvalidAddress {
        address: String,
        source: tonic::transport::Error,
    },
    #[snafu(display("invalid TLS configuration for {address:?}: {source}"))]
    TlsConfig {
        address: String,
        source: tonic::transport::Error,
    },
    #[snafu(display("{message}"))]
    Remote {
        code: ErrorCode,
        message: String,
        retryable: bool,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl common::CodedError for Error {
    fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidAddress { .. } | Error::TlsConfig { .. } => ErrorCode::BadArgument,
            Error::Remote { code, .. } => *code,
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        let code = common::error::code_of(&status);
        let from_peer = status.metadata().get(common::error::CODE_HEADER).is_some();
        match status.code() {
            // Transport failures carry tonic's own text; say what was unreachable.
            tonic::Code::Unavailable if !from_peer => Error::Remote {
                code,
                message: format!("service unavailable: {}", status.message()),
                retryable: code.is_retryable(),
            },
            // The connection broke during the call (the peer died, a stream was reset):
            // tonic reports `Unknown` with no JCS code. Unavailable, so the client sees a
            // 503 naming it rather than a bare "internal error"; not retried by itself,
            // since the call may have taken effect.
            tonic::Code::Unknown if !from_peer => Error::Remote {
                code: common::ErrorCode::Unavailable,
                message: format!("the connection broke during the call: {}", status.message()),
                retryable: false,
            },
            _ => Error::Remote {
                code,
                message: status.message().to_owned(),
                retryable: code.is_retryable(),
            },
        }
    }
}

/// Options of every channel this crate builds.
#[derive(Debug, Clone)]
pub struct ChannelOptions {
    pub connect_timeout: Duration,
    /// Deadline of unary calls. Streaming calls are not bounded by it.
    pub request_timeout: Option<Duration>,
    /// mTLS ([`common::tls`]): present this node's certificate and accept only servers whose
    /// certificate the CA signed for the host dialled. `None` = plain TCP.
    pub tls: Option<Arc<TlsMaterial>>,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            connect_timeout: Duration::from_secs(3),
            request_timeout: None,
            tls: None,
        }
    }
}

impl ChannelOptions {
    /// These options with mTLS material (or plain TCP with `None`).
    pub fn with_tls(mut self, tls: Option<Arc<TlsMaterial>>) -> Self {
        self.tls = tls;
        self
    }
}

/// HTTP/2 receive window of one call (stream): how many bytes a server may send ahead of
/// what the caller has consumed. 4 MiB keeps a shard stream at loopback/LAN speed.
pub const STREAM_WINDOW: u32 = 4 << 20;

/// HTTP/2 receive window of a whole channel: 16 calls whose reader has stalled (a download
/// whose HTTP client stopped reading) leave room for the others; also the most memory a
/// channel's unread responses can hold.
pub const CONNECTION_WINDOW: u32 = 17 * STREAM_WINDOW;

fn endpoint(address: &str, opts: &ChannelOptions) -> Result<Endpoint> {
    // With TLS the scheme must be https: tonic dials `http://` URIs in plain text even
    // when a TLS configuration is set.
    let scheme = if opts.tls.is_some() { "https" } else { "http" };
    let uri = match address.split_once("://") {
        Some((_, rest)) if opts.tls.is_some() => format!("https://{rest}"),
        Some(_) => address.to_owned(),
        None => format!("{scheme}://{address}"),
    };
    let mut ep = Endpoint::from_shared(uri)
        .map_err(|source| Error::InvalidAddress {
            address: address.to_owned(),
            source,
        })?
        .connect_timeout(opts.connect_timeout)
        .tcp_nodelay(true)
        // Fixed windows, the connection's much larger than a stream's: with the adaptive
        // window (BDP) hyper gives every stream the whole connection window, so ONE
        // download whose HTTP client stops reading held the agent connection's window and
        // stalled every other response on it (PutShard answers of uploads included).
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    if let Some(t) = opts.request_timeout {
        ep = ep.timeout(t);
    }
    if let Some(material) = &opts.tls {
        ep = ep
            .tls_config(tls::client_config(material))
            .map_err(|source| Error::TlsConfig {
                address: address.to_owned(),
                source,
            })?;
    }
    Ok(ep)
}

/// Channel to `address` (`host:port` or a URI), connected lazily on first use.
pub fn channel(address: &str, opts: &ChannelOptions) -> Result<Channel> {
    Ok(endpoint(address, opts)?.connect_lazy())
}

/// Calls to `address`: in-process when a server of this process is registered at it
/// ([`local`]), else over a channel connected lazily on first use.
pub fn transport(address: &str, opts: &ChannelOptions) -> Result<Transport> {
    Ok(Transport::new(
        address,
        channel(address, opts)?,
        opts.request_timeout,
    ))
}

/// A transport whose calls carry the current request id.
pub type TracedChannel = InterceptedService<Transport, RequestIdInterceptor>;
/// Coordinator calls carry the request id and fail over across every configured
/// coordinator ([`failover`]).
pub type CoordinatorClient =
    CoordinatorServiceClient<InterceptedService<FailoverChannel, RequestIdInterceptor>>;
pub type AgentClient = AgentServiceClient<TracedChannel>;

/// The addresses of a comma-separated coordinator list (`"a:7900, b:7900"`).
pub fn coordinator_addresses(addresses: &str) -> Vec<String> {
    addresses
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Client of the coordinators at `addresses` (one address, or several separated by commas:
/// calls fail over between them, see [`failover`]), with JCS message limits.
pub fn coordinator(addresses: &str, opts: &ChannelOptions) -> Result<CoordinatorClient> {
    let mut endpoints = Vec::new();
    for address in coordinator_addresses(addresses) {
        let ch = transport(&address, opts)?;
        endpoints.push((address, ch));
    }
    if endpoints.is_empty() {
        // Let tonic name what is wrong with the (empty) address.
        endpoints.push((addresses.to_owned(), transport(addresses, opts)?));
    }
    let failover = FailoverChannel::new(endpoints, RetryPolicy::default());
    Ok(
        CoordinatorServiceClient::with_interceptor(failover, RequestIdInterceptor)
            .max_decoding_message_size(proto::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(proto::MAX_MESSAGE_SIZE),
    )
}

/// Client of the agent at `address`, with JCS message limits.
pub fn agent(address: &str, opts: &ChannelOptions) -> Result<AgentClient> {
    Ok(
        AgentServiceClient::with_interceptor(transport(address, opts)?, RequestIdInterceptor)
            .max_decoding_message_size(proto::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(proto::MAX_MESSAGE_SIZE),
    )
}

/// Agent clients cached by address; cloning a client is cheap and shares the connection.
#[derive(Clone, Default)]
pub struct AgentPool {
    opts: ChannelOptions,
    clients: Arc<Mutex<HashMap<String, AgentClient>>>,
}

impl AgentPool {
    pub fn new(opts: ChannelOptions) -> Self {
        AgentPool {
            opts,
            clients: Arc::default(),
        }
    }

    pub fn get(&self, address: &str) -> Result<AgentClient> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(address) {
            return Ok(c.clone());
        }
        let c = agent(address, &self.opts)?;
        clients.insert(address.to_owned(), c.clone());
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_error_keeps_code_and_message() {
        let s = common::error::status(ErrorCode::AlreadyExists, "bucket b exists");
        let e = Error::from(s);
        assert!(matches!(
            e,
            Error::Remote {
                code: ErrorCode::AlreadyExists,
                retryable: false,
                ..
            }
        ));
        assert_eq!(e.to_string(), "bucket b exists");
    }

    /// A connection that breaks mid-call (tonic: `Unknown`, no JCS code) is Unavailable with
    /// a message saying so, not retried by itself; a peer's own `Unknown` code is kept.
    #[test]
    fn a_broken_connection_is_unavailable_and_named() {
        let e = Error::from(tonic::Status::unknown("transport error"));
        assert!(matches!(
            e,
            Error::Remote {
                code: ErrorCode::Unavailable,
                retryable: false,
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "the connection broke during the call: transport error"
        );
        let e = Error::from(tonic::Status::unavailable("tcp connect error"));
        assert!(e.to_string().starts_with("service unavailable: "), "{e}");
    }

    /// tonic dials `http://` in plain text even with a TLS config: with TLS every address,
    /// whatever its scheme, must become `https://`.
    #[test]
    fn tls_endpoints_always_use_https() {
        use common::tls::generate::Ca;
        let ca = Ca::new("t", 1).unwrap();
        let node = ca.issue("n", &["localhost".into()], &[], 1).unwrap();
        let material = Arc::new(TlsMaterial {
            ca_pem: ca.cert_pem().as_bytes().to_vec(),
            cert_pem: node.cert_pem.into_bytes(),
            key_pem: node.key_pem.into_bytes(),
        });
        let tls = ChannelOptions::default().with_tls(Some(material));
        for address in ["127.0.0.1:7900", "http://127.0.0.1:7900", "https://h:1"] {
            let ep = endpoint(address, &tls).unwrap();
            assert_eq!(ep.uri().scheme_str(), Some("https"), "{address}");
        }
        let plain = endpoint("127.0.0.1:7900", &ChannelOptions::default()).unwrap();
        assert_eq!(plain.uri().scheme_str(), Some("http"));
        // Garbage where a key belongs is refused when the endpoint is built.
        let bad = Arc::new(TlsMaterial {
            key_pem: b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec(),
            ..(**tls.tls.as_ref().unwrap()).clone()
        });
        let err = endpoint("h:1", &ChannelOptions::default().with_tls(Some(bad))).unwrap_err();
        assert_eq!(
            common::CodedError::code(&err),
            ErrorCode::BadArgument,
            "{err}"
        );
    }

    #[test]
    fn bad_address_is_bad_argument() {
        let e = channel("not a uri ::", &ChannelOptions::default()).unwrap_err();
        assert_eq!(common::CodedError::code(&e), ErrorCode::BadArgument);
    }
}
