//! The data directory: its layout (`LOCK`, `snapshot.bin`, `wal/`) and the
//! exclusive lock that keeps a second node off the same directory.

use std::path::{Path, PathBuf};

use super::error::StorageError;
use super::vfs::{Vfs, VfsLock};

/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "LOCK";
/// Name of the WAL directory inside the data directory.
pub const WAL_DIR: &str = "wal";

/// A created and locked data directory; the lock is held while this lives.
#[derive(Debug)]
pub(crate) struct DataDir {
    pub root: PathBuf,
    _lock: Box<dyn VfsLock>,
}

impl DataDir {
    /// Creates `root` if needed and takes its lock.
    pub fn open(vfs: &dyn Vfs, root: &Path) -> Result<Self, StorageError> {
        vfs.create_dir_all(root)
            .map_err(StorageError::io("create data directory", root))?;
        let lock_path = root.join(LOCK_FILE);
        let lock = vfs
            .try_lock(&lock_path)
            .map_err(StorageError::io("lock data directory", &lock_path))?
            .ok_or_else(|| StorageError::Locked {
                path: root.to_path_buf(),
            })?;
        Ok(DataDir {
            root: root.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.root.join(WAL_DIR)
    }
}
