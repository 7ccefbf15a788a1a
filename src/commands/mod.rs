//! Commands that have grown their own file. [`crate::cli`] parses the top level and dispatches
//! here; each module owns its arguments and output.
//!
//! - [`issue_to_pr`]: `baton issue-to-pr OWNER/NAME#N`.
//! - [`revise`]: `baton revise OWNER/NAME#PR`, a revision of a pull request on review.
//! - [`builtins`]: `baton pr-review`, `baton triage`, `baton release-notes`.
//! - [`demo`]: `baton demo`, the offline tour of the whole job.
//! - [`forge`]: `baton forge …`, the configured forge from the command line.

pub mod builtins;
pub mod demo;
pub mod forge;
pub mod issue_to_pr;
pub mod revise;
