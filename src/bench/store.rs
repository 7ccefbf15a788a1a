//! `baton bench --store postgres`: the engine on sled and on PostgreSQL side by side, in one
//! run, on the same job: throughput of many concurrent no-op runs (every transition durable),
//! the latency of one transition when nothing queues, and the CPU each transition costs baton
//! and, when the server runs on this machine, the server.
//!
//! The database comes from `BATON_DATABASE_URL` (a server on which this user may create
//! databases): the benchmark makes a database of its own there and drops it afterwards.

use baton_actors::store::postgres::{self, PgConfig};
use baton_actors::store::Backend;
use baton_actors::Engine;
use serde::Serialize;
use serde_json::Map;
use std::path::Path;

use super::http::{own_cpu_s, process_cpu_s};
use super::{drive, noop_workflow, quantiles, Quantiles};
use crate::backend::Failure;
use crate::config::Config;

/// One backend's figures.
#[derive(Serialize, Debug, Default)]
pub struct StoreReport {
    store: String,
    runs: usize,
    steps: usize,
    transitions: u64,
    transitions_per_s: f64,
    /// Latency under that load (queueing included).
    peak_latency_ms: Quantiles,
    /// baton's CPU (user + system) per transition, µs.
    baton_cpu_us_per_transition: f64,
    /// The database server's CPU per transition, µs (a server on this machine only).
    server_cpu_us_per_transition: Option<f64>,
    transitions_per_commit: f64,
    /// One run at a time: the latency of a transition when nothing queues.
    idle_latency_ms: Quantiles,
}

/// What `baton bench --store postgres --json` prints.
#[derive(Serialize, Debug)]
pub struct Comparison {
    cores: usize,
    sled: StoreReport,
    postgres: StoreReport,
}

/// Runs the comparison.
pub async fn compare(
    config: &Config,
    runs: usize,
    steps: usize,
    dir: &Path,
    json: bool,
) -> Result<i32, Failure> {
    let admin = crate::config::database_url().ok_or_else(|| {
        Failure::usage(
            "bench --store postgres: set BATON_DATABASE_URL to a PostgreSQL server on which this \
             user may create a database (the benchmark makes its own and drops it)",
        )
    })?;
    let url = postgres::scratch_database(&admin, "baton_bench")?;
    let pg = Backend::Postgres(PgConfig {
        url: url.clone(),
        pool_size: config.store.pool_size,
        lease: config.store.lease.0,
    });
    let result = async {
        let sled = one(config, Backend::Sled, &dir.join("sled"), runs, steps).await?;
        let postgres = one(config, pg, &dir.join("postgres"), runs, steps).await?;
        Ok::<_, Failure>(Comparison {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            sled,
            postgres,
        })
    }
    .await;
    if let Err(e) = postgres::drop_scratch_database(&admin, &url) {
        eprintln!("bench: could not drop the benchmark's database: {e}");
    }
    let comparison = result?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&comparison).unwrap_or_default()
        );
    } else {
        for r in [&comparison.sled, &comparison.postgres] {
            println!(
                "{:<9} {:>9.0} transitions/s  peak p50 {:.2} ms p99 {:.2} ms  idle p50 {:.2} ms p99 {:.2} ms  baton {:.0} µs/transition{}  {:.1} per commit",
                r.store,
                r.transitions_per_s,
                r.peak_latency_ms.p50,
                r.peak_latency_ms.p99,
                r.idle_latency_ms.p50,
                r.idle_latency_ms.p99,
                r.baton_cpu_us_per_transition,
                r.server_cpu_us_per_transition
                    .map(|s| format!(", server {s:.0} µs"))
                    .unwrap_or_default(),
                r.transitions_per_commit,
            );
        }
    }
    Ok(0)
}

async fn one(
    config: &Config,
    backend: Backend,
    dir: &Path,
    runs: usize,
    steps: usize,
) -> Result<StoreReport, Failure> {
    let name = match &backend {
        Backend::Sled => "sled",
        Backend::Postgres(_) => "postgres",
    };
    eprintln!("bench: {name}: {runs} concurrent runs x {steps} no-op steps");
    let local_server = matches!(backend, Backend::Postgres(_));
    let econf = baton_actors::EngineConfig {
        backend,
        ..super::engine_config(config)?
    };
    let engine = Engine::open(dir, econf).await?;
    engine
        .register_workflow(noop_workflow("bench-noop", steps), "bench")
        .await?;
    let (cpu, server) = (own_cpu_s(), local_server.then(server_cpu_s).flatten());
    let elapsed = drive(&engine, "bench-noop", runs, runs, Map::new()).await?;
    let cpu = own_cpu_s() - cpu;
    let server = server.zip(local_server.then(server_cpu_s).flatten());
    // Per run: created, started, 2 per step, completed.
    let transitions = (runs * (2 * steps + 3)) as u64;
    let stats = engine.commit_stats();
    let commits = stats
        .flushes
        .load(std::sync::atomic::Ordering::Relaxed)
        .max(1);
    let mut report = StoreReport {
        store: name.into(),
        runs,
        steps,
        transitions,
        transitions_per_s: transitions as f64 / elapsed.as_secs_f64(),
        peak_latency_ms: quantiles(&engine),
        baton_cpu_us_per_transition: cpu * 1e6 / transitions as f64,
        server_cpu_us_per_transition: server
            .map(|(before, after)| (after - before) * 1e6 / transitions as f64),
        transitions_per_commit: transitions as f64 / commits as f64,
        idle_latency_ms: Quantiles::default(),
    };
    // Nothing queued: one run at a time, each transition waits for its own commit.
    let idle = 100.min(runs).max(1);
    eprintln!("bench: {name}: {idle} runs one at a time");
    engine.latency().reset();
    drive(&engine, "bench-noop", idle, 1, Map::new()).await?;
    report.idle_latency_ms = quantiles(&engine);
    engine.shutdown().await?;
    Ok(report)
}

/// The CPU time of every `postgres` process on this machine, seconds; `None` when there is
/// none (the server is elsewhere).
fn server_cpu_s() -> Option<f64> {
    let mut total = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let is_server = std::fs::read_to_string(entry.path().join("comm"))
            .is_ok_and(|comm| comm.trim() == "postgres");
        if let (true, Ok(cpu)) = (is_server, process_cpu_s(pid)) {
            *total.get_or_insert(0.0) += cpu;
        }
    }
    total
}
