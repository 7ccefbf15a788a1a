//! Tests that change process-wide state (the environment, the sandbox's settings) in a
//! process of their own. Shared by baton's and the engine's test binaries.

use std::process::{Command, Stdio};

/// Names, in the environment of a child test process, the tests it was started to run.
const OWN_PROCESS: &str = "BATON_TEST_OWN_PROCESS";

/// Runs the ignored tests whose names contain `filter` in a child process of this test binary,
/// with `env` added to its environment, and fails with their output if one fails or none ran.
///
/// All the integration tests share one process, so a test that changes process-wide state (the
/// environment, the sandbox's settings) would change it under every other test. Such tests are
/// `#[ignore]`d in the shared run and start with [`assert_in_it`]; one ordinary test runs
/// them here, where what they change is theirs alone.
pub fn run(filter: &str, env: &[(&str, &str)]) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .args([filter, "--ignored", "--test-threads=2", "--color=never"])
        .env(OWN_PROCESS, filter)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("the test binary starts again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ran = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test result: "))
        .filter_map(|l| {
            l.split(". ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum::<usize>();
    assert!(
        out.status.success() && ran > 0,
        "the tests matching `{filter}`, in their own process, {}:\n{stdout}\n{stderr}",
        if ran == 0 { "did not run" } else { "failed" }
    );
}

/// The first line of a test that [`run`] runs: it fails, naming the way to run it,
/// when the test is run in the shared process (`--include-ignored`).
pub fn assert_in_it(filter: &str) {
    assert_eq!(
        std::env::var(OWN_PROCESS).ok().as_deref(),
        Some(filter),
        "this test changes process-wide state: it runs in its own process, through the test that \
         calls own_process::run({filter:?})"
    );
}
