//! What a forge is built from: its own settings, which the wiring fills in from `[forge]` and
//! `[github]`. The forge never sees the rest of the configuration, so `config` may depend on
//! the forge (and on the workflows that use it) without an arrow pointing back.

use std::path::PathBuf;

use serde::Deserialize;

/// Which forge backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An offline forge in a directory (JSON issues, a bare git remote).
    #[default]
    Local,
    /// GitHub (or GitHub Enterprise) through its REST API.
    Github,
}

/// Everything [`super::open`] needs. Holds no credential: GitHub's comes from the environment,
/// or the App kept in `github_app_dir`, when the forge is built (see
/// [`super::github::GithubAuth::resolve`]).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The backend.
    pub kind: Kind,
    /// The local forge's directory.
    pub root: PathBuf,
    /// The login the local forge acts as (author of its comments and pull requests).
    pub login: String,
    /// GitHub's REST API: `https://api.github.com`, or `https://HOST/api/v3` for Enterprise.
    pub github_base_url: String,
    /// Where `baton github app create` keeps the App (`<data_dir>/github-app`); `None` reads
    /// the environment only.
    pub github_app_dir: Option<PathBuf>,
}

impl Default for Settings {
    /// The local forge in `./forge`, acting as `baton`.
    fn default() -> Self {
        Settings {
            kind: Kind::Local,
            root: PathBuf::from("forge"),
            login: "baton".into(),
            github_base_url: super::github::GITHUB_API.into(),
            github_app_dir: None,
        }
    }
}
