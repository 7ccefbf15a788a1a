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
    /// The file uses a built-in workflow's id.
    #[error(
        "{}: workflow id `{id}` is a built-in workflow's, and built-ins cannot be replaced; \
         give this workflow an id of its own",
        path.display()
    )]
    BuiltIn {
        /// The file.
        path: PathBuf,
        /// The id.
        id: String,
    },
}

/// Reads and parses one workflow file; the error names the file. A file with a built-in
/// workflow's id is refused.
pub fn read_definition(path: &Path) -> Result<Definition, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let def = Definition::from_toml(&text, &path.display().to_string())?;
    if super::is_built_in(&def.id) {
        return Err(Error::BuiltIn {
            path: path.to_path_buf(),
            id: def.id,
        });
    }
    Ok(def)
}

/// The `.toml` files in the configured directories, each read: in order, directory by
/// directory.
fn read_dirs(dirs: &[PathBuf]) -> Vec<(PathBuf, Result<Definition, Error>)> {
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
            let read = read_definition(&path);
            out.push((path, read));
        }
    }
    out
}

/// Workflow files in the configured directories (unreadable ones, and ones with a built-in's
/// id, are warned about and left out).
pub fn workflow_files(dirs: &[PathBuf]) -> Vec<(Definition, PathBuf)> {
    read_dirs(dirs)
        .into_iter()
        .filter_map(|(path, read)| match read {
            Ok(def) => Some((def, path)),
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        })
        .collect()
}

/// The first file in the configured directories that claims a built-in workflow's id: the
/// daemon refuses to start with one (exit 2) rather than leave it lying in wait.
pub fn refuse_built_in_ids(dirs: &[PathBuf]) -> Result<(), Error> {
    match read_dirs(dirs)
        .into_iter()
        .find_map(|(_, read)| read.err().filter(|e| matches!(e, Error::BuiltIn { .. })))
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
