//! The workspace jail: every path a tool or a patch names is resolved here, and anything that
//! would lead outside the workspace is refused with a message the model can act on.
//!
//! Refused: `..` components, absolute paths outside the root, `.git` (hooks there would run
//! code, its config may hold credentials), symlinks whose target is outside the root or does
//! not exist (writing through a dangling link would create a file elsewhere), and for file
//! access anything that is not a regular file (devices, FIFOs, sockets), larger than
//! [`MAX_FILE_BYTES`], or binary. Files with more than one hard link are refused for reads and
//! writes alike: another name of that file may live outside the workspace.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use crate::agent::error::{Error, Result};

/// Largest file the tools read, edit or write: bigger ones are data, not source.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// A path resolved inside the workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Relative to the root, `/`-separated, symlinks resolved; empty for the root itself.
    pub rel: String,
    /// Absolute, symlinks resolved.
    pub abs: PathBuf,
    /// Whether something exists there.
    pub exists: bool,
}

/// The workspace root, canonical.
#[derive(Clone, Debug)]
pub struct Jail {
    root: PathBuf,
}

impl Jail {
    /// Opens a jail at `root`, which must be an existing directory.
    pub fn new(root: &Path) -> Result<Jail> {
        let canonical = fs::canonicalize(root).map_err(|e| Error::Workspace {
            path: root.display().to_string(),
            message: e.to_string(),
        })?;
        if !canonical.is_dir() {
            return Err(Error::Workspace {
                path: root.display().to_string(),
                message: "not a directory".into(),
            });
        }
        Ok(Jail { root: canonical })
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves `path` (relative to the root, or absolute inside it) without touching it.
    pub fn resolve(&self, path: &str) -> Result<Resolved, String> {
        if path.contains('\0') {
            return Err("path contains a NUL byte".into());
        }
        let given = Path::new(path);
        let relative: &Path = if given.is_absolute() {
            given.strip_prefix(&self.root).map_err(|_| {
                format!(
                    "`{path}` is outside the workspace; use a path relative to the workspace root"
                )
            })?
        } else {
            given
        };
        let mut cur = self.root.clone();
        let mut exists = true;
        for component in relative.components() {
            let name = match component {
                Component::CurDir => continue,
                Component::Normal(name) => name,
                Component::ParentDir => {
                    return Err(format!(
                        "`{path}`: `..` is not allowed; use a path inside the workspace"
                    ))
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(format!("`{path}` is outside the workspace"));
                }
            };
            if name == ".git" {
                return Err(format!("`{path}`: the .git directory is off limits"));
            }
            let next = cur.join(name);
            if !exists {
                cur = next;
                continue;
            }
            match fs::symlink_metadata(&next) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    let target = fs::canonicalize(&next).map_err(|_| {
                        format!("`{path}`: symlink `{}` points nowhere", self.display(&next))
                    })?;
                    if !target.starts_with(&self.root) {
                        return Err(format!(
                            "`{path}`: symlink `{}` leads outside the workspace",
                            self.display(&next)
                        ));
                    }
                    if target
                        .strip_prefix(&self.root)
                        .is_ok_and(|r| r.starts_with(".git"))
                    {
                        return Err(format!(
                            "`{path}`: symlink `{}` leads into .git",
                            self.display(&next)
                        ));
                    }
                    cur = target;
                }
                Ok(_) => cur = next,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    exists = false;
                    cur = next;
                }
                Err(e) => return Err(format!("`{path}`: {e}")),
            }
        }
        Ok(Resolved {
            rel: self.display(&cur),
            abs: cur,
            exists,
        })
    }

    fn display(&self, abs: &Path) -> String {
        abs.strip_prefix(&self.root)
            .unwrap_or(abs)
            .to_string_lossy()
            .into_owned()
    }

    /// Resolves and reads a text file.
    pub fn read_text(&self, path: &str) -> Result<(Resolved, String), String> {
        let resolved = self.resolve(path)?;
        if !resolved.exists {
            return Err(format!("`{path}` does not exist"));
        }
        let text = read_regular_text(&resolved.abs, &resolved.rel)?;
        Ok((resolved, text))
    }

    /// Resolves a path for writing; returns its current text when the file exists.
    pub fn prepare_write(&self, path: &str) -> Result<(Resolved, Option<String>), String> {
        let resolved = self.resolve(path)?;
        if resolved.rel.is_empty() {
            return Err("cannot write to the workspace root".into());
        }
        if !resolved.exists {
            return Ok((resolved, None));
        }
        let before = read_regular_text(&resolved.abs, &resolved.rel)?;
        Ok((resolved, Some(before)))
    }

    /// Writes `content` to a path prepared by [`Jail::prepare_write`], creating parents.
    pub fn write(&self, resolved: &Resolved, content: &str) -> Result<(), String> {
        if content.len() as u64 > MAX_FILE_BYTES {
            return Err(format!(
                "content for `{}` is larger than 1 MiB",
                resolved.rel
            ));
        }
        if let Some(parent) = resolved.abs.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("`{}`: cannot create its directory: {e}", resolved.rel))?;
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&resolved.abs)
            .map_err(|e| format!("`{}`: {e}", resolved.rel))?;
        std::io::Write::write_all(&mut file, content.as_bytes())
            .map_err(|e| format!("`{}`: {e}", resolved.rel))
    }
}

/// Reads a regular, small, text file without following a final symlink or blocking on a FIFO.
fn read_regular_text(abs: &Path, rel: &str) -> Result<String, String> {
    let meta = fs::metadata(abs).map_err(|e| format!("`{rel}`: {e}"))?;
    if meta.is_dir() {
        return Err(format!("`{rel}` is a directory; use list_dir"));
    }
    if !meta.is_file() {
        return Err(format!(
            "`{rel}` is not a regular file (device, FIFO or socket)"
        ));
    }
    if meta.nlink() > 1 {
        return Err(format!(
            "`{rel}` has several hard links (another name may be outside the workspace); refused"
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "`{rel}` is {} bytes, larger than the 1 MiB limit",
            meta.len()
        ));
    }
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(abs)
        .map_err(|e| format!("`{rel}`: {e}"))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.by_ref()
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("`{rel}`: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("`{rel}` is larger than the 1 MiB limit"));
    }
    if bytes.contains(&0) {
        return Err(format!("`{rel}` is a binary file"));
    }
    String::from_utf8(bytes).map_err(|_| format!("`{rel}` is not UTF-8 text (binary?)"))
}
