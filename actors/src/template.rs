//! Templates and conditions, over `{input, state, steps, run}`, with minijinja.
//!
//! A string that is a single `{{ expression }}` evaluates to the expression's own value (a
//! number stays a number, a map a map); any other string renders to text. Undefined names
//! are errors, not empty strings, so a typo fails the step instead of running `rm -rf /`.
//! Templates are pure: no IO, no clock, bounded by fuel.

use std::collections::HashSet;
use std::sync::OnceLock;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use serde_json::{Map, Value};

/// Instructions one template may execute: enough for any sane template, a stop for loops.
const FUEL: u64 = 200_000;

const ROOTS: [&str; 4] = ["input", "state", "steps", "run"];

/// What is wrong with a template or condition, as checked when a workflow is registered or
/// met when one is evaluated. Each message reads after the key it is about (`with: ...`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// minijinja refused it: a syntax error, an undefined name, a filter's failure, no fuel.
    #[error("{}", describe(.0))]
    Minijinja(minijinja::Error),
    /// A name outside `input`, `state`, `steps` and `run`.
    #[error("unknown variable `{0}` (templates see input, state, steps and run)")]
    UnknownVariable(String),
    /// `steps.<id>` naming no step of the workflow.
    #[error("refers to unknown step `{0}`")]
    UnknownStep(String),
    /// The expression evaluated to nothing.
    #[error("`{0}` is undefined")]
    Undefined(String),
    /// The expression's value is not representable as JSON.
    #[error("{0}")]
    NotJson(#[source] serde_json::Error),
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_filter("shell_quote", shell_quote);
        env.set_fuel(Some(FUEL));
        env
    })
}

/// `{{ x | shell_quote }}`: `x` as one word of `sh`, quoted where it needs it (a string as it
/// is, anything else as its JSON text). For the rare `run` that must splice a value into its
/// text; `"$BATON_INPUT_X"` is the plain way.
fn shell_quote(value: minijinja::Value) -> std::result::Result<String, minijinja::Error> {
    let text = match value.as_str() {
        Some(s) => s.to_string(),
        None => serde_json::to_string(&value).map_err(|e| {
            minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
        })?,
    };
    shlex::try_quote(&text)
        .map(|q| q.into_owned())
        .map_err(|_| {
            minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                "shell_quote: the value holds a NUL byte, which no shell word can",
            )
        })
}

/// The `{{ … }}` blocks of a shell command that put an input or the run's state into it
/// without `| shell_quote`: a value such as `x; env > f` would then be part of the command.
pub fn unquoted_splices(run: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = run;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        let inner = after[..end].trim().trim_matches('-').trim();
        let names_data = ["input", "state"].iter().any(|root| {
            inner.match_indices(root).any(|(i, _)| {
                let before = inner[..i].chars().next_back();
                let next = inner[i + root.len()..].chars().next();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
                    && matches!(next, Some('.') | Some('['))
            })
        });
        let quoted = inner
            .rsplit('|')
            .next()
            .is_some_and(|last| last.trim() == "shell_quote");
        if names_data && !quoted {
            out.push(format!("{{{{ {inner} }}}}"));
        }
        rest = &after[end + 2..];
    }
    out
}

/// The inner expression when `text` is exactly one `{{ ... }}` block.
fn single_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    if ["{{", "}}", "{%", "%}", "{#"]
        .iter()
        .any(|m| inner.contains(m))
    {
        return None;
    }
    Some(inner)
}

fn check_names(names: HashSet<String>, step_ids: &HashSet<&str>) -> Result<()> {
    for name in names {
        let mut parts = name.split('.');
        let root = parts.next().unwrap_or_default();
        if !ROOTS.contains(&root) {
            return Err(Error::UnknownVariable(root.to_string()));
        }
        if root == "steps" {
            if let Some(step) = parts.next() {
                if !step_ids.contains(step) {
                    return Err(Error::UnknownStep(step.to_string()));
                }
            }
        }
    }
    Ok(())
}

/// Checks a condition's syntax and the steps it names.
pub fn check_expression(expr: &str, step_ids: &HashSet<&str>) -> Result<()> {
    let compiled = env().compile_expression(expr).map_err(Error::Minijinja)?;
    check_names(compiled.undeclared_variables(true), step_ids)
}

/// Checks a template string's syntax and the steps it names.
pub fn check_template(text: &str, step_ids: &HashSet<&str>) -> Result<()> {
    if let Some(expr) = single_expression(text) {
        return check_expression(expr, step_ids);
    }
    let template = env().template_from_str(text).map_err(Error::Minijinja)?;
    check_names(template.undeclared_variables(true), step_ids)
}

/// Checks every string inside a parameter value.
pub fn check_value(value: &Value, step_ids: &HashSet<&str>) -> Result<()> {
    match value {
        Value::String(s) if s.contains("{{") || s.contains("{%") => check_template(s, step_ids),
        Value::Array(items) => items.iter().try_for_each(|v| check_value(v, step_ids)),
        Value::Object(map) => map.values().try_for_each(|v| check_value(v, step_ids)),
        _ => Ok(()),
    }
}

/// The step ids a template or condition refers to through `steps.<id>`.
pub fn referenced_steps(text: &str, out: &mut HashSet<String>) {
    let names = match single_expression(text) {
        Some(expr) => env()
            .compile_expression(expr)
            .map(|e| e.undeclared_variables(true))
            .unwrap_or_default(),
        None => env()
            .template_from_str(text)
            .map(|t| t.undeclared_variables(true))
            .unwrap_or_default(),
    };
    for name in names {
        let mut parts = name.split('.');
        if parts.next() == Some("steps") {
            if let Some(step) = parts.next() {
                out.insert(step.to_string());
            }
        }
    }
}

/// The steps referenced anywhere inside a parameter value.
pub fn referenced_steps_in_value(value: &Value, out: &mut HashSet<String>) {
    match value {
        Value::String(s) if s.contains("{{") || s.contains("{%") => referenced_steps(s, out),
        Value::Array(items) => items.iter().for_each(|v| referenced_steps_in_value(v, out)),
        Value::Object(map) => map.values().for_each(|v| referenced_steps_in_value(v, out)),
        _ => {}
    }
}

/// What templates see.
#[derive(Serialize, Debug)]
pub struct Scope<'a> {
    /// The run's input.
    pub input: &'a Map<String, Value>,
    /// The run's accumulated state.
    pub state: &'a Map<String, Value>,
    /// The steps the template refers to: `{id: {status, attempts, output, error}}`.
    pub steps: Map<String, Value>,
    /// `{id, workflow_id, attempt}`.
    pub run: Value,
}

/// Evaluates a condition to true or false.
pub fn condition(expr: &str, scope: &Scope) -> Result<bool> {
    let compiled = env().compile_expression(expr).map_err(Error::Minijinja)?;
    let value = compiled.eval(scope).map_err(Error::Minijinja)?;
    if value.is_undefined() {
        return Err(Error::Undefined(expr.to_string()));
    }
    Ok(value.is_true())
}

/// Renders one template string: a single expression keeps its type, anything else is text.
pub fn render_str(text: &str, scope: &Scope) -> Result<Value> {
    if let Some(expr) = single_expression(text) {
        let compiled = env().compile_expression(expr).map_err(Error::Minijinja)?;
        let value = compiled.eval(scope).map_err(Error::Minijinja)?;
        if value.is_undefined() {
            return Err(Error::Undefined(expr.trim().to_string()));
        }
        return serde_json::to_value(&value).map_err(Error::NotJson);
    }
    env()
        .render_str(text, scope)
        .map(Value::String)
        .map_err(Error::Minijinja)
}

/// Renders every template string inside a parameter value.
pub fn render_value(value: &Value, scope: &Scope) -> Result<Value> {
    Ok(match value {
        Value::String(s) if s.contains("{{") || s.contains("{%") => render_str(s, scope)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_value(v, scope))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_value(v, scope)?)))
                .collect::<Result<_>>()?,
        ),
        other => other.clone(),
    })
}

/// minijinja's error with its detail and the line, without the debug dump.
fn describe(err: &minijinja::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope<'a>(input: &'a Map<String, Value>, state: &'a Map<String, Value>) -> Scope<'a> {
        Scope {
            input,
            state,
            steps: json!({"build": {"status": "completed", "output": {"exit_code": 0}}})
                .as_object()
                .unwrap()
                .clone(),
            run: json!({"id": "run_1", "workflow_id": "wf", "attempt": 1}),
        }
    }

    #[test]
    fn shell_quote_makes_one_word_and_unquoted_splices_are_found() {
        let input = json!({"out": "x; env | grep TOKEN > f", "n": 3, "plain": "a.log"})
            .as_object()
            .unwrap()
            .clone();
        let state = Map::new();
        let s = scope(&input, &state);
        let run = render_str("echo hi >> {{ input.out | shell_quote }}", &s).unwrap();
        assert_eq!(run, json!("echo hi >> 'x; env | grep TOKEN > f'"));
        let words = shlex::split(run.as_str().unwrap()).unwrap();
        assert_eq!(words, ["echo", "hi", ">>", "x; env | grep TOKEN > f"]);
        assert_eq!(
            render_str("{{ input.plain | shell_quote }}", &s).unwrap(),
            json!("a.log")
        );
        assert_eq!(
            render_str("seq {{ input.n | shell_quote }}", &s).unwrap(),
            json!("seq 3")
        );
        assert_eq!(
            unquoted_splices(
                "a {{ input.out }} b {{input['x']}} {{ input.out | shell_quote }} {{ state.k|upper }} {{ steps.b.output.x }} {{ run.id }} {{ myinput.x }}"
            ),
            vec!["{{ input.out }}", "{{ input['x'] }}", "{{ state.k|upper }}"]
        );
        assert!(unquoted_splices("echo \"$BATON_INPUT_OUT\"").is_empty());
    }

    #[test]
    fn renders_and_keeps_types() {
        let input = json!({"out": "/tmp/x", "n": 3})
            .as_object()
            .unwrap()
            .clone();
        let state = Map::new();
        let s = scope(&input, &state);
        let cases = [
            ("echo {{ input.out }}", json!("echo /tmp/x")),
            ("{{ input.n }}", json!(3)),
            ("{{ steps.build.output.exit_code == 0 }}", json!(true)),
            ("{{ input.n * 2 }} items", json!("6 items")),
            ("plain", json!("plain")),
        ];
        for (text, want) in cases {
            assert_eq!(render_str(text, &s).unwrap(), want, "{text}");
        }
        assert!(condition("input.n > 2", &s).unwrap());
        assert!(!condition("input.out == 'quick'", &s).unwrap());
    }

    #[test]
    fn undefined_is_an_error() {
        let input = Map::new();
        let state = Map::new();
        let s = scope(&input, &state);
        assert!(render_str("echo {{ input.nope }}", &s).is_err());
        assert!(render_str("{{ state.nope }}", &s).is_err());
        assert_eq!(
            render_str("{{ state.nope | default(false) }}", &s).unwrap(),
            json!(false)
        );
    }

    #[test]
    fn checks_names() {
        let ids: HashSet<&str> = ["build"].into_iter().collect();
        assert!(check_template("{{ steps.build.output }}", &ids).is_ok());
        let unknown_step = check_template("{{ steps.other.output }}", &ids).unwrap_err();
        assert!(matches!(&unknown_step, Error::UnknownStep(s) if s == "other"));
        assert_eq!(unknown_step.to_string(), "refers to unknown step `other`");
        let unknown_name = check_template("{{ secret }}", &ids).unwrap_err();
        assert!(matches!(&unknown_name, Error::UnknownVariable(s) if s == "secret"));
        assert!(check_template("{% for x in input.list %}{{ x }}{% endfor %}", &ids).is_ok());
        assert!(check_expression("input.a ==", &ids).is_err());
    }

    #[test]
    fn infinite_loops_run_out_of_fuel() {
        let input = Map::new();
        let state = Map::new();
        let s = scope(&input, &state);
        let err = render_str(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            &s,
        );
        assert!(err.is_err());
    }
}
