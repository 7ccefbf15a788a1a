//! The actions the `baton` binary registers with the engine, and their names, so workflow
//! files can be validated without opening the store.
//!
//! - [`git`]: `git.*` (clone, branch, write, delete, commit, push, rebase, rollback) and
//!   `verify`, `verify.report`.
//! - [`agent`]: `agent.implement`, `agent.fix`.
//! - [`forge`]: `forge.*` (issues, comments, pull requests, labels, releases, compensations).
//!
//! The built-in workflows' own actions are registered with their workflows
//! (`crate::workflows`), which build on these.

pub mod agent;
pub mod forge;
pub mod git;

use std::sync::Arc;

use baton_actors::shell::{self, ShellPolicy};
use baton_actors::Engine;

use crate::config::Config;
use crate::forge::ForgeHandle;
use crate::verify::Slots;

/// Actions the engine itself provides.
const BUILT_IN: [&str; 3] = ["noop", "log", "shell"];

/// Every action name a workflow file may use with this binary.
pub fn names() -> Vec<&'static str> {
    BUILT_IN
        .iter()
        .chain(git::NAMES.iter())
        .chain(agent::NAMES.iter())
        .chain(forge::NAMES.iter())
        .copied()
        .collect()
}

/// Whether `name` is an action this binary provides.
pub fn known(name: &str) -> bool {
    names().contains(&name)
}

/// How this binary's `shell` steps run: the engine's allowlist, `pass_env` resolved through
/// the secrets module (the daemon's environment holds no secret), and bubblewrap for steps that
/// ask for it, or for all with `[sandbox] shell = true`.
pub fn shell_policy(config: &Config) -> ShellPolicy {
    ShellPolicy {
        lookup: Arc::new(|name| crate::secrets::get(name).ok().flatten()),
        sandbox_all: config.sandbox.shell,
        sandbox: Some(Arc::new(crate::sandbox::shell::SandboxedShell)),
        ..ShellPolicy::default()
    }
}

/// Registers this binary's actions, and `shell` under this binary's policy (the engine
/// registers its other built-ins itself).
pub fn register(engine: &Engine, config: &Config, forge: &ForgeHandle, slots: &Slots) {
    engine.register_action("shell", shell::shell_with(shell_policy(config)));
    git::register(engine, slots, forge);
    agent::register(engine, config);
    forge::register(engine, forge);
}
