//! Workflow files people write, read from `workflow_dirs`: by `baton run`, and by the webhook
//! and Telegram starts of a workflow the store does not know yet.

use std::path::{Path, PathBuf};

use baton_actors::Definition;

/// Reads and parses one workflow file; the error names the file.
pub fn read_definition(path: &Path) -> Result<Definition, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Definition::from_toml(&text, &path.display().to_string()).map_err(|e| e.to_string())
}

/// Workflow files in the configured directories (unreadable ones are warned about).
pub fn workflow_files(dirs: &[PathBuf]) -> Vec<(Definition, PathBuf)> {
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            match read_definition(&path) {
                Ok(def) => out.push((def, path)),
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }
    out
}
