//! Who this daemon is: its name (kept in its data dir, which it locks for its life), its row
//! in `daemons`, and the refusal to share a database with an older baton that takes one for
//! itself alone.

use std::path::Path;
use std::time::{Duration, Instant};

use super::cluster::CLUSTER_LOCK;
use super::connect::db_err;
use crate::error::{Error, Result};

/// The advisory lock an older baton (one daemon per database) held for its life: a daemon
/// that finds it held refuses to start beside it.
const OLD_OWNER_LOCK: i64 = 0x0062_6174_6f6e;

/// Refuses to start beside a baton of the one-daemon-per-database kind, which holds
/// [`OLD_OWNER_LOCK`] for its life and knows nothing of leases.
pub(super) async fn refuse_old_owner(client: &tokio_postgres::Client, name: &str) -> Result<()> {
    let err = |e: tokio_postgres::Error| db_err(name, e);
    // Another daemon starting now holds it for a moment too, for this same check: only a
    // lock held for a whole second is an older baton's.
    for _ in 0..20 {
        let free: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&OLD_OWNER_LOCK])
            .await
            .map_err(err)?
            .get(0);
        if free {
            client
                .query_one("SELECT pg_advisory_unlock($1)", &[&OLD_OWNER_LOCK])
                .await
                .map_err(err)?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::Database {
        store: name.to_string(),
        message: "an older baton, which takes a database for itself alone, is using it; stop \
                  it before starting this one"
            .into(),
    })
}

/// Registers this daemon (or renews its row after a restart), under [`CLUSTER_LOCK`]: a
/// takeover in progress finishes first, and every later one sees this daemon. A live row of
/// the same name on another host (a copied data dir) is refused; on this host, the data dir's
/// lock proves the last holder of the name is gone.
pub(super) async fn register(
    client: &mut deadpool_postgres::Object,
    name: &str,
    daemon: &str,
    dir: &Path,
    lease_ms: i64,
) -> Result<()> {
    let err = |e: tokio_postgres::Error| db_err(name, e);
    let host = hostname();
    let tx = client.transaction().await.map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CLUSTER_LOCK])
        .await
        .map_err(err)?;
    let live = tx
        .query_opt(
            "SELECT host, dir FROM daemons WHERE id = $1 AND lease_until > now() FOR UPDATE",
            &[&daemon],
        )
        .await
        .map_err(err)?;
    let here = std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .display()
        .to_string();
    if let Some(row) = live {
        let (other_host, other_dir): (String, String) = (row.get(0), row.get(1));
        if other_host != host || other_dir != here {
            return Err(Error::Database {
                store: name.to_string(),
                message: format!(
                    "daemon `{daemon}` (this data dir's name) is live on {other_host}:{other_dir}: \
                     a copied data dir? Give this one its own, or remove its `daemon` file"
                ),
            });
        }
    }
    tx.execute(
        "INSERT INTO daemons (id, host, dir, pid, lease_until) VALUES ($1, $2, $3, $4, \
         now() + make_interval(secs => $5::bigint / 1000.0)) ON CONFLICT (id) DO UPDATE SET \
         host = EXCLUDED.host, dir = EXCLUDED.dir, pid = EXCLUDED.pid, started_at = now(), \
         renewed_at = now(), lease_until = EXCLUDED.lease_until",
        &[
            &daemon,
            &host,
            &here,
            &(std::process::id() as i32),
            &lease_ms,
        ],
    )
    .await
    .map_err(err)?;
    // Slots of this daemon's earlier life are not held by anything running now.
    tx.execute("DELETE FROM slots WHERE daemon = $1", &[&daemon])
        .await
        .map_err(err)?;
    tx.commit().await.map_err(err)
}

/// Locks the data dir for this process's life (one daemon per data dir: its name, its
/// workspaces and its address file are its own); a second process is refused, naming the
/// first.
pub(super) fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join("daemon.lock");
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    // A store of this very process that is closing (reopened in one process) is waited out.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        let locked = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        let error = std::io::Error::last_os_error();
        match locked {
            0 => {
                use std::io::Write;
                file.set_len(0).map_err(io)?;
                write!(file, "{}", std::process::id()).map_err(io)?;
                return Ok(file);
            }
            _ if error.kind() == std::io::ErrorKind::WouldBlock => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                if holder == std::process::id().to_string() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                return Err(Error::InUse {
                    dir: dir.to_path_buf(),
                    holder: format!("process {holder}"),
                });
            }
            _ => return Err(io(error)),
        }
    }
}

/// This daemon's name: made once (`host-xxxxxx`) and kept in the data dir, so that a daemon
/// restarted on its dir takes its own runs back at once instead of waiting out its lease.
pub(super) fn daemon_name(dir: &Path) -> Result<String> {
    let path = dir.join("daemon");
    match std::fs::read_to_string(&path) {
        Ok(name) if !name.trim().is_empty() => return Ok(name.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(Error::Io { path, source }),
    }
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let suffix: String = (0..6)
        .map(|_| ALPHABET[fastrand::usize(..32)] as char)
        .collect();
    let name = format!("{}-{suffix}", hostname());
    std::fs::write(&path, &name).map_err(|source| Error::Io { path, source })?;
    Ok(name)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "baton".into())
}
