//! Retention: what `baton gc` removes, and the daemon once a day.
//!
//! - Workspaces of runs that completed or were cancelled longer than `[retention] workspaces`
//!   ago; of failed runs after `failed_workspaces` (kept longer for a person to look at). A
//!   run that is pending, running or waiting keeps its workspace, however old.
//! - Finished runs older than `runs`, with everything the store holds for them, deleted through
//!   [`Engine::delete_runs`] in batches while the engine keeps running.
//! - Mirrors no clone has fetched through for `mirrors`.
//!
//! A workspace whose run the store no longer knows is removed once it is as old as `workspaces`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use baton_actors::definition::Dur;
use baton_actors::{now_ms, Engine, RunStatus};
use serde::{Deserialize, Serialize};

/// Runs deleted per group commit.
const BATCH: usize = 100;

/// `[retention]` in `config.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Workspaces of completed or cancelled runs.
    pub workspaces: Dur,
    /// Workspaces of failed runs.
    pub failed_workspaces: Dur,
    /// Finished runs, their events, step records, change journals and deliveries.
    pub runs: Dur,
    /// Mirrors not used for this long.
    pub mirrors: Dur,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: u64 = 24 * 60 * 60;
        Retention {
            workspaces: Dur(Duration::from_secs(7 * DAY)),
            failed_workspaces: Dur(Duration::from_secs(30 * DAY)),
            runs: Dur(Duration::from_secs(90 * DAY)),
            mirrors: Dur(Duration::from_secs(30 * DAY)),
        }
    }
}

/// One thing removed (or, in a dry run, that would be).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Removed {
    /// `workspace`, `run` or `mirror`.
    pub kind: String,
    /// The run id or the mirror's directory name.
    pub name: String,
    /// Bytes on disk it took (0 for a run: the store reclaims its space itself).
    pub bytes: u64,
}

/// What a collection did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// Nothing was removed: this is what would be.
    pub dry_run: bool,
    /// What was removed.
    pub removed: Vec<Removed>,
    /// Bytes freed on disk (workspaces and mirrors).
    pub bytes_freed: u64,
}

/// Once a day while the daemon runs (the first pass a few minutes after it starts): `collect`,
/// logging what it removed.
pub async fn daily(engine: Engine, retention: Retention) {
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(10 * 60),
        Duration::from_secs(24 * 60 * 60),
    );
    loop {
        ticks.tick().await;
        let dir = engine.dir().to_path_buf();
        match collect(&engine, &dir, &retention, false).await {
            Ok(report) => tracing::info!(
                removed = report.removed.len(),
                bytes_freed = report.bytes_freed,
                "retention: daily gc done"
            ),
            Err(e) => tracing::warn!("retention: daily gc failed: {e}"),
        }
    }
}

/// Why a collection stopped; what was removed before it stays removed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine's store could not be read or written.
    #[error(transparent)]
    Engine(#[from] baton_actors::Error),
    /// `workspaces/` or `mirrors/` could not be listed.
    #[error("{}: {source}", dir.display())]
    List {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A workspace or mirror could not be removed.
    #[error("removing {}: {source}", dir.display())]
    Remove {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A mirror's lock could not be taken.
    #[error(transparent)]
    Mirror(#[from] crate::workspace::Error),
}

/// Applies `retention` to `engine`'s store and the workspaces and mirrors under `data_dir`.
pub async fn collect(
    engine: &Engine,
    data_dir: &Path,
    retention: &Retention,
    dry_run: bool,
) -> Result<Report, Error> {
    let now = now_ms();
    let ago = |d: &Dur| now.saturating_sub(u64::try_from(d.0.as_millis()).unwrap_or(u64::MAX));
    let mut report = Report {
        dry_run,
        ..Report::default()
    };

    // Runs first, so the workspaces of the runs deleted go with them below.
    let expired = engine.finished_before(ago(&retention.runs))?;
    let ids: Vec<String> = expired.iter().map(|r| r.id.clone()).collect();
    let deleted = if dry_run {
        ids
    } else {
        engine.delete_runs(&ids, BATCH).await?
    };
    for id in &deleted {
        report.removed.push(Removed {
            kind: "run".into(),
            name: id.clone(),
            bytes: 0,
        });
    }

    for (run, dir) in entries(&data_dir.join("workspaces"))? {
        let keep_for = if deleted.contains(&run) {
            None
        } else {
            match engine.head(&run) {
                Ok(head) => match head.status {
                    RunStatus::Completed | RunStatus::Cancelled => {
                        Some((head.completed_at, &retention.workspaces))
                    }
                    RunStatus::Failed => Some((head.completed_at, &retention.failed_workspaces)),
                    // Pending, running or waiting: never removed.
                    _ => continue,
                },
                Err(baton_actors::Error::UnknownRun(_)) => {
                    Some((Some(modified_ms(&dir)), &retention.workspaces))
                }
                Err(e) => return Err(e.into()),
            }
        };
        if let Some((ended, keep)) = keep_for {
            if ended.unwrap_or(now) >= ago(keep) {
                continue;
            }
        }
        remove(&mut report, "workspace", run, &dir).await?;
    }

    for (name, dir) in entries(&data_dir.join("mirrors"))? {
        let used = |dir: &Path| modified_ms(dir).max(modified_ms(&dir.join("FETCH_HEAD")));
        if used(&dir) >= ago(&retention.mirrors) {
            continue;
        }
        // Taken as a fetch takes it, so no clone reads the mirror while it goes; looked at
        // again once held, in case a fetch used it meanwhile.
        let _held = if dry_run {
            None
        } else {
            Some(crate::workspace::mirror::lock_exclusive(&dir).await?)
        };
        if used(&dir) < ago(&retention.mirrors) {
            remove(&mut report, "mirror", name, &dir).await?;
        }
    }
    Ok(report)
}

/// The directories in `dir` (none when it does not exist), by name.
fn entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let list = |source| Error::List {
        dir: dir.to_path_buf(),
        source,
    };
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(list(e)),
    };
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(list)?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            ));
        }
    }
    out.sort();
    Ok(out)
}

async fn remove(
    report: &mut Report,
    kind: &'static str,
    name: String,
    dir: &Path,
) -> Result<(), Error> {
    let bytes = size(dir);
    if !report.dry_run {
        match tokio::fs::remove_dir_all(dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(Error::Remove {
                    dir: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
    report.bytes_freed += bytes;
    report.removed.push(Removed {
        kind: kind.into(),
        name,
        bytes,
    });
    Ok(())
}

/// Bytes of the files under `path` (symlinks not followed).
fn size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|read| read.flatten().map(|e| size(&e.path())).sum())
        .unwrap_or(0)
}

/// When `path` was last modified, in ms since the epoch (0 when it does not exist).
fn modified_ms(path: &Path) -> u64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Human-readable bytes: `1.5 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_as_people_read_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn retention_reads_durations_and_refuses_unknown_keys() {
        let r: Retention = toml::from_str("workspaces = \"1d\"\nruns = \"12h\"\n").unwrap();
        assert_eq!(r.workspaces.0, Duration::from_secs(86_400));
        assert_eq!(r.failed_workspaces.0, Duration::from_secs(30 * 86_400));
        assert!(toml::from_str::<Retention>("run = \"1d\"").is_err());
    }
}
