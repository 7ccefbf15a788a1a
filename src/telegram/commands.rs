//! Chat commands as text in, a [`ChatCommand`] out: a pure function, so every spelling a
//! person may type is a table test. Steering commands become the same [`Command`] the CLI and
//! the API send.

use baton_actors::machine::BadRollback;
use baton_actors::RollbackRequest;
use serde_json::{Map, Value};

use crate::backend::Command;

/// What a chat asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatCommand {
    /// `/start` or `/help`: what the bot can do.
    Help,
    /// `/workflows`: the workflows it can run.
    Workflows,
    /// `/run <workflow> [OWNER/NAME#N] [key=value...]`.
    Run {
        /// The workflow as typed (`-` and `_` are matched alike later).
        workflow: String,
        /// A positional `OWNER/NAME#N`: fills `repo` and `issue` or `pr`.
        subject: Option<Subject>,
        /// The `key=value` pairs (a value that parses as JSON keeps its type).
        input: Map<String, Value>,
    },
    /// `/runs`: the chat's runs.
    Runs,
    /// `/status [run]`.
    Status {
        /// The run; the chat's latest when absent.
        run: Option<String>,
    },
    /// `/approve`, `/reject`, `/retry`, `/skip`, `/abort`, `/cancel`, `/rollback`.
    Steer {
        /// The run; the chat's latest when absent.
        run: Option<String>,
        /// What to do, as the CLI and the API say it.
        command: Command,
    },
}

/// `OWNER/NAME#N`: a repository and an issue or pull request number.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject {
    /// `owner/name`.
    pub repo: String,
    /// The issue or pull request number.
    pub number: u64,
}

/// The command menu registered with setMyCommands: (command, description).
pub const MENU: &[(&str, &str)] = &[
    (
        "run",
        "Start a run: /run <workflow> [OWNER/NAME#N] [key=value...]",
    ),
    ("runs", "This chat's runs"),
    ("status", "A run's status: /status [run]"),
    ("approve", "Approve the waiting run: /approve [run]"),
    ("reject", "Reject the waiting run: /reject [run]"),
    ("retry", "Retry the failed step: /retry [run]"),
    ("skip", "Skip the failed step: /skip [run]"),
    ("abort", "Abort the run: /abort [run]"),
    ("cancel", "Cancel the run: /cancel [run]"),
    ("rollback", "Roll back: /rollback [run] <soft|hard|N>"),
    ("workflows", "The workflows baton can run"),
    ("help", "What this bot does"),
];

/// The answer to `/help`.
pub const HELP: &str = "baton runs workflows and asks you where it needs a decision.\n\
/run <workflow> [OWNER/NAME#N] [key=value...]: start a run, e.g. /run issue_to_pr octo/hello#12\n\
/runs: this chat's runs\n\
/status [run]: where a run is\n\
/approve, /reject, /retry, /skip, /abort, /cancel [run]: steer a run (default: this chat's latest)\n\
/rollback [run] <soft|hard|N>: undo what a run did\n\
/workflows: what can run";

/// What is wrong with a command; the bot sends the message back as the answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadCommand {
    /// A command this bot does not know.
    #[error("unknown command /{0}; /help lists them")]
    Unknown(String),
    /// Arguments to a command that takes none.
    #[error("/{0} takes no arguments")]
    NoArguments(String),
    /// More than one run id.
    #[error("/{0} takes at most one run id, e.g. /{0} run_01h...")]
    OneRun(String),
    /// `/run` alone.
    #[error(
        "/run needs a workflow: /run <workflow> [OWNER/NAME#N] [key=value...] (/workflows lists them)"
    )]
    NoWorkflow,
    /// `key=value` whose key is not a name.
    #[error("`{0}`: the key must be a name of letters, digits, `_` or `-`, e.g. branch=main")]
    BadKey(String),
    /// A second `OWNER/NAME#N`.
    #[error("`{0}`: only one OWNER/NAME#N may be given")]
    SecondSubject(String),
    /// A quote without its closing one.
    #[error("a quote is not closed: put a value with spaces in \"double\" or 'single' quotes")]
    Quotes,
    /// A `/run` argument that is neither `key=value` nor `OWNER/NAME#N`.
    #[error("`{0}`: expected key=value or OWNER/NAME#N (e.g. octo/hello#12)")]
    BadArgument(String),
    /// `/rollback` without how, or with too much.
    #[error("/rollback needs how: /rollback [run] <soft|hard|N>")]
    RollbackHow,
    /// `/rollback` with a how that is not soft, hard or a number.
    #[error("/rollback {0}")]
    Rollback(#[source] BadRollback),
}

/// Parses a message. `Ok(None)`: not a command (plain text is ignored). `bot` is the bot's
/// username, so `/run@this_bot` works in groups and `/run@other_bot` is left alone.
pub fn parse(text: &str, bot: Option<&str>) -> Result<Option<ChatCommand>, BadCommand> {
    let text = text.trim();
    let Some(rest) = text.strip_prefix('/') else {
        return Ok(None);
    };
    // Quotes group a value with spaces (`note="two words"`), as a shell would read them; the
    // words are data either way, never shell text.
    let owned: Vec<String> = if rest.contains(['"', '\'']) {
        shlex::split(rest).ok_or(BadCommand::Quotes)?
    } else {
        rest.split_whitespace().map(str::to_string).collect()
    };
    let mut words = owned.iter().map(String::as_str);
    let head = words.next().unwrap_or("");
    let name = match head.split_once('@') {
        Some((name, to)) => {
            if bot.is_some_and(|bot| !to.eq_ignore_ascii_case(bot)) {
                return Ok(None);
            }
            name
        }
        None => head,
    };
    let args: Vec<&str> = words.collect();
    let name = name.to_ascii_lowercase();
    let command = match name.as_str() {
        "start" | "help" => ChatCommand::Help,
        "workflows" => no_args(&name, &args, ChatCommand::Workflows)?,
        "runs" => no_args(&name, &args, ChatCommand::Runs)?,
        "status" => ChatCommand::Status {
            run: at_most_one_run(&name, &args)?,
        },
        "run" => parse_run(&args)?,
        "approve" | "reject" | "retry" | "skip" | "abort" | "cancel" => {
            let command = match name.as_str() {
                "approve" => Command::Approve,
                "reject" => Command::Reject,
                "retry" => Command::Retry,
                "skip" => Command::Skip,
                "abort" => Command::Abort { mode: None },
                _ => Command::Cancel,
            };
            ChatCommand::Steer {
                run: at_most_one_run(&name, &args)?,
                command,
            }
        }
        "rollback" => parse_rollback(&args)?,
        _ => return Err(BadCommand::Unknown(name)),
    };
    Ok(Some(command))
}

fn no_args(name: &str, args: &[&str], command: ChatCommand) -> Result<ChatCommand, BadCommand> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(BadCommand::NoArguments(name.to_string()))
    }
}

fn at_most_one_run(name: &str, args: &[&str]) -> Result<Option<String>, BadCommand> {
    match args {
        [] => Ok(None),
        [run] => Ok(Some(run.to_string())),
        _ => Err(BadCommand::OneRun(name.to_string())),
    }
}

fn parse_run(args: &[&str]) -> Result<ChatCommand, BadCommand> {
    let Some((workflow, rest)) = args.split_first() else {
        return Err(BadCommand::NoWorkflow);
    };
    let mut subject = None;
    let mut input = Map::new();
    for arg in rest {
        if let Some((key, value)) = arg.split_once('=') {
            let key_ok = key
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !key_ok {
                return Err(BadCommand::BadKey(arg.to_string()));
            }
            let value =
                serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
            input.insert(key.to_string(), value);
        } else if let Some(found) = parse_subject(arg) {
            if subject.is_some() {
                return Err(BadCommand::SecondSubject(arg.to_string()));
            }
            subject = Some(found);
        } else {
            return Err(BadCommand::BadArgument(arg.to_string()));
        }
    }
    Ok(ChatCommand::Run {
        workflow: workflow.to_string(),
        subject,
        input,
    })
}

/// `OWNER/NAME#N`.
fn parse_subject(text: &str) -> Option<Subject> {
    let (repo, number) = text.split_once('#')?;
    let (owner, name) = repo.split_once('/')?;
    let part = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if !part(owner) || !part(name) {
        return None;
    }
    let number = number.parse().ok().filter(|n| *n > 0)?;
    Some(Subject {
        repo: repo.to_string(),
        number,
    })
}

fn parse_rollback(args: &[&str]) -> Result<ChatCommand, BadCommand> {
    let (run, how) = match args {
        [how] => (None, *how),
        [run, how] => (Some(run.to_string()), *how),
        _ => return Err(BadCommand::RollbackHow),
    };
    let command = Command::Rollback(
        how.to_ascii_lowercase()
            .parse::<RollbackRequest>()
            .map_err(BadCommand::Rollback)?,
    );
    Ok(ChatCommand::Steer { run, command })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(text: &str, expected: Result<Option<ChatCommand>, &str>) {
        let got = parse(text, Some("baton_bot"));
        match expected {
            Ok(command) => assert_eq!(got, Ok(command), "{text}"),
            Err(part) => {
                let err = got.expect_err(text);
                assert!(err.to_string().contains(part), "{text}: {err}");
            }
        }
    }

    fn steer(run: Option<&str>, command: Command) -> Option<ChatCommand> {
        Some(ChatCommand::Steer {
            run: run.map(String::from),
            command,
        })
    }

    #[test]
    fn plain_commands() {
        check("/start", Ok(Some(ChatCommand::Help)));
        check("/help@baton_bot", Ok(Some(ChatCommand::Help)));
        check("/help@other_bot", Ok(None));
        check("hello there", Ok(None));
        check("/workflows", Ok(Some(ChatCommand::Workflows)));
        check("/runs", Ok(Some(ChatCommand::Runs)));
        check("/runs x", Err("takes no arguments"));
        check("/status", Ok(Some(ChatCommand::Status { run: None })));
        check(
            "/status run_1",
            Ok(Some(ChatCommand::Status {
                run: Some("run_1".into()),
            })),
        );
        check("/frobnicate", Err("unknown command /frobnicate"));
    }

    #[test]
    fn steering() {
        check("/approve", Ok(steer(None, Command::Approve)));
        check("/APPROVE run_9", Ok(steer(Some("run_9"), Command::Approve)));
        check("/reject", Ok(steer(None, Command::Reject)));
        check("/retry", Ok(steer(None, Command::Retry)));
        check("/skip", Ok(steer(None, Command::Skip)));
        check("/cancel", Ok(steer(None, Command::Cancel)));
        check("/abort", Ok(steer(None, Command::Abort { mode: None })));
        check("/approve a b", Err("at most one run id"));
        check(
            "/rollback soft",
            Ok(steer(None, Command::Rollback(RollbackRequest::Soft))),
        );
        check(
            "/rollback run_1 hard",
            Ok(steer(
                Some("run_1"),
                Command::Rollback(RollbackRequest::Hard),
            )),
        );
        check(
            "/rollback 2",
            Ok(steer(None, Command::Rollback(RollbackRequest::Steps(2)))),
        );
        check("/rollback", Err("needs how"));
        check("/rollback sideways", Err("expected soft, hard"));
        check("/rollback 0", Err("expected soft, hard"));
    }

    #[test]
    fn run_with_subject_and_input() {
        let mut input = Map::new();
        input.insert("count".into(), json!(3));
        input.insert("branch".into(), json!("main"));
        check(
            "/run issue-to-pr octo/hello#12 count=3 branch=main",
            Ok(Some(ChatCommand::Run {
                workflow: "issue-to-pr".into(),
                subject: Some(Subject {
                    repo: "octo/hello".into(),
                    number: 12,
                }),
                input,
            })),
        );
        check(
            "/run@baton_bot hello",
            Ok(Some(ChatCommand::Run {
                workflow: "hello".into(),
                subject: None,
                input: Map::new(),
            })),
        );
        check("/run", Err("needs a workflow"));
        check("/run hello =x", Err("the key must be a name"));
        check("/run hello 1x=2", Err("the key must be a name"));
        check("/run hello junk", Err("expected key=value or OWNER/NAME#N"));
        check("/run hello octo/hello#0", Err("expected key=value"));
        check("/run hello a/b#1 c/d#2", Err("only one OWNER/NAME#N"));
        // Shell text is data: one value, never split or run.
        let mut input = Map::new();
        input.insert("out".into(), json!("x;cmd"));
        input.insert("note".into(), json!("two words; rm -rf ~"));
        check(
            "/run hello out=x;cmd note=\"two words; rm -rf ~\"",
            Ok(Some(ChatCommand::Run {
                workflow: "hello".into(),
                subject: None,
                input,
            })),
        );
        check("/run hello note=\"open", Err("a quote is not closed"));
        check("/run hello x; rm", Err("expected key=value"));
    }
}
