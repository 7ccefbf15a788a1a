//! The agent seen from the engine: the engine's `ChangeJournal` is the agent's journal (see
//! [`crate::journal`]) and its progress handle is the agent's [`Progress`]. Nothing else of
//! the engine is visible to the agent.

use crate::agent::Progress;

impl Progress for baton_actors::Progress {
    fn update(&self, message: &str) {
        self.say(message);
    }
}
