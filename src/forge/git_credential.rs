//! Which credential git uses with GitHub's repositories under a personal token: the one rule
//! every clone of a built-in workflow follows (a GitHub App's git takes the installation token
//! instead, see [`super::Forge::git_token`]). git takes `GITHUB_TOKEN` (by header) when it is
//! set. Without it, a workflow that only reads clones anonymously (a public repository works; a
//! private one fails with git's own message), and one that pushes is refused before any work,
//! saying what to set. The local forge needs no credential.

/// What git does with a clone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitUse {
    /// Clone and read only (review, triage, release notes).
    Read,
    /// Clone and push a branch (issue to PR, revise).
    Push,
}

/// On GitHub, the variable holding the token git uses, `""` for none (the `token_env` a
/// `git.clone` step takes; see [`super::Forge::git_token_env`]). An error says why a push
/// cannot work.
pub(super) fn github_token_env(use_: GitUse) -> Result<&'static str, String> {
    rule(true, crate::secrets::is_set(GITHUB_TOKEN), use_)
}

/// The variable git's GitHub token is read from.
const GITHUB_TOKEN: &str = "GITHUB_TOKEN";

fn rule(github: bool, token_set: bool, use_: GitUse) -> Result<&'static str, String> {
    match (github, token_set, use_) {
        (false, _, _) => Ok(""),
        (true, true, _) => Ok(GITHUB_TOKEN),
        (true, false, GitUse::Read) => Ok(""),
        (true, false, GitUse::Push) => Err(format!(
            "git needs a credential to push on GitHub: set {GITHUB_TOKEN} for the daemon, or \
             install baton as a GitHub App (`baton github app manifest`)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_go_anonymous_pushes_need_the_token() {
        use GitUse::{Push, Read};
        for (github, set, use_, want) in [
            (false, false, Push, Ok("")),
            (false, true, Read, Ok("")),
            (true, true, Read, Ok("GITHUB_TOKEN")),
            (true, true, Push, Ok("GITHUB_TOKEN")),
            (true, false, Read, Ok("")),
            (true, false, Push, Err("set GITHUB_TOKEN for the daemon")),
        ] {
            let got = rule(github, set, use_);
            match want {
                Ok(v) => assert_eq!(got, Ok(v), "{github} {set} {use_:?}"),
                Err(part) => assert!(got.unwrap_err().contains(part)),
            }
        }
    }
}
