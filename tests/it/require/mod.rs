//! What a test does when a peer (Prism, the webhook examples) or a toolchain (pytest, node,
//! bwrap, …) it needs is missing: it fails, naming what is missing and how `scripts/test.sh`
//! installs it. Only outside CI, with `BATON_ALLOW_SKIP=1`, may it skip, and then it says so
//! loudly. A plain `cargo test` therefore never reports a test that did not run as passed.
#![allow(dead_code)]

/// Reports that `what` is missing for the running test (named after its thread, as the test
/// harness names them); `install` says how `scripts/test.sh` gets it. Panics unless skipping
/// is allowed; returns (and the caller returns) only when it is.
pub fn missing(what: &str, install: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let allowed = std::env::var("BATON_ALLOW_SKIP").is_ok_and(|v| v == "1");
    let message = format!("{test}: {what} is missing; `scripts/test.sh` installs it ({install})");
    if ci || !allowed {
        panic!(
            "{message}. {}",
            if ci {
                "Under CI a missing peer is a failure."
            } else {
                "Run scripts/test.sh, or set BATON_ALLOW_SKIP=1 to skip on purpose."
            }
        );
    }
    eprintln!("\n*** SKIPPED {message} ***\n");
}

/// Whether `program` is on PATH; if not, [`missing`] (which fails unless skipping is allowed).
pub fn program(program: &str, install: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v '{program}'")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        missing(&format!("`{program}`"), install);
    }
    found
}

/// Whether Python can import pytest; if not, [`missing`].
pub fn pytest() -> bool {
    let found = std::process::Command::new("python3")
        .args(["-c", "import pytest"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        missing(
            "pytest (python3 -c 'import pytest' fails)",
            "scripts/install-test-deps.sh: pip install pytest",
        );
    }
    found
}

/// How `scripts/test.sh` installs the npm peers.
pub const NPM_PEERS: &str = "scripts/install-test-deps-npm.sh: npm install into .peers/";
/// How `scripts/test.sh` installs bubblewrap.
pub const BWRAP: &str = "scripts/install-test-deps.sh: apt-get install bubblewrap";

/// A directory of links to every program on `PATH` but `bwrap`: as `PATH`, it takes bubblewrap
/// away from a process and leaves everything else where it was.
pub fn path_without_bwrap() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = std::env::var_os("PATH").unwrap_or_default();
    for entry in std::env::split_paths(&path) {
        let Ok(read) = std::fs::read_dir(&entry) else {
            continue;
        };
        for e in read.flatten() {
            let name = e.file_name();
            if name == "bwrap" || dir.path().join(&name).exists() {
                continue;
            }
            let _ = std::os::unix::fs::symlink(e.path(), dir.path().join(&name));
        }
    }
    dir
}
