//! The PostgreSQL backend: the engine's records in a database, readable with `psql` (see
//! `postgres/001_init.sql` for the tables).
//!
//! - **Its own runtime.** The pool and the committer live on a small tokio runtime of the
//!   store's own, so the engine's synchronous reads can wait for an answer from any thread
//!   (including the app's runtime workers) without `block_on`.
//! - **Group commit.** One committer task owns one connection: it takes every batch waiting,
//!   writes them all in one transaction (the statements pipelined), commits (one WAL flush),
//!   and only then answers each caller. If the group fails, each batch is tried again alone,
//!   so one bad batch cannot fail its neighbours.
//! - **Several daemons per database.** Each daemon has a name (kept in its data dir, which
//!   it locks) and a lease in `daemons` that it renews; an unfinished run belongs to the
//!   daemon in its `owner` column. A daemon whose lease lapsed is deleted by the first other
//!   daemon to notice, and its runs are taken over (`FOR UPDATE SKIP LOCKED`). A command for a
//!   run another daemon holds goes through `inbox`, with `NOTIFY` to wake the holder and a
//!   poll as the fallback. See [`Cluster`].
//! - **Secrets.** The URL may hold a password: it goes to the driver and nowhere else; every
//!   message names the database by user, host, port and name only.

mod cluster;
mod committer;
mod connect;
mod identity;
mod migrate;
mod scratch;
mod sql;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use self::cluster::listen;
use self::committer::{committer, Request};
use self::connect::{db_err, describe, session_setup};
use self::identity::{daemon_name, lock_dir, refuse_old_owner, register};
use self::migrate::{migrate, MIGRATION_LOCK};
use super::{
    BackupStats, Batch, Change, Cluster, CommitStats, Durable, Job, Op, RunQuery, Store,
    StoredDefinition, TimerEntry,
};
use crate::definition::{Definition, Provenance};
use crate::error::{Error, Result};
use crate::record::{Event, RunRecord, RunStatus, StepRecord};

pub use self::connect::{check_url, describe_url, BadUrl, PgConfig};
pub use self::scratch::{drop_scratch_database, scratch_database};

struct Inner {
    dir: PathBuf,
    describe: Arc<str>,
    pool: Pool,
    committer: mpsc::UnboundedSender<Request>,
    stats: CommitStats,
    /// This daemon's name in `daemons` and `workflow_runs.owner`.
    daemon: String,
    lease: Duration,
    /// `daemon@machine boot id`: process groups are this daemon's, on this boot.
    boot: String,
    /// Rung when a command may have arrived for a run this daemon holds.
    inbox_bell: Arc<tokio::sync::Notify>,
    /// Rung when a command this daemon forwarded may have been answered.
    reply_bell: tokio::sync::Notify,
    /// Rung when another daemon freed a repository's slot.
    slots_bell: Arc<tokio::sync::Notify>,
    /// The data dir's lock, held for the store's life: one daemon per data dir.
    _dir_lock: std::fs::File,
    /// How to connect (the listener and the lease have connections of their own).
    pg_config: tokio_postgres::Config,
    /// The lease's connection.
    lease_conn: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping a runtime may not block inside another one: let its threads wind down.
        if let Some(rt) = self
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            rt.shutdown_background();
        }
    }
}

/// The PostgreSQL store's handle; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl PgStore {
    /// Connects, applies the migrations this build has and the database lacks, and registers
    /// this daemon (named in `dir`, which it locks). A database with a newer schema is
    /// refused, untouched.
    pub fn open(dir: &Path, config: &PgConfig) -> Result<PgStore> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let dir_lock = lock_dir(dir)?;
        let daemon = daemon_name(dir)?;
        let pg = tokio_postgres::Config::from_str(&config.url).map_err(|e| Error::Database {
            store: "postgres".into(),
            message: format!("the database URL cannot be read: {e}"),
        })?;
        let name: Arc<str> = describe(&pg).into();
        let mut pg = pg;
        // Named, so that `pg_stat_activity` tells daemons apart; and kept alive, so that a
        // session whose peer vanished (a cut link, a dead host) is noticed within minutes.
        pg.application_name(format!("baton {daemon}"))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        // Every session commits synchronously whatever the server's default: a transition, a
        // claim or a takeover is acknowledged only once it is on disk.
        let options = match pg.get_options() {
            Some(given) => format!("{given} -c synchronous_commit=on"),
            None => "-c synchronous_commit=on".to_string(),
        };
        pg.options(&options);
        let pg_config = pg.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("baton-pg")
            .enable_all()
            .build()
            .map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        let handle = runtime.handle().clone();
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(2))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| db_err(&name, e))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let machine_boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            describe: name.clone(),
            pool: pool.clone(),
            committer: tx,
            stats: CommitStats::default(),
            boot: format!("{daemon}@{machine_boot}"),
            daemon,
            lease: config.lease,
            inbox_bell: Arc::default(),
            reply_bell: tokio::sync::Notify::new(),
            slots_bell: Arc::default(),
            _dir_lock: dir_lock,
            pg_config: pg_config.clone(),
            lease_conn: tokio::sync::Mutex::new(None),
            runtime: Mutex::new(Some(runtime)),
            handle,
        });
        let store = PgStore { inner };
        // Set up on the store's runtime: migrate, register this daemon, then start the
        // committer and the listener.
        let ready = {
            let name = name.clone();
            let weak = Arc::downgrade(&store.inner);
            let (daemon, boot) = (store.inner.daemon.clone(), store.inner.boot.clone());
            let lease_ms = config.lease.as_millis() as i64;
            let dir = dir.to_path_buf();
            store.block(async move {
                let mut client = pool.get().await.map_err(|e| db_err(&name, e))?;
                let err = |e: tokio_postgres::Error| db_err(&name, e);
                refuse_old_owner(&client, &name).await?;
                client
                    .query_one("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
                    .await
                    .map_err(err)?;
                let migrated = migrate(&client, &name).await;
                client
                    .query_one("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
                    .await
                    .map_err(err)?;
                migrated?;
                register(&mut client, &name, &daemon, &dir, lease_ms).await?;
                // This daemon's process groups of an earlier boot of its machine are gone
                // (the reaper kills only this boot's).
                client
                    .execute(
                        "DELETE FROM process_groups WHERE starts_with(boot, $2) AND boot <> $1",
                        &[&boot, &format!("{daemon}@")],
                    )
                    .await
                    .map_err(err)?;
                session_setup(&client).await.map_err(err)?;
                tracing::info!("{name}: this daemon is `{daemon}`");
                tokio::spawn(committer(weak.clone(), client, rx));
                tokio::spawn(listen(weak, pg_config));
                Ok(())
            })
        };
        ready?;
        Ok(store)
    }

    /// Runs `work` on the store's runtime and waits for it from this thread, whatever
    /// runtime (if any) this thread belongs to.
    fn block<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.inner.handle.spawn(async move {
            let _ = tx.send(work.await);
        });
        super::off_runtime(|| rx.recv()).map_err(|_| Error::ShuttingDown)?
    }

    /// Rows of one query, read through the pool. A connection the server dropped (a restart)
    /// is noticed when used: the read is made once more, on a fresh one.
    fn rows(&self, sql: &'static str, params: Vec<Param>) -> Result<Vec<Row>> {
        let pool = self.inner.pool.clone();
        let name = self.inner.describe.clone();
        self.block(async move {
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_sql()).collect();
            let mut tries = 0;
            loop {
                tries += 1;
                let client = pool.get().await.map_err(|e| db_err(&name, e))?;
                let result = match client.prepare_cached(sql).await {
                    Ok(statement) => client.query(&statement, &refs).await,
                    Err(e) => Err(e),
                };
                match result {
                    Err(e) if e.is_closed() && tries < 2 => continue,
                    other => return other.map_err(|e| db_err(&name, e)),
                }
            }
        })
    }

    /// The first column of each row, decoded from JSON text; a row that cannot be decoded is
    /// reported with its key and skipped, as on sled.
    fn json_rows<T: DeserializeOwned>(
        &self,
        table: &'static str,
        sql: &'static str,
        params: Vec<Param>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for row in self.rows(sql, params)? {
            let text: String = row.get(0);
            let key: String = row.try_get(1).unwrap_or_default();
            match decode(table, &key, &text) {
                Ok(v) => out.push(v),
                Err(e) => tracing::error!("{e}; skipped"),
            }
        }
        Ok(out)
    }

    /// One JSON record (the first column), `None` when there is no row.
    fn json_row<T: DeserializeOwned>(
        &self,
        table: &'static str,
        key: &str,
        sql: &'static str,
        params: Vec<Param>,
    ) -> Result<Option<T>> {
        match self.rows(sql, params)?.first() {
            Some(row) => decode(table, key, &row.get::<_, String>(0)).map(Some),
            None => Ok(None),
        }
    }

    fn ids(&self, sql: &'static str, params: Vec<Param>) -> Result<Vec<String>> {
        Ok(self
            .rows(sql, params)?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect())
    }
}

/// A query parameter, owned so that it can travel to the store's runtime.
enum Param {
    Text(String),
    Int(i64),
    Texts(Vec<String>),
}

impl Param {
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Param::Text(s) => s,
            Param::Int(i) => i,
            Param::Texts(v) => v,
        }
    }
}

fn text(s: &str) -> Param {
    Param::Text(s.to_string())
}

fn int(n: usize) -> Param {
    Param::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

fn decode<T: DeserializeOwned>(table: &'static str, key: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt {
        tree: table,
        key: key.to_string(),
        message: e.to_string(),
    })
}

const RUN_IDS_ALL: &str = "SELECT id FROM workflow_runs ORDER BY id DESC OFFSET $1 LIMIT $2";
const RUN_IDS_STATUS: &str =
    "SELECT id FROM workflow_runs WHERE status = $3 ORDER BY id DESC OFFSET $1 LIMIT $2";
const RUN_IDS_WORKFLOW: &str =
    "SELECT id FROM workflow_runs WHERE workflow_id = $3 ORDER BY id DESC OFFSET $1 LIMIT $2";
const RUN_IDS_WORKFLOW_STATUS: &str = "SELECT id FROM workflow_runs WHERE workflow_id = $3 \
     AND status = $4 ORDER BY id DESC OFFSET $1 LIMIT $2";
const RUN_IDS_ABOUT: &str =
    "SELECT run_id FROM run_subjects WHERE name = $3 ORDER BY run_id DESC OFFSET $1 LIMIT $2";
const RUN_IDS_PREFIX: &str = "SELECT id FROM workflow_runs WHERE starts_with(id, $3) \
     ORDER BY id DESC OFFSET $1 LIMIT $2";

impl Store for PgStore {
    fn describe(&self) -> &str {
        &self.inner.describe
    }

    fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn commit(&self, batch: Batch) -> Durable {
        if batch.is_empty() {
            return Durable::ready(Ok(()));
        }
        let (done, wait) = oneshot::channel();
        match self.inner.committer.send(Request { batch, done }) {
            Ok(()) => Durable::waiting(wait, self.inner.describe.clone()),
            Err(_) => Durable::ready(Err(Error::ShuttingDown)),
        }
    }

    fn flush_blocking(&self) -> Result<()> {
        // Every answered commit is already durable.
        Ok(())
    }

    fn stats(&self) -> &CommitStats {
        &self.inner.stats
    }

    fn size(&self) -> u64 {
        self.rows("SELECT pg_database_size(current_database())", vec![])
            .ok()
            .and_then(|rows| rows.first().map(|r| r.get::<_, i64>(0)))
            .unwrap_or(0) as u64
    }

    fn for_idle_runs(&self) -> Arc<dyn Store> {
        Arc::new(self.clone())
    }

    fn next_id(&self) -> Result<u64> {
        let rows = self.rows("SELECT nextval('baton_ids')", vec![])?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)) as u64)
    }

    fn definition(&self, id: &str, digest: &str) -> Result<Option<Definition>> {
        self.json_row(
            "workflows",
            &format!("{id}/{digest}"),
            "SELECT definition::text FROM workflows WHERE id = $1 AND digest = $2",
            vec![text(id), text(digest)],
        )
    }

    fn latest_digest(&self, id: &str) -> Result<Option<String>> {
        Ok(self
            .ids(
                "SELECT digest FROM workflows WHERE id = $1 AND latest",
                vec![text(id)],
            )?
            .pop())
    }

    fn provenance(&self, id: &str, digest: &str) -> Result<Option<Provenance>> {
        self.json_row(
            "workflows",
            &format!("{id}/{digest}"),
            "SELECT provenance::text FROM workflows \
             WHERE id = $1 AND digest = $2 AND provenance IS NOT NULL",
            vec![text(id), text(digest)],
        )
    }

    fn latest_definitions(&self) -> Result<Vec<StoredDefinition>> {
        let mut out = Vec::new();
        for row in self.rows(
            "SELECT digest, definition::text, provenance::text FROM workflows \
             WHERE latest ORDER BY id",
            vec![],
        )? {
            let digest: String = row.get(0);
            let definition = match decode("workflows", &digest, &row.get::<_, String>(1)) {
                Ok(def) => def,
                Err(e) => {
                    tracing::error!("{e}; skipped");
                    continue;
                }
            };
            // A provenance that does not decode is reported, and the definition still listed.
            let provenance = row.get::<_, Option<String>>(2).and_then(|text| {
                match decode("workflows", &digest, &text) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::error!("{e}; its provenance is not shown");
                        None
                    }
                }
            });
            out.push(StoredDefinition {
                digest,
                definition,
                provenance,
            });
        }
        Ok(out)
    }

    fn head(&self, run: &str) -> Result<Option<RunRecord>> {
        self.json_row(
            "workflow_runs",
            run,
            "SELECT head::text FROM workflow_runs WHERE id = $1",
            vec![text(run)],
        )
    }

    fn heads(&self) -> Result<Vec<RunRecord>> {
        self.json_rows(
            "workflow_runs",
            "SELECT head::text, id FROM workflow_runs ORDER BY id",
            vec![],
        )
    }

    fn steps(&self, run: &str) -> Result<Vec<(usize, StepRecord)>> {
        let mut out = Vec::new();
        for row in self.rows(
            "SELECT idx, body::text FROM run_steps WHERE run_id = $1 ORDER BY idx",
            vec![text(run)],
        )? {
            let idx: i32 = row.get(0);
            match decode(
                "run_steps",
                &format!("{run}/{idx}"),
                &row.get::<_, String>(1),
            ) {
                Ok(step) => out.push((idx as usize, step)),
                Err(e) => tracing::error!("{e}; skipped"),
            }
        }
        Ok(out)
    }

    fn events(&self, run: &str, since: u64) -> Result<Vec<Event>> {
        self.json_rows(
            "run_events",
            "SELECT body::text, run_id || '/' || seq FROM run_events \
             WHERE run_id = $1 AND seq > $2 ORDER BY seq",
            vec![text(run), Param::Int(since.min(i64::MAX as u64) as i64)],
        )
    }

    fn changes(&self, run: &str) -> Result<Vec<Change>> {
        self.json_rows(
            "workflow_changes",
            "SELECT json_build_object('id', id, 'workflow_run_id', workflow_run_id, \
             'step_index', step_index, 'change_type', change_type, 'change_data', change_data, \
             'created_at', round(extract(epoch FROM created_at) * 1000)::bigint)::text, id \
             FROM workflow_changes WHERE workflow_run_id = $1 ORDER BY seq",
            vec![text(run)],
        )
    }

    fn job(&self, id: &str) -> Result<Option<Job>> {
        self.json_row(
            "jobs",
            id,
            "SELECT body::text FROM jobs WHERE id = $1",
            vec![text(id)],
        )
    }

    fn unfinished(&self) -> Result<Vec<String>> {
        self.ids(
            "SELECT id FROM workflow_runs WHERE unfinished ORDER BY id",
            vec![],
        )
    }

    fn timers(&self) -> Result<Vec<TimerEntry>> {
        Ok(self
            .rows(
                "SELECT due_ms, run_id, timer FROM timers ORDER BY due_ms, run_id, timer",
                vec![],
            )?
            .iter()
            .map(|r| TimerEntry {
                due: r.get::<_, i64>(0) as u64,
                run: r.get(1),
                timer: r.get::<_, i64>(2) as u64,
            })
            .collect())
    }

    fn run_ids(&self, query: &RunQuery, offset: usize, limit: usize) -> Result<Vec<String>> {
        let mut params = vec![int(offset), int(limit)];
        let sql = match query {
            RunQuery::All => RUN_IDS_ALL,
            RunQuery::Status(s) => {
                params.push(text(s.as_str()));
                RUN_IDS_STATUS
            }
            RunQuery::Workflow(w) => {
                params.push(text(w));
                RUN_IDS_WORKFLOW
            }
            RunQuery::WorkflowStatus(w, s) => {
                params.push(text(w));
                params.push(text(s.as_str()));
                RUN_IDS_WORKFLOW_STATUS
            }
            RunQuery::About(name) => {
                params.push(text(name));
                RUN_IDS_ABOUT
            }
            RunQuery::IdPrefix(p) => {
                params.push(text(p));
                RUN_IDS_PREFIX
            }
        };
        self.ids(sql, params)
    }

    fn count(&self, query: &RunQuery) -> Result<usize> {
        let (sql, params): (&'static str, Vec<Param>) = match query {
            RunQuery::All => ("SELECT count(*) FROM workflow_runs", vec![]),
            RunQuery::Status(s) => (
                "SELECT count(*) FROM workflow_runs WHERE status = $1",
                vec![text(s.as_str())],
            ),
            RunQuery::Workflow(w) => (
                "SELECT count(*) FROM workflow_runs WHERE workflow_id = $1",
                vec![text(w)],
            ),
            RunQuery::WorkflowStatus(w, s) => (
                "SELECT count(*) FROM workflow_runs WHERE workflow_id = $1 AND status = $2",
                vec![text(w), text(s.as_str())],
            ),
            RunQuery::About(name) => (
                "SELECT count(*) FROM run_subjects WHERE name = $1",
                vec![text(name)],
            ),
            RunQuery::IdPrefix(p) => (
                "SELECT count(*) FROM workflow_runs WHERE starts_with(id, $1)",
                vec![text(p)],
            ),
        };
        let rows = self.rows(sql, params)?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0)) as usize)
    }

    fn status_of(&self, run: &str) -> Result<Option<RunStatus>> {
        let Some(status) = self
            .ids(
                "SELECT status FROM workflow_runs WHERE id = $1",
                vec![text(run)],
            )?
            .pop()
        else {
            return Ok(None);
        };
        status
            .parse()
            .map(Some)
            .map_err(|e: crate::record::UnknownStatus| Error::Corrupt {
                tree: "workflow_runs",
                key: run.to_string(),
                message: e.to_string(),
            })
    }

    fn is_of_workflow(&self, run: &str, workflow: &str) -> Result<bool> {
        Ok(!self
            .rows(
                "SELECT 1 FROM workflow_runs WHERE id = $1 AND workflow_id = $2",
                vec![text(run), text(workflow)],
            )?
            .is_empty())
    }

    fn is_tagged(&self, tag: &str, run: &str) -> Result<bool> {
        Ok(!self
            .rows(
                "SELECT 1 FROM run_tags WHERE tag = $1 AND run_id = $2",
                vec![text(tag), text(run)],
            )?
            .is_empty())
    }

    fn tagged_run_ids(&self, tag: &str) -> Result<Vec<String>> {
        self.ids(
            "SELECT run_id FROM run_tags WHERE tag = $1 ORDER BY ord DESC, run_id DESC",
            vec![text(tag)],
        )
    }

    fn delivery(&self, run: &str, sink: &str) -> Result<Option<Value>> {
        self.json_row(
            "deliveries",
            &format!("{run}/{sink}"),
            "SELECT body::text FROM deliveries WHERE run_id = $1 AND sink = $2",
            vec![text(run), text(sink)],
        )
    }

    fn deliveries(&self) -> Result<Vec<(String, String, Value)>> {
        let mut out = Vec::new();
        for row in self.rows(
            "SELECT run_id, sink, body::text FROM deliveries ORDER BY run_id, sink",
            vec![],
        )? {
            let (run, sink): (String, String) = (row.get(0), row.get(1));
            match decode(
                "deliveries",
                &format!("{run}/{sink}"),
                &row.get::<_, String>(2),
            ) {
                Ok(v) => out.push((run, sink, v)),
                Err(e) => tracing::error!("{e}; skipped"),
            }
        }
        Ok(out)
    }

    fn process_groups(&self) -> Result<Vec<(Vec<u8>, Value)>> {
        let mut out = Vec::new();
        for row in self.rows(
            "SELECT key, body::text FROM process_groups WHERE boot = $1",
            vec![text(&self.inner.boot)],
        )? {
            let key: Vec<u8> = row.get(0);
            match decode("process_groups", "?", &row.get::<_, String>(1)) {
                Ok(v) => out.push((key, v)),
                Err(e) => tracing::error!("{e}; skipped"),
            }
        }
        Ok(out)
    }

    fn forget_process_group(&self, key: &[u8]) {
        let mut batch = Batch::new();
        batch.push(Op::ProcessGroup {
            key: key.to_vec(),
            json: None,
        });
        // Not waited for: a record that outlives its group is harmless.
        drop(self.commit(batch));
    }

    fn backup(&self, _path: &Path) -> Result<BackupStats> {
        Err(Error::Backup {
            path: self.inner.dir.clone(),
            message: format!(
                "the store is in {}: back it up with pg_dump (baton backup copies sled stores)",
                self.inner.describe
            ),
        })
    }

    fn cluster(&self) -> Option<&dyn Cluster> {
        Some(self)
    }

    #[cfg(feature = "test-hooks")]
    fn corrupt_head_for_test(&self, run: &str) -> Result<()> {
        // A head that is valid JSON but not a run record.
        self.rows(
            "INSERT INTO workflow_runs (id, workflow_id, status, unfinished, head) \
             VALUES ($1, '?', 'running', true, '{\"not\": \"a run\"}'::jsonb) \
             ON CONFLICT (id) DO UPDATE SET head = EXCLUDED.head",
            vec![text(run)],
        )
        .map(|_| ())
    }
}
