//! Progress reports: the app's [`Sink`]s for the engine's Notifier (in `baton-actors`, which
//! coalesces and paces updates and keeps each sink's message id in the store).
//!
//! - [`forge`]: one progress comment per run on its issue, a checklist edited in place (only
//!   workflows with `progress = true`);
//! - [`terminal`]: a live display like cargo's on a terminal, plain lines otherwise;
//! - [`log`]: one log line per update;
//! - [`render`]: the texts, shared by all of them.
//!
//! The admin UI does not go through here: a page wants every event, not a paced summary, so it
//! reads the engine's subscription directly.

pub mod forge;
pub mod log;
pub mod render;
pub mod terminal;

use std::sync::Arc;
use std::time::Duration;

use baton_actors::{Engine, NotifierHandle, Sink};

use crate::config::Config;

/// The sinks `config` asks for, each with its minimum interval: the forge comment when a forge
/// is given, the terminal display when `terminal`, and the log always (paced like the terminal).
pub fn sinks(
    config: &Config,
    forge: Option<Arc<dyn crate::forge::Forge>>,
    terminal: bool,
) -> Vec<(Arc<dyn Sink>, Duration)> {
    let mut sinks: Vec<(Arc<dyn Sink>, Duration)> = Vec::new();
    if let Some(forge) = forge {
        sinks.push((
            Arc::new(forge::ForgeSink::new(
                forge,
                config.server.public_url.clone(),
            )),
            config.notify.forge_interval.0,
        ));
    }
    if terminal {
        sinks.push((
            Arc::new(terminal::TerminalSink::new()),
            config.notify.terminal_interval.0,
        ));
    }
    sinks.push((Arc::new(log::LogSink), config.notify.terminal_interval.0));
    sinks
}

/// Starts the engine's notifier with the sinks `config` asks for (see [`sinks`]). Start it
/// before `Engine::resume`, so resumed runs are reported from their first event. The engine's
/// `shutdown` flushes and stops it.
pub async fn start(
    engine: &Engine,
    config: &Config,
    forge: Option<Arc<dyn crate::forge::Forge>>,
    terminal: bool,
) -> Result<NotifierHandle, baton_actors::Error> {
    engine.start_notifier(sinks(config, forge, terminal)).await
}
