//! The change journal made object-safe for the agent's internals (tools, backends), which
//! record every file write before it happens. The journal itself is [`crate::journal`].

pub use futures_util::future::BoxFuture;

use crate::journal::{self, Change, Journal};

/// [`Journal`] made object-safe, so the agent's internals need no type parameter.
pub(crate) trait DynJournal: Send + Sync {
    fn record_boxed(&self, change: Change) -> BoxFuture<'_, Result<(), journal::Error>>;
}

impl<J: Journal> DynJournal for J {
    fn record_boxed(&self, change: Change) -> BoxFuture<'_, Result<(), journal::Error>> {
        Box::pin(self.record(change))
    }
}
