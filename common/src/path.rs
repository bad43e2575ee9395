//! Object path validation. Paths are relative, `/`-separated, with no empty, `.` or `..`
//! segments, so they can never escape a directory when exported to a file system.

/// Longest accepted object path in bytes.
pub const MAX_PATH_LEN: usize = 1024;

/// Check an object path; the error names the problem.
pub fn validate_object_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("path is empty".into());
    }
    if path.len() > MAX_PATH_LEN {
        return Err(format!("path is longer than {MAX_PATH_LEN} bytes"));
    }
    if path.starts_with('/') {
        return Err(format!(
            "path {path:?} is absolute; object paths are relative"
        ));
    }
    if path.ends_with('/') {
        return Err(format!(
            "path {path:?} ends with '/'; it names a directory, not an object"
        ));
    }
    if path.contains('\\') {
        return Err(format!(
            "path {path:?} contains a backslash; use '/' as separator"
        ));
    }
    if path.chars().any(char::is_control) {
        return Err(format!("path {path:?} contains a control character"));
    }
    for segment in path.split('/') {
        match segment {
            "" => return Err(format!("path {path:?} contains an empty segment ('//')")),
            "." | ".." => {
                return Err(format!("path {path:?} contains a '{segment}' segment"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Check a bucket or package name.
pub fn validate_name(kind: &str, name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err(format!("{kind} name is empty"));
    }
    if name.len() > 255 {
        return Err(format!("{kind} name is longer than 255 bytes"));
    }
    if name.contains('/') {
        return Err(format!("{kind} name {name:?} contains '/'"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{kind} name {name:?} contains a control character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_nested_relative_paths() {
        for p in [
            "a",
            "a/b/c.txt",
            "héllo wörld.bin",
            "a.b/..c/d..",
            ".hidden",
        ] {
            assert_eq!(validate_object_path(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn rejects_escapes_and_empty_segments() {
        for (p, why) in [
            ("", "empty"),
            ("/etc/passwd", "absolute"),
            ("a//b", "empty segment"),
            ("../x", "'..'"),
            ("a/../../x", "'..'"),
            ("a/./b", "'.'"),
            ("a/", "directory"),
            ("a\\b", "backslash"),
            ("a\nb", "control"),
        ] {
            let err = validate_object_path(p).unwrap_err();
            assert!(err.contains(why), "{p:?}: {err}");
        }
        assert!(validate_object_path(&"x".repeat(MAX_PATH_LEN + 1)).is_err());
    }

    #[test]
    fn names_must_be_non_empty_and_flat() {
        assert!(validate_name("bucket", "b1").is_ok());
        assert!(validate_name("bucket", "").unwrap_err().contains("empty"));
        assert!(validate_name("bucket", "  ").unwrap_err().contains("empty"));
        assert!(validate_name("package", "a/b").unwrap_err().contains("'/'"));
    }
}
