//! `baton serve` on PostgreSQL as an operator runs it: runs a person can read with `psql`,
//! the password never shown anywhere, and the refusals that keep a database safe (a schema
//! newer than this baton, a password in a config file, an unreachable server).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common_pg as pg;

use crate::BATON;

/// A daemon killed when the test ends, whether it passes or panics.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
const PASSWORD: &str = "s3cr3t-Pw-4f9a";

fn config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, format!("[store]\nbackend = \"postgres\"\n{extra}")).unwrap();
    path
}

fn baton(data: &Path, config: &Path, url: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(BATON);
    cmd.args(args)
        .env("BATON_DATA_DIR", data)
        .env("BATON_CONFIG", config)
        .env_remove("BATON_DATABASE_URL")
        .stdin(Stdio::null());
    if let Some(url) = url {
        cmd.env("BATON_DATABASE_URL", url);
    }
    cmd.output().unwrap()
}

/// Every file under `dir`, read as text where it is text.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

#[test]
fn runs_are_readable_with_psql_and_the_password_is_never_shown() {
    let Some(db) = pg::database() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = config(tmp.path(), "pool_size = 3\n");
    let url = pg::with_password(&db, PASSWORD);
    let log = std::fs::File::create(tmp.path().join("serve.log")).unwrap();
    let mut daemon = Killed(
        Command::new(BATON)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .env("BATON_DATA_DIR", &data)
            .env("BATON_CONFIG", &config)
            .env("BATON_DATABASE_URL", &url)
            .env("RUST_LOG", "debug")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !data.join("baton.addr").exists() {
        assert!(Instant::now() < deadline, "the daemon did not start");
        if let Ok(Some(status)) = daemon.0.try_wait() {
            panic!(
                "the daemon exited ({status}): {}",
                std::fs::read_to_string(tmp.path().join("serve.log")).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // A run whose step tries to read the database URL from its environment.
    let wf = tmp.path().join("peek.toml");
    std::fs::write(
        &wf,
        "id = \"peek\"\n[[steps]]\nid = \"env\"\naction = \"shell\"\n[steps.with]\nrun = \"echo url=${BATON_DATABASE_URL:-none}\"\n",
    )
    .unwrap();
    let out = baton(
        &data,
        &config,
        Some(&url),
        &["run", wf.to_str().unwrap(), "--json"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rec["status"], "completed", "{rec}");
    assert_eq!(rec["steps"][0]["output"]["stdout"], json!("url=none\n"));
    let run = rec["id"].as_str().unwrap();

    // What a person sees with psql: the seed's columns, the events in order.
    let row = pg::psql(
        &db,
        &format!("SELECT workflow_id, status, error_text IS NULL, completed_at IS NOT NULL FROM workflow_runs WHERE id = '{run}'"),
    );
    assert_eq!(row, "peek|completed|t|t");
    let types = pg::psql(
        &db,
        &format!(
            "SELECT string_agg(type, ',' ORDER BY seq) FROM run_events WHERE run_id = '{run}'"
        ),
    );
    assert!(
        types.starts_with("run_created,run_started,step_started")
            && types.ends_with("run_completed"),
        "{types}"
    );
    assert_eq!(pg::psql(&db, "SELECT max(version) FROM baton_schema"), "4");
    // The run's trace id is a column (migration 4), the one its head's traceparent names.
    let trace = pg::psql(
        &db,
        &format!("SELECT trace_id || '|' || (head->>'traceparent') FROM workflow_runs WHERE id = '{run}'"),
    );
    let (id, parent) = trace.split_once('|').expect("a trace id and a traceparent");
    assert!(
        id.len() == 32 && parent == format!("00-{id}-{}", &parent[36..]),
        "{trace}"
    );
    // How each definition came in: the built-ins shipped, `peek` through the daemon's API.
    let via = pg::psql(
        &db,
        "SELECT string_agg(id || '=' || registered_via, ',' ORDER BY id) FROM workflows \
         WHERE latest AND id IN ('peek', 'pr_review')",
    );
    assert_eq!(via, "peek=api,pr_review=builtin");
    let client = pg::psql(
        &db,
        "SELECT provenance->>'client' FROM workflows WHERE id = 'peek' AND latest",
    );
    assert!(client.starts_with("127.0.0.1:"), "{client}");

    let _ = daemon.0.kill();
    let _ = daemon.0.wait();
    // Nowhere: not in the log, the data dir, or any record in the database.
    assert!(
        files_containing(tmp.path(), PASSWORD).is_empty(),
        "{:?}",
        files_containing(tmp.path(), PASSWORD)
    );
    // Every row of every table, as text (daemons, inbox and slots among them).
    let every_row = pg::psql(
        &db,
        &format!(
            "SELECT string_agg(format('SELECT count(*) FROM %I r WHERE r::text LIKE %L', \
             tablename, '%{PASSWORD}%'), ' UNION ALL ') FROM pg_tables WHERE schemaname = 'public'"
        ),
    );
    assert!(every_row.contains("daemons"), "{every_row}");
    let leaks = pg::psql(&db, &format!("SELECT sum(count) FROM ({every_row}) AS c"));
    assert_eq!(leaks, "0");
}

#[test]
fn a_newer_schema_a_password_in_the_file_and_an_unreachable_server_are_refused() {
    let Some(db) = pg::database() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = config(tmp.path(), "");

    // Migrate, then pretend a newer baton has been here.
    let out = baton(&data, &config, Some(&db), &["runs"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pg::psql(&db, "INSERT INTO baton_schema (version) VALUES (7)");
    let tables = pg::psql(
        &db,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
    );
    let out = baton(
        &data,
        &config,
        Some(&db),
        &["serve", "--bind", "127.0.0.1:0"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("schema is version 7, newer than this baton's 4"),
        "{err}"
    );
    assert_eq!(
        pg::psql(
            &db,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        tables,
        "a refused start changed the schema"
    );

    // A password belongs in the environment, never in a file.
    let with_pw = config_with_url(tmp.path(), &pg::with_password(&db, PASSWORD));
    let out = baton(&data, &with_pw, None, &["runs"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("store.url") && err.contains("BATON_DATABASE_URL"),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");

    // No database at all names what to set.
    let out = baton(&data, &config, None, &["runs"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("BATON_DATABASE_URL"), "{err}");

    // A server that is not there: the error names it, without the password.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("postgres://baton:{PASSWORD}@127.0.0.1:{port}/nowhere?connect_timeout=2");
    let out = baton(&data, &config, Some(&url), &["runs"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("postgres baton@127.0.0.1:{port}/nowhere")),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");
}

fn config_with_url(dir: &Path, url: &str) -> std::path::PathBuf {
    let path = dir.join("with-url.toml");
    std::fs::write(
        &path,
        format!("[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n"),
    )
    .unwrap();
    path
}
