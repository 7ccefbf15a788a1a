//! Plan: the structured plan a model gives through the `plan` tool (or as a JSON object in
//! its text), kept in the run state and shown in progress updates.
//!
//! Two phases give one: the planning phase ([`crate::agent::Agent::plan`]), which only reads
//! the repository and whose plan is what a person approves, and the implementing round, whose
//! model may record or revise a plan before it writes. Both accept the same arguments; the
//! planning phase asks for all of them (files with why, the approach, the tests, the risks).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::agent::budget::Usage;
use crate::agent::transcript::{Redactor, Transcript};

/// A plan of implementation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// What will be done, in order.
    pub steps: Vec<String>,
    /// Files that will be created or changed.
    #[serde(default)]
    pub files_to_touch: Vec<String>,
    /// Tests that will be added, changed or run.
    #[serde(default)]
    pub tests_to_add: Vec<String>,
    /// How the change will be made, in a few sentences.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub approach: String,
    /// Why each file of `files_to_touch` changes, by path. Empty in plans stored before
    /// the planning phase existed, hence the default.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub why: BTreeMap<String, String>,
    /// What could go wrong, and what would show it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub risks: Vec<String>,
}

/// A file to touch as a model may name it: a path, or a path with the reason.
#[derive(Deserialize)]
#[serde(untagged)]
enum FileArg {
    Path(String),
    WithWhy {
        path: String,
        #[serde(default)]
        why: String,
    },
}

/// The `plan` tool's arguments (and a plan given as JSON text): [`Plan`]'s fields, with
/// `files_to_touch` as paths or `{path, why}` objects.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanArgs {
    steps: Vec<String>,
    #[serde(default)]
    files_to_touch: Vec<FileArg>,
    #[serde(default)]
    tests_to_add: Vec<String>,
    #[serde(default)]
    approach: String,
    #[serde(default)]
    risks: Vec<String>,
}

impl From<PlanArgs> for Plan {
    fn from(a: PlanArgs) -> Plan {
        let mut plan = Plan {
            steps: a.steps,
            tests_to_add: a.tests_to_add,
            approach: a.approach.trim().to_string(),
            risks: a.risks,
            ..Plan::default()
        };
        for f in a.files_to_touch {
            let (path, why) = match f {
                FileArg::Path(p) => (p, String::new()),
                FileArg::WithWhy { path, why } => (path, why),
            };
            let path = path.trim().to_string();
            if path.is_empty() || plan.files_to_touch.contains(&path) {
                continue;
            }
            if !why.trim().is_empty() {
                plan.why.insert(path.clone(), why.trim().to_string());
            }
            plan.files_to_touch.push(path);
        }
        plan
    }
}

impl Plan {
    /// Reads the `plan` tool's arguments.
    pub(crate) fn from_args(raw: &str) -> Result<Plan, serde_json::Error> {
        serde_json::from_str::<PlanArgs>(raw).map(Plan::from)
    }

    /// Reads a plan from a model's text: the first JSON object in it with a `steps` list.
    pub fn from_text(text: &str) -> Option<Plan> {
        let mut from = 0;
        while let Some(offset) = text[from..].find('{') {
            let start = from + offset;
            let mut stream =
                serde_json::Deserializer::from_str(&text[start..]).into_iter::<PlanArgs>();
            if let Some(Ok(args)) = stream.next() {
                if !args.steps.is_empty() {
                    return Some(args.into());
                }
            }
            from = start + 1;
        }
        None
    }

    /// What a plan from the planning phase lacks, in words for the model; `None` when it is
    /// complete. A person approves this plan, so it must say how and where, not only what.
    pub fn missing_for_approval(&self) -> Option<String> {
        let mut missing = Vec::new();
        if self.approach.is_empty() {
            missing.push("`approach`");
        }
        if self.steps.is_empty() {
            missing.push("at least one step");
        }
        if self.files_to_touch.is_empty() {
            missing.push("at least one file in `files_to_touch`");
        }
        (!missing.is_empty()).then(|| format!("the plan needs {}", missing.join(", ")))
    }

    /// The plan with every text passed through `redactor`: a model's words are stored,
    /// shown and posted, and must not carry a key it saw.
    pub(crate) fn redacted(self, redactor: &Redactor) -> Plan {
        let r = |s: String| redactor.redact(&s);
        Plan {
            steps: self.steps.into_iter().map(r).collect(),
            files_to_touch: self.files_to_touch.into_iter().map(r).collect(),
            tests_to_add: self.tests_to_add.into_iter().map(r).collect(),
            approach: r(self.approach),
            why: self.why.into_iter().map(|(k, v)| (r(k), r(v))).collect(),
            risks: self.risks.into_iter().map(r).collect(),
        }
    }

    /// One line for a progress update.
    pub fn summary(&self) -> String {
        format!(
            "Plan: {} steps, {} files to touch ({}), {} tests to add",
            self.steps.len(),
            self.files_to_touch.len(),
            self.files_to_touch.join(", "),
            self.tests_to_add.len()
        )
    }

    /// The plan as Markdown, for prompts, approval and pull request descriptions. Parts the
    /// plan does not have are left out.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.approach.is_empty() {
            out.push_str(&format!("Approach: {}\n", self.approach));
        }
        if !self.why.is_empty() {
            out.push_str("Files to change:\n");
            for f in &self.files_to_touch {
                match self.why.get(f) {
                    Some(why) => out.push_str(&format!("- `{f}`: {why}\n")),
                    None => out.push_str(&format!("- `{f}`\n")),
                }
            }
        }
        out.push_str("Steps:\n");
        for (i, s) in self.steps.iter().enumerate() {
            out.push_str(&format!("{}. {s}\n", i + 1));
        }
        if self.why.is_empty() && !self.files_to_touch.is_empty() {
            out.push_str(&format!(
                "Files to touch: {}\n",
                self.files_to_touch.join(", ")
            ));
        }
        if !self.tests_to_add.is_empty() {
            out.push_str(&format!("Tests to add: {}\n", self.tests_to_add.join("; ")));
        }
        if !self.risks.is_empty() {
            out.push_str("Risks:\n");
            for r in &self.risks {
                out.push_str(&format!("- {r}\n"));
            }
        }
        out
    }
}

/// What the planning phase produced ([`crate::agent::Agent::plan`]); kept in the plan step's
/// output and handed to the implementing round.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Planning {
    /// The model that planned.
    pub model: String,
    /// The plan, when the model gave a complete one.
    pub plan: Option<Plan>,
    /// Why there is no plan, when there is none ("the turn budget ran out", "the model
    /// answered without calling `plan`").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_plan: Option<String>,
    /// What planning used; the run's cost budget counts it.
    pub usage: Usage,
    /// The planning conversation, redacted.
    pub transcript: Transcript,
}

/// A plan made before the implementing round (the workflow's plan step), for its prompt.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanBrief {
    /// The plan's text as a person saw it (and approved, when `approved`).
    pub text: String,
    /// The structured plan, when a model made one: the round starts with it, so the model
    /// may write at once.
    pub plan: Option<Plan>,
    /// Whether a person approved `text` before the round.
    pub approved: bool,
    /// What making the plan used: counted in the run's cost budget and its total usage.
    pub spent: Usage,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_from_text() {
        let text = "Here is my plan {not json} and {\"steps\": [\"a\", \"b\"], \"files_to_touch\": [\"x.rs\"]} done";
        let plan = Plan::from_text(text).unwrap();
        assert_eq!(plan.steps, vec!["a", "b"]);
        assert_eq!(plan.files_to_touch, vec!["x.rs"]);
        assert_eq!(Plan::from_text("no plan {\"steps\": []}"), None);
    }

    #[test]
    fn files_come_with_or_without_why_and_old_plans_still_read() {
        let plan = Plan::from_args(
            r#"{"approach": "swap it", "steps": ["s"], "files_to_touch": [{"path": "a.rs", "why": "the bug"}, "b.rs", {"path": "a.rs"}], "risks": ["r"]}"#,
        )
        .unwrap();
        assert_eq!(plan.files_to_touch, vec!["a.rs", "b.rs"]);
        assert_eq!(plan.why.get("a.rs").map(String::as_str), Some("the bug"));
        assert_eq!(plan.missing_for_approval(), None);
        let text = plan.render();
        assert!(
            text.starts_with("Approach: swap it\nFiles to change:\n- `a.rs`: the bug\n- `b.rs`\n"),
            "{text}"
        );
        assert!(text.contains("Risks:\n- r\n"), "{text}");
        // A plan stored before `approach`, `why` and `risks` existed reads, and writes back
        // the same.
        let old = r#"{"steps":["x"],"files_to_touch":["y.rs"],"tests_to_add":[]}"#;
        let read: Plan = serde_json::from_str(old).unwrap();
        assert_eq!(serde_json::to_string(&read).unwrap(), old);
        assert_eq!(
            read.missing_for_approval().as_deref(),
            Some("the plan needs `approach`")
        );
        assert!(Plan::from_args(r#"{"steps": ["s"], "extra": 1}"#).is_err());
    }
}
