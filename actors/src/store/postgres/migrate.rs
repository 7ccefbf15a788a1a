//! The schema: the migrations this build embeds (`postgres/*.sql`), applied at open under an
//! advisory lock; a database with a newer schema is refused untouched.

use super::connect::db_err;
use crate::error::{Error, Result};

/// The schema versions this build knows, in order; each is applied once, in its own
/// transaction, and recorded in `baton_schema`.
const MIGRATIONS: &[&str] = &[
    include_str!("001_init.sql"),
    include_str!("002_daemons.sql"),
    include_str!("003_provenance.sql"),
    include_str!("004_trace.sql"),
];

/// The advisory lock daemons migrate under, so that two starting at once do not both apply a
/// version (`batonmg`).
pub(super) const MIGRATION_LOCK: i64 = 0x0062_6174_6f6e_6d67;

/// Applies what this build knows and the database lacks; refuses a newer schema untouched.
pub(super) async fn migrate(client: &tokio_postgres::Client, name: &str) -> Result<()> {
    let err = |e: tokio_postgres::Error| db_err(name, e);
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS baton_schema (version INTEGER NOT NULL, \
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .map_err(err)?;
    let found: i32 = client
        .query_one("SELECT COALESCE(MAX(version), 0) FROM baton_schema", &[])
        .await
        .map_err(err)?
        .get(0);
    let known = MIGRATIONS.len() as i32;
    if found > known {
        return Err(Error::Database {
            store: name.to_string(),
            message: format!(
                "the schema is version {found}, newer than this baton's {known}; run a baton \
                 that knows version {found}"
            ),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as i32 + 1;
        let script =
            format!("BEGIN; {sql}\nINSERT INTO baton_schema (version) VALUES ({version}); COMMIT;");
        if let Err(e) = client.batch_execute(&script).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(Error::Database {
                store: name.to_string(),
                message: format!("migration {version} failed: {e}"),
            });
        }
        tracing::info!("{name}: applied schema version {version}");
    }
    Ok(())
}
