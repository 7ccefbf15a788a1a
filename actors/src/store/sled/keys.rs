//! The trees of the sled store and the layout of their keys: run ids followed by a zero byte
//! and a big-endian number, timers by due time, the run index's prefixes.

use super::super::TimerEntry;
use crate::record::{Millis, RunStatus};

/// The trees, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tree {
    /// Definitions.
    Workflows,
    /// Run heads.
    Runs,
    /// Step records.
    Steps,
    /// Events.
    Events,
    /// The change journal.
    Changes,
    /// Persisted timers.
    Timers,
    /// Index of runs not yet finished.
    Unfinished,
    /// Jobs.
    Jobs,
    /// Notifier delivery state.
    Deliveries,
    /// Process groups of running commands, to kill after a crash.
    ProcessGroups,
    /// Indexes of runs, for listings that must not read every run: `s/<status>\0<run>`,
    /// `w/<workflow>\0<run>`, `x/<workflow>\0<status>\0<run>`, by what a run is about
    /// `a/<owner/name>\0<run>` and `a/<owner/name#N>\0<run>` (empty values; run ids sort by
    /// creation time), and `t/<run>` → its status. Status entries are written in the same
    /// commit as the head, before it; subject entries with the run's start; all are built
    /// from the heads when a store lacks them.
    RunIndex,
    /// Runs the app has linked to something of its own (a chat), keyed `<tag> \0 <run>`; the
    /// value is a [`Store::next_id`](crate::store::Store::next_id) (big-endian), so a tag's
    /// runs list in the order linked.
    RunTags,
}

impl Tree {
    pub(super) const ALL: [Tree; 12] = [
        Tree::Workflows,
        Tree::Runs,
        Tree::Steps,
        Tree::Events,
        Tree::Changes,
        Tree::Timers,
        Tree::Unfinished,
        Tree::Jobs,
        Tree::Deliveries,
        Tree::ProcessGroups,
        Tree::RunIndex,
        Tree::RunTags,
    ];

    /// The tree's name on disk.
    pub fn name(self) -> &'static str {
        match self {
            Tree::Workflows => "workflows",
            Tree::Runs => "workflow_runs",
            Tree::Steps => "run_steps",
            Tree::Events => "run_events",
            Tree::Changes => "workflow_changes",
            Tree::Timers => "timers",
            Tree::Unfinished => "unfinished",
            Tree::Jobs => "jobs",
            Tree::Deliveries => "deliveries",
            Tree::ProcessGroups => "process_groups",
            Tree::RunIndex => "run_index",
            Tree::RunTags => "run_tags",
        }
    }
}

pub(super) fn index_prefix(kind: u8, name: &str) -> Vec<u8> {
    let mut key = vec![kind, b'/'];
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key
}

pub(super) fn index_key(kind: u8, name: &str, run: &str) -> Vec<u8> {
    let mut key = index_prefix(kind, name);
    key.extend_from_slice(run.as_bytes());
    key
}

/// The workflow-and-status part of an `x/` key.
pub(super) fn wf_status(workflow: &str, status: RunStatus) -> String {
    format!("{workflow}\0{}", status.as_str())
}

pub(super) fn status_index_key(status: RunStatus, run: &str) -> Vec<u8> {
    index_key(b's', status.as_str(), run)
}

/// `t/<run>`: the run's current status, for filtering runs found another way.
pub(super) fn status_of_key(run: &str) -> Vec<u8> {
    let mut key = b"t/".to_vec();
    key.extend_from_slice(run.as_bytes());
    key
}

/// A key: the run id, a zero byte, then a big-endian number.
pub(super) fn run_key(run: &str, n: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(run.len() + 9);
    key.extend_from_slice(run.as_bytes());
    key.push(0);
    key.extend_from_slice(&n.to_be_bytes());
    key
}

pub(super) fn run_prefix(run: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(run.len() + 1);
    key.extend_from_slice(run.as_bytes());
    key.push(0);
    key
}

/// A timer's key: due time first, so the tree is ordered by due time.
pub(super) fn timer_key(due: Millis, run: &str, timer: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(run.len() + 17);
    key.extend_from_slice(&due.to_be_bytes());
    key.extend_from_slice(&run_key(run, timer));
    key
}

pub(super) fn readable_key(key: &[u8]) -> String {
    key.iter()
        .map(|b| {
            if b.is_ascii_graphic() {
                (*b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

/// The key of `run` under `tag` in [`Tree::RunTags`].
pub(super) fn tag_key(tag: &str, run: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(tag.len() + 1 + run.len());
    key.extend_from_slice(tag.as_bytes());
    key.push(0);
    key.extend_from_slice(run.as_bytes());
    key
}

pub(super) fn delivery_key(run: &str, sink: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(run.len() + 1 + sink.len());
    key.extend_from_slice(run.as_bytes());
    key.push(0);
    key.extend_from_slice(sink.as_bytes());
    key
}

pub(super) fn parse_timer_key(key: &[u8]) -> Option<TimerEntry> {
    if key.len() < 8 + 1 + 8 {
        return None;
    }
    let due = u64::from_be_bytes(key[..8].try_into().ok()?);
    let timer = u64::from_be_bytes(key[key.len() - 8..].try_into().ok()?);
    let run = std::str::from_utf8(&key[8..key.len() - 9])
        .ok()?
        .to_string();
    Some(TimerEntry { due, run, timer })
}

/// Where the provenance of definition `id` at `digest` is kept, beside the definition.
pub(super) fn provenance_key(id: &str, digest: &str) -> Vec<u8> {
    format!("{id}\0{digest}\0provenance").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_keys_round_trip_and_sort() {
        let a = timer_key(5, "run_b", 9);
        let b = timer_key(6, "run_a", 1);
        assert!(a < b);
        assert_eq!(
            parse_timer_key(&a),
            Some(TimerEntry {
                due: 5,
                run: "run_b".into(),
                timer: 9
            })
        );
    }
}
