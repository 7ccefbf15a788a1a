//! The writes each [`Op`] is made of, in the order a crash may cut them: whatever prefix of a
//! batch survives leaves the store readable and the run findable.

use super::keys::{
    delivery_key, index_key, provenance_key, run_key, run_prefix, status_index_key, status_of_key,
    tag_key, timer_key, wf_status, Tree,
};
use super::SledStore;
use crate::error::Result;
use crate::record::RunStatus;
use crate::store::{encode, Op};

/// One write in a batch.
#[derive(Debug, Clone)]
pub(crate) struct Write {
    pub(super) tree: Tree,
    pub(super) key: Vec<u8>,
    pub(super) value: Option<Vec<u8>>,
}

impl Write {
    /// Insert or replace `key` with `value` encoded as JSON.
    #[cfg(test)]
    pub(super) fn put<T: serde::Serialize + ?Sized>(tree: Tree, key: Vec<u8>, value: &T) -> Write {
        Write {
            tree,
            key,
            value: Some(encode(value)),
        }
    }

    /// Insert raw bytes.
    pub(super) fn put_raw(tree: Tree, key: Vec<u8>, value: Vec<u8>) -> Write {
        Write {
            tree,
            key,
            value: Some(value),
        }
    }

    /// Remove `key`.
    pub(super) fn delete(tree: Tree, key: Vec<u8>) -> Write {
        Write {
            tree,
            key,
            value: None,
        }
    }

    /// Bytes this write puts on disk (key and value).
    pub(super) fn len(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, Vec::len)
    }
}

impl SledStore {
    /// The writes of one operation, in the order a crash may cut them: whatever prefix
    /// survives leaves the store readable and the run findable.
    pub(super) fn writes_of(&self, op: Op, out: &mut Vec<Write>) -> Result<()> {
        match op {
            Op::Definition {
                id,
                digest,
                json,
                provenance,
            } => {
                out.push(Write::put_raw(
                    Tree::Workflows,
                    format!("{id}\0{digest}").into_bytes(),
                    json,
                ));
                out.push(Write::put_raw(
                    Tree::Workflows,
                    provenance_key(&id, &digest),
                    provenance,
                ));
                out.push(Write::put_raw(
                    Tree::Workflows,
                    id.into_bytes(),
                    encode(&digest),
                ));
            }
            Op::StartRun {
                head,
                event: (seq, event),
                subjects,
                job,
            } => {
                out.push(Write::put_raw(Tree::Events, run_key(&head.id, seq), event));
                out.extend(SledStore::run_index_writes(
                    &head.id,
                    &head.workflow_id,
                    head.status,
                ));
                out.extend(SledStore::subject_writes(&head.id, &subjects));
                let id = head.id.clone().into_bytes();
                out.push(Write::put_raw(Tree::Runs, id.clone(), head.json));
                out.push(Write::put_raw(Tree::Unfinished, id, Vec::new()));
                if let Some((job_id, json)) = job {
                    out.push(Write::put_raw(Tree::Jobs, job_id.into_bytes(), json));
                }
            }
            Op::Transition(t) => {
                let id = t.run.as_bytes();
                // A crash may keep only a prefix of this batch: the run must be findable at
                // start-up whenever any of its events survived, so the unfinished entry of a
                // reopened run goes first (and again last).
                if t.reopened() {
                    out.push(Write::put_raw(Tree::Unfinished, id.to_vec(), Vec::new()));
                }
                for (seq, json) in &t.events {
                    out.push(Write::put_raw(
                        Tree::Events,
                        run_key(&t.run, *seq),
                        json.clone(),
                    ));
                }
                for (idx, json) in &t.steps {
                    out.push(Write::put_raw(
                        Tree::Steps,
                        run_key(&t.run, *idx),
                        json.clone(),
                    ));
                }
                for (due, timer) in &t.set_timers {
                    let key = timer_key(*due, &t.run, *timer);
                    out.push(Write::put_raw(Tree::Timers, key, Vec::new()));
                }
                for (due, timer) in &t.cleared_timers {
                    out.push(Write::delete(Tree::Timers, timer_key(*due, &t.run, *timer)));
                }
                if let Some(json) = &t.head {
                    if t.before != t.status && t.index_exact {
                        // The run index moves with the status, in the same commit, before
                        // the head: two entries when it is known to be exact.
                        out.extend(SledStore::run_index_move(
                            &t.run,
                            &t.workflow_id,
                            t.before,
                            t.status,
                        ));
                    } else if t.before != t.status {
                        out.extend(SledStore::run_index_writes(
                            &t.run,
                            &t.workflow_id,
                            t.status,
                        ));
                    }
                    out.push(Write::put_raw(Tree::Runs, id.to_vec(), json.clone()));
                }
                if t.finished() {
                    out.push(Write::delete(Tree::Unfinished, id.to_vec()));
                } else if t.reopened() {
                    out.push(Write::put_raw(Tree::Unfinished, id.to_vec(), Vec::new()));
                }
            }
            Op::Change { run, seq, json } => {
                out.push(Write::put_raw(Tree::Changes, run_key(&run, seq), json));
            }
            Op::Job { id, json } => out.push(Write::put_raw(Tree::Jobs, id.into_bytes(), json)),
            Op::Delivery { run, sink, json } => {
                out.push(Write::put_raw(
                    Tree::Deliveries,
                    delivery_key(&run, &sink),
                    json,
                ));
            }
            Op::Tag { tag, run, order } => out.push(Write::put_raw(
                Tree::RunTags,
                tag_key(&tag, &run),
                order.to_be_bytes().to_vec(),
            )),
            Op::DeleteRun {
                id,
                workflow_id,
                subjects,
                job_id,
            } => self.delete_writes(&id, &workflow_id, &subjects, job_id, out)?,
            Op::ProcessGroup { key, json } => out.push(match json {
                Some(json) => Write::put_raw(Tree::ProcessGroups, key, json),
                None => Write::delete(Tree::ProcessGroups, key),
            }),
            Op::Slot { .. } => {}
        }
        Ok(())
    }

    /// The writes that delete a run and everything stored for it: events, step records,
    /// change journal, notifier deliveries, its job, its index entries, and the head last (a
    /// head whose events are gone is still a whole snapshot, so a crash midway loses nothing
    /// a later pass cannot finish).
    fn delete_writes(
        &self,
        run: &str,
        workflow_id: &str,
        subjects: &[String],
        job_id: Option<String>,
        out: &mut Vec<Write>,
    ) -> Result<()> {
        let _gate = self.gate();
        let prefix = run_prefix(run);
        for w in SledStore::subject_writes(run, subjects) {
            out.push(Write::delete(w.tree, w.key));
        }
        out.push(Write::delete(Tree::RunIndex, status_of_key(run)));
        // Its tags (`tag \0 run`): the tree holds a few runs per chat, so a scan is cheap.
        for item in self.tree(Tree::RunTags).iter() {
            let (key, _) = item.map_err(|e| self.sled_err(e))?;
            if key.rsplit(|b| *b == 0).next() == Some(run.as_bytes()) {
                out.push(Write::delete(Tree::RunTags, key.to_vec()));
            }
        }
        for tree in [Tree::Events, Tree::Steps, Tree::Changes, Tree::Deliveries] {
            for item in self.tree(tree).scan_prefix(&prefix) {
                let (key, _) = item.map_err(|e| self.sled_err(e))?;
                out.push(Write::delete(tree, key.to_vec()));
            }
        }
        if let Some(job) = job_id {
            out.push(Write::delete(Tree::Jobs, job.into_bytes()));
        }
        out.push(Write::delete(Tree::Unfinished, run.as_bytes().to_vec()));
        for status in RunStatus::ALL {
            out.push(Write::delete(Tree::RunIndex, status_index_key(status, run)));
            let key = index_key(b'x', &wf_status(workflow_id, status), run);
            out.push(Write::delete(Tree::RunIndex, key));
        }
        out.push(Write::delete(
            Tree::RunIndex,
            index_key(b'w', workflow_id, run),
        ));
        out.push(Write::delete(Tree::Runs, run.as_bytes().to_vec()));
        Ok(())
    }
}
