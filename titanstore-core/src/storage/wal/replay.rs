//! WAL recovery: scans every segment in order, rebuilds the entry index and
//! the hard state, cuts a torn tail off the last segment, and reconciles the
//! log with the snapshot it continues.
//!
//! A damaged record anywhere but at the very end of the last segment is an
//! error naming the file and offset: it may have been acknowledged, so it is
//! never silently dropped. The last segment may be preallocated: the zeros
//! after its records are its clean end, and the rules for a torn record apply
//! as if the file ended where the zeros begin. Older segments were cut to
//! their records when the log rolled past them, so a zero tail there is still
//! damage.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{info, warn};

use super::Wal;
use super::record::{LogPositions, Record, RecordRef, Segment};
use crate::storage::TornTail;
use crate::storage::error::StorageError;
use crate::storage::frame::{FrameError, read_frame_before_zeros, zero_tail_start};
use crate::storage::vfs::Vfs;
use crate::types::{self, ClusterConfig, Entry, HardState, LogIndex, StoredLog, Term};

/// The log as rebuilt by replay, before it is reconciled with the snapshot.
/// Only the newest entries are kept whole (up to `tail_bytes`, see
/// [`Entry::memory_bytes`]); of the others it keeps the location and term,
/// and the configs.
#[derive(Default)]
struct ReplayLog {
    /// Where every entry read lives; its base is only meaningful while it
    /// holds entries.
    locs: LogPositions,
    /// The newest entries: `entries.back()` is the last of `locs`.
    entries: VecDeque<Entry>,
    entry_bytes: u64,
    tail_bytes: u64,
    /// Every config entry of `locs`, in index order.
    configs: Vec<(LogIndex, ClusterConfig)>,
    hard_state: HardState,
}

impl ReplayLog {
    fn last_index(&self) -> LogIndex {
        self.locs.last_index()
    }

    fn clear(&mut self) {
        let base = self.locs.base();
        self.locs.reset(base, 0);
        self.entries.clear();
        self.entry_bytes = 0;
        self.configs.clear();
    }

    fn truncate_from(&mut self, from: LogIndex) {
        if self.locs.is_empty() || from <= self.locs.first_index() {
            self.clear();
        } else if from <= self.last_index() {
            self.locs.truncate_from(from);
            self.drop_entries(|e| e.index >= from);
        }
    }

    /// Drops kept entries from the back while `cut` holds, and their configs.
    fn drop_entries(&mut self, cut: impl Fn(&Entry) -> bool) {
        while let Some(entry) = self.entries.back().filter(|e| cut(e)) {
            self.entry_bytes -= entry.memory_bytes();
            self.entries.pop_back();
        }
        let last = self.last_index();
        self.configs.retain(|(index, _)| *index <= last);
    }

    /// Keeps `entry` whole, forgetting the oldest kept ones beyond the bound.
    fn keep(&mut self, entry: Entry) {
        if let types::EntryPayload::Config(config) = &*entry.payload {
            self.configs.push((entry.index, config.clone()));
        }
        self.entry_bytes += entry.memory_bytes();
        self.entries.push_back(entry);
        while self.entry_bytes > self.tail_bytes
            && let Some(old) = self.entries.pop_front()
        {
            self.entry_bytes -= old.memory_bytes();
        }
    }

    /// Forgets entries up to `index` (they are in the snapshot).
    fn drop_through(&mut self, index: LogIndex) {
        while let Some(entry) = self.entries.front().filter(|e| e.index <= index) {
            self.entry_bytes -= entry.memory_bytes();
            self.entries.pop_front();
        }
        self.configs.retain(|(at, _)| *at > index);
    }

    fn apply(&mut self, rec: Record, seq: u64, offset: u64, frame_len: u32) -> Result<(), String> {
        match rec {
            Record::HardState(hs) => self.hard_state = hs,
            Record::Truncate { from } => self.truncate_from(from),
            Record::Entries(batch) => {
                let Some(first) = batch.first() else {
                    return Ok(());
                };
                let from = first.index;
                if from == 0 {
                    return Err("entry with index 0".into());
                }
                if batch
                    .iter()
                    .enumerate()
                    .any(|(i, e)| e.index != from + i as u64)
                {
                    return Err("entry batch is not consecutive".into());
                }
                if !self.locs.is_empty() && from > self.locs.base() && from <= self.last_index() + 1
                {
                    self.truncate_from(from);
                } else {
                    // Empty log, or a batch that does not continue it: everything
                    // before it was compacted away or is superseded.
                    self.clear();
                    self.locs.reset(from - 1, 0);
                }
                let terms: Vec<Term> = batch.iter().map(|e| e.term).collect();
                self.locs.push(from, seq, offset, frame_len, &terms);
                for entry in batch {
                    self.keep(entry);
                }
            }
        }
        Ok(())
    }
}

/// Lists segments sorted by sequence number; other files are ignored.
fn list_segments(vfs: &dyn Vfs, dir: &Path) -> Result<Vec<Segment>, StorageError> {
    let names = vfs
        .list_dir(dir)
        .map_err(StorageError::io("list WAL directory", dir))?;
    let mut segments: Vec<Segment> = names.iter().filter_map(|n| Segment::parse(n)).collect();
    segments.sort_by_key(|s| s.seq);
    Ok(segments)
}

/// Scans one segment into `log`; returns its final length and any torn tail cut off.
fn replay_segment(
    vfs: &dyn Vfs,
    path: &Path,
    seq: u64,
    is_last: bool,
    log: &mut ReplayLog,
) -> Result<(u64, Option<TornTail>), StorageError> {
    let full = vfs
        .read(path)
        .map_err(StorageError::io("read WAL segment", path))?;
    // Where the written bytes end: in the last segment, the zeros after them
    // may be preallocated space.
    let data_end = if is_last {
        zero_tail_start(&full)
    } else {
        full.len()
    };
    let data = &full[..data_end];
    let corrupt = |offset: usize, reason: String| StorageError::Corrupt {
        file: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let magic = &super::SEGMENT_MAGIC[..7];
    let mut off = 0usize;
    if data.len() >= super::SEGMENT_MAGIC.len() && data.starts_with(magic) {
        let version = data[7];
        if version != super::SEGMENT_VERSION {
            return Err(corrupt(
                0,
                format!("WAL segment format version {version} is not one this binary reads"),
            ));
        }
        off = super::SEGMENT_MAGIC.len();
    } else if !data.is_empty()
        && data.len() < super::SEGMENT_MAGIC.len()
        && super::SEGMENT_MAGIC.starts_with(data)
    {
        // A segment torn inside its header holds no record.
        off = data.len();
        if is_last {
            warn!(file = %path.display(), "cutting a torn WAL segment header");
            vfs.truncate(path, 0)
                .map_err(StorageError::io("truncate torn WAL tail", path))?;
            vfs.sync_file(path)
                .map_err(StorageError::io("fsync WAL segment", path))?;
            let torn = TornTail {
                file: path.to_path_buf(),
                offset: 0,
                bytes_cut: full.len() as u64,
                reason: "torn segment header".into(),
            };
            return Ok((0, Some(torn)));
        }
    }
    loop {
        match read_frame_before_zeros(&full, off, data_end) {
            Ok(None) => return Ok((off as u64, None)),
            Ok(Some(frame)) => {
                let rec = types::decode::<Record>(frame.payload)
                    .map_err(|e| corrupt(off, format!("undecodable record: {e}")))?;
                let len = (frame.next - off) as u32;
                log.apply(rec, seq, off as u64, len)
                    .map_err(|r| corrupt(off, r))?;
                off = frame.next;
            }
            Err(FrameError::Torn(reason)) if is_last => {
                // The file is cut at the torn record, zeros and all: what
                // follows then grows the file, as without preallocation.
                let bytes_cut = full.len().saturating_sub(off) as u64;
                warn!(file = %path.display(), offset = off, bytes_cut, reason, "cutting torn WAL tail");
                vfs.truncate(path, off as u64)
                    .map_err(StorageError::io("truncate torn WAL tail", path))?;
                vfs.sync_file(path)
                    .map_err(StorageError::io("fsync WAL segment", path))?;
                let torn = TornTail {
                    file: path.to_path_buf(),
                    offset: off as u64,
                    bytes_cut,
                    reason: reason.to_string(),
                };
                return Ok((off as u64, Some(torn)));
            }
            Err(FrameError::Torn(reason) | FrameError::Corrupt(reason)) => {
                return Err(corrupt(off, reason.to_string()));
            }
        }
    }
}

/// What [`open`] recovered besides the WAL itself.
pub(crate) struct Replayed {
    pub wal: Wal,
    /// The log's entries that were left on disk (terms and configs).
    pub stored: StoredLog,
    /// The newest entries, after those.
    pub entries: Vec<Entry>,
    pub torn_tail: Option<TornTail>,
}

/// Opens (creating if needed) the WAL in `dir`, continuing the snapshot at
/// (`snap_index`, `snap_term`).
pub(crate) fn open(
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    segment_bytes: u64,
    tail_bytes: u64,
    snap_index: LogIndex,
    snap_term: Term,
) -> Result<Replayed, StorageError> {
    vfs.create_dir_all(&dir)
        .map_err(StorageError::io("create WAL directory", &dir))?;
    let segments = list_segments(vfs.as_ref(), &dir)?;
    let mut log = ReplayLog {
        tail_bytes,
        ..ReplayLog::default()
    };
    let mut torn_tail = None;
    let mut active_len = 0;
    for (i, seg) in segments.iter().enumerate() {
        let path = dir.join(seg.file_name());
        let is_last = i + 1 == segments.len();
        let (len, torn) = replay_segment(vfs.as_ref(), &path, seg.seq, is_last, &mut log)?;
        // What replay read may be only in the page cache (a killed process
        // never fsynced it): make it durable before it counts as persisted.
        vfs.sync_file(&path)
            .map_err(StorageError::io("fsync WAL segment", &path))?;
        active_len = len;
        torn_tail = torn;
    }
    if !segments.is_empty() {
        vfs.sync_dir(&dir)
            .map_err(StorageError::io("fsync WAL directory", &dir))?;
    }

    // Reconcile with the snapshot: keep only entries that continue it.
    let mut stale = false;
    if log.locs.is_empty() || log.last_index() < snap_index {
        stale = !log.locs.is_empty();
        log.clear();
        log.locs.reset(snap_index, snap_term);
    } else if log.locs.base() > snap_index {
        return Err(StorageError::LogGap {
            snapshot_index: snap_index,
            wal_first_index: log.locs.first_index(),
        });
    } else if log.locs.base() == snap_index || log.locs.term(snap_index) == Some(snap_term) {
        log.locs.compact_to(snap_index, snap_term);
        log.drop_through(snap_index);
    } else {
        stale = true;
        log.clear();
        log.locs.reset(snap_index, snap_term);
    }
    let on_disk_only = log.locs.len() - log.entries.len() as u64;
    let stored = StoredLog {
        terms: log.locs.terms(snap_index + 1, snap_index + on_disk_only),
        configs: log
            .configs
            .iter()
            .filter(|(index, _)| *index <= snap_index + on_disk_only)
            .cloned()
            .collect(),
    };
    let entries: Vec<Entry> = std::mem::take(&mut log.entries).into();
    let positions = log.locs;

    let fresh = segments.is_empty();
    let segments = if fresh {
        vec![Segment {
            seq: 1,
            first_index: positions.last_index() + 1,
        }]
    } else {
        segments
    };
    let active_path = segments
        .last()
        .map(|s| dir.join(s.file_name()))
        .unwrap_or_else(|| dir.clone());
    let active = vfs
        .open_append(&active_path)
        .map_err(StorageError::io("open WAL segment", &active_path))?;
    let mut wal = Wal {
        vfs,
        dir,
        segment_bytes: segment_bytes.max(1),
        segments,
        active,
        active_len,
        unsynced: false,
        dir_dirty: fresh,
        log: positions,
        hard_state: log.hard_state,
        poisoned: None,
        fsyncs: 0,
        fsync_time: std::time::Duration::ZERO,
        needs_header: false,
        spare: None,
        scratch: Vec::new(),
    };
    if fresh {
        let hs = wal.hard_state.clone();
        wal.set_hard_state(&hs)?;
    }
    if stale {
        // The WAL still holds entries that do not continue the snapshot; make
        // sure they can never be replayed in front of new appends.
        warn!(
            snapshot_index = snap_index,
            "discarding WAL entries that do not match the snapshot"
        );
        wal.write_record(&RecordRef::Truncate { from: 1 })?;
    }
    wal.sync()?;
    // A spare left by an earlier run may be incomplete; it only holds space.
    wal.remove_stale_spare();
    info!(
        dir = %wal.dir.display(),
        segments = wal.segments.len(),
        first_index = wal.first_index(),
        last_index = wal.last_index(),
        "WAL recovered"
    );
    Ok(Replayed {
        wal,
        stored,
        entries,
        torn_tail,
    })
}
