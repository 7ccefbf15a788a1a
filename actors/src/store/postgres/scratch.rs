//! Scratch databases for tests and benchmarks: made on a server that allows `CREATE
//! DATABASE`, dropped after.

use tokio_postgres::NoTls;

use super::connect::{describe_url, message};
use crate::error::{Error, Result};

/// A new, empty database on the server `admin_url` reaches (which must allow `CREATE
/// DATABASE`), named `prefix` and a random suffix; returns its URL (for tests and benchmarks).
pub fn scratch_database(admin_url: &str, prefix: &str) -> Result<String> {
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        fastrand::u64(..) & 0xffff_ffff_ffff
    );
    admin_sql(admin_url, &format!("CREATE DATABASE {name}"))?;
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin_url, String::new()),
    };
    let base = match base.rsplit_once('/') {
        Some((server, _)) if server.contains("://") && server.len() > "postgres://".len() => server,
        _ => base,
    };
    Ok(format!("{base}/{name}{query}"))
}

/// Drops a database [`scratch_database`] made (its name is the last part of `url`).
pub fn drop_scratch_database(admin_url: &str, url: &str) -> Result<()> {
    let name = url
        .split('?')
        .next()
        .unwrap_or(url)
        .rsplit('/')
        .next()
        .unwrap_or("");
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Error::Database {
            store: describe_url(admin_url),
            message: "not a database this baton made".into(),
        });
    }
    admin_sql(admin_url, &format!("DROP DATABASE IF EXISTS {name}"))
}

/// Runs one statement on the server, on a thread of its own (any caller, any runtime).
fn admin_sql(admin_url: &str, sql: &str) -> Result<()> {
    let (admin, sql) = (admin_url.to_string(), sql.to_string());
    let done = {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| message(&e))?;
            rt.block_on(async {
                let (client, connection) = tokio_postgres::connect(&admin, NoTls)
                    .await
                    .map_err(|e| message(&e))?;
                tokio::spawn(connection);
                client.batch_execute(&sql).await.map_err(|e| message(&e))
            })
        })
        .join()
        .unwrap_or_else(|_| Err("the thread talking to the server panicked".into()))
    };
    done.map_err(|message| Error::Database {
        store: describe_url(admin_url),
        message,
    })
}
