//! tonic TLS configurations from [`TlsMaterial`] (rustls; the files and the rules on when
//! plain TCP is allowed are in [`common::tls`]). Clients trust only the cluster CA (no system
//! roots) and check the server's name against the host they dial; servers require a client
//! certificate signed by the same CA.

use common::tls::TlsMaterial;
use snafu::ResultExt;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

use crate::{Result, TlsConfigSnafu};

/// Client side: present `material`'s certificate, accept servers signed by its CA.
pub fn client_config(material: &TlsMaterial) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&material.ca_pem))
        .identity(identity(material))
}

/// Server side: present `material`'s certificate and require a client certificate signed
/// by its CA (connections without one fail the handshake).
pub fn server_config(material: &TlsMaterial) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(identity(material))
        .client_ca_root(Certificate::from_pem(&material.ca_pem))
}

fn identity(material: &TlsMaterial) -> Identity {
    Identity::from_pem(&material.cert_pem, &material.key_pem)
}

/// Parse `material` as both configurations, so that a bad certificate or key stops the
/// process at start-up instead of failing every later connection.
pub fn check(material: &TlsMaterial) -> Result<()> {
    let address = "tls check";
    tonic::transport::Server::builder()
        .tls_config(server_config(material))
        .context(TlsConfigSnafu { address })?;
    Endpoint::from_static("https://localhost")
        .tls_config(client_config(material))
        .context(TlsConfigSnafu { address })?;
    Ok(())
}
