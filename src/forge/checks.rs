//! Checks: a verdict on one commit, by name. baton publishes its own measured verification as
//! one (`baton / verify`), and a repository's CI reports through them.
//!
//! On GitHub a check is a check run (`POST /repos/{o}/{r}/check-runs`) when baton is a GitHub
//! App, which alone may create them, and a commit status (`POST /repos/{o}/{r}/statuses/{sha}`)
//! with a personal access token; both are read back as [`CheckRun`]s. The local forge keeps the
//! checks of each commit in `checks/<sha>.json`, the latest of each name only, as GitHub's page
//! shows them.
//!
//! Nothing here holds a credential, and a check's text is what a tool printed: callers pass
//! measured lines and excerpts, never the environment.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Error, Result};

/// The name of baton's own check: what it measured on the head commit it pushed.
pub const BATON_CHECK: &str = "baton / verify";

/// GitHub takes at most 50 annotations per request; more are dropped, the summary says how
/// many.
pub const MAX_ANNOTATIONS: usize = 50;

/// GitHub refuses a check run's summary or text over 65,535 characters.
pub const MAX_SUMMARY_CHARS: usize = 65_000;

/// A commit status's description is at most 140 characters.
pub const MAX_STATUS_DESCRIPTION: usize = 140;

/// Whether a check has finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Created, not started.
    Queued,
    /// Running (a commit status that is `pending`).
    InProgress,
    /// Finished: its conclusion says how.
    Completed,
}

/// How a finished check ended, in GitHub's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Conclusion {
    /// It passed.
    Success,
    /// It failed.
    Failure,
    /// Neither: informational.
    Neutral,
    /// Stopped before it ended.
    Cancelled,
    /// Not run.
    Skipped,
    /// Ran out of time.
    TimedOut,
    /// Waits for a person on the forge.
    ActionRequired,
    /// Superseded (GitHub marks checks stale after 14 days incomplete).
    Stale,
}

impl Conclusion {
    /// Every conclusion with its name, for parsing and for messages.
    const ALL: [(Conclusion, &'static str); 8] = [
        (Conclusion::Success, "success"),
        (Conclusion::Failure, "failure"),
        (Conclusion::Neutral, "neutral"),
        (Conclusion::Cancelled, "cancelled"),
        (Conclusion::Skipped, "skipped"),
        (Conclusion::TimedOut, "timed_out"),
        (Conclusion::ActionRequired, "action_required"),
        (Conclusion::Stale, "stale"),
    ];

    /// GitHub's word for it.
    pub fn as_str(self) -> &'static str {
        Conclusion::ALL
            .iter()
            .find(|(c, _)| *c == self)
            .map_or("failure", |(_, name)| name)
    }

    /// Whether it lets a pull request through: success, and the conclusions that are not a
    /// verdict (neutral, skipped), as GitHub's required checks count them.
    pub fn passed(self) -> bool {
        matches!(
            self,
            Conclusion::Success | Conclusion::Neutral | Conclusion::Skipped
        )
    }
}

impl fmt::Display for Conclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Conclusion {
    type Err = Error;

    fn from_str(text: &str) -> Result<Conclusion> {
        Conclusion::ALL
            .iter()
            .find(|(_, name)| *name == text)
            .map(|(c, _)| *c)
            .ok_or_else(|| {
                let names: Vec<&str> = Conclusion::ALL.iter().map(|(_, n)| *n).collect();
                Error::Invalid(format!(
                    "`{text}` is not a check conclusion: expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// How serious an annotation is (GitHub's `annotation_level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnnotationLevel {
    /// For information.
    Notice,
    /// A warning.
    Warning,
    /// An error or a failing test.
    Failure,
}

/// A finding tied to a file and line of the commit: shown beside the line in the PR's diff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Annotation {
    /// The file, relative to the repository's root.
    pub path: String,
    /// Its first line (1-based).
    pub start_line: u64,
    /// Its last line.
    pub end_line: u64,
    /// How serious.
    pub level: AnnotationLevel,
    /// What the tool said.
    pub message: String,
}

/// A check on a commit as the forge reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRun {
    /// The forge's id (GitHub's check run id; the local forge's own counter; 0 for a commit
    /// status, which has no id of its own worth keeping).
    pub id: u64,
    /// Its name (a commit status's `context`).
    pub name: String,
    /// The commit it is about.
    pub head_sha: String,
    /// Whether it has finished.
    pub status: CheckStatus,
    /// How it ended, once completed.
    pub conclusion: Option<Conclusion>,
    /// One line: the output's title (a status's description).
    #[serde(default)]
    pub title: String,
    /// The output's summary (Markdown).
    #[serde(default)]
    pub summary: String,
    /// Where a person reads more (the CI job's page).
    #[serde(default)]
    pub details_url: Option<String>,
    /// The log posted with it (the local forge keeps one; GitHub's are read through the job).
    #[serde(default)]
    pub log: Option<String>,
    /// Findings on lines of the commit.
    #[serde(default)]
    pub annotations: Vec<Annotation>,
}

impl CheckRun {
    /// Completed with a conclusion that passes.
    pub fn passed(&self) -> bool {
        self.status == CheckStatus::Completed && self.conclusion.is_some_and(Conclusion::passed)
    }

    /// Completed with a conclusion that does not pass.
    pub fn failed(&self) -> bool {
        self.status == CheckStatus::Completed && !self.conclusion.is_some_and(Conclusion::passed)
    }
}

/// A check to publish on a commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCheck {
    /// Its name: [`BATON_CHECK`] for baton's own.
    pub name: String,
    /// The full sha of the commit (40 hex digits, or 64 in a SHA-256 repository).
    pub head_sha: String,
    /// How it ended (baton publishes checks it has finished).
    pub conclusion: Conclusion,
    /// One line saying what was measured.
    pub title: String,
    /// The measured lines (Markdown).
    pub summary: String,
    /// Where a person reads more (the run's page).
    pub details_url: Option<String>,
    /// The log to keep with it (the local forge only).
    pub log: Option<String>,
    /// Findings on lines of the commit, at most [`MAX_ANNOTATIONS`] are sent.
    pub annotations: Vec<Annotation>,
}

impl NewCheck {
    /// Refuses what no forge takes: an empty name, a sha that is not a full commit id.
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() || self.name.chars().any(char::is_control) {
            return Err(Error::Invalid(format!(
                "check name `{}` is empty or has control characters",
                self.name.escape_debug()
            )));
        }
        if !is_full_sha(&self.head_sha) {
            return Err(Error::Invalid(format!(
                "`{}` is not a full commit sha (40 or 64 hex digits)",
                self.head_sha
            )));
        }
        Ok(())
    }
}

/// Whether `sha` is a full commit id (SHA-1 or SHA-256), lower or upper case hex.
pub fn is_full_sha(sha: &str) -> bool {
    (sha.len() == 40 || sha.len() == 64) && sha.chars().all(|c| c.is_ascii_hexdigit())
}

/// `text` cut to at most `max` characters on a character boundary, with `…` when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conclusions_parse_by_githubs_words_and_say_which_pass() {
        for (c, name) in Conclusion::ALL {
            assert_eq!(name.parse::<Conclusion>().unwrap(), c);
            assert_eq!(c.as_str(), name);
            assert_eq!(serde_json::to_value(c).unwrap(), name);
        }
        let err = "passed".parse::<Conclusion>().unwrap_err().to_string();
        assert!(
            err.contains("`passed`") && err.contains("success, failure"),
            "{err}"
        );
        assert!(Conclusion::Skipped.passed() && !Conclusion::TimedOut.passed());
    }

    #[test]
    fn a_new_check_needs_a_name_and_a_full_sha() {
        let mut check = NewCheck {
            name: BATON_CHECK.into(),
            head_sha: "a".repeat(40),
            conclusion: Conclusion::Success,
            title: String::new(),
            summary: String::new(),
            details_url: None,
            log: None,
            annotations: vec![],
        };
        check.validate().unwrap();
        check.head_sha = "abc1234".into();
        assert!(check
            .validate()
            .unwrap_err()
            .to_string()
            .contains("abc1234"));
        check.head_sha = "b".repeat(64);
        check.validate().unwrap();
        check.name = " ".into();
        assert!(check.validate().is_err());
    }

    #[test]
    fn cut_keeps_short_text_and_marks_a_cut() {
        assert_eq!(cut("héllo", 5), "héllo");
        assert_eq!(cut("héllo", 3), "hé…");
    }
}
