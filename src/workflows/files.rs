//! Workflow files people write, read from `workflow_dirs`: by `baton run`, and by the webhook
//! and Telegram starts of a workflow the store does not know yet.

use std::path::{Path, PathBuf};

use baton_actors::Definition;

/// Why a workflow file could not be read; both name the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid workflow definition (the engine's error names the file).
    #[error(transparent)]
    Definition(#[from] baton_actors::Error),
}

/// Reads and parses one workflow file; the error names the file.
pub fn read_definition(path: &Path) -> Result<Definition, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Definition::from_toml(&text, &path.display().to_string())?)
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
