//! `[limits] max_verifications`: one semaphore per engine bounds how many test suites run at
//! once, whichever workflow or action asks (`verify`, issue_to_pr, pr_review, revise). On a
//! small machine, twenty runs must not mean twenty cargo builds at once.
//!
//! The wiring (`workflows::install`) makes one [`Slots`] and hands a clone to every action
//! that verifies, through its environment; nothing here is process-wide.

use std::sync::Arc;

use baton_actors::Progress;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The verification slots shared by the actions of one engine. Cheap to clone: clones share
/// the slots.
#[derive(Clone, Debug, Default)]
pub struct Slots {
    /// The bound and its semaphore; `None`: no bound.
    bound: Option<(usize, Arc<Semaphore>)>,
}

impl Slots {
    /// `max` verifications at once; `0` means no bound.
    pub fn new(max: usize) -> Self {
        Slots {
            bound: (max > 0).then(|| (max, Arc::new(Semaphore::new(max)))),
        }
    }

    /// Waits for a verification slot, saying so on the step's progress while it waits. The
    /// slot is held until the returned permit is dropped; `None` when there is no bound.
    pub async fn acquire(&self, progress: &Progress) -> Option<OwnedSemaphorePermit> {
        self.acquire_saying(|m| progress.say(m)).await
    }

    /// [`Slots::acquire`], saying that it waits through `say`.
    async fn acquire_saying(&self, say: impl FnOnce(String)) -> Option<OwnedSemaphorePermit> {
        let (max, semaphore) = self.bound.as_ref()?;
        if let Ok(permit) = semaphore.clone().try_acquire_owned() {
            return Some(permit);
        }
        say(format!(
            "Waiting for a verification slot ({max} running, limits.max_verifications)..."
        ));
        semaphore.clone().acquire_owned().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clones_share_the_bound_and_zero_is_none() {
        let slots = Slots::new(1);
        let held = slots.clone().acquire_saying(|_| ()).await.expect("a slot");
        let said = std::sync::Mutex::new(Vec::new());
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            slots.acquire_saying(|m| said.lock().unwrap().push(m)),
        )
        .await;
        assert!(waiting.is_err(), "the second waits while the first is held");
        assert_eq!(
            *said.lock().unwrap(),
            ["Waiting for a verification slot (1 running, limits.max_verifications)..."]
        );
        drop(held);
        assert!(slots.acquire_saying(|_| ()).await.is_some());
        assert!(Slots::new(0).acquire_saying(|_| ()).await.is_none());
        assert!(Slots::default().acquire_saying(|_| ()).await.is_none());
    }
}
