//! The `command` backend: an external program changes the working tree; its changes are
//! journaled with their content from before, its environment is scrubbed.

use crate::common;
use crate::own_process;

use std::time::{Duration, Instant};

use crate::common_agent::*;
use baton::agent::{
    Agent, AgentConfig, BackendKind, BudgetKind, CancellationToken, ChangeKind, Error, IssueInput,
    MemoryJournal, Outcome, ProviderEnv, Secret, StopReason,
};

const OPENAI_KEY: &str = "sk-openai-test-value";

/// The variables every test here relies on: secrets the command must not see, and the one
/// `command_env` passes on.
const ENVIRONMENT: &[(&str, &str)] = &[
    ("BATON_ADMIN_THING", "baton-internal"),
    ("GITHUB_TOKEN", "ghp_test"),
    ("SOME_PASSWORD", "hunter2"),
    ("INNOCENT_LOOKING", OPENAI_KEY),
    ("CLI_API_KEY", "for-the-cli"),
    ("PLAIN_SETTING", "plain"),
];

/// The tests here run with [`ENVIRONMENT`] set, in a process of their own.
#[test]
fn in_their_own_process() {
    own_process::run("agent_command::", ENVIRONMENT);
}

fn environment() {
    own_process::assert_in_it("agent_command::");
}

fn command_config(argv: &[&str]) -> AgentConfig {
    AgentConfig {
        command: argv.iter().map(|s| s.to_string()).collect(),
        command_env: vec!["CLI_API_KEY".into()],
        ..config(BackendKind::Command, "")
    }
}

fn provider_env() -> ProviderEnv {
    ProviderEnv {
        openai_api_key: Some(Secret::new(OPENAI_KEY)),
        ..ProviderEnv::default()
    }
}

fn issue() -> IssueInput {
    IssueInput {
        number: Some(9),
        title: "Fix add".into(),
        body: "add() in src/lib.rs subtracts.".into(),
        labels: vec![],
    }
}

#[tokio::test]
#[ignore = "runs in its own process, through agent_command::in_their_own_process"]
async fn task_on_stdin_changes_picked_up_from_the_tree() {
    environment();
    let repo = git_repo();
    // Dirty before the run: its "before" must be the dirty content, not HEAD's.
    std::fs::write(repo.path().join("README.md"), "# dirty\n").unwrap();
    let script = "cat > task.txt; sed -i 's/a - b/a + b/' src/lib.rs; echo '# cleaned' > README.md; rm src/parser.rs; env > env.txt; echo 'changed add'";
    let agent = Agent::new(command_config(&["sh", "-c", script]), &provider_env()).unwrap();
    let journal = MemoryJournal::new();
    let report = agent
        .run(
            repo.path(),
            &issue(),
            &journal,
            &(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        report.outcome,
        Outcome::Finished {
            summary: "changed add".into()
        }
    );

    let task = std::fs::read_to_string(repo.path().join("task.txt")).unwrap();
    assert!(
        task.contains("<untrusted_issue>") && task.contains("add() in src/lib.rs subtracts."),
        "{task}"
    );
    assert!(task.contains("Most relevant files"), "{task}");

    let mut kinds: Vec<(String, String, Option<String>)> = journal
        .changes()
        .iter()
        .map(|c| {
            (
                c.change_type.clone(),
                c.path().to_string(),
                c.change_data["before"].as_str().map(String::from),
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            ("file_create".into(), "env.txt".into(), None),
            ("file_create".into(), "task.txt".into(), None),
            ("file_delete".into(), "src/parser.rs".into(), Some(
                "pub struct Parser;\n\npub fn parse_number(text: &str) -> Option<i64> {\n    text.parse().ok()\n}\n".into()
            )),
            ("file_modify".into(), "README.md".into(), Some("# dirty\n".into())),
            ("file_modify".into(), "src/lib.rs".into(), Some("pub fn add(a: i32, b: i32) -> i32 {\n    a - b\n}\n".into())),
        ]
    );
    let changed: Vec<(&str, ChangeKind)> = report
        .changes
        .iter()
        .map(|c| (c.path.as_str(), c.kind))
        .collect();
    assert!(
        changed.contains(&("src/parser.rs", ChangeKind::Deleted)),
        "{changed:?}"
    );
    assert!(
        changed.contains(&("src/lib.rs", ChangeKind::Modified)),
        "{changed:?}"
    );

    // The sandbox's environment: no tokens, keys, passwords, BATON_*, nor any variable holding
    // a provider key's value, nor the daemon's other settings; only the sandbox's allowlist and
    // the names in agent.command_env.
    let env = std::fs::read_to_string(repo.path().join("env.txt")).unwrap();
    for banned in [
        "BATON_ADMIN_THING",
        "GITHUB_TOKEN",
        "SOME_PASSWORD",
        "INNOCENT_LOOKING",
        OPENAI_KEY,
    ] {
        assert!(
            !env.contains(banned),
            "{banned} reached the command:\n{env}"
        );
    }
    assert!(env.contains("CLI_API_KEY=for-the-cli"), "{env}");
    assert!(!env.contains("PLAIN_SETTING"), "{env}");
    assert!(env.contains("HOME=/home/sandbox"), "{env}");
}

#[tokio::test]
#[ignore = "runs in its own process, through agent_command::in_their_own_process"]
async fn task_as_argument_and_as_file() {
    environment();
    let repo = git_repo();
    let agent = Agent::new(
        command_config(&[
            "sh",
            "-c",
            "printf '%s' \"$1\" > arg.txt; cp \"$2\" file.txt",
            "sh",
            "{task}",
            "{task_file}",
        ]),
        &provider_env(),
    )
    .unwrap();
    let report = agent
        .run(
            repo.path(),
            &issue(),
            &MemoryJournal::new(),
            &(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(report.finished());
    let arg = std::fs::read_to_string(repo.path().join("arg.txt")).unwrap();
    let file = std::fs::read_to_string(repo.path().join("file.txt")).unwrap();
    assert_eq!(arg, file);
    assert!(arg.contains("Fix add"));
    // The task file lived outside the workspace and is gone.
    assert_eq!(report.changes.len(), 2);
}

#[tokio::test]
#[ignore = "runs in its own process, through agent_command::in_their_own_process"]
async fn a_failing_command_is_an_error_and_its_changes_stay_journaled() {
    environment();
    let repo = git_repo();
    let agent = Agent::new(
        command_config(&[
            "sh",
            "-c",
            "echo half > half.txt; echo 'model quota exceeded' >&2; exit 3",
        ]),
        &provider_env(),
    )
    .unwrap();
    let journal = MemoryJournal::new();
    let err = agent
        .run(
            repo.path(),
            &issue(),
            &journal,
            &(),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Command(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("exited with 3: model quota exceeded"),
        "{err}"
    );
    assert_eq!(journal.changes().len(), 1);
    assert!(repo.path().join("half.txt").exists());
}

#[tokio::test]
#[ignore = "runs in its own process, through agent_command::in_their_own_process"]
async fn the_time_budget_kills_the_command() {
    environment();
    let repo = git_repo();
    // The command runs in the sandbox, whose pids are its own: its background child is found
    // by its arguments.
    let secs = format!("30.{}", std::process::id());
    let script = format!("sleep {secs} & setsid sleep {secs} & sleep 30");
    let mut c = command_config(&["sh", "-c", &script]);
    c.max_seconds = 1;
    let agent = Agent::new(c, &provider_env()).unwrap();
    let started = Instant::now();
    let report = agent
        .run(
            repo.path(),
            &issue(),
            &MemoryJournal::new(),
            &(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(
            report.outcome,
            Outcome::Stopped {
                reason: StopReason::Budget {
                    kind: BudgetKind::Time,
                    ..
                }
            }
        ),
        "{:?}",
        report.outcome
    );
    // The kill was sent; dying takes a moment: wait for it, within a bound.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while common::running(&["sleep", &secs]) {
        assert!(
            std::time::Instant::now() < deadline,
            "background child `sleep {secs}` still running"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
#[ignore = "runs in its own process, through agent_command::in_their_own_process"]
async fn fix_rounds_run_the_command_again_with_the_failure() {
    environment();
    let repo = git_repo();
    let mut c = command_config(&["sh", "-c", "cat >> tasks.md; echo ok"]);
    c.fix_rounds = 1;
    let agent = Agent::new(c, &provider_env()).unwrap();
    let journal = MemoryJournal::new();
    let cancel = CancellationToken::new();
    let first = agent
        .run(repo.path(), &issue(), &journal, &(), &cancel)
        .await
        .unwrap();
    let second = agent
        .fix(
            repo.path(),
            &first,
            "error[E0308]: mismatched types",
            &journal,
            &(),
            &cancel,
        )
        .await
        .unwrap();
    assert_eq!(second.round, 1);
    let log = std::fs::read_to_string(repo.path().join("tasks.md")).unwrap();
    assert!(
        log.contains("error[E0308]: mismatched types") && log.contains("fix round 1 of 1"),
        "{log}"
    );
    let kinds: Vec<String> = journal
        .changes()
        .iter()
        .map(|c| c.change_type.clone())
        .collect();
    assert_eq!(kinds, vec!["file_create", "file_modify"]);
    assert_eq!(second.changes.len(), 1);
    assert_eq!(second.changes[0].kind, ChangeKind::Created);
}
