//! One way to run `git`: a fixed environment, credentials only by environment, stderr redacted.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use baton_actors::procs;
use tokio::process::Command;

use super::secret::{redact, Credentials};
use super::{Error, Identity};

/// Environment variables of the parent that would point git at another repository or prompt.
pub(crate) const INHERITED_GIT_VARS_TO_DROP: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_ASKPASS",
    "SSH_ASKPASS",
    "GIT_CONFIG_PARAMETERS",
];

/// What a finished git command printed.
#[derive(Debug)]
pub(crate) struct Output {
    pub code: i32,
    pub stdout: String,
    /// Already redacted.
    pub stderr: String,
}

/// A git invocation context: where it runs, with which identity and credentials.
pub(crate) struct Git<'a> {
    pub dir: PathBuf,
    pub creds: Option<&'a Credentials>,
    /// The remote URL the credentials belong to; the header is scoped to its origin.
    pub url: Option<&'a str>,
    pub identity: Option<&'a Identity>,
}

impl<'a> Git<'a> {
    pub fn at(dir: &Path) -> Self {
        Git {
            dir: dir.to_path_buf(),
            creds: None,
            url: None,
            identity: None,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("git");
        cmd.args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("LC_ALL", "C")
            .env("LANGUAGE", "C");
        for v in INHERITED_GIT_VARS_TO_DROP {
            cmd.env_remove(v);
        }
        // Config given by environment: never written to any file, never in argv.
        let mut config: Vec<(String, String)> = vec![
            // No credential helper may store or offer anything.
            ("credential.helper".into(), String::new()),
            ("core.askPass".into(), String::new()),
        ];
        if let (Some(creds), Some(scope)) = (self.creds, self.url.and_then(http_scope)) {
            config.push((format!("http.{scope}.extraHeader"), creds.header()));
        }
        cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
        for (i, (k, v)) in config.iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), k);
            cmd.env(format!("GIT_CONFIG_VALUE_{i}"), v);
        }
        if let Some(id) = self.identity {
            cmd.env("GIT_AUTHOR_NAME", &id.name)
                .env("GIT_AUTHOR_EMAIL", &id.email)
                .env("GIT_COMMITTER_NAME", &id.name)
                .env("GIT_COMMITTER_EMAIL", &id.email);
        }
        cmd
    }

    /// Runs git and returns its output whatever the exit status.
    pub async fn output(&self, args: &[&str]) -> Result<Output, Error> {
        tracing::debug!(dir = %self.dir.display(), args = %args.join(" "), "git");
        let out = procs::output(self.command(args), "git")
            .await
            .map_err(|source| Error::Spawn {
                command: format!("git {}", args.first().unwrap_or(&"")),
                source,
            })?;
        Ok(Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: redact(&String::from_utf8_lossy(&out.stderr), self.creds),
        })
    }

    /// Runs git, failing on a non-zero exit; returns stdout with the trailing newline trimmed.
    pub async fn run(&self, args: &[&str]) -> Result<String, Error> {
        let out = self.output(args).await?;
        if out.code != 0 {
            return Err(self.failure(args, out));
        }
        Ok(out.stdout.trim_end().to_string())
    }

    /// Turns a failed command into the most specific error: authentication, a missing remote,
    /// or the command with its (redacted) stderr.
    pub fn failure(&self, args: &[&str], out: Output) -> Error {
        let lower = out.stderr.to_lowercase();
        if let Some(url) = self.url {
            let url = redact(url, self.creds);
            if [
                "authentication failed",
                "could not read username",
                "could not read password",
                "returned error: 401",
                "returned error: 403",
                "permission denied",
            ]
            .iter()
            .any(|p| lower.contains(p))
            {
                return Error::Auth {
                    url,
                    detail: first_line(&out.stderr),
                };
            }
            if [
                "repository not found",
                "does not exist",
                "does not appear to be a git repository",
                "returned error: 404",
                "could not resolve host",
                "failed to connect",
                "connection refused",
            ]
            .iter()
            .any(|p| lower.contains(p))
            {
                return Error::Remote {
                    url,
                    detail: first_line(&out.stderr),
                };
            }
        }
        Error::Git {
            command: redact(&format!("git {}", args.join(" ")), self.creds),
            dir: self.dir.clone(),
            code: out.code,
            stderr: out.stderr.trim().to_string(),
        }
    }
}

fn first_line(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

/// `https://host:port/path` → `https://host:port/`; `None` for anything that is not HTTP(S).
pub(crate) fn http_scope(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = rest.split('/').next()?;
    Some(format!("{scheme}://{host}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_header_to_origin() {
        assert_eq!(
            http_scope("https://github.com/o/r.git").as_deref(),
            Some("https://github.com/")
        );
        assert_eq!(
            http_scope("http://127.0.0.1:8080/r.git").as_deref(),
            Some("http://127.0.0.1:8080/")
        );
        assert_eq!(http_scope("/tmp/r.git"), None);
        assert_eq!(http_scope("file:///tmp/r.git"), None);
        assert_eq!(http_scope("ssh://git@host/r.git"), None);
    }
}
