//! `StepActor`: one per attempt (and one per compensation). Runs the action under its
//! timeout and cancellation token and reports to its parent `RunActor`. A panic in the
//! action is caught by ractor and reaches the parent as `ActorFailed`; the parent turns it
//! into a failure of the attempt.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::Value;

use crate::action::{Action, ActionContext, ActionError};
use crate::messages::RunMsg;
use crate::procs::{self, ProcessGroups};

/// What the attempt is for.
#[derive(Debug, Clone, Copy)]
pub enum StepWork {
    /// An attempt of a step.
    Attempt {
        /// Step index.
        step: usize,
        /// Attempt number.
        attempt: u32,
    },
    /// A step's compensation.
    Compensation {
        /// Step index.
        step: usize,
    },
}

/// Arguments of a step actor.
pub struct StepArgs {
    /// The action to run.
    pub action: Arc<dyn Action>,
    /// Its context.
    pub ctx: ActionContext,
    /// The attempt's time limit.
    pub timeout: Option<Duration>,
    /// What it is.
    pub work: StepWork,
    /// Where the result goes.
    pub parent: ActorRef<RunMsg>,
    /// Where the attempt's processes are recorded.
    pub procs: Arc<ProcessGroups>,
    /// The attempt's span ([`crate::telemetry::step_span`]): what the action does nests in it.
    pub span: tracing::Span,
}

/// The actor.
pub struct StepActor;

impl Actor for StepActor {
    type Msg = ();
    type State = Option<StepArgs>;
    type Arguments = StepArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: StepArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(Some(args))
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some(args) = state.take() else {
            return Ok(());
        };
        let cancel = args.ctx.cancel.clone();
        let owner = args.ctx.idempotency_key.clone();
        let span = args.span;
        let run = tracing::Instrument::instrument(
            procs::scope(args.procs, owner, args.action.run(args.ctx)),
            span.clone(),
        );
        let result: Result<Value, ActionError> = tokio::select! {
            r = async {
                match args.timeout {
                    Some(limit) => tokio::time::timeout(limit, run).await.unwrap_or_else(|_| {
                        Err(ActionError::retryable(format!(
                            "timed out after {}",
                            crate::definition::Dur(limit)
                        )))
                    }),
                    None => run.await,
                }
            } => r,
            _ = cancel.cancelled() => Err(ActionError::fatal("cancelled")),
        };
        crate::telemetry::end_step_span(&span, result.is_ok());
        drop(span);
        let msg = match args.work {
            StepWork::Attempt { step, attempt } => RunMsg::StepDone {
                step,
                attempt,
                result,
            },
            StepWork::Compensation { step } => RunMsg::CompensationDone {
                step,
                result: result.map(|_| ()).map_err(|e| e.message),
            },
        };
        let _ = args.parent.send_message(msg);
        myself.stop(None);
        Ok(())
    }
}
