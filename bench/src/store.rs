//! `baton bench --store postgres`: the engine on sled, on PostgreSQL, and as two daemons
//! sharing one PostgreSQL database, side by side in one run, on the same job: throughput of
//! many concurrent no-op runs (every transition durable), the latency of one transition when
//! nothing queues, and the CPU each transition costs baton and, when the server runs on this
//! machine, the server. The two daemons are two engines in this process, each with its own
//! data dir, name, lease, pool and committer, half the runs started on each: on one machine
//! they share its cores, so the CPU per transition is the figure that tells how they scale.
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
use baton::backend::Failure;
use baton::config::Config;

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
    postgres_2_daemons: StoreReport,
}

/// Runs the comparison.
pub async fn compare(
    config: &Config,
    runs: usize,
    steps: usize,
    dir: &Path,
    json: bool,
) -> Result<i32, Failure> {
    let admin = baton::config::database_url()
        .map_err(|e| Failure::usage(e.to_string()))?
        .ok_or_else(|| {
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
        let sled = one(config, &[Backend::Sled], &dir.join("sled"), runs, steps).await?;
        let postgres = one(
            config,
            std::slice::from_ref(&pg),
            &dir.join("postgres"),
            runs,
            steps,
        )
        .await?;
        let two = [pg.clone(), pg];
        let postgres_2_daemons = one(config, &two, &dir.join("postgres-2"), runs, steps).await?;
        Ok::<_, Failure>(Comparison {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            sled,
            postgres,
            postgres_2_daemons,
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
        for r in [
            &comparison.sled,
            &comparison.postgres,
            &comparison.postgres_2_daemons,
        ] {
            println!(
                "{:<20} {:>9.0} transitions/s  peak p50 {:.2} ms p99 {:.2} ms  idle p50 {:.2} ms p99 {:.2} ms  baton {:.0} µs/transition{}  {:.1} per commit",
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

/// One figure: `backends.len()` engines (daemons) on their backends, the runs shared out.
async fn one(
    config: &Config,
    backends: &[Backend],
    dir: &Path,
    runs: usize,
    steps: usize,
) -> Result<StoreReport, Failure> {
    let name = match (&backends[0], backends.len()) {
        (Backend::Sled, _) => "sled".to_string(),
        (Backend::Postgres(_), 1) => "postgres".to_string(),
        (Backend::Postgres(_), n) => format!("postgres, {n} daemons"),
    };
    eprintln!("bench: {name}: {runs} concurrent runs x {steps} no-op steps");
    let local_server = matches!(backends[0], Backend::Postgres(_));
    let mut engines = Vec::new();
    for (i, backend) in backends.iter().enumerate() {
        let econf = baton_actors::EngineConfig {
            backend: backend.clone(),
            ..super::engine_config(config)?
        };
        let engine = Engine::open(&dir.join(format!("daemon-{i}")), econf).await?;
        engine
            .register_workflow(noop_workflow("bench-noop", steps), "bench")
            .await?;
        engine.resume().await?;
        engines.push(engine);
    }
    let share = runs / engines.len();
    let (cpu, server) = (own_cpu_s(), local_server.then(server_cpu_s).flatten());
    let drives = engines
        .iter()
        .map(|engine| drive(engine, "bench-noop", share, share, Map::new()));
    let elapsed = futures_util::future::try_join_all(drives)
        .await?
        .into_iter()
        .max()
        .unwrap_or_default();
    let cpu = own_cpu_s() - cpu;
    let server = server.zip(local_server.then(server_cpu_s).flatten());
    // Per run: created, started, 2 per step, completed.
    let transitions = (share * engines.len() * (2 * steps + 3)) as u64;
    let commits = engines
        .iter()
        .map(|e| {
            e.commit_stats()
                .flushes
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum::<u64>()
        .max(1);
    let mut report = StoreReport {
        store: name.clone(),
        runs,
        steps,
        transitions,
        transitions_per_s: transitions as f64 / elapsed.as_secs_f64(),
        // The first daemon's (half the runs, with two): the daemons are alike.
        peak_latency_ms: quantiles(&engines[0]),
        baton_cpu_us_per_transition: cpu * 1e6 / transitions as f64,
        server_cpu_us_per_transition: server
            .map(|(before, after)| (after - before) * 1e6 / transitions as f64),
        transitions_per_commit: transitions as f64 / commits as f64,
        idle_latency_ms: Quantiles::default(),
    };
    // Nothing queued: one run at a time, each transition waits for its own commit.
    let idle = 100.min(runs).max(1);
    eprintln!("bench: {name}: {idle} runs one at a time");
    engines[0].latency().reset();
    drive(&engines[0], "bench-noop", idle, 1, Map::new()).await?;
    report.idle_latency_ms = quantiles(&engines[0]);
    for engine in engines {
        engine.shutdown().await?;
    }
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
