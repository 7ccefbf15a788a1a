//! What a `shell` step can see of the daemon: the allowlist, baton's own variables, what the
//! step names in `pass_env` (through the app's lookup), and nothing else; and the sandbox it
//! asks for, or a refusal.
//!
//! Its test sets variables in the process's environment, which is safe only while no other
//! thread reads it: it runs in a process of its own (`own_process`).

use crate::own_process;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_actors::shell::{shell_with, ShellPolicy, ShellSandbox};
use baton_actors::{Definition, Engine, RunRecord, RunStatus, StepDef};
use serde_json::{json, Map};

/// In the daemon's environment, named by no step.
const UNDECLARED: (&str, &str) = ("SHELL_TEST_UNDECLARED_TOKEN", "undeclared-secret-4f1c9a");
/// Named by the step; the app's lookup has its value (the environment's differs).
const DECLARED: (&str, &str) = ("SHELL_TEST_DECLARED_TOKEN", "declared-secret-77b2e0");
const DECLARED_IN_ENV: &str = "declared-but-read-from-env-not-the-lookup";

/// What a sandbox was given: the script, the directory, the environment.
type Given = (String, String, Vec<(String, String)>);

/// A sandbox that runs the script with `sh -c`, in `dir`, with exactly the environment it is
/// given plus a mark, and records what it was given.
struct RecordingSandbox {
    given: Mutex<Vec<Given>>,
}

impl ShellSandbox for RecordingSandbox {
    fn command(
        &self,
        script: &str,
        workspace: &Path,
        dir: &Path,
        mut env: Vec<(String, String)>,
    ) -> Result<(tokio::process::Command, Box<dyn std::any::Any + Send>), String> {
        assert!(
            dir.starts_with(workspace),
            "{dir:?} is outside {workspace:?}"
        );
        self.given.lock().unwrap().push((
            script.to_string(),
            dir.display().to_string(),
            env.clone(),
        ));
        env.push(("IN_TEST_SANDBOX".into(), "1".into()));
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .current_dir(dir)
            .env_clear()
            .envs(env);
        Ok((cmd, Box::new(())))
    }
}

/// A sandbox that cannot run anything, and says why.
struct BrokenSandbox;

impl ShellSandbox for BrokenSandbox {
    fn command(
        &self,
        _: &str,
        _: &Path,
        _: &Path,
        _: Vec<(String, String)>,
    ) -> Result<(tokio::process::Command, Box<dyn std::any::Any + Send>), String> {
        Err("bwrap cannot create a user namespace here".into())
    }
}

fn policy(sandbox_all: bool, sandbox: Option<Arc<dyn ShellSandbox>>) -> ShellPolicy {
    let secrets: HashMap<String, String> = [(DECLARED.0.to_string(), DECLARED.1.to_string())]
        .into_iter()
        .collect();
    ShellPolicy {
        lookup: Arc::new(move |name| secrets.get(name).cloned()),
        sandbox_all,
        sandbox,
        ..ShellPolicy::default()
    }
}

async fn run_one(engine: &Engine, step: StepDef) -> RunRecord {
    let def = Definition::builder("shell-env").step(step).build();
    engine.register_workflow(def, "test").await.unwrap();
    let run = engine.start("shell-env", Map::new(), None).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), engine.settled(&run))
        .await
        .expect("the run settles")
        .unwrap()
}

fn error(rec: &RunRecord) -> String {
    assert_eq!(rec.status, RunStatus::Failed, "{rec:?}");
    rec.steps[0].error.clone().unwrap_or_default()
}

/// The test below sets secrets in this process's environment: it runs in a process of its own.
#[test]
fn the_environment_test_runs_in_its_own_process() {
    own_process::run(OWN, &[]);
}

const OWN: &str =
    "shell_env::a_shell_step_sees_the_allowlist_and_what_it_names_and_a_sandbox_step_never_runs_on_the_host";

#[test]
#[ignore = "runs in its own process, through shell_env::the_environment_test_runs_in_its_own_process"]
fn a_shell_step_sees_the_allowlist_and_what_it_names_and_a_sandbox_step_never_runs_on_the_host() {
    own_process::assert_in_it(OWN);
    // The daemon holds secrets in its environment, as baton does once it has read them (not
    // in the environment it was started with, which `/proc/<pid>/environ` shows: the daemon
    // re-executes itself without them).
    std::env::set_var(UNDECLARED.0, UNDECLARED.1);
    std::env::set_var(DECLARED.0, DECLARED_IN_ENV);
    std::env::set_var("LC_SHELL_TEST", "allowlisted-by-prefix");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(body());
}

async fn body() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), Default::default()).await.unwrap();
    engine.register_action("shell", shell_with(policy(false, None)));
    let marker = dir.path().join("ran");

    // On the host: the allowlist, baton's variables, the declared one, the literal ones.
    let script = format!(
        "env; echo ---; tr '\\0' '\\n' < /proc/$PPID/environ; echo ---; \
         [ \"${d}\" = '{v}' ] && echo declared-arrived; echo \"$PPID\"",
        d = DECLARED.0,
        v = DECLARED.1
    );
    let rec = run_one(
        &engine,
        StepDef::action("show", "shell")
            .with("run", script.as_str())
            .with("env", json!({ "LITERAL": "as-written" }))
            .pass_env(DECLARED.0),
    )
    .await;
    assert_eq!(rec.status, RunStatus::Completed, "{rec:?}");
    let out = rec.steps[0].output["stdout"].as_str().unwrap().to_string();
    let (own_env, rest) = out.split_once("---\n").unwrap();
    let (parent_env, tail) = rest.split_once("---\n").unwrap();
    assert!(
        !out.contains(UNDECLARED.1),
        "an undeclared secret reached the step:\n{out}"
    );
    assert!(!own_env.contains(UNDECLARED.0), "{own_env}");
    assert!(
        !parent_env.contains(UNDECLARED.1) && !parent_env.contains(DECLARED.1),
        "the daemon's /proc environ shows a secret:\n{parent_env}"
    );
    // The parent the step reads is this process, the daemon.
    assert!(
        tail.ends_with(&format!("{}\n", std::process::id())),
        "{tail}"
    );
    assert!(tail.starts_with("declared-arrived\n"), "{tail}");
    // The declared value arrived from the lookup, and is kept out of the stored output.
    assert!(
        own_env.contains(&format!("{}=[{}]\n", DECLARED.0, DECLARED.0)),
        "{own_env}"
    );
    assert!(!out.contains(DECLARED_IN_ENV), "{out}");
    let names: Vec<&str> = own_env
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    for wanted in [
        "PATH",
        "LC_SHELL_TEST",
        "LITERAL",
        "BATON_RUN_ID",
        "BATON_WORKSPACE",
    ] {
        assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
    }
    for name in &names {
        let expected = ShellPolicy::default().allowlist.iter().any(|a| {
            a == name || a.strip_suffix('*').is_some_and(|p| name.starts_with(p))
        }) || name.starts_with("BATON_")
            || [DECLARED.0, "LITERAL"].contains(name)
            // What sh sets for itself.
            || ["PWD", "SHLVL", "_", "OLDPWD"].contains(name);
        assert!(expected, "`{name}` reached the step, and nothing lets it");
    }
    assert!(own_env.contains("LITERAL=as-written\n"), "{own_env}");
    assert!(
        own_env.contains("LC_SHELL_TEST=allowlisted-by-prefix\n"),
        "{own_env}"
    );

    // Named, without a value: the step fails naming it, and its command never runs.
    let rec = run_one(
        &engine,
        StepDef::action("needs", "shell")
            .with("run", format!("touch {}", marker.display()))
            .pass_env("SHELL_TEST_NOT_SET_ANYWHERE"),
    )
    .await;
    let err = error(&rec);
    assert!(
        err.contains("`pass_env` names `SHELL_TEST_NOT_SET_ANYWHERE`, and baton has no value"),
        "{err}"
    );
    assert!(!marker.exists(), "the command ran without its variable");

    // Asks for the sandbox, none installed: refused, not run on the host.
    let rec = run_one(
        &engine,
        StepDef::action("boxed", "shell")
            .with("run", format!("touch {}", marker.display()))
            .sandbox(true),
    )
    .await;
    let err = error(&rec);
    assert!(
        err.contains("this step asks for the sandbox (`sandbox = true`), and none is available: this baton has no sandbox"),
        "{err}"
    );
    assert!(!marker.exists(), "a sandbox step ran on the host");

    // A sandbox that cannot run: its reason is the step's error.
    engine.register_action(
        "shell",
        shell_with(policy(false, Some(Arc::new(BrokenSandbox)))),
    );
    let rec = run_one(
        &engine,
        StepDef::action("boxed", "shell")
            .with("run", format!("touch {}", marker.display()))
            .sandbox(true),
    )
    .await;
    let err = error(&rec);
    assert!(
        err.contains("none is available: bwrap cannot create a user namespace here"),
        "{err}"
    );
    assert!(!marker.exists(), "a sandbox step ran on the host");

    // The policy puts every step in the sandbox, which gets the same environment.
    let sandbox = Arc::new(RecordingSandbox {
        given: Mutex::new(Vec::new()),
    });
    engine.register_action("shell", shell_with(policy(true, Some(sandbox.clone()))));
    let rec = run_one(
        &engine,
        StepDef::action("all", "shell")
            .with("run", "echo \"inside=$IN_TEST_SANDBOX\"; pwd")
            .with("dir", "sub")
            .pass_env(DECLARED.0),
    )
    .await;
    assert_eq!(rec.status, RunStatus::Completed, "{rec:?}");
    let out = rec.steps[0].output["stdout"].as_str().unwrap();
    assert!(
        out.starts_with("inside=1\n") && out.ends_with("/sub\n"),
        "{out}"
    );
    let (script, sub, env) = sandbox.given.lock().unwrap()[0].clone();
    assert_eq!(script, "echo \"inside=$IN_TEST_SANDBOX\"; pwd");
    assert!(sub.ends_with("/sub"), "{sub}");
    assert!(env.contains(&(DECLARED.0.to_string(), DECLARED.1.to_string())));
    assert!(env
        .iter()
        .all(|(k, v)| k != UNDECLARED.0 && v != UNDECLARED.1));
    assert!(env.iter().any(|(k, _)| k == "BATON_RUN_ID"));
    engine.shutdown().await.unwrap();
}
