//! The coding agent's actions.
//!
//! - `agent.implement`: runs the coding agent on a repository in the run's workspace.
//!   Parameters: `issue` (`{title, body, labels}`) or `task` (text); `dir` (the repository,
//!   relative to the workspace, default `repo`); `backend` (overrides `agent.backend`).
//!   Output: the agent's report (issue, analysis, plan, outcome, changes, usage, redacted
//!   transcript).
//!   With `plan` (the issue_to_pr plan step's output: `text`, and a model's `plan` and
//!   `usage`) and `plan_approved`, the agent's prompt carries the plan's text, a model starts
//!   from its plan, and what planning spent counts in the run's cost budget.
//! - `agent.fix`: one fix round after failing verification. Parameters: `report` (the
//!   previous report, e.g. `{{ steps.implement.output }}`), `failure` (the failing output),
//!   `dir`, `backend`. Output: the new report.
//!
//! Both record every file change in the step's journal before making it. A budget that
//! runs out fails the step (not retryable) with the report as its output: the partial work
//! stays in the repository and the workflow decides what to do with it.

use std::path::PathBuf;
use std::sync::Arc;

use baton_actors::{ActionContext, ActionError, Engine};
use serde_json::Value;

use crate::agent::{
    self, Agent, AgentConfig, BackendKind, IssueInput, PlanBrief, ProviderEnv, Report,
};
use crate::config::Config;

/// The actions this module registers.
pub(super) const NAMES: [&str; 2] = ["agent.implement", "agent.fix"];

/// Registers the agent's actions with `engine`.
pub fn register(engine: &Engine, config: &Config) {
    let caps = Arc::new(Caps {
        engine: engine.clone(),
        limits: config.limits.clone(),
    });
    let agent_config = Arc::new(config.agent.clone());
    let implement_config = agent_config.clone();
    let implement_caps = caps.clone();
    engine.register_action("agent.implement", move |ctx: ActionContext| {
        let (config, caps) = (implement_config.clone(), implement_caps.clone());
        async move { implement(ctx, &config, &caps).await }
    });
    engine.register_action("agent.fix", move |ctx: ActionContext| {
        let (config, caps) = (agent_config.clone(), caps.clone());
        async move { fix(ctx, &config, &caps).await }
    });
}

/// What the spending caps are checked against.
struct Caps {
    engine: Engine,
    limits: crate::config::LimitsSection,
}

async fn implement(
    ctx: ActionContext,
    config: &AgentConfig,
    caps: &Caps,
) -> Result<Value, ActionError> {
    let issue = issue_param(&ctx)?;
    let repo = repo_dir(&ctx)?;
    let agent = build_agent(&ctx, config)?;
    crate::spending::admit(&ctx, &caps.engine, &caps.limits).await?;
    let brief = plan_brief(&ctx);
    let report = agent
        .run_with_plan(
            &repo,
            &issue,
            brief.as_ref(),
            &ctx.journal,
            &ctx.progress,
            &ctx.cancel,
        )
        .await
        .map_err(agent_error)?;
    report_output(&ctx, report)
}

/// The `plan` parameter, when it has a text; `plan_approved` says whether a person approved it.
fn plan_brief(ctx: &ActionContext) -> Option<PlanBrief> {
    let given = ctx.params.get("plan").filter(|v| v.is_object())?;
    let text = given
        .get("text")
        .and_then(Value::as_str)
        .filter(|t| !t.trim().is_empty())?;
    let approved = matches!(ctx.params.get("plan_approved"), Some(Value::Bool(true)))
        || ctx.params.get("plan_approved").and_then(Value::as_str) == Some("true");
    let read = |key: &str| given.get(key).filter(|v| !v.is_null()).cloned();
    Some(PlanBrief {
        text: text.to_string(),
        plan: read("plan").and_then(|p| serde_json::from_value(p).ok()),
        approved,
        spent: read("usage")
            .and_then(|u| serde_json::from_value(u).ok())
            .unwrap_or_default(),
    })
}

async fn fix(ctx: ActionContext, config: &AgentConfig, caps: &Caps) -> Result<Value, ActionError> {
    let previous: Report = match ctx.params.get("report") {
        Some(value) => serde_json::from_value(value.clone()).map_err(|e| {
            ActionError::fatal(format!(
                "step `{}`: parameter `report` is not an agent report ({e}); pass the \
                 agent.implement step's output, e.g. \"{{{{ steps.implement.output }}}}\"",
                ctx.step_id
            ))
        })?,
        None => {
            return Err(ActionError::fatal(format!(
                "step `{}`: missing parameter `report` (the previous agent report)",
                ctx.step_id
            )))
        }
    };
    let failure = ctx.param_str("failure")?.to_string();
    let repo = repo_dir(&ctx)?;
    let agent = build_agent(&ctx, config)?;
    crate::spending::admit(&ctx, &caps.engine, &caps.limits).await?;
    let report = agent
        .fix(
            &repo,
            &previous,
            &failure,
            &ctx.journal,
            &ctx.progress,
            &ctx.cancel,
        )
        .await
        .map_err(agent_error)?;
    report_output(&ctx, report)
}

/// `issue` (an object) or `task` (text whose first line is the title).
fn issue_param(ctx: &ActionContext) -> Result<IssueInput, ActionError> {
    match (ctx.params.get("issue"), ctx.params.get("task")) {
        (Some(issue), None) => issue_from_value(issue).map_err(|e| {
            ActionError::fatal(format!("step `{}`: parameter `issue`: {e}", ctx.step_id))
        }),
        (None, Some(_)) => Ok(IssueInput::from_text(ctx.param_str("task")?)),
        (Some(_), Some(_)) => Err(ActionError::fatal(format!(
            "step `{}`: give either `issue` or `task`, not both",
            ctx.step_id
        ))),
        (None, None) => Err(ActionError::fatal(format!(
            "step `{}`: missing parameter `issue` (an object with title, body, labels) or `task` (text)",
            ctx.step_id
        ))),
    }
}

/// `{title, body, labels, number}`; labels may be strings or GitHub label objects.
fn issue_from_value(value: &Value) -> Result<IssueInput, String> {
    let Value::Object(map) = value else {
        return Err(format!(
            "expected an object with title, body, labels; got {value}"
        ));
    };
    let text = |key: &str| -> Result<String, String> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!("`{key}` must be a string, got {other}")),
        }
    };
    let labels = match map.get("labels") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|l| match l {
                Value::String(s) => Ok(s.clone()),
                Value::Object(o) => o
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| format!("label {l} has no name")),
                other => Err(format!("label {other} is not a string")),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(format!("`labels` must be a list, got {other}")),
    };
    let title = text("title")?;
    if title.trim().is_empty() && text("body")?.trim().is_empty() {
        return Err("the issue has neither a title nor a body".into());
    }
    Ok(IssueInput {
        number: map.get("number").and_then(Value::as_u64),
        title,
        body: text("body")?,
        labels,
    })
}

/// The repository: `dir` (default `repo`) under the workspace, a directory already.
fn repo_dir(ctx: &ActionContext) -> Result<PathBuf, ActionError> {
    let path = crate::workspace::repo_dir(ctx)?;
    if !path.is_dir() {
        return Err(ActionError::fatal(format!(
            "step `{}`: repository directory {} does not exist (clone it first, or set `dir`)",
            ctx.step_id,
            path.display()
        )));
    }
    Ok(path)
}

/// The configured agent, with the step's `backend` override.
fn build_agent(ctx: &ActionContext, config: &AgentConfig) -> Result<Agent, ActionError> {
    let mut config = config.clone();
    // An empty string is "not given": a workflow input that defaults to "" passes through.
    if ctx
        .params
        .get("backend")
        .is_some_and(|b| !b.is_null() && b.as_str() != Some(""))
    {
        config.backend = ctx
            .param_str("backend")?
            .parse::<BackendKind>()
            .map_err(|e| ActionError::fatal(format!("step `{}`: {e}", ctx.step_id)))?;
    }
    Agent::new(config, &ProviderEnv::from_process())
        .map(|agent| agent.with_trust(crate::sandbox::Trust::from_params(&ctx.params)))
        .map_err(|e| ActionError::fatal(format!("step `{}`: {e}", ctx.step_id)))
}

/// A finished report is the output; a stopped one fails the step, keeping the report.
fn report_output(ctx: &ActionContext, report: Report) -> Result<Value, ActionError> {
    let changed = report.changes.len();
    let mut output = serde_json::to_value(&report)
        .map_err(|e| ActionError::fatal(format!("cannot serialize the agent report: {e}")))?;
    output["summary"] = Value::String(if report.round == 0 {
        format!("Implemented changes ({changed} files modified)")
    } else {
        format!(
            "Fix round {}: {changed} files modified in all",
            report.round
        )
    });
    match &report.outcome {
        agent::Outcome::Finished { .. } => {
            ctx.progress.say(format!("agent finished: {changed} file(s) changed"));
            Ok(output)
        }
        agent::Outcome::Stopped { reason } => Err(ActionError::fatal(format!(
            "the agent stopped: {reason}; the {changed} file(s) changed so far stay in the repository"
        ))
        .with_output(output)),
    }
}

/// Provider trouble and local IO may pass on a later attempt; the rest will not.
pub(crate) fn agent_error(e: agent::Error) -> ActionError {
    match e {
        agent::Error::Provider { .. } | agent::Error::Io { .. } | agent::Error::Command(_) => {
            ActionError::retryable(e.to_string())
        }
        _ => ActionError::fatal(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::known;
    use serde_json::json;

    #[test]
    fn names_include_the_agent() {
        assert!(known("agent.implement") && known("agent.fix") && known("shell"));
        assert!(!known("agent.other"));
    }

    #[test]
    fn issues_from_json() {
        let i = issue_from_value(
            &json!({"title": "T", "body": "B", "labels": ["bug", {"name": "x"}], "number": 7}),
        )
        .unwrap();
        assert_eq!(
            (i.title.as_str(), i.body.as_str(), i.number),
            ("T", "B", Some(7))
        );
        assert_eq!(i.labels, vec!["bug".to_string(), "x".to_string()]);
        assert!(issue_from_value(&json!("text"))
            .unwrap_err()
            .contains("object"));
        assert!(issue_from_value(&json!({"title": 3}))
            .unwrap_err()
            .contains("title"));
        assert!(issue_from_value(&json!({"labels": []}))
            .unwrap_err()
            .contains("neither"));
    }
}
