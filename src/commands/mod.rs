//! Commands that are more than a call to the engine: each a module with an `Args` and a `run`.
//!
//! - [`issue_to_pr`]: `baton issue-to-pr OWNER/NAME#N`.
//! - [`demo`]: `baton demo`, the offline tour of the whole job.

pub mod demo;
pub mod issue_to_pr;
