//! Logging set-up. Call [`init`] once, in `main`.

use tracing_subscriber::EnvFilter;

/// Install the global subscriber: `RUST_LOG` overrides `level`; `json` selects JSON lines.
pub fn init(level: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
