//! Whose code and text a run works on. The read step of each built-in workflow about an issue
//! or a pull request records the same two facts in its output, for the steps after it and the
//! sandbox that decides how repository code may run:
//!
//! - `trusted` (a bool);
//! - `trust_reason`: why, in words ("author @carol can write", "author @bob has no write
//!   access", "pull request from a fork (alice/calc)").
//!
//! Trusted is code and text from someone with write access (write, maintain or admin) on the
//! repository's own branches. Untrusted is a pull request from a fork, whoever opened it (its
//! head lives outside the repository), and anything written by someone without write access.
//!
//! An outsider's diff or instructions are applied only once someone with write access approves
//! them, or never: `[sandbox] outsider_patches` ([`OutsiderPatches`]).

use serde::{Deserialize, Serialize};

use crate::forge::{self, Forge, PullRequest, Repo};

/// `[sandbox] outsider_patches`: what to do with a diff (`issue_to_pr`) or instructions
/// (`revise`) written by someone without write access. A repository's `.baton.toml` cannot
/// change it: what it protects is the repository.
pub use crate::sandbox::OutsiderPatches;

/// Whether a run's subject is trusted, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// Code and text from someone with write access, on the repository's own branches.
    pub trusted: bool,
    /// Why, in words.
    pub trust_reason: String,
}

impl Facts {
    /// Where the sandbox puts code of this trust.
    pub fn sandbox_trust(&self) -> crate::sandbox::Trust {
        if self.trusted {
            crate::sandbox::Trust::Trusted
        } else {
            crate::sandbox::Trust::untrusted(self.trust_reason.clone())
        }
    }

    /// An issue or comment by `author`, who can write or not.
    pub fn of_author(author: &str, can_write: bool) -> Facts {
        Facts {
            trusted: can_write,
            trust_reason: if can_write {
                format!("author @{author} can write")
            } else {
                format!("author @{author} has no write access")
            },
        }
    }

    /// Pull request `pr` of `repo`, opened by an author who can write or not. A pull request
    /// from a fork is untrusted whoever opened it.
    pub fn of_pull_request(repo: &Repo, pr: &PullRequest, author_can_write: bool) -> Facts {
        match fork_of(repo, pr) {
            Some(Fork::Named(fork)) => Facts {
                trusted: false,
                trust_reason: format!("pull request from a fork ({fork})"),
            },
            Some(Fork::Deleted) => Facts {
                trusted: false,
                trust_reason: "pull request from a deleted fork".into(),
            },
            None => Facts::of_author(&pr.author, author_can_write),
        }
    }
}

/// Where a pull request's head lives, when not in its own repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fork {
    /// The fork, `owner/name`.
    Named(String),
    /// The forge no longer knows it (a deleted fork).
    Deleted,
}

/// The fork `pr`'s head lives in, or `None` when it is a branch of `repo` (GitHub's names are
/// case-insensitive).
pub fn fork_of(repo: &Repo, pr: &PullRequest) -> Option<Fork> {
    match &pr.head_repo {
        Some(head) if head.eq_ignore_ascii_case(&repo.to_string()) => None,
        Some(head) => Some(Fork::Named(head.clone())),
        None => Some(Fork::Deleted),
    }
}

/// Whether `user` has write access to `repo` (write, maintain or admin). An error that may
/// pass (a rate limit, a 5xx) is returned so that the step retries; any other (an unknown or
/// deleted account) is no access. An empty login has none.
pub async fn can_write(forge: &dyn Forge, repo: &Repo, user: &str) -> Result<bool, forge::Error> {
    if user.trim().is_empty() {
        return Ok(false);
    }
    match forge.permission(repo, user).await {
        Ok(p) => Ok(p.can_steer()),
        Err(e) if e.is_retryable() => Err(e),
        Err(_) => Ok(false),
    }
}

/// Whether `user` is baton's own account (`[webhook] bot_login`): what it writes is baton's, and
/// it pushes baton's branches, whatever the permission API says of a GitHub App's
/// `<slug>[bot]`.
pub fn is_own(user: &str, bot_login: Option<&str>) -> bool {
    bot_login.is_some_and(|own| !own.trim().is_empty() && own.trim().eq_ignore_ascii_case(user))
}

/// How someone with write access approves `run`, which waits for it, in words. A
/// `/baton approve` comment finds only a run that a webhook started (`by_comment`).
pub fn how_to_approve(run: &str, by_comment: bool) -> String {
    let comment = if by_comment {
        "`/baton approve` in a comment, "
    } else {
        ""
    };
    format!("{comment}`baton approve {run}`, the admin UI or Telegram (`/approve {run}`)")
}

/// Whether `engine`'s run `run` was started by a webhook delivery (so a `/baton` comment
/// steers it).
pub fn started_by_webhook(engine: &baton_actors::Engine, run: &str) -> bool {
    let prefix = format!("{}:", crate::web::jobs::SOURCE);
    engine
        .head(run)
        .ok()
        .and_then(|head| head.job_id)
        .is_some_and(|job| job.starts_with(&prefix))
}

/// Text that a run would act on, written by someone without write access, held back until
/// someone with write access approves it ([`OutsiderPatches::Wait`]) or for good (`Refuse`).
pub struct Outsider<'a> {
    /// The repository.
    pub repo: &'a Repo,
    /// The issue or pull request that says so.
    pub number: u64,
    /// The run.
    pub run: &'a str,
    /// Whether a webhook started the run (a `/baton approve` comment finds it).
    pub by_comment: bool,
    /// Whose text it is and what, as a sentence without its full stop: "The diff in issue #3
    /// comes from @mallory, who has no write access to acme/calc".
    pub why: String,
    /// What baton does not do on its own: "does not apply it".
    pub not_done: &'a str,
    /// What the run uses once approved: "What is applied is the diff as baton read it now;
    /// later edits of the issue are not."
    pub as_read: &'a str,
}

/// What a run does with an [`Outsider`]'s text, once it has said so.
#[derive(Debug, Clone, PartialEq)]
pub enum Hold {
    /// It waits: who may approve and how (`reason`, `who`, `how`), for the step's output.
    Wait(serde_json::Value),
    /// It ends, with this error.
    Refuse(String),
}

impl Outsider<'_> {
    /// Says on the issue or pull request, in one comment (edited, not repeated, when the step
    /// is retried), why the run waits or ends, and what happens now.
    pub async fn hold(
        &self,
        forge: &dyn Forge,
        policy: OutsiderPatches,
    ) -> Result<Hold, forge::Error> {
        let (why, not_done, run) = (&self.why, self.not_done, self.run);
        let how = how_to_approve(run, self.by_comment);
        let text = match policy {
            OutsiderPatches::Refuse => format!(
                "⛔ {why}: baton {not_done} (`outsider_patches = \"refuse\"`). Someone with \
                 write access can make the change themselves.\n"
            ),
            OutsiderPatches::Wait => format!(
                "⏸️ {why}, so baton {not_done} on its own. Someone with write access must \
                 approve first: {how}. `baton reject {run}` refuses. {}\n",
                self.as_read
            ),
        };
        forge
            .upsert_comment(self.repo, self.number, run, Some("approval"), &text)
            .await?;
        crate::sandbox::refused(match policy {
            OutsiderPatches::Refuse => "outsider_refused",
            OutsiderPatches::Wait => "outsider_held",
        });
        Ok(match policy {
            OutsiderPatches::Refuse => Hold::Refuse(format!(
                "{why}: baton {not_done} (`outsider_patches = \"refuse\"`)"
            )),
            OutsiderPatches::Wait => Hold::Wait(serde_json::json!({
                "reason": format!("{why}."),
                "who": format!("someone with write access to {}", self.repo),
                "how": how,
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr(author: &str, head_repo: Option<&str>) -> PullRequest {
        PullRequest {
            number: 3,
            title: "t".into(),
            body: String::new(),
            state: "open".into(),
            draft: false,
            merged: false,
            author: author.into(),
            head: "fix/1".into(),
            head_repo: head_repo.map(str::to_string),
            head_sha: "abc".into(),
            base: "main".into(),
            url: String::new(),
        }
    }

    #[test]
    fn authors_and_forks_decide() {
        let repo = Repo::parse("Acme/Calc").unwrap();
        assert_eq!(
            Facts::of_author("carol", true),
            Facts {
                trusted: true,
                trust_reason: "author @carol can write".into()
            }
        );
        assert_eq!(
            Facts::of_author("bob", false).trust_reason,
            "author @bob has no write access"
        );
        let own = Facts::of_pull_request(&repo, &pr("carol", Some("acme/calc")), true);
        assert!(own.trusted, "{own:?}");
        let outsider = Facts::of_pull_request(&repo, &pr("bob", Some("acme/calc")), false);
        assert!(!outsider.trusted);
        assert_eq!(outsider.trust_reason, "author @bob has no write access");
        // A fork is untrusted even when its author can write.
        let fork = Facts::of_pull_request(&repo, &pr("alice", Some("alice/calc")), true);
        assert!(!fork.trusted);
        assert_eq!(fork.trust_reason, "pull request from a fork (alice/calc)");
        let gone = Facts::of_pull_request(&repo, &pr("alice", None), true);
        assert!(!gone.trusted);
        assert!(gone.trust_reason.contains("deleted fork"), "{gone:?}");
        assert_eq!(fork_of(&repo, &pr("a", Some("ACME/calc"))), None);
    }
}
