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

/// Why the jail refused a path or a file; the message tells the model what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// A path with a NUL byte in it.
    #[error("path contains a NUL byte")]
    NulByte,
    /// An absolute path that is not under the root.
    #[error("`{path}` is outside the workspace; use a path relative to the workspace root")]
    Absolute {
        /// The path given.
        path: String,
    },
    /// A root or prefix component left after taking the root off.
    #[error("`{path}` is outside the workspace")]
    Outside {
        /// The path given.
        path: String,
    },
    /// A `..` component.
    #[error("`{path}`: `..` is not allowed; use a path inside the workspace")]
    ParentDir {
        /// The path given.
        path: String,
    },
    /// A path into `.git`.
    #[error("`{path}`: the .git directory is off limits")]
    Git {
        /// The path given.
        path: String,
    },
    /// A symlink on the way whose target does not exist.
    #[error("`{path}`: symlink `{link}` points nowhere")]
    DanglingLink {
        /// The path given.
        path: String,
        /// The link, relative to the root.
        link: String,
    },
    /// A symlink on the way that leads outside the root.
    #[error("`{path}`: symlink `{link}` leads outside the workspace")]
    LinkOutside {
        /// The path given.
        path: String,
        /// The link, relative to the root.
        link: String,
    },
    /// A symlink on the way that leads into `.git`.
    #[error("`{path}`: symlink `{link}` leads into .git")]
    LinkIntoGit {
        /// The path given.
        path: String,
        /// The link, relative to the root.
        link: String,
    },
    /// A read that found nothing there.
    #[error("`{path}` does not exist")]
    Missing {
        /// The path given.
        path: String,
    },
    /// A write to the root itself.
    #[error("cannot write to the workspace root")]
    WorkspaceRoot,
    /// Content to write larger than [`MAX_FILE_BYTES`].
    #[error("content for `{path}` is larger than 1 MiB")]
    ContentTooLarge {
        /// The file, relative to the root.
        path: String,
    },
    /// The directory of a file to write could not be made.
    #[error("`{path}`: cannot create its directory: {source}")]
    CreateDir {
        /// The file, relative to the root.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A directory where a file was wanted.
    #[error("`{path}` is a directory; use list_dir")]
    Directory {
        /// The path, relative to the root.
        path: String,
    },
    /// A device, FIFO or socket.
    #[error("`{path}` is not a regular file (device, FIFO or socket)")]
    NotRegular {
        /// The path, relative to the root.
        path: String,
    },
    /// A file with more than one hard link.
    #[error(
        "`{path}` has several hard links (another name may be outside the workspace); refused"
    )]
    HardLinks {
        /// The path, relative to the root.
        path: String,
    },
    /// A file larger than [`MAX_FILE_BYTES`].
    #[error("`{path}` is {bytes} bytes, larger than the 1 MiB limit")]
    TooLarge {
        /// The path, relative to the root.
        path: String,
        /// Its size.
        bytes: u64,
    },
    /// A file that grew past [`MAX_FILE_BYTES`] while it was read.
    #[error("`{path}` is larger than the 1 MiB limit")]
    GrewTooLarge {
        /// The path, relative to the root.
        path: String,
    },
    /// A file with NUL bytes.
    #[error("`{path}` is a binary file")]
    Binary {
        /// The path, relative to the root.
        path: String,
    },
    /// A file that is not UTF-8.
    #[error("`{path}` is not UTF-8 text (binary?)")]
    NotUtf8 {
        /// The path, relative to the root.
        path: String,
    },
    /// The OS refused to look at, open or write the path.
    #[error("`{path}`: {source}")]
    Io {
        /// The path (as given, or relative to the root).
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

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
    pub fn resolve(&self, path: &str) -> Result<Resolved, Refused> {
        if path.contains('\0') {
            return Err(Refused::NulByte);
        }
        let given = Path::new(path);
        let relative: &Path = if given.is_absolute() {
            given
                .strip_prefix(&self.root)
                .map_err(|_| Refused::Absolute { path: path.into() })?
        } else {
            given
        };
        let mut cur = self.root.clone();
        let mut exists = true;
        for component in relative.components() {
            let name = match component {
                Component::CurDir => continue,
                Component::Normal(name) => name,
                Component::ParentDir => return Err(Refused::ParentDir { path: path.into() }),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(Refused::Outside { path: path.into() });
                }
            };
            if name == ".git" {
                return Err(Refused::Git { path: path.into() });
            }
            let next = cur.join(name);
            if !exists {
                cur = next;
                continue;
            }
            match fs::symlink_metadata(&next) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    let target = fs::canonicalize(&next).map_err(|_| Refused::DanglingLink {
                        path: path.into(),
                        link: self.display(&next),
                    })?;
                    if !target.starts_with(&self.root) {
                        return Err(Refused::LinkOutside {
                            path: path.into(),
                            link: self.display(&next),
                        });
                    }
                    if target
                        .strip_prefix(&self.root)
                        .is_ok_and(|r| r.starts_with(".git"))
                    {
                        return Err(Refused::LinkIntoGit {
                            path: path.into(),
                            link: self.display(&next),
                        });
                    }
                    cur = target;
                }
                Ok(_) => cur = next,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    exists = false;
                    cur = next;
                }
                Err(source) => {
                    return Err(Refused::Io {
                        path: path.into(),
                        source,
                    })
                }
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
    pub fn read_text(&self, path: &str) -> Result<(Resolved, String), Refused> {
        let resolved = self.resolve(path)?;
        if !resolved.exists {
            return Err(Refused::Missing { path: path.into() });
        }
        let text = read_regular_text(&resolved.abs, &resolved.rel)?;
        Ok((resolved, text))
    }

    /// Resolves a path for writing; returns its current text when the file exists.
    pub fn prepare_write(&self, path: &str) -> Result<(Resolved, Option<String>), Refused> {
        let resolved = self.resolve(path)?;
        if resolved.rel.is_empty() {
            return Err(Refused::WorkspaceRoot);
        }
        if !resolved.exists {
            return Ok((resolved, None));
        }
        let before = read_regular_text(&resolved.abs, &resolved.rel)?;
        Ok((resolved, Some(before)))
    }

    /// Writes `content` to a path prepared by [`Jail::prepare_write`], creating parents.
    pub fn write(&self, resolved: &Resolved, content: &str) -> Result<(), Refused> {
        let io = |source| Refused::Io {
            path: resolved.rel.clone(),
            source,
        };
        if content.len() as u64 > MAX_FILE_BYTES {
            return Err(Refused::ContentTooLarge {
                path: resolved.rel.clone(),
            });
        }
        if let Some(parent) = resolved.abs.parent() {
            fs::create_dir_all(parent).map_err(|source| Refused::CreateDir {
                path: resolved.rel.clone(),
                source,
            })?;
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&resolved.abs)
            .map_err(io)?;
        std::io::Write::write_all(&mut file, content.as_bytes()).map_err(io)
    }
}

/// Reads a regular, small, text file without following a final symlink or blocking on a FIFO.
fn read_regular_text(abs: &Path, rel: &str) -> Result<String, Refused> {
    let path = || rel.to_string();
    let io = |source| Refused::Io {
        path: path(),
        source,
    };
    let meta = fs::metadata(abs).map_err(io)?;
    if meta.is_dir() {
        return Err(Refused::Directory { path: path() });
    }
    if !meta.is_file() {
        return Err(Refused::NotRegular { path: path() });
    }
    if meta.nlink() > 1 {
        return Err(Refused::HardLinks { path: path() });
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(Refused::TooLarge {
            path: path(),
            bytes: meta.len(),
        });
    }
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(abs)
        .map_err(io)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.by_ref()
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Refused::GrewTooLarge { path: path() });
    }
    if bytes.contains(&0) {
        return Err(Refused::Binary { path: path() });
    }
    String::from_utf8(bytes).map_err(|_| Refused::NotUtf8 { path: path() })
}
