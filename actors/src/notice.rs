//! What the engine's bus carries to subscribers ([`Notice`]): durable events and progress
//! messages. Below both the actions, which send progress, and [`crate::shared`], which owns the
//! bus, so that neither imports the other for it.

use serde::Serialize;

use crate::record::Event;

/// What subscribers see: durable events, and progress messages (not stored).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "notice", rename_all = "snake_case")]
pub enum Notice {
    /// A durable event.
    Event(Event),
    /// A progress message from a running step.
    Progress {
        /// The run.
        run: String,
        /// The step.
        step: String,
        /// The message.
        message: String,
    },
    /// The subscriber fell behind and missed this many notices (read the store).
    Lagged {
        /// How many.
        missed: u64,
    },
}

impl Notice {
    /// The run the notice is about.
    pub fn run(&self) -> Option<&str> {
        match self {
            Notice::Event(e) => Some(&e.run),
            Notice::Progress { run, .. } => Some(run),
            Notice::Lagged { .. } => None,
        }
    }
}
