//! Built-in workflows cannot be replaced: through the API (400) or from a file (exit 2: `baton
//! run`, `baton validate`, and `baton serve` with one in `workflow_dirs`). Every definition is
//! listed with how it came in (API JSON and `baton workflows`), kept across restarts.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::common_daemon::Daemon;
use crate::BATON;

const BUILT_INS: [&str; 5] = [
    "issue_to_pr",
    "pr_review",
    "bug_triage",
    "release_notes",
    "revise",
];

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn baton(data: &Path, config: &Path, args: &[&str]) -> Output {
    Command::new(BATON)
        .args(args)
        .env("BATON_DATA_DIR", data)
        .env("BATON_CONFIG", config)
        .output()
        .unwrap()
}

fn expect(out: Output, code: i32) -> (String, String) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    (stdout, stderr)
}

/// The entry of `id` in `GET /api/workflows`.
async fn listed(daemon: &Daemon, id: &str) -> Value {
    let list = daemon.get_json("/api/workflows").await;
    list.as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == id)
        .unwrap_or_else(|| panic!("{id} is not in {list}"))
        .clone()
}

/// The line of `id` in `baton workflows`.
fn line_of(listing: &str, id: &str) -> String {
    listing
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .unwrap_or_else(|| panic!("{id} is not in:\n{listing}"))
        .to_string()
}

/// A definition whose one step would leave `marker` behind.
fn replacement(id: &str, marker: &Path) -> Value {
    json!({ "id": id, "steps": [
        { "id": "own", "action": "shell", "with": { "run": format!("touch {}", marker.display()) } }
    ] })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_ins_cannot_be_replaced_and_every_definition_says_how_it_came_in() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dirs = tmp.path().join("workflows");
    std::fs::create_dir_all(&dirs).unwrap();
    let config = tmp.path().join("config.toml");
    std::fs::write(
        &config,
        format!("workflow_dirs = [{:?}]\n", dirs.display().to_string()),
    )
    .unwrap();
    let marker = tmp.path().join("replaced");
    let daemon = Daemon::start(&data, &config);
    let shipped = listed(&daemon, "pr_review").await;
    assert_eq!(shipped["provenance"]["via"], "builtin", "{shipped}");
    assert_eq!(shipped["registered"], "built in");

    // Through the API: 400, naming the id, for every built-in; nothing replaced.
    for id in BUILT_INS {
        let (status, body) = daemon
            .post(
                "/api/runs",
                json!({ "workflow": id, "definition": replacement(id, &marker), "input": {} }),
            )
            .await;
        assert_eq!(status, 400, "{id}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&format!(
                "workflow id `{id}` is a built-in workflow's, and built-ins cannot be replaced"
            )),
            "{error}"
        );
    }
    assert_eq!(listed(&daemon, "pr_review").await, shipped);

    // An own definition through the API: recorded with the client's address and the time.
    let before = now_ms();
    let run = daemon
        .start_run(&json!({ "id": "mine", "steps": [ { "id": "a", "action": "noop" } ] }))
        .await;
    assert!(run.starts_with("run_"), "{run}");
    let mine = listed(&daemon, "mine").await;
    let provenance = &mine["provenance"];
    assert_eq!(provenance["via"], "api", "{mine}");
    let client = provenance["client"].as_str().unwrap();
    assert!(client.starts_with("127.0.0.1:"), "{mine}");
    let at = provenance["at"].as_u64().unwrap();
    assert!(at >= before && at <= now_ms(), "{mine}");
    let registered = mine["registered"].as_str().unwrap().to_string();
    assert!(
        registered.starts_with(&format!("api from {client} (workflow mine), 20")),
        "{registered}"
    );
    // `baton workflows`, through the daemon, says the same.
    let (listing, _) = expect(baton(&data, &config, &["workflows"]), 0);
    assert!(
        line_of(&listing, "mine").ends_with(&format!("[{registered}]")),
        "{listing}"
    );
    assert!(
        line_of(&listing, "pr_review").ends_with("[built in]"),
        "{listing}"
    );

    // From a file: `baton run` (to the daemon) and `baton validate` exit 2, naming the file.
    let file = tmp.path().join("evil.toml");
    std::fs::write(
        &file,
        format!(
            "id = \"pr_review\"\n[[steps]]\nid = \"own\"\naction = \"shell\"\nwith = {{ run = \"touch {}\" }}\n",
            marker.display()
        ),
    )
    .unwrap();
    for args in [
        ["run", file.to_str().unwrap()],
        ["validate", file.to_str().unwrap()],
    ] {
        let (_, err) = expect(baton(&data, &config, &args), 2);
        assert!(
            err.contains(&format!(
                "{}: workflow id `pr_review` is a built-in workflow's",
                file.display()
            )),
            "{args:?}: {err}"
        );
    }
    assert_eq!(listed(&daemon, "pr_review").await, shipped);

    // Kept: a restarted daemon lists the same registration.
    drop(daemon);
    let daemon = Daemon::start(&data, &config);
    assert_eq!(listed(&daemon, "mine").await["provenance"], *provenance);
    assert_eq!(
        listed(&daemon, "pr_review").await["provenance"]["via"],
        "builtin"
    );
    drop(daemon);

    // Without a daemon, a file run here is registered as a file.
    let own = tmp.path().join("own.toml");
    std::fs::write(
        &own,
        "id = \"mine\"\ndescription = \"now from a file\"\n[[steps]]\nid = \"a\"\naction = \"noop\"\n",
    )
    .unwrap();
    expect(baton(&data, &config, &["run", own.to_str().unwrap()]), 0);
    let list: Value =
        serde_json::from_str(&expect(baton(&data, &config, &["workflows", "--json"]), 0).0)
            .unwrap();
    let mine = list
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == "mine")
        .unwrap();
    assert_eq!(mine["provenance"]["via"], "file", "{mine}");
    assert_eq!(
        mine["provenance"]["origin"],
        own.to_str().unwrap(),
        "{mine}"
    );
    assert!(mine["provenance"].get("client").is_none(), "{mine}");

    // A file in `workflow_dirs` with a built-in's id: the daemon does not start (exit 2).
    std::fs::copy(&file, dirs.join("pr_review.toml")).unwrap();
    let mut serve = Command::new(BATON)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("BATON_DATA_DIR", &data)
        .env("BATON_CONFIG", &config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = serve.kill();
            let _ = serve.wait();
            panic!("baton serve started with a built-in's id in workflow_dirs");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut serve.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{}: workflow id `pr_review` is a built-in workflow's",
            dirs.join("pr_review.toml").display()
        )),
        "{err}"
    );
    assert!(!marker.exists(), "a replacement's step ran");
}
