//! Wakes a run waiting for CI when news of its commit arrives: GitHub's `check_suite`,
//! `check_run`, `workflow_run` and `status` deliveries, and `POST /api/ci/{event}` from
//! `baton forge check create` on the local forge.
//!
//! A waiting `ci_wait` [`CiWakes::watch`]es the sha it polls and awaits the watch beside its
//! poll timer; a delivery [`CiWakes::wake`]s the sha it names. A wake only makes the waiter read
//! the checks again at once: what it decides comes from that read and the run's record, so a
//! wake never starts a fix round on its own, and news of any other commit (an older push)
//! wakes nothing. Polling stays the fallback for news that never arrives.
//!
//! One registry per daemon, made by the wiring and handed to the actions and the listeners;
//! nothing here is process-wide.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The shas being waited on, each with the `Notify` its waiters await. Cheap to clone.
#[derive(Clone, Default)]
pub struct CiWakes {
    inner: Arc<Mutex<HashMap<String, Waiting>>>,
}

/// One sha's waiters.
struct Waiting {
    /// Notified on news of the sha.
    notify: Arc<Notify>,
    /// Live [`Watch`]es; the entry goes with the last.
    watchers: usize,
}

impl std::fmt::Debug for CiWakes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CiWakes")
            .field("waiting", &self.lock().len())
            .finish()
    }
}

impl CiWakes {
    /// A registry with nothing waited on.
    pub fn new() -> CiWakes {
        CiWakes::default()
    }

    /// Waits for news of `sha` until the returned watch is dropped.
    pub fn watch(&self, sha: &str) -> Watch {
        let key = normalize(sha);
        let mut map = self.lock();
        let waiting = map.entry(key.clone()).or_insert_with(|| Waiting {
            notify: Arc::new(Notify::new()),
            watchers: 0,
        });
        waiting.watchers += 1;
        Watch {
            wakes: self.clone(),
            notify: Arc::clone(&waiting.notify),
            sha: key,
        }
    }

    /// Wakes every waiter on `sha`; whether one was waiting. News of a sha nobody waits on is
    /// dropped: the checks it reports are read by the next wait on it, if any.
    pub fn wake(&self, sha: &str) -> bool {
        let map = self.lock();
        match map.get(&normalize(sha)) {
            Some(waiting) => {
                // `notify_waiters` wakes those awaiting now; the permit of `notify_one` keeps a
                // wake that lands between a waiter's read and its next await.
                waiting.notify.notify_waiters();
                waiting.notify.notify_one();
                true
            }
            None => false,
        }
    }

    /// How many shas are waited on (for tests and the log).
    pub fn waiting(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiting>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A sha as GitHub and git write it: lowercase hex.
fn normalize(sha: &str) -> String {
    sha.trim().to_ascii_lowercase()
}

/// One waiter's interest in a sha; it stops with the drop.
pub struct Watch {
    wakes: CiWakes,
    notify: Arc<Notify>,
    sha: String,
}

impl Watch {
    /// Resolves at the next news of the sha (or at once if news came since the last call).
    pub async fn woken(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut map = self.wakes.lock();
        if let Some(waiting) = map.get_mut(&self.sha) {
            waiting.watchers -= 1;
            if waiting.watchers == 0 {
                map.remove(&self.sha);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn news_of_the_watched_sha_wakes_and_of_another_does_not() {
        let wakes = CiWakes::new();
        let sha = "ABCDEF0123456789abcdef0123456789abcdef01";
        let watch = wakes.watch(sha);
        // Another commit (an older push): nothing wakes.
        assert!(!wakes.wake(&"1".repeat(40)));
        let quiet = tokio::time::timeout(Duration::from_millis(50), watch.woken()).await;
        assert!(quiet.is_err(), "woken by news of another commit");
        // The same sha, however it is cased: woken.
        assert!(wakes.wake(&sha.to_ascii_lowercase()));
        tokio::time::timeout(Duration::from_secs(1), watch.woken())
            .await
            .expect("woken by news of its commit");
        // A wake while not awaiting is kept for the next await.
        assert!(wakes.wake(sha));
        tokio::time::timeout(Duration::from_secs(1), watch.woken())
            .await
            .expect("a wake between awaits is not lost");
        // Two waiters on one sha: the entry goes with the last.
        let second = wakes.watch(sha);
        drop(watch);
        assert_eq!(wakes.waiting(), 1);
        drop(second);
        assert_eq!(wakes.waiting(), 0);
        assert!(!wakes.wake(sha), "nobody waits any more");
    }
}
