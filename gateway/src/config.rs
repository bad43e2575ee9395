//! Gateway configuration (`[gateway]` settings of the `jcs` binary).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// Configuration of one gateway process. Every field has a working single-machine default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address the HTTP server listens on (used by the binary that binds the listener).
    pub listen: SocketAddr,
    /// Coordinator gRPC address, `host:port` or a URI; several coordinators separated by
    /// commas (`"c1:7900,c2:7900"`): calls go to one and fail over to the next when it is
    /// unreachable or answers a retryable error (bounded exponential backoff).
    pub coordinator: String,
    /// User id used when a request does not carry `userID` (JCS has no user management yet).
    pub default_user_id: u64,
    /// Most `files` parts accepted in one upload request.
    pub max_upload_files: usize,
    /// Most uploadPart requests this gateway streams at once; more wait, unread, for a
    /// turn (each streaming part holds a few MiB of buffers: docs/architecture.md,
    /// "Memory bounds"). Raise it on a gateway with memory and cores to spare.
    pub max_parts_in_flight: usize,
    /// Deadline of a metadata request (everything except the byte-moving endpoints: upload,
    /// uploadPart, download, downloadByPath, completeMultipartUpload, and userSpace
    /// createPackage and downloadPackage), e.g. `"30s"`. Also the deadline of each
    /// coordinator call, except package import and export.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// On SIGTERM/ctrl-c: how long in-flight requests (uploads and downloads included) may
    /// still run after the gateway stops accepting; the ones still running then are cut.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Longest long poll (`getTask?waitMs=`): longer waits are shortened to it, and to half
    /// of `request_timeout`.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// A download (`download`, `downloadByPath`) whose client takes no data for this
    /// long is cut, e.g. `"60s"`: a client that stops reading would otherwise hold its
    /// agent stream (and up to one HTTP/2 stream window of the gateway's agent connection)
    /// for as long as it keeps the socket open. A client reading at any pace keeps it.
    #[serde(with = "humantime_serde")]
    pub download_stall_timeout: Duration,
    /// mTLS towards coordinators and agents (`[tls]`: ca, cert, key; the HTTP API itself is
    /// not affected); without it, plain TCP only to loopback coordinators or with
    /// `insecure_plaintext` (see `common::tls`).
    pub tls: common::tls::TlsConfig,
    /// Authentication of `/v1` requests (`[auth]`; docs/api.md, "Authentication").
    pub auth: AuthConfig,
}

/// `[auth]`: signed requests (`JCS-HMAC-SHA256`) on every `/v1` route. Off by default (a
/// single-machine dev setup, `jcs standalone`); the cluster example config turns it on.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Refuse unsigned or badly signed `/v1` requests with 401 `Unauthorized`.
    pub enabled: bool,
    /// Largest accepted difference between a request's `x-jcs-date` and the gateway's
    /// clock, e.g. `"15m"`.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// How long a looked-up access key (or its absence) is remembered: a deleted key stops
    /// working, and a new one starts working, at most this long later.
    #[serde(with = "humantime_serde")]
    pub key_cache_ttl: Duration,
    /// Most access keys remembered at once (the cache is bounded).
    pub key_cache_capacity: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            max_clock_skew: Duration::from_secs(15 * 60),
            key_cache_ttl: Duration::from_secs(5),
            key_cache_capacity: 10_000,
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7890)),
            coordinator: "127.0.0.1:7900".to_owned(),
            default_user_id: 1,
            max_upload_files: 1000,
            max_parts_in_flight: 4,
            request_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
            max_wait: Duration::from_secs(20),
            download_stall_timeout: Duration::from_secs(60),
            tls: common::tls::TlsConfig::default(),
            auth: AuthConfig::default(),
        }
    }
}

impl GatewayConfig {
    /// Check values serde cannot check; the error names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if self.coordinator.trim().is_empty() {
            return Err("gateway.coordinator must not be empty".to_owned());
        }
        if self.default_user_id == 0 {
            return Err("gateway.default_user_id must be at least 1".to_owned());
        }
        if self.max_upload_files == 0 {
            return Err("gateway.max_upload_files must be at least 1".to_owned());
        }
        if self.max_parts_in_flight == 0 {
            return Err("gateway.max_parts_in_flight must be at least 1".to_owned());
        }
        if self.request_timeout.is_zero() {
            return Err("gateway.request_timeout must be greater than zero".to_owned());
        }
        if self.download_stall_timeout.is_zero() {
            return Err("gateway.download_stall_timeout must be greater than zero".to_owned());
        }
        if self.auth.max_clock_skew.is_zero() {
            return Err("gateway.auth.max_clock_skew must be greater than zero".to_owned());
        }
        if self.auth.key_cache_capacity == 0 {
            return Err("gateway.auth.key_cache_capacity must be at least 1".to_owned());
        }
        let coordinators = client::coordinator_addresses(&self.coordinator);
        let grpc: Vec<&str> = coordinators.iter().map(String::as_str).collect();
        self.tls.check("gateway", &grpc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_local() {
        let c = GatewayConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.listen.to_string(), "127.0.0.1:7890");
        assert_eq!(c.coordinator, "127.0.0.1:7900");
        assert_eq!(c.default_user_id, 1);
        assert_eq!(c.max_upload_files, 1000);
        assert!(!c.auth.enabled, "authentication is off unless configured");
    }

    #[test]
    fn auth_section_parses() {
        let c: GatewayConfig = common::config::from_toml(
            "[auth]\nenabled = true\nmax_clock_skew = '2m'\nkey_cache_ttl = '200ms'\n",
        )
        .unwrap();
        assert!(c.auth.enabled);
        assert_eq!(c.auth.max_clock_skew, Duration::from_secs(120));
        assert_eq!(c.auth.key_cache_ttl, Duration::from_millis(200));
        assert_eq!(c.auth.key_cache_capacity, 10_000);
        assert!(common::config::from_toml::<GatewayConfig>("[auth]\nenable = true\n").is_err());
    }

    #[test]
    fn parses_partial_toml_and_rejects_unknown_keys() {
        let c: GatewayConfig = common::config::from_toml(
            "listen = '0.0.0.0:80'\nmax_upload_files = 3\nrequest_timeout = '5s'\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 80);
        assert_eq!(c.max_upload_files, 3);
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert_eq!(c.coordinator, "127.0.0.1:7900");

        let err = common::config::from_toml::<GatewayConfig>("coordinatr = 'x'").unwrap_err();
        assert!(err.contains("coordinatr"), "{err}");
    }

    #[test]
    fn validate_names_the_bad_key() {
        for (c, key) in [
            (
                GatewayConfig {
                    coordinator: " ".into(),
                    ..Default::default()
                },
                "coordinator",
            ),
            (
                GatewayConfig {
                    default_user_id: 0,
                    ..Default::default()
                },
                "default_user_id",
            ),
            (
                GatewayConfig {
                    max_upload_files: 0,
                    ..Default::default()
                },
                "max_upload_files",
            ),
            (
                GatewayConfig {
                    max_parts_in_flight: 0,
                    ..Default::default()
                },
                "max_parts_in_flight",
            ),
            (
                GatewayConfig {
                    request_timeout: Duration::ZERO,
                    ..Default::default()
                },
                "request_timeout",
            ),
            (
                GatewayConfig {
                    download_stall_timeout: Duration::ZERO,
                    ..Default::default()
                },
                "download_stall_timeout",
            ),
        ] {
            assert!(c.validate().unwrap_err().contains(key), "{key}");
        }
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn example_config_loads() {
        let text = include_str!("../../deploy/config/gateway.example.toml");
        let cfg: GatewayConfig = common::config::from_toml(text).unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:7890".parse().unwrap());
        assert_eq!(cfg.coordinator, "coordinator.internal:7900");
        assert_eq!(cfg.default_user_id, 1);
        assert_eq!(cfg.max_upload_files, 1000);
        assert_eq!(cfg.request_timeout, Duration::from_secs(60));
        assert_eq!(cfg.shutdown_timeout, Duration::from_secs(25));
        assert!(cfg.tls.enabled());
        assert_eq!(
            cfg.auth,
            AuthConfig {
                enabled: true,
                max_clock_skew: Duration::from_secs(15 * 60),
                key_cache_ttl: Duration::from_secs(5),
                key_cache_capacity: 10_000,
            }
        );
        assert!(cfg.validate().is_ok());
    }
}
