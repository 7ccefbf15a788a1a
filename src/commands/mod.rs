//! Command groups of the command line that have grown their own file. [`crate::cli`] parses the
//! top level and dispatches here; each module owns its subcommands' arguments and output.

pub mod forge;
