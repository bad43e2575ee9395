//! Addresses of the CLI: `jcs://bucket/package/path` names objects in JCS, anything else
//! is a local path.

use super::error::{Error, Result};

pub const SCHEME: &str = "jcs://";

/// A remote location: a bucket, optionally a package, optionally a path (or prefix) in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub bucket: String,
    pub package: Option<String>,
    /// Object path or prefix inside the package; `""` for the whole package.
    pub path: String,
}

/// Either side of `cp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Remote(Remote),
    Local(std::path::PathBuf),
}

impl Remote {
    /// Parse `jcs://bucket[/package[/path]]` (also accepted without the scheme).
    pub fn parse(s: &str) -> Result<Remote> {
        let rest = s.strip_prefix(SCHEME).unwrap_or(s);
        if rest.is_empty() {
            return Err(Error::usage(format!(
                "{s}: expected {SCHEME}bucket[/package[/path]]"
            )));
        }
        let mut it = rest.splitn(3, '/');
        let bucket = it.next().unwrap_or_default().to_owned();
        let package = it.next().filter(|p| !p.is_empty()).map(str::to_owned);
        let path = it.next().unwrap_or_default().to_owned();
        if bucket.is_empty() {
            return Err(Error::usage(format!("{s}: the bucket name is empty")));
        }
        if package.is_none() && !path.is_empty() {
            return Err(Error::usage(format!("{s}: the package name is empty")));
        }
        Ok(Remote {
            bucket,
            package,
            path,
        })
    }

    /// The package name, or a usage error saying `what` needs one.
    pub fn need_package(&self, what: &str) -> Result<&str> {
        self.package.as_deref().ok_or_else(|| {
            Error::usage(format!(
                "{what} needs {SCHEME}bucket/package[/path], got {self}"
            ))
        })
    }
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SCHEME}{}", self.bucket)?;
        if let Some(p) = &self.package {
            write!(f, "/{p}")?;
            if !self.path.is_empty() {
                write!(f, "/{}", self.path)?;
            }
        }
        Ok(())
    }
}

impl Location {
    pub fn parse(s: &str) -> Result<Location> {
        if s.starts_with(SCHEME) {
            Ok(Location::Remote(Remote::parse(s)?))
        } else {
            Ok(Location::Local(std::path::PathBuf::from(s)))
        }
    }
}

/// Join a remote prefix and a relative path with exactly one `/`.
pub fn join(prefix: &str, rel: &str) -> String {
    if prefix.is_empty() {
        rel.to_owned()
    } else if prefix.ends_with('/') {
        format!("{prefix}{rel}")
    } else {
        format!("{prefix}/{rel}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_remote_addresses() {
        let r = Remote::parse("jcs://b/p/a/b.txt").unwrap();
        assert_eq!(r.bucket, "b");
        assert_eq!(r.package.as_deref(), Some("p"));
        assert_eq!(r.path, "a/b.txt");
        assert_eq!(r.to_string(), "jcs://b/p/a/b.txt");
        let r = Remote::parse("jcs://b").unwrap();
        assert_eq!(r.package, None);
        let r = Remote::parse("b/p/").unwrap();
        assert_eq!((r.package.as_deref(), r.path.as_str()), (Some("p"), ""));
        assert!(Remote::parse("jcs://").is_err());
        assert!(Remote::parse("jcs:///p").is_err());
        assert!(Remote::parse("jcs://b//x").is_err());
        assert!(matches!(
            Location::parse("./x").unwrap(),
            Location::Local(_)
        ));
        assert_eq!(join("a", "b"), "a/b");
        assert_eq!(join("a/", "b"), "a/b");
        assert_eq!(join("", "b"), "b");
    }
}
