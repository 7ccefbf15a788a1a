//! The terminal sink: a live display like cargo's when stderr is a terminal (a bar per run,
//! finished steps printed above it), plain lines otherwise (a log file, CI, a pipe).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use baton_actors::{DeliveryState, RunRecord, Sink, SinkFuture, StepStatus, Update, Workflow};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

/// Reports every run it is given on stderr.
pub struct TerminalSink {
    /// The live display, when stderr is a terminal.
    live: Option<MultiProgress>,
    /// One bar per run in progress (live display only).
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Default for TerminalSink {
    fn default() -> Self {
        Self::new()
    }
}

impl TerminalSink {
    /// Live when stderr is a terminal, plain lines otherwise.
    pub fn new() -> Self {
        Self::with_live(std::io::stderr().is_terminal())
    }

    /// Live display or plain lines, as asked.
    pub fn with_live(live: bool) -> Self {
        TerminalSink {
            live: live.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn print(&self, line: &str) {
        match &self.live {
            Some(live) => {
                let _ = live.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    fn bar(&self, live: &MultiProgress, update: &Update) -> ProgressBar {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        bars.entry(update.run.id.clone())
            .or_insert_with(|| {
                let bar = live.add(ProgressBar::new(update.run.steps.len() as u64));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner:.green} {prefix:.bold} [{bar:20}] {pos}/{len} {wide_msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(update.run.workflow_id.clone());
                bar.enable_steady_tick(std::time::Duration::from_millis(120));
                bar
            })
            .clone()
    }
}

/// Steps whose line is printed once they are done: finished, failed, skipped or undone.
fn settled(status: StepStatus) -> bool {
    matches!(
        status,
        StepStatus::Completed | StepStatus::Failed | StepStatus::Skipped | StepStatus::Compensated
    )
}

impl Sink for TerminalSink {
    fn name(&self) -> &str {
        "terminal"
    }

    fn target(&self, _run: &RunRecord, _workflow: &Workflow) -> Option<String> {
        Some("terminal".into())
    }

    fn deliver<'a>(
        &'a self,
        update: &'a Update,
        previous: Option<&'a DeliveryState>,
    ) -> SinkFuture<'a> {
        Box::pin(async move {
            let run = &update.run;
            // Steps already printed (kept in the delivery state, so nothing prints twice).
            let mut shown: Vec<u64> = previous
                .and_then(|p| p.extra.as_array())
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            for (i, step) in run.steps.iter().enumerate() {
                if settled(step.status) && !shown.contains(&(i as u64)) {
                    let mark = match step.status {
                        // Checks that ran and failed: never a tick.
                        StepStatus::Completed if super::render::failed_checks(step) => "✗",
                        StepStatus::Completed => "✓",
                        StepStatus::Failed => "✗",
                        _ => "-",
                    };
                    self.print(&format!("  {mark} {}", super::render::step_line(update, i)));
                    shown.push(i as u64);
                }
            }
            let headline = super::render::headline(update);
            let done = run.steps.iter().filter(|s| settled(s.status)).count() as u64;
            match &self.live {
                Some(live) => {
                    let bar = self.bar(live, update);
                    bar.set_length(run.steps.len() as u64);
                    bar.set_position(done);
                    bar.set_message(headline.clone());
                    if update.is_final {
                        bar.finish_and_clear();
                        self.bars
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&run.id);
                    }
                }
                None if previous.is_none_or(|p| p.body != headline) && !update.is_final => {
                    self.print(&format!("{}: {headline}", run.workflow_id));
                }
                None => {}
            }
            Ok(DeliveryState {
                message_id: Value::Null,
                body: headline,
                extra: json!(shown),
            })
        })
    }

    fn durable(&self) -> bool {
        false
    }
}
