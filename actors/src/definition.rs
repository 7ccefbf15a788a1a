//! Workflow definitions: plain data, read from TOML files or built in Rust, then validated
//! into a [`Workflow`]. One structure with two front ends (the spec's "hybrid").
//!
//! Validation happens before anything is written: a definition that names an unknown
//! action, jumps to an unknown step or carries a template that does not parse is refused
//! with a message naming the step and key.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::template;

/// A workflow as written: the TOML file's fields, one to one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// Unique id, used by `baton run <ID>` and stored with every run.
    pub id: String,
    /// Human name; defaults to the id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// What the workflow is for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The author's version number; a run keeps the exact definition it started with.
    #[serde(default = "default_version")]
    pub version: u32,
    /// What `abort` and `cancel` undo when no mode is given.
    #[serde(default)]
    pub rollback_on_abort: RollbackMode,
    /// How many steps a run may enter (loops through `goto` count each pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_transitions: Option<u64>,
    /// The inputs a run takes, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub input: BTreeMap<String, InputSpec>,
    /// Whether the run's progress is reported where it came from (e.g. one comment on the
    /// issue, edited in place). Sinks that report every run (terminal, log) ignore it.
    /// Skipped when false, so definitions written before it keep their digests.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub progress: bool,
    /// The steps, in order.
    #[serde(default)]
    pub steps: Vec<StepDef>,
}

fn default_version() -> u32 {
    1
}

/// One declared input.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// A run without this input is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// The value used when the input is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Shown by `baton workflows`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// One step: either an `action` with parameters or a `wait` for a signal.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    /// Unique within the workflow; `end` is reserved.
    pub id: String,
    /// Shown in progress updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The registered action to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The action's parameters; strings are templates.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub with: Map<String, Value>,
    /// Pause until a signal arrives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitDef>,
    /// A condition; when false the step is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Where to go after the step completes; first match wins, default the next step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub next: Vec<NextRule>,
    /// How long one attempt may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// Retries of retryable failures, with backoff: a policy's name (`"forge"`) or a table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// What happens once retries are spent.
    #[serde(default, skip_serializing_if = "OnFailure::is_default")]
    pub on_failure: OnFailure,
    /// The action that undoes this step when it is rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensate: Option<Compensation>,
    /// State keys written from the step's output (values are templates).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// For a `shell` step (and a `shell` compensation): variables of the daemon passed to the
    /// command by name, e.g. `["GITHUB_TOKEN"]`. Everything else it sees comes from an
    /// allowlist. Fixed here, never templated: a run's input cannot name a secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pass_env: Vec<String>,
    /// For a `shell` step (and a `shell` compensation): run the command in the sandbox rather
    /// than on the host; refused when no sandbox is available.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sandbox: bool,
}

/// A wait point.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WaitDef {
    /// The signal name that ends the wait (`approve` is what `baton approve` sends).
    pub signal: String,
    /// How long to wait; none waits forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// What a timeout does.
    #[serde(default, skip_serializing_if = "OnTimeout::is_default")]
    pub on_timeout: OnTimeout,
}

/// One branch rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NextRule {
    /// A condition over `{input, state, steps, run}`.
    pub when: String,
    /// A step id, or `end` to finish the run.
    pub goto: String,
}

/// A compensation: an action with parameters, run when the step is rolled back.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Compensation {
    /// The registered action to run.
    pub action: String,
    /// Its parameters; strings are templates.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub with: Map<String, Value>,
}

/// Retry with exponential backoff.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    #[serde(default = "RetryPolicy::default_attempts")]
    pub max_attempts: u32,
    /// Delay before the second attempt.
    #[serde(default = "RetryPolicy::default_initial")]
    pub initial: Dur,
    /// Longest delay.
    #[serde(default = "RetryPolicy::default_max")]
    pub max: Dur,
    /// Growth of the delay per attempt.
    #[serde(default = "RetryPolicy::default_factor")]
    pub factor: f64,
    /// Spread delays at random over [delay/2, delay] so retries do not stampede.
    #[serde(default = "RetryPolicy::default_jitter")]
    pub jitter: bool,
}

impl RetryPolicy {
    /// The policies a step names with `retry = "NAME"`, one per kind of work the built-in
    /// workflows retry. Part of the definition format: a stored run that names one resolves
    /// it again when it resumes, so a policy here changes only with the format.
    pub const NAMED: &'static [(&'static str, RetryPolicy)] = &[
        // A forge's API: rate limits and 5xx pass within a minute or two.
        ("forge", RetryPolicy::fixed(4, 2, 60)),
        // git over the network (clone, fetch, push): a few quick tries.
        ("git", RetryPolicy::fixed(3, 2, 30)),
        // A model's turn: slow and costly, so one more try after a pause.
        ("agent", RetryPolicy::fixed(2, 5, 60)),
    ];

    /// `max_attempts` attempts from `initial_s` seconds, doubling up to `max_s`, with jitter.
    const fn fixed(max_attempts: u32, initial_s: u64, max_s: u64) -> Self {
        RetryPolicy {
            max_attempts,
            initial: Dur(Duration::from_secs(initial_s)),
            max: Dur(Duration::from_secs(max_s)),
            factor: 2.0,
            jitter: true,
        }
    }

    /// The policy called `name` in [`RetryPolicy::NAMED`].
    pub fn named(name: &str) -> Option<Self> {
        Self::NAMED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p.clone())
    }

    /// The names in [`RetryPolicy::NAMED`], quoted, as a phrase: `` `forge`, `git`, `agent` ``.
    pub fn names() -> String {
        Self::NAMED
            .iter()
            .map(|(n, _)| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn default_attempts() -> u32 {
        3
    }
    fn default_initial() -> Dur {
        Dur(Duration::from_secs(1))
    }
    fn default_max() -> Dur {
        Dur(Duration::from_secs(60))
    }
    fn default_factor() -> f64 {
        2.0
    }
    fn default_jitter() -> bool {
        true
    }

    /// A policy of `max_attempts` attempts with the default backoff.
    pub fn attempts(max_attempts: u32) -> Self {
        RetryPolicy {
            max_attempts,
            ..Default::default()
        }
    }

    /// The delay before attempt `next_attempt` (2 or more); `random` in [0, 1) drives jitter.
    pub fn delay(&self, next_attempt: u32, random: f64) -> Duration {
        crate::backoff::delay(
            self.initial.0,
            self.factor,
            self.max.0,
            next_attempt.saturating_sub(1),
            self.jitter.then_some(random),
        )
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: Self::default_attempts(),
            initial: Self::default_initial(),
            max: Self::default_max(),
            factor: Self::default_factor(),
            jitter: Self::default_jitter(),
        }
    }
}

/// A step's `retry` as written: the name of a policy in [`RetryPolicy::NAMED`]
/// (`retry = "forge"`), or a table of its own.
#[derive(Clone, Debug, PartialEq)]
pub enum Retry {
    /// A named policy; checked when the workflow is validated.
    Named(String),
    /// A policy written out.
    Policy(RetryPolicy),
}

impl Retry {
    /// The policy this stands for; `None` for a name that is not in [`RetryPolicy::NAMED`]
    /// (validation refuses those).
    pub fn policy(&self) -> Option<RetryPolicy> {
        match self {
            Retry::Named(name) => RetryPolicy::named(name),
            Retry::Policy(policy) => Some(policy.clone()),
        }
    }
}

impl From<RetryPolicy> for Retry {
    fn from(policy: RetryPolicy) -> Self {
        Retry::Policy(policy)
    }
}

impl From<&str> for Retry {
    fn from(name: &str) -> Self {
        Retry::Named(name.to_string())
    }
}

impl Serialize for Retry {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Retry::Named(name) => s.serialize_str(name),
            Retry::Policy(policy) => policy.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Retry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Retry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(
                    f,
                    "a retry policy's name ({}) or a table such as {{ max_attempts = 3 }}",
                    RetryPolicy::names()
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Retry, E> {
                Ok(Retry::Named(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<Retry, A::Error> {
                RetryPolicy::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(Retry::Policy)
            }
        }
        d.deserialize_any(Visit)
    }
}

/// How much of a run's work a rollback undoes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RollbackMode {
    /// Stop without undoing anything.
    None,
    /// Stop and keep everything for a person to finish.
    #[default]
    Soft,
    /// Run the compensations of every completed step, newest first.
    Hard,
}

impl RollbackMode {
    /// The name as written in files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackMode::None => "none",
            RollbackMode::Soft => "soft",
            RollbackMode::Hard => "hard",
        }
    }
}

/// A word that names none of a setting's values (`on_failure = "explode"`), with the values
/// it could have been.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{word}` (expected {expected})")]
pub struct UnknownWord {
    /// The setting (`rollback mode`, `on_failure`, `status`).
    pub what: &'static str,
    /// What was written.
    pub word: String,
    /// The values it may take, as a phrase.
    pub expected: &'static str,
}

/// A duration that does not read as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad duration `{0}` (write e.g. 500ms, 30s, 5m, 2h, 1d or 1h30m)")]
pub struct BadDuration(pub String);

impl std::str::FromStr for RollbackMode {
    type Err = UnknownWord;
    fn from_str(s: &str) -> std::result::Result<Self, UnknownWord> {
        match s {
            "none" => Ok(RollbackMode::None),
            "soft" => Ok(RollbackMode::Soft),
            "hard" => Ok(RollbackMode::Hard),
            other => Err(UnknownWord {
                what: "rollback mode",
                word: other.to_string(),
                expected: "none, soft or hard",
            }),
        }
    }
}

/// What a step's failure does once its retries are spent.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Fail the run, undoing what `rollback_on_abort` says.
    #[default]
    Abort,
    /// Mark the step skipped and go on.
    Skip,
    /// Wait for a person: retry, skip, abort or rollback.
    Pause,
    /// Go to another step.
    Goto(String),
}

impl OnFailure {
    fn is_default(&self) -> bool {
        *self == OnFailure::Abort
    }
}

impl fmt::Display for OnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnFailure::Abort => f.write_str("abort"),
            OnFailure::Skip => f.write_str("skip"),
            OnFailure::Pause => f.write_str("pause"),
            OnFailure::Goto(s) => write!(f, "goto:{s}"),
        }
    }
}

impl std::str::FromStr for OnFailure {
    type Err = UnknownWord;
    fn from_str(s: &str) -> std::result::Result<Self, UnknownWord> {
        match s {
            "abort" => Ok(OnFailure::Abort),
            "skip" => Ok(OnFailure::Skip),
            "pause" => Ok(OnFailure::Pause),
            _ => match s.strip_prefix("goto:") {
                Some(target) if !target.is_empty() => Ok(OnFailure::Goto(target.to_string())),
                _ => Err(UnknownWord {
                    what: "on_failure",
                    word: s.to_string(),
                    expected: "abort, skip, pause or goto:<step id>",
                }),
            },
        }
    }
}

/// What a wait's timeout does.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum OnTimeout {
    /// The wait step fails; its `on_failure` applies.
    #[default]
    Fail,
    /// The wait step is skipped.
    Skip,
    /// Go to another step.
    Goto(String),
}

impl OnTimeout {
    fn is_default(&self) -> bool {
        *self == OnTimeout::Fail
    }
}

impl fmt::Display for OnTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnTimeout::Fail => f.write_str("fail"),
            OnTimeout::Skip => f.write_str("skip"),
            OnTimeout::Goto(s) => write!(f, "goto:{s}"),
        }
    }
}

impl std::str::FromStr for OnTimeout {
    type Err = UnknownWord;
    fn from_str(s: &str) -> std::result::Result<Self, UnknownWord> {
        match s {
            "fail" => Ok(OnTimeout::Fail),
            "skip" => Ok(OnTimeout::Skip),
            _ => match s.strip_prefix("goto:") {
                Some(target) if !target.is_empty() => Ok(OnTimeout::Goto(target.to_string())),
                _ => Err(UnknownWord {
                    what: "on_timeout",
                    word: s.to_string(),
                    expected: "fail, skip or goto:<step id>",
                }),
            },
        }
    }
}

macro_rules! string_serde {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
string_serde!(OnFailure);
string_serde!(OnTimeout);
string_serde!(Dur);

/// A duration written as `500ms`, `30s`, `5m`, `2h`, `1d` or a sum such as `1h30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 != 0 || ms == 0 {
            write!(f, "{ms}ms")
        } else {
            write!(f, "{}s", ms / 1000)
        }
    }
}

impl std::str::FromStr for Dur {
    type Err = BadDuration;
    fn from_str(s: &str) -> std::result::Result<Self, BadDuration> {
        let bad = || BadDuration(s.to_string());
        let text = s.trim();
        if text.is_empty() {
            return Err(bad());
        }
        let mut total = Duration::ZERO;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .ok_or_else(bad)?;
            if digits == 0 {
                return Err(bad());
            }
            let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = match &rest[..unit_len] {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                "d" => 86400.0,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total += Duration::try_from_secs_f64(number * unit).map_err(|_| bad())?;
        }
        Ok(Dur(total))
    }
}

impl Definition {
    /// Parses a TOML workflow file; `origin` (usually the path) prefixes every error.
    pub fn from_toml(source: &str, origin: &str) -> Result<Definition> {
        toml::from_str(source).map_err(|e| Error::definition(origin, e.to_string().trim_end()))
    }

    /// Starts a code-based definition.
    pub fn builder(id: impl Into<String>) -> DefinitionBuilder {
        DefinitionBuilder {
            def: Definition {
                id: id.into(),
                name: String::new(),
                description: String::new(),
                version: 1,
                rollback_on_abort: RollbackMode::Soft,
                max_transitions: None,
                progress: false,
                input: BTreeMap::new(),
                steps: Vec::new(),
            },
        }
    }
}

/// Builds a [`Definition`] in Rust; the result is validated like a TOML file.
#[derive(Debug, Clone)]
pub struct DefinitionBuilder {
    def: Definition,
}

impl DefinitionBuilder {
    /// Sets the human name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.def.name = name.into();
        self
    }
    /// Sets the description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.def.description = text.into();
        self
    }
    /// Sets the version.
    pub fn version(mut self, version: u32) -> Self {
        self.def.version = version;
        self
    }
    /// Sets what abort undoes by default.
    pub fn rollback_on_abort(mut self, mode: RollbackMode) -> Self {
        self.def.rollback_on_abort = mode;
        self
    }
    /// Asks for progress reports where the run came from (`progress = true`).
    pub fn progress(mut self, on: bool) -> Self {
        self.def.progress = on;
        self
    }
    /// Bounds the steps a run may enter.
    pub fn max_transitions(mut self, limit: u64) -> Self {
        self.def.max_transitions = Some(limit);
        self
    }
    /// Declares a required input.
    pub fn required_input(mut self, name: impl Into<String>) -> Self {
        self.def.input.insert(
            name.into(),
            InputSpec {
                required: true,
                ..Default::default()
            },
        );
        self
    }
    /// Declares an optional input with a default.
    pub fn input_default(mut self, name: impl Into<String>, default: impl Into<Value>) -> Self {
        self.def.input.insert(
            name.into(),
            InputSpec {
                default: Some(default.into()),
                ..Default::default()
            },
        );
        self
    }
    /// Appends a step.
    pub fn step(mut self, step: StepDef) -> Self {
        self.def.steps.push(step);
        self
    }
    /// The definition, not yet validated (the engine validates on registration).
    pub fn build(self) -> Definition {
        self.def
    }
}

impl StepDef {
    /// A step that runs `action`.
    pub fn action(id: impl Into<String>, action: impl Into<String>) -> StepDef {
        StepDef {
            id: id.into(),
            action: Some(action.into()),
            ..Default::default()
        }
    }
    /// A step that waits for `signal`.
    pub fn wait(id: impl Into<String>, signal: impl Into<String>) -> StepDef {
        StepDef {
            id: id.into(),
            wait: Some(WaitDef {
                signal: signal.into(),
                timeout: None,
                on_timeout: OnTimeout::Fail,
            }),
            ..Default::default()
        }
    }
    /// Sets the label shown in progress updates.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }
    /// Adds a parameter.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.with.insert(key.into(), value.into());
        self
    }
    /// Sets the condition.
    pub fn when(mut self, condition: impl Into<String>) -> Self {
        self.when = Some(condition.into());
        self
    }
    /// Adds a branch rule.
    pub fn next(mut self, when: impl Into<String>, goto: impl Into<String>) -> Self {
        self.next.push(NextRule {
            when: when.into(),
            goto: goto.into(),
        });
        self
    }
    /// Sets the attempt timeout (or the wait timeout for a wait step).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        match &mut self.wait {
            Some(wait) => wait.timeout = Some(Dur(timeout)),
            None => self.timeout = Some(Dur(timeout)),
        }
        self
    }
    /// Sets what a wait's timeout does.
    pub fn on_timeout(mut self, on_timeout: OnTimeout) -> Self {
        if let Some(wait) = &mut self.wait {
            wait.on_timeout = on_timeout;
        }
        self
    }
    /// Sets the retry policy: a [`RetryPolicy`], or the name of one in [`RetryPolicy::NAMED`].
    pub fn retry(mut self, policy: impl Into<Retry>) -> Self {
        self.retry = Some(policy.into());
        self
    }
    /// Sets the failure policy.
    pub fn on_failure(mut self, policy: OnFailure) -> Self {
        self.on_failure = policy;
        self
    }
    /// Sets the compensation.
    pub fn compensate(mut self, action: impl Into<String>, with: Map<String, Value>) -> Self {
        self.compensate = Some(Compensation {
            action: action.into(),
            with,
        });
        self
    }
    /// Writes a state key from a template.
    pub fn set(mut self, key: impl Into<String>, template: impl Into<String>) -> Self {
        self.set.insert(key.into(), template.into());
        self
    }
    /// Passes the daemon's variable `name` to a `shell` step.
    pub fn pass_env(mut self, name: impl Into<String>) -> Self {
        self.pass_env.push(name.into());
        self
    }
    /// Runs a `shell` step in the sandbox.
    pub fn sandbox(mut self, on: bool) -> Self {
        self.sandbox = on;
        self
    }
}

/// A validated definition, ready to run. Cheap to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// The definition as written.
    pub def: Definition,
    /// A digest of the definition's content; runs refer to it, so an edited file does not
    /// change a run that already started.
    pub digest: String,
    /// How this exact definition was registered, when known (definitions stored before
    /// baton recorded it have none).
    pub provenance: Option<Provenance>,
    index: HashMap<String, usize>,
}

/// The way a definition came in.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Interface {
    /// Shipped in the program: the built-in workflows. Only these may use a built-in's id.
    Builtin,
    /// A workflow file read by the daemon's own process (`workflow_dirs`, or a command run
    /// without a daemon).
    File,
    /// The HTTP API (`POST /api/runs` with a definition: what `baton run FILE` sends to a
    /// daemon).
    Api,
    /// The program embedding the engine, in code (tests, benchmarks).
    Program,
}

impl Interface {
    /// The name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Builtin => "builtin",
            Interface::File => "file",
            Interface::Api => "api",
            Interface::Program => "program",
        }
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who registered a definition, through which interface, when.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Provenance {
    /// The interface.
    pub via: Interface,
    /// The client's address (the API's peer, `ip:port`); none for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// When, in milliseconds since the Unix epoch.
    pub at: crate::clock::Millis,
    /// Where the registrant said it came from (a file's path, `built-in`); through the API,
    /// the client's word only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
}

impl Provenance {
    /// A registration through `via` now, from `origin`.
    pub fn now(via: Interface, origin: impl Into<String>) -> Self {
        Provenance {
            via,
            client: None,
            at: crate::clock::now_ms(),
            origin: origin.into(),
        }
    }

    /// The same, from the client at `address`.
    pub fn from_client(mut self, address: impl Into<String>) -> Self {
        self.client = Some(address.into());
        self
    }
}

impl fmt::Display for Provenance {
    /// `api from 127.0.0.1:5000`, `file /etc/baton/wf.toml`, `builtin`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.via.as_str())?;
        if let Some(client) = &self.client {
            write!(f, " from {client}")?;
        }
        if self.via != Interface::Builtin && !self.origin.is_empty() {
            write!(f, " ({})", self.origin)?;
        }
        Ok(())
    }
}

/// Reserved target that finishes a run.
pub const END: &str = "end";

impl Workflow {
    /// Validates `def`. `origin` names the file or source in errors; `known_action` says
    /// whether an action name is registered.
    pub fn new(def: Definition, origin: &str, known_action: &dyn Fn(&str) -> bool) -> Result<Self> {
        let fail = |message: String| Err(Error::definition(origin, message));
        if def.id.is_empty()
            || !def
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return fail(format!(
                "workflow id `{}` must be non-empty and use only letters, digits, `-`, `_` and `.`",
                def.id
            ));
        }
        if def.steps.is_empty() {
            return fail("a workflow needs at least one [[steps]] entry".into());
        }
        if def.max_transitions == Some(0) {
            return fail("max_transitions must be at least 1".into());
        }
        for (name, spec) in &def.input {
            if spec.required && spec.default.is_some() {
                return fail(format!(
                    "input `{name}` is required and has a default; pick one"
                ));
            }
        }
        let mut index = HashMap::with_capacity(def.steps.len());
        for (i, step) in def.steps.iter().enumerate() {
            if step.id.is_empty() || step.id == END {
                return fail(format!(
                    "step {} has id `{}`; ids must be non-empty and `end` is reserved",
                    i + 1,
                    step.id
                ));
            }
            if index.insert(step.id.clone(), i).is_some() {
                return fail(format!("duplicate step id `{}`", step.id));
            }
        }
        let step_ids: HashSet<&str> = def.steps.iter().map(|s| s.id.as_str()).collect();
        let target = |step: &str, key: &str, goto: &str| -> Result<()> {
            if goto == END || step_ids.contains(goto) {
                Ok(())
            } else {
                Err(Error::definition(
                    origin,
                    format!("step `{step}`: {key} goes to unknown step `{goto}`"),
                ))
            }
        };
        for step in &def.steps {
            let sid = &step.id;
            let here = |key: &str, message: String| {
                Error::definition(origin, format!("step `{sid}`: {key}: {message}"))
            };
            match (&step.action, &step.wait) {
                (Some(_), Some(_)) => {
                    return fail(format!(
                        "step `{sid}` has both `action` and `wait`; a step does one"
                    ))
                }
                (None, None) => {
                    return fail(format!("step `{sid}` needs `action` or `wait`"));
                }
                (Some(action), None) => {
                    if !known_action(action) {
                        return fail(format!("step `{sid}`: unknown action `{action}`"));
                    }
                }
                (None, Some(wait)) => {
                    if !step.with.is_empty() || step.compensate.is_some() || step.retry.is_some() {
                        return fail(format!(
                            "step `{sid}` waits; `with`, `retry` and `compensate` belong to action steps"
                        ));
                    }
                    if wait.signal.is_empty() {
                        return fail(format!("step `{sid}`: wait.signal must not be empty"));
                    }
                    if let OnTimeout::Goto(to) = &wait.on_timeout {
                        target(sid, "wait.on_timeout", to)?;
                    }
                }
            }
            if let Some(Retry::Named(name)) = &step.retry {
                if RetryPolicy::named(name).is_none() {
                    return Err(here(
                        "retry",
                        format!(
                            "unknown retry policy `{name}` (known: {}; or write a table such as \
                             {{ max_attempts = 3, initial = \"2s\" }})",
                            RetryPolicy::names()
                        ),
                    ));
                }
            }
            if let Some(Retry::Policy(retry)) = &step.retry {
                if retry.max_attempts == 0 {
                    return Err(here("retry.max_attempts", "must be at least 1".into()));
                }
                if !(retry.factor >= 1.0 && retry.factor.is_finite()) {
                    return Err(here("retry.factor", "must be a number >= 1.0".into()));
                }
                if retry.max < retry.initial {
                    return Err(here(
                        "retry.max",
                        "must not be less than retry.initial".into(),
                    ));
                }
            }
            if let OnFailure::Goto(to) = &step.on_failure {
                target(sid, "on_failure", to)?;
            }
            for rule in &step.next {
                target(sid, "next.goto", &rule.goto)?;
                template::check_expression(&rule.when, &step_ids)
                    .map_err(|e| here("next.when", e.to_string()))?;
            }
            if let Some(when) = &step.when {
                template::check_expression(when, &step_ids)
                    .map_err(|e| here("when", e.to_string()))?;
            }
            template::check_value(&Value::Object(step.with.clone()), &step_ids)
                .map_err(|e| here("with", e.to_string()))?;
            for (key, value) in &step.set {
                template::check_template(value, &step_ids)
                    .map_err(|e| here(&format!("set.{key}"), e.to_string()))?;
            }
            if let Some(comp) = &step.compensate {
                if !known_action(&comp.action) {
                    return Err(here(
                        "compensate",
                        format!("unknown action `{}`", comp.action),
                    ));
                }
                template::check_value(&Value::Object(comp.with.clone()), &step_ids)
                    .map_err(|e| here("compensate.with", e.to_string()))?;
            }
            check_shell_keys(step).map_err(|(key, message)| here(key, message))?;
        }
        let canonical = serde_json::to_vec(&def).expect("definitions always serialize");
        let digest = format!("{:016x}", fnv1a(&canonical));
        Ok(Workflow {
            def,
            digest,
            provenance: None,
            index,
        })
    }

    /// The id.
    pub fn id(&self) -> &str {
        &self.def.id
    }

    /// The position of a step.
    pub fn step_index(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The steps.
    pub fn steps(&self) -> &[StepDef] {
        &self.def.steps
    }

    /// What is valid but unwise: each `shell` step (or compensation) whose `run` splices an
    /// input or the run's state into its command without `| shell_quote`.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for step in &self.def.steps {
            let mut check = |what: &str, action: Option<&str>, with: &Map<String, Value>| {
                let Some(Value::String(run)) = with.get("run") else {
                    return;
                };
                if action != Some("shell") {
                    return;
                }
                for splice in crate::template::unquoted_splices(run) {
                    let var = splice_variable(&splice);
                    out.push(format!(
                        "step `{}`{what}: `run` splices {splice} into the shell command, where a value such as `x; rm -rf ~` runs; read {var} instead, or write {} ",
                        step.id,
                        splice.replacen(" }}", " | shell_quote }}", 1)
                    ));
                }
            };
            check("", step.action.as_deref(), &step.with);
            if let Some(c) = &step.compensate {
                check(" (compensate)", Some(c.action.as_str()), &c.with);
            }
        }
        out.iter_mut().for_each(|w| *w = w.trim_end().to_string());
        out
    }

    /// The step limit for one run.
    pub fn max_transitions(&self, engine_default: u64) -> u64 {
        self.def.max_transitions.unwrap_or(engine_default)
    }

    /// Checks and completes a run's input: unknown names, missing required ones, defaults.
    pub fn resolve_input(&self, mut given: Map<String, Value>) -> Result<Map<String, Value>> {
        let bad = |message: String| Error::Input {
            workflow: self.def.id.clone(),
            message,
        };
        if !self.def.input.is_empty() {
            if let Some(unknown) = given.keys().find(|k| !self.def.input.contains_key(*k)) {
                let known: Vec<&str> = self.def.input.keys().map(String::as_str).collect();
                return Err(bad(format!(
                    "unknown input `{unknown}` (this workflow takes: {})",
                    known.join(", ")
                )));
            }
        }
        for (name, spec) in &self.def.input {
            if given.contains_key(name) {
                continue;
            }
            if spec.required {
                return Err(bad(format!(
                    "missing required input `{name}` (pass --input {name}=VALUE)"
                )));
            }
            if let Some(default) = &spec.default {
                given.insert(name.clone(), default.clone());
            }
        }
        Ok(given)
    }
}

/// The action whose steps take `pass_env` and `sandbox`.
pub const SHELL: &str = "shell";

/// Whether `name` can name an environment variable a step may be given: a POSIX name
/// (letters, digits, `_`, not starting with a digit), outside baton's own `BATON_` settings.
fn passable_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "`{name}` is not a variable name (letters, digits and `_`, not starting with a digit)"
        ));
    }
    if name.to_ascii_uppercase().starts_with("BATON_") {
        return Err(format!(
            "`{name}`: baton's own settings and credentials (`BATON_*`) are never passed to a \
             step; pass a variable of your own, e.g. GITHUB_TOKEN"
        ));
    }
    Ok(())
}

/// `pass_env` and `sandbox` belong to `shell` steps; `with.env` of a `shell` step is a table
/// of literal values (a list of names is `pass_env`). Returns the key and what is wrong.
fn check_shell_keys(step: &StepDef) -> std::result::Result<(), (&'static str, String)> {
    let runs_shell = step.action.as_deref() == Some(SHELL)
        || step.compensate.as_ref().is_some_and(|c| c.action == SHELL);
    if !runs_shell {
        if !step.pass_env.is_empty() {
            return Err((
                "pass_env",
                "only a `shell` step (or one compensated by `shell`) takes variables by name"
                    .into(),
            ));
        }
        if step.sandbox {
            return Err((
                "sandbox",
                "only a `shell` step (or one compensated by `shell`) runs in the sandbox on request; \
                 other actions choose by trust"
                    .into(),
            ));
        }
    }
    let mut seen = HashSet::new();
    for name in &step.pass_env {
        passable_name(name).map_err(|e| ("pass_env", e))?;
        if !seen.insert(name.as_str()) {
            return Err(("pass_env", format!("`{name}` is named twice")));
        }
    }
    let shell_withs = std::iter::once((step.action.as_deref(), &step.with))
        .chain(
            step.compensate
                .iter()
                .map(|c| (Some(c.action.as_str()), &c.with)),
        )
        .filter(|(action, _)| *action == Some(SHELL))
        .map(|(_, with)| with);
    for with in shell_withs {
        match with.get("env") {
            None => {}
            Some(Value::Object(env)) => {
                if let Some(both) = step.pass_env.iter().find(|n| env.contains_key(*n)) {
                    return Err((
                        "pass_env",
                        format!("`{both}` is also set in `with.env`; pick one"),
                    ));
                }
            }
            Some(Value::Array(_)) => return Err((
                "with.env",
                "`with.env` sets literal values (`{ NAME = \"value\" }`); to pass the daemon's \
                     variables by name, write `pass_env = [\"NAME\"]` on the step"
                    .into(),
            )),
            Some(other) => {
                return Err((
                    "with.env",
                    format!("must be a table of literal values, got {other}"),
                ))
            }
        }
    }
    Ok(())
}

/// FNV-1a, 64 bits: a stable digest of a definition (not a security boundary).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// `"$BATON_INPUT_X"` for a splice of `input.x`, else a generic hint.
fn splice_variable(splice: &str) -> String {
    let inner = splice
        .trim_start_matches("{{")
        .trim_end_matches("}}")
        .trim();
    match inner.strip_prefix("input.") {
        Some(name)
            if name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
        {
            format!("\"${}\"", crate::shell::input_variable(name))
        }
        _ => "the value from a `BATON_INPUT_*` variable or the step's `env`".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(src: &str) -> std::result::Result<Workflow, String> {
        let def = Definition::from_toml(src, "wf.toml").map_err(|e| e.to_string())?;
        Workflow::new(def, "wf.toml", &|a| a == "shell" || a == "noop").map_err(|e| e.to_string())
    }

    #[test]
    fn durations() {
        for (text, ms) in [
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("1d", 86_400_000),
            ("1.5s", 1500),
        ] {
            assert_eq!(text.parse::<Dur>().unwrap().0.as_millis(), ms, "{text}");
        }
        for bad in ["", "5", "s", "5x", "1h 30m", "-1s", "ms5"] {
            assert!(bad.parse::<Dur>().is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn backoff_grows_and_caps() {
        let p = RetryPolicy {
            max_attempts: 5,
            initial: Dur(Duration::from_millis(200)),
            max: Dur(Duration::from_secs(1)),
            factor: 2.0,
            jitter: false,
        };
        let ms: Vec<u128> = (2..=6).map(|a| p.delay(a, 0.0).as_millis()).collect();
        assert_eq!(ms, vec![200, 400, 800, 1000, 1000]);
        let jittered = RetryPolicy { jitter: true, ..p }.delay(3, 0.0).as_millis();
        assert_eq!(jittered, 200);
    }

    #[test]
    fn retry_is_a_name_or_a_table() {
        let wf = check(
            "id = \"x\"\n[[steps]]\nid = \"a\"\naction = \"noop\"\nretry = \"forge\"\n\
             [[steps]]\nid = \"b\"\naction = \"noop\"\nretry = { max_attempts = 5, initial = \"1s\" }\n",
        )
        .unwrap();
        let [a, b] = wf.steps() else { panic!() };
        assert_eq!(a.retry, Some(Retry::Named("forge".into())));
        assert_eq!(
            a.retry.as_ref().unwrap().policy(),
            Some(RetryPolicy::fixed(4, 2, 60))
        );
        assert_eq!(b.retry.as_ref().unwrap().policy().unwrap().max_attempts, 5);
        // Written back as it was read: the name stays a name, the table a table.
        let toml = toml::to_string(&wf.def).unwrap();
        assert!(toml.contains("retry = \"forge\""), "{toml}");
        let json = serde_json::to_value(&wf.def).unwrap();
        assert_eq!(json["steps"][0]["retry"], "forge");
        assert_eq!(json["steps"][1]["retry"]["max_attempts"], 5);
        let back: Definition = serde_json::from_value(json).unwrap();
        assert_eq!(back, wf.def);
        for (name, policy) in RetryPolicy::NAMED {
            assert_eq!(RetryPolicy::named(name).as_ref(), Some(policy));
        }
        assert_eq!(RetryPolicy::named("Forge"), None);
    }

    #[test]
    fn bad_definitions_name_the_problem() {
        let cases = [
            ("id = \"x\"\n[[steps]\n", "line 2"),
            ("id = \"x\"\nbogus = 1\n[[steps]]\nid = \"a\"\naction = \"noop\"\n", "unknown field `bogus`"),
            ("id = \"x\"\n[[steps]]\nid = \"a\"\naction = \"noop\"\n[[steps]]\nid = \"a\"\naction = \"noop\"\n", "duplicate step id `a`"),
            ("id = \"x\"\n[[steps]]\nid = \"a\"\naction = \"noop\"\nnext = [{ when = \"true\", goto = \"zzz\" }]\n", "unknown step `zzz`"),
            ("id = \"x\"\n[[steps]]\nid = \"a\"\naction = \"nope\"\n", "unknown action `nope`"),
            ("id = \"x\"\n[[steps]]\nid = \"a\"\naction = \"shell\"\nwith = { run = \"{{ input.x \" }\n", "step `a`: with"),
            ("id = \"x\"\n[[steps]]\nid = \"a\"\naction = \"noop\"\ntimeout = \"5 parsecs\"\n", "bad duration"),
            ("id = \"x\"\n[[steps]]\nid = \"a\"\naction = \"noop\"\nwait = { signal = \"go\" }\n", "both `action` and `wait`"),
            ("id = \"x\"\n[[steps]]\nid = \"a\"\naction = \"noop\"\non_failure = \"explode\"\n", "unknown on_failure"),
            ("id = \"x\"\n[[steps]]\nid = \"a\"\naction = \"noop\"\nwhen = \"steps.ghost.output\"\n", "unknown step `ghost`"),
            ("id = \"x\"\n", "at least one"),
            ("id = \"x\"\n[[steps]]\nid = \"a\"\naction = \"noop\"\nretry = \"forgee\"\n", "step `a`: retry: unknown retry policy `forgee` (known: `forge`, `git`, `agent`"),
            ("id = \"x\"\n[[steps]]\nid = \"a\"\naction = \"noop\"\nretry = 3\n", "a retry policy's name (`forge`, `git`, `agent`) or a table"),
            ("id = \"x\"\n[[steps]]\nid = \"a\"\naction = \"noop\"\nretry = { max_attempts = 0 }\n", "retry.max_attempts: must be at least 1"),
            ("id = \"x\"\n[[steps]]\nid = \"a\"\naction = \"noop\"\nretry = { attempts = 2 }\n", "unknown field `attempts`"),
        ];
        for (src, want) in cases {
            let err = check(src).expect_err(src);
            assert!(err.contains(want), "{src:?}: `{err}` lacks `{want}`");
            assert!(err.starts_with("wf.toml"), "{err}");
        }
    }

    #[test]
    fn issue_example_parses() {
        let wf = check(include_str!("../../examples/release-check.toml")).unwrap();
        assert_eq!(wf.def.rollback_on_abort, RollbackMode::Hard);
        assert_eq!(
            wf.steps()[1].wait.as_ref().unwrap().timeout.unwrap().0,
            Duration::from_secs(86400)
        );
        let input = wf.resolve_input(Map::new()).unwrap_err().to_string();
        assert!(input.contains("missing required input `out`"), "{input}");
    }

    #[test]
    fn builder_and_toml_agree() {
        let built = Definition::builder("release-check")
            .step(
                StepDef::action("build", "shell")
                    .with("run", "true")
                    .retry(RetryPolicy::attempts(2)),
            )
            .step(StepDef::wait("gate", "approve").timeout(Duration::from_secs(60)))
            .build();
        let text = toml::to_string(&built).unwrap();
        let parsed = Definition::from_toml(&text, "x").unwrap();
        assert_eq!(parsed, built);
    }

    #[test]
    fn shell_steps_take_variables_by_name_and_the_sandbox_fixed_in_the_file() {
        let step = "id = \"x\"\n[[steps]]\nid = \"a\"\naction = \"shell\"\n";
        let wf = check(&format!(
            "{step}with = {{ run = \"gh release list\", env = {{ GH_REPO = \"o/r\" }} }}\n\
             pass_env = [\"GITHUB_TOKEN\", \"_X1\"]\nsandbox = true\n"
        ))
        .unwrap();
        assert_eq!(wf.steps()[0].pass_env, ["GITHUB_TOKEN", "_X1"]);
        assert!(wf.steps()[0].sandbox);
        let built = Definition::builder("x")
            .step(
                StepDef::action("a", "shell")
                    .with("run", "gh release list")
                    .with("env", serde_json::json!({ "GH_REPO": "o/r" }))
                    .pass_env("GITHUB_TOKEN")
                    .pass_env("_X1")
                    .sandbox(true),
            )
            .build();
        assert_eq!(built, wf.def);
        // A step without them keeps the digest it had before they existed.
        let plain = check(&format!("{step}with = {{ run = \"true\" }}\n")).unwrap();
        let json = serde_json::to_string(&plain.def).unwrap();
        assert!(
            !json.contains("pass_env") && !json.contains("sandbox"),
            "{json}"
        );
        // A compensation by `shell` takes them too.
        check(
            "id = \"x\"\n[[steps]]\nid = \"a\"\naction = \"noop\"\npass_env = [\"T\"]\n\
             compensate = { action = \"shell\", with = { run = \"undo\" } }\n",
        )
        .unwrap();

        let cases = [
            (
                format!("{step}with = {{ run = \"x\", env = [\"GITHUB_TOKEN\"] }}\n"),
                "step `a`: with.env: `with.env` sets literal values",
            ),
            (
                format!("{step}with = {{ run = \"x\", env = \"{{{{ input.e }}}}\" }}\n"),
                "with.env: must be a table",
            ),
            (
                format!("{step}with = {{ run = \"x\" }}\npass_env = [\"BATON_DATABASE_URL\"]\n"),
                "`BATON_DATABASE_URL`: baton's own settings",
            ),
            (
                format!("{step}with = {{ run = \"x\" }}\npass_env = [\"1X\"]\n"),
                "`1X` is not a variable name",
            ),
            (
                format!("{step}with = {{ run = \"x\" }}\npass_env = [\"A-B\"]\n"),
                "`A-B` is not a variable name",
            ),
            (
                format!("{step}with = {{ run = \"x\" }}\npass_env = [\"T\", \"T\"]\n"),
                "`T` is named twice",
            ),
            (
                format!(
                    "{step}with = {{ run = \"x\", env = {{ T = \"v\" }} }}\npass_env = [\"T\"]\n"
                ),
                "`T` is also set in `with.env`",
            ),
            (
                format!("{step}with = {{ run = \"x\" }}\npass_env = \"T\"\n"),
                "invalid type",
            ),
            (
                "id = \"x\"\n[[steps]]\nid = \"a\"\naction = \"noop\"\npass_env = [\"T\"]\n"
                    .to_string(),
                "step `a`: pass_env: only a `shell` step",
            ),
            (
                "id = \"x\"\n[[steps]]\nid = \"a\"\naction = \"noop\"\nsandbox = true\n"
                    .to_string(),
                "step `a`: sandbox: only a `shell` step",
            ),
            (
                "id = \"x\"\n[[steps]]\nid = \"a\"\nwait = { signal = \"go\" }\nsandbox = true\n"
                    .to_string(),
                "step `a`: sandbox",
            ),
        ];
        for (src, want) in cases {
            let err = check(&src).expect_err(&src);
            assert!(err.contains(want), "{src:?}: `{err}` lacks `{want}`");
        }
    }

    #[test]
    fn progress_is_opt_in_and_keeps_old_digests() {
        let old = "id = \"w\"\n[[steps]]\nid = \"a\"\naction = \"noop\"\n";
        let plain = check(old).unwrap();
        assert!(!plain.def.progress);
        // The digest of a definition without the key is what it was before the key existed.
        assert!(!serde_json::to_string(&plain.def)
            .unwrap()
            .contains("progress"));
        let on = check(&format!("progress = true\n{old}")).unwrap();
        assert!(on.def.progress);
        assert_ne!(on.digest, plain.digest);
        let built = Definition::builder("w")
            .progress(true)
            .step(StepDef::action("a", "noop"))
            .build();
        assert_eq!(built, on.def);
    }
}
