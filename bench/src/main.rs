//! `baton-bench` (also run as `baton bench`): the engine benchmark. Each phase runs in a fresh
//! store under a temporary directory, with every transition fsynced (group commit). Figures go to
//! docs/PERFORMANCE.md; nothing here is asserted by the test suite (machines are noisy).
//! `ui` ([`ui`]) measures the admin UI over a store of 10,000 runs; `http` ([`http`]) runs
//! through a real daemon's API; `--store postgres` ([`store`]) compares the stores; `edges`
//! ([`edges`]) floods a real daemon's edges; `sandbox` ([`sandbox`]) times bubblewrap.
//!
//! A binary of its own, so that the product carries none of it. It measures the engine in its
//! own process and a `baton` built beside it (or named by `BATON_BIN`) for everything that needs
//! a daemon.

/// The same allocator as `baton`'s: the engine phases run in this process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod edges;
mod http;
mod sandbox;
#[cfg(feature = "postgres")]
mod store;
mod ui;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use baton_actors::{
    ActionContext, Definition, Engine, EngineConfig, EventKind, Notice, RunStatus, StepDef,
};
use clap::Args;
use serde::Serialize;
use serde_json::{json, Map, Value};

use baton::backend::Failure;
use baton::config::Config;
use clap::Parser;

/// `baton-bench` (or `baton bench`): its arguments.
#[derive(Parser, Debug)]
#[command(
    name = "baton-bench",
    version,
    about = "Benchmark baton (results: docs/PERFORMANCE.md)"
)]
struct Cli {
    /// Config file (default: $BATON_CONFIG, else config.toml in the data dir).
    #[arg(long, env = "BATON_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Data directory (default: $BATON_DATA_DIR, else ~/.baton).
    #[arg(long, env = "BATON_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    bench: BenchArgs,
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    // With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `[telemetry]`), the engine's spans are exported
    // as `baton serve` exports them: what tracing costs per transition (docs/PERFORMANCE.md).
    let settings = Config::load(cli.config.as_deref())
        .map(|c| c.telemetry)
        .unwrap_or_default();
    let exporter = match settings.resolve() {
        Ok(None) => None,
        Ok(Some((endpoint, service))) => {
            match baton::telemetry::exporter(&endpoint, &service, runtime.handle().clone()) {
                Ok((exporter, tracer)) => {
                    baton::logging::init(baton::logging::LogFormat::Text, Some(tracer));
                    eprintln!("bench: exporting traces to {endpoint}");
                    Some(exporter)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(2);
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let code = match runtime.block_on(start(cli)) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {}", f.message);
            f.exit_code()
        }
    };
    if let Some(exporter) = exporter {
        exporter.shutdown();
    }
    std::process::exit(code);
}

async fn start(cli: Cli) -> Result<i32, Failure> {
    let config = Config::load(cli.config.as_deref()).map_err(|e| Failure::usage(e.to_string()))?;
    if let Some(BenchWhat::Fill { runs }) = cli.bench.what {
        return fill(&config, &config.data_dir(cli.data_dir.as_deref()), runs).await;
    }
    run(cli.bench, &config).await
}

/// The `baton` binary the benchmarks start daemons from: `BATON_BIN` (which `baton bench`
/// sets to itself), else the `baton` beside this binary.
fn baton_exe() -> Result<PathBuf, Failure> {
    if let Some(path) = std::env::var_os("BATON_BIN") {
        return Ok(PathBuf::from(path));
    }
    let here = std::env::current_exe().map_err(|e| Failure::other(e.to_string()))?;
    let beside = here.with_file_name("baton");
    if beside.is_file() {
        Ok(beside)
    } else {
        Err(Failure::usage(format!(
            "no baton binary beside {} (build it: `cargo build --release`), and BATON_BIN is not set",
            here.display()
        )))
    }
}

/// The benchmark's options.
#[derive(Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// A benchmark other than the engine's.
    #[command(subcommand)]
    what: Option<BenchWhat>,
    /// Concurrent runs in the throughput phase.
    #[arg(long, default_value_t = 1000)]
    runs: usize,
    /// No-op steps per run.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Parked (waiting) runs in the memory phase.
    #[arg(long, default_value_t = 100_000)]
    parked: usize,
    /// Unfinished runs killed with SIGKILL, then resumed.
    #[arg(long, default_value_t = 10_000)]
    resume: usize,
    /// Steps of the one long run.
    #[arg(long, default_value_t = 100_000)]
    long: usize,
    /// Where the stores go (default: a temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// JSON on stdout.
    #[arg(long)]
    json: bool,
    /// `postgres`: the throughput and latency phases on sled and on PostgreSQL
    /// (`BATON_DATABASE_URL`) side by side, with the CPU each transition costs.
    #[arg(long, value_parser = ["sled", "postgres"])]
    store: Option<String>,
}

/// The benchmarks besides the engine's.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum BenchWhat {
    /// The admin UI over a store of many runs: pages, search, and live events.
    Ui(ui::UiBenchArgs),
    /// Runs started and awaited through a real daemon's API (`POST /api/runs?wait=`),
    /// one build or several side by side.
    Http(http::HttpBenchArgs),
    /// A real daemon under a flood of large unsigned webhook bodies and under thousands of
    /// half-open connections: its memory, and `/healthz` from a fresh client meanwhile.
    Edges(edges::EdgesBenchArgs),
    /// What the sandbox adds: bubblewrap's start-up (cold and warm), a real check, and a
    /// whole issue→PR run, each beside the same on the host.
    Sandbox(sandbox::SandboxBenchArgs),
    /// Used by the engine benchmark: fill a store with unfinished runs, then wait to be killed.
    #[command(hide = true)]
    Fill {
        /// Runs to create.
        runs: usize,
    },
}

/// p50 and p99, ms.
#[derive(Serialize, Debug, Default)]
pub struct Quantiles {
    p50: f64,
    p99: f64,
    samples: u64,
}

/// What `baton bench --json` prints.
#[derive(Serialize, Debug, Default)]
pub struct Report {
    runs: usize,
    steps: usize,
    transitions: u64,
    transitions_per_s: f64,
    /// This process's CPU (user + system) over the throughput phase, per transition.
    cpu_us_per_transition: f64,
    transition_latency_ms: Quantiles,
    half_load_transitions_per_s: f64,
    peak_latency_ms: Quantiles,
    raw_batched_writes_per_s: f64,
    ratio_to_raw: f64,
    bytes_per_transition: f64,
    transitions_per_flush: f64,
    parked_runs: usize,
    rss_bytes_per_parked_run: f64,
    park_s: f64,
    resume_runs: usize,
    resume_ms: f64,
    resume_all_completed_ms: f64,
    long_run_steps: usize,
    long_run_s: f64,
    long_run_status: String,
    store_bytes_per_step: f64,
    long_run_head_bytes: usize,
}

fn noop_workflow(id: &str, steps: usize) -> Definition {
    let mut b = Definition::builder(id).max_transitions(steps as u64 + 10);
    for i in 0..steps {
        b = b.step(StepDef::action(format!("s{i}"), "noop"));
    }
    b.build()
}

fn rss_bytes() -> u64 {
    rss_bytes_of("self")
}

/// Resident memory of process `pid` (`self` for this one), from `/proc/<pid>/statm`; 0 when it
/// cannot be read.
pub(crate) fn rss_bytes_of(pid: &str) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

pub(crate) fn engine_config(config: &Config) -> Result<EngineConfig, Failure> {
    // Unthrottled: the figures measure the engine, not the admission limits sized to this
    // machine.
    Ok(EngineConfig {
        max_transitions: u64::MAX / 2,
        bus_capacity: 1 << 16,
        max_active_runs: 0,
        per_repo: 0,
        per_workflow: Default::default(),
        ..config.engine().map_err(|e| Failure::usage(e.to_string()))?
    })
}

/// Starts `count` runs of `workflow`, at most `window` unsettled at a time, and waits until
/// each is no longer pending or running. Starts are spawned, so they share group commits
/// as real callers (webhooks, API clients) would. Returns the elapsed time.
pub(crate) async fn drive(
    engine: &Engine,
    workflow: &str,
    count: usize,
    window: usize,
    input: Map<String, Value>,
) -> Result<Duration, Failure> {
    let mut sub = engine.subscribe();
    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let launch = |n: usize| {
        for _ in 0..n {
            let (engine, workflow, input, failed) = (
                engine.clone(),
                workflow.to_string(),
                input.clone(),
                failed_tx.clone(),
            );
            tokio::spawn(async move {
                if let Err(e) = engine.start(&workflow, input, None).await {
                    let _ = failed.send(e.to_string());
                }
            });
        }
    };
    let started = Instant::now();
    let mut launched = count.min(window);
    launch(launched);
    let mut settled = 0;
    while settled < count {
        tokio::select! {
            Some(e) = failed_rx.recv() => return Err(Failure::other(format!("a benchmark run could not start: {e}"))),
            n = sub.next() => match n {
                Some(Notice::Event(e)) => {
                    if matches!(e.kind, EventKind::RunCompleted | EventKind::RunFailed { .. } | EventKind::RunCancelled { .. } | EventKind::WaitStarted { .. }) {
                        settled += 1;
                        if launched < count {
                            launched += 1;
                            launch(1);
                        }
                    }
                }
                Some(Notice::Lagged { missed }) => return Err(Failure::other(format!("benchmark subscriber lagged by {missed}"))),
                Some(_) => {}
                None => return Err(Failure::other("engine stopped")),
            }
        }
    }
    Ok(started.elapsed())
}

fn quantiles(engine: &Engine) -> Quantiles {
    let (p50, samples) = engine.latency().quantile_ms(0.5);
    let (p99, _) = engine.latency().quantile_ms(0.99);
    Quantiles { p50, p99, samples }
}

/// Plain sled inserts of `size` bytes with a flush every `per_flush`: the engine's limit.
fn raw_writes(dir: &Path, count: usize, size: usize, per_flush: usize) -> Result<f64, Failure> {
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(64 * 1024 * 1024)
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(None)
        .open()
        .map_err(|e| Failure::other(format!("raw sled: {e}")))?;
    let value = vec![b'x'; size.saturating_sub(24).max(1)];
    let started = Instant::now();
    for i in 0..count {
        let key = format!("run_{:020}", i);
        db.insert(key.as_bytes(), value.as_slice())
            .map_err(|e| Failure::other(e.to_string()))?;
        if (i + 1) % per_flush.max(1) == 0 {
            db.flush().map_err(|e| Failure::other(e.to_string()))?;
        }
    }
    db.flush().map_err(|e| Failure::other(e.to_string()))?;
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Runs every phase (or the benchmark named by a subcommand).
async fn run(args: BenchArgs, config: &Config) -> Result<i32, Failure> {
    match args.what {
        Some(BenchWhat::Ui(ui_args)) => return ui::run(ui_args, config).await,
        Some(BenchWhat::Http(http_args)) => return http::run(http_args).await,
        Some(BenchWhat::Sandbox(sandbox_args)) => return sandbox::run(sandbox_args).await,
        Some(BenchWhat::Edges(edges_args)) => return edges::run(edges_args).await,
        Some(BenchWhat::Fill { .. }) | None => {}
    }
    #[cfg(not(feature = "postgres"))]
    if args.store.as_deref() == Some("postgres") {
        return Err(Failure::other(
            "bench --store postgres: this baton was built without the `postgres` cargo feature; \
             build it with `--features postgres` (a default feature)",
        ));
    }
    #[cfg(feature = "postgres")]
    if args.store.as_deref() == Some("postgres") {
        let dir = match &args.dir {
            Some(d) => d.clone(),
            None => std::env::temp_dir().join(format!("baton-bench-{}", std::process::id())),
        };
        let result = store::compare(config, args.runs, args.steps, &dir, args.json).await;
        if args.dir.is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        return result;
    }
    let tmp = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("baton-bench-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Failure::other(format!("{}: {e}", tmp.display())))?;
    let mut report = Report {
        runs: args.runs,
        steps: args.steps,
        ..Default::default()
    };
    let result = phases(&args, config, &tmp, &mut report).await;
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result?;
    print_report(&report, args.json);
    Ok(0)
}

/// A benchmark's report on stdout: pretty JSON with `--json`, else Rust's pretty debug form.
pub(crate) fn print_report<T: serde::Serialize + std::fmt::Debug>(report: &T, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
    } else {
        println!("{report:#?}");
    }
}

async fn phases(
    args: &BenchArgs,
    config: &Config,
    tmp: &Path,
    report: &mut Report,
) -> Result<(), Failure> {
    let econf = engine_config(config)?;

    // 1. Peak throughput: `runs` concurrent runs of `steps` no-op steps.
    eprintln!(
        "bench: throughput, {} runs x {} no-op steps",
        args.runs, args.steps
    );
    let engine = Engine::open(&tmp.join("throughput"), econf.clone()).await?;
    engine
        .register_workflow(noop_workflow("bench-noop", args.steps), "bench")
        .await?;
    let cpu_before = http::own_cpu_s();
    let elapsed = drive(&engine, "bench-noop", args.runs, args.runs, Map::new()).await?;
    let cpu = http::own_cpu_s() - cpu_before;
    // Per run: created, started, 2 per step, completed.
    let transitions = (args.runs * (2 * args.steps + 3)) as u64;
    let stats = engine.commit_stats();
    let flushes = stats.flushes.load(Ordering::Relaxed).max(1);
    let bytes = stats.bytes.load(Ordering::Relaxed);
    report.transitions = transitions;
    report.transitions_per_s = transitions as f64 / elapsed.as_secs_f64();
    report.cpu_us_per_transition = cpu * 1e6 / transitions as f64;
    report.peak_latency_ms = quantiles(&engine);
    report.bytes_per_transition = bytes as f64 / transitions as f64;
    report.transitions_per_flush = transitions as f64 / flushes as f64;
    engine.shutdown().await?;
    drop(engine);

    // The limit: plain sled inserts of the same size at the same flush cadence.
    report.raw_batched_writes_per_s = raw_writes(
        &tmp.join("raw"),
        transitions as usize,
        report.bytes_per_transition.round() as usize,
        report.transitions_per_flush.round() as usize,
    )?;
    report.ratio_to_raw = report.transitions_per_s / report.raw_batched_writes_per_s;

    // 2. Latency at half of peak load: runs started at a steady rate for about 3 s.
    let per_run = (2 * args.steps + 3) as f64;
    let starts_per_s = (report.transitions_per_s / 2.0 / per_run).max(1.0);
    let count = (starts_per_s * 3.0).ceil() as usize;
    eprintln!("bench: latency at half load, {count} runs at {starts_per_s:.0}/s");
    let engine = Engine::open(&tmp.join("latency"), econf.clone()).await?;
    engine
        .register_workflow(noop_workflow("bench-noop", args.steps), "bench")
        .await?;
    engine.latency().reset();
    let mut sub = engine.subscribe();
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / starts_per_s);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut done = 0;
    let mut launched = 0;
    while done < count {
        tokio::select! {
            _ = ticker.tick(), if launched < count => {
                let engine = engine.clone();
                tokio::spawn(async move { engine.start("bench-noop", Map::new(), None).await });
                launched += 1;
            }
            n = sub.next() => match n {
                Some(Notice::Event(e)) if matches!(e.kind, EventKind::RunCompleted) => done += 1,
                Some(Notice::Lagged { missed }) => return Err(Failure::other(format!("benchmark subscriber lagged by {missed}"))),
                None => return Err(Failure::other("engine stopped")),
                _ => {}
            }
        }
    }
    report.half_load_transitions_per_s = count as f64 * per_run / started.elapsed().as_secs_f64();
    report.transition_latency_ms = quantiles(&engine);
    engine.shutdown().await?;
    drop(engine);

    // 3. Parked runs: memory per waiting run (no actor, no task).
    eprintln!("bench: {} parked runs", args.parked);
    let engine = Engine::open(&tmp.join("parked"), econf.clone()).await?;
    let parked = Definition::builder("bench-parked")
        .step(StepDef::wait("gate", "go"))
        .build();
    engine.register_workflow(parked, "bench").await?;
    // Warm up allocator and cache paths, then measure from here.
    drive(
        &engine,
        "bench-parked",
        1000.min(args.parked),
        1000,
        Map::new(),
    )
    .await?;
    let before = rss_bytes();
    let started = Instant::now();
    drive(&engine, "bench-parked", args.parked, 2000, Map::new()).await?;
    report.park_s = started.elapsed().as_secs_f64();
    let mut live = engine.live_runs().await;
    for _ in 0..100 {
        if live == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        live = engine.live_runs().await;
    }
    let after = rss_bytes();
    report.parked_runs = args.parked;
    report.rss_bytes_per_parked_run =
        after.saturating_sub(before) as f64 / args.parked.max(1) as f64;
    if live != 0 {
        return Err(Failure::other(format!(
            "{live} parked runs still hold an actor"
        )));
    }
    engine.shutdown().await?;
    drop(engine);

    // 4. kill -9 with unfinished runs, then resume.
    eprintln!("bench: {} unfinished runs, kill -9, resume", args.resume);
    let dir = tmp.join("resume");
    let exe = std::env::current_exe().map_err(|e| Failure::other(e.to_string()))?;
    let mut child = tokio::process::Command::new(exe)
        .args(["fill", &args.resume.to_string(), "--data-dir"])
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Failure::other(format!("cannot start `baton-bench fill`: {e}")))?;
    {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.trim() == "ready" {
                break;
            }
        }
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id().unwrap_or(0) as i32, libc::SIGKILL);
    }
    let _ = child.wait().await;
    let started = Instant::now();
    let engine = Engine::open(&dir, econf.clone()).await?;
    engine.register_action(
        "bench-hold",
        |ctx: ActionContext| async move { Ok(ctx.params) },
    );
    let mut sub = engine.subscribe();
    let resumed = engine.resume().await?;
    report.resume_ms = started.elapsed().as_secs_f64() * 1000.0;
    report.resume_runs = resumed.resumed;
    let mut completed = 0;
    while completed < resumed.resumed {
        match tokio::time::timeout(Duration::from_secs(60), sub.next()).await {
            Ok(Some(Notice::Event(e))) if matches!(e.kind, EventKind::RunCompleted) => {
                completed += 1
            }
            Ok(Some(_)) => {}
            _ => {
                return Err(Failure::other(format!(
                    "only {completed} of {} resumed runs completed",
                    resumed.resumed
                )))
            }
        }
    }
    report.resume_all_completed_ms = started.elapsed().as_secs_f64() * 1000.0;
    engine.shutdown().await?;
    drop(engine);

    // 5. One long run; each step sets nothing, the state holds a 4 KiB blob.
    eprintln!("bench: one run of {} steps", args.long);
    let engine = Engine::open(&tmp.join("long"), econf).await?;
    let mut def = noop_workflow("bench-long", args.long);
    def.steps[0] = def.steps[0].clone().set("blob", "{{ input.blob }}");
    def.input.insert("blob".into(), Default::default());
    engine.register_workflow(def, "bench").await?;
    let blob = "x".repeat(4096);
    let size_before = engine.store_size();
    let started = Instant::now();
    let run = engine
        .start(
            "bench-long",
            json!({ "blob": blob })
                .as_object()
                .cloned()
                .unwrap_or_default(),
            None,
        )
        .await?;
    let rec = engine.settled(&run).await?;
    report.long_run_s = started.elapsed().as_secs_f64();
    report.long_run_steps = args.long;
    report.long_run_status = rec.status.to_string();
    report.long_run_head_bytes = serde_json::to_vec(&rec).map(|v| v.len()).unwrap_or(0);
    engine.shutdown().await?;
    let size_after = engine.store_size();
    report.store_bytes_per_step =
        size_after.saturating_sub(size_before) as f64 / args.long.max(1) as f64;
    if rec.status != RunStatus::Completed {
        return Err(Failure::other(format!(
            "the long run ended {}: {:?}",
            rec.status, rec.error_text
        )));
    }
    Ok(())
}

/// `baton-bench fill N`: starts N runs whose one step never finishes here, prints `ready`
/// once every step is durably in flight, then waits to be killed.
async fn fill(config: &Config, dir: &Path, runs: usize) -> Result<i32, Failure> {
    let engine = Engine::open(dir, engine_config(config)?).await?;
    let hold = |ctx: ActionContext| async move {
        ctx.cancel.cancelled().await;
        Ok(Value::Null)
    };
    engine.register_action("bench-hold", hold);
    let def = Definition::builder("bench-hold")
        .step(StepDef::action("hold", "bench-hold"))
        .step(StepDef::action("after", "noop"))
        .build();
    engine.register_workflow(def, "bench").await?;
    let mut sub = engine.subscribe();
    for _ in 0..runs {
        let engine = engine.clone();
        tokio::spawn(async move { engine.start("bench-hold", Map::new(), None).await });
    }
    let mut in_flight = 0;
    while in_flight < runs {
        if let Some(Notice::Event(e)) = sub.next().await {
            if matches!(e.kind, EventKind::StepStarted { .. }) {
                in_flight += 1;
            }
        }
    }
    println!("ready");
    std::future::pending::<()>().await;
    Ok(0)
}
