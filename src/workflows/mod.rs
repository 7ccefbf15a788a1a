//! The built-in workflows, one file each: its definition and the actions only it uses.
//!
//! - [`issue_to_pr`]: an issue in, a tested pull request out, progress on the issue.
//! - [`pr_review`]: a pull request in, one review with measured results out.
//! - [`bug_triage`]: a bug report in; priority, areas and a reproduction attempt in one comment.
//! - [`release_notes`]: a tag in; grouped notes on its release out.
//! - [`revise`]: a review on baton's pull request in; a verified commit on its branch out.
//!
//! [`trust`] holds what they share about whose code and text a run works on.
//!
//! [`install`] gives an engine everything this binary provides: the generic actions of
//! `crate::actions` and each built-in workflow with its own actions.

/// Registers a workflow's own action `name`: an `async fn(&ActionContext, &Env)` sharing the
/// workflow's `env` (an `Arc` of what its actions need).
macro_rules! action {
    ($engine:expr, $env:expr, $name:literal, $f:ident) => {{
        let env = $env.clone();
        $engine.register_action($name, move |ctx: baton_actors::ActionContext| {
            let env = env.clone();
            async move { $f(&ctx, &env).await }
        });
    }};
}
use action;

pub mod bug_triage;
pub mod files;
pub mod issue_to_pr;
pub mod pr_review;
pub mod release_notes;
pub mod revise;
pub mod trust;

use std::path::Path;

use baton_actors::{Engine, Interface, Provenance};

use crate::ci::wake::CiWakes;
use crate::config::Config;
use crate::forge::ForgeHandle;
use crate::verify::Slots;

/// A built-in workflow: everything the rest of the binary needs to know about it.
pub struct BuiltIn {
    /// The workflow's id; no workflow file and no API call may use it.
    pub id: &'static str,
    /// Its definition.
    pub definition: fn() -> baton_actors::Definition,
    /// The actions only it uses (`issue_to_pr.parse`).
    pub actions: &'static [&'static str],
    /// Registers those actions with an engine.
    pub register_actions: fn(&Engine, &Config, &ForgeHandle, &Shared),
}

/// What the actions of one engine share besides the forge: made once by [`install_with`].
pub struct Shared {
    /// `[limits] max_verifications`: the engine's verification slots.
    pub verify_slots: Slots,
    /// The commits runs wait on for CI; the daemon's listeners wake them.
    pub ci_wakes: CiWakes,
}

/// The built-in workflows, in the order `baton workflows` lists them. The one list: ids,
/// definitions and actions are all read from here.
pub const BUILT_INS: [BuiltIn; 5] = [
    BuiltIn {
        id: issue_to_pr::ID,
        definition: issue_to_pr::definition,
        actions: &issue_to_pr::ACTIONS,
        register_actions: issue_to_pr::register_actions,
    },
    BuiltIn {
        id: pr_review::ID,
        definition: pr_review::definition,
        actions: &pr_review::ACTIONS,
        register_actions: pr_review::register_actions,
    },
    BuiltIn {
        id: bug_triage::ID,
        definition: bug_triage::definition,
        actions: &bug_triage::ACTIONS,
        register_actions: bug_triage::register_actions,
    },
    BuiltIn {
        id: release_notes::ID,
        definition: release_notes::definition,
        actions: &release_notes::ACTIONS,
        register_actions: release_notes::register_actions,
    },
    BuiltIn {
        id: revise::ID,
        definition: revise::definition,
        actions: &revise::ACTIONS,
        register_actions: revise::register_actions,
    },
];

/// Whether `name` is an action this binary provides (generic or a built-in workflow's own).
pub fn known(name: &str) -> bool {
    crate::actions::known(name) || BUILT_INS.iter().any(|b| b.actions.contains(&name))
}

/// Whether `id` is a built-in workflow's. No workflow file and no API call may use one: a
/// built-in cannot be replaced.
pub fn is_built_in(id: &str) -> bool {
    BUILT_INS.iter().any(|b| b.id == id)
}

/// The built-in workflows' definitions.
pub fn definitions() -> Vec<baton_actors::Definition> {
    BUILT_INS.iter().map(|b| (b.definition)()).collect()
}

/// Registers every action and the built-in workflows with `engine`, over the forge `config`
/// names (built when a step first needs it). Registering a definition the store already
/// holds is a no-op, so this runs at every start. `ci_wakes` is the registry the daemon's
/// listeners wake waiting runs through (a fresh one where nothing listens).
pub async fn install(
    engine: &Engine,
    config: &Config,
    data_dir: &Path,
    ci_wakes: &CiWakes,
) -> baton_actors::Result<()> {
    config.apply_sandbox(data_dir);
    let forge = ForgeHandle::new(config.forge_settings(data_dir));
    install_with(engine, config, &forge, ci_wakes).await
}

/// [`install`] over a given forge.
pub async fn install_with(
    engine: &Engine,
    config: &Config,
    forge: &ForgeHandle,
    ci_wakes: &CiWakes,
) -> baton_actors::Result<()> {
    // One set of verification slots for every action of this engine that runs checks.
    let shared = Shared {
        verify_slots: Slots::new(config.limits.max_verifications),
        ci_wakes: ci_wakes.clone(),
    };
    crate::actions::register(engine, config, forge, &shared.verify_slots);
    for built_in in &BUILT_INS {
        (built_in.register_actions)(engine, config, forge, &shared);
    }
    for def in definitions() {
        let provenance = Provenance::now(Interface::Builtin, "built-in");
        engine.register_workflow_from(def, provenance).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_built_in_is_its_definition_and_its_actions() {
        for b in &BUILT_INS {
            let def = (b.definition)();
            assert_eq!(def.id, b.id);
            assert!(is_built_in(b.id));
            // Every action it names is known, and every action of its own is used.
            let used: Vec<&str> = def
                .steps
                .iter()
                .flat_map(|s| {
                    s.action
                        .iter()
                        .chain(s.compensate.iter().map(|c| &c.action))
                })
                .map(String::as_str)
                .collect();
            for action in &used {
                assert!(known(action), "{}: `{action}` is not registered", b.id);
            }
            for own in b.actions {
                assert!(own.starts_with(&format!("{}.", b.id)), "{}: {own}", b.id);
            }
        }
        assert!(!is_built_in("release-check"));
        assert!(!known("issue_to_pr.nonesuch"));
    }
}
