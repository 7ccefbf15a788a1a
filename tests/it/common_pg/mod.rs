//! PostgreSQL for the tests: a fresh database on the server `scripts/test.sh` starts
//! (`BATON_TEST_DATABASE_URL`), created with `psql`. A missing server fails the test, naming
//! it (see `require`).
#![allow(dead_code)]

use std::process::Command;

use crate::require;

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
    #[cfg(not(feature = "postgres"))]
    {
        let _ = server;
        require::missing(
            "baton's `postgres` feature (these tests were built without it)",
            "it is a default feature: build the tests without `--no-default-features`",
        );
        None
    }
    #[cfg(feature = "postgres")]
    Some(baton_actors::store::postgres::scratch_database(&server, "baton_t").unwrap())
}

/// `url` (a `postgres://user[:old]@host…` URL) with `password` for its user (the tests' server
/// trusts loopback, so any will do).
pub fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let (userinfo, host) = rest
        .split_once('@')
        .expect("a URL with a user (postgres://USER@HOST…)");
    let user = userinfo.split(':').next().unwrap_or(userinfo);
    let with = format!("{scheme}://{user}:{password}@{host}");
    assert!(with.contains(password), "{with}");
    with
}
