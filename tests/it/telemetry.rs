//! What an operator sees: the traces `baton serve` exports over OTLP/HTTP, read back by a
//! loopback collector that decodes the protobuf with the `opentelemetry-proto` types; the
//! `/metrics` text read with a Prometheus parser; the dashboard checked against the series.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use serde_json::Value;

use crate::common;
use crate::common_agent;
use crate::common_daemon::Daemon;
use crate::issue_to_pr::{wait_until, Setup, BUG, FIX, LIB_RS, REPO};

/// One exported span, flattened: what the assertions read.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    trace: String,
    id: String,
    parent: String,
    name: String,
    attrs: HashMap<String, String>,
}

/// A collector on loopback: `POST /v1/traces` with `application/x-protobuf`, as OTLP/HTTP.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Exported>>>,
    raw: Arc<Mutex<Vec<u8>>>,
    _rt: tokio::runtime::Runtime,
}

impl Collector {
    fn start() -> Collector {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let spans: Arc<Mutex<Vec<Exported>>> = Arc::default();
        let raw: Arc<Mutex<Vec<u8>>> = Arc::default();
        let (s, r) = (spans.clone(), raw.clone());
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let (s, r) = (s.clone(), r.clone());
                    async move {
                        assert_eq!(
                            headers.get("content-type").and_then(|v| v.to_str().ok()),
                            Some("application/x-protobuf")
                        );
                        r.lock().unwrap().extend_from_slice(&body);
                        let request =
                            ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                        s.lock().unwrap().extend(flatten(&request));
                        axum::http::StatusCode::OK
                    }
                },
            ),
        );
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move { axum::serve(listener, app).await });
        Collector {
            url: format!("http://{addr}"),
            spans,
            raw,
            _rt: rt,
        }
    }

    fn spans(&self) -> Vec<Exported> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until a span passes `found`; all spans then.
    fn wait_for(&self, what: &str, found: impl Fn(&Exported) -> bool) -> Vec<Exported> {
        wait_until(what, Duration::from_secs(30), || {
            self.spans.lock().unwrap().iter().any(&found)
        });
        self.spans()
    }
}

fn text(value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn flatten(request: &ExportTraceServiceRequest) -> Vec<Exported> {
    let mut out = Vec::new();
    for resource in &request.resource_spans {
        let service = resource
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
            .map(|a| text(&a.value))
            .unwrap_or_default();
        for scope in &resource.scope_spans {
            for span in &scope.spans {
                out.push(Exported {
                    service: service.clone(),
                    trace: hex::encode(&span.trace_id),
                    id: hex::encode(&span.span_id),
                    parent: hex::encode(&span.parent_span_id),
                    name: span.name.clone(),
                    attrs: span
                        .attributes
                        .iter()
                        .map(|a| (a.key.clone(), text(&a.value)))
                        .collect(),
                });
            }
        }
    }
    out
}

/// The daemon's environment for exporting to `collector` quickly (the batch every 100 ms).
fn otel_env<'a>(collector: &'a Collector, service: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.as_str()),
        ("OTEL_SERVICE_NAME", service),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OPENAI_API_KEY", OPENAI_KEY),
    ]
}

const OPENAI_KEY: &str = "sk-telemetry-test-key-never-exported";

fn wait_for_status(s: &Setup, run: &str, wanted: &[&str], secs: u64) -> Value {
    wait_until(
        &format!("run {run} to be {wanted:?}"),
        Duration::from_secs(secs),
        || wanted.contains(&s.show(run)["status"].as_str().unwrap_or("")),
    );
    s.show(run)
}

/// The run's trace id and root span id, from its stored traceparent.
fn trace_of(record: &Value) -> (String, String) {
    let parent = record["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("no traceparent in {record}"));
    let parts: Vec<&str> = parent.split('-').collect();
    assert_eq!(parts.len(), 4, "{parent}");
    (parts[1].to_string(), parts[2].to_string())
}

#[test]
fn an_issue_to_pr_run_is_one_trace_of_steps_model_forge_checks_and_waits_and_metrics_count_it() {
    let collector = Collector::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plan = serde_json::json!({
        "approach": "Divide the sum by the number of items.",
        "files_to_touch": [{"path": "src/lib.rs", "why": "mean() divides by len + 1"}],
        "steps": ["divide by xs.len()"],
        "tests_to_add": [],
        "risks": []
    })
    .to_string();
    let edit =
        serde_json::json!({"path": "src/lib.rs", "old_text": BUG, "new_text": FIX}).to_string();
    let model = rt.block_on(common_agent::ScriptServer::start(vec![
        common_agent::Scripted::ok(common_agent::oa_calls_usage(
            &[("read_file", r#"{"path": "src/lib.rs"}"#)],
            1200,
            30,
        )),
        common_agent::Scripted::ok(common_agent::oa_calls_usage(&[("plan", &plan)], 1500, 80)),
        common_agent::Scripted::ok(common_agent::oa_calls_usage(
            &[("edit_file", &edit)],
            1700,
            60,
        )),
        common_agent::Scripted::ok(common_agent::oa_calls_usage(
            &[("finish", r#"{"summary": "mean divides by the count"}"#)],
            1800,
            20,
        )),
    ]));
    let s = Setup::new("[workflows.issue_to_pr]\napprove_plan = true\n", "");
    let config = std::fs::read_to_string(&s.config).unwrap().replace(
        "backend = \"patch\"",
        &format!(
            "backend = \"openai\"\nmodel = \"gpt-test\"\nbase_url = \"{}/v1\"\nmax_retries = 0",
            model.base
        ),
    );
    std::fs::write(&s.config, config).unwrap();
    let n = s.issue("mean divides by the wrong count", &["bug"], None);
    let daemon = Daemon::start_with(&s.data, &s.config, &otel_env(&collector, "baton-test"));

    let run = s.detach(n);
    let waiting = wait_for_status(&s, &run, &["waiting", "failed"], 120);
    assert_eq!(waiting["waiting_for"]["step"], "approve_plan", "{waiting}");
    let out = s.baton(&["approve", &run]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = wait_for_status(&s, &run, &["completed", "failed"], 240);
    assert_eq!(done["status"], "completed", "{done}");
    let (trace, root) = trace_of(&done);

    let spans = collector.wait_for("the run's root span", |s| s.id == root);
    let of_run: Vec<&Exported> = spans.iter().filter(|s| s.trace == trace).collect();
    // One trace: every span naming the run is in it.
    for span in &spans {
        if span.attrs.get("baton.run_id") == Some(&run) {
            assert_eq!(span.trace, trace, "{span:?}");
        }
    }
    let by_id: HashMap<&str, &Exported> = of_run.iter().map(|s| (s.id.as_str(), *s)).collect();
    let root_span = by_id[root.as_str()];
    assert_eq!(root_span.name, "run issue_to_pr");
    assert!(
        root_span.parent.is_empty(),
        "the root has no parent: {root_span:?}"
    );
    assert_eq!(root_span.service, "baton-test");
    for (key, value) in [
        ("baton.workflow", "issue_to_pr"),
        ("baton.run_id", run.as_str()),
        ("baton.repository", REPO),
        ("baton.number", &n.to_string()),
        ("baton.status", "completed"),
        ("baton.outcome", "verified"),
    ] {
        assert_eq!(
            root_span.attrs.get(key).map(String::as_str),
            Some(value),
            "{key}: {root_span:?}"
        );
    }

    // Step attempts are the root's children, each with its step, action, attempt and outcome.
    let steps: Vec<&&Exported> = of_run
        .iter()
        .filter(|s| s.name.starts_with("step "))
        .collect();
    let step_names: HashSet<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    for wanted in ["step plan", "step implement", "step verify", "step pr"] {
        assert!(step_names.contains(wanted), "no {wanted} in {step_names:?}");
    }
    for step in &steps {
        assert_eq!(step.parent, root, "{step:?}");
        for key in [
            "baton.workflow",
            "baton.run_id",
            "baton.repository",
            "baton.number",
            "baton.step",
            "baton.action",
            "baton.attempt",
            "baton.outcome",
        ] {
            assert!(step.attrs.contains_key(key), "{key} missing on {step:?}");
        }
    }
    let step_of = |span: &Exported| -> String {
        // The nearest step span above `span`.
        let mut at = span.parent.clone();
        while let Some(parent) = by_id.get(at.as_str()) {
            if parent.name.starts_with("step ") {
                return parent.name.clone();
            }
            at = parent.parent.clone();
        }
        panic!("{span:?} is not below a step span")
    };

    // Model calls: below plan and implement, with the model, tokens and cost.
    let models: Vec<&&Exported> = of_run
        .iter()
        .filter(|s| s.name == "model gpt-test")
        .collect();
    assert_eq!(models.len(), 4, "one span per model call: {models:?}");
    let mut under: Vec<String> = models.iter().map(|m| step_of(m)).collect();
    under.sort();
    under.dedup();
    assert_eq!(under, vec!["step implement", "step plan"]);
    let inputs: u64 = models
        .iter()
        .map(|m| m.attrs["gen_ai.usage.input_tokens"].parse::<u64>().unwrap())
        .sum();
    assert_eq!(inputs, 1200 + 1500 + 1700 + 1800);
    assert!(models.iter().all(|m| m.attrs["gen_ai.system"] == "openai"
        && m.attrs["gen_ai.request.model"] == "gpt-test"
        && m.attrs.contains_key("baton.cost_usd")));

    // Forge calls: named after the Forge method, below the step that made them.
    let forge: Vec<&&Exported> = of_run
        .iter()
        .filter(|s| s.name.starts_with("forge."))
        .collect();
    let opened = forge
        .iter()
        .find(|s| s.name == "forge.create_pull_request")
        .unwrap_or_else(|| panic!("no forge.create_pull_request in {forge:?}"));
    assert_eq!(step_of(opened), "step pr");
    assert_eq!(opened.attrs["baton.forge"], "local");
    assert_eq!(opened.attrs["baton.status"], "ok");

    // Verification: one span per check, with its kind and counts.
    let checks: Vec<&&Exported> = of_run.iter().filter(|s| s.name == "verify tests").collect();
    assert!(!checks.is_empty(), "no check spans");
    let after = checks
        .iter()
        .find(|c| step_of(c) == "step verify")
        .expect("the verify step's check");
    assert_eq!(after.attrs["baton.check_kind"], "tests");
    assert_eq!(after.attrs["baton.check_status"], "passed");
    assert_eq!(after.attrs["baton.tests_passed"], "3");

    // Waits: admission, and the plan's approval, as the root's children.
    let approval = of_run
        .iter()
        .find(|s| s.name == "wait approve")
        .unwrap_or_else(|| {
            panic!(
                "no approval wait in {:?}",
                of_run.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(approval.parent, root);
    assert_eq!(approval.attrs["baton.step"], "approve_plan");
    assert!(of_run
        .iter()
        .any(|s| s.name == "admission" && s.parent == root));

    // No secret and no issue text anywhere in what was exported, raw bytes included.
    let raw = String::from_utf8_lossy(&collector.raw.lock().unwrap()).to_string();
    for secret in [
        daemon.token.as_str(),
        OPENAI_KEY,
        "divides by the wrong count",
        "every test passes",
        "Divide the sum",
    ] {
        assert!(!raw.contains(secret), "{secret:?} was exported");
    }

    // The metrics: Prometheus text that a Prometheus parser reads, with the run counted. The
    // notifier delivers its last update on its own pace: read until it is counted.
    let scrape_text = || {
        rt.block_on(async {
            reqwest::get(format!("{}/metrics", daemon.base))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
    };
    wait_until(
        "the notifier's deliveries to be counted",
        Duration::from_secs(20),
        || {
            scrape_text().lines().any(|l| {
                l.starts_with("baton_notifier_deliveries_total{") && l.contains("result=\"ok\"")
            })
        },
    );
    let body = scrape_text();
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("{e}: {body}"));
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(ref buckets) => {
                    buckets.last().map(|b| b.count).unwrap_or(0.0)
                }
                _ => 0.0,
            })
            .sum()
    };
    assert_eq!(
        value("baton_runs_started_total", &[("workflow", "issue_to_pr")]),
        1.0,
        "{body}"
    );
    assert_eq!(
        value(
            "baton_runs_finished_total",
            &[
                ("workflow", "issue_to_pr"),
                ("status", "completed"),
                ("outcome", "verified")
            ]
        ),
        1.0,
        "{body}"
    );
    assert!(
        value("baton_run_duration_seconds", &[("workflow", "issue_to_pr")]) >= 1.0,
        "{body}"
    );
    assert!(
        value(
            "baton_step_duration_seconds",
            &[
                ("workflow", "issue_to_pr"),
                ("action", "agent.implement"),
                ("result", "ok")
            ]
        ) >= 1.0,
        "{body}"
    );
    assert_eq!(
        value(
            "baton_model_tokens_total",
            &[
                ("backend", "openai"),
                ("model", "gpt-test"),
                ("direction", "input")
            ]
        ),
        6200.0,
        "{body}"
    );
    assert!(
        value(
            "baton_forge_calls_total",
            &[
                ("forge", "local"),
                ("method", "create_pull_request"),
                ("status", "ok")
            ]
        ) >= 1.0
    );
    assert!(
        value("baton_admission_wait_seconds", &[("lane", REPO)]) >= 1.0,
        "{body}"
    );
    assert!(
        value(
            "baton_verify_checks_total",
            &[("kind", "tests"), ("result", "passed")]
        ) >= 1.0
    );
    assert!(
        value("baton_notifier_deliveries_total", &[("result", "ok")]) >= 1.0,
        "{body}"
    );
    // No label holds a run id.
    assert!(!body.contains(&run), "a run id in /metrics");
}

#[test]
fn a_run_resumed_after_kill_9_continues_its_trace() {
    let collector = Collector::start();
    let s = Setup::new("", "");
    // Long enough for the first daemon's spans to be seen before it is killed mid-implement.
    let mark = format!("6.{}", std::process::id() % 1000 + 300);
    s.use_command_agent(&format!(
        "#!/bin/sh\ncat > src/lib.rs <<'EOF'\n{fixed}EOF\nsleep {mark}\necho done\n",
        fixed = LIB_RS.replace(BUG, FIX),
    ));
    let n = s.issue("mean is wrong", &["bug"], None);
    let mut first = Daemon::start_with(&s.data, &s.config, &otel_env(&collector, "baton-before"));
    let run = s.detach(n);
    wait_until("the agent to start", Duration::from_secs(60), || {
        common::running(&["sleep", &mark])
    });
    // What the first daemon traced before it died (its batches leave every 100 ms).
    collector.wait_for("a span of the first daemon", |s| {
        s.service == "baton-before" && s.name == "step clone"
    });
    first.kill_9();

    let _second = Daemon::start_with(&s.data, &s.config, &otel_env(&collector, "baton-after"));
    let done = wait_for_status(&s, &run, &["completed", "failed"], 180);
    assert_eq!(done["status"], "completed", "{done}");
    let (trace, root) = trace_of(&done);
    let spans = collector.wait_for("the root span", |s| s.id == root);
    let before: Vec<&Exported> = spans
        .iter()
        .filter(|s| s.service == "baton-before")
        .collect();
    let after: Vec<&Exported> = spans
        .iter()
        .filter(|s| s.service == "baton-after")
        .collect();
    assert!(before.iter().any(|s| s.name == "step clone"));
    for name in [
        "step implement",
        "step verify",
        "step pr",
        "run issue_to_pr",
    ] {
        assert!(
            after.iter().any(|s| s.name == name),
            "no {name} after the restart"
        );
    }
    for span in before.iter().chain(&after) {
        if span.attrs.get("baton.run_id") == Some(&run) {
            assert_eq!(
                span.trace, trace,
                "a span outside the run's trace: {span:?}"
            );
        }
    }
    assert!(after
        .iter()
        .filter(|s| s.name.starts_with("step "))
        .all(|s| s.parent == root));
}

#[test]
fn the_dashboard_names_only_series_baton_exports() {
    baton::telemetry::init_metrics();
    let known: HashSet<String> = baton_actors::telemetry::series_names()
        .into_iter()
        // The daemon's own series, written by hand beside the registry's (src/daemon.rs).
        .chain(
            [
                "baton_transitions_total",
                "baton_transition_latency_ms",
                "baton_store_flushes_total",
                "baton_store_flush_seconds_total",
                "baton_store_writes_total",
                "baton_live_runs",
                "baton_auth_failures_total",
                "baton_auth_throttled_total",
            ]
            .map(String::from),
        )
        .collect();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana/baton.json");
    let dashboard: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 8, "a dashboard of {} queries", exprs.len());
    let name = regex::Regex::new(r"\bbaton_[a-z_]+").unwrap();
    let mut named = 0;
    for expr in &exprs {
        for found in name.find_iter(expr) {
            let series = found.as_str();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| series.strip_suffix(suffix))
                .filter(|base| known.contains(*base))
                .unwrap_or(series);
            assert!(
                known.contains(base),
                "the dashboard names {series}, which baton does not export ({expr})"
            );
            named += 1;
        }
    }
    assert!(named >= exprs.len(), "every query names a series");
    // And the other way: the series an operator needs first are on it.
    let all = exprs.join("\n");
    for needed in [
        "baton_runs_finished_total",
        "baton_step_duration_seconds",
        "baton_admission_queue_depth",
        "baton_model_cost_dollars_total",
        "baton_forge_calls_total",
    ] {
        assert!(all.contains(needed), "the dashboard lacks {needed}");
    }
}

fn collect_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[test]
fn a_paused_step_and_a_reopened_run_are_spans_of_their_own() {
    let collector = Collector::start();
    let tmp = tempfile::tempdir().unwrap();
    let (data, config) = (tmp.path().join("data"), tmp.path().join("config.toml"));
    std::fs::write(&config, "").unwrap();
    let (gate, last) = (tmp.path().join("gate"), tmp.path().join("last"));
    let daemon = Daemon::start_with(&data, &config, &otel_env(&collector, "baton-test"));
    let def = serde_json::json!({ "id": "flaky", "steps": [
        { "id": "gate", "action": "shell", "on_failure": "pause",
          "with": { "run": format!("test -f '{}'", gate.display()) } },
        { "id": "last", "action": "shell",
          "with": { "run": format!("test -f '{}'", last.display()) } }
    ] });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let until = |run: &str, status: &str| {
        wait_until(&format!("{run} {status}"), Duration::from_secs(30), || {
            rt.block_on(daemon.status(run)) == status
        })
    };
    let retry = |run: &str| {
        let (code, answer) =
            rt.block_on(daemon.post(&format!("/api/runs/{run}/retry"), serde_json::json!({})));
        assert_eq!(code, 200, "{answer}");
    };
    let run = rt.block_on(daemon.start_run(&def));
    // The first step fails and pauses for a person, who fixes things and retries it.
    until(&run, "waiting");
    std::fs::write(&gate, "").unwrap();
    retry(&run);
    // The last step fails the run; a person fixes things and retries: the run is reopened.
    until(&run, "failed");
    let record = rt.block_on(daemon.get_json(&format!("/api/runs/{run}")));
    let (trace, root) = trace_of(&record);
    collector.wait_for("the first end's root span", |s| s.id == root);
    std::fs::write(&last, "").unwrap();
    retry(&run);
    until(&run, "completed");
    let spans = collector.wait_for("the reopened part", |s| s.name == "run flaky (reopened)");

    let of_run: Vec<&Exported> = spans.iter().filter(|s| s.trace == trace).collect();
    let ids: HashSet<&str> = of_run.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), of_run.len(), "a span id sent twice: {of_run:?}");
    let roots: Vec<&&Exported> = of_run.iter().filter(|s| s.id == root).collect();
    assert_eq!(roots.len(), 1);
    assert_eq!(roots[0].attrs["baton.status"], "failed");
    let reopened = of_run
        .iter()
        .find(|s| s.name == "run flaky (reopened)")
        .unwrap();
    assert_eq!(reopened.parent, root);
    assert_eq!(reopened.attrs["baton.status"], "completed");
    let person = of_run
        .iter()
        .find(|s| s.name == "wait person")
        .unwrap_or_else(|| panic!("no wait for a person in {of_run:?}"));
    assert_eq!(person.parent, root);
    assert_eq!(person.attrs["baton.wait"], "intervention");
    assert_eq!(person.attrs["baton.step"], "gate");
    // Two attempts of each step, the failed ones marked so.
    let gates: Vec<&&Exported> = of_run.iter().filter(|s| s.name == "step gate").collect();
    assert_eq!(gates.len(), 2, "{gates:?}");
    assert!(gates.iter().any(|g| g.attrs["baton.outcome"] == "failed"));
    assert!(gates.iter().any(|g| g.attrs["baton.outcome"] == "ok"));
}
