//! `.baton.toml`: a repository's own verification settings. Unknown keys are errors that name
//! the key and its line, so a typo never silently drops a check.
//!
//! ```toml
//! [verify]
//! detect = true        # keep the detected checks (default true)
//! fail_fast = false    # stop at the first failing critical check (default false)
//!
//! [[verify.checks]]
//! kind = "tests"       # tests | lint | types | custom; tests/lint/types replace detected ones
//! command = "make check"
//! critical = true      # default true
//! timeout = "10m"      # "90s", "10m", "1h" or seconds; default: the caller's
//! ```

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::{CheckSpec, Error, Kind, Result};

/// The file name, at the repository root.
pub const BATON_TOML: &str = ".baton.toml";

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    verify: Option<Section>,
    /// The Issue → PR workflow's section, read (and checked) by that workflow.
    #[serde(default)]
    #[allow(dead_code)]
    issue_to_pr: Option<toml::Value>,
    /// The repository's CI (`[ci]`), read (and checked) by the Issue → PR workflow.
    #[serde(default)]
    #[allow(dead_code)]
    ci: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    #[serde(default = "yes")]
    detect: bool,
    #[serde(default)]
    fail_fast: Option<bool>,
    #[serde(default)]
    checks: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    kind: Kind,
    command: String,
    #[serde(default = "yes")]
    critical: bool,
    #[serde(default)]
    timeout: Option<Timeout>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Timeout {
    Seconds(u64),
    Text(String),
}

fn yes() -> bool {
    true
}

/// The repository's settings, defaults when there is no `.baton.toml`.
pub(crate) struct RepoConfig {
    pub detect: bool,
    pub fail_fast: Option<bool>,
    pub checks: Vec<CheckSpec>,
}

pub(crate) fn load(repo: &Path) -> Result<RepoConfig> {
    let path = repo.join(BATON_TOML);
    let text =
        match crate::sandbox::tree::read_regular(&path, crate::sandbox::tree::MAX_MANIFEST_BYTES) {
            Ok(t) => t,
            Err(crate::sandbox::tree::NotRead::Absent) => {
                return Ok(RepoConfig {
                    detect: true,
                    fail_fast: None,
                    checks: Vec::new(),
                })
            }
            Err(why) => {
                return Err(Error::Config {
                    path,
                    message: why.to_string(),
                })
            }
        };
    parse(&text).map_err(|message| Error::Config { path, message })
}

/// A TOML error as "line N: what is wrong", without quoting the file: the caller shows it in
/// reports and comments, and the text is the repository's, not baton's.
pub(crate) fn toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {}", e.message().trim())
        }
        None => e.message().trim().to_string(),
    }
}

fn parse(text: &str) -> std::result::Result<RepoConfig, String> {
    let file: File = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
    let Some(section) = file.verify else {
        return Ok(RepoConfig {
            detect: true,
            fail_fast: None,
            checks: Vec::new(),
        });
    };
    let mut checks = Vec::new();
    for (i, e) in section.checks.into_iter().enumerate() {
        if e.command.trim().is_empty() {
            return Err(format!("verify.checks[{i}].command is empty"));
        }
        let timeout = match e.timeout {
            None => None,
            Some(Timeout::Seconds(0)) => {
                return Err(format!("verify.checks[{i}].timeout must be more than 0"))
            }
            Some(Timeout::Seconds(s)) => Some(Duration::from_secs(s)),
            Some(Timeout::Text(t)) => Some(
                parse_duration(&t)
                    .map_err(|why| format!("verify.checks[{i}].timeout = {t:?}: {why}"))?,
            ),
        };
        checks.push(CheckSpec {
            kind: e.kind,
            command: e.command,
            critical: e.critical,
            timeout,
        });
    }
    Ok(RepoConfig {
        detect: section.detect,
        fail_fast: section.fail_fast,
        checks,
    })
}

/// `"90s"`, `"10m"`, `"1h"`, `"500ms"` or a bare number of seconds.
fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a number with a unit (ms, s, m, h)".to_string())?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        other => return Err(format!("unknown unit `{other}` (use ms, s, m or h)")),
    };
    if d.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_checks_and_defaults() {
        let c = parse(
            r#"
            [verify]
            fail_fast = true
            [[verify.checks]]
            kind = "tests"
            command = "make check"
            timeout = "2m"
            [[verify.checks]]
            kind = "custom"
            command = "./smoke.sh"
            critical = false
            timeout = 30
            "#,
        )
        .unwrap();
        assert!(c.detect);
        assert_eq!(c.fail_fast, Some(true));
        assert_eq!(c.checks.len(), 2);
        assert_eq!(c.checks[0].timeout, Some(Duration::from_secs(120)));
        assert!(c.checks[0].critical);
        assert_eq!(c.checks[1].kind, Kind::Custom);
        assert!(!c.checks[1].critical);
        assert_eq!(c.checks[1].timeout, Some(Duration::from_secs(30)));
        assert!(parse("").unwrap().checks.is_empty());
    }

    #[test]
    fn errors_name_the_key() {
        for (text, needle) in [
            ("[verify]\nfail_fats = true\n", "fail_fats"),
            ("[verfy]\n", "verfy"),
            (
                "[[verify.checks]]\nkind = \"tests\"\ncommand = \"x\"\ncritcal = true\n",
                "critcal",
            ),
            (
                "[[verify.checks]]\nkind = \"unit\"\ncommand = \"x\"\n",
                "unit",
            ),
            ("[[verify.checks]]\nkind = \"tests\"\n", "command"),
            (
                "[[verify.checks]]\nkind = \"tests\"\ncommand = \"x\"\ntimeout = \"5 parsecs\"\n",
                "timeout",
            ),
            (
                "[[verify.checks]]\nkind = \"tests\"\ncommand = \" \"\n",
                "command is empty",
            ),
        ] {
            let err = parse(text)
                .err()
                .unwrap_or_else(|| panic!("accepted {text:?}"));
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("s").is_err());
    }
}
