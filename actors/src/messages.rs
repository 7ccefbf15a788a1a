//! The messages between the engine, the supervisor and the run and step actors, in one place
//! below them all, so that none of them imports another for its mailbox's type.

use ractor::{ActorId, RpcReplyPort};
use serde_json::Value;

use crate::action::ActionError;
use crate::admission::RunKeys;
use crate::machine::Input;
use crate::record::RunStatus;
use crate::store::TimerEntry;

/// Why an input could not be delivered.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The command does not fit the run's state; nothing changed.
    WrongState(RunStatus, String),
    /// No such run.
    UnknownRun,
    /// The store or the definition could not be read.
    Failed(String),
    /// Another daemon holds the run (several daemons on one database): it is the one to ask.
    Elsewhere(String),
}

impl Refusal {
    /// As JSON, for an answer that crosses to another daemon.
    pub fn to_json(reply: &CommandReply) -> Value {
        use serde_json::json;
        match reply {
            Ok(()) => json!({ "ok": true }),
            Err(Refusal::WrongState(status, message)) => {
                json!({ "refusal": "wrong_state", "status": status, "message": message })
            }
            Err(Refusal::UnknownRun) => json!({ "refusal": "unknown_run" }),
            Err(Refusal::Failed(message)) => json!({ "refusal": "failed", "message": message }),
            Err(Refusal::Elsewhere(holder)) => json!({ "refusal": "elsewhere", "holder": holder }),
        }
    }

    /// Reads what [`Refusal::to_json`] wrote.
    pub fn from_json(value: &Value) -> CommandReply {
        let text = |key: &str| value[key].as_str().unwrap_or_default().to_string();
        match value["refusal"].as_str() {
            None if value["ok"] == true => Ok(()),
            Some("wrong_state") => match serde_json::from_value(value["status"].clone()) {
                Ok(status) => Err(Refusal::WrongState(status, text("message"))),
                Err(e) => Err(Refusal::Failed(format!("an unreadable answer: {e}"))),
            },
            Some("unknown_run") => Err(Refusal::UnknownRun),
            Some("failed") => Err(Refusal::Failed(text("message"))),
            Some("elsewhere") => Err(Refusal::Elsewhere(text("holder"))),
            _ => Err(Refusal::Failed(format!("an unreadable answer: {value}"))),
        }
    }
}

/// The answer to a delivered command.
pub type CommandReply = Result<(), Refusal>;

/// What `resume` found.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResumeReport {
    /// Runs whose actors were started again.
    pub resumed: usize,
    /// Runs parked (waiting), left in the store.
    pub waiting: usize,
    /// Timers armed.
    pub timers: usize,
    /// Runs that could not be loaded (reported in the log with their key).
    pub skipped: usize,
}

/// Messages of the supervisor.
pub enum SupervisorMsg {
    /// Admit a new run (it starts when its limits have room).
    Start {
        /// The run, durably created.
        run: String,
        /// What admission counts it under.
        keys: RunKeys,
    },
    /// Route an input to a run, waking it if it is parked.
    Deliver {
        /// The run.
        run: String,
        /// The input.
        input: Input,
        /// The answer, for commands.
        reply: Option<RpcReplyPort<CommandReply>>,
    },
    /// A run actor has nothing in flight after `handled` inputs.
    Idle {
        /// The run.
        run: String,
        /// The actor (a stale message from an earlier actor of the run is ignored).
        actor: ActorId,
        /// Inputs it has handled.
        handled: u64,
        /// The run has ended (a run cancelled while queued leaves the queue).
        finished: bool,
    },
    /// A timer was persisted.
    TimerSet(TimerEntry),
    /// A timer was removed.
    TimerCleared(TimerEntry),
    /// The earliest timer may be due.
    Tick,
    /// Start actors for unfinished runs and arm their timers.
    Resume(Resume, RpcReplyPort<crate::Result<ResumeReport>>),
    /// How many run actors are alive.
    LiveRuns(RpcReplyPort<usize>),
    /// Another daemon may have freed a repository's slot (several daemons on one database).
    SlotsFreed,
}

/// Which runs to resume.
pub enum Resume {
    /// Every unfinished run this daemon holds (at start).
    All,
    /// One run (`baton resume RUN`).
    Run(String),
    /// Runs just taken over from a lapsed daemon.
    Adopted(Vec<String>),
}

/// Messages of a run actor.
pub enum RunMsg {
    /// An input from the supervisor (counted for the idle handshake).
    Input {
        /// The input.
        input: Input,
        /// Where the answer goes, for commands.
        reply: Option<RpcReplyPort<CommandReply>>,
    },
    /// An attempt finished.
    StepDone {
        /// Step index.
        step: usize,
        /// Attempt.
        attempt: u32,
        /// Result.
        result: Result<Value, ActionError>,
    },
    /// A compensation finished.
    CompensationDone {
        /// Step index.
        step: usize,
        /// Result.
        result: Result<(), String>,
    },
}
