//! `baton bench edges`: a real `baton serve` under the two floods issue 26 names, with the
//! shipped defaults.
//!
//! 1. **Unsigned bodies**: `--bodies` parallel POSTs of `--body-mb` MB to the webhook, each with a
//!    well-formed signature that is not the secret's (the daemon must read a body to know).
//!    Resident memory before, at its peak (sampled every 10 ms) and 10 s after; the answers.
//! 2. **Half-open connections**: `--half-open` connections that each send half a request head
//!    and wait; meanwhile a fresh client asks `/healthz` `--probes` times. Its latency, how many
//!    of the half-open connections the daemon had closed by the end of the header-read timeout,
//!    and its memory.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use super::http::Daemon;
use super::ui::Spread;
use baton::backend::Failure;

/// `baton bench edges` options.
#[derive(Args, Debug, Clone)]
pub struct EdgesBenchArgs {
    /// Parallel unsigned webhook bodies.
    #[arg(long, default_value_t = 40)]
    bodies: usize,
    /// Size of each, MB.
    #[arg(long, default_value_t = 24)]
    body_mb: usize,
    /// Half-open connections held at once.
    #[arg(long, default_value_t = 20_000)]
    half_open: usize,
    /// `/healthz` requests from a fresh client while they are held.
    #[arg(long, default_value_t = 50)]
    probes: usize,
    /// JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// What `baton bench edges` prints.
#[derive(Serialize, Debug, Default)]
pub struct EdgesReport {
    bodies: usize,
    body_mb: usize,
    rss_before_mb: f64,
    rss_peak_mb: f64,
    rss_10s_after_mb: f64,
    /// Answers by status (0: the connection closed before an answer).
    answers: Vec<(u16, usize)>,
    flood_s: f64,
    half_open: usize,
    /// Connections the test opened: at most this process's open-file limit less 256.
    half_open_opened: usize,
    open_file_limit: u64,
    healthz: Spread,
    healthz_failed: usize,
    rss_half_open_mb: f64,
    /// Of the half-open connections, how many the daemon had closed 12 s later.
    closed_after_12s: usize,
}

const SECRET: &str = "bench edges webhook secret, not a real one";

/// Runs the benchmark; prints the report.
pub async fn run(args: EdgesBenchArgs) -> Result<i32, Failure> {
    let baton = super::baton_exe()?;
    let dir = std::env::temp_dir().join(format!("baton-bench-edges-{}", std::process::id()));
    let mut report = EdgesReport {
        bodies: args.bodies,
        body_mb: args.body_mb,
        half_open: args.half_open,
        ..EdgesReport::default()
    };
    // The shipped defaults, and the secret that mounts the webhook.
    let daemon =
        Daemon::start_with(&baton, &dir, "", &[("BATON_GITHUB_WEBHOOK_SECRET", SECRET)]).await?;
    let measured = async {
        flood(&daemon, &args, &mut report).await?;
        half_open(&daemon, &args, &mut report).await
    }
    .await;
    daemon.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    measured?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| Failure::other(e.to_string()))?
        );
    } else {
        print(&report);
    }
    Ok(0)
}

async fn flood(
    daemon: &Daemon,
    args: &EdgesBenchArgs,
    report: &mut EdgesReport,
) -> Result<(), Failure> {
    let client = reqwest::Client::new();
    let _ = client.get(format!("{}/healthz", daemon.base)).send().await;
    let pid = daemon.pid;
    let before = rss_kb(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let stop = Arc::clone(&stop);
        move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(rss_kb(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        }
    });
    let body = bytes_of(vec![b'x'; args.body_mb * 1024 * 1024]);
    let forged = format!("sha256={}", "0".repeat(64));
    let url = format!("{}/webhooks/github", daemon.base);
    let started = Instant::now();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..args.bodies {
        let (client, url, forged, body) = (client.clone(), url.clone(), forged.clone(), body);
        sends.spawn(async move {
            client
                .post(url)
                .header("content-type", "application/json")
                .header("x-github-event", "issues")
                .header("x-github-delivery", format!("bench-flood-{i}"))
                .header("x-hub-signature-256", forged)
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        });
    }
    let mut answers = std::collections::BTreeMap::<u16, usize>::new();
    while let Some(status) = sends.join_next().await {
        *answers.entry(status.unwrap_or(0)).or_default() += 1;
    }
    report.flood_s = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(10)).await;
    report.rss_before_mb = mb(before);
    report.rss_peak_mb = mb(peak);
    report.rss_10s_after_mb = mb(rss_kb(pid));
    report.answers = answers.into_iter().collect();
    Ok(())
}

async fn half_open(
    daemon: &Daemon,
    args: &EdgesBenchArgs,
    report: &mut EdgesReport,
) -> Result<(), Failure> {
    // This process holds one end of each connection, and needs a few descriptors more for
    // the probes and for reading the daemon's memory.
    let limit = baton::web::server::raise_open_files();
    let room = usize::try_from(limit.saturating_sub(256)).unwrap_or(usize::MAX);
    let addr: std::net::SocketAddr = daemon
        .base
        .trim_start_matches("http://")
        .parse()
        .map_err(|e| Failure::other(format!("the daemon's address: {e}")))?;
    let n = args.half_open.min(room);
    report.open_file_limit = limit;
    let opened = tokio::task::spawn_blocking(move || {
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            let Ok(mut s) = std::net::TcpStream::connect(addr) else {
                break;
            };
            if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .is_err()
            {
                break;
            }
            held.push(s);
        }
        held
    })
    .await
    .map_err(|e| Failure::other(e.to_string()))?;
    let held_at = Instant::now();
    report.half_open_opened = opened.len();
    report.rss_half_open_mb = mb(rss_kb(daemon.pid));
    let mut took = Vec::new();
    for _ in 0..args.probes {
        // A fresh client each time: a new connection.
        let client = reqwest::Client::new();
        let asked = Instant::now();
        match client
            .get(format!("{}/healthz", daemon.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => took.push(asked.elapsed()),
            _ => report.healthz_failed += 1,
        }
    }
    report.healthz = Spread::of(took);
    // The header-read timeout (10 s by default) has closed every one of them by now.
    tokio::time::sleep(Duration::from_secs(12).saturating_sub(held_at.elapsed())).await;
    report.closed_after_12s = tokio::task::spawn_blocking(move || {
        opened
            .into_iter()
            .filter(|s| {
                let _ = s.set_nonblocking(true);
                let mut buf = [0u8; 512];
                // Closed: end of stream or a reset; open: nothing to read yet.
                loop {
                    match std::io::Read::read(&mut &*s, &mut buf) {
                        Ok(0) => return true,
                        Ok(_) => continue,
                        Err(e) => return e.kind() != std::io::ErrorKind::WouldBlock,
                    }
                }
            })
            .count()
    })
    .await
    .map_err(|e| Failure::other(e.to_string()))?;
    Ok(())
}

fn print(r: &EdgesReport) {
    println!(
        "unsigned webhook bodies: {} x {} MB in parallel, {:.1} s",
        r.bodies, r.body_mb, r.flood_s
    );
    println!(
        "  resident memory: {:.0} MB before, {:.0} MB at peak (+{:.0} MB), {:.0} MB 10 s after",
        r.rss_before_mb,
        r.rss_peak_mb,
        r.rss_peak_mb - r.rss_before_mb,
        r.rss_10s_after_mb
    );
    let answers: Vec<String> = r
        .answers
        .iter()
        .map(|(status, n)| match status {
            0 => format!("{n} closed before an answer"),
            s => format!("{n} x {s}"),
        })
        .collect();
    println!("  answers: {}", answers.join(", "));
    println!(
        "half-open connections: {} held (of {} asked; this process's open-file limit is {}), daemon at {:.0} MB",
        r.half_open_opened, r.half_open, r.open_file_limit, r.rss_half_open_mb
    );
    println!(
        "  /healthz from a fresh client meanwhile: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} answered, {} failed)",
        r.healthz.p50, r.healthz.p99, r.healthz.max, r.healthz.samples, r.healthz_failed
    );
    println!(
        "  closed by the daemon 12 s after they were opened: {} of {}",
        r.closed_after_12s, r.half_open_opened
    );
}

fn rss_kb(pid: u32) -> u64 {
    super::rss_bytes_of(&pid.to_string()) / 1024
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// One body shared by every request without copying it per request.
fn bytes_of(body: Vec<u8>) -> &'static [u8] {
    Box::leak(body.into_boxed_slice())
}
