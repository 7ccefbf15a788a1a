//! `baton bench http` end to end: real `baton serve` children, real requests on loopback.
//! Nothing here asserts a speed (machines are noisy); it checks that the figures are measured.

use std::process::Command;

use serde_json::Value;

use crate::BATON;

#[test]
fn the_http_benchmark_measures_two_builds_side_by_side() {
    let tmp = tempfile::tempdir().unwrap();
    // The same build twice stands for an old and a new one: rounds alternate between them.
    let out = Command::new(BATON)
        .args(["bench", "http", "--baton", BATON, "--baton", BATON])
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
    let out = Command::new(BATON)
        .args(["bench", "http", "--baton", "/nonexistent/baton", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/baton"), "{stderr}");
    assert!(out.stdout.is_empty());
}
