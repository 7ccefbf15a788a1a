//! The run index: runs by status, by workflow, by both, by what they are about, and each run's
//! status, so that no listing or search reads every run. Written with the heads, and built
//! once from them for a store written before it existed.

use super::keys::{index_key, index_prefix, status_index_key, status_of_key, wf_status, Tree};
use super::writes::Write;
use super::SledStore;
use crate::error::Result;
use crate::record::{RunRecord, RunStatus};
use crate::store::{RunQuery, Store};
use crate::subject::subject_names;

/// Present once the run index holds every run in its current layout (a new layout takes a
/// new marker, so it is built again).
const INDEX_BUILT: &[u8] = b"built/3";

impl SledStore {
    /// The index writes that go with writing `rec`'s head (put them before the head).
    pub(super) fn run_index_writes(run: &str, workflow: &str, current: RunStatus) -> Vec<Write> {
        let mut out = Vec::with_capacity(2 * RunStatus::ALL.len() + 1);
        for status in RunStatus::ALL {
            for key in [
                status_index_key(status, run),
                index_key(b'x', &wf_status(workflow, status), run),
            ] {
                out.push(if status == current {
                    Write::put_raw(Tree::RunIndex, key, Vec::new())
                } else {
                    Write::delete(Tree::RunIndex, key)
                });
            }
        }
        out.push(Write::put_raw(
            Tree::RunIndex,
            index_key(b'w', workflow, run),
            Vec::new(),
        ));
        out.push(Write::put_raw(
            Tree::RunIndex,
            status_of_key(run),
            current.as_str().as_bytes().to_vec(),
        ));
        out
    }

    /// The index writes that move run `run` of `workflow` from status `before` to `status`,
    /// when the index is known to hold exactly `before` for it (the keys of every other status
    /// absent): the entries of the old status go, those of the new one come. Put them before
    /// the head, as above.
    pub(super) fn run_index_move(
        run: &str,
        workflow: &str,
        before: RunStatus,
        status: RunStatus,
    ) -> Vec<Write> {
        let keys = |status: RunStatus| {
            [
                status_index_key(status, run),
                index_key(b'x', &wf_status(workflow, status), run),
            ]
        };
        let mut out = Vec::with_capacity(5);
        out.extend(keys(before).map(|key| Write::delete(Tree::RunIndex, key)));
        out.extend(keys(status).map(|key| Write::put_raw(Tree::RunIndex, key, Vec::new())));
        out.push(Write::put_raw(
            Tree::RunIndex,
            status_of_key(run),
            status.as_str().as_bytes().to_vec(),
        ));
        out
    }

    /// The index writes of what a run is about (see [`crate::subject`]): written once, with
    /// its start.
    pub(super) fn subject_writes(run: &str, subjects: &[String]) -> Vec<Write> {
        subjects
            .iter()
            .map(|name| Write::put_raw(Tree::RunIndex, index_key(b'a', name, run), Vec::new()))
            .collect()
    }

    /// Builds the run index from the heads, once (a store written before it existed).
    pub(super) fn build_run_index(&self) -> Result<()> {
        let index = self.tree(Tree::RunIndex);
        if index
            .contains_key(INDEX_BUILT)
            .map_err(|e| self.sled_err(e))?
        {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (_, rec) in self.scan::<RunRecord>(Tree::Runs, b"")? {
            let job = match &rec.job_id {
                Some(id) => self.job(id).unwrap_or_else(|e| {
                    tracing::error!("{e}; run {} indexed by its input only", rec.id);
                    None
                }),
                None => None,
            };
            let subjects = subject_names(&rec.input, job.as_ref());
            let writes = SledStore::run_index_writes(&rec.id, &rec.workflow_id, rec.status)
                .into_iter()
                .chain(SledStore::subject_writes(&rec.id, &subjects));
            for w in writes {
                match w.value {
                    Some(v) => batch.insert(w.key, v),
                    None => batch.remove(w.key),
                }
            }
        }
        batch.insert(INDEX_BUILT, Vec::new());
        index.apply_batch(batch).map_err(|e| self.sled_err(e))?;
        self.inner.db.flush().map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// `limit` run ids under an index prefix after skipping `offset`, newest first: a page
    /// costs its offset in keys, not the whole index.
    pub(super) fn index_page(
        &self,
        prefix: &[u8],
        offset: usize,
        limit: usize,
    ) -> Result<Vec<String>> {
        let _gate = self.gate();
        let mut out = Vec::new();
        let keys = self.tree(Tree::RunIndex).scan_prefix(prefix).keys().rev();
        for key in keys.skip(offset).take(limit) {
            let key = key.map_err(|e| self.sled_err(e))?;
            out.push(String::from_utf8_lossy(&key[prefix.len()..]).into_owned());
        }
        Ok(out)
    }

    /// Ids under `prefix` of the runs tree (whose keys are run ids), newest first.
    pub(super) fn head_ids(
        &self,
        prefix: &[u8],
        offset: usize,
        limit: usize,
    ) -> Result<Vec<String>> {
        let _gate = self.gate();
        let mut out = Vec::new();
        let keys = self.tree(Tree::Runs).scan_prefix(prefix).keys().rev();
        for key in keys.skip(offset).take(limit) {
            let key = key.map_err(|e| self.sled_err(e))?;
            out.push(String::from_utf8_lossy(&key).into_owned());
        }
        Ok(out)
    }

    /// The index prefix a query reads (`None`: the runs tree itself).
    pub(super) fn query_prefix(query: &RunQuery) -> Option<Vec<u8>> {
        match query {
            RunQuery::All | RunQuery::IdPrefix(_) => None,
            RunQuery::Status(s) => Some(index_prefix(b's', s.as_str())),
            RunQuery::Workflow(w) => Some(index_prefix(b'w', w)),
            RunQuery::WorkflowStatus(w, s) => Some(index_prefix(b'x', &wf_status(w, *s))),
            RunQuery::About(name) => Some(index_prefix(b'a', name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::{encode, Batch, Job, Op, Transition};
    use super::*;
    use crate::record::Event;

    #[tokio::test]
    async fn the_run_index_follows_heads_and_is_built_for_an_older_store() {
        let dir = tempfile::tempdir().unwrap();
        let head = |id: &str, wf: &str, status: RunStatus| {
            let mut rec = RunRecord::new(id.into(), std::iter::empty(), 0);
            rec.workflow_id = wf.into();
            rec.status = status;
            rec
        };
        {
            let store = SledStore::open(dir.path(), 1 << 20).unwrap();
            // Heads written as an older baton did: no index entries.
            let mut writes = Vec::new();
            for (id, wf, st) in [
                ("run_1", "a", RunStatus::Completed),
                ("run_2", "b", RunStatus::Failed),
                ("run_3", "a", RunStatus::Failed),
            ] {
                let mut rec = head(id, wf, st);
                if id == "run_1" {
                    rec.input.insert("repo".into(), "octo/app".into());
                    rec.input.insert("issue".into(), 7.into());
                }
                if id == "run_2" {
                    // Named only by its job.
                    rec.job_id = Some("github:d2".into());
                    writes.push(Write::put(
                        Tree::Jobs,
                        b"github:d2".to_vec(),
                        &Job {
                            id: "github:d2".into(),
                            data: serde_json::json!({"repo": "Octo/App", "subject": {"number": 7}}),
                            ..Default::default()
                        },
                    ));
                }
                writes.push(Write::put(Tree::Runs, id.as_bytes().to_vec(), &rec));
            }
            store.submit(writes).await.unwrap();
            store.tree(Tree::RunIndex).clear().unwrap();
            store.inner.db.flush().unwrap();
        }
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let ids = |q: RunQuery| store.run_ids(&q, 0, usize::MAX).unwrap();
        assert_eq!(ids(RunQuery::Status(RunStatus::Failed)), ["run_3", "run_2"]);
        assert_eq!(ids(RunQuery::Workflow("a".into())), ["run_3", "run_1"]);
        assert_eq!(
            store
                .count(&RunQuery::Status(RunStatus::Completed))
                .unwrap(),
            1
        );
        let a_failed = RunQuery::WorkflowStatus("a".into(), RunStatus::Failed);
        assert_eq!(store.count(&a_failed).unwrap(), 1);
        assert_eq!(
            ids(RunQuery::WorkflowStatus("b".into(), RunStatus::Failed)),
            ["run_2"]
        );
        assert_eq!(ids(RunQuery::All), ["run_3", "run_2", "run_1"]);
        assert_eq!(store.count(&RunQuery::All).unwrap(), 3);
        assert_eq!(store.run_ids(&RunQuery::All, 1, 1).unwrap(), ["run_2"]);
        // What runs are about, from their input or their job.
        assert_eq!(
            ids(RunQuery::About("octo/app#7".into())),
            ["run_2", "run_1"]
        );
        assert_eq!(ids(RunQuery::About("octo/app".into())), ["run_2", "run_1"]);
        assert!(ids(RunQuery::About("octo/app#8".into())).is_empty());
        assert_eq!(ids(RunQuery::IdPrefix("run_2".into())), ["run_2"]);
        assert_eq!(store.status_of("run_3").unwrap(), Some(RunStatus::Failed));
        assert_eq!(store.status_of("run_9").unwrap(), None);
        assert!(store.is_of_workflow("run_3", "a").unwrap());
        assert!(!store.is_of_workflow("run_3", "b").unwrap());
        // A status change moves the run from one status to the other.
        let rec = head("run_3", "a", RunStatus::Running);
        let transition = Transition {
            run: "run_3".into(),
            workflow_id: "a".into(),
            before: RunStatus::Failed,
            status: RunStatus::Running,
            events: Vec::new(),
            steps: Vec::new(),
            set_timers: Vec::new(),
            cleared_timers: Vec::new(),
            head: Some(encode(&rec)),
            index_exact: false,
        };
        store
            .commit(Batch::of(Op::Transition(transition)))
            .await
            .unwrap();
        assert_eq!(ids(RunQuery::Status(RunStatus::Failed)), ["run_2"]);
        assert_eq!(ids(RunQuery::Status(RunStatus::Running)), ["run_3"]);
        assert_eq!(store.status_of("run_3").unwrap(), Some(RunStatus::Running));
        assert_eq!(store.unfinished().unwrap(), ["run_3"], "reopened");
        // A start writes what the run is about in its commit.
        let mut started = head("run_4", "a", RunStatus::Pending);
        started.input.insert("repo".into(), "octo/app".into());
        started.input.insert("pr".into(), 8.into());
        let mut batch = Batch::new();
        let created = Event {
            run: "run_4".into(),
            seq: 1,
            at: 0,
            kind: crate::record::EventKind::RunStarted,
        };
        batch.start_run(&started, &created, None);
        store.commit(batch).await.unwrap();
        assert_eq!(ids(RunQuery::About("octo/app#8".into())), ["run_4"]);
        assert_eq!(
            ids(RunQuery::About("octo/app".into())),
            ["run_4", "run_2", "run_1"]
        );
        assert!(!store.is_of_workflow("run_4", "b").unwrap());
    }
}
