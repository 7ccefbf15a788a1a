//! Inline buttons: which ones a run's state offers, and their callback data.
//!
//! Callback data is `<action letter>:<run id>:<point>` (at most 64 bytes, Telegram's limit).
//! The point is the run's count of step entries when the button was drawn: any step entered
//! since (the approval let the run go on, the retry ran the step again) makes the button
//! stale, so a second press, or a press on an old message, does nothing and says so.

use baton_actors::{RollbackRequest, RunRecord, RunStatus, WaitKind};

use crate::backend::Command;

/// Telegram's limit on callback data.
pub const MAX_DATA: usize = 64;

/// What a button does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Approve the wait.
    Approve,
    /// Reject the wait.
    Reject,
    /// Run the failed step again.
    Retry,
    /// Skip the failed step.
    Skip,
    /// Abort the run (undoing what the workflow's `rollback_on_abort` says).
    Abort,
    /// Roll the run back, softly (what can be undone without losing history).
    Rollback,
    /// Cancel the running run.
    Cancel,
}

impl Action {
    const ALL: [Action; 7] = [
        Action::Approve,
        Action::Reject,
        Action::Retry,
        Action::Skip,
        Action::Abort,
        Action::Rollback,
        Action::Cancel,
    ];

    fn letter(self) -> char {
        match self {
            Action::Approve => 'a',
            Action::Reject => 'j',
            Action::Retry => 'r',
            Action::Skip => 's',
            Action::Abort => 'x',
            Action::Rollback => 'b',
            Action::Cancel => 'c',
        }
    }

    /// The button's label.
    pub fn label(self) -> &'static str {
        match self {
            Action::Approve => "Approve",
            Action::Reject => "Reject",
            Action::Retry => "Retry",
            Action::Skip => "Skip",
            Action::Abort => "Abort",
            Action::Rollback => "Rollback",
            Action::Cancel => "Cancel",
        }
    }

    /// What a second press is told.
    pub fn past(self) -> &'static str {
        match self {
            Action::Approve => "approved",
            Action::Reject => "rejected",
            Action::Retry => "retried",
            Action::Skip => "skipped",
            Action::Abort => "aborted",
            Action::Rollback => "rolled back",
            Action::Cancel => "cancelled",
        }
    }

    /// The engine command it sends (the same the CLI and the API send).
    pub fn command(self) -> Command {
        match self {
            Action::Approve => Command::Approve,
            Action::Reject => Command::Reject,
            Action::Retry => Command::Retry,
            Action::Skip => Command::Skip,
            Action::Abort => Command::Abort { mode: None },
            Action::Rollback => Command::Rollback(RollbackRequest::Soft),
            Action::Cancel => Command::Cancel,
        }
    }
}

/// A pressed button, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Press {
    /// What it does.
    pub action: Action,
    /// The run it acts on.
    pub run: String,
    /// The run's step entries when it was drawn.
    pub point: u64,
}

/// Callback data this bot did not write (forged, from another bot, or from an old version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a button of this bot")]
pub struct NotOurButton;

impl Press {
    /// The callback data.
    pub fn encode(&self) -> String {
        format!("{}:{}:{}", self.action.letter(), self.run, self.point)
    }

    /// Reads callback data; an error says what is wrong with it.
    pub fn decode(data: &str) -> Result<Press, NotOurButton> {
        let mut parts = data.split(':');
        let (Some(letter), Some(run), Some(point), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(NotOurButton);
        };
        let action = Action::ALL
            .into_iter()
            .find(|a| letter.len() == 1 && letter.starts_with(a.letter()))
            .ok_or(NotOurButton)?;
        let run_ok = run.starts_with("run_")
            && run.len() <= 40
            && run.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !run_ok {
            return Err(NotOurButton);
        }
        let point = point.parse().map_err(|_| NotOurButton)?;
        Ok(Press {
            action,
            run: run.to_string(),
            point,
        })
    }
}

/// The actions a run's state offers: Approve and Reject at a wait for approval; Retry, Skip,
/// Abort and Rollback after a failure; Cancel while running; none once it has ended well.
pub fn actions(run: &RunRecord) -> Vec<Action> {
    match run.status {
        RunStatus::Waiting => match run.waiting_for.as_ref().map(|w| (w.kind, w.name.as_str())) {
            Some((WaitKind::Approval, _)) | Some((WaitKind::Signal, "approve")) => {
                vec![Action::Approve, Action::Reject]
            }
            Some((WaitKind::Intervention, _)) => {
                vec![Action::Retry, Action::Skip, Action::Abort, Action::Rollback]
            }
            _ => vec![Action::Cancel],
        },
        RunStatus::Failed => vec![Action::Retry, Action::Rollback],
        RunStatus::Running | RunStatus::Pending => vec![Action::Cancel],
        RunStatus::Completed | RunStatus::Cancelled => Vec::new(),
    }
}

/// The buttons of a run's status message, as (label, callback data), in one row.
pub fn buttons(run: &RunRecord) -> Vec<(&'static str, String)> {
    actions(run)
        .into_iter()
        .map(|action| {
            let press = Press {
                action,
                run: run.id.clone(),
                point: run.entries,
            };
            (action.label(), press.encode())
        })
        .collect()
}

/// Whether `press` still applies to `run` as it stands: drawn at the same point, and an
/// action the state offers.
pub fn is_current(press: &Press, run: &RunRecord) -> bool {
    press.point == run.entries && actions(run).contains(&press.action)
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_actors::WaitingFor;

    fn run(status: RunStatus, wait: Option<WaitKind>) -> RunRecord {
        let mut rec = RunRecord::new(
            "run_01jd5x2k7m9q4r8t6v3w5y7z2a".into(),
            ["build".to_string(), "gate".to_string()].into_iter(),
            0,
        );
        rec.status = status;
        rec.entries = 2;
        rec.waiting_for = wait.map(|kind| WaitingFor {
            kind,
            name: "approve".into(),
            step: "gate".into(),
            since: 0,
            until: None,
        });
        rec
    }

    #[test]
    fn buttons_follow_the_state() {
        use Action::*;
        let cases = [
            (
                RunStatus::Waiting,
                Some(WaitKind::Approval),
                vec![Approve, Reject],
            ),
            (
                RunStatus::Waiting,
                Some(WaitKind::Signal),
                vec![Approve, Reject],
            ),
            (
                RunStatus::Waiting,
                Some(WaitKind::Intervention),
                vec![Retry, Skip, Abort, Rollback],
            ),
            (RunStatus::Waiting, Some(WaitKind::Retry), vec![Cancel]),
            (RunStatus::Running, None, vec![Cancel]),
            (RunStatus::Failed, None, vec![Retry, Rollback]),
            (RunStatus::Completed, None, vec![]),
            (RunStatus::Cancelled, None, vec![]),
        ];
        for (status, wait, expected) in cases {
            assert_eq!(actions(&run(status, wait)), expected, "{status:?} {wait:?}");
        }
    }

    #[test]
    fn data_round_trips_within_the_limit() {
        let rec = run(RunStatus::Waiting, Some(WaitKind::Intervention));
        for (_, data) in buttons(&rec) {
            assert!(data.len() <= MAX_DATA, "{data}");
            let press = Press::decode(&data).unwrap();
            assert_eq!(press.encode(), data);
            assert!(is_current(&press, &rec));
        }
    }

    #[test]
    fn stale_and_foreign_data() {
        let rec = run(RunStatus::Waiting, Some(WaitKind::Approval));
        let mut press = Press::decode(&buttons(&rec)[0].1).unwrap();
        assert!(is_current(&press, &rec));
        press.point = 1;
        assert!(!is_current(&press, &rec), "drawn before a step was entered");
        let retry = Press {
            action: Action::Retry,
            run: rec.id.clone(),
            point: rec.entries,
        };
        assert!(!is_current(&retry, &rec), "not an action of this state");
        for bad in [
            "",
            "a",
            "a:run_1",
            "z:run_1:3",
            "aa:run_1:3",
            "a:run_1:x",
            "a:../etc:3",
            "a:run_1:3:4",
        ] {
            assert!(Press::decode(bad).is_err(), "{bad:?}");
        }
    }
}
