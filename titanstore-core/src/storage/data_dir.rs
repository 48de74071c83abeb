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
/// Tries to take the data dir lock, 20 ms apart, before giving up.
const LOCK_ATTEMPTS: u32 = 25;

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
        // A lock can be held for a moment by a process that is exiting, or by
        // a forked child of the previous owner until it execs: retry briefly
        // before calling the directory taken.
        for attempt in 0..LOCK_ATTEMPTS {
            let lock = vfs
                .try_lock(&lock_path)
                .map_err(StorageError::io("lock data directory", &lock_path))?;
            if let Some(lock) = lock {
                return Ok(DataDir {
                    root: root.to_path_buf(),
                    _lock: lock,
                });
            }
            if attempt + 1 < LOCK_ATTEMPTS {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        Err(StorageError::Locked {
            path: root.to_path_buf(),
        })
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.root.join(WAL_DIR)
    }
}
