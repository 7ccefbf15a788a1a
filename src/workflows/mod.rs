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

use crate::config::Config;
use crate::forge::ForgeHandle;

/// Whether `name` is an action this binary provides (generic or a built-in workflow's own).
pub fn known(name: &str) -> bool {
    crate::actions::known(name)
        || issue_to_pr::ACTIONS.contains(&name)
        || pr_review::ACTIONS.contains(&name)
        || bug_triage::ACTIONS.contains(&name)
        || release_notes::ACTIONS.contains(&name)
        || revise::ACTIONS.contains(&name)
}

/// The built-in workflows' ids. No workflow file and no API call may use one: a built-in
/// cannot be replaced.
pub const BUILT_IN_IDS: [&str; 5] = [
    issue_to_pr::ID,
    pr_review::ID,
    bug_triage::ID,
    release_notes::ID,
    revise::ID,
];

/// Whether `id` is a built-in workflow's.
pub fn is_built_in(id: &str) -> bool {
    BUILT_IN_IDS.contains(&id)
}

/// The built-in workflows' definitions.
pub fn definitions() -> Vec<baton_actors::Definition> {
    vec![
        issue_to_pr::definition(),
        pr_review::definition(),
        bug_triage::definition(),
        release_notes::definition(),
        revise::definition(),
    ]
}

/// Registers every action and the built-in workflows with `engine`, over the forge `config`
/// names (built when a step first needs it). Registering a definition the store already
/// holds is a no-op, so this runs at every start.
pub async fn install(
    engine: &Engine,
    config: &Config,
    data_dir: &Path,
) -> baton_actors::Result<()> {
    config.apply_sandbox(data_dir);
    let forge = ForgeHandle::new(config, data_dir.to_path_buf());
    install_with(engine, config, &forge).await
}

/// [`install`] over a given forge.
pub async fn install_with(
    engine: &Engine,
    config: &Config,
    forge: &ForgeHandle,
) -> baton_actors::Result<()> {
    crate::actions::register(engine, config, forge);
    issue_to_pr::register_actions(engine, config, forge);
    pr_review::register_actions(engine, config, forge);
    bug_triage::register_actions(engine, config, forge);
    release_notes::register_actions(engine, config, forge);
    revise::register_actions(engine, config, forge);
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
    fn the_built_in_ids_are_the_built_in_definitions() {
        let mut ids: Vec<String> = definitions().into_iter().map(|d| d.id).collect();
        let mut listed: Vec<&str> = BUILT_IN_IDS.to_vec();
        ids.sort();
        listed.sort();
        assert_eq!(ids, listed);
    }
}
