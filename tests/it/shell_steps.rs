//! Operator `shell` steps through the real binary, with secrets in baton's environment: a
//! step sees the allowlist and what it names in `pass_env`, never another secret; a named
//! variable baton lacks fails the step, naming it; a step that asks for the sandbox runs in
//! bubblewrap (its workspace writable, nothing else of the host's, no process of the host's
//! visible), and where none is available is refused rather than run on the host.

use crate::require;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::BATON;

const UNDECLARED: (&str, &str) = ("SHELL_STEPS_UNDECLARED_TOKEN", "undeclared-7d1f03aa");
const DECLARED: (&str, &str) = ("SHELL_STEPS_DECLARED_TOKEN", "declared-c41e9b52");

fn run(dir: &Path, name: &str, workflow: &str) -> (Output, Value) {
    run_with_path(dir, name, workflow, None)
}

/// [`run`] with `PATH` set to `path`.
fn run_with_path(dir: &Path, name: &str, workflow: &str, path: Option<&Path>) -> (Output, Value) {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, workflow).unwrap();
    let mut cmd = Command::new(BATON);
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    let out = cmd
        .args(["run", file.to_str().unwrap(), "--json"])
        .env("BATON_DATA_DIR", dir.join("data"))
        .env_remove("BATON_CONFIG")
        .env(UNDECLARED.0, UNDECLARED.1)
        .env(DECLARED.0, DECLARED.1)
        .env("GITHUB_TOKEN", "ghp_forge-token-9e0b7c")
        .current_dir(dir)
        .output()
        .unwrap();
    let view = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, view)
}

#[test]
fn a_shell_step_gets_what_it_names_and_no_other_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("ran");
    let (out, view) = run(
        tmp.path(),
        "show",
        &format!(
            "id = \"show\"\n[[steps]]\nid = \"show\"\naction = \"shell\"\npass_env = [\"{d}\"]\n\
             with = {{ run = \"env; tr '\\\\0' '\\\\n' < /proc/$PPID/environ; [ \\\"${d}\\\" = '{v}' ] && echo declared-arrived\", env = {{ LITERAL = \"kept\" }} }}\n",
            d = DECLARED.0,
            v = DECLARED.1
        ),
    );
    assert_eq!(out.status.code(), Some(0), "{view}");
    let stdout = view["steps"][0]["output"]["stdout"].as_str().unwrap();
    for secret in [UNDECLARED.1, "ghp_forge-token-9e0b7c", DECLARED.1] {
        assert!(
            !stdout.contains(secret),
            "`{secret}` reached the output:\n{stdout}"
        );
    }
    assert!(!stdout.contains(UNDECLARED.0), "{stdout}");
    assert!(stdout.contains("declared-arrived\n"), "{stdout}");
    // The declared value is in the step's environment, and out of what is stored.
    assert!(
        stdout.contains(&format!("{}=[{}]\n", DECLARED.0, DECLARED.0)),
        "{stdout}"
    );
    assert!(stdout.contains("LITERAL=kept\n"), "{stdout}");
    assert!(
        stdout.contains("\nPATH=") || stdout.starts_with("PATH="),
        "{stdout}"
    );

    // Named, and baton has no value: the step fails naming it; the command never runs.
    let (out, view) = run(
        tmp.path(),
        "needs",
        &format!(
            "id = \"needs\"\n[[steps]]\nid = \"needs\"\naction = \"shell\"\npass_env = [\"SHELL_STEPS_NOWHERE\"]\n\
             with = {{ run = \"touch {}\" }}\n",
            marker.display()
        ),
    );
    assert_eq!(out.status.code(), Some(1), "{view}");
    let error = view["steps"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("`pass_env` names `SHELL_STEPS_NOWHERE`, and baton has no value for it"),
        "{error}"
    );
    assert!(!marker.exists());

    // Asks for the sandbox: runs in bubblewrap, where only its own workspace is the host's
    // and writable, and no process of the host (baton included) is visible.
    if !require::program("bwrap", require::BWRAP) {
        return;
    }
    let boxed = format!(
        "id = \"boxed\"\n[[steps]]\nid = \"boxed\"\naction = \"shell\"\nsandbox = true\n\
         with = {{ run = \"ls /proc | grep -c '^[0-9]' > procs.txt; cat /proc/*/environ > environ.txt; touch {}\" }}\n",
        marker.display()
    );
    let (out, view) = run(tmp.path(), "boxed", &boxed);
    assert_eq!(out.status.code(), Some(0), "{view}");
    // The marker's path exists inside only as part of the sandbox's private /tmp.
    assert!(
        !marker.exists(),
        "a sandbox step wrote outside its workspace"
    );
    let workspace = std::fs::read_dir(tmp.path().join("data/workspaces"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("procs.txt").exists())
        .expect("the step wrote into its workspace");
    let procs: usize = std::fs::read_to_string(workspace.join("procs.txt"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(procs < 10, "{procs} processes visible in the sandbox");
    let environ = std::fs::read_to_string(workspace.join("environ.txt")).unwrap();
    for secret in [UNDECLARED.1, DECLARED.1, "ghp_forge-token-9e0b7c"] {
        assert!(!environ.contains(secret), "{environ}");
    }

    // bwrap off PATH: refused, not run on the host.
    let no_bwrap = require::path_without_bwrap();
    let (out, view) = run_with_path(tmp.path(), "boxed", &boxed, Some(no_bwrap.path()));
    assert_eq!(out.status.code(), Some(1), "{view}");
    let error = view["steps"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("this step asks for the sandbox (`sandbox = true`), and none is available")
            && error.contains("bwrap is not installed"),
        "{error}"
    );
    assert!(!marker.exists(), "a sandbox step ran on the host");
}

/// A run's input reaches a `shell` step as data: `BATON_INPUT_<NAME>` holds `x; touch pwned`
/// and nothing runs it; `baton validate` warns about a `run` that splices an input into its
/// text, and the shipped examples do not.
#[test]
fn inputs_reach_shell_steps_as_variables_never_as_shell_text() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("inputs.toml");
    std::fs::write(
        &file,
        "id = \"inputs\"\n[input]\nout = { required = true }\nmax-count = { default = 3 }\n\
         [[steps]]\nid = \"write\"\naction = \"shell\"\n\
         with = { run = \"printf '%s|%s' \\\"$BATON_INPUT_OUT\\\" \\\"$BATON_INPUT_MAX_COUNT\\\"\" }\n",
    )
    .unwrap();
    let out = Command::new(BATON)
        .args(["run", file.to_str().unwrap(), "--json", "--input"])
        .arg("out=x; touch pwned")
        .env("BATON_DATA_DIR", tmp.path().join("data"))
        .env_remove("BATON_CONFIG")
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stdout = view["steps"][0]["output"]["stdout"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(stdout, "x; touch pwned|3", "{view}");
    let pwned = walk(tmp.path()).into_iter().find(|p| p.ends_with("pwned"));
    assert!(pwned.is_none(), "the input ran: {pwned:?}");

    let spliced = tmp.path().join("spliced.toml");
    std::fs::write(
        &spliced,
        "id = \"spliced\"\n[input]\nout = { required = true }\n[[steps]]\nid = \"build\"\naction = \"shell\"\n\
         with = { run = \"echo built >> {{ input.out }}\" }\n\
         compensate = { action = \"shell\", with = { run = \"rm {{ input.out | shell_quote }}\" } }\n",
    )
    .unwrap();
    let out = Command::new(BATON)
        .args(["validate", spliced.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr.matches("warning:").count(), 1, "{stderr}");
    assert!(
        stderr.contains("step `build`")
            && stderr.contains("{{ input.out }}")
            && stderr.contains("\"$BATON_INPUT_OUT\""),
        "{stderr}"
    );
    for example in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples")).unwrap() {
        let path = example.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let out = Command::new(BATON)
            .arg("validate")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("warning:"), "{}: {stderr}", path.display());
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}
