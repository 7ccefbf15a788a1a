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

/// Installs the global subscriber. `RUST_LOG` picks the levels of the log (default `warn`).
/// With `tracer`, the spans of [`crate::telemetry::TARGET`] are exported too, whatever the
/// log's level: the log and the traces are filtered apart.
pub fn init(format: LogFormat, tracer: Option<opentelemetry_sdk::trace::Tracer>) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let log = match format {
        LogFormat::Text => log
            .with_ansi(colour(std::io::stderr().is_terminal()))
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => log.json().with_ansi(false).with_filter(filter).boxed(),
    };
    let traces = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // Exactly this target: a prefix match would export any module named like it.
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.target() == crate::telemetry::TARGET
            }))
    });
    let _ = tracing_subscriber::registry()
        .with(log)
        .with(traces)
        .try_init();
}

/// Colour on a terminal, unless `NO_COLOR` is set to anything non-empty (no-color.org).
fn colour(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
