//! The change journal seen from the agent: every file write is recorded *before* it happens, so
//! the engine can undo it (hard rollback) even if the process dies right after the write. The
//! engine provides the real journal; [`MemoryJournal`] serves the example binary and tests.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One recorded change: `file_create`, `file_modify` or `file_delete` with `change_data`
/// `{"path": <relative path>, "before": <previous content, absent for file_create>}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Change {
    /// `file_create`, `file_modify` or `file_delete`.
    pub change_type: String,
    /// `{"path": ..., "before": ...}`.
    pub change_data: serde_json::Value,
}

impl Change {
    /// A file that did not exist is about to be created.
    pub fn file_create(path: &str) -> Self {
        Change {
            change_type: "file_create".into(),
            change_data: serde_json::json!({ "path": path }),
        }
    }
    /// A file is about to be overwritten; `before` is its current content.
    pub fn file_modify(path: &str, before: &str) -> Self {
        Change {
            change_type: "file_modify".into(),
            change_data: serde_json::json!({ "path": path, "before": before }),
        }
    }
    /// A file is about to be deleted; `before` is its current content.
    pub fn file_delete(path: &str, before: &str) -> Self {
        Change {
            change_type: "file_delete".into(),
            change_data: serde_json::json!({ "path": path, "before": before }),
        }
    }
    /// The path the change is about.
    pub fn path(&self) -> &str {
        self.change_data
            .get("path")
            .and_then(|p| p.as_str())
            .unwrap_or("")
    }
}

/// Where changes go. The engine's implementation persists them with the run and step.
pub trait Journal: Send + Sync {
    /// Records one change durably; an error stops the write it was recorded for.
    fn record(&self, change: Change) -> impl Future<Output = Result<(), String>> + Send;
}

/// A boxed, `Send` future: what [`crate::agent::Backend`] methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`Journal`] made object-safe, so the agent's internals need no type parameter.
pub(crate) trait DynJournal: Send + Sync {
    fn record_boxed(&self, change: Change) -> BoxFuture<'_, Result<(), String>>;
}

impl<J: Journal> DynJournal for J {
    fn record_boxed(&self, change: Change) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(self.record(change))
    }
}

/// A journal kept in memory, in order.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    changes: Mutex<Vec<Change>>,
}

impl MemoryJournal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }
    /// Everything recorded so far, oldest first.
    pub fn changes(&self) -> Vec<Change> {
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Journal for MemoryJournal {
    fn record(&self, change: Change) -> impl Future<Output = Result<(), String>> + Send {
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(change);
        std::future::ready(Ok(()))
    }
}
