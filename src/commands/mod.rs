//! Commands that have grown their own file. [`crate::cli`] parses the top level and dispatches
//! here; each module owns its arguments and output.
//!
//! - [`issue_to_pr`]: `baton issue-to-pr OWNER/NAME#N`.
//! - [`revise`]: `baton revise OWNER/NAME#PR`, a revision of a pull request on review.
//! - [`builtins`]: `baton pr-review`, `baton triage`, `baton release-notes`.
//! - [`demo`]: `baton demo`, the offline tour of the whole job.
//! - [`forge`]: `baton forge …`, the configured forge from the command line.
//! - [`github`]: `baton github …`, installing baton as a GitHub App.
//! - [`verify`]: `baton verify`; [`agent`]: `baton agent run`.
//! - [`follow`]: what every run command shares: the backend, a command sent, a run followed;
//!   [`print`]: run records and JSON on stdout.

pub mod agent;
pub mod builtins;
pub mod demo;
pub mod follow;
pub mod forge;
pub mod github;
pub mod issue_to_pr;
pub mod print;
pub mod revise;
pub mod verify;
