//! What a sandboxed step must not change in the clone's `.git`: its config, hooks, refs,
//! `HEAD`, `info/` (attributes, excludes) and the object store's `info/alternates`.
//!
//! The sandbox mounts `.git` read-only, so a change means the mount failed or was escaped;
//! baton then stops trusting the clone: the step fails and says what changed, before any git
//! command of baton's reads the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Digests of the guarded files of one `.git`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitState {
    files: BTreeMap<PathBuf, [u8; 32]>,
}

/// Files and directories of `.git` whose change could make baton's git run something or send
/// something elsewhere.
const GUARDED: &[&str] = &[
    "config",
    "config.worktree",
    "HEAD",
    "packed-refs",
    "commondir",
    "hooks",
    "refs",
    "info",
    "objects/info/alternates",
    "objects/info/http-alternates",
];

impl GitState {
    /// Reads the guarded files of `work_tree/.git` (none when it has no `.git` directory).
    pub fn capture(work_tree: &Path) -> Self {
        let git = work_tree.join(".git");
        let mut files = BTreeMap::new();
        if git.is_dir() {
            for name in GUARDED {
                walk(&git, &git.join(name), &mut files);
            }
        }
        GitState { files }
    }

    /// What differs between `self` (before) and `after`, one line each; empty when nothing.
    pub fn changes(&self, after: &GitState) -> Vec<String> {
        let mut out = Vec::new();
        for (path, digest) in &after.files {
            match self.files.get(path) {
                None => out.push(format!(".git/{} was created", path.display())),
                Some(d) if d != digest => out.push(format!(".git/{} was changed", path.display())),
                _ => {}
            }
        }
        for path in self.files.keys() {
            if !after.files.contains_key(path) {
                out.push(format!(".git/{} was removed", path.display()));
            }
        }
        out
    }
}

fn walk(git: &Path, path: &Path, files: &mut BTreeMap<PathBuf, [u8; 32]>) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    let rel = path.strip_prefix(git).unwrap_or(path).to_path_buf();
    if meta.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for e in entries.flatten() {
            walk(git, &e.path(), files);
        }
    } else {
        let mut h = Sha256::new();
        if meta.file_type().is_symlink() {
            h.update(b"symlink:");
            if let Ok(t) = std::fs::read_link(path) {
                h.update(t.as_os_str().as_encoded_bytes());
            }
        } else {
            h.update(std::fs::read(path).unwrap_or_default());
        }
        // The mode too: a hook made executable is a change.
        use std::os::unix::fs::PermissionsExt;
        h.update(meta.permissions().mode().to_le_bytes());
        files.insert(rel, h.finalize().into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_config_hooks_and_refs() {
        let dir = std::env::temp_dir().join(format!("baton-integrity-{}", fastrand::u64(..)));
        std::fs::create_dir_all(dir.join(".git/hooks")).unwrap();
        std::fs::create_dir_all(dir.join(".git/refs/heads")).unwrap();
        std::fs::write(dir.join(".git/config"), "[core]\n").unwrap();
        std::fs::write(dir.join(".git/refs/heads/main"), "abc\n").unwrap();
        let before = GitState::capture(&dir);
        assert!(before.changes(&GitState::capture(&dir)).is_empty());
        std::fs::write(dir.join(".git/config"), "[core]\nfsmonitor = /tmp/x\n").unwrap();
        std::fs::write(dir.join(".git/hooks/pre-commit"), "#!/bin/sh\n").unwrap();
        std::fs::remove_file(dir.join(".git/refs/heads/main")).unwrap();
        let changes = before.changes(&GitState::capture(&dir));
        assert_eq!(
            changes,
            vec![
                ".git/config was changed",
                ".git/hooks/pre-commit was created",
                ".git/refs/heads/main was removed"
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
