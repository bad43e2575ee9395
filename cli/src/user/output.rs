//! What the commands print: human text or JSON lines (`--json`), and progress bars on
//! stderr (only on a terminal, never with `--quiet` or `--json`).

use std::io::{IsTerminal, Write};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

#[derive(Clone)]
pub struct Out {
    pub json: bool,
    pub quiet: bool,
    multi: MultiProgress,
    show_progress: bool,
}

impl Out {
    pub fn new(json: bool, quiet: bool) -> Out {
        let show_progress = !quiet && !json && std::io::stderr().is_terminal();
        let multi = if show_progress {
            MultiProgress::new()
        } else {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        };
        Out {
            json,
            quiet,
            multi,
            show_progress,
        }
    }

    /// A human line on stdout (ignored with `--json`).
    pub fn text(&self, line: &str) {
        if self.json {
            return;
        }
        self.write_stdout(line);
    }

    /// One JSON line on stdout (only with `--json`).
    pub fn json(&self, value: &Value) {
        if self.json {
            self.write_stdout(&value.to_string());
        }
    }

    /// A JSON line with `--json`, else the human text.
    pub fn either(&self, value: &Value, human: &str) {
        if self.json {
            self.json(value);
        } else {
            self.text(human);
        }
    }

    /// A note on stderr (suppressed with `--quiet`).
    pub fn note(&self, line: &str) {
        if self.quiet {
            return;
        }
        let _ = self.multi.suspend(|| writeln!(std::io::stderr(), "{line}"));
    }

    /// An error on stderr (always shown).
    pub fn error(&self, line: &str) {
        let _ = self.multi.suspend(|| writeln!(std::io::stderr(), "{line}"));
    }

    fn write_stdout(&self, line: &str) {
        let _ = self.multi.suspend(|| {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")
        });
    }

    /// A byte progress bar with rate and ETA.
    pub fn bytes_bar(&self, total: u64, label: &str) -> ProgressBar {
        if !self.show_progress {
            return ProgressBar::hidden();
        }
        let bar = self.multi.add(ProgressBar::new(total));
        let style = ProgressStyle::with_template(
            "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(label.to_owned());
        bar
    }

    /// A spinner with a message (for status polling).
    pub fn spinner(&self, label: &str) -> ProgressBar {
        if !self.show_progress {
            return ProgressBar::hidden();
        }
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_message(label.to_owned());
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar
    }

    pub fn remove(&self, bar: &ProgressBar) {
        bar.finish_and_clear();
        self.multi.remove(bar);
    }
}

/// `1536` → `1.5 KiB`.
pub fn human_size(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}
