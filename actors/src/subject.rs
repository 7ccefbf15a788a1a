//! What a run is about (a repository, and an issue or pull request of it), and the search
//! syntax that finds runs by it.
//!
//! The engine knows nothing of GitHub; it reads a convention the app's callers follow. A run
//! is about the repository named by `repo` in its input or its job's data, and the issue or
//! pull request named by `issue` or `pr` in its input, or by `number` (or `subject.number`,
//! as webhook jobs store it) in its job's data. The store indexes each run under these names
//! once, in the commit that starts it (see `store::Store::subject_writes`); they never change.
//! Repository names compare without case, as GitHub's do.

use serde_json::{Map, Value};

use crate::job::Job;

/// Which runs a search names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunSearch {
    /// Runs whose id starts with this.
    IdPrefix(String),
    /// Runs about this repository (`owner/name`).
    Repo(String),
    /// Runs about this issue or pull request.
    Issue {
        /// `owner/name`.
        repo: String,
        /// The issue or pull request number.
        number: u64,
    },
}

impl RunSearch {
    /// Reads what a person types in a search box: `owner/name#N` (an issue or PR),
    /// `owner/name` (a repository), anything else is a run id prefix.
    pub fn parse(text: &str) -> RunSearch {
        let text = text.trim();
        if let Some((repo, number)) = text.rsplit_once('#') {
            if let Ok(number) = number.trim().parse::<u64>() {
                if repo.contains('/') {
                    return RunSearch::Issue {
                        repo: repo.trim().to_string(),
                        number,
                    };
                }
            }
        }
        if text.contains('/') {
            return RunSearch::Repo(text.to_string());
        }
        RunSearch::IdPrefix(text.to_string())
    }
}

/// The index name of a repository.
pub(crate) fn repo_name(repo: &str) -> String {
    repo.trim().to_lowercase()
}

/// The index name of an issue or pull request.
pub(crate) fn issue_name(repo: &str, number: u64) -> String {
    format!("{}#{number}", repo_name(repo))
}

fn text(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// A number as JSON gives it, or as text (`7` or `#7`).
fn number(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().trim_start_matches('#').parse().ok(),
        _ => None,
    }
}

/// The index names of what a run is about: each repository and `repository#number` its input
/// or its job names (usually one of each; none for a run about no repository).
pub(crate) fn subject_names(input: &Map<String, Value>, job: Option<&Job>) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |repo: Option<&str>, n: Option<u64>| {
        if let Some(repo) = repo {
            out.push(repo_name(repo));
            if let Some(n) = n {
                out.push(issue_name(repo, n));
            }
        }
    };
    add(
        text(input.get("repo")),
        number(input.get("issue")).or_else(|| number(input.get("pr"))),
    );
    if let Some(data) = job.map(|j| &j.data) {
        add(
            text(data.get("repo")),
            number(data.get("number"))
                .or_else(|| number(data.get("subject").and_then(|s| s.get("number")))),
        );
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn searches_read_as_people_type_them() {
        let check = |text: &str, expected: RunSearch| assert_eq!(RunSearch::parse(text), expected);
        check(
            "Octo/App#7",
            RunSearch::Issue {
                repo: "Octo/App".into(),
                number: 7,
            },
        );
        check(" octo/app ", RunSearch::Repo("octo/app".into()));
        check("run_01h", RunSearch::IdPrefix("run_01h".into()));
        // A `#` without a repository, or without a number, is not an issue.
        check("#7", RunSearch::IdPrefix("#7".into()));
        check("octo/app#x", RunSearch::Repo("octo/app#x".into()));
        assert_eq!(issue_name(" Octo/App", 7), "octo/app#7");
    }

    #[test]
    fn a_run_is_about_what_its_input_and_job_name() {
        let check = |input: Value, data: Option<Value>, expected: &[&str]| {
            let job = data.map(|data| Job {
                data,
                ..Default::default()
            });
            let input = input.as_object().cloned().unwrap();
            assert_eq!(subject_names(&input, job.as_ref()), expected);
        };
        check(
            json!({"repo": "Octo/App", "issue": 7}),
            None,
            &["octo/app", "octo/app#7"],
        );
        check(
            json!({"repo": "octo/app", "pr": "#8"}),
            None,
            &["octo/app", "octo/app#8"],
        );
        check(
            json!({"repo": "octo/app", "tag": "v1"}),
            None,
            &["octo/app"],
        );
        check(json!({"issue": 7}), None, &[]);
        // A webhook job's data names it even when the workflow's inputs do not.
        check(
            json!({"x": 1}),
            Some(json!({"repo": "octo/app", "subject": {"kind": "issue", "number": 3}})),
            &["octo/app", "octo/app#3"],
        );
        // Input and job agree: one entry each.
        check(
            json!({"repo": "octo/app", "issue": 3}),
            Some(json!({"repo": "Octo/App", "number": 3})),
            &["octo/app", "octo/app#3"],
        );
    }
}
