//! Durable storage of one node: the write-ahead log of Raft entries and hard
//! state, the snapshot file, and the locked data directory holding both.
//!
//! [`Storage`] is what the runtime uses. It never decides *when* to sync or
//! snapshot (that is the node's group-commit and snapshot policy); it makes
//! what it is given durable, and on open recovers exactly what was durable.
//! All file access goes through [`Vfs`], so tests run the same code on
//! [`SimFs`], a disk that can crash.
//!
//! Design choices:
//! - Durability is explicit: `append`, `set_hard_state` and `truncate_suffix`
//!   are plain writes into the active segment; one `sync` (one `fdatasync`)
//!   covers all of them, so the runtime batches as many as it likes per fsync.
//! - Memory per entry is ~32 bytes (term and file location); `entries` decodes
//!   from the segment files (page cache). The state machine already holds the
//!   data, so keeping the log in memory too would double the footprint.
//! - Truncation is logical (a record), so every change is one atomic append;
//!   space comes back when a snapshot lets whole segments be deleted.
//! - After a failed write or fsync the storage is poisoned: what reached the
//!   disk is unknown, so only reopening (recovery) is safe.
//!
//! - Recovery trusts nothing it did not fsync itself: after a killed process
//!   the page cache still holds writes that were never fsynced, and a later
//!   power loss would take them away. So open fsyncs every segment, snapshot
//!   and hard-state copy it read, and the directories, before anything it
//!   found counts as durable.
//! - The hard state (votes) lives in two alternately written files, so a
//!   damaged record can never make the node forget a vote (`hard_state.rs`).
//!   They are rewritten only when the term or the vote changes; the commit
//!   index travels in the WAL's records (losing it is safe).
//!
//! On-disk layout: `LOCK`, `hardstate.0`, `hardstate.1`, `snapshot.bin`,
//! `wal/<seq:020>-<first index:020>.log`; beside them the transport keeps
//! `snapshot.recv`, an image being received (a cache, never recovered from).
//!
//! Files: `error.rs` (errors), `vfs.rs` (file layer, real disk), `sim_fs.rs`
//! (simulated disk), `frame.rs` (CRC framing), `wal/` (log and recovery),
//! `snapshot.rs` (snapshot file), `data_dir.rs` (layout and lock).

mod data_dir;
mod error;
mod frame;
mod hard_state;
mod sim_fs;
mod snapshot;
mod vfs;
mod wal;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use data_dir::{LOCK_FILE, WAL_DIR};
pub use error::StorageError;
pub use sim_fs::SimFs;
pub use snapshot::{
    ImagePrefix, SnapshotFile, decode_snapshot_head, open_snapshot_file, read_file_prefix,
    read_snapshot, snapshot_path,
};
pub use vfs::{AppendFile, Preallocation, RealFs, Vfs, VfsLock};

use crate::types::{Entry, HardState, LogIndex, Snapshot, SnapshotMeta, StoredLog, Term};
use data_dir::DataDir;
use hard_state::HardStateStore;
use snapshot::SnapshotStore;
use wal::Wal;

/// Tunables of the storage engine.
#[derive(Clone, Debug)]
pub struct StorageOptions {
    /// A WAL segment is rolled once it reaches this many bytes.
    pub segment_bytes: u64,
    /// Recovery hands back whole only the newest entries, up to about this
    /// many bytes ([`Entry::memory_bytes`]); of the older ones it hands
    /// back their terms and configs ([`Recovered::stored`]).
    pub recovered_entry_bytes: u64,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            segment_bytes: 64 * 1024 * 1024,
            recovered_entry_bytes: 4 << 20,
        }
    }
}

/// A torn final WAL record that recovery cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub file: PathBuf,
    /// Where the torn record began (the file's new length).
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes_cut: u64,
    /// What was wrong with it.
    pub reason: String,
}

/// Everything durable that [`Storage::open`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    /// The retained log after the snapshot that was left on disk: terms
    /// and configs (read the entries back with [`Storage::read_entries`]).
    pub stored: StoredLog,
    /// The rest of the retained log, the newest entries, in index order.
    pub entries: Vec<Entry>,
    pub torn_tail: Option<TornTail>,
}

impl Recovered {
    /// Whether the data dir held any state at all (a hard state, a snapshot
    /// or log entries); a node that recovered none is new.
    pub fn holds_state(&self) -> bool {
        self.hard_state != HardState::default()
            || self.snapshot.is_some()
            || !self.stored.terms.is_empty()
            || !self.entries.is_empty()
    }
}

/// Counters for benchmarks and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageStats {
    /// `fdatasync` calls on WAL segments since open.
    pub wal_fsyncs: u64,
    /// WAL segment files currently retained.
    pub segments: usize,
    /// Time spent in those `fdatasync` calls.
    pub wal_fsync_time: std::time::Duration,
}

/// Saves snapshots from any thread (see [`Storage::snapshot_writer`]).
#[derive(Clone, Debug)]
pub struct SnapshotWriter {
    store: SnapshotStore,
}

impl SnapshotWriter {
    /// Durably writes `snap` (temp file, fsync, rename, directory fsync).
    /// Returns false, changing nothing, if a newer snapshot is already on disk.
    pub fn save(&self, snap: &Snapshot) -> Result<bool, StorageError> {
        self.store.save(snap)
    }
}

/// A node's durable state: locked data directory, WAL and snapshot.
#[derive(Debug)]
pub struct Storage {
    wal: Wal,
    snapshots: SnapshotStore,
    hard_state: HardStateStore,
    /// Set since the last sync: written to the two-copy files only after
    /// the WAL is synced (see `set_hard_state`).
    pending_hard_state: Option<HardState>,
    /// The last hard state set (or recovered).
    current_hard_state: HardState,
    // Declared last so that the lock is released after everything else closed.
    dir: DataDir,
}

impl Storage {
    /// Opens (creating if needed) the data directory `dir`, locks it and
    /// recovers: load the snapshot, then replay the WAL after it.
    pub fn open(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        options: StorageOptions,
    ) -> Result<(Storage, Recovered), StorageError> {
        let data_dir = DataDir::open(vfs.as_ref(), dir)?;
        let mut hard_state = HardStateStore::open(vfs.clone(), dir)?;
        let snapshots = SnapshotStore::open(vfs.clone(), dir)?;
        let snapshot = snapshots.load()?;
        if snapshot.is_some() {
            let path = snapshots.path();
            vfs.sync_file(&path)
                .map_err(StorageError::io("fsync snapshot", &path))?;
        }
        snapshots.set_saved(snapshot.as_ref().map_or(0, |s| s.meta.last_index))?;
        let (snap_index, snap_term) = snapshot
            .as_ref()
            .map_or((0, 0), |s| (s.meta.last_index, s.meta.last_term));
        let replayed = wal::open(
            vfs.clone(),
            data_dir.wal_dir(),
            options.segment_bytes,
            options.recovered_entry_bytes,
            snap_index,
            snap_term,
        )?;
        vfs.sync_dir(dir)
            .map_err(StorageError::io("fsync data directory", dir))?;
        // The two-copy files are the authority; a data dir from release 1 has
        // its hard state only in the WAL: from now on it is kept in both.
        // The WAL's record is written first and the files after the WAL sync,
        // so the WAL may hold a newer one (now fsynced by replay) that a crash
        // kept from the files: the newer of the two wins, and goes to the files.
        let newer = |a: &HardState, b: &HardState| {
            (a.term, a.voted_for.is_some(), a.commit) > (b.term, b.voted_for.is_some(), b.commit)
        };
        let wal_state = replayed.wal.hard_state().clone();
        let state = match hard_state.current() {
            Some(files) if !newer(&wal_state, files) => files.clone(),
            _ => {
                if wal_state != HardState::default() {
                    hard_state.save(&wal_state, dir)?;
                }
                wal_state
            }
        };
        let recovered = Recovered {
            hard_state: state.clone(),
            snapshot,
            stored: replayed.stored,
            entries: replayed.entries,
            torn_tail: replayed.torn_tail,
        };
        let storage = Storage {
            wal: replayed.wal,
            snapshots,
            hard_state,
            pending_hard_state: None,
            current_hard_state: state,
            dir: data_dir,
        };
        Ok((storage, recovered))
    }

    /// [`Storage::open`] on the real file system with default options.
    pub fn open_real(dir: &Path) -> Result<(Storage, Recovered), StorageError> {
        Storage::open(Arc::new(RealFs), dir, StorageOptions::default())
    }

    /// Appends consecutive entries after dropping any retained entries from
    /// the first one's index on (conflict truncation). Not durable until
    /// [`Storage::sync`].
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.wal.append(entries)
    }

    /// Records the hard state: a WAL record now, and the two-copy files (see
    /// `hard_state.rs`) at the next sync, *after* the WAL is synced. The order
    /// matters: the hard state names a commit index, and the entries it
    /// covers must be durable before it is (else a power loss between the two
    /// fsyncs would let recovery apply entries that were never committed).
    /// Durable once [`Storage::sync`] returns.
    pub fn set_hard_state(&mut self, hs: &HardState) -> Result<(), StorageError> {
        self.wal.set_hard_state(hs)?;
        self.pending_hard_state = Some(hs.clone());
        self.current_hard_state = hs.clone();
        Ok(())
    }

    /// After a WAL sync: makes a pending hard state durable in its files.
    /// Only a new term or vote is written there: the commit index alone
    /// (which moves with nearly every batch) is safe to lose, since a lower
    /// commit after recovery is only re-learned, and the WAL record already
    /// holds it. So a write batch costs one fsync, not three, and opens no file.
    fn flush_hard_state(&mut self) -> Result<(), StorageError> {
        let same_vote =
            |a: &HardState, b: &HardState| a.term == b.term && a.voted_for == b.voted_for;
        if self
            .pending_hard_state
            .as_ref()
            .zip(self.hard_state.current())
            .is_some_and(|(pending, files)| same_vote(pending, files))
        {
            self.pending_hard_state = None;
        }
        if let Some(hs) = self.pending_hard_state.take()
            && let Err(err) = self.hard_state.save(&hs, &self.dir.root)
        {
            // Still owed: a retry (after a full disk) writes it again.
            self.pending_hard_state = Some(hs);
            return Err(err);
        }
        Ok(())
    }

    /// Drops entries from `from` on. Not durable until [`Storage::sync`].
    pub fn truncate_suffix(&mut self, from: LogIndex) -> Result<(), StorageError> {
        self.wal.truncate_suffix(from)
    }

    /// Makes every append, hard state and truncation so far durable with one
    /// `fdatasync`. After a failed sync the storage refuses further writes.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.wal.sync()?;
        self.flush_hard_state()
    }

    /// Durably replaces the snapshot, then compacts the WAL behind it. If the
    /// log has no entry matching (`last_index`, `last_term`) the log is discarded.
    pub fn save_snapshot(&mut self, snap: &Snapshot) -> Result<(), StorageError> {
        let current = self.wal.snapshot_index();
        if snap.meta.last_index < current {
            return Err(StorageError::StaleSnapshot {
                index: snap.meta.last_index,
                current,
            });
        }
        // Anything appended before the snapshot becomes durable first, so the
        // WAL never lags behind what the snapshot implies.
        self.wal.sync()?;
        self.flush_hard_state()?;
        self.snapshots.save(snap)?;
        self.wal.compact(snap.meta.last_index, snap.meta.last_term)
    }

    /// A handle that saves snapshots from another thread, so writing a big
    /// snapshot does not hold up the WAL. Follow a save with [`Storage::compact_to`].
    pub fn snapshot_writer(&self) -> SnapshotWriter {
        SnapshotWriter {
            store: self.snapshots.clone(),
        }
    }

    /// Makes everything appended so far durable, then compacts the WAL behind
    /// a snapshot that a [`SnapshotWriter`] saved (nothing to compact if the
    /// log is already compacted that far). Like [`Storage::save_snapshot`],
    /// it returns with the WAL synced.
    pub fn compact_to(&mut self, meta: &SnapshotMeta) -> Result<(), StorageError> {
        self.wal.sync()?;
        self.flush_hard_state()?;
        if meta.last_index <= self.wal.snapshot_index() {
            return Ok(());
        }
        self.wal.compact(meta.last_index, meta.last_term)
    }

    /// Reads the saved snapshot, if any.
    pub fn load_snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        self.snapshots.load()
    }

    /// Entries `lo .. hi_exclusive`, read from the WAL files.
    pub fn entries(
        &self,
        lo: LogIndex,
        hi_exclusive: LogIndex,
    ) -> Result<Vec<Entry>, StorageError> {
        self.wal.entries(lo, hi_exclusive)
    }

    /// Entries `lo ..= hi`, read from the WAL files, stopping early (after
    /// at least one) once about `max_bytes` of records were read. Entries
    /// no longer retained (compacted behind a snapshot, or cut) give an
    /// empty vector; damage is an error.
    pub fn read_entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let hi = hi.min(self.last_index());
        if lo < self.first_index() || lo > hi {
            return Ok(Vec::new());
        }
        self.wal.entries_bounded(lo, hi + 1, max_bytes)
    }

    /// First retained index (snapshot index + 1, even when the log is empty).
    pub fn first_index(&self) -> LogIndex {
        self.wal.first_index()
    }

    /// Last index in the log (the snapshot index when the log is empty).
    pub fn last_index(&self) -> LogIndex {
        self.wal.last_index()
    }

    /// Term of entry `i`: known for the snapshot index and retained entries.
    pub fn term(&self, i: LogIndex) -> Option<Term> {
        self.wal.term(i)
    }

    /// The last hard state set (durable once synced).
    pub fn hard_state(&self) -> &HardState {
        &self.current_hard_state
    }

    /// Counters for benchmarks and tests.
    pub fn stats(&self) -> StorageStats {
        StorageStats {
            wal_fsyncs: self.wal.fsyncs(),
            segments: self.wal.segment_count(),
            wal_fsync_time: self.wal.fsync_time(),
        }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir.root
    }
}
