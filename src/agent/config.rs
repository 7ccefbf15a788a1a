//! `[agent]` in `config.toml`: which backend, which model, the budgets and the price table.
//! Unknown keys are errors that name the key. Secrets are never part of this struct: keys come
//! from the environment through [`ProviderEnv`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::agent::error::{Error, Result};

/// Which backend implements the issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// An OpenAI-compatible chat completions endpoint with tool calling.
    Openai,
    /// Anthropic's Messages API with tool use.
    Anthropic,
    /// An external coding CLI run in the workspace.
    Command,
    /// No model: applies the fenced `diff` blocks of the issue body.
    Patch,
}

impl BackendKind {
    /// The name used in config and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Openai => "openai",
            BackendKind::Anthropic => "anthropic",
            BackendKind::Command => "command",
            BackendKind::Patch => "patch",
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "openai" => Ok(BackendKind::Openai),
            "anthropic" => Ok(BackendKind::Anthropic),
            "command" => Ok(BackendKind::Command),
            "patch" => Ok(BackendKind::Patch),
            other => Err(Error::Config(format!(
                "agent.backend: unknown backend `{other}` (expected openai, anthropic, command or patch)"
            ))),
        }
    }
}

/// What one model costs, in US dollars per million tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Dollars per million input (prompt) tokens.
    pub input_per_mtok: f64,
    /// Dollars per million output (completion) tokens.
    pub output_per_mtok: f64,
}

/// The `[agent]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Which backend implements the issue.
    pub backend: BackendKind,
    /// Model name sent to the provider (`openai`, `anthropic`).
    pub model: String,
    /// Provider base URL; `OPENAI_BASE_URL` / `ANTHROPIC_BASE_URL` override it.
    pub base_url: Option<String>,
    /// Model requests per round (the run, or one fix round).
    pub max_turns: u32,
    /// Input plus output tokens per round.
    pub max_tokens: u64,
    /// Wall-clock seconds per round, tools and retries included.
    pub max_seconds: u64,
    /// Dollars across the run and its fix rounds; needs a price for `model`.
    pub max_cost_usd: Option<f64>,
    /// Prices per model name.
    pub prices: BTreeMap<String, Price>,
    /// The `command` backend's argv; `{task}` is replaced by the task text and `{task_file}`
    /// by the path of a file holding it; with neither, the task goes to standard input.
    pub command: Vec<String>,
    /// Environment variables passed to the `command` backend on top of the scrubbed
    /// environment (e.g. the coding CLI's own API key).
    pub command_env: Vec<String>,
    /// How many `fix` rounds may follow a run whose verification failed.
    pub fix_rounds: u32,
    /// Seconds one model request may take before it is retried.
    pub request_timeout_secs: u64,
    /// Retries of one model request on 429, 5xx, timeouts and connection errors.
    pub max_retries: u32,
    /// Default and maximum seconds for the `run_command` tool.
    pub command_timeout_secs: u64,
    /// Output tokens asked for per model reply.
    pub max_output_tokens: u32,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            backend: BackendKind::Patch,
            model: String::new(),
            base_url: None,
            max_turns: 40,
            max_tokens: 1_000_000,
            max_seconds: 1800,
            max_cost_usd: None,
            prices: BTreeMap::new(),
            command: Vec::new(),
            command_env: Vec::new(),
            fix_rounds: 2,
            request_timeout_secs: 120,
            max_retries: 4,
            command_timeout_secs: 300,
            max_output_tokens: 4096,
        }
    }
}

#[derive(Deserialize)]
struct Document {
    #[serde(default)]
    agent: AgentConfig,
}

impl AgentConfig {
    /// Reads the `[agent]` table of a whole `config.toml` (other tables are not looked at).
    pub fn from_toml(document: &str) -> Result<Self> {
        let doc: Document = toml::from_str(document).map_err(|e| Error::Config(e.to_string()))?;
        doc.agent.validate()?;
        Ok(doc.agent)
    }

    /// Checks the values serde cannot: the ones that need a model or a price.
    pub fn validate(&self) -> Result<()> {
        if matches!(self.backend, BackendKind::Openai | BackendKind::Anthropic)
            && self.model.is_empty()
        {
            return Err(Error::Config(format!(
                "agent.model: the {} backend needs a model name",
                self.backend.as_str()
            )));
        }
        if self.backend == BackendKind::Command && self.command.is_empty() {
            return Err(Error::Config(
                "agent.command: the command backend needs a command, e.g. [\"my-cli\", \"--prompt\", \"{task}\"]".into(),
            ));
        }
        if let Some(max) = self.max_cost_usd {
            if !(max.is_finite() && max >= 0.0) {
                return Err(Error::Config(format!(
                    "agent.max_cost_usd: {max} is not a positive amount"
                )));
            }
            if matches!(self.backend, BackendKind::Openai | BackendKind::Anthropic)
                && !self.prices.contains_key(&self.model)
            {
                return Err(Error::Config(format!(
                    "agent.max_cost_usd is set but agent.prices has no entry for model `{}`",
                    self.model
                )));
            }
        }
        if self.max_turns == 0 || self.max_seconds == 0 || self.max_tokens == 0 {
            return Err(Error::Config(
                "agent.max_turns, agent.max_tokens and agent.max_seconds must be above 0".into(),
            ));
        }
        Ok(())
    }
}

/// A secret value: shown as `[redacted]` by `Debug`, never serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The provider settings that come from the environment, read once so tests can pass their
/// own without touching the process environment.
#[derive(Clone, Debug, Default)]
pub struct ProviderEnv {
    /// `OPENAI_API_KEY`.
    pub openai_api_key: Option<Secret>,
    /// `OPENAI_BASE_URL`.
    pub openai_base_url: Option<String>,
    /// `ANTHROPIC_API_KEY`.
    pub anthropic_api_key: Option<Secret>,
    /// `ANTHROPIC_BASE_URL`.
    pub anthropic_base_url: Option<String>,
}

impl ProviderEnv {
    /// Reads the keys through [`crate::secrets`] (which refused a bad `_FILE` or an empty key
    /// when the process started) and the base URLs from the environment; an empty URL counts
    /// as unset.
    pub fn from_process() -> Self {
        let get = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let key = |name: &str| match crate::secrets::get(name) {
            Ok(key) => key.map(Secret),
            Err(e) => {
                tracing::warn!("{e}; going on without {name}");
                None
            }
        };
        ProviderEnv {
            openai_api_key: key("OPENAI_API_KEY"),
            openai_base_url: get("OPENAI_BASE_URL"),
            anthropic_api_key: key("ANTHROPIC_API_KEY"),
            anthropic_base_url: get("ANTHROPIC_BASE_URL"),
        }
    }

    /// Every secret value, for the redactor.
    pub fn secrets(&self) -> Vec<String> {
        [&self.openai_api_key, &self.anthropic_api_key]
            .into_iter()
            .flatten()
            .map(|s| s.0.clone())
            .collect()
    }
}
