//! Reading a work tree's files from the host, where a repository (or code that ran in the
//! sandbox) decides what they are.
//!
//! A tracked symlink named `.baton.toml` or `package.json` could point at the daemon's config
//! or a secret file; a FIFO would block the reader; a huge file would fill memory. So the
//! host reads only regular files, never through a final symlink, and only up to a size.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The most a configuration or manifest file read on the host may hold.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// Why a file of the work tree was not read.
#[derive(Debug)]
pub enum NotRead {
    /// There is no such file.
    Absent,
    /// It is there but is not something the host reads: the text says what it is.
    Refused(String),
}

impl std::fmt::Display for NotRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotRead::Absent => f.write_str("no such file"),
            NotRead::Refused(why) => f.write_str(why),
        }
    }
}

/// The text of the regular file at `path`, opened without following a symlink at its last
/// component (callers give a path inside a work tree whose directories git created), and at
/// most `limit` bytes long.
pub fn read_regular(path: &Path, limit: u64) -> Result<String, NotRead> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        // O_NONBLOCK: opening a FIFO must not wait for a writer.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(NotRead::Absent),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(NotRead::Refused(
                "is a symbolic link, which baton does not follow".into(),
            ))
        }
        Err(e) => return Err(NotRead::Refused(format!("cannot be opened: {e}"))),
    };
    let meta = file
        .metadata()
        .map_err(|e| NotRead::Refused(format!("cannot be read: {e}")))?;
    if !meta.is_file() {
        return Err(NotRead::Refused("is not a regular file".into()));
    }
    if meta.nlink() > 1 {
        return Err(NotRead::Refused(
            "is a hard link to another file, which baton does not read".into(),
        ));
    }
    if meta.len() > limit {
        return Err(NotRead::Refused(format!(
            "is {} bytes, more than the {limit} read",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| NotRead::Refused(format!("cannot be read: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(NotRead::Refused(format!(
            "is more than the {limit} bytes read"
        )));
    }
    String::from_utf8(bytes).map_err(|_| NotRead::Refused("is not UTF-8 text".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_regular_files_and_refuses_links_fifos_and_big_files() {
        let dir = std::env::temp_dir().join(format!("baton-tree-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, "token = \"s3cret\"").unwrap();
        std::fs::write(dir.join("plain"), "a = 1").unwrap();
        std::os::unix::fs::symlink(&secret, dir.join("link")).unwrap();
        std::fs::hard_link(&secret, dir.join("hard")).unwrap();
        let fifo = std::ffi::CString::new(dir.join("fifo").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::fs::write(dir.join("big"), vec![b'x'; 100]).unwrap();

        assert_eq!(read_regular(&dir.join("plain"), 10).unwrap(), "a = 1");
        assert!(matches!(
            read_regular(&dir.join("none"), 10),
            Err(NotRead::Absent)
        ));
        for (name, why) in [
            ("link", "symbolic link"),
            ("hard", "hard link"),
            ("fifo", "not a regular file"),
            ("big", "more than"),
        ] {
            let err = read_regular(&dir.join(name), 50).unwrap_err().to_string();
            assert!(err.contains(why), "{name}: {err}");
            assert!(!err.contains("s3cret"), "{name}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
