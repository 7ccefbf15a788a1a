//! The mirror cache: one bare repository per remote under `<data_dir>/mirrors`, updated by a
//! fetch under a per-mirror file lock, from which workspaces are cloned locally (hard links).
//!
//! Locking: `flock` on `<mirror>.lock`, exclusive while the mirror is created or fetched,
//! shared while a workspace is cloned from it. `flock` locks belong to an open file, so the
//! same lock serialises tasks of one process and processes alike.
//!
//! Spare checkouts: with [`MirrorCache::with_spare`], after each clone a fully checked-out spare
//! is prepared in the background next to the mirror; the next clone of that remote takes it by
//! an atomic rename and brings it up to date with a local fetch, instead of writing every file
//! of the tree again. Two clones at once: one gets the spare, the other clones as usual.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::git::Git;
use super::secret::{redact, redact_userinfo, Credentials};
use super::{Error, Result};

/// Distinguishes temporary directories made by one process.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// The mirror cache of one data directory. Cheap to clone.
#[derive(Clone, Debug)]
pub struct MirrorCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `<data_dir>/mirrors`.
    root: PathBuf,
    /// Whether a spare checkout is prepared after each clone.
    spare: bool,
}

impl MirrorCache {
    /// The cache under `<data_dir>/mirrors` (created on first use), without spare checkouts.
    pub fn new(data_dir: &Path) -> Self {
        MirrorCache {
            inner: Arc::new(Inner {
                root: data_dir.join("mirrors"),
                spare: false,
            }),
        }
    }

    /// Turns spare checkouts on or off (see the module documentation).
    pub fn with_spare(self, spare: bool) -> Self {
        MirrorCache {
            inner: Arc::new(Inner {
                root: self.inner.root.clone(),
                spare,
            }),
        }
    }

    /// `<data_dir>/mirrors`.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Where the mirror of `url` lives: `<data_dir>/mirrors/<sanitized url>.git`.
    pub fn mirror_path(&self, url: &str) -> PathBuf {
        self.inner.root.join(format!("{}.git", sanitize(url)))
    }

    fn spare_path(&self, url: &str) -> PathBuf {
        self.inner.root.join(format!("{}.spare", sanitize(url)))
    }

    /// Creates the mirror of `url` or fetches into it, under the mirror's exclusive lock.
    /// Returns the mirror's path.
    pub async fn update(&self, url: &str, creds: Option<&Credentials>) -> Result<PathBuf> {
        check_url(url)?;
        let mirror = self.mirror_path(url);
        create_dir_all(&self.inner.root).await?;
        let _lock = FileLock::acquire(lock_path(&mirror), true).await?;
        let git = Git {
            creds,
            url: Some(url),
            ..Git::at(&self.inner.root)
        };
        if mirror.join("HEAD").exists() {
            let git = Git {
                dir: mirror.clone(),
                ..git
            };
            // The URL, not the mirror's `origin`: a command talks only to the URL it is given.
            git.run(&[
                "fetch",
                "--prune",
                "--quiet",
                url,
                "+refs/heads/*:refs/heads/*",
                "+refs/tags/*:refs/tags/*",
            ])
            .await?;
        } else {
            // Clone into a temporary name and rename, so a half-made mirror is never used.
            let tmp = self.inner.root.join(format!(
                ".tmp-{}-{}",
                std::process::id(),
                TMP_SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            let tmp_s = tmp.to_string_lossy().into_owned();
            let result = async {
                git.run(&["clone", "--bare", "--quiet", "--", url, &tmp_s])
                    .await?;
                let g = Git::at(&tmp);
                g.run(&[
                    "config",
                    "remote.origin.fetch",
                    "+refs/heads/*:refs/heads/*",
                ])
                .await?;
                g.run(&[
                    "config",
                    "--add",
                    "remote.origin.fetch",
                    "+refs/tags/*:refs/tags/*",
                ])
                .await?;
                // Keep objects that a workspace may still share via hard links alive.
                g.run(&["config", "gc.pruneExpire", "never"]).await?;
                tokio::fs::rename(&tmp, &mirror)
                    .await
                    .map_err(|source| Error::Io {
                        action: "rename mirror into place at",
                        path: mirror.clone(),
                        source,
                    })
            }
            .await;
            if result.is_err() {
                let _ = tokio::fs::remove_dir_all(&tmp).await;
            }
            result?;
        }
        Ok(mirror)
    }

    /// Brings the mirror of `url` up to date and makes `dest` a checkout of it: `base` (or the
    /// remote's default branch) checked out, `origin` pointing at `url`, remote-tracking
    /// branches as of this fetch.
    pub(crate) async fn checkout(
        &self,
        url: &str,
        dest: &Path,
        base: Option<&str>,
        creds: Option<&Credentials>,
    ) -> Result<()> {
        if dest.exists() {
            let mut entries = std::fs::read_dir(dest).map_err(|source| Error::Io {
                action: "read directory",
                path: dest.to_path_buf(),
                source,
            })?;
            if entries.next().is_some() {
                return Err(Error::DestinationExists {
                    path: dest.to_path_buf(),
                });
            }
        }
        let mirror = self.update(url, creds).await?;
        if let Some(parent) = dest.parent() {
            create_dir_all(parent).await?;
        }
        {
            let _lock = FileLock::acquire(lock_path(&mirror), false).await?;
            let spare = self.spare_path(url);
            let took_spare = self.inner.spare && std::fs::rename(&spare, dest).is_ok();
            let mirror_s = mirror.to_string_lossy().into_owned();
            let g = Git::at(dest);
            if took_spare {
                tracing::debug!(dest = %dest.display(), "took spare checkout");
                g.run(&[
                    "fetch",
                    "--prune",
                    "--quiet",
                    &mirror_s,
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                ])
                .await?;
            } else {
                let dest_s = dest.to_string_lossy().into_owned();
                Git::at(&self.inner.root)
                    .run(&["clone", "--local", "--quiet", "--", &mirror_s, &dest_s])
                    .await?;
            }
            let base = match base {
                Some(b) => b.to_string(),
                None => {
                    Git::at(&mirror)
                        .run(&["symbolic-ref", "--short", "HEAD"])
                        .await?
                }
            };
            let tracking = format!("origin/{base}");
            g.run(&["checkout", "--quiet", "-B", &base, &tracking])
                .await?;
            g.run(&["remote", "set-url", "origin", url]).await?;
        }
        if self.inner.spare {
            let cache = self.clone();
            let url = url.to_string();
            tokio::spawn(async move {
                if let Err(e) = cache.prepare_spare(&url).await {
                    tracing::warn!(error = %e, "could not prepare a spare checkout");
                }
            });
        }
        Ok(())
    }

    /// Prepares the spare checkout of `url`'s mirror if there is none (the mirror must exist).
    pub async fn prepare_spare(&self, url: &str) -> Result<()> {
        let mirror = self.mirror_path(url);
        let spare = self.spare_path(url);
        if spare.exists() || !mirror.exists() {
            return Ok(());
        }
        let tmp = self.inner.root.join(format!(
            ".spare-{}-{}",
            std::process::id(),
            TMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let result = async {
            let _lock = FileLock::acquire(lock_path(&mirror), false).await?;
            let (m, t) = (
                mirror.to_string_lossy().into_owned(),
                tmp.to_string_lossy().into_owned(),
            );
            Git::at(&self.inner.root)
                .run(&["clone", "--local", "--quiet", "--", &m, &t])
                .await?;
            // Only one spare: if another was made meanwhile, this one is dropped.
            match std::fs::rename(&tmp, &spare) {
                Ok(()) => Ok(()),
                Err(_) if spare.exists() => {
                    let _ = tokio::fs::remove_dir_all(&tmp).await;
                    Ok(())
                }
                Err(source) => Err(Error::Io {
                    action: "rename spare checkout to",
                    path: spare.clone(),
                    source,
                }),
            }
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_dir_all(&tmp).await;
        }
        result
    }
}

/// Refuses URLs that carry credentials or options; the URL is shown redacted.
pub(crate) fn check_url(url: &str) -> Result<()> {
    let bad = |reason: &str| Error::BadUrl {
        url: redact(url, None),
        reason: reason.to_string(),
    };
    if url.is_empty() {
        return Err(bad("it is empty"));
    }
    if url.starts_with('-') {
        return Err(bad("it starts with '-'"));
    }
    if redact_userinfo(url) != url {
        return Err(bad(
            "it carries credentials; give the token separately so it reaches git only by environment",
        ));
    }
    Ok(())
}

/// A file name for a URL: scheme dropped, anything but `[A-Za-z0-9._-]` made `_`, and a hash of
/// the whole URL so two URLs never share a mirror.
fn sanitize(url: &str) -> String {
    let body = url.split_once("://").map_or(url, |(_, rest)| rest);
    let mut name: String = body
        .trim_end_matches('/')
        .trim_end_matches(".git")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    name = name.trim_start_matches(['.', '_']).to_string();
    name.truncate(100);
    // FNV-1a: stable across runs and versions, unlike std's hasher.
    let hash = url.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    format!("{name}-{:08x}", hash as u32)
}

fn lock_path(mirror: &Path) -> PathBuf {
    mirror.with_extension("lock")
}

async fn create_dir_all(path: &Path) -> Result<()> {
    tokio::fs::create_dir_all(path)
        .await
        .map_err(|source| Error::Io {
            action: "create directory",
            path: path.to_path_buf(),
            source,
        })
}

/// Holds `mirror` exclusively until the lock is dropped: no clone from it and no fetch into it
/// meanwhile (what `baton gc` takes before removing an unused mirror).
pub(crate) async fn lock_exclusive(mirror: &Path) -> Result<FileLock> {
    FileLock::acquire(lock_path(mirror), true).await
}

/// An `flock` on a file, released when dropped (closing the file releases it).
pub(crate) struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    async fn acquire(path: PathBuf, exclusive: bool) -> Result<FileLock> {
        tokio::task::spawn_blocking(move || {
            let err = |source| Error::Lock {
                path: path.clone(),
                source,
            };
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(err)?;
            let op = if exclusive {
                libc::LOCK_EX
            } else {
                libc::LOCK_SH
            };
            loop {
                // SAFETY: flock on a descriptor this function owns; no memory is shared.
                let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
                if rc == 0 {
                    return Ok(FileLock { _file: file });
                }
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(err(e));
                }
            }
        })
        .await
        .map_err(|e| Error::Lock {
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes_urls_into_distinct_names() {
        let a = sanitize("https://github.com/o/r.git");
        let b = sanitize("https://github.com/o/r");
        assert!(a.starts_with("github.com_o_r-"), "{a}");
        assert_ne!(a, b);
        assert!(!sanitize("/tmp/../x").contains('/'));
        assert!(!sanitize("../../etc").starts_with('.'));
    }

    #[test]
    fn refuses_urls_with_credentials() {
        let e = check_url("https://bob:hunter2@example.com/r.git").unwrap_err();
        let msg = e.to_string();
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(msg.contains("***@example.com"), "{msg}");
        assert!(check_url("--upload-pack=x").is_err());
        assert!(check_url("").is_err());
        assert!(check_url("https://example.com/r.git").is_ok());
    }
}
