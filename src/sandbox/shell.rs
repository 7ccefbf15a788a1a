//! Operator `shell` steps in the sandbox: `sandbox = true` on a step, or `[sandbox] shell =
//! true` for all of them. The engine's `shell` action (in `baton_actors`) builds the step's
//! environment (its allowlist plus the variables the step names); this runs it in bubblewrap
//! with the run's workspace as the writable tree. Workflow files are the operator's code, so
//! such a step is trusted: it keeps the network unless `[sandbox] network = "none"`.

use std::path::Path;

use baton_actors::ShellSandbox;
use tokio::process::Command;

use super::{NetworkPolicy, Placement, Trust};

/// The [`ShellSandbox`] the daemon installs.
pub struct SandboxedShell;

impl ShellSandbox for SandboxedShell {
    fn command(
        &self,
        script: &str,
        workspace: &Path,
        dir: &Path,
        env: Vec<(String, String)>,
    ) -> Result<(Command, Box<dyn std::any::Any + Send>), String> {
        let a = super::availability();
        if !a.works {
            return Err(a.detail);
        }
        let network = match super::place(&Trust::Trusted) {
            Placement::Sandbox { network } => network,
            _ => super::settings().network == NetworkPolicy::Trusted,
        };
        let mut job = super::Job::shell(workspace, script);
        job.chdir = Some(dir.to_path_buf());
        job.network = network;
        // The sandbox's own HOME, TMPDIR and PATH (what is mounted) win over the daemon's.
        job.env = env
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_str(), "HOME" | "TMPDIR" | "PATH"))
            .collect();
        let prepared = job.prepare()?;
        let cmd = prepared.command();
        Ok((cmd, Box::new(prepared)))
    }
}
