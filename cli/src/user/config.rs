//! Where the CLI finds its gateway: flags, then environment (`JCS_URL`, `JCS_ACCESS_KEY`,
//! `JCS_SECRET_KEY`), then the config file (`~/.config/jcs/config.toml` or
//! `--config-file`/`JCS_CONFIG`), then the default `http://127.0.0.1:7890`.

use std::path::{Path, PathBuf};

use common::secret::Secret;
use serde::Deserialize;

use super::error::{Error, Result};

pub const DEFAULT_URL: &str = "http://127.0.0.1:7890";

/// The config file (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub url: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<Secret>,
    /// Where resumable-upload state is kept.
    pub state_dir: Option<PathBuf>,
}

/// What the commands use.
#[derive(Debug)]
pub struct Settings {
    pub url: String,
    /// With `secret_key`: every request is signed (docs/api.md, "Authentication").
    pub access_key: Option<String>,
    pub secret_key: Option<Secret>,
    pub state_dir: PathBuf,
}

impl Settings {
    /// The access key and secret to sign with; `None` when neither is set, a usage error
    /// when only one is.
    pub fn credentials(&self) -> Result<Option<(String, Secret)>> {
        match (&self.access_key, &self.secret_key) {
            (None, None) => Ok(None),
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
                Ok(Some((id.clone(), secret.clone())))
            }
            _ => Err(Error::usage(
                "set both the access key and the secret key (--access-key/--secret-key, \
                 JCS_ACCESS_KEY/JCS_SECRET_KEY or the config file), or neither",
            )),
        }
    }
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

pub fn default_config_path() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".config")))
        .map(|d| d.join("jcs").join("config.toml"))
}

fn default_state_dir() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".local").join("state")))
        .map(|d| d.join("jcs"))
        .unwrap_or_else(|| PathBuf::from(".jcs-state"))
}

fn read_file(path: &Path, explicit: bool) -> Result<FileConfig> {
    if !explicit && !path.exists() {
        return Ok(FileConfig::default());
    }
    figment::Figment::new()
        .merge(<figment::providers::Toml as figment::providers::Format>::file_exact(path))
        .extract()
        .map_err(|e| Error::LoadConfig {
            path: path.display().to_string(),
            message: e.to_string(),
        })
}

/// Resolve the settings. The arguments are the flag values (clap already folded in the
/// environment variables).
pub fn resolve(
    config_file: Option<&Path>,
    url: Option<String>,
    access_key: Option<String>,
    secret_key: Option<Secret>,
    state_dir: Option<PathBuf>,
) -> Result<Settings> {
    let file = match config_file {
        Some(p) => read_file(p, true)?,
        None => match default_config_path() {
            Some(p) => read_file(&p, false)?,
            None => FileConfig::default(),
        },
    };
    let url = url.or(file.url).unwrap_or_else(|| DEFAULT_URL.to_owned());
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Error::usage(format!(
            "gateway url {url} must start with http:// or https://"
        )));
    }
    Ok(Settings {
        url,
        access_key: access_key.or(file.access_key),
        secret_key: secret_key.or(file.secret_key),
        state_dir: state_dir
            .or(file.state_dir)
            .unwrap_or_else(default_state_dir),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "url = \"http://file:1\"\nsecret_key = \"s3cr3t\"\n").unwrap();
        let s = resolve(Some(&p), None, None, None, None).unwrap();
        assert_eq!(s.url, "http://file:1");
        assert_eq!(s.secret_key.as_ref().unwrap().expose(), "s3cr3t");
        assert!(!format!("{s:?}").contains("s3cr3t"));
        let s = resolve(Some(&p), Some("http://flag:2".into()), None, None, None).unwrap();
        assert_eq!(s.url, "http://flag:2");
        std::fs::write(&p, "bogus = 1\n").unwrap();
        assert!(resolve(Some(&p), None, None, None, None).is_err());
        assert!(resolve(Some(&dir.path().join("none.toml")), None, None, None, None).is_err());
    }

    #[test]
    fn credentials_need_both_halves() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "access_key = \"JCSKFILE\"\nsecret_key = \"from-file\"\n",
        )
        .unwrap();
        let s = resolve(Some(&p), None, None, None, None).unwrap();
        let (id, secret) = s.credentials().unwrap().unwrap();
        assert_eq!((id.as_str(), secret.expose()), ("JCSKFILE", "from-file"));
        let s = resolve(Some(&p), None, Some("JCSKFLAG".into()), None, None).unwrap();
        assert_eq!(s.credentials().unwrap().unwrap().0, "JCSKFLAG");
        std::fs::write(&p, "access_key = \"JCSKFILE\"\n").unwrap();
        let s = resolve(Some(&p), None, None, None, None).unwrap();
        assert!(s.credentials().is_err());
        std::fs::write(&p, "").unwrap();
        let s = resolve(Some(&p), None, None, None, None).unwrap();
        assert!(s.credentials().unwrap().is_none());
    }
}
