//! How to reach the database: [`PgConfig`], the URL (read, checked, and described without its
//! password), the session every connection sets up, and the driver's errors as messages.

use std::str::FromStr;
use std::time::Duration;

use crate::error::Error;

/// How to reach the database.
#[derive(Clone)]
pub struct PgConfig {
    /// A `postgres://` URL or a `key=value` connection string; may hold a password.
    pub url: String,
    /// Connections in the pool (the committer holds one of them).
    pub pool_size: usize,
    /// How long this daemon's hold on its runs outlives its last renewal; it renews every
    /// third of it.
    pub lease: Duration,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("database", &describe_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("lease", &self.lease)
            .finish()
    }
}

/// What is wrong with a database URL; never repeats the URL (it may hold a password).
#[derive(Debug, thiserror::Error)]
pub enum BadUrl {
    /// The driver cannot read it.
    #[error("not a PostgreSQL connection URL ({0})")]
    Unreadable(String),
    /// A password where none may be (a config file).
    #[error(
        "holds a password; put the URL with its password in BATON_DATABASE_URL instead, so that \
         it lives in no file"
    )]
    Password,
}

/// Whether `url` is a connection string the driver reads, and (unless `password_allowed`)
/// holds no password.
pub fn check_url(url: &str, password_allowed: bool) -> std::result::Result<(), BadUrl> {
    let config =
        tokio_postgres::Config::from_str(url).map_err(|e| BadUrl::Unreadable(e.to_string()))?;
    if config.get_password().is_some() && !password_allowed {
        return Err(BadUrl::Password);
    }
    Ok(())
}

/// `postgres user@host:port/dbname`, never the password; what every message calls the store.
pub fn describe_url(url: &str) -> String {
    match tokio_postgres::Config::from_str(url) {
        Ok(config) => describe(&config),
        Err(_) => "postgres (an unreadable URL)".to_string(),
    }
}

pub(super) fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres {}@{host}:{port}/{}",
        config.get_user().unwrap_or("?"),
        config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or("postgres")
    )
}

/// The committer's session commits synchronously whatever the server's default: a
/// transition is acknowledged only once it is on disk.
pub(super) async fn session_setup(
    client: &tokio_postgres::Client,
) -> std::result::Result<(), tokio_postgres::Error> {
    client.batch_execute("SET synchronous_commit = on").await
}

pub(super) fn db_err(store: &str, e: impl std::error::Error) -> Error {
    Error::Database {
        store: store.to_string(),
        message: message(&e),
    }
}

/// An error with its causes: the driver's own text is only "db error" or "error connecting
/// to server"; what the server said is in the chain.
pub(super) fn message(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
