//! Mutual TLS between JCS processes (gateway, coordinators, agents).
//!
//! Every role has one `[tls]` section ([`TlsConfig`]) used both to serve and to dial: a
//! cluster CA (`ca`), this node's certificate (`cert`, signed by the CA, valid for server and
//! client authentication) and its private key (`key`). Servers present `cert` and require a
//! client certificate signed by `ca`; clients check the server's certificate against `ca` and
//! the host name (or IP address) of the address they dial.
//!
//! Without `ca`/`cert`/`key`, plain TCP is accepted only when the role says so
//! ([`TlsConfig::insecure_plaintext`]) or when every gRPC address it listens on or dials is a
//! loopback address ([`TlsConfig::check`]); otherwise the process refuses to start.
//!
//! This module is transport-free (no tonic types): it loads and checks the PEM files into a
//! [`TlsMaterial`], which the `client` crate turns into tonic's client and server
//! configurations. [`generate`] creates a CA and node certificates (`jcs cert`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

pub mod generate;

/// The `[tls]` section of a role's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the cluster CA certificate: peers must present a certificate it signed.
    pub ca: Option<PathBuf>,
    /// PEM file of this node's certificate (signed by `ca`), presented when serving and when
    /// dialling.
    pub cert: Option<PathBuf>,
    /// PEM file of the private key of `cert` (PKCS#8, SEC1 or PKCS#1); must not be readable
    /// by other users (mode 0600 or 0640/0440).
    pub key: Option<PathBuf>,
    /// Accept plain TCP (no `ca`/`cert`/`key`) on non-loopback addresses. For development
    /// networks only: traffic, tickets included, is then unauthenticated and readable.
    pub insecure_plaintext: bool,
}

/// The loaded PEM contents of a [`TlsConfig`]. `Debug` shows neither the key nor the paths'
/// contents.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"***")
            .finish()
    }
}

impl TlsConfig {
    /// mTLS from the given files.
    pub fn files(
        ca: impl Into<PathBuf>,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        TlsConfig {
            ca: Some(ca.into()),
            cert: Some(cert.into()),
            key: Some(key.into()),
            insecure_plaintext: false,
        }
    }

    /// Whether mTLS is configured (`ca`, `cert` and `key` all set).
    pub fn enabled(&self) -> bool {
        self.ca.is_some() && self.cert.is_some() && self.key.is_some()
    }

    /// Check the section of `role` against the gRPC `addresses` it listens on and dials
    /// (`host:port`, optionally with a scheme). Errors name what to change.
    pub fn check(&self, role: &str, addresses: &[&str]) -> Result<(), String> {
        let set = [&self.ca, &self.cert, &self.key]
            .iter()
            .filter(|p| p.is_some())
            .count();
        if set != 0 && set != 3 {
            return Err(format!(
                "{role}: [tls] needs all of ca, cert and key (or none of them)"
            ));
        }
        if set == 3 {
            if self.insecure_plaintext {
                return Err(format!(
                    "{role}: [tls] insecure_plaintext cannot be combined with ca/cert/key"
                ));
            }
            return Ok(());
        }
        if self.insecure_plaintext {
            return Ok(());
        }
        match addresses.iter().find(|a| !is_loopback(a)) {
            None => Ok(()),
            Some(address) => Err(format!(
                "{role}: refusing plain TCP on non-loopback address {address}: configure mTLS in \
                 [tls] (ca, cert, key; see `jcs cert`), or set [tls] insecure_plaintext = true \
                 to accept unauthenticated plain TCP"
            )),
        }
    }

    /// Read the PEM files (`None` when mTLS is not configured). The key must not be readable
    /// by other users. Does blocking file IO: call it at start-up.
    pub fn load(&self) -> Result<Option<Arc<TlsMaterial>>, String> {
        let (Some(ca), Some(cert), Some(key)) = (&self.ca, &self.cert, &self.key) else {
            return Ok(None);
        };
        let ca_pem = read_pem(ca, "tls.ca", "CERTIFICATE")?;
        let cert_pem = read_pem(cert, "tls.cert", "CERTIFICATE")?;
        check_private(key)?;
        let key_pem = read_pem(key, "tls.key", "PRIVATE KEY")?;
        Ok(Some(Arc::new(TlsMaterial {
            ca_pem,
            cert_pem,
            key_pem,
        })))
    }
}

fn read_pem(path: &Path, what: &str, label: &str) -> Result<Vec<u8>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let found = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{label}-----")));
    if !found {
        return Err(format!(
            "{what} {} holds no PEM block ending in \"{label}\"",
            path.display()
        ));
    }
    Ok(bytes)
}

fn check_private(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("cannot read tls.key {}: {e}", path.display()))?;
        // Group-readable is allowed (Kubernetes Secret volumes: 0440 + fsGroup), like the
        // cluster secret file.
        if meta.permissions().mode() & 0o007 != 0 {
            return Err(format!(
                "tls.key {} is readable by other users; chmod 600 it",
                path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Whether `address` (`host:port`, `[v6]:port`, an IP, optionally `scheme://`) names a
/// loopback host: `127.0.0.0/8`, `::1` or `localhost`. Unspecified addresses (`0.0.0.0`)
/// and other names are not loopback.
pub fn is_loopback(address: &str) -> bool {
    let rest = address
        .split_once("://")
        .map_or(address, |(_, r)| r)
        .trim()
        .trim_end_matches('/');
    if let Ok(sa) = rest.parse::<SocketAddr>() {
        return sa.ip().is_loopback();
    }
    if let Ok(ip) = rest.trim_matches(['[', ']']).parse::<IpAddr>() {
        return ip.is_loopback();
    }
    let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
    host.eq_ignore_ascii_case("localhost")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses_are_recognised() {
        for a in [
            "127.0.0.1:7900",
            "127.1.2.3:1",
            "[::1]:7900",
            "localhost:7900",
            "http://127.0.0.1:7900",
            "https://localhost:1/",
            "::1",
        ] {
            assert!(is_loopback(a), "{a}");
        }
        for a in [
            "0.0.0.0:7900",
            "[::]:7900",
            "10.0.0.5:7900",
            "coordinator.internal:7900",
            "localhost.example.com:1",
            "http://192.168.1.1:7900",
        ] {
            assert!(!is_loopback(a), "{a}");
        }
    }

    #[test]
    fn plaintext_needs_loopback_or_explicit_opt_in() {
        let none = TlsConfig::default();
        none.check("agent", &["127.0.0.1:7910", "localhost:7900"])
            .unwrap();
        let err = none
            .check("agent", &["127.0.0.1:7910", "0.0.0.0:7900"])
            .unwrap_err();
        assert!(err.contains("0.0.0.0:7900"), "{err}");
        assert!(err.contains("insecure_plaintext"), "{err}");
        let opt_in = TlsConfig {
            insecure_plaintext: true,
            ..TlsConfig::default()
        };
        opt_in.check("agent", &["0.0.0.0:7900"]).unwrap();
    }

    #[test]
    fn partial_or_contradictory_sections_are_refused() {
        let partial = TlsConfig {
            ca: Some("ca.pem".into()),
            ..TlsConfig::default()
        };
        let err = partial.check("gateway", &[]).unwrap_err();
        assert!(err.contains("all of ca, cert and key"), "{err}");
        let both = TlsConfig {
            insecure_plaintext: true,
            ..TlsConfig::files("a", "b", "c")
        };
        assert!(both.check("gateway", &[]).is_err());
        TlsConfig::files("a", "b", "c")
            .check("gateway", &["0.0.0.0:1"])
            .unwrap();
    }

    #[test]
    fn load_reads_pem_and_refuses_a_readable_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = generate::Ca::new("test ca", 1).unwrap();
        let node = ca.issue("n1", &["localhost".into()], &[], 1).unwrap();
        let paths = ca.write(dir.path()).unwrap();
        let (cert, key) = node.write(dir.path(), "n1").unwrap();
        let cfg = TlsConfig::files(&paths.0, &cert, &key);
        let m = cfg.load().unwrap().unwrap();
        assert_eq!(m.cert_pem, std::fs::read(&cert).unwrap());
        assert!(!format!("{m:?}").contains("PRIVATE"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = cfg.load().unwrap_err();
            assert!(err.contains("chmod 600"), "{err}");
        }
        // A key where a certificate belongs is named.
        let swapped = TlsConfig::files(&paths.1, &cert, &key);
        let err = swapped.load().unwrap_err();
        assert!(err.contains("tls.ca"), "{err}");
        assert_eq!(TlsConfig::default().load().unwrap(), None);
    }
}
