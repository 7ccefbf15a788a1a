//! One way to run `git`: an environment built from nothing, the repository's config trusted for
//! nothing that runs a program or sends traffic (see `hardening`), credentials only by
//! environment, stderr redacted.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use baton_actors::procs;
use tokio::process::Command;

use super::hardening::{with_flags, Environment, Layout};
use super::secret::{redact, Credentials};
use super::{Error, Identity};

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
    /// The one remote URL the command may talk to (the run's record of it, never
    /// `.git/config`'s); the credentials' header is scoped to it.
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

    async fn command(&self, args: &[&str]) -> Result<Command, Error> {
        let layout = Layout::of(&self.dir)?;
        let mut env = Environment::for_command(&self.dir, &layout, self.url).await?;
        // Config given by environment: never written to any file, never in argv; last, so
        // that it follows the overrides of the repository's own `extraHeader`s.
        if let (Some(creds), Some(scope)) = (self.creds, self.url.and_then(header_scope)) {
            env.push_config(format!("http.{scope}.extraHeader"), creds.header());
        }
        if let Some(id) = self.identity {
            env.push_var("GIT_AUTHOR_NAME", &id.name);
            env.push_var("GIT_AUTHOR_EMAIL", &id.email);
            env.push_var("GIT_COMMITTER_NAME", &id.name);
            env.push_var("GIT_COMMITTER_EMAIL", &id.email);
        }
        let mut cmd = Command::new("git");
        cmd.args(with_flags(args))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        env.apply(&mut cmd);
        Ok(cmd)
    }

    /// Runs git and returns its output whatever the exit status.
    pub async fn output(&self, args: &[&str]) -> Result<Output, Error> {
        tracing::debug!(dir = %self.dir.display(), args = %args.join(" "), "git");
        let out = procs::output(self.command(args).await?, "git")
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

/// The URL itself for HTTP(S), `None` for anything else. The header goes to this exact URL:
/// no setting a repository can write is more specific, so none can take its place.
pub(crate) fn header_scope(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once("://")?;
    (scheme == "http" || scheme == "https").then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_header_to_the_url() {
        assert_eq!(
            header_scope("https://github.com/o/r.git"),
            Some("https://github.com/o/r.git")
        );
        assert_eq!(
            header_scope("http://127.0.0.1:8080/r.git"),
            Some("http://127.0.0.1:8080/r.git")
        );
        assert_eq!(header_scope("/tmp/r.git"), None);
        assert_eq!(header_scope("file:///tmp/r.git"), None);
        assert_eq!(header_scope("ssh://git@host/r.git"), None);
    }
}
