//! The engine's one error type. Every message names what is wrong (a file, a key, a run id)
//! and, where there is one, what the user can do about it.

use std::path::PathBuf;

/// What went wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A workflow definition is not valid; `origin` is the file or the workflow id.
    #[error("{origin}: {message}")]
    Definition {
        /// Where the definition came from (a path or `workflow <id>`).
        origin: String,
        /// What is wrong, naming the key or step.
        message: String,
    },
    /// Input given to a run does not match the workflow's `[input]` section.
    #[error("bad input for workflow `{workflow}`: {message}")]
    Input {
        /// The workflow the input was for.
        workflow: String,
        /// What is wrong.
        message: String,
    },
    /// No workflow with that id is registered.
    #[error("unknown workflow `{0}` (see `baton workflows`)")]
    UnknownWorkflow(String),
    /// No run with that id is in the store.
    #[error("unknown run `{0}` (see `baton runs`)")]
    UnknownRun(String),
    /// A control command that does not fit the run's current state; nothing was changed.
    #[error("run {run} is {status}: {message}; nothing was changed")]
    WrongState {
        /// The run the command was for.
        run: String,
        /// Its current status.
        status: String,
        /// Why the command does not apply.
        message: String,
    },
    /// The data directory is locked by another process.
    #[error("data dir {dir} is in use by {holder}; stop it or pick another --data-dir")]
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// Who holds it, as well as we can tell (pid and command line).
        holder: String,
    },
    /// The store failed (disk full, permissions, corruption).
    #[error("store at {dir}: {source}")]
    Store {
        /// The data directory.
        dir: PathBuf,
        /// The underlying sled error.
        #[source]
        source: sled::Error,
    },
    /// A batch could not be made durable; nothing of it is visible.
    #[error("{store}: a commit failed: {message}")]
    Commit {
        /// Which store ("store at DIR", or the database).
        store: String,
        /// What the backend said.
        message: String,
    },
    /// Another daemon on the database holds the run: it is the one to ask.
    #[error("run {run} is held by daemon `{daemon}`; ask that daemon")]
    HeldElsewhere {
        /// The run.
        run: String,
        /// The daemon holding it.
        daemon: String,
    },
    /// This daemon's lease on its runs lapsed (several daemons on one database): others may
    /// be running them now.
    #[error(
        "{store}: daemon `{daemon}` lost its lease: it was not renewed within {lease_ms} ms, \
         and other daemons may be running its runs"
    )]
    LeaseLost {
        /// Which database.
        store: String,
        /// This daemon.
        daemon: String,
        /// The lease, in milliseconds.
        lease_ms: u128,
    },
    /// The database failed or refused (unreachable, a newer schema, a lapsed lease).
    #[error("{store}: {message}")]
    Database {
        /// Which database (user, host, port and name; never a password).
        store: String,
        /// What went wrong.
        message: String,
    },
    /// A stored record could not be decoded; it is reported with its key and skipped.
    #[error("corrupt record in tree `{tree}` at key {key}: {message}")]
    Corrupt {
        /// The sled tree.
        tree: &'static str,
        /// The key, printed readably.
        key: String,
        /// The decoding error.
        message: String,
    },
    /// An I/O error with the path it concerns.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The store was written by a newer baton; nothing was read or written.
    #[error("store at {dir} is format version {found}, newer than this baton's {supported}; run a baton that knows version {found}")]
    StoreVersion {
        /// The data directory.
        dir: PathBuf,
        /// The version in the store.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A backup file that cannot be restored, or a restore into a dir that has a store.
    #[error("{path}: {message}")]
    Backup {
        /// The backup file or the data directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The engine has been shut down.
    #[error("the engine is shutting down")]
    ShuttingDown,
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the error is the caller's fault (bad definition, bad input, wrong state,
    /// unknown id): the CLI exits 2 for these.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::Definition { .. }
                | Error::Input { .. }
                | Error::UnknownWorkflow(_)
                | Error::UnknownRun(_)
                | Error::WrongState { .. }
                | Error::InUse { .. }
                | Error::Backup { .. }
        )
    }

    pub(crate) fn definition(origin: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Definition {
            origin: origin.into(),
            message: message.into(),
        }
    }
}
