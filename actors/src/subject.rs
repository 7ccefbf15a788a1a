//! What a run is about ([`Subject`]: a repository, and an issue or pull request of it), and
//! the search syntax that finds runs by it.
//!
//! The engine knows nothing of GitHub; it reads a convention the app's callers follow. A run
//! is about the repository named by `repo` in its input or its job's data, and the issue or
//! pull request named by `issue` or `pr` in its input, or by `number` (or `subject.number`,
//! as webhook jobs store it) in its job's data. A number named by `issue` is an issue's, by
//! `pr` a pull request's, by `subject` of the `kind` it says; a bare `number` is of the kind
//! the app registered for the workflow ([`crate::Engine::set_subject_kind`]), an issue's
//! unless it did. The subject is computed once, when the run starts, and kept on its record
//! ([`crate::RunRecord::subject`]); the store indexes each run under its names in the same
//! commit (see `store::Store::subject_writes`); they never change. Repository names compare
//! without case, as GitHub's do.

use std::fmt;

use serde::{Deserialize, Serialize};
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

/// What a number of a [`Subject`] names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    /// No number: the run is about the repository.
    Repository,
    /// An issue.
    #[default]
    Issue,
    /// A pull request.
    PullRequest,
}

impl SubjectKind {
    /// `repository`, `issue`, `pull_request`.
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::Repository => "repository",
            SubjectKind::Issue => "issue",
            SubjectKind::PullRequest => "pull_request",
        }
    }

    /// The kind `text` names (as [`SubjectKind::as_str`] writes it).
    pub fn parse(text: &str) -> Option<SubjectKind> {
        match text.trim() {
            "repository" => Some(SubjectKind::Repository),
            "issue" => Some(SubjectKind::Issue),
            "pull_request" | "pr" => Some(SubjectKind::PullRequest),
            _ => None,
        }
    }
}

/// What a run is about: a repository (`owner/name`, as its input spells it), and the issue or
/// pull request of it when one is named.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// `owner/name`.
    pub repo: String,
    /// The issue or pull request number; `None` for a run about the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u64>,
    /// What the number names ([`SubjectKind::Repository`] without one).
    pub kind: SubjectKind,
}

impl Subject {
    /// A repository.
    pub fn repository(repo: impl Into<String>) -> Subject {
        Subject {
            repo: repo.into().trim().to_string(),
            number: None,
            kind: SubjectKind::Repository,
        }
    }

    /// An issue of `repo`.
    pub fn issue(repo: impl Into<String>, number: u64) -> Subject {
        Subject::numbered(repo, number, SubjectKind::Issue)
    }

    /// A pull request of `repo`.
    pub fn pull_request(repo: impl Into<String>, number: u64) -> Subject {
        Subject::numbered(repo, number, SubjectKind::PullRequest)
    }

    /// `repo`'s issue or pull request `number`, as `kind` says (a repository kind is read as
    /// an issue's: a number names one or the other).
    pub fn numbered(repo: impl Into<String>, number: u64, kind: SubjectKind) -> Subject {
        let kind = match kind {
            SubjectKind::Repository => SubjectKind::Issue,
            kind => kind,
        };
        Subject {
            repo: repo.into().trim().to_string(),
            number: Some(number),
            kind,
        }
    }

    /// What a run with `input`, started by `job`, is about (see the module documentation); a
    /// bare job `number` is of kind `bare`. `None` for a run about no repository.
    pub fn of(input: &Map<String, Value>, job: Option<&Job>, bare: SubjectKind) -> Option<Subject> {
        let from_input = text(input.get("repo")).map(|repo| {
            match (number(input.get("issue")), number(input.get("pr"))) {
                (Some(n), _) => Subject::issue(repo, n),
                (None, Some(n)) => Subject::pull_request(repo, n),
                (None, None) => Subject::repository(repo),
            }
        });
        if from_input.as_ref().is_some_and(|s| s.number.is_some()) {
            return from_input;
        }
        let data = job.map(|j| &j.data);
        let from_job = data.and_then(|data| {
            let repo = text(data.get("repo"))?;
            let subject = data.get("subject");
            let numbered = number(data.get("number")).map(|n| (n, bare)).or_else(|| {
                let n = number(subject.and_then(|s| s.get("number")))?;
                let kind = subject
                    .and_then(|s| s.get("kind"))
                    .and_then(Value::as_str)
                    .and_then(SubjectKind::parse)
                    .unwrap_or(bare);
                Some((n, kind))
            });
            Some(match numbered {
                Some((n, kind)) => Subject::numbered(repo, n, kind),
                None => Subject::repository(repo),
            })
        });
        match (from_input, from_job) {
            // The job names the number of the input's repository: both agree on it.
            (Some(i), Some(j)) if j.number.is_some() && same_repo(&i.repo, &j.repo) => Some(j),
            (Some(i), _) => Some(i),
            (None, j) => j,
        }
    }

    /// Whether this is about `repo` (compared without case).
    pub fn is_of_repo(&self, repo: &str) -> bool {
        same_repo(&self.repo, repo)
    }

    /// Its name in the run index: `owner/name` or `owner/name#7`, lower case.
    pub fn index_name(&self) -> String {
        match self.number {
            Some(n) => issue_name(&self.repo, n),
            None => repo_name(&self.repo),
        }
    }
}

/// `owner/name` or `owner/name#7`.
impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.number {
            Some(n) => write!(f, "{}#{n}", self.repo),
            None => f.write_str(&self.repo),
        }
    }
}

fn same_repo(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
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

/// An issue or pull request number as JSON gives it, or as text (`7` or `#7`): the one
/// reading of such numbers, for the engine and the app alike.
pub fn number(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => parse_number(s),
        _ => None,
    }
}

/// An issue or pull request number as a person writes it: `7` or `#7`.
pub fn parse_number(text: &str) -> Option<u64> {
    text.trim().trim_start_matches('#').trim().parse().ok()
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

    #[test]
    fn the_subject_is_read_once_by_one_rule() {
        let of = |input: Value, data: Option<Value>, bare: SubjectKind| {
            let job = data.map(|data| Job {
                data,
                ..Default::default()
            });
            Subject::of(input.as_object().unwrap(), job.as_ref(), bare)
        };
        let i = SubjectKind::Issue;
        assert_eq!(
            of(json!({"repo": " Octo/App ", "issue": "#7"}), None, i),
            Some(Subject::issue("Octo/App", 7))
        );
        assert_eq!(
            of(json!({"repo": "octo/app", "pr": 8}), None, i),
            Some(Subject::pull_request("octo/app", 8))
        );
        assert_eq!(
            of(json!({"repo": "octo/app", "tag": "v1"}), None, i),
            Some(Subject::repository("octo/app"))
        );
        assert_eq!(of(json!({"issue": 7}), None, i), None);
        let webhook = json!({"repo": "octo/app", "subject": {"kind": "pull_request", "number": 3}});
        assert_eq!(
            of(json!({"x": 1}), Some(webhook.clone()), i),
            Some(Subject::pull_request("octo/app", 3))
        );
        // The input's repository, the job's pull request.
        assert_eq!(
            of(json!({"repo": "Octo/App"}), Some(webhook), i),
            Some(Subject::pull_request("octo/app", 3))
        );
        let bare = json!({"repo": "octo/app", "number": 4});
        assert_eq!(
            of(json!({}), Some(bare.clone()), SubjectKind::PullRequest),
            Some(Subject::pull_request("octo/app", 4))
        );
        assert_eq!(
            of(json!({}), Some(bare), i),
            Some(Subject::issue("octo/app", 4))
        );
        assert_eq!(Subject::issue("Octo/App", 7).index_name(), "octo/app#7");
        assert_eq!(Subject::repository("Octo/App").to_string(), "Octo/App");
        assert_eq!(parse_number(" #12 "), Some(12));
        assert_eq!(parse_number("x"), None);
        // Stored as JSON, and read back.
        let text = serde_json::to_string(&Subject::issue("o/a", 7)).unwrap();
        assert_eq!(text, r#"{"repo":"o/a","number":7,"kind":"issue"}"#);
        assert_eq!(
            serde_json::from_str::<Subject>(r#"{"repo":"o/a","kind":"repository"}"#).unwrap(),
            Subject::repository("o/a")
        );
    }
}
