//! `baton bench sandbox`: what the sandbox adds, measured side by side in one run.
//!
//! 1. Start-up: `sh -c true` on the host and in the sandbox (the real profile, limits
//!    included), alternating. *Cold* is the first sandboxed start of this process (it also
//!    works out the toolchain mounts and the cgroup mechanism); *warm* is every later one.
//! 2. A real check: `cargo test` of a small crate with a warm `target/`, on the host and in
//!    the sandbox, alternating.
//! 3. A whole issue→PR run: `baton demo` (the offline flagship: clone, tests before, patch,
//!    tests after, push, PR) with `[sandbox] mode = "always"` and with `"untrusted"` (the
//!    demo's issue is a collaborator's, so its checks then run on the host), alternating; the
//!    difference over the sandboxed run's time is the sandbox's share.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use super::ui::Spread;
use baton::backend::Failure;
use baton::sandbox;

/// `baton bench sandbox` options.
#[derive(Args, Debug, Clone)]
pub struct SandboxBenchArgs {
    /// Starts timed for each of host and sandbox.
    #[arg(long, default_value_t = 100)]
    starts: usize,
    /// `cargo test` runs timed for each of host and sandbox.
    #[arg(long, default_value_t = 5)]
    checks: usize,
    /// `baton demo` runs timed for each of the two modes (0: skip).
    #[arg(long, default_value_t = 3)]
    demos: usize,
    /// JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// What `baton bench sandbox` prints.
#[derive(Serialize, Debug, Default)]
pub struct SandboxReport {
    /// `bwrap --version` and how limits are set.
    sandbox: String,
    limits: String,
    /// The first sandboxed `true` of the process, ms.
    cold_start_ms: f64,
    host_start: Spread,
    sandbox_start: Spread,
    /// Warm p50 sandbox minus host, ms.
    start_overhead_ms: f64,
    host_check: Spread,
    sandbox_check: Spread,
    check_overhead_ms: f64,
    demo_host: Spread,
    demo_sandbox: Spread,
    /// (sandboxed demo p50 − host demo p50) / sandboxed demo p50.
    demo_share: f64,
}

const CARGO_TOML: &str =
    "[package]\nname = \"bench_calc\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n";
const LIB_RS: &str = "pub fn add(a: i64, b: i64) -> i64 { a + b }\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn adds() { assert_eq!(super::add(2, 2), 4); }\n    #[test]\n    fn adds_negatives() { assert_eq!(super::add(-2, -2), -4); }\n}\n";

/// Runs the benchmark.
pub async fn run(args: SandboxBenchArgs) -> Result<i32, Failure> {
    tokio::task::spawn_blocking(move || measure(&args))
        .await
        .map_err(|e| Failure::other(format!("bench sandbox: {e}")))?
}

fn measure(args: &SandboxBenchArgs) -> Result<i32, Failure> {
    let tmp = std::env::temp_dir().join(format!("baton-bench-sandbox-{}", std::process::id()));
    let crate_dir = tmp.join("calc");
    std::fs::create_dir_all(crate_dir.join("src")).map_err(io)?;
    std::fs::write(crate_dir.join("Cargo.toml"), CARGO_TOML).map_err(io)?;
    std::fs::write(crate_dir.join("src/lib.rs"), LIB_RS).map_err(io)?;
    git(&crate_dir, &["init", "-q"])?;
    let result = measure_in(args, &tmp, &crate_dir);
    let _ = std::fs::remove_dir_all(&tmp);
    let report = result?;
    super::print_report(&report, args.json);
    Ok(0)
}

fn measure_in(
    args: &SandboxBenchArgs,
    tmp: &Path,
    crate_dir: &Path,
) -> Result<SandboxReport, Failure> {
    let mut report = SandboxReport::default();
    let host = |argv: &[&str]| {
        let mut c = Command::new(argv[0]);
        c.args(&argv[1..]).current_dir(crate_dir);
        c
    };
    let boxed = |argv: &[&str], cache: &Path| -> Result<(Command, sandbox::Prepared), Failure> {
        let mut job = sandbox::Job::new(crate_dir, argv.iter().map(|s| s.to_string()).collect());
        job.cache = Some(cache.to_path_buf());
        let p = job.prepare().map_err(Failure::other)?;
        Ok((p.std_command(), p))
    };
    let cache = tmp.join("cache");
    eprintln!("bench: sandbox start-up, {} starts each", args.starts);
    let started = Instant::now();
    let (mut cold, prepared) = boxed(&["true"], &cache)?;
    time(&mut cold)?;
    drop(prepared);
    report.cold_start_ms = ms(started.elapsed());
    let a = sandbox::availability();
    if !a.works {
        return Err(Failure::other(format!(
            "the sandbox does not work here: {}",
            a.detail
        )));
    }
    report.sandbox = a.detail;
    report.limits = a.limits;
    let (mut h, mut s) = (Vec::new(), Vec::new());
    for _ in 0..args.starts {
        h.push(time(&mut host(&["sh", "-c", "true"]))?);
        let (mut c, p) = boxed(&["sh", "-c", "true"], &cache)?;
        s.push(time(&mut c)?);
        drop(p);
    }
    report.host_start = Spread::of(h);
    report.sandbox_start = Spread::of(s);
    report.start_overhead_ms = round(report.sandbox_start.p50 - report.host_start.p50);

    eprintln!(
        "bench: `cargo test` of a small crate, {} runs each",
        args.checks
    );
    // Both warm: the host's and the sandbox's `target/` are built once first.
    let cargo = ["cargo", "test", "--quiet", "--offline"];
    time(host(&cargo).env("CARGO_TARGET_DIR", tmp.join("target-host")))?;
    let sandbox_target = crate_dir.join("target");
    let (mut c, p) = boxed(&cargo, &cache)?;
    time(&mut c)?;
    drop(p);
    let (mut h, mut s) = (Vec::new(), Vec::new());
    for _ in 0..args.checks {
        h.push(time(
            host(&cargo).env("CARGO_TARGET_DIR", tmp.join("target-host")),
        )?);
        let (mut c, p) = boxed(&cargo, &cache)?;
        s.push(time(&mut c)?);
        drop(p);
    }
    let _ = std::fs::remove_dir_all(sandbox_target);
    report.host_check = Spread::of(h);
    report.sandbox_check = Spread::of(s);
    report.check_overhead_ms = round(report.sandbox_check.p50 - report.host_check.p50);

    if args.demos > 0 {
        eprintln!(
            "bench: `baton demo` (issue→PR), {} runs in each mode",
            args.demos
        );
        let exe = super::baton_exe()?;
        let (mut h, mut s) = (Vec::new(), Vec::new());
        for round in 0..args.demos {
            for mode in ["always", "untrusted"] {
                let dir = tmp.join(format!("demo-{mode}-{round}"));
                std::fs::create_dir_all(&dir).map_err(io)?;
                let config = dir.join("config.toml");
                let text = format!("{}[sandbox]\nmode = \"{mode}\"\n", super::http::UNLIMITED);
                std::fs::write(&config, text).map_err(io)?;
                let mut c = Command::new(&exe);
                c.arg("demo")
                    .env("BATON_CONFIG", &config)
                    .env("BATON_DATA_DIR", dir.join("data"))
                    .env("RUST_LOG", "error")
                    .current_dir(&dir);
                let t = time(&mut c)?;
                if mode == "always" {
                    s.push(t)
                } else {
                    h.push(t)
                }
            }
        }
        report.demo_host = Spread::of(h);
        report.demo_sandbox = Spread::of(s);
        if report.demo_sandbox.p50 > 0.0 {
            report.demo_share = round(
                (report.demo_sandbox.p50 - report.demo_host.p50) / report.demo_sandbox.p50 * 100.0,
            ) / 100.0;
        }
    }
    Ok(report)
}

/// Runs `cmd` to its end, quietly; its wall time. A failure is the benchmark's error.
fn time(cmd: &mut Command) -> Result<Duration, Failure> {
    let started = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(io)?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        return Err(Failure::other(format!(
            "bench: {cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(elapsed)
}

fn git(dir: &Path, args: &[&str]) -> Result<(), Failure> {
    time(Command::new("git").args(args).current_dir(dir)).map(|_| ())
}

fn io(e: std::io::Error) -> Failure {
    Failure::other(format!("bench sandbox: {e}"))
}

fn ms(d: Duration) -> f64 {
    round(d.as_secs_f64() * 1000.0)
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
