//! The change journal as the workspace and the agent see it: every change to a repository
//! (a file written, a branch made, a commit, a push) is recorded *before* it happens, so a hard
//! rollback can undo it even if the process dies right after. The engine's [`ChangeJournal`]
//! keeps them durably in `workflow_changes` with the step that made them; [`MemoryJournal`]
//! serves callers that keep no history (`baton agent` without a run, tests).

use std::sync::Mutex;

use baton_actors::ChangeJournal;

/// One recorded change: the row of `workflow_changes` minus the run's columns.
///
/// `change_type` is one of `file_create`, `file_modify`, `file_delete`, `branch_create`,
/// `commit`, `push`, `rebase`; `change_data` holds what `workspace::undo` needs (paths, the
/// content before, shas).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Change {
    /// What kind of change.
    pub change_type: String,
    /// Its data: paths, contents before, shas.
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
    /// The path a file change is about (empty for other kinds).
    pub fn path(&self) -> &str {
        self.change_data
            .get("path")
            .and_then(|p| p.as_str())
            .unwrap_or("")
    }
}

/// Why a change could not be recorded; the change must then not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine's store did not commit it.
    #[error(transparent)]
    Store(#[from] baton_actors::Error),
    /// A journal that takes no changes (read-only, closed); the text says why.
    #[error("{0}")]
    Refused(String),
}

impl From<baton_actors::Change> for Change {
    fn from(change: baton_actors::Change) -> Self {
        Change {
            change_type: change.change_type,
            change_data: change.change_data,
        }
    }
}

/// Where changes are recorded.
///
/// `record` must return only once the change is durable: callers act right after it.
pub trait Journal: Send + Sync {
    /// Records one change, or says why it could not (which stops the change).
    fn record(&self, change: Change)
        -> impl std::future::Future<Output = Result<(), Error>> + Send;
}

/// `ChangeJournal::record` commits to the store before it returns.
impl Journal for ChangeJournal {
    async fn record(&self, change: Change) -> Result<(), Error> {
        ChangeJournal::record(self, &change.change_type, change.change_data)
            .await
            .map(drop)
            .map_err(Error::Store)
    }
}

impl<J: Journal> Journal for std::sync::Arc<J> {
    fn record(
        &self,
        change: Change,
    ) -> impl std::future::Future<Output = Result<(), Error>> + Send {
        (**self).record(change)
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

    /// A copy of every change recorded so far, oldest first.
    pub fn changes(&self) -> Vec<Change> {
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Journal for MemoryJournal {
    async fn record(&self, change: Change) -> Result<(), Error> {
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(change);
        Ok(())
    }
}
