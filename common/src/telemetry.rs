//! Logging set-up: `tracing` with text or JSON output, filtered by `RUST_LOG` or a level.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `format` is `text` or `json`; `level` a filter such as
/// `info` or `kdfed_hub=debug,info`. `RUST_LOG`, when set, wins.
pub fn init(format: &str, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = if format == "json" { builder.json().try_init() } else { builder.try_init() };
}
