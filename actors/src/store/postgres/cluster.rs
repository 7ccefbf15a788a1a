//! Several daemons on one database ([`Cluster`]): the lease, taking over the runs of lapsed
//! daemons, claims, the inbox of forwarded commands with its notifications, and the slots of
//! repositories held across daemons.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;

use super::super::{BoxFuture, Cluster, Wait};
use super::connect::{db_err, message};
use super::sql::HOLD_SLOT;
use super::{decode, text, Inner, Param, PgStore};
use crate::error::{Error, Result};

/// The transaction lock under which daemons register and take over lapsed daemons' runs, so
/// that a daemon registering (or restarting) is seen by every takeover that follows
/// (`batoncl`).
pub(super) const CLUSTER_LOCK: i64 = 0x0062_6174_6f6e_636c;

/// How often a waiting sender looks for its answer, and the holder for commands, when no
/// notification came (a dropped listener connection).
const REPLY_POLL: Duration = Duration::from_millis(250);
/// How long a sender waits for the holder's answer.
const REPLY_WAIT: Duration = Duration::from_secs(60);

/// Listens for the notifications that wake this daemon (a command for a run it holds) and its
/// waiting senders (an answer); on a lost connection, connects again a second later, the
/// polls covering the gap.
pub(super) async fn listen(inner: std::sync::Weak<Inner>, config: tokio_postgres::Config) {
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
        super::super::wait_on(self.inner.inbox_bell.clone(), poll)
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
        super::super::wait_on(self.inner.slots_bell.clone(), poll)
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
