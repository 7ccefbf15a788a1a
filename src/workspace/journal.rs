//! The engine's change journal as a workspace [`Journal`]: every change a workspace makes in a
//! run goes into `workflow_changes`, durable before the operation touches anything, with the
//! step that made it, so the step's compensation (`git.rollback`) finds it in `ctx.changes`.

use baton_actors::ChangeJournal;

use super::{Change, Journal};

impl Journal for ChangeJournal {
    async fn record(&self, change: Change) -> Result<(), String> {
        ChangeJournal::record(self, &change.change_type, change.change_data)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

impl From<baton_actors::Change> for Change {
    fn from(change: baton_actors::Change) -> Self {
        Change {
            change_type: change.change_type,
            change_data: change.change_data,
        }
    }
}
