//! Configuration: built-in defaults, then `config.toml` (`--config`, `BATON_CONFIG`, or
//! `./config.toml`), then the environment. Unknown keys and bad values are errors that
//! name the key. Secrets never live here: they come from the environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_actors::definition::Dur;
#[cfg(feature = "postgres")]
use baton_actors::store::postgres::PgConfig;
use baton_actors::store::Backend as StoreBackend;
use baton_actors::EngineConfig;
use serde::Deserialize;

use crate::agent::AgentConfig;
use crate::triggers::{SenderPolicy, Trigger};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The file this was read from, if any: kept out of every sandbox.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// Where the store, workspaces and daemon files live (`BATON_DATA_DIR` wins).
    pub data_dir: Option<PathBuf>,
    /// Directories searched for workflow files by id.
    pub workflow_dirs: Vec<PathBuf>,
    /// The engine.
    pub engine: EngineSection,
    /// `baton serve`.
    pub server: ServerSection,
    /// The coding agent (`agent.implement`, `agent.fix`, `baton agent run`).
    pub agent: AgentConfig,
    /// `[forge]`: where issues, comments and pull requests live.
    pub forge: ForgeSection,
    /// `[github]`: the GitHub API (credentials come from the environment).
    pub github: GithubSection,
    /// `[webhook]`: who may start or steer runs through `POST /webhooks/github`.
    pub webhook: SenderPolicy,
    /// `[[triggers]]`: which deliveries start or steer which workflow; absent means
    /// [`Trigger::defaults`].
    pub triggers: Vec<Trigger>,
    /// `[workflows.*]`: settings of the built-in workflows.
    pub workflows: WorkflowsSection,
    /// `[notify]`: how often progress reports may be updated.
    pub notify: NotifySection,
    /// `[retention]`: how long finished work is kept (`baton gc`, daily in the daemon).
    pub retention: crate::gc::Retention,
    /// `[telegram]`: chat control (the token comes from the environment).
    pub telegram: TelegramSection,
    /// `[limits]`: how much runs at once on this daemon.
    pub limits: LimitsSection,
    /// `[store]`: where the engine keeps its records.
    pub store: StoreSection,
    /// `[sandbox]`: where repository code runs, and what it can reach.
    pub sandbox: crate::sandbox::Settings,
    /// `[telemetry]`: where traces go (OTLP/HTTP).
    pub telemetry: crate::telemetry::Settings,
}

/// `[store] backend`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// sled in the data dir: one daemon, no server to run.
    #[default]
    Sled,
    /// A PostgreSQL database (`BATON_DATABASE_URL`, or `[store] url`).
    Postgres,
}

/// `[store]`: which backend holds runs, events and jobs. Workspaces and the daemon's address
/// file stay in the data dir whatever the backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// `sled` (the default) or `postgres`.
    pub backend: StoreKind,
    /// The database, without a password (`postgres://baton@db.internal/baton`); the
    /// environment's `BATON_DATABASE_URL` wins, and is where a password belongs.
    pub url: Option<String>,
    /// Connections to the database (the committer holds one; reads share the rest).
    pub pool_size: usize,
    /// With several daemons on one database: how long a daemon's runs stay its own after its
    /// last renewal (it renews every sixth of it). A daemon that dies is taken over after
    /// this; one cut off from the database stops before it.
    pub lease: Dur,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            backend: StoreKind::Sled,
            url: None,
            pool_size: 8,
            lease: Dur(Duration::from_secs(15)),
        }
    }
}

/// `[limits]`: admission and spending. Runs and test suites at once are sized to the machine
/// unless set ([`LimitsSection::default`]); the others are unlimited unless set. `0` means no
/// limit, as an explicit choice.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Runs executing at once; the rest wait as `pending`. A run parked at a wait holds no
    /// slot.
    pub max_active_runs: usize,
    /// Runs about one repository executing at once; waiting runs take turns across
    /// repositories.
    pub per_repo: usize,
    /// Runs of one workflow (by id) executing at once: `[limits.per_workflow] id = N`.
    pub per_workflow: std::collections::BTreeMap<String, usize>,
    /// Test suites (verifications) running at once, across every workflow.
    pub max_verifications: usize,
    /// US dollars the agents may spend per repository per UTC day.
    pub daily_cost_usd: Option<f64>,
    /// US dollars the agents may spend per UTC month, overall.
    pub monthly_cost_usd: Option<f64>,
    /// What an agent step over a cap does.
    pub on_cap: OnCap,
}

impl Default for LimitsSection {
    /// `max_active_runs` 8 per core and `max_verifications` 1 per core: an unbounded default
    /// let 300 runs started at once hold 300 actors and 240 processes on a small machine.
    /// A run mostly waits (for a model, the forge, a check), so several per core keep the
    /// cores busy; a test suite uses a core or more by itself.
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        LimitsSection {
            max_active_runs: 8 * cores,
            per_repo: 0,
            per_workflow: Default::default(),
            max_verifications: cores,
            daily_cost_usd: None,
            monthly_cost_usd: None,
            on_cap: OnCap::default(),
        }
    }
}

/// `[limits] on_cap`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnCap {
    /// Wait, saying why, until the day or month turns.
    #[default]
    Wait,
    /// Fail the step with the reason.
    Fail,
}

/// How the bot hears from Telegram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TelegramMode {
    /// Long polling with getUpdates: works behind NAT, needs no public address.
    #[default]
    Polling,
    /// Telegram posts updates to `webhook_url` (routed to `/webhooks/telegram`).
    Webhook,
}

/// `[telegram]`: who may use the bot, and where it reports.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelegramSection {
    /// Numeric Telegram user ids allowed to start and steer runs (usernames can change).
    pub allowed_users: Vec<u64>,
    /// Chats that also hear about the waits, failures and completions of runs started
    /// elsewhere (the CLI, GitHub, another chat).
    pub notify_chats: Vec<i64>,
    /// The Bot API server (a self-hosted one, or a test's); default `https://api.telegram.org`.
    pub api_url: Option<String>,
    /// `polling` (the default) or `webhook`.
    pub mode: TelegramMode,
    /// Webhook mode: the public address Telegram posts updates to (it must reach
    /// `/webhooks/telegram` on this daemon).
    pub webhook_url: Option<String>,
}

/// Which forge backend the daemon uses (the forge's own type).
pub use crate::forge::Kind as ForgeKind;

/// `[forge]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForgeSection {
    /// `local` (the default) or `github`.
    pub kind: ForgeKind,
    /// The local forge's directory; default `<data_dir>/forge`.
    pub root: Option<PathBuf>,
    /// The login the local forge acts as (author of its comments and pull requests).
    pub login: String,
}

/// `[github]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GithubSection {
    /// The REST API: `https://api.github.com`, or `https://HOST/api/v3` for GitHub Enterprise.
    pub base_url: String,
}

/// `[engine]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    /// sled's page cache in MiB.
    pub cache_mb: u64,
    /// Steps one run may enter unless its workflow sets `max_transitions`.
    pub max_transitions: u64,
    /// A run's head is snapshotted at least every this many events.
    pub snapshot_every: u64,
    /// Restarts of a panicking run actor allowed within `restart_window`.
    pub restart_budget: u32,
    /// The window of the restart budget.
    pub restart_window: Dur,
}

/// `[workflows]`: one table per built-in workflow.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkflowsSection {
    /// `[workflows.issue_to_pr]`.
    pub issue_to_pr: crate::workflows::issue_to_pr::Settings,
    /// `[workflows.pr_review]`.
    pub pr_review: crate::workflows::pr_review::Settings,
    /// `[workflows.bug_triage]`.
    pub bug_triage: crate::workflows::bug_triage::Settings,
}

/// `[notify]`: the least time between two updates of one target (an issue's progress
/// comment, a chat, the terminal). Failures, waits and completion go out at once regardless.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySection {
    /// The progress comment on an issue.
    pub forge_interval: Dur,
    /// A Telegram chat's progress message.
    pub telegram_interval: Dur,
    /// The terminal display (and the log).
    pub terminal_interval: Dur,
}

impl Default for NotifySection {
    fn default() -> Self {
        NotifySection {
            forge_interval: Dur(Duration::from_secs(10)),
            telegram_interval: Dur(Duration::from_secs(1)),
            terminal_interval: Dur(Duration::from_millis(100)),
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address to listen on; loopback unless you mean it.
    pub bind: String,
    /// The URL people reach the daemon at (behind a TLS proxy); an `https` one makes the
    /// admin UI's session cookie `Secure`.
    pub public_url: Option<String>,
    /// Whether `/metrics` wants the admin token too (off: open, as exporters usually are,
    /// on a loopback address).
    pub metrics_auth: bool,
    /// Seconds a client has to send a whole request head, on a new connection and between
    /// keep-alive requests.
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may go with nothing read or written, and no request handled,
    /// before it is closed.
    pub idle_timeout_secs: u64,
    /// Seconds a request body may take to arrive whole.
    pub body_timeout_secs: u64,
    /// Open connections at most (kept below the open-file limit). At the cap a new connection
    /// replaces the oldest half-open one, or is refused when all are serving.
    pub max_connections: usize,
}

impl ServerSection {
    /// The accept loop's limits.
    pub fn limits(&self, open_files: u64) -> crate::web::server::Limits {
        crate::web::server::Limits {
            header_read: std::time::Duration::from_secs(self.header_read_timeout_secs),
            idle: std::time::Duration::from_secs(self.idle_timeout_secs),
            body: std::time::Duration::from_secs(self.body_timeout_secs),
            max_connections: crate::web::server::effective_cap(self.max_connections, open_files),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            source: None,
            data_dir: None,
            workflow_dirs: vec![PathBuf::from("./workflows")],
            engine: EngineSection::default(),
            server: ServerSection::default(),
            agent: AgentConfig::default(),
            forge: ForgeSection::default(),
            github: GithubSection::default(),
            webhook: SenderPolicy::default(),
            triggers: Trigger::defaults(),
            workflows: WorkflowsSection::default(),
            notify: NotifySection::default(),
            retention: crate::gc::Retention::default(),
            telegram: TelegramSection::default(),
            limits: LimitsSection::default(),
            store: StoreSection::default(),
            sandbox: crate::sandbox::Settings::default(),
            telemetry: crate::telemetry::Settings::default(),
        }
    }
}

impl Default for ForgeSection {
    fn default() -> Self {
        ForgeSection {
            kind: ForgeKind::Local,
            root: None,
            login: "baton".into(),
        }
    }
}

impl Default for GithubSection {
    fn default() -> Self {
        GithubSection {
            base_url: "https://api.github.com".into(),
        }
    }
}

impl Default for EngineSection {
    fn default() -> Self {
        let d = EngineConfig::default();
        EngineSection {
            cache_mb: d.cache_bytes / (1024 * 1024),
            max_transitions: d.max_transitions,
            snapshot_every: d.snapshot_every,
            restart_budget: d.restart_budget,
            restart_window: Dur(d.restart_window),
        }
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            bind: "127.0.0.1:8377".into(),
            public_url: None,
            metrics_auth: false,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            body_timeout_secs: 60,
            max_connections: 4096,
        }
    }
}

/// A configuration problem, naming the file and key.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct Error {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// What a configuration that asks for a database is told by a baton built without the
/// `postgres` feature (at load, so that no command gets further).
#[cfg(not(feature = "postgres"))]
const WITHOUT_POSTGRES: &str = "asks for PostgreSQL, but this baton was built without the \
     `postgres` cargo feature: build it with `--features postgres` (a default feature), or keep \
     the records in sled (`[store] backend = \"sled\"`, no `url`)";

/// `BATON_DATABASE_URL` (or the file `BATON_DATABASE_URL_FILE` names), which may hold a
/// password: held by [`crate::secrets`], never in the environment of a process baton starts.
pub fn database_url() -> Result<Option<String>, crate::secrets::Error> {
    crate::secrets::get("BATON_DATABASE_URL")
}

impl Config {
    /// Makes `[sandbox]` this process's policy, keeps `data_dir` (and the config file) out of
    /// every sandbox, and warns about the deprecated `[workflows.bug_triage] sandbox`.
    pub fn apply_sandbox(&self, data_dir: &Path) {
        crate::sandbox::configure(self.sandbox.clone());
        let mut protected = vec![data_dir.to_path_buf()];
        protected.extend(std::env::var_os("BATON_CONFIG").map(PathBuf::from));
        protected.extend(self.source.clone());
        crate::sandbox::protect(protected);
        if let Some(old) = self.workflows.bug_triage.sandbox {
            tracing::warn!(
                "[workflows.bug_triage] sandbox = {old} is deprecated and ignored: where a reproduction runs is [sandbox] mode now (\"always\", \"untrusted\" or \"off\")"
            );
        }
    }

    /// Loads: `explicit` (from `--config`/`BATON_CONFIG`) must exist; otherwise
    /// `./config.toml` is used when present, else the defaults.
    pub fn load(explicit: Option<&Path>) -> Result<Config, Error> {
        let path = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from("config.toml")).filter(|p| p.is_file()),
        };
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(&path).map_err(|e| Error {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut config = Self::parse(&text, &path.display().to_string())?;
        config.source = Some(std::path::absolute(&path).unwrap_or(path));
        Ok(config)
    }

    /// Parses a configuration file's text.
    pub fn parse(text: &str, origin: &str) -> Result<Config, Error> {
        let config: Config = toml::from_str(text).map_err(|e| Error {
            path: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        if config.engine.max_transitions == 0 {
            return Err(Error {
                path: origin.into(),
                message: "engine.max_transitions must be at least 1".into(),
            });
        }
        if config.engine.snapshot_every == 0 {
            return Err(Error {
                path: origin.into(),
                message: "engine.snapshot_every must be at least 1".into(),
            });
        }
        config.agent.validate().map_err(|e| Error {
            path: origin.into(),
            message: e.to_string(),
        })?;
        for trigger in &config.triggers {
            trigger.validate().map_err(|e| Error {
                path: origin.into(),
                message: e.to_string(),
            })?;
        }
        if let Some(id) = config
            .limits
            .per_workflow
            .keys()
            .find(|id| id.trim().is_empty() || id.trim() != id.as_str())
        {
            return Err(Error {
                path: origin.into(),
                message: format!("limits.per_workflow: `{id}` is not a workflow id"),
            });
        }
        for (key, value) in [
            ("sandbox.memory_mb", config.sandbox.memory_mb),
            ("sandbox.processes", config.sandbox.processes),
            ("sandbox.file_size_mb", config.sandbox.file_size_mb),
        ] {
            if value == 0 {
                return Err(Error {
                    path: origin.into(),
                    message: format!("{key} must be at least 1"),
                });
            }
        }
        if config.forge.login.trim().is_empty() {
            return Err(Error {
                path: origin.into(),
                message: "forge.login is empty".into(),
            });
        }
        for (key, cap) in [
            ("limits.daily_cost_usd", config.limits.daily_cost_usd),
            ("limits.monthly_cost_usd", config.limits.monthly_cost_usd),
        ] {
            if let Some(cap) = cap.filter(|c| !c.is_finite() || *c <= 0.0) {
                return Err(Error {
                    path: origin.into(),
                    message: format!("{key}: {cap} is not a positive amount"),
                });
            }
        }
        #[cfg(feature = "postgres")]
        if let Some(url) = &config.store.url {
            baton_actors::store::postgres::check_url(url, false).map_err(|e| Error {
                path: origin.into(),
                message: format!("store.url: {e}"),
            })?;
        }
        #[cfg(not(feature = "postgres"))]
        if config.store.backend == StoreKind::Postgres || config.store.url.is_some() {
            let key = match config.store.backend {
                StoreKind::Postgres => "store.backend",
                StoreKind::Sled => "store.url",
            };
            return Err(Error {
                path: origin.into(),
                message: format!("{key} {WITHOUT_POSTGRES}"),
            });
        }
        if config.store.lease.0 < Duration::from_secs(3) {
            return Err(Error {
                path: origin.into(),
                message: format!(
                    "store.lease: {:?} is too short (at least 3s: it is renewed every sixth, \
                     and a daemon stops after two thirds without a renewal)",
                    config.store.lease.0
                ),
            });
        }
        if config.store.pool_size < 2 {
            return Err(Error {
                path: origin.into(),
                message: format!(
                    "store.pool_size: {} is too few (at least 2: the committer holds one)",
                    config.store.pool_size
                ),
            });
        }
        for (key, value) in [
            (
                "server.header_read_timeout_secs",
                config.server.header_read_timeout_secs,
            ),
            ("server.idle_timeout_secs", config.server.idle_timeout_secs),
            ("server.body_timeout_secs", config.server.body_timeout_secs),
            (
                "server.max_connections",
                config.server.max_connections as u64,
            ),
        ] {
            if value == 0 {
                return Err(Error {
                    path: origin.into(),
                    message: format!("{key}: 0 is not allowed (at least 1)"),
                });
            }
        }
        if let Some(url) = &config.server.public_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(Error {
                    path: origin.into(),
                    message: format!("server.public_url `{url}` is not an http(s) URL"),
                });
            }
        }
        if !(config.github.base_url.starts_with("https://")
            || config.github.base_url.starts_with("http://"))
        {
            return Err(Error {
                path: origin.into(),
                message: format!(
                    "github.base_url `{}` is not an http(s) URL",
                    config.github.base_url
                ),
            });
        }
        Ok(config)
    }

    /// The data dir: `--data-dir`/`BATON_DATA_DIR`, then the file, then
    /// `$XDG_DATA_HOME/baton` or `~/.local/share/baton`.
    pub fn data_dir(&self, flag: Option<&Path>) -> PathBuf {
        if let Some(dir) = flag {
            return dir.to_path_buf();
        }
        if let Some(dir) = &self.data_dir {
            return dir.clone();
        }
        if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(xdg).join("baton");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
        PathBuf::from(home).join(".local/share/baton")
    }

    /// The local forge's directory: `forge.root`, else `<data_dir>/forge`.
    pub fn forge_root(&self, data_dir: &Path) -> PathBuf {
        self.forge
            .root
            .clone()
            .unwrap_or_else(|| data_dir.join("forge"))
    }

    /// What the forge is built from (`[forge]` and `[github]`), for [`crate::forge::open`].
    pub fn forge_settings(&self, data_dir: &Path) -> crate::forge::Settings {
        crate::forge::Settings {
            kind: self.forge.kind,
            root: self.forge_root(data_dir),
            login: self.forge.login.clone(),
            github_base_url: self.github.base_url.clone(),
            github_app_dir: Some(data_dir.join(crate::forge::github::app::APP_DIR)),
        }
    }

    /// The engine's settings. The database URL is read from `BATON_DATABASE_URL` here, at
    /// the last moment, so it is held by nothing but the driver.
    pub fn engine(&self) -> Result<EngineConfig, Error> {
        let backend = match self.store.backend {
            StoreKind::Sled => StoreBackend::Sled,
            #[cfg(not(feature = "postgres"))]
            StoreKind::Postgres => {
                return Err(Error {
                    path: "store.backend".into(),
                    message: WITHOUT_POSTGRES.into(),
                })
            }
            #[cfg(feature = "postgres")]
            StoreKind::Postgres => {
                let from_env = database_url().map_err(|e| Error {
                    path: "BATON_DATABASE_URL".into(),
                    message: e.to_string(),
                })?;
                let (url, origin) = match (from_env, &self.store.url) {
                    (Some(url), _) => (url, "BATON_DATABASE_URL"),
                    (None, Some(url)) => (url.clone(), "store.url"),
                    (None, None) => {
                        return Err(Error {
                            path: "store.backend".into(),
                            message: "is `postgres`, but no database is given: set \
                                      BATON_DATABASE_URL (or `[store] url`)"
                                .into(),
                        })
                    }
                };
                baton_actors::store::postgres::check_url(&url, true).map_err(|message| Error {
                    path: origin.into(),
                    message: message.to_string(),
                })?;
                StoreBackend::Postgres(PgConfig {
                    url,
                    pool_size: self.store.pool_size,
                    lease: self.store.lease.0,
                })
            }
        };
        Ok(EngineConfig {
            backend,
            cache_bytes: self.engine.cache_mb * 1024 * 1024,
            max_transitions: self.engine.max_transitions,
            snapshot_every: self.engine.snapshot_every,
            restart_budget: self.engine.restart_budget,
            restart_window: self.engine.restart_window.0.max(Duration::from_secs(1)),
            max_active_runs: self.limits.max_active_runs,
            per_repo: self.limits.per_repo,
            per_workflow: self.limits.per_workflow.clone(),
            ..EngineConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Built without PostgreSQL, a `[store]` that asks for a database is refused at load,
    /// naming the feature that is missing.
    #[cfg(not(feature = "postgres"))]
    #[test]
    fn without_the_postgres_feature_a_database_is_refused_naming_it() {
        for (text, key) in [
            ("[store]\nbackend = \"postgres\"\n", "store.backend"),
            (
                "[store]\nurl = \"postgres://baton@db/baton\"\n",
                "store.url",
            ),
        ] {
            let err = Config::parse(text, "config.toml").unwrap_err();
            assert!(
                err.message.starts_with(key) && err.message.contains("`postgres` cargo feature"),
                "{}",
                err.message
            );
        }
        let store = StoreSection {
            backend: StoreKind::Postgres,
            ..StoreSection::default()
        };
        let config = Config {
            store,
            ..Config::default()
        };
        let err = config.engine().unwrap_err();
        assert!(
            err.message.contains("`postgres` cargo feature"),
            "{}",
            err.message
        );
    }

    #[test]
    fn shipped_config_parses_and_matches_defaults() {
        let text = include_str!("../config.toml");
        let parsed = Config::parse(text, "config.toml").unwrap();
        let defaults = Config::default();
        assert_eq!(
            parsed.engine.max_transitions,
            defaults.engine.max_transitions
        );
        assert_eq!(parsed.server.bind, defaults.server.bind);
        assert_eq!(parsed.agent, defaults.agent);
        assert_eq!(parsed.webhook, defaults.webhook);
        assert_eq!(parsed.triggers, defaults.triggers);
        assert_eq!(parsed.forge.kind, defaults.forge.kind);
        assert_eq!(parsed.forge.login, defaults.forge.login);
        assert_eq!(parsed.github.base_url, defaults.github.base_url);
        assert_eq!(parsed.notify.forge_interval, defaults.notify.forge_interval);
        assert_eq!(
            parsed.notify.telegram_interval,
            defaults.notify.telegram_interval
        );
        assert_eq!(
            parsed.notify.terminal_interval,
            defaults.notify.terminal_interval
        );
        assert_eq!(parsed.store.backend, defaults.store.backend);
        assert_eq!(parsed.store.pool_size, defaults.store.pool_size);
        assert_eq!(parsed.store.url, defaults.store.url);
        assert_eq!(parsed.limits.per_repo, defaults.limits.per_repo);
        assert_eq!(parsed.limits.per_workflow, defaults.limits.per_workflow);
        assert_eq!(
            parsed.limits.max_active_runs,
            defaults.limits.max_active_runs
        );
        assert_eq!(
            parsed.limits.max_verifications,
            defaults.limits.max_verifications
        );
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(defaults.limits.max_active_runs, 8 * cores);
        assert_eq!(defaults.limits.max_verifications, cores);
        // 0 stays "no limit", as an explicit choice.
        let unlimited = Config::parse(
            "[limits]\nmax_active_runs = 0\nmax_verifications = 0\n",
            "c.toml",
        )
        .unwrap();
        assert_eq!(unlimited.engine().unwrap().max_active_runs, 0);
        assert_eq!(unlimited.limits.max_verifications, 0);
    }

    #[test]
    fn concurrency_limits_reach_the_engine_and_bad_ones_name_their_key() {
        let c = Config::parse(
            "[limits]\nper_repo = 1\n[limits.per_workflow]\nissue_to_pr = 2\n",
            "c.toml",
        )
        .unwrap();
        let engine = c.engine().unwrap();
        assert_eq!(engine.per_repo, 1);
        assert_eq!(engine.per_workflow.get("issue_to_pr"), Some(&2));
        let check = |text: &str, key: &str| {
            let err = Config::parse(text, "c.toml").unwrap_err().to_string();
            assert!(err.contains(key), "{key} not in: {err}");
        };
        check("[limits]\nper_repo = -1\n", "per_repo");
        check("[limits]\nper_repo = \"two\"\n", "per_repo");
        check("[limits]\nper_workflow = 3\n", "per_workflow");
        check("[limits.per_workflow]\nreview = -2\n", "review");
        check("[limits.per_workflow]\n\" x\" = 2\n", "per_workflow");
    }

    #[test]
    fn notify_section() {
        let c = Config::parse("[notify]\nforge_interval = \"30s\"\n", "c.toml").unwrap();
        assert_eq!(c.notify.forge_interval.0, Duration::from_secs(30));
        assert_eq!(c.notify.terminal_interval.0, Duration::from_millis(100));
        let err = Config::parse("[notify]\nforge_interval = \"soon\"\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("forge_interval"), "{err}");
        let err = Config::parse("[notify]\nemail_interval = \"1s\"\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("email_interval"), "{err}");
    }

    #[test]
    fn github_sections() {
        let c = Config::parse(
            "[forge]\nkind = \"github\"\n[github]\nbase_url = \"https://ghe.example/api/v3\"\n\
             [webhook]\nbot_login = \"baton-bot\"\nallowed_bots = [\"dependabot[bot]\"]\n\
             [[triggers]]\non = \"issue_labeled\"\nlabel = \"go\"\nworkflow = \"w\"\n",
            "c.toml",
        )
        .unwrap();
        assert_eq!(c.forge.kind, ForgeKind::Github);
        assert_eq!(c.github.base_url, "https://ghe.example/api/v3");
        assert_eq!(c.webhook.bot_login.as_deref(), Some("baton-bot"));
        assert_eq!(c.triggers.len(), 1);
        assert_eq!(c.triggers[0].label.as_deref(), Some("go"));
        assert_eq!(
            c.forge_root(Path::new("/d")),
            PathBuf::from("/d/forge"),
            "the local forge lives in the data dir by default"
        );
        for (text, key) in [
            ("[forge]\nkind = \"gitlab\"\n", "gitlab"),
            ("[webhook]\nsecret = \"x\"\n", "secret"),
            (
                "[[triggers]]\non = \"pull_request\"\nlabel = \"x\"\n",
                "label",
            ),
            ("[github]\nbase_url = \"api.github.com\"\n", "base_url"),
        ] {
            let err = Config::parse(text, "c.toml").unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn agent_section_is_checked() {
        let c = Config::parse(
            "[agent]\nbackend = \"openai\"\nmodel = \"m\"\nmax_turns = 5\n",
            "c.toml",
        )
        .unwrap();
        assert_eq!(c.agent.backend, crate::agent::BackendKind::Openai);
        assert_eq!(c.agent.max_turns, 5);
        let err = Config::parse("[agent]\nmax_turn = 5\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_turn"), "{err}");
        let err = Config::parse("[agent]\nbackend = \"openai\"\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("agent.model"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = Config::parse("[engine]\nmax_transition = 5\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("max_transition") && err.starts_with("c.toml"),
            "{err}"
        );
        let err = Config::parse("[engine]\nrestart_window = \"soon\"\n", "c.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad duration"), "{err}");
    }
}
