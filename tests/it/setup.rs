//! The setting the workflow tests start from: a temporary directory holding baton's data dir and
//! config file, a local forge with one repository pushed from a real git project, and the real
//! `baton` binary run against them. Each test module wraps it with what its workflow needs
//! (issues to file, a pull request already open, a daemon).

use std::path::PathBuf;
use std::process::{Command, Output};

use baton::forge::local::LocalForge;
use baton::forge::{Forge, Repo};
use serde_json::Value;

use crate::common;
use crate::BATON;

/// A `Cargo.toml` for a one-crate project named `calc`, outside any workspace.
pub const CALC_CARGO_TOML: &str =
    "[package]\nname = \"calc\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n";

pub struct Setup {
    _tmp: tempfile::TempDir,
    /// The temporary directory everything else is in (scripts a test writes go here too).
    pub root: PathBuf,
    pub data: PathBuf,
    pub config: PathBuf,
    /// The project's work tree, from which `main` was pushed.
    pub project: PathBuf,
    /// The repository's bare remote in the local forge, as git's URL.
    pub remote: String,
    pub forge: LocalForge,
    pub repo: Repo,
}

impl Setup {
    /// A local forge (baton's login `baton`) holding `repo`, which baton and `members` may push
    /// to; its `main` is one commit of `files` (path, text). The config file is the local
    /// forge's lines followed by `config`.
    pub fn new(repo: &str, members: &[&str], config: &str, files: &[(&str, &str)]) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let data = root.join("data");
        let config_file = root.join("config.toml");
        std::fs::write(
            &config_file,
            format!("[forge]\nkind = \"local\"\nlogin = \"baton\"\n{config}"),
        )
        .unwrap();
        let project = root.join("project");
        for (path, text) in files {
            let path = project.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        std::fs::create_dir_all(&project).unwrap();
        common::git(&project, &["init", "--quiet", "--initial-branch=main"]);
        common::git(&project, &["add", "--all"]);
        common::git(&project, &["commit", "--quiet", "-m", "first"]);
        let forge = LocalForge::open(data.join("forge"), "baton").unwrap();
        let repo = Repo::parse(repo).unwrap();
        let mut writers = vec!["baton"];
        writers.extend_from_slice(members);
        block_on(forge.create_repo(&repo, "main", &writers)).unwrap();
        let remote = forge.remote(&repo).display().to_string();
        common::git(&project, &["push", "--quiet", &remote, "main"]);
        Setup {
            _tmp: tmp,
            root,
            data,
            config: config_file,
            project,
            remote,
            forge,
            repo,
        }
    }

    /// Runs `baton` on this data dir and config, with no GitHub token or model provider's
    /// variables from the environment.
    pub fn baton(&self, args: &[&str]) -> Output {
        self.baton_with(args, &[])
    }

    /// [`Setup::baton`] with `env` added.
    pub fn baton_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(BATON)
            .args(args)
            .env("BATON_DATA_DIR", &self.data)
            .env("BATON_CONFIG", &self.config)
            .env_remove("GITHUB_TOKEN")
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("ANTHROPIC_API_KEY")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .output()
            .expect("baton runs")
    }

    /// A `--json` command's exit code, the record it printed (`null` when none) and its stderr.
    pub fn baton_json(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, Value, String) {
        let out = self.baton_with(args, env);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let record = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code().unwrap_or(-1), record, stderr)
    }

    /// `baton show RUN --json`.
    pub fn show(&self, run: &str) -> Value {
        let out = self.baton(&["show", run, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The bodies of the comments on issue or pull request `number`, oldest first.
    pub fn comments(&self, number: u64) -> Vec<String> {
        block_on(self.forge.comments(&self.repo, number))
            .unwrap()
            .into_iter()
            .map(|c| c.body)
            .collect()
    }

    /// The remote's branches.
    pub fn remote_branches(&self) -> Vec<String> {
        common::git(
            std::path::Path::new(&self.remote),
            &["for-each-ref", "--format=%(refname:short)", "refs/heads/"],
        )
        .lines()
        .map(str::to_string)
        .collect()
    }
}

/// Runs a future to its end on a runtime of its own (the forge's calls, from a plain test).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
