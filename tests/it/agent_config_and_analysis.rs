//! `[agent]` from TOML, and repository analysis on a real repository.

use crate::common_agent::*;
use baton::agent::analyze::analyze;
use baton::agent::{AgentConfig, BackendKind, Issue, IssueInput, Price};

#[test]
fn reads_every_key_of_the_agent_table() {
    let doc = r#"
        [server]
        listen = "127.0.0.1:8080"

        [agent]
        backend = "openai"
        model = "gpt-4o-mini"
        base_url = "http://127.0.0.1:11434/v1"
        max_turns = 30
        max_tokens = 200000
        max_seconds = 600
        max_cost_usd = 2.5
        command = ["my-cli", "--prompt", "{task}"]
        command_env = ["MY_CLI_KEY"]
        fix_rounds = 3
        request_timeout_secs = 60
        max_retries = 5
        command_timeout_secs = 120
        max_output_tokens = 2048

        [agent.prices."gpt-4o-mini"]
        input_per_mtok = 0.15
        output_per_mtok = 0.6
    "#;
    let c = AgentConfig::from_toml(doc).unwrap();
    assert_eq!(c.backend, BackendKind::Openai);
    assert_eq!(c.base_url.as_deref(), Some("http://127.0.0.1:11434/v1"));
    assert_eq!(
        (c.max_turns, c.max_tokens, c.max_seconds, c.fix_rounds),
        (30, 200_000, 600, 3)
    );
    assert_eq!(c.max_cost_usd, Some(2.5));
    assert_eq!(c.command, vec!["my-cli", "--prompt", "{task}"]);
    assert_eq!(
        c.prices["gpt-4o-mini"],
        Price {
            input_per_mtok: 0.15,
            output_per_mtok: 0.6
        }
    );
    assert_eq!(AgentConfig::from_toml("").unwrap(), AgentConfig::default());
}

#[test]
fn bad_agent_tables_are_errors_that_name_the_key() {
    let cases = [
        ("[agent]\nmax_turn = 3\n", "max_turn"),
        ("[agent]\nbackend = \"gpt\"\n", "backend"),
        ("[agent]\nmax_seconds = -1\n", "max_seconds"),
        (
            "[agent.prices.m]\ninput_per_mtok = 1.0\noutput = 2.0\n",
            "output",
        ),
        ("[agent]\nbackend = \"openai\"\n", "agent.model"),
        ("[agent]\nbackend = \"command\"\n", "agent.command"),
        (
            "[agent]\nbackend = \"anthropic\"\nmodel = \"m\"\nmax_cost_usd = 1.0\n",
            "agent.prices",
        ),
        ("[agent]\nmax_turns = 0\n", "agent.max_turns"),
    ];
    for (doc, key) in cases {
        let err = AgentConfig::from_toml(doc).unwrap_err().to_string();
        assert!(err.contains(key), "{doc:?}: {err}");
    }
}

#[tokio::test]
async fn ranks_the_files_an_issue_is_about() {
    let repo = git_repo();
    let root = repo.path();
    std::fs::create_dir_all(root.join("web")).unwrap();
    std::fs::write(
        root.join("web/session.py"),
        "class SessionStore:\n    pass\n\ndef expire_sessions(now):\n    return []\n",
    )
    .unwrap();
    std::fs::write(
        root.join("web/app.ts"),
        "export function renderPage() {}\nexport interface Props {}\n",
    )
    .unwrap();
    std::fs::write(root.join("debug.log"), "expire sessions expire sessions\n").unwrap(); // ignored
    let issue = Issue::parse(&IssueInput {
        title: "Expired sessions are never removed".into(),
        body: "The session store keeps sessions forever; expire_sessions returns nothing.".into(),
        ..IssueInput::default()
    });
    let analysis = analyze(root, &issue).await;
    assert_eq!(analysis.ranked[0].path, "web/session.py");
    assert_eq!(
        analysis.ranked[0].symbols,
        vec!["SessionStore", "expire_sessions"]
    );
    assert!(
        !analysis.files.contains(&"debug.log".to_string()),
        "gitignored files are left out"
    );
    assert_eq!(analysis.file_count, 6);
    assert_eq!(analysis.languages["Python"], 1);
    assert_eq!(analysis.languages["Rust"], 2);
    assert_eq!(analysis.languages["TypeScript"], 1);
    let map = analysis.render();
    assert!(map.contains("- web/session.py (score"), "{map}");

    // A mentioned file wins even without shared words.
    let issue = Issue::parse(&IssueInput {
        title: "Look at web/app.ts".into(),
        body: String::new(),
        ..IssueInput::default()
    });
    assert_eq!(analyze(root, &issue).await.ranked[0].path, "web/app.ts");
}
