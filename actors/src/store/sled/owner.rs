//! Which process holds the store: the file beside the database that names it, so that a
//! second process is refused with the first one's pid and command line.

use std::path::Path;

/// The file beside the database that says which process holds it.
pub(super) const OWNER_FILE: &str = "baton.pid";

/// Whether the process recorded as the store's last owner is alive.
pub(super) fn owner_alive(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(OWNER_FILE))
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_string))
        .is_some_and(|pid| Path::new("/proc").join(pid).exists())
}

pub(super) fn owner_is_me(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(OWNER_FILE))
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u32>().ok())
        == Some(std::process::id())
}

pub(super) fn describe_owner(dir: &Path) -> String {
    match std::fs::read_to_string(dir.join(OWNER_FILE)) {
        Ok(text) => {
            let text = text.trim();
            let pid = text.split_whitespace().next().unwrap_or("?");
            let alive = Path::new("/proc").join(pid).exists();
            if alive {
                format!("process {pid} (`{}`)", text[pid.len()..].trim())
            } else {
                format!(
                    "another process (last owner was pid {pid}, `{}`)",
                    text[pid.len()..].trim()
                )
            }
        }
        Err(_) => "another process".to_string(),
    }
}
