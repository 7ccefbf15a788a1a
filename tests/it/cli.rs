//! The `baton` binary, used as a user would: files, flags, exit codes, a daemon.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::BATON;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn baton(&self, args: &[&str]) -> Output {
        Command::new(BATON)
            .args(args)
            .env("BATON_DATA_DIR", self.data())
            .env_remove("BATON_CONFIG")
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    /// Runs and expects `code`; returns stdout and stderr.
    fn expect(&self, code: i32, args: &[&str]) -> (String, String) {
        let out = self.baton(args);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert_eq!(
            out.status.code(),
            Some(code),
            "baton {args:?}\nstdout: {stdout}\nstderr: {stderr}"
        );
        (stdout, stderr)
    }

    fn json(&self, args: &[&str]) -> Value {
        let (stdout, _) = self.expect(0, args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }
}

fn example() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/release-check.toml"),
    )
    .unwrap()
}

#[test]
fn run_wait_approve_complete() {
    let env = Env::new();
    let wf = env.file("wf.toml", &example());
    let out = env.dir.path().join("out.log");
    let input = format!("out={}", out.display());
    let rec = env.json(&["run", wf.to_str().unwrap(), "--input", &input, "--json"]);
    assert_eq!(rec["status"], "waiting");
    assert_eq!(rec["waiting_for"]["kind"], "approval");
    assert_eq!(rec["waiting_for"]["name"], "approve");
    for key in [
        "id",
        "workflow_id",
        "current_step",
        "state",
        "error_text",
        "started_at",
        "completed_at",
        "steps",
    ] {
        assert!(rec.get(key).is_some(), "run record lacks `{key}`: {rec}");
    }
    let run = rec["id"].as_str().unwrap().to_string();
    assert_eq!(rec["state"]["built"], true);

    // approve continues the run in the foreground.
    let rec = env.json(&["approve", &run, "--json"]);
    assert_eq!(rec["status"], "completed");
    let steps: Vec<(&str, &str)> = rec["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("build", "completed"),
            ("gate", "completed"),
            ("quick", "skipped")
        ]
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "built\n");

    // Inspect.
    let list = env.json(&["runs", "--status", "completed", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let shown = env.json(&["show", &run, "--events", "--json"]);
    let kinds: Vec<&str> = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"run_created"));
    assert_eq!(kinds.last(), Some(&"run_completed"));
    let (text, _) = env.expect(0, &["show", &run]);
    assert!(text.contains("completed    build"), "{text}");

    // Wrong state: nothing changes, exit 2.
    let (_, err) = env.expect(2, &["approve", &run]);
    assert!(
        err.contains("is completed") && err.contains("nothing was changed"),
        "{err}"
    );
    let (_, err) = env.expect(2, &["retry", &run]);
    assert!(err.contains("nothing was changed"), "{err}");
    let (_, err) = env.expect(2, &["show", "run_doesnotexist"]);
    assert!(err.contains("unknown run `run_doesnotexist`"), "{err}");
    let again = env.json(&["show", &run, "--events", "--json"]);
    assert_eq!(again["events"], shown["events"]);

    // The stored workflow can be run by id now.
    let (_, err) = env.expect(
        0,
        &[
            "run",
            "release-check",
            "--input",
            &input,
            "--input",
            "level=quick",
            "--detach",
        ],
    );
    assert!(err.contains("started"), "{err}");
}

#[test]
fn failing_steps_exit_1_and_can_be_retried_and_skipped() {
    let env = Env::new();
    let flag = env.dir.path().join("flag");
    let wf = env.file(
        "wf.toml",
        &format!(
            r#"
id = "picky"
[[steps]]
id = "check"
action = "shell"
with = {{ run = "test -f {flag}" }}
on_failure = "pause"
[[steps]]
id = "after"
action = "shell"
with = {{ run = "exit 1" }}
"#,
            flag = flag.display()
        ),
    );
    let (_, err) = env.expect(0, &["run", wf.to_str().unwrap()]);
    assert!(
        err.contains("waits for a person") && err.contains("baton retry"),
        "{err}"
    );
    let run = env.json(&["runs", "--json"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(&flag, "").unwrap();
    // retry: check passes now; `after` fails and aborts the run.
    let (_, err) = env.expect(1, &["retry", &run]);
    assert!(err.contains("run failed: step `after` failed"), "{err}");
    let rec = env.json(&["show", &run, "--json"]);
    assert_eq!(rec["steps"][0]["attempts"], 2);
    // A failed run's failed step can be skipped: the run completes.
    env.expect(0, &["skip", &run]);
    assert_eq!(env.json(&["show", &run, "--json"])["status"], "completed");
}

#[test]
fn bad_input_is_a_clear_error_and_writes_nothing() {
    let env = Env::new();
    let head = "id = \"x\"\n";
    let step = "[[steps]]\nid = \"a\"\naction = \"shell\"\nwith = { run = \"true\" }\n";
    let cases: Vec<(String, &str)> = vec![
        (format!("{head}[[steps]\n"), "line 2, column"),
        (format!("{head}colour = \"red\"\n{step}"), "unknown field `colour`"),
        (format!("{head}{step}{step}"), "duplicate step id `a`"),
        (format!("{head}{step}next = [{{ when = \"true\", goto = \"nowhere\" }}]\n"), "unknown step `nowhere`"),
        (format!("{head}[[steps]]\nid = \"a\"\naction = \"teleport\"\n"), "unknown action `teleport`"),
        (format!("{head}[[steps]]\nid = \"a\"\naction = \"shell\"\nwith = {{ run = \"{{{{ input.x \" }}\n"), "step `a`: with"),
        (format!("{head}{step}timeout = \"fortnight\"\n"), "bad duration `fortnight`"),
        (format!("{head}{step}wait = {{ signal = \"go\" }}\n"), "both `action` and `wait`"),
        (format!("{head}{step}retry = \"forgee\"\n"), "step `a`: retry: unknown retry policy `forgee` (known: `forge`, `git`, `agent`"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = env.file(&format!("bad{i}.toml"), text);
        let (_, err) = env.expect(2, &["validate", path.to_str().unwrap()]);
        assert!(
            err.contains(want) && err.contains(&format!("bad{i}.toml")),
            "case {i}: `{err}` lacks `{want}`"
        );
        let (_, err) = env.expect(2, &["run", path.to_str().unwrap()]);
        assert!(err.contains(want), "case {i}: {err}");
    }
    let wf = env.file("ok.toml", &example());
    let (_, err) = env.expect(2, &["run", wf.to_str().unwrap()]);
    assert!(err.contains("missing required input `out`"), "{err}");
    let (_, err) = env.expect(2, &["run", wf.to_str().unwrap(), "--input", "out"]);
    assert!(err.contains("KEY=VALUE"), "{err}");
    let (_, err) = env.expect(2, &["run", "no-such-workflow"]);
    assert!(err.contains("unknown workflow `no-such-workflow`"), "{err}");
    let (_, err) = env.expect(2, &["rollback", "run_x"]);
    assert!(err.contains("--soft, --hard or --steps"), "{err}");
    env.expect(2, &["frobnicate"]);
    let (out, _) = env.expect(0, &["validate", wf.to_str().unwrap()]);
    assert!(
        out.contains("ok (workflow `release-check`, 3 steps)"),
        "{out}"
    );
    let named = env.file("named.toml", &format!("{head}{step}retry = \"git\"\n"));
    let (out, _) = env.expect(0, &["validate", named.to_str().unwrap()]);
    assert!(out.contains("ok (workflow `x`, 1 steps)"), "{out}");
    // Nothing was written by any of it.
    assert_eq!(env.json(&["runs", "--json"]), Value::Array(vec![]));
}

#[test]
fn workflows_are_found_in_workflow_dirs_and_config_errors_name_the_key() {
    let env = Env::new();
    std::fs::create_dir_all(env.dir.path().join("workflows")).unwrap();
    env.file("workflows/hello.toml", "id = \"hello\"\ndescription = \"says hi\"\n[[steps]]\nid = \"hi\"\naction = \"log\"\nwith = { message = \"hi\" }\n");
    let (out, _) = env.expect(0, &["workflows"]);
    assert!(out.contains("hello") && out.contains("says hi"), "{out}");
    env.expect(0, &["run", "hello"]);
    env.file("config.toml", "[engine]\nmax_transitionz = 3\n");
    let (_, err) = env.expect(2, &["runs"]);
    assert!(
        err.contains("config.toml") && err.contains("max_transitionz"),
        "{err}"
    );
}
