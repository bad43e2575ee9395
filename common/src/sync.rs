//! Sync tasks as the `/v1/spaceSyncer` API describes them: copy a tree of one user space
//! to one or more others, when a trigger fires, deciding per file by a mode, filtered.
//! Shared by the gateway (JSON), the coordinator (validation, scheduling, status) and the
//! agent (execution).

use serde::{Deserialize, Serialize};

/// `shard_hash` of a SYNC ticket for a destination served by another agent than the one
/// running the pass: this prefix followed by the destination folder (normalized). A
/// RunSync ticket's `shard_hash` is a hex digest, so the two never match each other.
pub const DEST_TICKET_PREFIX: &str = "dest:";

/// The `shard_hash` of a destination ticket for folder `path` (normalized).
pub fn dest_ticket_hash(path: &str) -> String {
    format!("{DEST_TICKET_PREFIX}{path}")
}

/// When runs start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Trigger {
    /// Every `interval` seconds (a run that overruns delays the next; missed ticks are not
    /// replayed).
    Interval { interval: u64 },
    /// Once, as soon as the task is created.
    Once {},
    /// At most once a day, starting inside the daily UTC window `start`–`end` ("HH:MM";
    /// a window may wrap midnight).
    Schedule { start: String, end: String },
}

/// Which files a run copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Mode {
    /// Copy a file missing at the destination, or differing in the chosen attributes.
    Diff {
        #[serde(rename = "includeSize", default)]
        include_size: bool,
        #[serde(rename = "includeModTime", default)]
        include_mod_time: bool,
    },
    /// Copy every file.
    Full {},
}

/// A condition every copied file must meet (all filters must pass).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Filter {
    /// Size in bytes, inclusive bounds.
    Size {
        #[serde(rename = "minSize", default)]
        min_size: Option<u64>,
        #[serde(rename = "maxSize", default)]
        max_size: Option<u64>,
    },
    /// File name extensions without the dot (case-insensitive): a file must have one of
    /// `include` (when not empty) and none of `exclude`.
    Extension {
        #[serde(default)]
        include: Vec<String>,
        #[serde(default)]
        exclude: Vec<String>,
    },
    /// Glob patterns on the path relative to the task's source path (`*` within a segment,
    /// `**` across segments, `?` one character).
    Path {
        #[serde(default)]
        include: Vec<String>,
        #[serde(default)]
        exclude: Vec<String>,
    },
    /// Modification time, RFC 3339, inclusive bounds.
    ModTime {
        #[serde(default)]
        after: Option<String>,
        #[serde(default)]
        before: Option<String>,
    },
}

fn default_max_delete() -> u64 {
    1000
}

/// Options of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Options {
    /// Do not create directories that end up empty (only files are copied).
    #[serde(rename = "noEmptyDirectories", default)]
    pub no_empty_directories: bool,
    /// Move semantics: delete a source file once every destination holds a verified copy.
    #[serde(rename = "deleteSource", default)]
    pub delete_source: bool,
    /// Delete destination files absent from the source; never on a run with errors.
    #[serde(rename = "deleteExtraneous", default)]
    pub delete_extraneous: bool,
    /// At most this many destination files deleted per run (with `deleteExtraneous`).
    #[serde(rename = "maxDelete", default = "default_max_delete")]
    pub max_delete: u64,
    /// Copy the file a symlink in a Local source points to, as a file at the link's path
    /// (`rclone --copy-links` for files). Links to directories, broken links and links in
    /// destinations are left alone either way.
    #[serde(rename = "copyLinks", default)]
    pub copy_links: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            no_empty_directories: false,
            delete_source: false,
            delete_extraneous: false,
            max_delete: default_max_delete(),
            copy_links: false,
        }
    }
}

/// What `createTask` receives (and `getTask` returns, plus the id and status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskSpec {
    pub trigger: Trigger,
    pub mode: Mode,
    #[serde(default)]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub options: Options,
    #[serde(rename = "srcUserSpaceID")]
    pub src_user_space_id: u64,
    #[serde(rename = "srcPath", default)]
    pub src_path: String,
    #[serde(rename = "destUserSpaceIDs")]
    pub dest_user_space_ids: Vec<u64>,
    #[serde(rename = "destPathes")]
    pub dest_pathes: Vec<String>,
}

/// Normalized storage path: no leading/trailing '/', no '.'/'..'/empty segments.
pub fn normalize_path(field: &str, path: &str) -> Result<String, String> {
    let trimmed = path.trim_matches('/');
    if trimmed.split('/').any(|s| s == "." || s == "..")
        || trimmed.contains("//")
        || path.contains('\\')
    {
        return Err(format!(
            "{field} {path:?} must not contain '.', '..', '//' or '\\'"
        ));
    }
    Ok(trimmed.to_owned())
}

/// Parse "HH:MM" into minutes after midnight.
pub fn parse_hhmm(field: &str, s: &str) -> Result<u32, String> {
    let bad = || format!("{field} {s:?} must be a UTC time of day as HH:MM");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 || s.len() != 5 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// Parse an RFC 3339 time into Unix ms (UTC).
pub fn parse_rfc3339_ms(field: &str, s: &str) -> Result<i64, String> {
    chrono_lite::parse(s).ok_or_else(|| format!("{field} {s:?} is not an RFC 3339 time"))
}

impl TaskSpec {
    /// Everything that can be checked without metadata; the error names the field.
    /// (Existence of the spaces and containment are checked by the coordinator.)
    pub fn validate(&self) -> Result<(), String> {
        match &self.trigger {
            Trigger::Interval { interval } if *interval == 0 => {
                return Err("trigger.interval must be > 0 seconds".into());
            }
            Trigger::Schedule { start, end }
                if parse_hhmm("trigger.start", start)? == parse_hhmm("trigger.end", end)? =>
            {
                return Err(
                    "trigger.start and trigger.end must differ (the window would be empty)".into(),
                );
            }
            _ => {}
        }
        if self.src_user_space_id == 0 {
            return Err("srcUserSpaceID is missing or 0".into());
        }
        normalize_path("srcPath", &self.src_path)?;
        if self.dest_user_space_ids.is_empty() {
            return Err("destUserSpaceIDs is empty".into());
        }
        if self.dest_user_space_ids.len() != self.dest_pathes.len() {
            return Err(format!(
                "destUserSpaceIDs has {} entries but destPathes has {}",
                self.dest_user_space_ids.len(),
                self.dest_pathes.len()
            ));
        }
        for (i, (id, p)) in self
            .dest_user_space_ids
            .iter()
            .zip(&self.dest_pathes)
            .enumerate()
        {
            if *id == 0 {
                return Err(format!("destUserSpaceIDs[{i}] is 0"));
            }
            normalize_path(&format!("destPathes[{i}]"), p)?;
        }
        for (i, f) in self.filters.iter().enumerate() {
            match f {
                Filter::Size {
                    min_size: Some(min),
                    max_size: Some(max),
                } if min > max => {
                    return Err(format!(
                        "filters[{i}].minSize {min} is greater than maxSize {max}"
                    ));
                }
                Filter::ModTime { after, before } => {
                    let a = after
                        .as_deref()
                        .map(|s| parse_rfc3339_ms(&format!("filters[{i}].after"), s))
                        .transpose()?;
                    let b = before
                        .as_deref()
                        .map(|s| parse_rfc3339_ms(&format!("filters[{i}].before"), s))
                        .transpose()?;
                    if let (Some(a), Some(b)) = (a, b)
                        && a > b
                    {
                        return Err(format!("filters[{i}].after is later than before"));
                    }
                }
                Filter::Path { include, exclude } => {
                    for (j, g) in include.iter().chain(exclude).enumerate() {
                        if g.is_empty() {
                            return Err(format!("filters[{i}] pattern {j} is empty"));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Minimal RFC 3339 parsing (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`), so `common` needs no
/// date crate.
mod chrono_lite {
    pub fn parse(s: &str) -> Option<i64> {
        let b = s.as_bytes();
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ')
        {
            return None;
        }
        let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
            return None;
        }
        let mut rest = &s[19..];
        let mut ms = 0i64;
        if let Some(frac) = rest.strip_prefix('.') {
            let digits: String = frac.chars().take_while(char::is_ascii_digit).collect();
            if digits.is_empty() {
                return None;
            }
            let three: String = digits.chars().chain("000".chars()).take(3).collect();
            ms = three.parse().ok()?;
            rest = &frac[digits.len()..];
        }
        let offset_min = match rest {
            "Z" | "z" => 0,
            _ => {
                let sign = match rest.as_bytes().first()? {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                let (oh, om) = rest[1..].split_once(':')?;
                sign * (oh.parse::<i64>().ok()? * 60 + om.parse::<i64>().ok()?)
            }
        };
        // Days from civil (Howard Hinnant's algorithm).
        let y2 = if mo <= 2 { y - 1 } else { y };
        let era = if y2 >= 0 { y2 } else { y2 - 399 } / 400;
        let yoe = y2 - era * 400;
        let mp = (mo + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Some(((days * 86_400 + h * 3600 + mi * 60 + se) - offset_min * 60) * 1000 + ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> Result<TaskSpec, String> {
        serde_json::from_value::<TaskSpec>(v)
            .map_err(|e| e.to_string())
            .and_then(|s| s.validate().map(|_| s))
    }

    fn base() -> serde_json::Value {
        serde_json::json!({
            "trigger": {"type": "Interval", "interval": 30},
            "mode": {"type": "Diff", "includeSize": false, "includeModTime": true},
            "filters": [{"type": "Size", "minSize": 10, "maxSize": 20000}],
            "options": {"noEmptyDirectories": false},
            "srcUserSpaceID": 1, "srcPath": "space1/cli",
            "destUserSpaceIDs": [2], "destPathes": ["space2/svr"]
        })
    }

    #[test]
    fn the_api_document_example_is_valid() {
        let s = spec(base()).unwrap();
        assert_eq!(s.options.max_delete, 1000);
        assert!(!s.options.delete_extraneous);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(&str, serde_json::Value, &str)> = vec![
            ("/trigger/interval", serde_json::json!(0), "interval"),
            ("/trigger", serde_json::json!({"type": "Hourly"}), "Hourly"),
            (
                "/trigger",
                serde_json::json!({"type": "Schedule", "start": "25:00", "end": "01:00"}),
                "trigger.start",
            ),
            ("/mode", serde_json::json!({"type": "Mirror"}), "Mirror"),
            (
                "/filters",
                serde_json::json!([{"type": "Size", "minSize": 5, "maxSize": 1}]),
                "minSize",
            ),
            ("/filters", serde_json::json!([{"type": "Color"}]), "Color"),
            (
                "/filters",
                serde_json::json!([{"type": "ModTime", "after": "yesterday"}]),
                "after",
            ),
            ("/destPathes", serde_json::json!(["a", "b"]), "destPathes"),
            (
                "/destUserSpaceIDs",
                serde_json::json!([]),
                "destUserSpaceIDs",
            ),
            ("/srcPath", serde_json::json!("a/../b"), "srcPath"),
            (
                "/options",
                serde_json::json!({"deleteEverything": true}),
                "deleteEverything",
            ),
        ];
        for (pointer, value, needle) in cases {
            let mut v = base();
            *v.pointer_mut(pointer).unwrap() = value;
            let e = spec(v).unwrap_err();
            assert!(e.contains(needle), "{pointer}: {e}");
        }
    }

    #[test]
    fn rfc3339_parses_offsets_and_fractions() {
        assert_eq!(chrono_lite::parse("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(chrono_lite::parse("1970-01-01T01:00:00.5+01:00"), Some(500));
        assert_eq!(
            chrono_lite::parse("2000-03-01T00:00:00Z"),
            Some(951_868_800_000)
        );
        assert!(chrono_lite::parse("2000-13-01T00:00:00Z").is_none());
    }

    #[test]
    fn hhmm() {
        assert_eq!(parse_hhmm("f", "02:30"), Ok(150));
        assert!(parse_hhmm("f", "2:30").is_err());
    }
}

/// State of a task (`getTask` → `status.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TaskState {
    /// Created; no run has started yet.
    Pending,
    Running,
    /// Between runs.
    Idle,
    /// Stopped by `cancelTask`; no further runs.
    Cancelled,
    /// A `Once` task whose run failed.
    Failed,
}

/// Counters of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunCounters {
    pub files_scanned: u64,
    pub files_copied: u64,
    pub files_skipped: u64,
    pub files_failed: u64,
    pub bytes_copied: u64,
    pub files_deleted: u64,
}

/// One run of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    #[serde(rename = "runID")]
    pub run_id: u64,
    /// Unix ms.
    pub start_time_ms: i64,
    pub end_time_ms: Option<i64>,
    /// "Running", "Succeeded", "Failed" (some files failed or the run broke off) or
    /// "Cancelled".
    pub result: String,
    #[serde(flatten)]
    pub counters: RunCounters,
}
