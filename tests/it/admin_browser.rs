//! The admin UI in a real headless browser: `tests/browser/admin_ui.js` drives Debian's
//! chromium with playwright-core against a `baton serve` started here. It logs in (a wrong
//! token first), watches a new run appear on the dashboard and go from running to waiting on
//! its page, is refused a POST without the CSRF token, approves the run and sees it complete,
//! retries a failed run, all without a reload, and checks a phone-sized viewport. Screenshots
//! go to `target/ui-screenshots/`.
//!
//! Needs `chromium` (scripts/install-test-deps.sh), node and playwright-core in the npm peers
//! (scripts/install-test-deps-npm.sh); without them it fails, naming what is missing.

use crate::require;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::BATON;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn peers_dir() -> PathBuf {
    std::env::var_os("BATON_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".peers"))
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        Some(path)
    } else {
        require::missing(
            &format!("chromium ({})", path.display()),
            "scripts/install-test-deps.sh: apt-get install chromium",
        );
        None
    }
}

fn start(data: &Path) -> (Daemon, String, String) {
    let _ = std::fs::remove_file(data.join("baton.addr"));
    let child = Command::new(BATON)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("BATON_DATA_DIR", data)
        .env_remove("BATON_ADMIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(addr) = std::fs::read_to_string(data.join("baton.addr")) {
            let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
            return (
                daemon,
                format!("http://{}", addr.trim()),
                token.trim().to_string(),
            );
        }
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_admin_ui_in_a_real_browser() {
    let Some(chromium) = chromium() else { return };
    if !require::program(
        "node",
        "scripts/install-test-deps.sh: apt-get install nodejs",
    ) {
        return;
    }
    let modules = peers_dir().join("node_modules");
    if !modules.join("playwright-core/package.json").exists() {
        require::missing("playwright-core", require::NPM_PEERS);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let flags = tmp.path().join("flags");
    std::fs::create_dir_all(&flags).unwrap();
    let (_daemon, base, token) = start(&tmp.path().join("data"));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shots = root.join("target/ui-screenshots");
    let out = Command::new("node")
        .arg(root.join("tests/browser/admin_ui.js"))
        .env("NODE_PATH", &modules)
        .env("BATON_URL", &base)
        .env("BATON_TOKEN", &token)
        .env("FLAGS_DIR", &flags)
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&token, "<token>");
    println!("{stdout}");
    eprintln!(
        "{}",
        stdout
            .lines()
            .filter(|l| l.starts_with("latency"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    for case in [
        "a wrong token is refused",
        "a new run appears on the open dashboard",
        "from running to waiting live",
        "without the CSRF token is refused",
        "saw it complete live",
        "retried a failed run",
        "without horizontal scrolling",
    ] {
        assert!(
            stdout.contains(case),
            "case `{case}` did not run:\n{stdout}"
        );
    }
    assert!(shots.join("run-phone.png").exists());
}
