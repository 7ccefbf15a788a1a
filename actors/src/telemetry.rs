//! What an operator sees of the engine: Prometheus series and OpenTelemetry spans.
//!
//! **Metrics.** One registry per process ([`registry`]), as Prometheus expects of a process it
//! scrapes; the daemon's `/metrics` writes it out. Every label is bounded: workflow ids and
//! action names come from the registered definitions, lanes from the repositories served,
//! outcomes from a short list (unknown words count as `other`). A run id is never a label.
//!
//! **Traces.** Every run carries a W3C `traceparent` from its creation (stored in its
//! `RunCreated` event and its head, on both stores), so a run that resumes after a crash, or
//! on another daemon of the same database, continues the same trace. The traceparent's span
//! id names the run's root span; that span is exported once, when the run ends, with the
//! run's whole time (`created_at` → `completed_at`). Step attempts are `tracing` spans whose
//! OpenTelemetry parent is that root, so what an action does inside them (model calls, forge
//! calls, verification) nests below them through `tracing-opentelemetry`. Waits (admission,
//! a signal such as an approval) are exported as spans with their recorded start and end.
//!
//! Nothing here costs more than an atomic load while no exporter is installed
//! ([`set_tracing_enabled`]): no span is built, no attribute formatted.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::record::{Event, EventKind, Millis, RunRecord, RunStatus, WaitKind, WaitingFor};

/// The process's registry: the engine's series and those the daemon adds (model, forge,
/// sandbox).
pub fn registry() -> &'static Registry {
    static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);
    &REGISTRY
}

/// Registers a series in [`registry`]. A name registered twice is a programming error caught
/// by the first scrape's test, not something to recover from at run time.
pub fn register<C: prometheus::core::Collector + Clone + 'static>(collector: C) -> C {
    let mut names = SERIES.lock().unwrap_or_else(|e| e.into_inner());
    names.extend(collector.desc().iter().map(|d| d.fq_name.clone()));
    drop(names);
    if let Err(e) = registry().register(Box::new(collector.clone())) {
        tracing::error!(error = %e, "a metric could not be registered");
    }
    collector
}

static SERIES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The names of every series registered so far, whether or not it has a sample yet (a
/// family without one is left out of [`render`]): what a dashboard may name.
pub fn series_names() -> Vec<String> {
    SERIES.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Buckets for work that takes from a fraction of a second to a few hours (steps, waits for
/// admission).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.05, 0.25, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 10800.0,
];

/// Buckets for whole runs, which may wait days for a person or for CI (up to a week).
pub const RUN_SECONDS_BUCKETS: &[f64] = &[
    1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 10800.0, 21600.0, 43200.0, 86400.0, 259200.0,
    604800.0,
];

/// Buckets for calls to another service (a forge's API).
pub const CALL_SECONDS_BUCKETS: &[f64] =
    &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Everything in `registry()` as Prometheus text (format 0.0.4).
pub fn render() -> String {
    use prometheus::Encoder as _;
    let mut out = Vec::new();
    // Encoding to a Vec fails only on a malformed family, which `register` never makes.
    let _ = prometheus::TextEncoder::new().encode(&registry().gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).expect("a valid counter"))
}

fn histogram(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    register(
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        )
        .expect("a valid histogram"),
    )
}

/// The engine's series.
pub(crate) struct EngineMetrics {
    runs_started: IntCounterVec,
    runs_ended: IntCounterVec,
    run_seconds: HistogramVec,
    step_seconds: HistogramVec,
    pub(crate) queue_depth: IntGaugeVec,
    pub(crate) queue_wait: HistogramVec,
    pub(crate) notifier_deliveries: IntCounterVec,
    pub(crate) notifier_coalesced: IntCounterVec,
}

pub(crate) static ENGINE: LazyLock<EngineMetrics> = LazyLock::new(|| EngineMetrics {
    runs_started: counter(
        "baton_runs_started_total",
        "Runs that began executing, by workflow.",
        &["workflow"],
    ),
    runs_ended: counter(
        "baton_runs_finished_total",
        "Runs that ended, by workflow, status (completed, failed, cancelled) and the outcome \
         their state names (verified, unverified, could_not_try, no_checks; none; other). A \
         run reopened after it ended counts again when it ends again.",
        &["workflow", "status", "outcome"],
    ),
    run_seconds: histogram(
        "baton_run_duration_seconds",
        "Runs' time from creation to their end, by workflow and status.",
        &["workflow", "status"],
        RUN_SECONDS_BUCKETS,
    ),
    step_seconds: histogram(
        "baton_step_duration_seconds",
        "Step attempts' time, by workflow, action and result (ok, failed).",
        &["workflow", "action", "result"],
        SECONDS_BUCKETS,
    ),
    queue_depth: register(
        IntGaugeVec::new(
            Opts::new(
                "baton_admission_queue_depth",
                "Runs waiting for admission, by lane (the repository; none for runs about no \
                 repository).",
            ),
            &["lane"],
        )
        .expect("a valid gauge"),
    ),
    queue_wait: histogram(
        "baton_admission_wait_seconds",
        "Time runs waited for admission before they started, by lane.",
        &["lane"],
        SECONDS_BUCKETS,
    ),
    notifier_deliveries: counter(
        "baton_notifier_deliveries_total",
        "Progress updates delivered to a channel (forge comment, chat, log), by sink and result.",
        &["sink", "result"],
    ),
    notifier_coalesced: counter(
        "baton_notifier_coalesced_total",
        "Progress updates folded into a later one before delivery, by sink.",
        &["sink"],
    ),
});

/// Registers the engine's series. A family appears on `/metrics` with its first sample (the
/// text format has no way to show a labelled family with no series).
pub fn init_metrics() {
    LazyLock::force(&ENGINE);
}

/// Counts the wait of a new run admitted now, queued since `queued_at`.
pub(crate) fn admission_waited(repo: Option<&str>, queued_at: std::time::Instant) {
    ENGINE
        .queue_wait
        .with_label_values(&[lane_label(repo)])
        .observe(queued_at.elapsed().as_secs_f64());
}

/// The lane label of a repository (`none` for runs about none).
pub(crate) fn lane_label(repo: Option<&str>) -> &str {
    repo.unwrap_or("none")
}

/// An outcome word as a label: the known words pass, any other is `other`, so a workflow
/// that writes free text into `outcome` cannot grow the series without bound.
fn outcome_label(word: Option<&str>) -> &'static str {
    // The outcomes baton's workflows write (issue_to_pr, pr_review); others are `other`.
    const KNOWN: &[&str] = &["verified", "unverified", "could_not_try", "no_checks"];
    match word {
        None => "none",
        Some(word) => KNOWN
            .iter()
            .find(|k| **k == word)
            .copied()
            .unwrap_or("other"),
    }
}

fn outcome_of(rec: &RunRecord) -> Option<&str> {
    rec.state.get("outcome").and_then(|v| v.as_str())
}

/// Records what a durable transition changed: called once per committed batch, with what the
/// run waited for before it (`waited`), the run as it now stands and the events that made it so.
pub(crate) fn observe(
    wf: &crate::definition::Workflow,
    waited: Option<&WaitingFor>,
    rec: &RunRecord,
    events: &[Event],
) {
    let m = &*ENGINE;
    let workflow = wf.id();
    for event in events {
        match &event.kind {
            EventKind::RunStarted => {
                m.runs_started.with_label_values(&[workflow]).inc();
                trace_wait(
                    rec,
                    "admission",
                    "admission",
                    None,
                    rec.created_at,
                    event.at,
                );
            }
            EventKind::StepCompleted { step, .. } | EventKind::StepFailed { step, .. } => {
                let Some(started) = rec.steps.get(*step).and_then(|s| s.started_at) else {
                    continue;
                };
                let action = wf
                    .steps()
                    .get(*step)
                    .and_then(|s| s.action.as_deref())
                    .unwrap_or("none");
                let result = if matches!(event.kind, EventKind::StepCompleted { .. }) {
                    "ok"
                } else {
                    "failed"
                };
                m.step_seconds
                    .with_label_values(&[workflow, action, result])
                    .observe(seconds_between(started, event.at));
            }
            EventKind::RunCompleted
            | EventKind::RunFailed { .. }
            | EventKind::RunCancelled { .. } => {
                let status = rec.status.as_str();
                m.runs_ended
                    .with_label_values(&[workflow, status, outcome_label(outcome_of(rec))])
                    .inc();
                m.run_seconds
                    .with_label_values(&[workflow, status])
                    .observe(seconds_between(rec.created_at, event.at));
            }
            _ => {}
        }
    }
    // A wait that this transition ended, however it ended (its signal, a retry or skip of a
    // failure, a cancel): one span over the whole of it. The wait's start is the run's own
    // record of it, so a wait step entered again gets a span of its own.
    if let (Some(wait), Some(last)) = (waited, events.last()) {
        let still = rec
            .waiting_for
            .as_ref()
            .is_some_and(|now| now.since == wait.since && now.step == wait.step);
        if !still {
            let (name, kind) = match wait.kind {
                WaitKind::Signal | WaitKind::Approval => (wait.name.as_str(), "signal"),
                WaitKind::Intervention => ("person", "intervention"),
                WaitKind::Retry => ("retry", "retry"),
            };
            trace_wait(rec, name, kind, Some(wait), wait.since, last.at);
        }
    }
    if events.iter().any(|e| {
        matches!(
            e.kind,
            EventKind::RunCompleted | EventKind::RunFailed { .. } | EventKind::RunCancelled { .. }
        )
    }) {
        trace_run_end(rec);
    }
}

fn seconds_between(from: Millis, to: Millis) -> f64 {
    to.saturating_sub(from) as f64 / 1000.0
}

static TRACING: AtomicBool = AtomicBool::new(false);

/// Turns span export on: called once the daemon has installed an OpenTelemetry exporter as
/// the global tracer provider and the `tracing-opentelemetry` layer.
pub fn set_tracing_enabled(on: bool) {
    TRACING.store(on, Ordering::Relaxed);
}

/// Whether spans are exported.
pub fn tracing_enabled() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// A new run's traceparent (`00-<trace id>-<root span id>-01`).
pub(crate) fn new_traceparent() -> String {
    let trace = loop {
        let t = fastrand::u128(..);
        if t != 0 {
            break t;
        }
    };
    let span = loop {
        let s = fastrand::u64(..);
        if s != 0 {
            break s;
        }
    };
    format!("00-{trace:032x}-{span:016x}-01")
}

/// The trace id and root span id of a traceparent; `None` for one that is not W3C's shape.
pub fn parse_traceparent(text: &str) -> Option<(TraceId, SpanId)> {
    let mut parts = text.split('-');
    let (version, trace, span) = (parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || trace.len() != 32 || span.len() != 16 {
        return None;
    }
    let trace = TraceId::from_hex(trace)
        .ok()
        .filter(|t| *t != TraceId::INVALID)?;
    let span = SpanId::from_hex(span)
        .ok()
        .filter(|s| *s != SpanId::INVALID)?;
    Some((trace, span))
}

/// The context whose parent is the run's root span (remote: exported by whichever process
/// ends the run).
pub fn run_context(rec: &RunRecord) -> Option<Context> {
    let (trace, span) = parse_traceparent(rec.traceparent.as_deref()?)?;
    let parent = SpanContext::new(
        trace,
        span,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    Some(Context::new().with_remote_span_context(parent))
}

/// The attributes every span of a run carries: what it is and what it is about. Never its
/// input or state: those hold issue text.
pub fn run_attributes(rec: &RunRecord) -> Vec<KeyValue> {
    let mut attrs = vec![
        KeyValue::new("baton.workflow", rec.workflow_id.clone()),
        KeyValue::new("baton.run_id", rec.id.clone()),
    ];
    if let Some(subject) = &rec.subject {
        attrs.push(KeyValue::new("baton.repository", subject.repo.clone()));
        if let Some(number) = subject.number {
            attrs.push(KeyValue::new("baton.number", number as i64));
        }
    }
    attrs
}

fn tracer() -> opentelemetry::global::BoxedTracer {
    opentelemetry::global::tracer("baton")
}

fn system_time(ms: Millis) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Exports a wait of `rec` that has ended, as a child of the run's root span. Nothing is
/// built while no exporter is installed.
fn trace_wait(
    rec: &RunRecord,
    name: &str,
    kind: &'static str,
    wait: Option<&WaitingFor>,
    from: Millis,
    to: Millis,
) {
    if !tracing_enabled() {
        return;
    }
    let Some(cx) = run_context(rec) else { return };
    let mut attrs = run_attributes(rec);
    attrs.push(KeyValue::new("baton.wait", kind));
    if let Some(wait) = wait {
        attrs.push(KeyValue::new("baton.step", wait.step.clone()));
        attrs.push(KeyValue::new("baton.signal", wait.name.clone()));
    }
    attrs.push(KeyValue::new(
        "baton.wait_seconds",
        seconds_between(from, to),
    ));
    let name = if kind == "admission" {
        "admission".to_string()
    } else {
        format!("wait {name}")
    };
    let mut span = tracer()
        .span_builder(name)
        .with_kind(SpanKind::Internal)
        .with_start_time(system_time(from))
        .with_attributes(attrs)
        .start_with_context(&tracer(), &cx);
    span.end_with_timestamp(system_time(to));
}

/// Exports the run's root span, now that it has ended: its own ids, its whole time. A run
/// reopened after it ended (its root already exported then) gets a `run … (reopened)` span
/// over the reopened part instead, as a child of that root, so no span id is sent twice.
fn trace_run_end(rec: &RunRecord) {
    if !tracing_enabled() {
        return;
    }
    let Some((trace, span_id)) = rec.traceparent.as_deref().and_then(parse_traceparent) else {
        return;
    };
    let mut attrs = run_attributes(rec);
    attrs.push(KeyValue::new("baton.status", rec.status.as_str()));
    if let Some(outcome) = outcome_of(rec) {
        // The same bounded word as the metric's, so a trace search by outcome matches a
        // dashboard's.
        attrs.push(KeyValue::new("baton.outcome", outcome_label(Some(outcome))));
    }
    let end = system_time(rec.completed_at.unwrap_or_else(crate::now_ms));
    let mut span = match (rec.reopened_at, run_context(rec)) {
        (Some(reopened), Some(root)) => tracer()
            .span_builder(format!("run {} (reopened)", rec.workflow_id))
            .with_kind(SpanKind::Internal)
            .with_start_time(system_time(reopened))
            .with_attributes(attrs)
            .start_with_context(&tracer(), &root),
        _ => {
            let builder = tracer()
                .span_builder(format!("run {}", rec.workflow_id))
                .with_kind(SpanKind::Internal)
                .with_start_time(system_time(rec.created_at))
                .with_attributes(attrs);
            // The SDK takes a root span's ids from its id generator, which takes these (see
            // `take_pinned_trace_id`): pinned around the one synchronous call that builds it,
            // and unpinned by the guard even if that call panics.
            let _pin = Pin::new(trace, span_id);
            builder.start_with_context(&tracer(), &Context::new())
        }
    };
    if rec.status == RunStatus::Failed {
        span.set_status(Status::error(
            "the run failed (its error is in its events, not in its trace)",
        ));
    }
    span.end_with_timestamp(end);
}

/// The ids the next root span built on this thread takes, until dropped.
struct Pin;

impl Pin {
    fn new(trace: TraceId, span: SpanId) -> Pin {
        PINNED.with(|p| p.set((Some(trace), Some(span))));
        Pin
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        PINNED.with(|p| p.set((None, None)));
    }
}

thread_local! {
    static PINNED: std::cell::Cell<(Option<TraceId>, Option<SpanId>)> =
        const { std::cell::Cell::new((None, None)) };
}

/// The trace id the span being built on this thread must have, if it is a run's root: for
/// the exporter's id generator, which otherwise draws a random one.
pub fn take_pinned_trace_id() -> Option<TraceId> {
    PINNED.with(|p| {
        let (trace, span) = p.get();
        p.set((None, span));
        trace
    })
}

/// The span id counterpart of [`take_pinned_trace_id`].
pub fn take_pinned_span_id() -> Option<SpanId> {
    PINNED.with(|p| {
        let (trace, span) = p.get();
        p.set((trace, None));
        span
    })
}

/// The span of one step attempt, a child of the run's root; disabled (free) while no
/// exporter is installed.
pub(crate) fn step_span(rec: &RunRecord, step: &str, action: &str, attempt: u32) -> tracing::Span {
    if !tracing_enabled() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: "baton::trace",
        "step",
        otel.name = format!("step {step}"),
        baton.workflow = %rec.workflow_id,
        baton.run_id = %rec.id,
        baton.repository = rec.subject.as_ref().map(|s| s.repo.as_str()),
        baton.number = rec.subject.as_ref().and_then(|s| s.number),
        baton.step = step,
        baton.action = action,
        baton.attempt = attempt,
        baton.outcome = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if let Some(cx) = run_context(rec) {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let _ = span.set_parent(cx);
    }
    span
}

/// Whether a span made now would be part of a run's trace: spans are exported, and one is
/// current (a step attempt or something below it). A forge call by the notifier or a webhook
/// handler is outside every run: a span for it would be a trace of its own, one per call.
pub fn in_traced_run() -> bool {
    tracing_enabled() && !tracing::Span::current().is_none()
}

/// Records an attempt's outcome on its span.
pub(crate) fn end_step_span(span: &tracing::Span, ok: bool) {
    if span.is_disabled() {
        return;
    }
    span.record("baton.outcome", if ok { "ok" } else { "failed" });
    if !ok {
        span.record("otel.status_code", "ERROR");
    }
}

/// Labels seen so far for a bounded label whose values come from outside (a model name from
/// configuration): past `limit` distinct values, new ones count as `other`.
pub struct BoundedLabels {
    seen: Mutex<Option<HashSet<String>>>,
    limit: usize,
}

impl BoundedLabels {
    /// A set that admits `limit` distinct values.
    pub const fn new(limit: usize) -> BoundedLabels {
        BoundedLabels {
            seen: Mutex::new(None),
            limit,
        }
    }

    /// `value`, or `other` once `limit` other values were seen.
    pub fn label(&self, value: &str) -> String {
        let mut guard = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let seen = guard.get_or_insert_with(HashSet::new);
        if seen.contains(value) {
            return value.to_string();
        }
        if seen.len() < self.limit {
            seen.insert(value.to_string());
            return value.to_string();
        }
        "other".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_w3c_and_parse_back() {
        let text = new_traceparent();
        assert_eq!(text.len(), 55, "{text}");
        let (trace, span) = parse_traceparent(&text).expect("parses");
        assert_eq!(text, format!("00-{trace}-{span}-01"));
        assert!(parse_traceparent("00-0000-1111-01").is_none());
        assert!(
            parse_traceparent(&format!("00-{}-{}-01", "0".repeat(32), "1".repeat(16))).is_none()
        );
        assert!(
            parse_traceparent(&format!("01-{}-{}-01", "a".repeat(32), "1".repeat(16))).is_none()
        );
    }

    #[test]
    fn outcome_words_outside_the_known_ones_count_as_other() {
        assert_eq!(outcome_label(Some("verified")), "verified");
        assert_eq!(outcome_label(Some("issue-1234-text")), "other");
        assert_eq!(outcome_label(None), "none");
    }

    #[test]
    fn bounded_labels_stop_growing_at_their_limit() {
        let labels = BoundedLabels::new(2);
        assert_eq!(labels.label("a"), "a");
        assert_eq!(labels.label("b"), "b");
        assert_eq!(labels.label("c"), "other");
        assert_eq!(labels.label("a"), "a");
    }

    #[test]
    fn the_engine_series_render_as_prometheus_text() {
        init_metrics();
        ENGINE
            .runs_started
            .with_label_values(&["telemetry_render_test"])
            .inc();
        let text = render();
        assert!(
            text.contains("baton_runs_started_total{workflow=\"telemetry_render_test\"} 1"),
            "{text}"
        );
        assert!(series_names().contains(&"baton_step_duration_seconds".to_string()));
    }
}
