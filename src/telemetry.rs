//! Export of traces over OTLP/HTTP (protobuf), and the daemon's own Prometheus series (model,
//! forge, sandbox). The engine's spans and series are `baton_actors::telemetry`'s.
//!
//! Spans reach the exporter through `tracing-opentelemetry`, for spans of the target
//! [`TARGET`] only: what baton logs stays in its log, and what it traces is chosen here and in
//! the engine, attribute by attribute. No attribute holds a token, a secret, or text from an
//! issue or a comment: runs are named by workflow, id, repository and number; model calls by
//! backend, model and counts; forge calls by method, route template and status.
//!
//! The exporter posts through baton's own `reqwest` client ([`OtlpHttp`]), on the daemon's
//! runtime, rather than pull a second HTTP stack into the build.

use std::sync::LazyLock;
use std::time::Duration;

use baton_actors::telemetry::{register, BoundedLabels, SECONDS_BUCKETS};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};
use serde::Deserialize;

pub use baton_actors::telemetry::{in_traced_run, render, tracing_enabled};

/// The `tracing` target of every span that is exported.
pub const TARGET: &str = "baton::trace";

/// `[telemetry]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Where to send traces: an OTLP/HTTP collector's base URL (`http://collector:4318`, to
    /// which `/v1/traces` is added) or its full traces URL. `OTEL_EXPORTER_OTLP_ENDPOINT` and
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` win. None: no traces.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the traces (default `baton`); `OTEL_SERVICE_NAME` wins.
    pub service_name: Option<String>,
}

impl Settings {
    /// The traces URL and service name, from the environment first, then the file.
    pub fn resolve(&self) -> Result<Option<(String, String)>, String> {
        self.resolve_with(|name| std::env::var(name).ok())
    }

    /// [`Settings::resolve`] with the environment read through `var`.
    pub fn resolve_with(
        &self,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<(String, String)>, String> {
        let env = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let endpoint = match env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            // The signal-specific variable is the full URL, as the specification says.
            Some(full) => Some(full),
            None => env("OTEL_EXPORTER_OTLP_ENDPOINT")
                .or_else(|| self.otlp_endpoint.clone())
                .map(|base| traces_url(&base)),
        };
        let Some(endpoint) = endpoint else {
            return Ok(None);
        };
        // The endpoint is not echoed in these errors: it could hold a password.
        let url = reqwest::Url::parse(endpoint.trim())
            .map_err(|e| format!("[telemetry] otlp_endpoint is not a URL: {e}"))?;
        if !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(
                "[telemetry] otlp_endpoint must not hold credentials, a query or a fragment: a \
                 key there would be logged with the URL; give it to the collector in a header \
                 (OTEL_EXPORTER_OTLP_HEADERS)"
                    .into(),
            );
        }
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "[telemetry] otlp_endpoint has the scheme `{}`; it must be an http:// or https:// \
                 URL (OTLP/HTTP)",
                url.scheme()
            ));
        }
        let service = env("OTEL_SERVICE_NAME")
            .or_else(|| self.service_name.clone())
            .unwrap_or_else(|| "baton".into());
        Ok(Some((url.to_string(), service)))
    }
}

/// `base` + `/v1/traces`, unless it already names the traces path.
fn traces_url(base: &str) -> String {
    let base = base.trim().trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The installed exporter: flushed and stopped by [`Exporter::shutdown`].
pub struct Exporter {
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
}

impl Exporter {
    /// Exports what is still buffered and stops. Call from outside the runtime's workers
    /// (the exporter's requests run on them).
    pub fn shutdown(self) {
        baton_actors::telemetry::set_tracing_enabled(false);
        // Longer than one export may take (the client's timeout), so the last batch is not
        // cut short by a slow collector.
        if let Err(e) = self
            .provider
            .shutdown_with_timeout(EXPORT_TIMEOUT + Duration::from_secs(2))
        {
            tracing::warn!("traces: the last export failed: {e}");
        }
    }
}

/// Builds the exporter for `endpoint`, posting on `runtime`. The layer it returns goes into the
/// process's subscriber ([`crate::logging::init`]).
pub fn exporter(
    endpoint: &str,
    service: &str,
    runtime: tokio::runtime::Handle,
) -> Result<(Exporter, opentelemetry_sdk::trace::Tracer), String> {
    let client = reqwest::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("traces: cannot build the HTTP client: {e}"))?;
    let span_exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(OtlpHttp { client, runtime })
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("traces: cannot build the OTLP exporter for {endpoint}: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_attributes([
            opentelemetry::KeyValue::new("service.name", service.to_string()),
            opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        ])
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_id_generator(RunIds::default())
        // Every run's trace is kept whole: a sampler reading OTEL_TRACES_SAMPLER would drop
        // some roots (which have no parent) and keep their steps (whose remote parent says
        // sampled). Sample in the collector instead (tail sampling).
        .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
        .with_batch_exporter(span_exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("baton");
    opentelemetry::global::set_tracer_provider(provider.clone());
    baton_actors::telemetry::set_tracing_enabled(true);
    Ok((Exporter { provider }, tracer))
}

/// Random ids, except for a run's root span, whose ids were fixed when the run was created
/// (its traceparent): the engine pins them for the one call that builds that span.
#[derive(Debug, Default)]
struct RunIds(opentelemetry_sdk::trace::RandomIdGenerator);

impl opentelemetry_sdk::trace::IdGenerator for RunIds {
    fn new_trace_id(&self) -> opentelemetry::trace::TraceId {
        baton_actors::telemetry::take_pinned_trace_id().unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> opentelemetry::trace::SpanId {
        baton_actors::telemetry::take_pinned_span_id().unwrap_or_else(|| self.0.new_span_id())
    }
}

/// The exporter's HTTP client: baton's reqwest, each request run on the daemon's runtime (the
/// batch processor calls from a thread of its own, outside any runtime).
#[derive(Debug)]
struct OtlpHttp {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpHttp {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let (parts, body) = request.into_parts();
        let task = self.runtime.spawn(async move {
            let mut builder = client.request(parts.method, parts.uri.to_string());
            for (name, value) in &parts.headers {
                builder = builder.header(name, value);
            }
            let response = builder.body(body).send().await?;
            let status = response.status();
            let bytes = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, bytes))
        });
        let result = task
            .await
            .map_err(|e| format!("the export task stopped: {e}"))
            // Without the URL: reqwest's error would name it, and the log is no place for it.
            .and_then(|r| r.map_err(|e| format!("posting traces: {}", e.without_url())));
        let refused = match &result {
            Ok((status, _)) if !status.is_success() => {
                Some(format!("the collector answered {status}"))
            }
            Ok(_) => None,
            Err(e) => Some(e.clone()),
        };
        if let Some(why) = refused {
            // The SDK drops a failed batch without a word (its own log is not built in): say
            // it here, at most once a minute, so a dead collector is seen, not a flood.
            warn_export_failed(&why);
        }
        let (status, bytes) = result?;
        Ok(http::Response::builder().status(status).body(bytes)?)
    }
}

/// Logs a failed export, at most once a minute.
fn warn_export_failed(why: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = baton_actors::now_ms();
    let last = LAST.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 60_000
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!("traces: an export failed, its spans are lost: {why}");
    }
}

/// The daemon's series beside the engine's.
pub struct Metrics {
    /// Model tokens, by backend, model and direction (`input`, `output`).
    pub model_tokens: IntCounterVec,
    /// Model spending, in US dollars, by backend and model.
    pub model_cost: prometheus::CounterVec,
    /// Forge calls, by forge kind, method and status (`ok`, an HTTP status, `error`).
    pub forge_calls: IntCounterVec,
    /// Forge call time, by forge kind and method.
    pub forge_seconds: HistogramVec,
    /// The forge's rate-limit budget left, as it last said (GitHub's `x-ratelimit-remaining`).
    pub forge_rate_limit_remaining: IntGaugeVec,
    /// Sandbox refusals, by reason.
    pub sandbox_refusals: IntCounterVec,
    /// Verification checks, by kind and result.
    pub verify_checks: IntCounterVec,
}

/// Model names come from configuration and model replies: at most this many distinct ones
/// are labels.
static MODELS: BoundedLabels = BoundedLabels::new(32);

/// The daemon's series, registered in the process's registry when first used.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    model_tokens: register(
        IntCounterVec::new(
            Opts::new(
                "baton_model_tokens_total",
                "Model tokens, by backend, model and direction (input, output).",
            ),
            &["backend", "model", "direction"],
        )
        .expect("a valid counter"),
    ),
    model_cost: register(
        prometheus::CounterVec::new(
            Opts::new(
                "baton_model_cost_dollars_total",
                "What model calls cost, in US dollars at the configured prices, by backend and \
                 model.",
            ),
            &["backend", "model"],
        )
        .expect("a valid counter"),
    ),
    forge_calls: register(
        IntCounterVec::new(
            Opts::new(
                "baton_forge_calls_total",
                "Forge calls, by forge (github, local), method and status (ok, the HTTP status \
                 of a refusal, error).",
            ),
            &["forge", "method", "status"],
        )
        .expect("a valid counter"),
    ),
    forge_seconds: register(
        HistogramVec::new(
            HistogramOpts::new(
                "baton_forge_call_duration_seconds",
                "Forge calls' time (retries included), by forge and method.",
            )
            .buckets(SECONDS_BUCKETS.to_vec()),
            &["forge", "method"],
        )
        .expect("a valid histogram"),
    ),
    forge_rate_limit_remaining: register(
        IntGaugeVec::new(
            Opts::new(
                "baton_forge_rate_limit_remaining",
                "Requests left in the forge's rate-limit window, as its last answer said.",
            ),
            &["forge"],
        )
        .expect("a valid gauge"),
    ),
    sandbox_refusals: register(
        IntCounterVec::new(
            Opts::new(
                "baton_sandbox_refusals_total",
                "Repository code the sandbox refused to run, by reason.",
            ),
            &["reason"],
        )
        .expect("a valid counter"),
    ),
    verify_checks: register(
        IntCounterVec::new(
            Opts::new(
                "baton_verify_checks_total",
                "Verification checks run, by kind (test, lint, build, format…) and result \
                 (passed, failed, error).",
            ),
            &["kind", "result"],
        )
        .expect("a valid counter"),
    ),
});

/// Makes every series exist before its first sample, for `/metrics` and the dashboard.
pub fn init_metrics() {
    baton_actors::telemetry::init_metrics();
    LazyLock::force(&METRICS);
}

/// Counts one model reply.
pub fn model_reply(backend: &str, model: &str, input: u64, output: u64, cost: f64) {
    let model = MODELS.label(model);
    let m = &*METRICS;
    m.model_tokens
        .with_label_values(&[backend, &model, "input"])
        .inc_by(input);
    m.model_tokens
        .with_label_values(&[backend, &model, "output"])
        .inc_by(output);
    if cost > 0.0 {
        m.model_cost
            .with_label_values(&[backend, &model])
            .inc_by(cost);
    }
}

/// The route template of a GitHub API path: literal segments kept, everything else (owners,
/// names, numbers, shas, branch names, query strings) replaced, so neither ids nor text from
/// users reach a span.
pub fn route_template(path: &str) -> String {
    // GitHub's path words baton's calls use; any other segment is a value.
    const WORDS: &[&str] = &[
        "repos",
        "issues",
        "comments",
        "pulls",
        "reviews",
        "requested_reviewers",
        "labels",
        "git",
        "refs",
        "heads",
        "releases",
        "tags",
        "collaborators",
        "permission",
        "user",
        "compare",
        "installation",
        "installations",
        "app",
        "access_tokens",
        "check-runs",
        "check-suites",
        "commits",
        "statuses",
        "status",
        "branches",
        "protection",
        "required_status_checks",
        "actions",
        "jobs",
        "logs",
        "runs",
        "contents",
        "merge",
        "app-manifests",
        "conversions",
        "tag",
        "latest",
        "files",
        "repositories",
    ];
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut out = String::new();
    let mut after_repos = 0;
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        if after_repos > 0 {
            out.push_str(if after_repos == 2 {
                "{owner}"
            } else {
                "{repo}"
            });
            after_repos -= 1;
            continue;
        }
        if WORDS.contains(&segment) {
            out.push_str(segment);
            if segment == "repos" {
                after_repos = 2;
            }
        } else if segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str("{number}");
        } else {
            out.push_str("{value}");
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_templates_keep_no_ids_or_names() {
        assert_eq!(
            route_template("/repos/acme/secret-project/issues/12/comments?per_page=100&page=2"),
            "/repos/{owner}/{repo}/issues/{number}/comments"
        );
        assert_eq!(
            route_template("/repos/a/b/git/refs/heads/baton/issue-7-token-ghp_x"),
            "/repos/{owner}/{repo}/git/refs/heads/{value}/{value}"
        );
        assert_eq!(
            route_template(
                "/repos/a/b/commits/0123456789abcdef0123456789abcdef01234567/check-runs"
            ),
            "/repos/{owner}/{repo}/commits/{value}/check-runs"
        );
        assert_eq!(
            route_template("/app/installations/99/access_tokens"),
            "/app/installations/{number}/access_tokens"
        );
    }

    #[test]
    fn endpoints_get_the_traces_path_and_refuse_credentials() {
        let s = |e: &str| Settings {
            otlp_endpoint: Some(e.into()),
            service_name: None,
        };
        let none = |_: &str| None;
        assert_eq!(
            s("http://127.0.0.1:4318").resolve_with(none).unwrap(),
            Some(("http://127.0.0.1:4318/v1/traces".into(), "baton".into()))
        );
        assert_eq!(
            s("http://c:4318/v1/traces/")
                .resolve_with(none)
                .unwrap()
                .unwrap()
                .0,
            "http://c:4318/v1/traces"
        );
        let err = s("http://user:pw@c:4318").resolve_with(none).unwrap_err();
        assert!(err.contains("credentials") && !err.contains("pw"), "{err}");
        let err = s("http://c:4318/?api_key=hunter2")
            .resolve_with(none)
            .unwrap_err();
        assert!(err.contains("query") && !err.contains("hunter2"), "{err}");
        assert!(s("grpc://c:4317")
            .resolve_with(none)
            .unwrap_err()
            .contains("http://"));
        assert!(s("not a url")
            .resolve_with(none)
            .unwrap_err()
            .contains("not a URL"));
        // The variables win over the file, the traces one as the full URL.
        let env = |name: &str| match name {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://env:4318".to_string()),
            "OTEL_SERVICE_NAME" => Some("baton-eu".to_string()),
            _ => None,
        };
        assert_eq!(
            s("http://file:4318").resolve_with(env).unwrap(),
            Some(("http://env:4318/v1/traces".into(), "baton-eu".into()))
        );
        let traces = |name: &str| {
            (name == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").then(|| "http://t:1/x".to_string())
        };
        assert_eq!(
            s("http://file:4318")
                .resolve_with(traces)
                .unwrap()
                .unwrap()
                .0,
            "http://t:1/x"
        );
        assert_eq!(Settings::default().resolve_with(none).unwrap(), None);
    }
}
