//! The write-ahead log: Raft entries and hard state in CRC-framed records,
//! spread over numbered segment files in `<data dir>/wal/`.
//!
//! Appends are plain buffered writes into the active segment; [`Wal::sync`]
//! makes everything since the last sync durable with one `fdatasync` (group
//! commit belongs to the caller batching appends between syncs). A segment is
//! rolled at a size threshold; the full one is synced first, so only the last
//! segment can ever have a torn tail, and each new segment begins with the
//! current hard state, so whole old segments can be deleted after a snapshot.
//! Recovery lives in [`replay`]; this module owns the running log.
//!
//! Segments are preallocated: once the active one is half full, the next is
//! prepared as a spare file ([`SPARE_FILE`]) of `segment_bytes` written
//! zeros, fsynced, and at the roll it is renamed into place. Appends then
//! write into allocated space, and their `fdatasync` has no file size or
//! extent to journal. The roll waits for a spare still being written; one
//! that failed (a full disk) is removed and the next segment grows as it
//! fills, as without preallocation. The first segment of a new log grows too:
//! nothing is preallocated at open, since while zeros are being written the
//! disk may be full for a moment, which the write path rides out as
//! `NoSpace` but opening would not. A segment the log rolls past is cut to
//! its records, so only the last segment ever has a zero tail.

mod record;
mod replay;

use std::path::PathBuf;
use std::sync::Arc;

use tracing::{debug, warn};

use super::error::StorageError;
use super::frame::{encode_framed, read_frame};
use super::vfs::{AppendFile, Finished, Preallocation, Vfs};
use crate::types::{self, Entry, HardState, LogIndex, Term};
use record::{EntryLoc, LogPositions, Record, RecordRef, Segment};
pub(crate) use replay::open;

/// The first bytes of every segment written since release 2: a name and the
/// format version (records: `len | crc32c(len) | crc32c(payload) | payload`,
/// bincode 2 standard config). Older segments start with a record; a
/// segment of a newer version is refused rather than misread.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"TSWAL\0\0\x01";
/// The version byte of [`SEGMENT_MAGIC`] this binary writes and reads.
const SEGMENT_VERSION: u8 = 1;
/// The next segment while it is preallocated (not a segment name, so replay
/// and compaction never see it).
pub(crate) const SPARE_FILE: &str = "next-segment.prealloc";

/// The running WAL.
#[derive(Debug)]
pub(crate) struct Wal {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    segment_bytes: u64,
    /// Sorted by `seq`; the last one is active. Never empty.
    segments: Vec<Segment>,
    active: Box<dyn AppendFile>,
    active_len: u64,
    /// Bytes were appended since the last `fdatasync`.
    unsynced: bool,
    /// A segment was created since the last directory fsync.
    dir_dirty: bool,
    log: LogPositions,
    hard_state: HardState,
    /// The active segment still lacks its leading hard-state record (its
    /// roll hit a full disk).
    needs_header: bool,
    /// Set by a failed write or fsync: what is on disk is then unknown.
    poisoned: Option<String>,
    /// The preallocation of the next segment, if one was started.
    spare: Option<Box<dyn Preallocation>>,
    fsyncs: u64,
    /// Time spent in WAL `fdatasync` calls since open.
    fsync_time: std::time::Duration,
    scratch: Vec<u8>,
}

impl Wal {
    pub fn first_index(&self) -> LogIndex {
        self.log.first_index()
    }

    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }

    pub fn snapshot_index(&self) -> LogIndex {
        self.log.base()
    }

    pub fn term(&self, index: LogIndex) -> Option<Term> {
        self.log.term(index)
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn fsyncs(&self) -> u64 {
        self.fsyncs
    }

    pub fn fsync_time(&self) -> std::time::Duration {
        self.fsync_time
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn segment_path(&self, seg: &Segment) -> PathBuf {
        self.dir.join(seg.file_name())
    }

    fn active_path(&self) -> PathBuf {
        self.segments
            .last()
            .map(|s| self.segment_path(s))
            .unwrap_or_else(|| self.dir.clone())
    }

    fn check_poisoned(&self) -> Result<(), StorageError> {
        match &self.poisoned {
            Some(why) => Err(StorageError::Poisoned(why.clone())),
            None => Ok(()),
        }
    }

    fn poison(&mut self, err: StorageError) -> StorageError {
        self.poisoned = Some(err.to_string());
        err
    }

    /// Frames `rec` and writes it to the active segment; returns (offset, frame length).
    fn append_record(&mut self, rec: &RecordRef<'_>) -> Result<(u64, u32), StorageError> {
        self.scratch.clear();
        // A segment's first bytes name its format.
        let header = if self.active_len == 0 {
            self.scratch.extend_from_slice(&SEGMENT_MAGIC);
            SEGMENT_MAGIC.len()
        } else {
            0
        };
        encode_framed(rec, &mut self.scratch)?;
        let start = self.active_len;
        let offset = start + header as u64;
        if let Err(e) = self.active.write_at(start, &self.scratch) {
            let err = StorageError::io("append to WAL segment", self.active_path())(e);
            // A full disk: cut what part of the record went in, and the log
            // is as before (retried once there is room; the rest of a
            // preallocated segment is given back and the segment grows from
            // here). If the cut fails, what the segment holds is unknown.
            if err.is_no_space() && self.active.truncate(start).is_ok() {
                return Err(err);
            }
            return Err(self.poison(err));
        }
        self.active_len += self.scratch.len() as u64;
        self.unsynced = true;
        Ok((offset, (self.scratch.len() - header) as u32))
    }

    /// Rolls to a new segment if the active one is full, then writes `rec`.
    fn write_record(&mut self, rec: &RecordRef<'_>) -> Result<(u64, u32), StorageError> {
        self.check_poisoned()?;
        if self.active_len >= self.segment_bytes {
            self.roll()?;
        } else if self.needs_header {
            self.write_header()?;
        }
        if self.spare.is_none() && self.active_len >= self.segment_bytes / 2 {
            self.prepare_spare();
        }
        self.append_record(rec)
    }

    /// The hard state every segment begins with.
    fn write_header(&mut self) -> Result<(), StorageError> {
        let hs = self.hard_state.clone();
        self.append_record(&RecordRef::HardState(&hs))?;
        self.needs_header = false;
        Ok(())
    }

    fn sync_active(&mut self) -> Result<(), StorageError> {
        if self.unsynced {
            let started = std::time::Instant::now();
            let synced = self.active.sync_data();
            self.fsync_time += started.elapsed();
            if let Err(e) = synced {
                let err = StorageError::io("fdatasync WAL segment", self.active_path())(e);
                return Err(self.poison(err));
            }
            self.fsyncs += 1;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Starts a new segment. The full one (data and, if new, its directory
    /// entry) is synced first: a torn tail can then only ever be in the last
    /// segment, and a segment can never survive a crash without its predecessors.
    /// The new one is the preallocated spare if that is ready; its zeros were
    /// fsynced before, and its name is durable at the next [`Wal::sync`],
    /// before anything written into it is acknowledged.
    fn roll(&mut self) -> Result<(), StorageError> {
        self.sync()?;
        self.seal_active()?;
        let seg = Segment {
            seq: self.segments.last().map_or(1, |s| s.seq + 1),
            first_index: self.log.last_index() + 1,
        };
        let path = self.segment_path(&seg);
        let preallocated = self.take_spare(&path);
        debug!(path = %path.display(), preallocated, "rolling WAL segment");
        let file = self
            .vfs
            .open_append(&path)
            .map_err(StorageError::io("create WAL segment", &path));
        self.active = match file {
            Ok(f) => f,
            Err(e) if e.is_no_space() => return Err(e),
            Err(e) => return Err(self.poison(e)),
        };
        self.segments.push(seg);
        self.active_len = 0;
        self.dir_dirty = true;
        // On a full disk the header is written before the next record instead.
        self.needs_header = true;
        self.write_header()
    }

    /// Cuts the active segment to its records before the log rolls past it
    /// (it has a zero tail only if it was preallocated larger than
    /// `segment_bytes`, by a run with other options): recovery can then
    /// still tell lost data from unused space in every segment but the last.
    fn seal_active(&mut self) -> Result<(), StorageError> {
        let path = self.active_path();
        let len = self
            .vfs
            .file_len(&path)
            .map_err(StorageError::io("stat WAL segment", &path))?;
        if len > self.active_len {
            debug!(path = %path.display(), len, records_end = self.active_len, "cutting the zero tail of a full WAL segment");
            let cut = self.active.truncate(self.active_len);
            let synced = cut.and_then(|()| self.vfs.sync_file(&path));
            if let Err(e) = synced {
                let err = StorageError::io("cut WAL segment", &path)(e);
                return Err(self.poison(err));
            }
        }
        Ok(())
    }

    fn spare_path(&self) -> PathBuf {
        self.dir.join(SPARE_FILE)
    }

    /// Starts preallocating the next segment (tried once per segment).
    fn prepare_spare(&mut self) {
        let path = self.spare_path();
        if self.remove_stale_spare() {
            self.spare = Some(self.vfs.preallocate(&path, self.segment_bytes));
        } else {
            self.spare = Some(Box::new(Finished(Err(std::io::Error::other(
                "an old spare segment is in the way",
            )))));
        }
    }

    /// Unlinks a spare left over (by an earlier run, or under a name a crash
    /// kept for a segment's file): its contents are unknown, so it is never
    /// reused or written. False if it is still there.
    pub(crate) fn remove_stale_spare(&self) -> bool {
        let path = self.spare_path();
        match self.vfs.remove(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                warn!(path = %path.display(), error = %e, "cannot remove an old WAL spare segment");
                false
            }
            _ => true,
        }
    }

    /// Renames the spare (waiting for it if needed) to `path`; false if
    /// there is none, in which case the new segment grows as it fills.
    fn take_spare(&mut self, path: &std::path::Path) -> bool {
        let Some(spare) = self.spare.take() else {
            return false;
        };
        let spare_path = self.spare_path();
        let ready = spare
            .wait()
            .and_then(|()| self.vfs.rename(&spare_path, path));
        match ready {
            Ok(()) => true,
            Err(e) => {
                warn!(path = %spare_path.display(), error = %e, "WAL segment preallocation failed; the new segment grows as it fills");
                let _ = self.vfs.remove(&spare_path);
                false
            }
        }
    }

    /// Appends a batch of consecutive entries, dropping any retained entries
    /// from the batch's first index on. Buffered: durable after [`Wal::sync`].
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let from = first.index;
        if let Some((i, e)) = entries
            .iter()
            .enumerate()
            .find(|(i, e)| e.index != from + *i as u64)
        {
            return Err(StorageError::InvalidAppend(format!(
                "entry {i} of the batch has index {}, expected {}",
                e.index,
                from + i as u64
            )));
        }
        if from < self.first_index() {
            return Err(StorageError::Compacted {
                index: from,
                first_index: self.first_index(),
            });
        }
        if from > self.last_index() + 1 {
            return Err(StorageError::InvalidAppend(format!(
                "batch starts at {from} but the log ends at {}",
                self.last_index()
            )));
        }
        let (offset, frame_len) = self.write_record(&RecordRef::Entries(entries))?;
        let seq = self.segments.last().map_or(0, |s| s.seq);
        let terms: Vec<Term> = entries.iter().map(|e| e.term).collect();
        self.log.push(from, seq, offset, frame_len, &terms);
        Ok(())
    }

    /// Records the hard state. Buffered: durable after [`Wal::sync`].
    pub fn set_hard_state(&mut self, hs: &HardState) -> Result<(), StorageError> {
        self.write_record(&RecordRef::HardState(hs))?;
        self.hard_state = hs.clone();
        Ok(())
    }

    /// Drops entries from `from` on. Buffered: durable after [`Wal::sync`].
    pub fn truncate_suffix(&mut self, from: LogIndex) -> Result<(), StorageError> {
        if from < self.first_index() {
            return Err(StorageError::Compacted {
                index: from,
                first_index: self.first_index(),
            });
        }
        if from > self.last_index() {
            return Ok(());
        }
        self.write_record(&RecordRef::Truncate { from })?;
        self.log.truncate_from(from);
        Ok(())
    }

    /// Makes everything written so far durable: one `fdatasync` (plus a
    /// directory fsync after a segment roll).
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.check_poisoned()?;
        self.sync_active()?;
        if self.dir_dirty {
            if let Err(e) = self.vfs.sync_dir(&self.dir) {
                let err = StorageError::io("fsync WAL directory", &self.dir)(e);
                return Err(self.poison(err));
            }
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Forgets entries covered by a durable snapshot at (`index`, `term`) and
    /// deletes the segments only they needed. If the log does not hold that
    /// entry, the whole log is discarded (durably, before any file is deleted).
    pub fn compact(&mut self, index: LogIndex, term: Term) -> Result<(), StorageError> {
        let matching = index >= self.log.base() && self.log.term(index) == Some(term);
        if !matching {
            self.write_record(&RecordRef::Truncate { from: 1 })?;
        }
        // Segments are about to be deleted: the hard state must be durable in
        // one that stays (the active segment's own copy may have been cut off
        // by recovery if it was torn).
        let hs = self.hard_state.clone();
        self.write_record(&RecordRef::HardState(&hs))?;
        self.sync()?;
        if matching {
            self.log.compact_to(index, term);
        } else {
            self.log.reset(index, term);
        }
        let active_seq = self.segments.last().map_or(0, |s| s.seq);
        let keep_from = self.log.first_seq().unwrap_or(active_seq);
        let doomed: Vec<Segment> = self
            .segments
            .iter()
            .filter(|s| s.seq < keep_from && s.seq != active_seq)
            .cloned()
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        for seg in &doomed {
            let path = self.segment_path(seg);
            debug!(path = %path.display(), "deleting compacted WAL segment");
            match self.vfs.remove(&path) {
                // Already gone: an earlier compaction failed half-way.
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StorageError::io("delete WAL segment", &path)(e));
                }
                _ => {}
            }
        }
        self.segments
            .retain(|s| s.seq >= keep_from || s.seq == active_seq);
        self.vfs
            .sync_dir(&self.dir)
            .map_err(StorageError::io("fsync WAL directory", &self.dir))
    }

    /// Entries `lo .. hi`, decoded from the segment files.
    pub fn entries(&self, lo: LogIndex, hi: LogIndex) -> Result<Vec<Entry>, StorageError> {
        self.entries_bounded(lo, hi, u64::MAX)
    }

    /// [`Wal::entries`], stopping after the record that brings the bytes
    /// read to `max_bytes` or more.
    pub fn entries_bounded(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        if lo < self.first_index() {
            return Err(StorageError::Compacted {
                index: lo,
                first_index: self.first_index(),
            });
        }
        if hi > self.last_index() + 1 || lo > hi {
            return Err(StorageError::OutOfRange {
                lo,
                hi,
                last_index: self.last_index(),
            });
        }
        let mut out = Vec::with_capacity(((hi - lo) as usize).min(4096));
        let mut batch: Option<(u64, u64, Vec<Entry>)> = None;
        let mut read = 0u64;
        for index in lo..hi {
            let Some(loc) = self.log.get(index) else {
                break;
            };
            let cached = matches!(&batch, Some((s, o, _)) if *s == loc.seq && *o == loc.offset);
            if !cached {
                if read >= max_bytes {
                    break;
                }
                read += u64::from(loc.frame_len);
                batch = Some((loc.seq, loc.offset, self.read_batch(&loc)?));
            }
            if let Some((_, _, entries)) = &batch {
                let entry = entries.get(loc.ordinal as usize).cloned();
                out.push(entry.ok_or_else(|| self.corrupt(&loc, "batch is shorter than indexed"))?);
            }
        }
        Ok(out)
    }

    fn corrupt(&self, loc: &EntryLoc, reason: &str) -> StorageError {
        StorageError::Corrupt {
            file: self.seq_path(loc.seq),
            offset: loc.offset,
            reason: reason.to_string(),
        }
    }

    fn seq_path(&self, seq: u64) -> PathBuf {
        match self.segments.binary_search_by_key(&seq, |s| s.seq) {
            Ok(i) => self.segment_path(&self.segments[i]),
            Err(_) => self.dir.join(format!("{seq:020}-?.log")),
        }
    }

    fn read_batch(&self, loc: &EntryLoc) -> Result<Vec<Entry>, StorageError> {
        let path = self.seq_path(loc.seq);
        let bytes = self
            .vfs
            .read_at(&path, loc.offset, loc.frame_len as usize)
            .map_err(StorageError::io("read WAL segment", &path))?;
        let frame = match read_frame(&bytes, 0) {
            Ok(Some(frame)) => frame,
            _ => return Err(self.corrupt(loc, "record failed its checksum on re-read")),
        };
        match types::decode::<Record>(frame.payload) {
            Ok(Record::Entries(entries)) => Ok(entries),
            Ok(_) => Err(self.corrupt(loc, "indexed record is not an entry batch")),
            Err(e) => Err(self.corrupt(loc, &format!("undecodable record: {e}"))),
        }
    }
}
