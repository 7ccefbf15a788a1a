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

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::{
    BackupStats, Batch, BoxFuture, Change, Cluster, CommitStats, Durable, Job, Op, RunQuery, Store,
    StoredDefinition, TimerEntry, Wait,
};
use crate::definition::{Definition, Provenance};
use crate::error::{Error, Result};
use crate::record::{Event, RunRecord, RunStatus, StepRecord};

/// The schema versions this build knows, in order; each is applied once, in its own
/// transaction, and recorded in `baton_schema`.
const MIGRATIONS: &[&str] = &[
    include_str!("postgres/001_init.sql"),
    include_str!("postgres/002_daemons.sql"),
    include_str!("postgres/003_provenance.sql"),
];

/// The advisory lock an older baton (one daemon per database) held for its life: a daemon
/// that finds it held refuses to start beside it.
const OLD_OWNER_LOCK: i64 = 0x0062_6174_6f6e;
/// The advisory lock daemons migrate under, so that two starting at once do not both apply a
/// version (`batonmg`).
const MIGRATION_LOCK: i64 = 0x0062_6174_6f6e_6d67;
/// The transaction lock under which daemons register and take over lapsed daemons' runs, so
/// that a daemon registering (or restarting) is seen by every takeover that follows
/// (`batoncl`).
const CLUSTER_LOCK: i64 = 0x0062_6174_6f6e_636c;

/// How often a waiting sender looks for its answer, and the holder for commands, when no
/// notification came (a dropped listener connection).
const REPLY_POLL: Duration = Duration::from_millis(250);
/// How long a sender waits for the holder's answer.
const REPLY_WAIT: Duration = Duration::from_secs(60);

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

fn describe(config: &tokio_postgres::Config) -> String {
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

struct Request {
    batch: Batch,
    done: oneshot::Sender<std::result::Result<(), String>>,
}

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

fn db_err(store: &str, e: impl std::error::Error) -> Error {
    Error::Database {
        store: store.to_string(),
        message: message(&e),
    }
}

/// An error with its causes: the driver's own text is only "db error" or "error connecting
/// to server"; what the server said is in the chain.
fn message(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn decode<T: DeserializeOwned>(table: &'static str, key: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt {
        tree: table,
        key: key.to_string(),
        message: e.to_string(),
    })
}

/// Refuses to start beside a baton of the one-daemon-per-database kind, which holds
/// [`OLD_OWNER_LOCK`] for its life and knows nothing of leases.
async fn refuse_old_owner(client: &tokio_postgres::Client, name: &str) -> Result<()> {
    let err = |e: tokio_postgres::Error| db_err(name, e);
    // Another daemon starting now holds it for a moment too, for this same check: only a
    // lock held for a whole second is an older baton's.
    for _ in 0..20 {
        let free: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&OLD_OWNER_LOCK])
            .await
            .map_err(err)?
            .get(0);
        if free {
            client
                .query_one("SELECT pg_advisory_unlock($1)", &[&OLD_OWNER_LOCK])
                .await
                .map_err(err)?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::Database {
        store: name.to_string(),
        message: "an older baton, which takes a database for itself alone, is using it; stop \
                  it before starting this one"
            .into(),
    })
}

/// Registers this daemon (or renews its row after a restart), under [`CLUSTER_LOCK`]: a
/// takeover in progress finishes first, and every later one sees this daemon. A live row of
/// the same name on another host (a copied data dir) is refused; on this host, the data dir's
/// lock proves the last holder of the name is gone.
async fn register(
    client: &mut deadpool_postgres::Object,
    name: &str,
    daemon: &str,
    dir: &Path,
    lease_ms: i64,
) -> Result<()> {
    let err = |e: tokio_postgres::Error| db_err(name, e);
    let host = hostname();
    let tx = client.transaction().await.map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CLUSTER_LOCK])
        .await
        .map_err(err)?;
    let live = tx
        .query_opt(
            "SELECT host, dir FROM daemons WHERE id = $1 AND lease_until > now() FOR UPDATE",
            &[&daemon],
        )
        .await
        .map_err(err)?;
    let here = std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .display()
        .to_string();
    if let Some(row) = live {
        let (other_host, other_dir): (String, String) = (row.get(0), row.get(1));
        if other_host != host || other_dir != here {
            return Err(Error::Database {
                store: name.to_string(),
                message: format!(
                    "daemon `{daemon}` (this data dir's name) is live on {other_host}:{other_dir}: \
                     a copied data dir? Give this one its own, or remove its `daemon` file"
                ),
            });
        }
    }
    tx.execute(
        "INSERT INTO daemons (id, host, dir, pid, lease_until) VALUES ($1, $2, $3, $4, \
         now() + make_interval(secs => $5::bigint / 1000.0)) ON CONFLICT (id) DO UPDATE SET \
         host = EXCLUDED.host, dir = EXCLUDED.dir, pid = EXCLUDED.pid, started_at = now(), \
         renewed_at = now(), lease_until = EXCLUDED.lease_until",
        &[
            &daemon,
            &host,
            &here,
            &(std::process::id() as i32),
            &lease_ms,
        ],
    )
    .await
    .map_err(err)?;
    // Slots of this daemon's earlier life are not held by anything running now.
    tx.execute("DELETE FROM slots WHERE daemon = $1", &[&daemon])
        .await
        .map_err(err)?;
    tx.commit().await.map_err(err)
}

/// The committer's session commits synchronously whatever the server's default: a
/// transition is acknowledged only once it is on disk.
async fn session_setup(
    client: &tokio_postgres::Client,
) -> std::result::Result<(), tokio_postgres::Error> {
    client.batch_execute("SET synchronous_commit = on").await
}

/// Locks the data dir for this process's life (one daemon per data dir: its name, its
/// workspaces and its address file are its own); a second process is refused, naming the
/// first.
fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join("daemon.lock");
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    // A store of this very process that is closing (reopened in one process) is waited out.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        let locked = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        let error = std::io::Error::last_os_error();
        match locked {
            0 => {
                use std::io::Write;
                file.set_len(0).map_err(io)?;
                write!(file, "{}", std::process::id()).map_err(io)?;
                return Ok(file);
            }
            _ if error.kind() == std::io::ErrorKind::WouldBlock => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                if holder == std::process::id().to_string() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                return Err(Error::InUse {
                    dir: dir.to_path_buf(),
                    holder: format!("process {holder}"),
                });
            }
            _ => return Err(io(error)),
        }
    }
}

/// This daemon's name: made once (`host-xxxxxx`) and kept in the data dir, so that a daemon
/// restarted on its dir takes its own runs back at once instead of waiting out its lease.
fn daemon_name(dir: &Path) -> Result<String> {
    let path = dir.join("daemon");
    match std::fs::read_to_string(&path) {
        Ok(name) if !name.trim().is_empty() => return Ok(name.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(Error::Io { path, source }),
    }
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let suffix: String = (0..6)
        .map(|_| ALPHABET[fastrand::usize(..32)] as char)
        .collect();
    let name = format!("{}-{suffix}", hostname());
    std::fs::write(&path, &name).map_err(|source| Error::Io { path, source })?;
    Ok(name)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "baton".into())
}

/// Applies what this build knows and the database lacks; refuses a newer schema untouched.
async fn migrate(client: &tokio_postgres::Client, name: &str) -> Result<()> {
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

/// The statements the committer prepares once.
const INSERT_RUN: &str = "INSERT INTO workflow_runs \
     (id, workflow_id, status, unfinished, head, owner) \
     VALUES ($1, $2, $3, true, $4::text::jsonb, $5) ON CONFLICT (id) DO UPDATE SET \
     workflow_id = EXCLUDED.workflow_id, status = EXCLUDED.status, head = EXCLUDED.head";
const UPDATE_HEAD: &str =
    "UPDATE workflow_runs SET status = $2, head = $3::text::jsonb, unfinished = $4 WHERE id = $1";
const UPDATE_UNFINISHED: &str = "UPDATE workflow_runs SET unfinished = $2 WHERE id = $1";
const INSERT_EVENT: &str = "INSERT INTO run_events (run_id, seq, body) \
     VALUES ($1, $2, $3::text::jsonb) ON CONFLICT (run_id, seq) DO UPDATE SET body = EXCLUDED.body";
const UPSERT_STEP: &str =
    "INSERT INTO run_steps (run_id, idx, body) VALUES ($1, $2, $3::text::jsonb) \
     ON CONFLICT (run_id, idx) DO UPDATE SET body = EXCLUDED.body";
const SET_TIMER: &str = "INSERT INTO timers (run_id, timer, due_ms) VALUES ($1, $2, $3) \
     ON CONFLICT (run_id, timer) DO UPDATE SET due_ms = EXCLUDED.due_ms";
const CLEAR_TIMER: &str = "DELETE FROM timers WHERE run_id = $1 AND timer = $2";
const INSERT_SUBJECT: &str =
    "INSERT INTO run_subjects (name, run_id) VALUES ($1, $2) ON CONFLICT DO NOTHING";
const UPSERT_JOB: &str = "INSERT INTO jobs (id, body) VALUES ($1, $2::text::jsonb) \
     ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body";
// The same content registered again keeps its row; the registration is the new one.
const INSERT_DEFINITION: &str =
    "INSERT INTO workflows (id, digest, definition, latest, provenance) \
     VALUES ($1, $2, $3::text::jsonb, false, $4::text::jsonb) \
     ON CONFLICT (id, digest) DO UPDATE SET provenance = EXCLUDED.provenance";
// Two statements, in this order: the unique index on the latest of an id is checked row by
// row, so one UPDATE flipping both rows may set the new one before it clears the old one.
const CLEAR_LATEST: &str =
    "UPDATE workflows SET latest = false WHERE id = $1 AND latest AND digest <> $2";
const SET_LATEST: &str =
    "UPDATE workflows SET latest = true WHERE id = $1 AND digest = $2 AND NOT latest";
const INSERT_CHANGE: &str = "INSERT INTO workflow_changes \
     (id, workflow_run_id, step_index, change_type, change_data, created_at, seq) \
     SELECT c->>'id', c->>'workflow_run_id', (c->>'step_index')::integer, c->>'change_type', \
     COALESCE(c->'change_data', 'null'::jsonb), \
     to_timestamp((c->>'created_at')::double precision / 1000), $2 \
     FROM (SELECT $1::text::jsonb AS c) AS change ON CONFLICT (id) DO NOTHING";
const UPSERT_DELIVERY: &str = "INSERT INTO deliveries (run_id, sink, body) \
     VALUES ($1, $2, $3::text::jsonb) ON CONFLICT (run_id, sink) DO UPDATE SET body = EXCLUDED.body";
const INSERT_TAG: &str =
    "INSERT INTO run_tags (tag, run_id, ord) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
const DELETE_RUN: &str = "DELETE FROM workflow_runs WHERE id = $1";
const DELETE_JOB: &str = "DELETE FROM jobs WHERE id = $1";
const PUT_GROUP: &str =
    "INSERT INTO process_groups (boot, key, body) VALUES ($1, $2, $3::text::jsonb) \
     ON CONFLICT (boot, key) DO UPDATE SET body = EXCLUDED.body";
const DELETE_GROUP: &str = "DELETE FROM process_groups WHERE boot = $1 AND key = $2";

const HOLD_SLOT: &str = "INSERT INTO slots (run_id, repo, daemon) VALUES ($1, $2, $3) \
     ON CONFLICT (run_id) DO UPDATE SET repo = EXCLUDED.repo, daemon = EXCLUDED.daemon";
// Wakes the daemons whose runs wait for this repository's slots.
const FREE_SLOT: &str = "WITH freed AS (DELETE FROM slots WHERE run_id = $1 AND daemon = $2 \
     RETURNING repo) SELECT pg_notify('baton_slots', repo) FROM freed";

// A transition of a run this daemon no longer holds fails its batch (see 002_daemons.sql).
const FENCE: &str = "SELECT baton_fence($1, $2)";
// A job's run, unless another daemon started one for it first.
const START_JOB: &str = "SELECT baton_job_once($1, $2)";

const STATEMENTS: [&str; 23] = [
    FENCE,
    START_JOB,
    HOLD_SLOT,
    FREE_SLOT,
    INSERT_RUN,
    UPDATE_HEAD,
    UPDATE_UNFINISHED,
    INSERT_EVENT,
    UPSERT_STEP,
    SET_TIMER,
    CLEAR_TIMER,
    INSERT_SUBJECT,
    UPSERT_JOB,
    INSERT_DEFINITION,
    CLEAR_LATEST,
    SET_LATEST,
    INSERT_CHANGE,
    UPSERT_DELIVERY,
    INSERT_TAG,
    DELETE_RUN,
    DELETE_JOB,
    PUT_GROUP,
    DELETE_GROUP,
];

/// One statement to run, with owned parameters.
struct Statement {
    sql: &'static str,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

fn stmt(sql: &'static str, params: Vec<Box<dyn ToSql + Sync + Send>>) -> Statement {
    Statement { sql, params }
}

/// A record's JSON as `jsonb` takes it. Records are JSON the engine encoded, so UTF-8; but
/// `jsonb` refuses the NUL character (`\u0000`), which a step's output may hold (`find
/// -print0`): it becomes U+FFFD, as bytes that are not UTF-8 already do.
fn utf8(bytes: Vec<u8>) -> String {
    let text = String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    if !text.contains("\\u0000") {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let escape = &rest[at..];
        if let Some(after) = escape.strip_prefix("\\u0000") {
            out.push_str("\\ufffd");
            rest = after;
        } else {
            // Any other escape (`\\` among them) is two characters at least: keep them.
            let len = escape.chars().take(2).map(char::len_utf8).sum::<usize>();
            out.push_str(&escape[..len]);
            rest = &escape[len..];
        }
    }
    out.push_str(rest);
    out
}

/// The statements of one operation, in the order they must run (a run's row before the rows
/// that refer to it).
fn statements(op: Op, boot: &str, daemon: &str, out: &mut Vec<Statement>) {
    match op {
        Op::Definition {
            id,
            digest,
            json,
            provenance,
        } => {
            out.push(stmt(
                INSERT_DEFINITION,
                vec![
                    Box::new(id.clone()),
                    Box::new(digest.clone()),
                    Box::new(utf8(json)),
                    Box::new(utf8(provenance)),
                ],
            ));
            out.push(stmt(
                CLEAR_LATEST,
                vec![Box::new(id.clone()), Box::new(digest.clone())],
            ));
            out.push(stmt(SET_LATEST, vec![Box::new(id), Box::new(digest)]));
        }
        Op::StartRun {
            head,
            event: (seq, event),
            subjects,
            job,
        } => {
            out.push(stmt(
                INSERT_RUN,
                vec![
                    Box::new(head.id.clone()),
                    Box::new(head.workflow_id),
                    Box::new(head.status.as_str().to_string()),
                    Box::new(utf8(head.json)),
                    Box::new(daemon.to_string()),
                ],
            ));
            out.push(stmt(
                INSERT_EVENT,
                vec![
                    Box::new(head.id.clone()),
                    Box::new(seq as i64),
                    Box::new(utf8(event)),
                ],
            ));
            for name in subjects {
                out.push(stmt(
                    INSERT_SUBJECT,
                    vec![Box::new(name), Box::new(head.id.clone())],
                ));
            }
            if let Some((id, json)) = job {
                out.push(stmt(START_JOB, vec![Box::new(id), Box::new(utf8(json))]));
            }
        }
        Op::Transition(t) => {
            let (reopened, finished) = (t.reopened(), t.finished());
            out.push(stmt(
                FENCE,
                vec![Box::new(t.run.clone()), Box::new(daemon.to_string())],
            ));
            for (seq, json) in t.events {
                out.push(stmt(
                    INSERT_EVENT,
                    vec![
                        Box::new(t.run.clone()),
                        Box::new(seq as i64),
                        Box::new(utf8(json)),
                    ],
                ));
            }
            for (idx, json) in t.steps {
                out.push(stmt(
                    UPSERT_STEP,
                    vec![
                        Box::new(t.run.clone()),
                        Box::new(idx as i32),
                        Box::new(utf8(json)),
                    ],
                ));
            }
            for (due, timer) in t.set_timers {
                out.push(stmt(
                    SET_TIMER,
                    vec![
                        Box::new(t.run.clone()),
                        Box::new(timer as i64),
                        Box::new(due as i64),
                    ],
                ));
            }
            for (_, timer) in t.cleared_timers {
                out.push(stmt(
                    CLEAR_TIMER,
                    vec![Box::new(t.run.clone()), Box::new(timer as i64)],
                ));
            }
            let unfinished = !t.status.is_terminal();
            if let Some(head) = t.head {
                out.push(stmt(
                    UPDATE_HEAD,
                    vec![
                        Box::new(t.run),
                        Box::new(t.status.as_str().to_string()),
                        Box::new(utf8(head)),
                        Box::new(unfinished),
                    ],
                ));
            } else if reopened || finished {
                out.push(stmt(
                    UPDATE_UNFINISHED,
                    vec![Box::new(t.run), Box::new(unfinished)],
                ));
            }
        }
        Op::Change { seq, json, .. } => {
            out.push(stmt(
                INSERT_CHANGE,
                vec![Box::new(utf8(json)), Box::new(seq as i64)],
            ));
        }
        Op::Job { id, json } => {
            out.push(stmt(UPSERT_JOB, vec![Box::new(id), Box::new(utf8(json))]));
        }
        Op::Delivery { run, sink, json } => out.push(stmt(
            UPSERT_DELIVERY,
            vec![Box::new(run), Box::new(sink), Box::new(utf8(json))],
        )),
        Op::Tag { tag, run, order } => out.push(stmt(
            INSERT_TAG,
            vec![Box::new(tag), Box::new(run), Box::new(order as i64)],
        )),
        Op::DeleteRun { id, job_id, .. } => {
            // Events, steps, changes, timers, subjects, tags and deliveries go with the row.
            out.push(stmt(DELETE_RUN, vec![Box::new(id)]));
            if let Some(job) = job_id {
                out.push(stmt(DELETE_JOB, vec![Box::new(job)]));
            }
        }
        Op::Slot {
            run,
            repo: Some(repo),
        } => out.push(stmt(
            HOLD_SLOT,
            vec![Box::new(run), Box::new(repo), Box::new(daemon.to_string())],
        )),
        Op::Slot { run, repo: None } => out.push(stmt(
            FREE_SLOT,
            vec![Box::new(run), Box::new(daemon.to_string())],
        )),
        Op::ProcessGroup { key, json } => out.push(match json {
            Some(json) => stmt(
                PUT_GROUP,
                vec![
                    Box::new(boot.to_string()),
                    Box::new(key),
                    Box::new(utf8(json)),
                ],
            ),
            None => stmt(
                DELETE_GROUP,
                vec![Box::new(boot.to_string()), Box::new(key)],
            ),
        }),
    }
}

/// Writes `group` in one transaction, its statements pipelined.
async fn write_group(
    client: &mut deadpool_postgres::Object,
    prepared: &HashMap<&'static str, tokio_postgres::Statement>,
    group: &[&Statement],
) -> std::result::Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    {
        let pending = group.iter().map(|s| {
            let refs: Vec<&(dyn ToSql + Sync)> = s
                .params
                .iter()
                .map(|p| &**p as &(dyn ToSql + Sync))
                .collect();
            let statement = &prepared[s.sql];
            let tx = &tx;
            async move { tx.execute(statement, &refs).await }
        });
        futures_util::future::try_join_all(pending).await?;
    }
    tx.commit().await
}

/// The committer's connection, its statements prepared.
struct Connection {
    client: deadpool_postgres::Object,
    prepared: HashMap<&'static str, tokio_postgres::Statement>,
}

impl Connection {
    async fn prepare(client: deadpool_postgres::Object) -> std::result::Result<Connection, String> {
        let mut prepared = HashMap::new();
        for sql in STATEMENTS {
            let statement = client
                .prepare(sql)
                .await
                .map_err(|e| format!("cannot prepare the store's statements: {}", message(&e)))?;
            prepared.insert(sql, statement);
        }
        Ok(Connection { client, prepared })
    }

    /// A new connection after the last one was lost: the server restarted, the network
    /// broke. Whether this daemon still holds its runs is the lease's business (see
    /// [`Cluster::renew`]): a daemon cut off longer than its lease stops.
    async fn again(pool: &Pool, name: &str) -> std::result::Result<Connection, String> {
        let client = pool.get().await.map_err(|e| message(&e))?;
        session_setup(&client).await.map_err(|e| message(&e))?;
        tracing::warn!("{name}: the store's connection was lost and is back");
        Connection::prepare(client).await
    }
}

/// Writes `batches` and says how each went: all in one transaction when they can be; when
/// that fails, in halves, so one bad batch fails alone in about log n transactions instead of
/// dragging its neighbours down. Returns the results and the transactions it took.
async fn write_batches(
    connection: &mut Connection,
    batches: &[Vec<Statement>],
) -> (Vec<std::result::Result<(), String>>, u64) {
    let mut results: Vec<Option<std::result::Result<(), String>>> = vec![None; batches.len()];
    let mut transactions = 0;
    let mut ranges = vec![(0, batches.len())];
    while let Some((lo, hi)) = ranges.pop() {
        let group: Vec<&Statement> = batches[lo..hi].iter().flatten().collect();
        transactions += 1;
        match write_group(&mut connection.client, &connection.prepared, &group).await {
            Ok(()) => (lo..hi).for_each(|i| results[i] = Some(Ok(()))),
            Err(e) if hi - lo == 1 => results[lo] = Some(Err(message(&e))),
            Err(e) if connection.client.is_closed() => {
                (lo..hi).for_each(|i| results[i] = Some(Err(message(&e))));
            }
            Err(_) => {
                let mid = lo + (hi - lo) / 2;
                ranges.push((mid, hi));
                ranges.push((lo, mid));
            }
        }
    }
    let results = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("not written".into())))
        .collect();
    (results, transactions)
}

/// The committer task: drains waiting batches, writes them in one transaction, answers all.
async fn committer(
    inner: std::sync::Weak<Inner>,
    client: deadpool_postgres::Object,
    mut rx: mpsc::UnboundedReceiver<Request>,
) {
    // More batches than this wait for the next transaction, bounding one commit's latency.
    const MAX_GROUP: usize = 2_000;
    // How long a commit waits for the database to come back before its caller hears of it.
    const OUTAGE: Duration = Duration::from_secs(300);
    let mut connection = match Connection::prepare(client).await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!("{e}");
            None
        }
    };
    while let Some(first) = rx.recv().await {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut requests = vec![first];
        while requests.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(req) => requests.push(req),
                Err(_) => break,
            }
        }
        let mut batches = Vec::with_capacity(requests.len());
        let mut answers = Vec::with_capacity(requests.len());
        for req in requests {
            let mut out = Vec::new();
            for op in req.batch.ops {
                statements(op, &inner.boot, &inner.daemon, &mut out);
            }
            batches.push(out);
            answers.push(req.done);
        }
        let started = Instant::now();
        let count: usize = batches.iter().map(Vec::len).sum();
        let mut transactions = 0;
        let mut attempt = 0;
        let results = loop {
            if connection.as_ref().is_none_or(|c| c.client.is_closed()) {
                connection = None;
                match Connection::again(&inner.pool, &inner.describe).await {
                    Ok(c) => connection = Some(c),
                    Err(e) if started.elapsed() < OUTAGE => {
                        // Nothing is acknowledged meanwhile: the callers wait, as they
                        // would for a slow disk.
                        attempt += 1;
                        let wait = crate::backoff::jittered(
                            Duration::from_millis(100),
                            Duration::from_secs(5),
                            attempt,
                        );
                        tracing::warn!(
                            "{}: no connection ({e}); trying again in {wait:?}",
                            inner.describe
                        );
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    Err(e) => {
                        let message = format!(
                            "no connection to the database for {} s: {e}",
                            OUTAGE.as_secs()
                        );
                        break batches
                            .iter()
                            .map(|_| Err(message.clone()))
                            .collect::<Vec<_>>();
                    }
                }
            }
            let Some(c) = connection.as_mut() else {
                continue;
            };
            let (results, n) = write_batches(c, &batches).await;
            transactions += n;
            if results.iter().any(|r| r.is_err())
                && c.client.is_closed()
                && started.elapsed() < OUTAGE
            {
                // Lost mid-commit. Every statement is idempotent (keyed inserts, upserts,
                // deletes), so the group is written again on a new connection whether or
                // not the lost commit reached the disk.
                continue;
            }
            break results;
        };
        let stats = &inner.stats;
        stats
            .flush_us
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        stats.flushes.fetch_add(transactions, Ordering::Relaxed);
        stats
            .batches
            .fetch_add(answers.len() as u64, Ordering::Relaxed);
        stats.writes.fetch_add(count as u64, Ordering::Relaxed);
        drop(inner);
        for (done, result) in answers.into_iter().zip(results) {
            if let Err(e) = &result {
                tracing::error!("a commit failed: {e}");
            }
            let _ = done.send(result);
        }
    }
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

/// Listens for the notifications that wake this daemon (a command for a run it holds) and its
/// waiting senders (an answer); on a lost connection, connects again a second later, the
/// polls covering the gap.
async fn listen(inner: std::sync::Weak<Inner>, config: tokio_postgres::Config) {
    use futures_util::StreamExt;
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(Ok(message)) = messages.next().await {
                        if let tokio_postgres::AsyncMessage::Notification(n) = message {
                            let note = (n.channel().to_string(), n.payload().to_string());
                            if tx.send(note).is_err() {
                                break;
                            }
                        }
                    }
                });
                if client
                    .batch_execute("LISTEN baton_inbox; LISTEN baton_reply; LISTEN baton_slots")
                    .await
                    .is_ok()
                {
                    while let Some((channel, payload)) = rx.recv().await {
                        let Some(inner) = inner.upgrade() else {
                            driver.abort();
                            return;
                        };
                        match channel.as_str() {
                            "baton_inbox" if payload == inner.daemon => {
                                inner.inbox_bell.notify_one()
                            }
                            "baton_reply" => inner.reply_bell.notify_waiters(),
                            "baton_slots" => inner.slots_bell.notify_one(),
                            _ => {}
                        }
                    }
                }
                driver.abort();
            }
            Err(e) => match inner.upgrade() {
                Some(inner) => tracing::warn!(
                    "{}: cannot listen for notifications ({}); polling meanwhile",
                    inner.describe,
                    message(&e)
                ),
                None => return,
            },
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

const RENEW: &str = "UPDATE daemons SET renewed_at = now(), \
     lease_until = now() + make_interval(secs => $2::bigint / 1000.0) \
     WHERE id = $1 AND lease_until > now() RETURNING id";
// Deleting a lapsed daemon locks its row, as its renewal does: one of the two wins, so a
// daemon renewing at the last moment is either kept or learns it lost its runs.
const EXPIRE: &str = "DELETE FROM daemons WHERE lease_until < now() RETURNING id";
const ADOPT: &str = "UPDATE workflow_runs SET owner = $1 WHERE id IN (SELECT id FROM \
     workflow_runs r WHERE unfinished AND (owner IS NULL OR NOT EXISTS \
     (SELECT 1 FROM daemons d WHERE d.id = r.owner AND d.lease_until > now())) \
     ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id";
const OWN: &str =
    "SELECT id FROM workflow_runs WHERE unfinished AND owner = $1 ORDER BY id FOR UPDATE";
const RELEASE: &str =
    "UPDATE workflow_runs SET owner = NULL WHERE id = $1 AND owner = $2 RETURNING id";
// Commands older than any sender waits for: their sender or their holder is gone.
const SWEEP_INBOX: &str =
    "DELETE FROM inbox WHERE created_at < now() - interval '10 minutes' RETURNING id";
// Takes the run unless a live daemon holds it; answers its holder after (NULL: unknown run).
// `FOR UPDATE` first, so that a transition of the holder in flight (its fence holds the row
// `FOR SHARE`) commits before the claim looks.
const CLAIM: &str = "WITH locked AS (SELECT id FROM workflow_runs WHERE id = $1 FOR UPDATE), \
     taken AS (UPDATE workflow_runs r SET owner = $2 FROM locked WHERE r.id = locked.id \
     AND owner IS DISTINCT FROM $2 AND (owner IS NULL OR NOT EXISTS \
     (SELECT 1 FROM daemons d WHERE d.id = r.owner AND d.lease_until > now())) RETURNING owner) \
     SELECT COALESCE((SELECT owner FROM taken), (SELECT owner FROM workflow_runs WHERE id = $1))";
// This daemon's runs, and runs no live daemon holds (it may take them).
const HELD: &str = "SELECT id FROM workflow_runs r WHERE id = ANY($1) AND (owner = $2 \
     OR owner IS NULL OR NOT EXISTS (SELECT 1 FROM daemons d WHERE d.id = r.owner \
     AND d.lease_until > now()))";
const TAKE_INBOX: &str = "UPDATE inbox SET taken_by = $1 WHERE id IN (SELECT i.id FROM inbox i \
     JOIN workflow_runs r ON r.id = i.run_id WHERE i.taken_by IS NULL AND r.owner = $1 \
     ORDER BY i.id FOR UPDATE OF i SKIP LOCKED) RETURNING id, run_id, command::text";
const ANSWER: &str = "WITH answered AS (UPDATE inbox SET reply = $2::text::jsonb WHERE id = $1 \
     RETURNING sender) SELECT pg_notify('baton_reply', sender) FROM answered";

impl Cluster for PgStore {
    fn daemon(&self) -> &str {
        &self.inner.daemon
    }

    fn lease(&self) -> Duration {
        self.inner.lease
    }

    fn renew(&self) -> Result<()> {
        let inner = self.inner.clone();
        let renewed = self.block(async move {
            // A connection of its own, so that a busy pool never delays it, and a bound, so
            // that a hung link is an error well inside the lease.
            let mut conn = inner.lease_conn.lock().await;
            let attempt = tokio::time::timeout(inner.lease / 4, async {
                if conn.as_ref().is_none_or(|c| c.is_closed()) {
                    let (client, connection) = inner.pg_config.connect(NoTls).await?;
                    tokio::spawn(connection);
                    *conn = Some(client);
                }
                let client = conn.as_ref().expect("just connected");
                let lease = inner.lease.as_millis() as i64;
                client.query(RENEW, &[&inner.daemon, &lease]).await
            })
            .await;
            match attempt {
                Ok(Ok(rows)) => Ok(!rows.is_empty()),
                Ok(Err(e)) => {
                    *conn = None;
                    Err(db_err(&inner.describe, e))
                }
                Err(_) => {
                    *conn = None;
                    Err(Error::Database {
                        store: inner.describe.to_string(),
                        message: format!("the lease's renewal took over {:?}", inner.lease / 4),
                    })
                }
            }
        })?;
        if !renewed {
            return Err(Error::LeaseLost {
                store: self.inner.describe.to_string(),
                daemon: self.inner.daemon.clone(),
                lease_ms: self.inner.lease.as_millis(),
            });
        }
        Ok(())
    }

    fn adopt(&self, own: bool, limit: usize) -> Result<Vec<String>> {
        let pool = self.inner.pool.clone();
        let name = self.inner.describe.clone();
        let daemon = self.inner.daemon.clone();
        let mut ids = self.block(async move {
            let err = |e: tokio_postgres::Error| db_err(&name, e);
            let mut client = pool.get().await.map_err(|e| db_err(&name, e))?;
            // Under the lock daemons register with: a daemon registered before this is seen
            // alive by the statements below, and one registering now waits for the commit.
            let tx = client.transaction().await.map_err(err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CLUSTER_LOCK])
                .await
                .map_err(err)?;
            for row in tx.query(EXPIRE, &[]).await.map_err(err)? {
                let lapsed: String = row.get(0);
                tracing::warn!("daemon `{lapsed}` let its lease lapse: its runs are free to take");
            }
            let ids: Vec<String> = tx
                .query(ADOPT, &[&daemon, &(limit as i64)])
                .await
                .map_err(err)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if !ids.is_empty() {
                tracing::warn!("took over {} run(s) of lapsed daemons", ids.len());
            }
            let mut all = ids;
            if own {
                let mine = tx.query(OWN, &[&daemon]).await.map_err(err)?;
                all.extend(mine.iter().map(|r| r.get::<_, String>(0)));
            }
            tx.commit().await.map_err(err)?;
            Ok(all)
        })?;
        if let Ok(swept) = self.ids(SWEEP_INBOX, vec![]) {
            if !swept.is_empty() {
                tracing::warn!("dropped {} command(s) nobody answered or read", swept.len());
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    fn release(&self, run: &str) -> Result<()> {
        self.ids(RELEASE, vec![text(run), text(&self.inner.daemon)])
            .map(drop)
    }

    fn claim(&self, run: &str) -> Result<Option<String>> {
        let rows = self.rows(CLAIM, vec![text(run), text(&self.inner.daemon)])?;
        let holder: Option<String> = rows.first().and_then(|r| r.get(0));
        Ok(holder.filter(|h| *h != self.inner.daemon))
    }

    fn held(&self, runs: &[String]) -> Result<std::collections::HashSet<String>> {
        Ok(self
            .ids(
                HELD,
                vec![Param::Texts(runs.to_vec()), text(&self.inner.daemon)],
            )?
            .into_iter()
            .collect())
    }

    fn forward(&self, run: &str, command: Value) -> BoxFuture<'static, Result<Value>> {
        let inner = self.inner.clone();
        let run = run.to_string();
        let (tx, rx) = oneshot::channel();
        self.inner.handle.spawn(async move {
            let _ = tx.send(forward(&inner, &run, command).await);
        });
        Box::pin(async move { rx.await.map_err(|_| Error::ShuttingDown)? })
    }

    fn inbox(&self) -> Result<Vec<(i64, String, Value)>> {
        let mut out = Vec::new();
        for row in self.rows(TAKE_INBOX, vec![text(&self.inner.daemon)])? {
            let (id, run): (i64, String) = (row.get(0), row.get(1));
            match decode::<Value>("inbox", &id.to_string(), &row.get::<_, String>(2)) {
                Ok(command) => out.push((id, run, command)),
                Err(e) => tracing::error!("{e}; skipped"),
            }
        }
        out.sort_by_key(|(id, _, _)| *id);
        Ok(out)
    }

    fn answer(&self, id: i64, reply: Value) -> Result<()> {
        self.rows(ANSWER, vec![Param::Int(id), text(&reply.to_string())])
            .map(drop)
    }

    fn inbox_wait(&self, poll: Duration) -> Wait {
        super::wait_on(self.inner.inbox_bell.clone(), poll)
    }

    fn take_slot(
        &self,
        repo: &str,
        run: &str,
        limit: usize,
    ) -> Result<std::result::Result<(), usize>> {
        let pool = self.inner.pool.clone();
        let name = self.inner.describe.clone();
        let (repo, run, daemon) = (repo.to_string(), run.to_string(), self.inner.daemon.clone());
        self.block(async move {
            let err = |e: tokio_postgres::Error| db_err(&name, e);
            let mut client = pool.get().await.map_err(|e| db_err(&name, e))?;
            let tx = client.transaction().await.map_err(err)?;
            // One daemon at a time counts and takes this repository's slots.
            tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&repo])
                .await
                .map_err(err)?;
            let row = tx
                .query_one(
                    "SELECT count(*), count(*) FILTER (WHERE daemon <> $3) FROM slots \
                     WHERE repo = $1 AND run_id <> $2",
                    &[&repo, &run, &daemon],
                )
                .await
                .map_err(err)?;
            let (held, elsewhere): (i64, i64) = (row.get(0), row.get(1));
            if held as usize >= limit {
                tx.rollback().await.map_err(err)?;
                return Ok(Err(elsewhere as usize));
            }
            tx.execute(HOLD_SLOT, &[&run, &repo, &daemon])
                .await
                .map_err(err)?;
            tx.commit().await.map_err(err)?;
            Ok(Ok(()))
        })
    }

    fn slots_wait(&self, poll: Duration) -> Wait {
        super::wait_on(self.inner.slots_bell.clone(), poll)
    }

    fn leave(&self) -> Result<()> {
        self.rows(
            "DELETE FROM daemons WHERE id = $1 RETURNING id",
            vec![text(&self.inner.daemon)],
        )
        .map(drop)
    }
}

/// Puts `command` in the inbox, wakes the run's holder, and waits for its answer. Each
/// statement takes a pooled connection and gives it back: waiting senders must not empty the
/// pool the engine reads through.
async fn forward(inner: &Inner, run: &str, command: Value) -> Result<Value> {
    let name = &inner.describe;
    let err = |e: tokio_postgres::Error| db_err(name, e);
    let pooled = || async { inner.pool.get().await.map_err(|e| db_err(name, e)) };
    let row = pooled()
        .await?
        .query_opt(
            "INSERT INTO inbox (run_id, command, sender) SELECT id, $2::text::jsonb, $3 \
             FROM workflow_runs WHERE id = $1 RETURNING id, (SELECT owner FROM workflow_runs \
             WHERE id = $1)",
            &[&run, &command.to_string(), &inner.daemon],
        )
        .await
        .map_err(err)?;
    let Some(row) = row else {
        return Ok(serde_json::json!({ "refusal": "unknown_run" }));
    };
    let (id, holder): (i64, Option<String>) = (row.get(0), row.get(1));
    let holder = holder.unwrap_or_default();
    pooled()
        .await?
        .execute("SELECT pg_notify('baton_inbox', $1)", &[&holder])
        .await
        .map_err(err)?;
    let deadline = Instant::now() + REPLY_WAIT;
    loop {
        let answered = inner.reply_bell.notified();
        tokio::pin!(answered);
        answered.as_mut().enable();
        let row = pooled()
            .await?
            .query_opt("SELECT reply::text FROM inbox WHERE id = $1", &[&id])
            .await
            .map_err(err)?;
        match row.map(|r| r.get::<_, Option<String>>(0)) {
            // The run was deleted meanwhile, and its commands with it.
            None => return Ok(serde_json::json!({ "refusal": "unknown_run" })),
            Some(Some(reply)) => {
                pooled()
                    .await?
                    .execute("DELETE FROM inbox WHERE id = $1", &[&id])
                    .await
                    .map_err(err)?;
                return decode("inbox", &id.to_string(), &reply);
            }
            Some(None) if Instant::now() >= deadline => {
                let taken = pooled()
                    .await?
                    .query_opt(
                        "DELETE FROM inbox WHERE id = $1 RETURNING taken_by IS NOT NULL",
                        &[&id],
                    )
                    .await
                    .map_err(err)?
                    .is_some_and(|r| r.get::<_, bool>(0));
                return Err(Error::Database {
                    store: name.to_string(),
                    message: format!(
                        "daemon `{holder}` holds run {run} and did not answer within {} s; \
                         the command {}",
                        REPLY_WAIT.as_secs(),
                        if taken {
                            "was taken and may still apply: check `baton show`"
                        } else {
                            "was withdrawn"
                        }
                    ),
                });
            }
            Some(None) => {
                tokio::select! {
                    _ = answered => {}
                    _ = tokio::time::sleep(REPLY_POLL) => {}
                }
            }
        }
    }
}
