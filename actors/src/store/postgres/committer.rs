//! The committer: one task on one connection that writes every waiting batch in one pipelined
//! transaction (one WAL flush) and only then answers the callers; a group that fails is
//! written again in halves, so one bad batch fails alone.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;

use super::super::Batch;
use super::connect::{message, session_setup};
use super::sql::{statements, Statement, STATEMENTS};
use super::Inner;

pub(super) struct Request {
    pub(super) batch: Batch,
    pub(super) done: oneshot::Sender<std::result::Result<(), String>>,
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
    /// [`Cluster::renew`](crate::store::Cluster::renew)): a daemon cut off longer than its
    /// lease stops.
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
pub(super) async fn committer(
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
