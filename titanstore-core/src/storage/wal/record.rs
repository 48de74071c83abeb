//! What a WAL segment holds: the record types, segment file names, and the
//! compact in-memory index from log index to term and file location.
//!
//! The index keeps ~32 bytes per entry instead of the entry itself: the
//! state machine already holds the data, the log is bounded by snapshots,
//! and reads of old entries (followers catching up) can go to the page cache.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::types::{Entry, HardState, LogIndex, Term};

/// A record as written (borrowing, so a batch is not copied to be encoded).
#[derive(Serialize)]
pub(crate) enum RecordRef<'a> {
    /// A batch of consecutive entries. Appending at index `i` implicitly
    /// drops any retained entries from `i` on (conflict truncation).
    Entries(&'a [Entry]),
    HardState(&'a HardState),
    /// Drops entries from `from` on. `from` at or before the first retained
    /// entry clears the log.
    Truncate {
        from: LogIndex,
    },
}

/// A record as read back; same variants, same order as [`RecordRef`].
#[derive(Deserialize)]
pub(crate) enum Record {
    Entries(Vec<Entry>),
    HardState(HardState),
    Truncate { from: LogIndex },
}

/// One segment file: `<seq:020>-<first index:020>.log`. The first index in the
/// name is informational (the next index when the segment was opened).
#[derive(Clone, Debug)]
pub(crate) struct Segment {
    pub seq: u64,
    pub first_index: LogIndex,
}

impl Segment {
    pub fn file_name(&self) -> String {
        format!("{:020}-{:020}.log", self.seq, self.first_index)
    }

    pub fn parse(name: &str) -> Option<Segment> {
        let (seq, first) = name.strip_suffix(".log")?.split_once('-')?;
        Some(Segment {
            seq: seq.parse().ok()?,
            first_index: first.parse().ok()?,
        })
    }
}

/// Where an entry lives: the frame holding its batch, and its place in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EntryLoc {
    pub term: Term,
    pub seq: u64,
    pub offset: u64,
    pub frame_len: u32,
    pub ordinal: u32,
}

/// Terms and locations of the retained entries `base + 1 ..= last`.
#[derive(Debug, Default)]
pub(crate) struct LogPositions {
    /// Index just before the first retained entry (the snapshot's index).
    pub base: LogIndex,
    /// Term at `base` (the snapshot's term).
    pub base_term: Term,
    pub locs: VecDeque<EntryLoc>,
}

impl LogPositions {
    pub fn first_index(&self) -> LogIndex {
        self.base + 1
    }

    pub fn last_index(&self) -> LogIndex {
        self.base + self.locs.len() as u64
    }

    pub fn get(&self, index: LogIndex) -> Option<&EntryLoc> {
        let slot = index.checked_sub(self.base + 1)?;
        self.locs.get(usize::try_from(slot).ok()?)
    }

    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.base {
            return Some(self.base_term);
        }
        self.get(index).map(|l| l.term)
    }

    /// Drops entries from `from` on.
    pub fn truncate_from(&mut self, from: LogIndex) {
        if from <= self.base + 1 {
            self.locs.clear();
        } else if from <= self.last_index() {
            self.locs.truncate((from - self.base - 1) as usize);
        }
    }

    /// Drops entries up to and including `index`, which becomes the base.
    pub fn compact_to(&mut self, index: LogIndex, term: Term) {
        let drop = index.saturating_sub(self.base).min(self.locs.len() as u64);
        self.locs.drain(..drop as usize);
        self.base = index;
        self.base_term = term;
    }

    /// Forgets every entry; the log restarts after `index`.
    pub fn reset(&mut self, index: LogIndex, term: Term) {
        self.locs.clear();
        self.base = index;
        self.base_term = term;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        let s = Segment {
            seq: 7,
            first_index: 1234,
        };
        let parsed = Segment::parse(&s.file_name()).unwrap();
        assert_eq!((parsed.seq, parsed.first_index), (7, 1234));
        assert!(Segment::parse("LOCK").is_none());
        assert!(Segment::parse("x-y.log").is_none());
    }

    #[test]
    fn positions_truncate_and_compact() {
        let loc = |term| EntryLoc {
            term,
            seq: 1,
            offset: 0,
            frame_len: 0,
            ordinal: 0,
        };
        let mut p = LogPositions::default();
        for t in 1..=5 {
            p.locs.push_back(loc(t));
        }
        assert_eq!(
            (p.first_index(), p.last_index(), p.term(0), p.term(3)),
            (1, 5, Some(0), Some(3))
        );
        p.truncate_from(4);
        assert_eq!(p.last_index(), 3);
        p.compact_to(2, 2);
        assert_eq!(
            (p.first_index(), p.last_index(), p.term(2), p.term(1)),
            (3, 3, Some(2), None)
        );
        p.compact_to(9, 4);
        assert_eq!((p.first_index(), p.last_index()), (10, 9));
    }
}
