//! Typed errors of the storage layer: every way the disk, the data directory
//! or a caller's bad argument can make a storage operation fail.
//!
//! I/O errors carry the operation and the path; corruption carries the file and
//! byte offset, so an operator can find the damaged record.

use std::io;
use std::path::PathBuf;

use crate::types::LogIndex;

/// An error from the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A file-system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The disk is full (ENOSPC or a quota): nothing was changed that a
    /// retry cannot redo, so the storage stays usable.
    #[error("no space left on device: {op} {}", path.display())]
    NoSpace { op: &'static str, path: PathBuf },
    /// Another process (or another open `Storage`) holds the data directory.
    #[error("data directory {} is locked by another TitanStore node", path.display())]
    Locked { path: PathBuf },
    /// A record failed its checksum or could not be decoded, before the tail.
    #[error("corrupt record in {} at byte offset {offset}: {reason}", file.display())]
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The WAL does not continue where the snapshot ends.
    #[error(
        "log gap: the snapshot ends at index {snapshot_index} but the WAL resumes at {wal_first_index}"
    )]
    LogGap {
        snapshot_index: LogIndex,
        wal_first_index: LogIndex,
    },
    /// Serializing a record failed.
    #[error("encoding a record failed: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// A single record would exceed the 4 GiB frame limit.
    #[error("record of {0} bytes is too large for one frame")]
    RecordTooLarge(usize),
    /// The caller passed entries that cannot be appended.
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    /// The requested index was compacted into the snapshot.
    #[error("index {index} is compacted (first retained index is {first_index})")]
    Compacted {
        index: LogIndex,
        first_index: LogIndex,
    },
    /// The requested range reaches past the last entry.
    #[error("range {lo}..{hi} is out of bounds (last index is {last_index})")]
    OutOfRange {
        lo: LogIndex,
        hi: LogIndex,
        last_index: LogIndex,
    },
    /// A snapshot older than the one already saved.
    #[error("snapshot at index {index} is older than the saved snapshot at {current}")]
    StaleSnapshot { index: LogIndex, current: LogIndex },
    /// An earlier write or fsync failed; what reached the disk is unknown, so
    /// the only safe continuation is to reopen (and recover).
    #[error("storage is unusable after an earlier I/O failure: {0}")]
    Poisoned(String),
}

impl StorageError {
    /// Builds an [`StorageError::Io`] for `op` on `path`, or a
    /// [`StorageError::NoSpace`] when the disk is full.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| {
            if is_full(&source) {
                StorageError::NoSpace { op, path }
            } else {
                StorageError::Io { op, path, source }
            }
        }
    }

    /// Whether this is a full disk (the write can be retried once there is room).
    pub fn is_no_space(&self) -> bool {
        matches!(self, StorageError::NoSpace { .. })
    }
}

/// ENOSPC or EDQUOT.
pub(crate) fn is_full(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}
