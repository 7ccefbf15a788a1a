//! What commands print: a run record (`baton show`), its agent transcripts, JSON.

use crate::backend::Failure;
use std::path::Path;

use serde_json::Value;

use crate::agent::Transcript;
use crate::view::RunView;

pub(crate) fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

pub(crate) fn print_run(v: &RunView) {
    println!("run       {}", v.id);
    println!("workflow  {} v{}", v.workflow_id, v.version);
    println!("status    {}", v.status);
    if let Some(w) = &v.waiting_for {
        println!(
            "waiting   for {} `{}` at step {}{}",
            w.kind,
            w.name,
            w.step,
            w.until
                .as_ref()
                .map(|u| format!(" until {u}"))
                .unwrap_or_default()
        );
    }
    if let Some(q) = &v.queued_behind {
        println!("queued    {}", q.reason);
    }
    if let Some(e) = &v.error_text {
        println!("error     {e}");
    }
    println!("started   {}", v.started_at.as_deref().unwrap_or("-"));
    if let Some(c) = &v.completed_at {
        println!("ended     {c}");
    }
    if !v.state.is_empty() {
        println!("state     {}", Value::Object(v.state.clone()));
    }
    println!("steps");
    for s in &v.steps {
        let attempts = if s.attempts > 1 {
            format!(" ({} attempts)", s.attempts)
        } else {
            String::new()
        };
        let error = s
            .error
            .as_deref()
            .map(|e| format!("  {}", e.lines().next().unwrap_or("")))
            .unwrap_or_default();
        println!("  {:<12} {}{attempts}{error}", s.status, s.id);
    }
    if !v.changes.is_empty() {
        println!("changes");
        for c in &v.changes {
            println!(
                "  {:<14} step {}  {}",
                c.change_type, c.step_index, c.change_data
            );
        }
    }
}

/// `baton show RUN --transcript`: every `steps[].output.transcript`, oldest step first.
/// Transcripts are redacted when they are made, so they are printed as stored.
pub(crate) fn print_transcripts(view: &RunView) -> Result<i32, Failure> {
    let mut found = false;
    for step in &view.steps {
        let Some(value) = step.output.get("transcript") else {
            continue;
        };
        let transcript: Transcript = serde_json::from_value(value.clone()).map_err(|e| {
            Failure::other(format!(
                "step `{}`: the stored transcript cannot be read: {e}",
                step.id
            ))
        })?;
        found = true;
        println!("== step {} ({}) ==", step.id, step.status);
        print!("{}", transcript.render());
    }
    if !found {
        eprintln!("run {}: no step has an agent transcript", view.id);
    }
    Ok(0)
}

/// The spending lines under `baton runs`: nothing when nothing was spent and no cap is set.
pub(crate) fn print_spending(spent: &crate::spending::Spending) {
    let cap = |c: Option<f64>| c.map(|c| format!(" (cap ${c:.2})")).unwrap_or_default();
    if spent.month_total == 0.0 && spent.daily_cap.is_none() && spent.monthly_cap.is_none() {
        return;
    }
    for (repo, usd) in &spent.today_by_repo {
        let repo = if repo.is_empty() {
            "(no repository)"
        } else {
            repo
        };
        println!("spent today on {repo}: ${usd:.2}{}", cap(spent.daily_cap));
    }
    println!(
        "spent this month: ${:.2}{}",
        spent.month_total,
        cap(spent.monthly_cap)
    );
}

pub(crate) fn print_backup(
    stats: &baton_actors::store::BackupStats,
    verb: &str,
    file: &Path,
    json: bool,
) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(stats).unwrap_or_default()
        );
    } else {
        println!(
            "{verb} {} key(s) in {} tree(s), {} ({})",
            stats.entries,
            stats.trees,
            crate::gc::human_bytes(stats.bytes),
            file.display()
        );
    }
}
