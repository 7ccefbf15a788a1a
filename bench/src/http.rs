//! `baton bench http`: runs started and awaited through the daemon's API.
//!
//! For each build named by `--baton` (default: this one) it starts a real `baton serve` as a
//! child process (a fresh data dir and configuration, loopback, an ephemeral port), registers
//! a workflow of `--steps` no-op steps with the first request, and has `--clients` concurrent
//! clients do `POST /api/runs?wait=SECS` one after another for `--seconds`, after a warm-up.
//! It reports completed runs a second, the request latency (p50, p99) and the daemon's CPU
//! time per run (utime + stime from /proc/<pid>/stat over the measured window). With several
//! builds, rounds alternate between them, so an old and a new build are compared in one run
//! under the same load. Figures go to docs/PERFORMANCE.md.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use serde_json::{json, Value};

use super::ui::Spread;
use baton::backend::{Failure, ADDR_FILE, TOKEN_FILE};

/// `baton bench http` options.
#[derive(Args, Debug, Clone)]
pub struct HttpBenchArgs {
    /// A baton binary to measure (repeat to compare builds; default: this one).
    #[arg(long = "baton", value_name = "PATH")]
    batons: Vec<PathBuf>,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds measured per round (after `--warmup`).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds of load before each measured window (not counted).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// No-op steps per run.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Rounds per build, alternating between builds.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Where the data dirs go (default: a temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// One measured window of one build.
#[derive(Serialize, Debug)]
pub struct HttpRound {
    baton: String,
    round: usize,
    runs: u64,
    runs_per_s: f64,
    latency_ms: Spread,
    /// The daemon's CPU (user + system) per completed run, µs.
    daemon_cpu_us_per_run: f64,
    /// The same per transition (created, started, two per step, completed).
    daemon_cpu_us_per_transition: f64,
    /// CPU cores the daemon kept busy (of the machine's `cores`).
    daemon_cores_busy: f64,
    /// This process's CPU (the clients) over the same window, cores.
    client_cores_busy: f64,
    /// The store's figures over the window, from the daemon's `/metrics`.
    store: StoreWindow,
}

/// What the store did over a measured window (`/metrics` before and after, and the commit
/// thread's CPU): where a run's time goes between its commits.
#[derive(Serialize, Debug, Default)]
pub struct StoreWindow {
    /// Group commits (fsyncs) a second.
    flushes_per_s: f64,
    /// Transitions made durable per flush.
    transitions_per_flush: f64,
    /// Records written per run.
    writes_per_run: f64,
    /// Mean time of one flush, ms (builds without the metric: none).
    flush_ms: Option<f64>,
    /// Share of the window the committer spent flushing.
    flush_busy: Option<f64>,
    /// CPU cores the commit thread kept busy (applying writes, and the flush's own CPU).
    commit_thread_cores: f64,
}

/// The counters of `/metrics` a window is measured from.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    transitions: f64,
    flushes: f64,
    flush_s: Option<f64>,
    writes: f64,
    commit_cpu_s: f64,
}

impl Counters {
    async fn read(http: &reqwest::Client, base: &str, pid: u32) -> Counters {
        let text = match http.get(format!("{base}/metrics")).send().await {
            Ok(resp) => resp.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let metric = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        };
        Counters {
            transitions: metric("baton_transitions_total").unwrap_or(0.0),
            flushes: metric("baton_store_flushes_total").unwrap_or(0.0),
            flush_s: metric("baton_store_flush_seconds_total"),
            writes: metric("baton_store_writes_total").unwrap_or(0.0),
            commit_cpu_s: thread_cpu_s(pid, "baton-commit"),
        }
    }

    fn window(self, end: Counters, seconds: f64, runs: u64) -> StoreWindow {
        let flushes = end.flushes - self.flushes;
        let flush_s = end.flush_s.zip(self.flush_s).map(|(b, a)| b - a);
        StoreWindow {
            flushes_per_s: flushes / seconds,
            transitions_per_flush: (end.transitions - self.transitions) / flushes.max(1.0),
            writes_per_run: (end.writes - self.writes) / runs.max(1) as f64,
            flush_ms: flush_s.map(|s| s * 1e3 / flushes.max(1.0)),
            flush_busy: flush_s.map(|s| s / seconds),
            commit_thread_cores: (end.commit_cpu_s - self.commit_cpu_s) / seconds,
        }
    }
}

/// utime + stime of `pid`'s threads named `name`, seconds (0 when there are none).
fn thread_cpu_s(pid: u32, name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .filter_map(|t| stat_cpu_s(&t.path().join("stat")).ok())
        .sum()
}

/// The mean of one build's rounds.
#[derive(Serialize, Debug)]
pub struct HttpSummary {
    baton: String,
    runs_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    daemon_cpu_us_per_run: f64,
    daemon_cpu_us_per_transition: f64,
}

/// What `baton bench http --json` prints.
#[derive(Serialize, Debug)]
pub struct HttpReport {
    clients: usize,
    seconds: f64,
    steps: usize,
    cores: usize,
    /// /proc/loadavg (1, 5, 15 minutes) before the first round and after the last.
    loadavg_before: String,
    loadavg_after: String,
    rounds: Vec<HttpRound>,
    summary: Vec<HttpSummary>,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// utime + stime of `pid`, in seconds (fields 14 and 15 of /proc/<pid>/stat).
pub(crate) fn process_cpu_s(pid: u32) -> Result<f64, Failure> {
    stat_cpu_s(Path::new(&format!("/proc/{pid}/stat")))
}

/// utime + stime from a `/proc/.../stat` file, seconds.
fn stat_cpu_s(file: &Path) -> Result<f64, Failure> {
    let path = file.display();
    let stat = std::fs::read_to_string(file).map_err(|e| Failure::other(format!("{path}: {e}")))?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| Failure::other(format!("{path}: unexpected contents")))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64, Failure> {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .ok_or_else(|| Failure::other(format!("{path}: no CPU time field")))
    };
    // Fields after ")" start at field 3, so utime (14) is index 11 and stime (15) index 12.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((ticks(11)? + ticks(12)?) / hz)
}

/// This process's user + system CPU time, seconds (getrusage).
pub(crate) fn own_cpu_s() -> f64 {
    // SAFETY: getrusage fills the struct we pass; RUSAGE_SELF is always valid.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// A `baton serve` child on loopback; killed when dropped.
pub(crate) struct Daemon {
    child: tokio::process::Child,
    pub(crate) pid: u32,
    pub(crate) base: String,
    token: String,
}

/// The configuration of a daemon a benchmark starts.
pub(crate) const UNLIMITED: &str = "[limits]\nmax_active_runs = 0\nmax_verifications = 0\n";

impl Daemon {
    async fn start(baton: &Path, dir: &Path) -> Result<Daemon, Failure> {
        // The defaults, nothing from the user's own file, and no admission limits: the
        // figures measure the daemon, not the limits sized to this machine.
        Daemon::start_with(baton, dir, UNLIMITED, &[]).await
    }

    /// A daemon with `config` as its whole configuration and `env` added to its environment.
    pub(crate) async fn start_with(
        baton: &Path,
        dir: &Path,
        config: &str,
        env: &[(&str, &str)],
    ) -> Result<Daemon, Failure> {
        let data = dir.join("data");
        std::fs::create_dir_all(&data)
            .map_err(|e| Failure::other(format!("{}: {e}", data.display())))?;
        let config_text = config;
        let config = dir.join("config.toml");
        std::fs::write(&config, config_text)
            .map_err(|e| Failure::other(format!("{}: {e}", config.display())))?;
        let child = tokio::process::Command::new(baton)
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .env_remove("BATON_TELEGRAM_TOKEN")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Failure::other(format!("cannot start {}: {e}", baton.display())))?;
        let pid = child.id().unwrap_or(0);
        let mut daemon = Daemon {
            child,
            pid,
            base: String::new(),
            token: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let addr = std::fs::read_to_string(data.join(ADDR_FILE)).unwrap_or_default();
            let token = std::fs::read_to_string(data.join(TOKEN_FILE)).unwrap_or_default();
            if !addr.trim().is_empty() && !token.trim().is_empty() {
                daemon.base = format!("http://{}", addr.trim());
                daemon.token = token.trim().to_string();
                return Ok(daemon);
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                return Err(Failure::other(format!(
                    "{} serve exited ({status}) before listening",
                    baton.display()
                )));
            }
            if Instant::now() > deadline {
                return Err(Failure::other(format!(
                    "{} serve did not listen within 30 s",
                    baton.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then a bounded wait (the drop kills it otherwise).
    pub(crate) async fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// Starts one run and waits for it; Err names what went wrong.
async fn one_run(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
) -> Result<(), Failure> {
    let resp = http
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .map_err(|e| Failure::other(format!("POST {url}: {e}")))?;
    let status = resp.status();
    let rec: Value = resp
        .json()
        .await
        .map_err(|e| Failure::other(format!("POST {url}: {status}: {e}")))?;
    if status != 200 || rec["status"] != "completed" {
        return Err(Failure::other(format!(
            "POST {url}: {status}, run status {}",
            rec["status"]
        )));
    }
    Ok(())
}

/// `clients` loops of one request each until `until`; the latencies of requests started
/// no sooner than `from`.
async fn load(
    daemon: &Daemon,
    clients: usize,
    body: &Value,
    from: Instant,
    until: Instant,
) -> Result<Vec<Duration>, Failure> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .map_err(|e| Failure::other(format!("http client: {e}")))?;
    let url = format!("{}/api/runs?wait=60", daemon.base);
    let mut tasks = tokio::task::JoinSet::<Result<Vec<Duration>, Failure>>::new();
    for _ in 0..clients {
        let (http, url, token, body) = (
            http.clone(),
            url.clone(),
            daemon.token.clone(),
            body.clone(),
        );
        tasks.spawn(async move {
            let mut samples = Vec::new();
            loop {
                let started = Instant::now();
                if started >= until {
                    return Ok(samples);
                }
                one_run(&http, &url, &token, &body).await?;
                if started >= from {
                    samples.push(started.elapsed());
                }
            }
        });
    }
    let mut all = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let samples: Vec<Duration> =
            joined.map_err(|e| Failure::other(format!("a client task: {e}")))??;
        all.extend(samples);
    }
    Ok(all)
}

async fn round(
    args: &HttpBenchArgs,
    baton: &Path,
    round_no: usize,
    dir: &Path,
) -> Result<HttpRound, Failure> {
    let daemon = Daemon::start(baton, dir).await?;
    let result = async {
        let def = super::noop_workflow("bench-http", args.steps);
        // The first request registers the workflow; the rest name it.
        let first = json!({ "workflow": "bench-http", "definition": def, "input": {} });
        let http = reqwest::Client::new();
        one_run(
            &http,
            &format!("{}/api/runs?wait=60", daemon.base),
            &daemon.token,
            &first,
        )
        .await?;
        let body = json!({ "workflow": "bench-http", "input": {} });
        let warm = Instant::now() + Duration::from_secs_f64(args.warmup);
        let until = warm + Duration::from_secs_f64(args.seconds);
        // Measured from the warm-up's end: requests started before it are not counted.
        let sampler = tokio::spawn({
            let pid = daemon.pid;
            let base = daemon.base.clone();
            async move {
                let http = reqwest::Client::new();
                tokio::time::sleep_until(warm.into()).await;
                let at = (Instant::now(), process_cpu_s(pid), own_cpu_s());
                let counters = Counters::read(&http, &base, pid).await;
                tokio::time::sleep_until(until.into()).await;
                let end = (Instant::now(), process_cpu_s(pid), own_cpu_s());
                (at, end, counters, Counters::read(&http, &base, pid).await)
            }
        });
        let samples = load(&daemon, args.clients, &body, warm, until).await?;
        let ((t0, d0, c0), (t1, d1, c1), before, after) = sampler
            .await
            .map_err(|e| Failure::other(format!("the CPU sampler: {e}")))?;
        let window = (t1 - t0).as_secs_f64();
        let daemon_cpu = d1? - d0?;
        let runs = samples.len() as u64;
        let per_run = (2 * args.steps + 3) as f64;
        let cpu_per_run = daemon_cpu * 1e6 / runs.max(1) as f64;
        Ok::<_, Failure>(HttpRound {
            baton: baton.display().to_string(),
            round: round_no,
            runs,
            runs_per_s: runs as f64 / window,
            latency_ms: Spread::of(samples),
            daemon_cpu_us_per_run: cpu_per_run,
            daemon_cpu_us_per_transition: cpu_per_run / per_run,
            daemon_cores_busy: daemon_cpu / window,
            client_cores_busy: (c1 - c0) / window,
            store: before.window(after, window, runs),
        })
    }
    .await;
    daemon.stop().await;
    result
}

/// Runs the benchmark.
pub async fn run(args: HttpBenchArgs) -> Result<i32, Failure> {
    let mut batons = args.batons.clone();
    if batons.is_empty() {
        batons.push(super::baton_exe()?);
    }
    for b in &batons {
        if !b.is_file() {
            return Err(Failure::usage(format!(
                "--baton {}: no such file",
                b.display()
            )));
        }
    }
    if args.clients == 0 || args.seconds <= 0.0 || args.rounds == 0 {
        return Err(Failure::usage(
            "--clients, --seconds and --rounds must be above zero",
        ));
    }
    let tmp = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("baton-bench-http-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&tmp);
    let mut report = HttpReport {
        clients: args.clients,
        seconds: args.seconds,
        steps: args.steps,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        loadavg_before: loadavg(),
        loadavg_after: String::new(),
        rounds: Vec::new(),
        summary: Vec::new(),
    };
    let mut result = Ok(());
    'rounds: for r in 0..args.rounds {
        for (i, baton) in batons.iter().enumerate() {
            eprintln!(
                "bench http: round {} of {}, {} ({} clients, {} s)",
                r + 1,
                args.rounds,
                baton.display(),
                args.clients,
                args.seconds
            );
            match round(&args, baton, r + 1, &tmp.join(format!("r{r}-b{i}"))).await {
                Ok(one) => report.rounds.push(one),
                Err(e) => {
                    result = Err(e);
                    break 'rounds;
                }
            }
        }
    }
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result?;
    report.loadavg_after = loadavg();
    for (b, baton) in batons.iter().enumerate() {
        let name = baton.display().to_string();
        // Rounds go build by build, so a build's are every len-th (the same path may be given
        // twice, e.g. to see the noise between two identical builds).
        let mine: Vec<&HttpRound> = report.rounds.iter().skip(b).step_by(batons.len()).collect();
        let n = mine.len().max(1) as f64;
        let mean = |f: fn(&HttpRound) -> f64| mine.iter().map(|r| f(r)).sum::<f64>() / n;
        report.summary.push(HttpSummary {
            baton: name.clone(),
            runs_per_s: mean(|r| r.runs_per_s),
            p50_ms: mean(|r| r.latency_ms.p50),
            p99_ms: mean(|r| r.latency_ms.p99),
            daemon_cpu_us_per_run: mean(|r| r.daemon_cpu_us_per_run),
            daemon_cpu_us_per_transition: mean(|r| r.daemon_cpu_us_per_transition),
        });
    }
    super::print_report(&report, args.json);
    Ok(0)
}
