//! `baton backup` and `baton restore`: a consistent copy of the whole store in one file.
//!
//! The copy is taken under the commit gate, so no batch is half in it: every commit waits
//! until the copy is written (and readers arriving behind a waiting commit wait too). The
//! file is every sled tree, key by key, in a small framed format: `BATONBAK`, the backup
//! format and the store's format version (u32 BE each), then per tree `T` and its name, per
//! entry `K`, its key and its value, each byte string preceded by its u32 BE length, and `E`
//! at the very end (a truncated file is refused).

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use super::{SledStore, FORMAT_KEY, FORMAT_VERSION};
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"BATONBAK";
/// The layout of the file itself (not of the store inside it).
const BACKUP_FORMAT: u32 = 1;

/// What a backup or a restore moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackupStats {
    /// Trees copied.
    pub trees: u64,
    /// Keys copied.
    pub entries: u64,
    /// Bytes of the file.
    pub bytes: u64,
}

struct Counting<W> {
    out: W,
    bytes: u64,
}

impl<W: Write> Counting<W> {
    fn bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.out.write_all(&(b.len() as u32).to_be_bytes())?;
        self.out.write_all(b)?;
        self.bytes += 4 + b.len() as u64;
        Ok(())
    }

    fn tag(&mut self, t: u8) -> std::io::Result<()> {
        self.out.write_all(&[t])?;
        self.bytes += 1;
        Ok(())
    }
}

impl SledStore {
    /// Writes a consistent copy of the store to `path` (through a temporary file beside it,
    /// renamed into place when complete). Blocking: call it off the async runtime.
    pub fn backup(&self, path: &Path) -> Result<BackupStats> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let tmp = path.with_extension("partial");
        // Owner-only: a backup holds every run's inputs and step output.
        let _ = std::fs::remove_file(&tmp);
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?
        };
        let written = self.backup_to(BufWriter::new(file), &tmp);
        match written {
            Ok(stats) => {
                std::fs::rename(&tmp, path).map_err(io)?;
                Ok(stats)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn backup_to(&self, out: BufWriter<std::fs::File>, path: &Path) -> Result<BackupStats> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut out = Counting { out, bytes: 0 };
        let mut stats = BackupStats::default();
        // Held to the end: no commit applies while the trees are read.
        let _gate = self.inner.gate.read().unwrap_or_else(|e| e.into_inner());
        out.out.write_all(MAGIC).map_err(io)?;
        out.out
            .write_all(&BACKUP_FORMAT.to_be_bytes())
            .map_err(io)?;
        out.out
            .write_all(&self.format_version()?.to_be_bytes())
            .map_err(io)?;
        out.bytes += 16;
        for name in self.inner.db.tree_names() {
            let tree = self
                .inner
                .db
                .open_tree(&name)
                .map_err(|e| self.sled_err(e))?;
            out.tag(b'T').map_err(io)?;
            out.bytes(&name).map_err(io)?;
            stats.trees += 1;
            for entry in tree.iter() {
                let (k, v) = entry.map_err(|e| self.sled_err(e))?;
                out.tag(b'K').map_err(io)?;
                out.bytes(&k).map_err(io)?;
                out.bytes(&v).map_err(io)?;
                stats.entries += 1;
            }
        }
        out.tag(b'E').map_err(io)?;
        let file = out.out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        stats.bytes = out.bytes;
        Ok(stats)
    }

    /// The store's format version as stored (0: written before versions were).
    pub(crate) fn format_version(&self) -> Result<u32> {
        stored_version(&self.inner.db).map_err(|e| self.sled_err(e))
    }

    /// Reads a backup into `dir`, which must hold no store yet. The store is built beside
    /// it and renamed into place only when the whole file was read, so a bad file leaves
    /// nothing behind.
    pub fn restore(dir: &Path, backup: &Path) -> Result<BackupStats> {
        let db_dir = dir.join("db");
        if db_dir.exists() {
            return Err(Error::Backup {
                path: dir.to_path_buf(),
                message: "this data dir already holds a store; restore into an empty one".into(),
            });
        }
        let file = std::fs::File::open(backup).map_err(|source| Error::Io {
            path: backup.to_path_buf(),
            source,
        })?;
        crate::store::private_dir(dir)?;
        let building = dir.join("db.restoring");
        let _ = std::fs::remove_dir_all(&building);
        let result = restore_into(&building, BufReader::new(file), backup);
        match result {
            Ok(stats) => {
                std::fs::rename(&building, &db_dir).map_err(|source| Error::Io {
                    path: db_dir.clone(),
                    source,
                })?;
                Ok(stats)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&building);
                Err(e)
            }
        }
    }
}

pub(super) fn stored_version(db: &sled::Db) -> sled::Result<u32> {
    Ok(db
        .get(FORMAT_KEY)?
        .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0))
}

fn restore_into(db_dir: &Path, mut input: impl Read, path: &Path) -> Result<BackupStats> {
    let bad = |message: String| Error::Backup {
        path: path.to_path_buf(),
        message,
    };
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let sled_err = |source| Error::Store {
        dir: db_dir.to_path_buf(),
        source,
    };
    let mut header = [0u8; 16];
    input
        .read_exact(&mut header)
        .map_err(|_| bad("not a baton backup (too short)".into()))?;
    if &header[..8] != MAGIC {
        return Err(bad("not a baton backup (no BATONBAK header)".into()));
    }
    let format = u32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
    if format != BACKUP_FORMAT {
        return Err(bad(format!(
            "backup file format {format}; this baton reads format {BACKUP_FORMAT}"
        )));
    }
    let version = u32::from_be_bytes(header[12..16].try_into().expect("4 bytes"));
    if version > FORMAT_VERSION {
        return Err(bad(format!(
            "the store in it is format version {version}, newer than this baton's {FORMAT_VERSION}; use a newer baton"
        )));
    }
    let db = sled::Config::new().path(db_dir).open().map_err(sled_err)?;
    let mut stats = BackupStats::default();
    let mut tree: Option<sled::Tree> = None;
    let read_bytes = |input: &mut dyn Read| -> Result<Vec<u8>> {
        let mut len = [0u8; 4];
        input
            .read_exact(&mut len)
            .map_err(|_| bad("truncated".into()))?;
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        input
            .read_exact(&mut buf)
            .map_err(|_| bad("truncated".into()))?;
        Ok(buf)
    };
    loop {
        let mut tag = [0u8; 1];
        input
            .read_exact(&mut tag)
            .map_err(|_| bad("truncated: no end marker".into()))?;
        match tag[0] {
            b'T' => {
                let name = read_bytes(&mut input)?;
                tree = Some(db.open_tree(name).map_err(sled_err)?);
                stats.trees += 1;
            }
            b'K' => {
                let key = read_bytes(&mut input)?;
                let value = read_bytes(&mut input)?;
                let Some(tree) = &tree else {
                    return Err(bad("an entry before any tree".into()));
                };
                tree.insert(key, value).map_err(sled_err)?;
                stats.entries += 1;
            }
            b'E' => break,
            other => return Err(bad(format!("unknown record tag {other:#04x}"))),
        }
    }
    db.flush().map_err(sled_err)?;
    stats.bytes = std::fs::metadata(path).map_err(io)?.len();
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::super::keys::Tree;
    use super::super::writes::Write;
    use super::*;

    #[tokio::test]
    async fn a_newer_store_is_refused_unread_and_an_older_one_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(store.format_version().unwrap(), FORMAT_VERSION);
            let write = Write::put_raw(Tree::Jobs, b"job".to_vec(), b"{}".to_vec());
            store.submit(vec![write]).await.unwrap();
            store
                .inner
                .db
                .insert(FORMAT_KEY, &99u32.to_be_bytes())
                .unwrap();
            store.inner.db.flush().unwrap();
        }
        let checksum = || {
            let db = sled::open(dir.path().join("db")).unwrap();
            db.checksum().unwrap()
        };
        let before = checksum();
        let err = SledStore::open(dir.path(), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("format version 99")
                && err.contains(&format!("this baton's {FORMAT_VERSION}")),
            "{err}"
        );
        assert_eq!(checksum(), before, "a refused open wrote to the store");

        // A store from before versions existed has no key: it is upgraded and marked.
        {
            let db = sled::open(dir.path().join("db")).unwrap();
            db.remove(FORMAT_KEY).unwrap();
            db.flush().unwrap();
        }
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(store.format_version().unwrap(), FORMAT_VERSION);
        assert!(store.tree(Tree::Jobs).contains_key(b"job").unwrap());
    }

    #[tokio::test]
    async fn a_truncated_backup_restores_nothing_and_a_full_one_everything() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("store.bak");
        {
            let store = SledStore::open(&dir.path().join("a"), 1 << 20).unwrap();
            let writes = (0..50u32)
                .map(|i| Write::put_raw(Tree::Jobs, i.to_be_bytes().to_vec(), vec![7; 100]))
                .collect();
            store.submit(writes).await.unwrap();
            let stats = store.backup(&file).unwrap();
            assert!(stats.entries >= 51, "{stats:?}");
            assert_eq!(stats.bytes, std::fs::metadata(&file).unwrap().len());
        }
        let bytes = std::fs::read(&file).unwrap();
        let cut = dir.path().join("cut.bak");
        std::fs::write(&cut, &bytes[..bytes.len() - 20]).unwrap();
        let target = dir.path().join("b");
        let err = SledStore::restore(&target, &cut).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        assert!(!target.join("db").exists() && !target.join("db.restoring").exists());

        SledStore::restore(&target, &file).unwrap();
        let err = SledStore::restore(&target, &file).unwrap_err().to_string();
        assert!(err.contains("already holds a store"), "{err}");
        let store = SledStore::open(&target, 1 << 20).unwrap();
        assert_eq!(store.tree(Tree::Jobs).len(), 50);
        assert_eq!(store.format_version().unwrap(), FORMAT_VERSION);
    }
}
