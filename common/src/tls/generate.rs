//! Certificate generation for `jcs cert` and tests (rcgen): a cluster CA and node
//! certificates valid for both server and client authentication. Keys are ECDSA P-256; key
//! files are written with mode 0600.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// File names inside a CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key";

/// A cluster CA: its certificate and the key that signs node certificates.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A node certificate and its private key, PEM encoded.
pub struct NodeCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("key", &"***")
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCert")
            .field("key_pem", &"***")
            .finish_non_exhaustive()
    }
}

fn validity(days: u32) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    // An hour back: peers whose clocks are a little behind still accept a fresh certificate.
    (
        now - Duration::hours(1),
        now + Duration::days(i64::from(days.max(1))),
    )
}

impl Ca {
    /// A new self-signed CA named `name`, valid for `days`.
    pub fn new(name: &str, days: u32) -> Result<Ca, String> {
        let key = KeyPair::generate().map_err(|e| format!("cannot generate a key: {e}"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "JCS");
        // Signs node certificates only, no intermediate CAs.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.not_before, params.not_after) = validity(days);
        let cert = params
            .self_signed(&key)
            .map_err(|e| format!("cannot sign the CA certificate: {e}"))?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA of directory `dir` (`ca.pem` + `ca.key`, as [`Ca::write`] leaves them).
    pub fn load(dir: &Path) -> Result<Ca, String> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let cert_pem = read(CA_CERT_FILE)?;
        let key_pem = read(CA_KEY_FILE)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| {
            format!(
                "{}: not a private key: {e}",
                dir.join(CA_KEY_FILE).display()
            )
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| {
            format!(
                "{}: not a CA certificate: {e}",
                dir.join(CA_CERT_FILE).display()
            )
        })?;
        Ok(Ca {
            cert_pem,
            key_pem,
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Write `ca.pem` (0644) and `ca.key` (0600) into `dir` (created when missing); existing
    /// files are refused. Returns both paths.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf), String> {
        let cert = dir.join(CA_CERT_FILE);
        let key = dir.join(CA_KEY_FILE);
        write_pair(&cert, &self.cert_pem, &key, &self.key_pem)?;
        Ok((cert, key))
    }

    /// A certificate for node `name`, valid as server and as client, for the DNS names `dns`
    /// and addresses `ips` (at least one of them; with none, `name` is the DNS name).
    pub fn issue(
        &self,
        name: &str,
        dns: &[String],
        ips: &[IpAddr],
        days: u32,
    ) -> Result<NodeCert, String> {
        let key = KeyPair::generate().map_err(|e| format!("cannot generate a key: {e}"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "JCS");
        let names: Vec<String> = if dns.is_empty() && ips.is_empty() {
            vec![name.to_owned()]
        } else {
            dns.to_vec()
        };
        for n in names {
            if !valid_dns_name(&n) {
                return Err(format!(
                    "invalid DNS name {n:?}: use letters, digits, '-' and '.' (pass addresses with --ip)"
                ));
            }
            let dns_name = n
                .clone()
                .try_into()
                .map_err(|e| format!("invalid DNS name {n:?}: {e}"))?;
            params.subject_alt_names.push(SanType::DnsName(dns_name));
        }
        params
            .subject_alt_names
            .extend(ips.iter().copied().map(SanType::IpAddress));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        (params.not_before, params.not_after) = validity(days);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| format!("cannot sign the certificate of {name}: {e}"))?;
        Ok(NodeCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl NodeCert {
    /// Write `<name>.pem` (0644) and `<name>.key` (0600) into `dir` (created when missing);
    /// existing files are refused. Returns both paths.
    pub fn write(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), String> {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        write_pair(&cert, &self.cert_pem, &key, &self.key_pem)?;
        Ok((cert, key))
    }
}

/// A host name as certificates carry it: dot-separated labels of letters, digits and `-`
/// (a leading `*.` wildcard allowed), at most 253 characters.
fn valid_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn write_pair(cert: &Path, cert_pem: &str, key: &Path, key_pem: &str) -> Result<(), String> {
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    for path in [cert, key] {
        if path.exists() {
            return Err(format!(
                "{} exists; remove it first or choose another directory",
                path.display()
            ));
        }
    }
    write_new(key, key_pem, 0o600)?;
    write_new(cert, cert_pem, 0o644)
}

fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_round_trips_and_issues() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("cluster", 10).unwrap();
        let (cert, key) = ca.write(dir.path()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(
            std::fs::read_to_string(&cert)
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
        // Writing again is refused rather than replacing a CA.
        assert!(ca.write(dir.path()).unwrap_err().contains("exists"));
        let loaded = Ca::load(dir.path()).unwrap();
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        let node = loaded
            .issue(
                "n1",
                &["n1.internal".into()],
                &["127.0.0.1".parse().unwrap()],
                1,
            )
            .unwrap();
        assert!(node.cert_pem.contains("BEGIN CERTIFICATE"));
        assert!(node.key_pem.contains("PRIVATE KEY"));
        assert!(
            loaded
                .issue("bad", &["not a name!".into()], &[], 1)
                .unwrap_err()
                .contains("invalid DNS name")
        );
    }

    #[test]
    fn load_names_a_missing_ca() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Ca::load(dir.path()).unwrap_err().contains("ca.pem"));
    }
}
