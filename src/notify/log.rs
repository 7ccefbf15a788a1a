//! The log sink: one `info` line per delivered update of every run, when its headline
//! changed (`RUST_LOG=baton=info` shows them).

use baton_actors::{DeliveryState, RunRecord, Sink, SinkFuture, Update, Workflow};

/// Reports every run to the log.
#[derive(Debug, Default)]
pub struct LogSink;

impl Sink for LogSink {
    fn name(&self) -> &str {
        "log"
    }

    fn target(&self, _run: &RunRecord, _workflow: &Workflow) -> Option<String> {
        // One target: the log's pace is the same for every run.
        Some("log".into())
    }

    fn deliver<'a>(
        &'a self,
        update: &'a Update,
        previous: Option<&'a DeliveryState>,
    ) -> SinkFuture<'a> {
        Box::pin(async move {
            let headline = super::render::headline(update);
            if previous.is_none_or(|p| p.body != headline) {
                tracing::info!(
                    run = %update.run.id,
                    workflow = %update.run.workflow_id,
                    status = %update.run.status,
                    "{headline}"
                );
            }
            Ok(DeliveryState {
                body: headline,
                ..DeliveryState::default()
            })
        })
    }

    fn durable(&self) -> bool {
        false
    }
}
