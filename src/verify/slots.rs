//! `[limits] max_verifications`: one semaphore for the whole process bounds how many test
//! suites run at once, whichever workflow or action asks (`verify`, issue_to_pr, pr_review,
//! revise). On a small machine, twenty runs must not mean twenty cargo builds at once.

use std::sync::{Arc, OnceLock};

use baton_actors::Progress;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

static SLOTS: OnceLock<(usize, Arc<Semaphore>)> = OnceLock::new();

/// Sets the process's bound, once, at start-up; `0` means no bound. A second call with a
/// different bound is refused (the first one stays), naming both.
pub fn set_limit(max: usize) -> Result<(), super::Error> {
    if max == 0 {
        return Ok(());
    }
    let (set, _) = SLOTS.get_or_init(|| (max, Arc::new(Semaphore::new(max))));
    if *set == max {
        Ok(())
    } else {
        Err(super::Error::LimitAlreadySet {
            set: *set,
            wanted: max,
        })
    }
}

/// Waits for a verification slot, saying so on the step's progress while it waits. The slot
/// is held until the returned permit is dropped; `None` when there is no bound.
pub async fn acquire(progress: &Progress) -> Option<OwnedSemaphorePermit> {
    let (max, semaphore) = SLOTS.get()?;
    if let Ok(permit) = semaphore.clone().try_acquire_owned() {
        return Some(permit);
    }
    progress.say(format!(
        "Waiting for a verification slot ({max} running, limits.max_verifications)..."
    ));
    semaphore.clone().acquire_owned().await.ok()
}
