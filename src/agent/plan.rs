//! Plan: the structured plan the model gives through the `plan` tool (or as a JSON object in
//! its text), kept in the run state and shown in progress updates.

use serde::{Deserialize, Serialize};

/// A plan of implementation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// What will be done, in order.
    pub steps: Vec<String>,
    /// Files that will be created or changed.
    #[serde(default)]
    pub files_to_touch: Vec<String>,
    /// Tests that will be added or changed.
    #[serde(default)]
    pub tests_to_add: Vec<String>,
}

impl Plan {
    /// Reads a plan from a model's text: the first JSON object in it with a `steps` list.
    pub fn from_text(text: &str) -> Option<Plan> {
        let mut from = 0;
        while let Some(offset) = text[from..].find('{') {
            let start = from + offset;
            let mut stream = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Plan>();
            if let Some(Ok(plan)) = stream.next() {
                if !plan.steps.is_empty() {
                    return Some(plan);
                }
            }
            from = start + 1;
        }
        None
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

    /// The plan as Markdown, for prompts and pull request descriptions.
    pub fn render(&self) -> String {
        let mut out = String::from("Steps:\n");
        for (i, s) in self.steps.iter().enumerate() {
            out.push_str(&format!("{}. {s}\n", i + 1));
        }
        if !self.files_to_touch.is_empty() {
            out.push_str(&format!(
                "Files to touch: {}\n",
                self.files_to_touch.join(", ")
            ));
        }
        if !self.tests_to_add.is_empty() {
            out.push_str(&format!("Tests to add: {}\n", self.tests_to_add.join("; ")));
        }
        out
    }
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
}
