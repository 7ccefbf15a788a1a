//! PostgreSQL for the tests: a fresh database on the server `scripts/test.sh` starts
//! (`BATON_TEST_DATABASE_URL`), created with `psql`. A missing server fails the test, naming
//! it (see `require`).
#![allow(dead_code)]

use std::process::Command;

#[path = "../require/mod.rs"]
mod require;

/// The tests' server, or `None` when it is missing and skipping is allowed.
pub fn server() -> Option<String> {
    match std::env::var("BATON_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            require::missing(
                "a PostgreSQL server (BATON_TEST_DATABASE_URL)",
                "scripts/postgres.sh starts a throwaway cluster",
            );
            None
        }
    }
}

/// Runs SQL on the database at `url` with `psql`, returning what it printed (unaligned, no
/// headers); panics with psql's message on failure.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql runs (it comes with postgresql-15)");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A new, empty database on the tests' server; its URL. The throwaway cluster goes whole at
/// the end, so nothing drops it.
pub fn database() -> Option<String> {
    let server = server()?;
    let name = format!(
        "baton_t_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000_000
    );
    psql(&server, &format!("CREATE DATABASE {name}"));
    Some(with_database(&server, &name))
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let server = base.rsplit_once('/').map_or(base, |(s, _)| s);
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{server}/{name}{query}")
}

/// `url` with `password` for its user (the tests' server trusts loopback, so any will do).
pub fn with_password(url: &str, password: &str) -> String {
    url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{password}@"),
        1,
    )
}
