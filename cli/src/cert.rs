//! `jcs cert`: create a cluster CA and node certificates for mTLS between gateway,
//! coordinators and agents (`[tls]` in each role's config; docs/operations.md "TLS").

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use common::tls::generate::Ca;

#[derive(Debug, Args)]
pub struct CertArgs {
    #[command(subcommand)]
    command: CertCommand,
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Create a cluster CA: DIR/ca.pem (certificate, give it to every node) and DIR/ca.key
    /// (mode 0600, keep it off the nodes).
    Ca {
        /// Directory to write ca.pem and ca.key into (created when missing).
        #[arg(long)]
        out: PathBuf,
        /// Common name of the CA.
        #[arg(long, default_value = "JCS cluster CA")]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue a node certificate signed by the CA, valid as server and as client:
    /// OUT/NAME.pem and OUT/NAME.key (mode 0600).
    Issue {
        /// Directory of the CA (ca.pem + ca.key, as `jcs cert ca` writes them).
        #[arg(long)]
        ca: PathBuf,
        /// Node name: the certificate's common name and the file names.
        #[arg(long)]
        name: String,
        /// DNS names peers dial this node by, comma-separated.
        #[arg(long, value_delimiter = ',')]
        dns: Vec<String>,
        /// IP addresses peers dial this node by, comma-separated.
        #[arg(long, value_delimiter = ',')]
        ip: Vec<IpAddr>,
        /// Directory to write the files into (created when missing).
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

/// Print the paths written (stdout: the command's result).
fn written(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", cert.display())?;
    writeln!(out, "{}", key.display())?;
    Ok(())
}

/// Run `jcs cert …`; prints the files written.
pub fn run(args: CertArgs) -> anyhow::Result<()> {
    match args.command {
        CertCommand::Ca { out, name, days } => {
            let ca = Ca::new(&name, days).map_err(anyhow::Error::msg)?;
            let (cert, key) = ca.write(&out).map_err(anyhow::Error::msg)?;
            written(&cert, &key)?;
        }
        CertCommand::Issue {
            ca,
            name,
            dns,
            ip,
            out,
            days,
        } => {
            if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
                anyhow::bail!("--name {name:?} must be a plain file name");
            }
            let ca = Ca::load(&ca).map_err(anyhow::Error::msg)?;
            let node = ca
                .issue(&name, &dns, &ip, days)
                .map_err(anyhow::Error::msg)?;
            let (cert, key) = node.write(&out, &name).map_err(anyhow::Error::msg)?;
            written(&cert, &key)?;
        }
    }
    Ok(())
}
