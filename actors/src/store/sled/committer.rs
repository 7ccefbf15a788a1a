//! The committer thread: every write goes through it. It takes every batch waiting, applies
//! them in arrival order under the readers' gate, flushes once (the fsync), and only then
//! answers each caller.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::writes::Write;
use super::{Inner, SledStore};
use crate::error::Error;
use crate::store::Durable;

pub(super) struct Request {
    pub(super) writes: Vec<Write>,
    pub(super) done: oneshot::Sender<std::result::Result<(), String>>,
}

impl SledStore {
    /// Applies `writes` and makes them durable (group commit).
    pub(super) fn submit(&self, writes: Vec<Write>) -> Durable {
        if writes.is_empty() {
            return Durable::ready(Ok(()));
        }
        self.send(writes)
    }

    /// Hands `writes` (maybe none: a barrier) to the committer.
    pub(super) fn send(&self, writes: Vec<Write>) -> Durable {
        let (done, wait) = oneshot::channel();
        match self.inner.committer.send(Request { writes, done }) {
            Ok(()) => Durable::waiting(wait, self.describe.clone()),
            Err(_) => Durable::ready(Err(Error::ShuttingDown)),
        }
    }
}

/// The committer thread: drains waiting batches, applies them, flushes once, answers all.
pub(super) fn committer(inner: std::sync::Weak<Inner>, rx: mpsc::Receiver<Request>) {
    // Batches beyond this many writes wait for the next flush, bounding one flush's latency.
    const MAX_GROUP_WRITES: usize = 20_000;
    while let Ok(first) = rx.recv() {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut group = vec![first];
        let mut count = group[0].writes.len();
        while count < MAX_GROUP_WRITES {
            match rx.try_recv() {
                Ok(req) => {
                    count += req.writes.len();
                    group.push(req);
                }
                Err(_) => break,
            }
        }
        let result = {
            let _gate = inner.gate.write().unwrap_or_else(|e| e.into_inner());
            let mut bytes = 0u64;
            let mut result: std::result::Result<(), String> = Ok(());
            'apply: for req in &group {
                for w in &req.writes {
                    bytes += w.len() as u64;
                    let tree = &inner.trees[w.tree as usize];
                    let r = match &w.value {
                        Some(v) => tree.insert(&w.key, v.as_slice()).map(|_| ()),
                        None => tree.remove(&w.key).map(|_| ()),
                    };
                    if let Err(e) = r {
                        result = Err(e.to_string());
                        break 'apply;
                    }
                }
            }
            if result.is_ok() {
                let started = Instant::now();
                result = inner.db.flush().map(|_| ()).map_err(|e| e.to_string());
                let stats = &inner.stats;
                stats
                    .flush_us
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                stats.flushes.fetch_add(1, Ordering::Relaxed);
                stats
                    .batches
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                stats.writes.fetch_add(count as u64, Ordering::Relaxed);
                stats.bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            result
        };
        // Let go of the store before answering, so that a caller who drops its handle after
        // the commit closes the database at once, and can open it again.
        drop(inner);
        for req in group {
            let _ = req.done.send(result.clone());
        }
    }
}
