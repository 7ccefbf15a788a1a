//! `baton bench ui`: the admin UI with many runs in the store.
//!
//! Fills a fresh store with `--runs` runs through the engine (mixed workflows and statuses:
//! completed, failed, waiting; each about one issue of one of [`REPOS`] repositories), starts
//! the real daemon on loopback, logs in as a browser would, and times requests one after
//! another over one keep-alive connection: the dashboard's first page, the failed runs, a
//! search by issue and by repository, and a run's page. Then it holds `/ui/events` open and
//! times how long a transition takes to be named on the stream, alone and under a steady load
//! of other runs (when the UI's coalescing window applies). Figures go to docs/PERFORMANCE.md.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_actors::{
    ActionContext, ActionError, Definition, Engine, EventKind, Notice, RunStatus, StepDef,
};
use clap::Args;
use serde::Serialize;
use serde_json::{json, Map, Value};

use baton::backend::{Failure, ADDR_FILE, TOKEN_FILE};
use baton::config::Config;

/// `baton bench ui` options.
#[derive(Args, Debug, Clone)]
pub struct UiBenchArgs {
    /// Runs in the store.
    #[arg(long, default_value_t = 10_000)]
    runs: usize,
    /// Requests timed per page.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Transitions timed on the event stream, in each of the two phases.
    #[arg(long, default_value_t = 100)]
    events: usize,
    /// Runs started a second by the background load of the second event phase.
    #[arg(long, default_value_t = 200)]
    load: u32,
    /// Where the store goes (default: a temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Repositories the runs are about.
const REPOS: usize = 20;

/// p50, p95, p99 and max, ms.
#[derive(Serialize, Debug, Default)]
pub struct Spread {
    pub(crate) p50: f64,
    pub(crate) p95: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
    pub(crate) samples: usize,
}

impl Spread {
    pub(crate) fn of(mut samples: Vec<Duration>) -> Spread {
        samples.sort();
        let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            ms(samples[i])
        };
        if samples.is_empty() {
            return Spread::default();
        }
        Spread {
            p50: at(0.5),
            p95: at(0.95),
            p99: at(0.99),
            max: ms(*samples.last().expect("not empty")),
            samples: samples.len(),
        }
    }
}

/// What `baton bench ui --json` prints.
#[derive(Serialize, Debug, Default)]
pub struct UiReport {
    runs: usize,
    completed: usize,
    failed: usize,
    waiting: usize,
    fill_s: f64,
    store_bytes: u64,
    dashboard_ms: Spread,
    failed_page_ms: Spread,
    search_issue_ms: Spread,
    search_repo_ms: Spread,
    run_page_ms: Spread,
    dashboard_bytes: usize,
    /// From the transition being durable (published) to the stream naming its run.
    event_alone_ms: Spread,
    /// The same with `load_starts_per_s` other runs starting meanwhile.
    event_under_load_ms: Spread,
    load_starts_per_s: u32,
    /// The UI's coalescing window: under load a message waits for it.
    coalesce_ms: u64,
}

/// Runs the benchmark.
pub async fn run(args: UiBenchArgs, config: &Config) -> Result<i32, Failure> {
    let tmp = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("baton-bench-ui-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Failure::other(format!("{}: {e}", tmp.display())))?;
    let mut report = UiReport {
        runs: args.runs,
        load_starts_per_s: args.load,
        coalesce_ms: baton::web::ui::COALESCE.as_millis() as u64,
        ..Default::default()
    };
    let result = phases(&args, config, &tmp, &mut report).await;
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result?;
    super::print_report(&report, args.json);
    Ok(0)
}

/// The workflow and input of the `i`th run: 70% complete, 20% fail, 10% wait for a person.
fn nth_run(i: usize) -> (&'static str, Map<String, Value>) {
    let workflow = match i % 10 {
        0 | 1 => "bench-ui-fails",
        2 => "bench-ui-gate",
        3..=5 => "bench-ui-build",
        _ => "bench-ui-review",
    };
    let input = json!({
        "repo": format!("octo/repo-{}", i % REPOS),
        "issue": i / REPOS + 1,
    });
    (workflow, input.as_object().cloned().unwrap_or_default())
}

async fn fill(engine: &Engine, runs: usize) -> Result<(), Failure> {
    const WINDOW: usize = 1000;
    let mut sub = engine.subscribe();
    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let launch = |i: usize| {
        let (engine, failed) = (engine.clone(), failed_tx.clone());
        let (workflow, input) = nth_run(i);
        tokio::spawn(async move {
            if let Err(e) = engine.start(workflow, input, None).await {
                let _ = failed.send(e.to_string());
            }
        });
    };
    let mut launched = runs.min(WINDOW);
    (0..launched).for_each(launch);
    let mut settled = 0;
    while settled < runs {
        tokio::select! {
            Some(e) = failed_rx.recv() => return Err(Failure::other(format!("a run could not start: {e}"))),
            n = sub.next() => match n {
                Some(Notice::Event(e)) => {
                    if matches!(e.kind, EventKind::RunCompleted | EventKind::RunFailed { .. } | EventKind::WaitStarted { .. }) {
                        settled += 1;
                        if launched < runs {
                            launch(launched);
                            launched += 1;
                        }
                    }
                }
                Some(Notice::Lagged { missed }) => return Err(Failure::other(format!("the fill's subscriber lagged by {missed}"))),
                Some(Notice::Progress { .. }) => {}
                None => return Err(Failure::other("engine stopped")),
            }
        }
    }
    Ok(())
}

async fn register(engine: &Engine) -> Result<(), Failure> {
    engine.register_action("bench-ui-fail", |_ctx: ActionContext| async move {
        Err::<Value, _>(ActionError::fatal("tests failed: 3 of 120"))
    });
    let defs = [
        Definition::builder("bench-ui-build")
            .step(StepDef::action("checkout", "noop"))
            .step(StepDef::action("build", "noop"))
            .step(StepDef::action("test", "noop"))
            .build(),
        Definition::builder("bench-ui-review")
            .step(StepDef::action("read", "noop"))
            .step(StepDef::action("review", "noop"))
            .build(),
        Definition::builder("bench-ui-fails")
            .step(StepDef::action("checkout", "noop"))
            .step(StepDef::action("test", "bench-ui-fail"))
            .build(),
        Definition::builder("bench-ui-gate")
            .step(StepDef::action("plan", "noop"))
            .step(StepDef::wait("approve", "approve"))
            .step(StepDef::action("apply", "noop"))
            .build(),
    ];
    for def in defs {
        engine.register_workflow(def, "bench").await?;
    }
    Ok(())
}

fn fail(what: &str) -> impl Fn(reqwest::Error) -> Failure + '_ {
    move |e| Failure::other(format!("{what}: {e}"))
}

/// Times `requests` GETs of `path`; each must answer 200 and contain `expect`.
async fn time_page(
    http: &reqwest::Client,
    base: &str,
    cookie: &str,
    path: &str,
    expect: &str,
    requests: usize,
) -> Result<(Spread, usize), Failure> {
    let mut samples = Vec::with_capacity(requests);
    let mut bytes = 0;
    for _ in 0..requests {
        let started = Instant::now();
        let resp = http
            .get(format!("{base}{path}"))
            .header("cookie", cookie)
            .send()
            .await
            .map_err(fail(path))?;
        let status = resp.status();
        let body = resp.text().await.map_err(fail(path))?;
        samples.push(started.elapsed());
        if status != 200 || !body.contains(expect) {
            return Err(Failure::other(format!(
                "GET {path}: {status}, and the page does not contain `{expect}`"
            )));
        }
        bytes = body.len();
    }
    Ok((Spread::of(samples), bytes))
}

async fn phases(
    args: &UiBenchArgs,
    config: &Config,
    tmp: &std::path::Path,
    report: &mut UiReport,
) -> Result<(), Failure> {
    let dir = tmp.join("data");
    let engine = Engine::open(&dir, super::engine_config(config)?).await?;
    register(&engine).await?;
    eprintln!("bench ui: filling the store with {} runs", args.runs);
    let started = Instant::now();
    fill(&engine, args.runs).await?;
    report.fill_s = started.elapsed().as_secs_f64();
    for (status, n) in engine.run_counts(None)? {
        match status {
            RunStatus::Completed => report.completed = n,
            RunStatus::Failed => report.failed = n,
            RunStatus::Waiting => report.waiting = n,
            _ => {}
        }
    }
    report.store_bytes = engine.store_size();

    // The real daemon on loopback.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(baton::daemon::serve(
        engine.clone(),
        "127.0.0.1:0",
        async move {
            let _ = stop_rx.await;
        },
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        if let Ok(addr) = std::fs::read_to_string(dir.join(ADDR_FILE)) {
            break addr.trim().to_string();
        }
        if Instant::now() > deadline || server.is_finished() {
            return Err(Failure::other("the daemon did not start within 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let base = format!("http://{addr}");
    let result = measure(args, &engine, &dir, &base, report).await;
    let _ = stop_tx.send(());
    let _ = server.await;
    engine.shutdown().await?;
    result
}

async fn measure(
    args: &UiBenchArgs,
    engine: &Engine,
    dir: &std::path::Path,
    base: &str,
    report: &mut UiReport,
) -> Result<(), Failure> {
    let token = std::fs::read_to_string(dir.join(TOKEN_FILE))
        .map_err(|e| Failure::other(format!("{}: {e}", dir.join(TOKEN_FILE).display())))?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(fail("http client"))?;
    let login = http
        .post(format!("{base}/login"))
        .form(&[("token", token.trim())])
        .send()
        .await
        .map_err(fail("POST /login"))?;
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
        .ok_or_else(|| {
            Failure::other(format!(
                "POST /login: {} without a session cookie",
                login.status()
            ))
        })?;

    let newest = engine.runs_page(&Default::default(), 0, 1)?.0;
    let newest = newest.first().map(|r| r.id.clone()).unwrap_or_default();
    let failed_filter = baton_actors::RunFilter {
        status: Some(RunStatus::Failed),
        workflow: None,
    };
    let failed_run = engine.runs_page(&failed_filter, 0, 1)?.0;
    let failed_run = failed_run.first().map(|r| r.id.clone()).unwrap_or_default();
    // The issue of the run in the middle of the store, and its repository.
    let (_, middle) = nth_run(args.runs / 2);
    let repo = middle["repo"].as_str().unwrap_or_default().to_string();
    let issue = format!("{repo}%23{}", middle["issue"]);
    let n = args.requests;
    eprintln!("bench ui: {n} requests of each page");
    let (dash, bytes) = time_page(&http, base, &cookie, "/", &newest, n).await?;
    report.dashboard_ms = dash;
    report.dashboard_bytes = bytes;
    report.failed_page_ms = time_page(&http, base, &cookie, "/?status=failed", &failed_run, n)
        .await?
        .0;
    report.search_issue_ms = time_page(
        &http,
        base,
        &cookie,
        &format!("/?q={issue}"),
        "page 1 of 1",
        n,
    )
    .await?
    .0;
    // (templates escape `/`: look for the name's tail)
    let repo_tail = format!("{}#", repo.rsplit('/').next().unwrap_or_default());
    report.search_repo_ms = time_page(&http, base, &cookie, &format!("/?q={repo}"), &repo_tail, n)
        .await?
        .0;
    report.run_page_ms = time_page(
        &http,
        base,
        &cookie,
        &format!("/runs/{failed_run}"),
        "tests failed",
        n,
    )
    .await?
    .0;

    eprintln!("bench ui: {} transitions on /ui/events, alone", args.events);
    report.event_alone_ms = time_events(engine, &http, base, &cookie, args.events, 0).await?;
    eprintln!(
        "bench ui: {} transitions on /ui/events, with {} runs/s besides",
        args.events, args.load
    );
    report.event_under_load_ms =
        time_events(engine, &http, base, &cookie, args.events, args.load).await?;
    Ok(())
}

/// Starts `count` runs one after another (each after the last was seen on the stream, and
/// no sooner than the UI's coalescing window after it), with `load` other runs a second
/// started meanwhile; returns the time from each run's first event being published to the
/// stream naming it.
async fn time_events(
    engine: &Engine,
    http: &reqwest::Client,
    base: &str,
    cookie: &str,
    count: usize,
    load: u32,
) -> Result<Spread, Failure> {
    let mut stream = http
        .get(format!("{base}/ui/events"))
        .header("cookie", cookie)
        .send()
        .await
        .map_err(fail("GET /ui/events"))?;
    if stream.status() != 200 {
        return Err(Failure::other(format!(
            "GET /ui/events: {}",
            stream.status()
        )));
    }
    // When each run's first event was published (durable), seen by a subscriber in-process.
    let published: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut sub = engine.subscribe();
    let seen = published.clone();
    let watcher = tokio::spawn(async move {
        while let Some(n) = sub.next().await {
            if let Notice::Event(e) = n {
                if matches!(e.kind, EventKind::RunCreated { .. }) {
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(e.run, Instant::now());
                }
            }
        }
    });
    let loader = (load > 0).then(|| {
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(load)));
            let mut i = 0;
            loop {
                tick.tick().await;
                let (workflow, input) = nth_run(i * 10 + 3);
                let engine = engine.clone();
                tokio::spawn(async move { engine.start(workflow, input, None).await });
                i += 1;
            }
        })
    });
    let mut samples = Vec::with_capacity(count);
    let mut buffer = String::new();
    let result = async {
        for i in 0..count {
            let (_, input) = nth_run(i);
            let run = engine.start("bench-ui-review", input, None).await?;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let chunk = tokio::time::timeout(left, stream.chunk())
                    .await
                    .map_err(|_| {
                        Failure::other(format!("run {run} not on /ui/events within 10 s"))
                    })?
                    .map_err(fail("/ui/events"))?
                    .ok_or_else(|| Failure::other("/ui/events ended"))?;
                let arrived = Instant::now();
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                if buffer.contains(&run) {
                    buffer.clear();
                    let at = published
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&run)
                        .copied()
                        .unwrap_or(arrived);
                    samples.push(arrived.saturating_duration_since(at));
                    break;
                }
                if buffer.len() > 1 << 20 {
                    buffer.clear();
                }
            }
            // The next one starts in a fresh window, as a person's click would.
            tokio::time::sleep(baton::web::ui::COALESCE + Duration::from_millis(20)).await;
        }
        Ok::<_, Failure>(())
    }
    .await;
    watcher.abort();
    if let Some(l) = loader {
        l.abort();
    }
    result?;
    Ok(Spread::of(samples))
}
