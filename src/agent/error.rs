//! The crate's one error type. Messages name the file, hunk, key or limit involved and say
//! what the user can do; none of them ever carries a secret (keys are redacted before an HTTP
//! error body is put into one).

/// Everything that can stop the agent with an error (as opposed to a budget running out, which
/// is a normal [`crate::agent::Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable; the message names the key.
    #[error("agent configuration: {0}")]
    Config(String),
    /// A model provider answered with an error that retrying does not fix, or kept failing
    /// after every retry.
    #[error("{provider} request failed: {message}")]
    Provider {
        /// `openai` or `anthropic`.
        provider: &'static str,
        /// Status and a redacted excerpt of the body.
        message: String,
    },
    /// A provider answered with something that is not the protocol we speak.
    #[error("{provider} sent a response we cannot read: {message}")]
    Protocol {
        /// `openai` or `anthropic`.
        provider: &'static str,
        /// What was wrong with it.
        message: String,
    },
    /// The issue carries a diff that does not apply; names the file and the hunk.
    #[error("{0}")]
    Patch(String),
    /// The external coding command could not be run or failed.
    #[error("coding command: {0}")]
    Command(String),
    /// The workspace is missing, not a directory, or a git command in it failed.
    #[error("workspace {path}: {message}")]
    Workspace {
        /// The workspace root.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The engine's change journal refused a record; nothing was written after it.
    #[error("change journal refused a record for {path}: {source}")]
    Journal {
        /// The file the change was about.
        path: String,
        /// The journal's error.
        #[source]
        source: crate::journal::Error,
    },
    /// This backend cannot do what was asked (e.g. the `patch` backend asked to fix tests).
    #[error("{0}")]
    Unsupported(String),
    /// `fix` was called more often than `fix_rounds` allows.
    #[error("no fix rounds left: {used} of {allowed} used")]
    FixRoundsExhausted {
        /// Rounds already used.
        used: u32,
        /// `agent.fix_rounds`.
        allowed: u32,
    },
    /// The engine cancelled the run.
    #[error("cancelled")]
    Cancelled,
    /// A local IO error outside the tools (tools report theirs to the model).
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
