//! What changed in the workspace, and journaling for writes the agent cannot intercept.
//!
//! The tools record each write before making it. An external coding command or a
//! `run_command` can change files behind our back; for those a `Snapshot` of the dirty
//! files is taken before they run, and afterwards every file whose content differs is recorded
//! with its content from before (from the snapshot, or from `HEAD` for a file that was clean).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::agent::error::{Error, Result};
use crate::agent::jail::MAX_FILE_BYTES;
use crate::agent::journal::DynJournal;
use crate::agent::process::git;
use crate::journal::Change;

/// How a file changed over a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// It did not exist before.
    Created,
    /// It existed and still does, with other content.
    Modified,
    /// It existed and is gone.
    Deleted,
}

/// One changed file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChange {
    /// Path relative to the workspace.
    pub path: String,
    /// How it changed.
    pub kind: ChangeKind,
}

/// Remembers, per path, whether it existed before the agent first touched it.
#[derive(Debug, Default)]
pub(crate) struct ChangeTracker {
    existed_before: BTreeMap<String, bool>,
}

impl ChangeTracker {
    /// Records `change` in the journal (before the write it describes) and notes the path.
    pub async fn record(&mut self, journal: &dyn DynJournal, change: Change) -> Result<()> {
        let path = change.path().to_string();
        let existed = change.change_type != "file_create";
        journal
            .record_boxed(change)
            .await
            .map_err(|source| Error::Journal {
                path: path.clone(),
                source,
            })?;
        self.existed_before.entry(path).or_insert(existed);
        Ok(())
    }

    /// The net changes, judged against the files as they are now.
    pub fn changes(&self, root: &Path) -> Vec<FileChange> {
        self.existed_before
            .iter()
            .filter_map(|(path, &before)| {
                let now = std::fs::symlink_metadata(root.join(path)).is_ok();
                let kind = match (before, now) {
                    (false, true) => ChangeKind::Created,
                    (true, true) => ChangeKind::Modified,
                    (true, false) => ChangeKind::Deleted,
                    (false, false) => return None,
                };
                Some(FileChange {
                    path: path.clone(),
                    kind,
                })
            })
            .collect()
    }
}

/// A file's content at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Content {
    Absent,
    Text(String),
    /// Binary or too large to journal; compared by bytes.
    Opaque(Vec<u8>),
}

fn read_content(root: &Path, rel: &str) -> Content {
    let abs = root.join(rel);
    match std::fs::symlink_metadata(&abs) {
        Err(_) => Content::Absent,
        Ok(m) if m.file_type().is_symlink() => Content::Opaque(
            std::fs::read_link(&abs)
                .map(|t| t.to_string_lossy().into_owned().into_bytes())
                .unwrap_or_default(),
        ),
        Ok(m) if !m.is_file() => Content::Opaque(Vec::new()),
        Ok(m) if m.len() > MAX_FILE_BYTES => Content::Opaque(m.len().to_le_bytes().to_vec()),
        Ok(_) => match std::fs::read(&abs) {
            Ok(bytes) if !bytes.contains(&0) => match String::from_utf8(bytes) {
                Ok(s) => Content::Text(s),
                Err(e) => Content::Opaque(e.into_bytes()),
            },
            Ok(bytes) => Content::Opaque(bytes),
            Err(_) => Content::Absent,
        },
    }
}

/// Paths `git status` reports as changed, untracked included.
async fn dirty_paths(root: &Path) -> Result<BTreeSet<String>, crate::workspace::Error> {
    let out = git(
        root,
        &[
            "status",
            "--porcelain=v1",
            "-z",
            "--untracked-files=all",
            "--no-renames",
        ],
    )
    .await?;
    Ok(out
        .split('\0')
        .filter(|e| e.len() > 3)
        .map(|e| e[3..].to_string())
        .collect())
}

/// The dirty files of a workspace and their content, taken before something we cannot watch.
#[derive(Debug)]
pub(crate) struct Snapshot {
    dirty: BTreeMap<String, Content>,
}

impl Snapshot {
    /// `None` when the workspace is not a git repository.
    pub async fn take(root: &Path) -> Option<Snapshot> {
        let paths = dirty_paths(root).await.ok()?;
        let dirty = paths.into_iter().map(|p| {
            let c = read_content(root, &p);
            (p, c)
        });
        Some(Snapshot {
            dirty: dirty.collect(),
        })
    }

    /// Journals every file that differs from the snapshot; returns their paths.
    pub async fn record_since(
        &self,
        root: &Path,
        journal: &dyn DynJournal,
        tracker: &mut ChangeTracker,
    ) -> Result<Vec<String>> {
        let now_dirty = dirty_paths(root).await.map_err(|e| Error::Workspace {
            path: root.display().to_string(),
            message: e.to_string(),
        })?;
        let mut candidates: BTreeSet<String> = self.dirty.keys().cloned().collect();
        candidates.extend(now_dirty);
        let mut changed = Vec::new();
        for path in candidates {
            let before = match self.dirty.get(&path) {
                Some(c) => c.clone(),
                None => match git(root, &["show", &format!("HEAD:{path}")]).await {
                    Ok(text) => Content::Text(text),
                    Err(_) => Content::Absent,
                },
            };
            let now = read_content(root, &path);
            if before == now {
                continue;
            }
            let change = match (&before, &now) {
                (Content::Absent, _) => Change::file_create(&path),
                (Content::Text(b), Content::Absent) => Change::file_delete(&path, b),
                (Content::Text(b), _) => Change::file_modify(&path, b),
                (Content::Opaque(_), now) => Change {
                    change_type: if *now == Content::Absent {
                        "file_delete"
                    } else {
                        "file_modify"
                    }
                    .into(),
                    change_data: serde_json::json!({ "path": path, "before": null, "binary": true }),
                },
            };
            tracker.record(journal, change).await?;
            changed.push(path);
        }
        Ok(changed)
    }
}
