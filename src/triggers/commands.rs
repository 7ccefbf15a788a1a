//! The `/baton` comment commands: `run`, `review`, `triage`, the steering verbs and
//! `revise <instructions>`.

use baton_actors::machine::BadRollback;
use baton_actors::RollbackRequest;

use super::{Command, COMMAND_PREFIX};

/// What a `/baton` comment asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Said {
    /// `/baton run`: start the `issue_comment` trigger's workflow on the issue.
    Run,
    /// `/baton run --force`: the same, or with baton's pull request for the issue open, a
    /// revision of it.
    RunForce,
    /// `/baton review`: review the pull request the comment is on (the `pull_request`
    /// trigger's workflow, default `pr_review`).
    Review,
    /// `/baton triage`: triage the issue the comment is on (the workflow of the `bug` label's
    /// trigger, default `bug_triage`).
    Triage,
    /// `/baton fix-ci`: on baton's pull request, one more fix round for the run that opened
    /// it, while it waits at `ci_wait` (CI failed past `max_ci_fix_rounds`, or timed out).
    FixCi,
    /// Steer the run already started for the issue or pull request.
    Steer(Command),
}

/// A `/baton` line that is not a command; the webhook logs it as the reason nothing ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadComment {
    /// `/baton` alone.
    #[error(
        "`/baton` needs a command: run, review, triage, approve, retry, skip, abort, rollback, \
         fix-ci"
    )]
    NoCommand,
    /// `/baton rollback` with a how that is not soft, hard or a number.
    #[error("`/baton rollback`: {0}")]
    Rollback(#[source] BadRollback),
    /// Words that are no command.
    #[error("unknown command `/baton {0}`")]
    Unknown(String),
}

/// `/baton revise <instructions>`: the instructions (the rest of that line and every line after
/// it, possibly empty), or `None` when the comment holds no revise command.
pub fn parse_revise(body: &str) -> Option<String> {
    let mut lines = body.lines();
    let first = lines.by_ref().map(str::trim).find(|l| {
        let mut words = l.split_whitespace();
        words.next() == Some(COMMAND_PREFIX) && words.next() == Some("revise")
    })?;
    let rest = first
        .trim_start_matches(COMMAND_PREFIX)
        .trim_start()
        .trim_start_matches("revise")
        .trim();
    let mut text = rest.to_string();
    for line in lines {
        text.push('\n');
        text.push_str(line);
    }
    Some(text.trim().to_string())
}

/// Reads a `/baton` command from the first line of a comment that starts with the prefix.
/// `None`: no command. `Some(Err)`: a malformed command.
pub fn parse_command(body: &str) -> Option<Result<Said, BadComment>> {
    let line = body
        .lines()
        .map(str::trim)
        .find(|l| l.split_whitespace().next() == Some(COMMAND_PREFIX))?;
    let words: Vec<&str> = line.split_whitespace().skip(1).collect();
    let parsed = match words.as_slice() {
        ["run"] => Ok(Said::Run),
        ["run", "--force"] => Ok(Said::RunForce),
        ["review"] => Ok(Said::Review),
        ["triage"] => Ok(Said::Triage),
        ["fix-ci"] => Ok(Said::FixCi),
        ["approve"] => Ok(Said::Steer(Command::Approve)),
        ["retry"] => Ok(Said::Steer(Command::Retry)),
        ["skip"] => Ok(Said::Steer(Command::Skip)),
        ["abort"] => Ok(Said::Steer(Command::Abort)),
        ["rollback"] => Ok(Said::Steer(Command::Rollback(RollbackRequest::Soft))),
        ["rollback", word] => word
            .parse()
            .map(|r| Said::Steer(Command::Rollback(r)))
            .map_err(BadComment::Rollback),
        [] => Err(BadComment::NoCommand),
        other => Err(BadComment::Unknown(other.join(" "))),
    };
    Some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_command(body: &str, expected: Option<Result<Said, ()>>) {
        let got = parse_command(body).map(|r| r.map_err(|_| ()));
        assert_eq!(got, expected, "{body:?}");
    }

    #[test]
    fn commands() {
        use Command::*;
        check_command("/baton run", Some(Ok(Said::Run)));
        check_command("/baton run --force", Some(Ok(Said::RunForce)));
        check_command("  /baton   approve  ", Some(Ok(Said::Steer(Approve))));
        check_command("LGTM\n/baton retry\nthanks", Some(Ok(Said::Steer(Retry))));
        check_command("/baton review", Some(Ok(Said::Review)));
        check_command("/baton triage", Some(Ok(Said::Triage)));
        check_command("/baton fix-ci", Some(Ok(Said::FixCi)));
        check_command("/baton fix-ci now", Some(Err(())));
        check_command("/baton skip", Some(Ok(Said::Steer(Skip))));
        check_command("/baton abort", Some(Ok(Said::Steer(Abort))));
        check_command(
            "/baton rollback",
            Some(Ok(Said::Steer(Rollback(RollbackRequest::Soft)))),
        );
        check_command(
            "/baton rollback hard",
            Some(Ok(Said::Steer(Rollback(RollbackRequest::Hard)))),
        );
        check_command(
            "/baton rollback 3",
            Some(Ok(Said::Steer(Rollback(RollbackRequest::Steps(3))))),
        );
        check_command("/baton rollback 0", Some(Err(())));
        check_command("/baton rollback sideways", Some(Err(())));
        check_command("/baton dance", Some(Err(())));
        check_command("/baton", Some(Err(())));
        check_command("/batonrun", None);
        check_command("please /baton run", None);
        check_command("no command here", None);
    }

    #[test]
    fn revise_commands_carry_their_instructions() {
        assert_eq!(
            parse_revise("/baton revise use checked_div\nand a test"),
            Some("use checked_div\nand a test".into())
        );
        assert_eq!(parse_revise("LGTM\n  /baton revise  "), Some(String::new()));
        assert_eq!(parse_revise("/baton revised"), None);
        assert_eq!(parse_revise("/baton run"), None);
    }
}
