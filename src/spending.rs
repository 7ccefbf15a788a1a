//! Spending caps (`[limits] daily_cost_usd` per repository, `monthly_cost_usd` overall),
//! counted from the agents' priced usage: every agent step stores its report, whose `usage`
//! has the round's `cost_usd` (from `[agent.prices]`). Days and months are UTC calendar ones;
//! a step counts in the period it finished in (or started in, while it runs).
//!
//! The store is the ledger: nothing is counted twice or lost across restarts, and deleting
//! old runs (`baton gc`) only forgets periods long closed. An agent step checks the caps
//! before its first model request ([`admit`]); a run that would go over one waits, saying
//! why, until the period turns (`on_cap = "wait"`, the default) or fails (`"fail"`).

use std::collections::BTreeMap;
use std::time::Duration;

use baton_actors::{now_ms, ActionContext, ActionError, Engine, RunFilter, RunRecord, Subject};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::config::{LimitsSection, OnCap};

/// How often a run waiting on a cap looks again.
const RECHECK: Duration = Duration::from_secs(60);

/// What was spent, in US dollars.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Spending {
    /// Today (UTC), per repository (`owner/name`; runs that name none are under `""`).
    pub today_by_repo: BTreeMap<String, f64>,
    /// This month (UTC), per repository.
    pub month_by_repo: BTreeMap<String, f64>,
    /// This month, overall.
    pub month_total: f64,
    /// `[limits] daily_cost_usd`, when set.
    pub daily_cap: Option<f64>,
    /// `[limits] monthly_cost_usd`, when set.
    pub monthly_cap: Option<f64>,
}

/// Midnight UTC of the day and of the month `ms` falls in, as milliseconds.
fn period_starts(ms: u64) -> (u64, u64) {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let day = t.replace_time(time::Time::MIDNIGHT);
    let month = day.replace_day(1).unwrap_or(day);
    let to_ms = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as u64;
    (to_ms(day), to_ms(month))
}

/// The dollars a step's output says it spent: an agent report's `usage.cost_usd`.
fn step_cost(output: &Value) -> f64 {
    output
        .get("usage")
        .and_then(|u| u.get("cost_usd"))
        .and_then(Value::as_f64)
        .filter(|c| c.is_finite() && *c > 0.0)
        .unwrap_or(0.0)
}

/// Adds up this month's spending from the store: every repository's (`baton spending`, the
/// API, and a monthly cap, which is overall).
pub fn measure(engine: &Engine, limits: &LimitsSection) -> Result<Spending, baton_actors::Error> {
    let heads = engine.runs(&RunFilter::default())?;
    add_up(engine, limits, heads)
}

/// What admission needs to judge a run on `repo`: with only a daily cap (per repository), the
/// runs about `repo`, read through the engine's index of what runs are about rather than every
/// run; with a monthly cap (overall), every run, as [`measure`].
pub fn measure_for(
    engine: &Engine,
    limits: &LimitsSection,
    repo: &str,
) -> Result<Spending, baton_actors::Error> {
    if limits.monthly_cost_usd.is_some() || repo.is_empty() {
        return measure(engine, limits);
    }
    let heads = engine.runs_about(&Subject::repository(repo))?;
    add_up(engine, limits, heads)
}

fn add_up(
    engine: &Engine,
    limits: &LimitsSection,
    heads: Vec<RunRecord>,
) -> Result<Spending, baton_actors::Error> {
    let (day_start, month_start) = period_starts(now_ms());
    let mut spending = Spending {
        daily_cap: limits.daily_cost_usd,
        monthly_cap: limits.monthly_cost_usd,
        ..Spending::default()
    };
    for head in heads {
        if head.completed_at.is_some_and(|c| c < month_start) {
            continue;
        }
        let run = match engine.run(&head.id) {
            Ok(run) => run,
            Err(baton_actors::Error::UnknownRun(_)) => continue, // deleted meanwhile
            Err(e) => return Err(e),
        };
        let repo = repo_of(&run);
        for step in &run.steps {
            let cost = step_cost(&step.output);
            let Some(at) = step.finished_at.or(step.started_at) else {
                continue;
            };
            if cost == 0.0 || at < month_start {
                continue;
            }
            spending.month_total += cost;
            *spending.month_by_repo.entry(repo.clone()).or_default() += cost;
            if at >= day_start {
                *spending.today_by_repo.entry(repo.clone()).or_default() += cost;
            }
        }
    }
    Ok(spending)
}

/// The repository a run is about, as spending keys it (lower case; `""` for none).
fn repo_of(run: &RunRecord) -> String {
    run.subject
        .as_ref()
        .map(|s| s.repo.to_ascii_lowercase())
        .unwrap_or_default()
}

impl Spending {
    /// Why a run on `repo` may not spend more now, or `None` when it may.
    pub fn over_cap(&self, repo: &str) -> Option<String> {
        let repo = repo.to_ascii_lowercase();
        if let Some(cap) = self.daily_cap {
            let spent = self.today_by_repo.get(&repo).copied().unwrap_or(0.0);
            if spent >= cap {
                return Some(format!(
                    "spending cap reached: {repo} spent ${spent:.2} today of limits.daily_cost_usd ${cap:.2}"
                ));
            }
        }
        if let Some(cap) = self.monthly_cap {
            if self.month_total >= cap {
                return Some(format!(
                    "spending cap reached: ${:.2} spent this month of limits.monthly_cost_usd ${cap:.2}",
                    self.month_total
                ));
            }
        }
        None
    }

    /// The summary comment's line when a cap is set: what `repo` spent today and everyone
    /// this month against the caps, and what a reached cap means for the next agent step.
    pub fn summary_line(&self, repo: &str, on_cap: OnCap) -> Option<String> {
        if self.daily_cap.is_none() && self.monthly_cap.is_none() {
            return None;
        }
        let key = repo.to_ascii_lowercase();
        let today = self.today_by_repo.get(&key).copied().unwrap_or(0.0);
        let of = |cap: Option<f64>| cap.map(|c| format!(" of ${c:.2}")).unwrap_or_default();
        let mut line = format!(
            "Spending: ${today:.2}{} today on {key}, ${:.2}{} this month.",
            of(self.daily_cap),
            self.month_total,
            of(self.monthly_cap)
        );
        if let Some(reason) = self.over_cap(repo) {
            let next = match on_cap {
                OnCap::Wait => "waits until it turns",
                OnCap::Fail => "fails",
            };
            line.push_str(&format!(" ⚠️ {reason}: the next agent step {next}."));
        }
        Some(line)
    }
}

/// Before an agent step spends: checks the caps for the run's repository. Over a cap, the
/// step fails (`on_cap = "fail"`) or waits, its progress saying why, until it may go on.
pub async fn admit(
    ctx: &ActionContext,
    engine: &Engine,
    limits: &LimitsSection,
) -> Result<(), ActionError> {
    if limits.daily_cost_usd.is_none() && limits.monthly_cost_usd.is_none() {
        return Ok(());
    }
    let repo = engine
        .head(&ctx.run_id)
        .map(|h| repo_of(&h))
        .unwrap_or_default();
    loop {
        let spending = measure_for(engine, limits, &repo)
            .map_err(|e| ActionError::retryable(format!("cannot count spending: {e}")))?;
        let Some(reason) = spending.over_cap(&repo) else {
            return Ok(());
        };
        if limits.on_cap == OnCap::Fail {
            return Err(ActionError::fatal(reason));
        }
        ctx.progress.say(format!("Waiting: {reason}"));
        tokio::select! {
            () = tokio::time::sleep(RECHECK) => {}
            () = ctx.cancel.cancelled() => return Err(ActionError::fatal(format!("cancelled while waiting: {reason}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_utc_days_and_months() {
        // 2026-11-24T21:34:00.123Z
        let (day, month) = period_starts(1_795_556_040_123);
        assert_eq!(
            crate::timestamp::rfc3339_millis(day),
            "2026-11-24T00:00:00.000Z"
        );
        assert_eq!(
            crate::timestamp::rfc3339_millis(month),
            "2026-11-01T00:00:00.000Z"
        );
    }

    #[test]
    fn caps_name_what_was_spent_and_the_key() {
        let mut s = Spending {
            daily_cap: Some(0.5),
            monthly_cap: Some(2.0),
            ..Spending::default()
        };
        s.today_by_repo.insert("octo/a".into(), 0.6);
        s.month_total = 0.6;
        let reason = s.over_cap("Octo/A").unwrap();
        assert!(
            reason.contains("$0.60") && reason.contains("daily_cost_usd"),
            "{reason}"
        );
        assert_eq!(s.over_cap("octo/b"), None);
        s.month_total = 2.0;
        assert!(s.over_cap("octo/b").unwrap().contains("monthly_cost_usd"));
        assert_eq!(
            step_cost(&serde_json::json!({"usage": {"cost_usd": 0.25}})),
            0.25
        );
        assert_eq!(step_cost(&serde_json::json!({"line": "3 passed"})), 0.0);
        let line = s.summary_line("octo/a", OnCap::Wait).unwrap();
        assert!(
            line.starts_with("Spending: $0.60 of $0.50 today on octo/a"),
            "{line}"
        );
        assert!(
            line.ends_with("the next agent step waits until it turns."),
            "{line}"
        );
        assert_eq!(
            Spending::default().summary_line("octo/a", OnCap::Fail),
            None
        );
    }

    #[tokio::test]
    async fn admission_counts_the_runs_about_its_repository_through_the_index() {
        use baton_actors::{Definition, EngineConfig, StepDef};
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), EngineConfig::default())
            .await
            .unwrap();
        engine.register_action("spend", |_ctx: ActionContext| async move {
            Ok(serde_json::json!({"usage": {"cost_usd": 0.25}}))
        });
        let def = Definition::builder("spender")
            .step(StepDef::action("a", "spend"))
            .build();
        engine.register_workflow(def, "test").await.unwrap();
        for repo in ["Octo/A", "octo/b", "octo/b"] {
            let mut input = serde_json::Map::new();
            input.insert("repo".into(), repo.into());
            input.insert("issue".into(), 1.into());
            let id = engine.start("spender", input, None).await.unwrap();
            engine.settled(&id).await.unwrap();
        }
        let daily = LimitsSection {
            daily_cost_usd: Some(1.0),
            ..LimitsSection::default()
        };
        // Every repository's, for the report.
        let all = measure(&engine, &daily).unwrap();
        assert_eq!(all.today_by_repo.get("octo/b"), Some(&0.5));
        assert_eq!(all.today_by_repo.get("octo/a"), Some(&0.25));
        // A daily cap is per repository: admission reads the runs about it, and no other.
        let a = measure_for(&engine, &daily, "octo/A").unwrap();
        assert_eq!(a.today_by_repo.keys().collect::<Vec<_>>(), ["octo/a"]);
        assert_eq!(a.today_by_repo["octo/a"], 0.25);
        assert_eq!(a.over_cap("octo/a"), None);
        let tight = LimitsSection {
            daily_cost_usd: Some(0.5),
            ..LimitsSection::default()
        };
        assert!(measure_for(&engine, &tight, "octo/b")
            .unwrap()
            .over_cap("octo/b")
            .is_some());
        // A monthly cap is overall: every run counts.
        let monthly = LimitsSection {
            monthly_cost_usd: Some(0.5),
            ..LimitsSection::default()
        };
        let b = measure_for(&engine, &monthly, "octo/a").unwrap();
        assert_eq!(b.month_total, 0.75);
        assert!(b.over_cap("octo/a").is_some());
    }
}
