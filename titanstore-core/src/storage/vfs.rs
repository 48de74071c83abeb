//! The file layer the storage engine runs on, as a trait, so that tests can
//! swap the real disk ([`RealFs`]) for a simulated one that can crash
//! ([`super::SimFs`]).
//!
//! The trait exposes exactly the operations whose durability matters to the
//! engine: appends and `fdatasync` on an open segment, whole-file writes,
//! renames, removals and directory fsyncs. It owns no policy: when to sync is
//! decided by the WAL and the snapshot store.

use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// A file opened for appending, such as the active WAL segment.
pub trait AppendFile: Send + Sync + fmt::Debug {
    /// Appends `data` (written to the OS, not yet durable).
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// Makes every appended byte durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes (undoes a failed append).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// An exclusive lock on a file; released when dropped.
pub trait VfsLock: Send + Sync + fmt::Debug {}

/// File-system operations used by the storage engine.
pub trait Vfs: Send + Sync + fmt::Debug {
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Opens `path` for appending, creating it if missing.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>>;
    /// Reads a whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Reads exactly `len` bytes at `offset`.
    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Creates or replaces `path` with `data` (not durable until synced).
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Makes a file's data and metadata durable (`fsync`).
    fn sync_file(&self, path: &Path) -> io::Result<()>;
    /// Atomically renames `from` over `to` (durable after `sync_dir`).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file (durable after `sync_dir`).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries in a directory.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Makes creations, renames and removals in a directory durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Cuts (or zero-extends) a file to `len` bytes.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Length of a file.
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// Takes an exclusive lock on `path` (created if missing);
    /// `Ok(None)` if someone else holds it.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn VfsLock>>>;
}

/// The real file system (`std::fs`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

#[derive(Debug)]
struct RealAppendFile(File);

impl AppendFile for RealAppendFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.write_all(data)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

/// Holds the open lock file; the OS lock goes away with it (or with the process).
#[derive(Debug)]
struct RealLock(#[allow(dead_code)] File);

impl VfsLock for RealLock {}

impl Vfs for RealFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Box::new(RealAppendFile(file)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let file = File::open(path)?;
        let mut buf = vec![0; len];
        file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut file = File::create(path)?;
        file.write_all(data)
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        OpenOptions::new().write(true).open(path)?.set_len(len)
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn VfsLock>>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(RealLock(file)))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}
