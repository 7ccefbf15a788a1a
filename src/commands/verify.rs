//! `baton verify`: the repository's checks, measured.

use std::path::Path;

use crate::backend::Failure;
use crate::commands::print::print_json;

/// `baton verify`: the report on stdout (Markdown, or JSON with `--json`); exit 1 when a
/// critical check failed; bad input (not a repository, no checks, bad `.baton.toml`) is exit 2.
pub(crate) async fn verify(
    path: &Path,
    json: bool,
    fail_fast: bool,
    continue_on_error: bool,
    only: Vec<crate::verify::Kind>,
    run_in: crate::verify::RunIn,
) -> Result<i32, Failure> {
    use crate::verify::{Status, VerifyOptions};
    let opts = VerifyOptions {
        fail_fast: match (fail_fast, continue_on_error) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        only: (!only.is_empty()).then_some(only),
        // One's own checkout runs on the host unless `--sandbox` asks otherwise.
        run_in,
        ..VerifyOptions::default()
    };
    let report = crate::verify::verify(path, &opts)
        .await
        .map_err(|e| Failure::usage(e.to_string()))?;
    if json {
        print_json(&report);
    } else {
        for c in &report.checks {
            let status = match c.status {
                Status::Passed => "passed",
                Status::Failed => "FAILED",
                Status::Error => "ERROR",
                Status::Skipped => "skipped",
            };
            let critical = if c.critical { "" } else { " (not critical)" };
            eprintln!(
                "{status:<8} {:<6} {}  {} ms{critical}",
                c.kind.as_str(),
                c.command,
                c.duration_ms
            );
            if let Some(e) = &c.error {
                eprintln!("         {e}");
            }
        }
        if report.ran_in == "sandbox" {
            eprintln!(
                "note: the checks ran in the sandbox ({})",
                if report.network {
                    "with network"
                } else {
                    "no network"
                }
            );
        }
        for note in &report.notes {
            eprintln!("note: {note}");
        }
        println!("{}", report.markdown);
    }
    Ok(if report.ok { 0 } else { 1 })
}
