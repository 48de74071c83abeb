//! The snapshot file: one CRC-framed [`Snapshot`] at `<data dir>/snapshot.bin`.
//!
//! Saving writes a temp file, fsyncs it, renames it over the previous one and
//! fsyncs the directory, so a crash at any point leaves the old or the new
//! snapshot, never neither. This module does not decide when to snapshot.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::{debug, warn};

use super::error::StorageError;
use super::frame::{encode_framed, read_frame};
use super::vfs::Vfs;
use crate::types::{self, LogIndex, Snapshot};

const SNAPSHOT_FILE: &str = "snapshot.bin";
const TEMP_FILE: &str = "snapshot.tmp";

/// Reads and atomically replaces the snapshot file. Clones share one lock,
/// so saves from different threads never interleave and an older snapshot
/// never replaces a newer one.
#[derive(Clone, Debug)]
pub(crate) struct SnapshotStore {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    /// Last index of the snapshot on disk (0: none).
    saved: Arc<Mutex<LogIndex>>,
}

impl SnapshotStore {
    /// Opens the store in `dir`, removing a temp file left by an interrupted save.
    pub fn open(vfs: Arc<dyn Vfs>, dir: &Path) -> Result<Self, StorageError> {
        let store = SnapshotStore {
            vfs,
            dir: dir.to_path_buf(),
            saved: Arc::new(Mutex::new(0)),
        };
        let tmp = store.dir.join(TEMP_FILE);
        match store.vfs.remove(&tmp) {
            Ok(()) => warn!(file = %tmp.display(), "removed a snapshot temp file left by a crash"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("remove snapshot temp file", tmp)(e)),
        }
        Ok(store)
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_FILE)
    }

    /// Records the index of the snapshot found on disk at open.
    pub fn set_saved(&self, index: LogIndex) -> Result<(), StorageError> {
        *self.lock()? = index;
        Ok(())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, LogIndex>, StorageError> {
        self.saved
            .lock()
            .map_err(|_| StorageError::Poisoned("snapshot lock poisoned by a panic".into()))
    }

    /// Durably replaces the snapshot, unless the one on disk is newer
    /// (returns false then, and changes nothing).
    pub fn save(&self, snap: &Snapshot) -> Result<bool, StorageError> {
        let mut saved = self.lock()?;
        if snap.meta.last_index < *saved {
            debug!(
                index = snap.meta.last_index,
                on_disk = *saved,
                "older snapshot not saved"
            );
            return Ok(false);
        }
        let mut bytes = Vec::with_capacity(snap.data.len() + 256);
        encode_framed(snap, &mut bytes)?;
        let (tmp, path) = (self.dir.join(TEMP_FILE), self.path());
        let written = self
            .vfs
            .write(&tmp, &bytes)
            .map_err(StorageError::io("write snapshot temp file", &tmp))
            .and_then(|()| {
                self.vfs
                    .sync_file(&tmp)
                    .map_err(StorageError::io("fsync snapshot temp file", &tmp))
            });
        if let Err(err) = written {
            // A part-written temp file must not keep a full disk full.
            let _ = self.vfs.remove(&tmp);
            return Err(err);
        }
        self.vfs
            .rename(&tmp, &path)
            .map_err(StorageError::io("rename snapshot into place", &path))?;
        self.vfs
            .sync_dir(&self.dir)
            .map_err(StorageError::io("fsync data directory", &self.dir))?;
        debug!(
            index = snap.meta.last_index,
            bytes = bytes.len(),
            "snapshot saved"
        );
        *saved = snap.meta.last_index;
        Ok(true)
    }

    /// Loads and checks the snapshot; `None` if there is none yet.
    pub fn load(&self) -> Result<Option<Snapshot>, StorageError> {
        let path = self.path();
        let bytes = match self.vfs.read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError::io("read snapshot", path)(e)),
        };
        let corrupt = |offset: usize, reason: String| StorageError::Corrupt {
            file: path.clone(),
            offset: offset as u64,
            reason,
        };
        let frame = match read_frame(&bytes, 0) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Err(corrupt(0, "empty snapshot file".into())),
            Err(e) => return Err(corrupt(0, format!("{e:?}"))),
        };
        if frame.next != bytes.len() {
            return Err(corrupt(
                frame.next,
                "trailing bytes after the snapshot".into(),
            ));
        }
        let snap = match types::decode::<Snapshot>(frame.payload) {
            Ok(snap) => snap,
            // A release 1 file: its configuration has no learners.
            Err(e) => types::decode::<types::LegacySnapshot>(frame.payload)
                .map(Snapshot::from)
                .map_err(|_| corrupt(0, format!("undecodable snapshot: {e}")))?,
        };
        Ok(Some(snap))
    }
}

/// Where the snapshot in `dir` lives.
pub fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOT_FILE)
}

/// Reads the snapshot in `dir` on the real file system without changing
/// anything, so it is safe while the node saves a new one (the rename is atomic).
pub fn read_snapshot(dir: &Path) -> Result<Option<Snapshot>, StorageError> {
    SnapshotStore {
        vfs: Arc::new(super::vfs::RealFs),
        dir: dir.to_path_buf(),
        saved: Arc::new(Mutex::new(0)),
    }
    .load()
}
