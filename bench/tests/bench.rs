//! The benchmarks end to end: `baton bench` hands over to `baton-bench`, which starts real
//! `baton serve` children and sends real requests on loopback. Nothing here asserts a speed
//! (machines are noisy); it checks that the figures are measured.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The `baton-bench` this test run built.
const BATON_BENCH: &str = env!("CARGO_BIN_EXE_baton-bench");

/// The `baton` built beside it (`cargo test --workspace` builds both before any test runs).
fn baton() -> PathBuf {
    let baton = PathBuf::from(BATON_BENCH).with_file_name("baton");
    assert!(
        baton.is_file(),
        "{} is missing: build the workspace (`cargo test --workspace`), not this package alone",
        baton.display()
    );
    baton
}

#[test]
fn the_http_benchmark_measures_two_builds_side_by_side() {
    let tmp = tempfile::tempdir().unwrap();
    let baton = baton();
    let baton = baton.to_str().unwrap();
    // The same build twice stands for an old and a new one: rounds alternate between them.
    let out = Command::new(baton)
        .args(["bench", "http", "--baton", baton, "--baton", baton])
        .args(["--clients", "4", "--seconds", "1", "--warmup", "0.3"])
        .args(["--steps", "3", "--rounds", "1", "--json", "--dir"])
        .arg(tmp.path())
        .env("BATON_DATA_DIR", tmp.path().join("unused"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["clients"], 4);
    assert_eq!(report["steps"], 3);
    assert!(!report["loadavg_before"].as_str().unwrap().is_empty());
    let rounds = report["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "{report}");
    for round in rounds {
        let runs = round["runs"].as_u64().unwrap();
        assert!(runs > 0, "{round}");
        assert_eq!(round["latency_ms"]["samples"].as_u64().unwrap(), runs);
        assert!(round["runs_per_s"].as_f64().unwrap() > 0.0, "{round}");
        let per_run = round["daemon_cpu_us_per_run"].as_f64().unwrap();
        let per_transition = round["daemon_cpu_us_per_transition"].as_f64().unwrap();
        assert!(per_run > 0.0, "the daemon's CPU is measured: {round}");
        // 3 steps: created, started, two per step, completed.
        assert!((per_run / 9.0 - per_transition).abs() < 1e-6, "{round}");
    }
    // Each round had its own daemon with a fresh data dir, each stopped afterwards.
    for dir in ["r0-b0", "r0-b1"] {
        assert!(tmp.path().join(dir).join("data").is_dir(), "{dir}");
    }
    assert_eq!(report["summary"].as_array().unwrap().len(), 2, "{report}");
}

#[test]
fn the_http_benchmark_names_a_missing_build() {
    let out = Command::new(BATON_BENCH)
        .args(["http", "--baton", "/nonexistent/baton", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/baton"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn baton_bench_without_baton_bench_beside_it_says_how_to_build_it() {
    // A copy of baton alone in a directory, with nothing on PATH.
    let tmp = tempfile::tempdir().unwrap();
    let lone = tmp.path().join("baton");
    std::fs::copy(baton(), &lone).unwrap();
    let out = Command::new(&lone)
        .args(["bench", "--json"])
        .env("PATH", tmp.path().join("empty"))
        .env("BATON_DATA_DIR", tmp.path().join("data"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("baton-bench") && stderr.contains("cargo build --release --workspace"),
        "{stderr}"
    );
}

#[test]
fn baton_bench_help_is_baton_benchs() {
    let out = Command::new(baton())
        .args(["bench", "--help"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for word in ["baton-bench", "--runs", "http", "edges", "sandbox"] {
        assert!(stdout.contains(word), "{word} missing from:\n{stdout}");
    }
    assert!(
        !stdout.contains("fill"),
        "the hidden subcommand shows:\n{stdout}"
    );
}

#[tokio::test]
async fn the_ui_benchmark_measures_every_page_over_a_small_store() {
    // `baton bench ui` end to end on 300 runs: it fails if a page does not show what it must.
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BATON_BENCH)
        .args(["ui", "--runs", "300", "--requests", "3", "--events", "2"])
        .args(["--load", "50", "--json", "--dir"])
        .arg(tmp.path())
        .env("BATON_DATA_DIR", tmp.path().join("unused"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["runs"], 300);
    assert_eq!(
        report["completed"].as_u64().unwrap()
            + report["failed"].as_u64().unwrap()
            + report["waiting"].as_u64().unwrap(),
        300
    );
    for figure in [
        "dashboard_ms",
        "failed_page_ms",
        "search_issue_ms",
        "search_repo_ms",
        "run_page_ms",
    ] {
        assert_eq!(report[figure]["samples"], 3, "{figure}: {report}");
    }
    assert_eq!(report["event_under_load_ms"]["samples"], 2, "{report}");
}
