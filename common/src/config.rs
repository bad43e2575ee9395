//! The one config loader: defaults < TOML file < environment (`PREFIX__A__B`) < CLI flags.
//!
//! Config structs use `#[serde(default, deny_unknown_fields)]`, so a missing file or section
//! gives the built-in defaults and a typo in a key is an error. CLI flags are applied by the
//! binary after loading.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::de::DeserializeOwned;

/// Load `T` from an optional TOML file and environment variables starting with `env_prefix`
/// (for example `JCS_AGENT__` makes `JCS_AGENT__LISTEN` set `listen`; nested keys use `__`).
pub fn load<T: DeserializeOwned>(file: Option<&Path>, env_prefix: &str) -> Result<T, String> {
    let mut fig = Figment::new();
    if let Some(path) = file {
        if !path.exists() {
            return Err(format!("config file {} does not exist", path.display()));
        }
        fig = fig.merge(Toml::file(path));
    }
    fig = fig.merge(Env::prefixed(env_prefix).split("__"));
    fig.extract()
        .map_err(|e| format!("invalid configuration: {e}"))
}

/// Parse a config from TOML text alone (used by tests of the example configs).
pub fn from_toml<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    Figment::new()
        .merge(Toml::string(text))
        .extract()
        .map_err(|e| format!("invalid configuration: {e}"))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, Default, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Demo {
        listen: String,
        inner: Inner,
    }

    #[derive(Debug, Deserialize, Default, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Inner {
        port: u16,
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = from_toml::<Demo>("listne = 'x'").unwrap_err();
        assert!(err.contains("listne"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
    fn env_overrides_file() {
        let dir = std::env::temp_dir().join(format!("jcs-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "listen = 'a'\n[inner]\nport = 1\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("JCSTEST__INNER__PORT", "7");
            let d: Demo = load(Some(&file), "JCSTEST__").unwrap();
            assert_eq!(
                d,
                Demo {
                    listen: "a".into(),
                    inner: Inner { port: 7 }
                }
            );
            Ok(())
        });
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = load::<Demo>(Some(Path::new("/nonexistent/x.toml")), "JCSX__").unwrap_err();
        assert!(err.contains("does not exist"));
    }
}
