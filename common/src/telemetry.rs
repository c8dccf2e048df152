//! Logging set-up: `tracing` with text or JSON output, filtered by `RUST_LOG` or a level.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `format` is `text` or `json`; `level` a filter such as
/// `info` or `kdfed_hub=debug,info`. `RUST_LOG`, when set, wins.
pub fn init(format: &str, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(colour(std::io::IsTerminal::is_terminal(&std::io::stdout()), std::env::var_os("NO_COLOR")));
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = if format == "json" { builder.json().try_init() } else { builder.try_init() };
}

/// Colour escapes only on a terminal, and never when `NO_COLOR` is set (to anything but
/// the empty string, as no-color.org says): log files and pipes get plain text.
pub fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None), "a file or pipe");
        assert!(!colour(true, Some("1".into())));
        assert!(colour(true, Some("".into())));
    }
}
