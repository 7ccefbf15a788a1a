//! Where the process's own log goes: stderr, as text for people or JSON for log shippers.
//!
//! Colour only when stderr is a terminal and `NO_COLOR` is unset: `baton serve 2>daemon.log`
//! must not fill the file with escape codes.

use std::io::IsTerminal;

/// `--log-format` / `BATON_LOG_FORMAT`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, fields, span).
    Json,
}

/// Installs the global subscriber. `RUST_LOG` picks the levels (default `warn`).
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(colour(std::io::stderr().is_terminal()))
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// Colour on a terminal, unless `NO_COLOR` is set to anything non-empty (no-color.org).
fn colour(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
