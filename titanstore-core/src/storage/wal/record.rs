//! What a WAL segment holds: the record types, segment file names, and the
//! compact in-memory index from log index to term and file location.
//!
//! The index keeps one location per record (a batch of entries, ~32 bytes)
//! and one term per run of entries of the same term (16 bytes), not the
//! entries: the state machine already holds the data, the log is bounded by
//! snapshots, and reads of old entries (followers catching up) can go to
//! the page cache. Under load a record holds hundreds of entries and a term
//! thousands, so the index costs well under a byte per entry.

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

/// One record of entries: `count` retained entries from `first` on.
#[derive(Clone, Copy, Debug)]
struct FrameLoc {
    first: LogIndex,
    seq: u64,
    offset: u64,
    frame_len: u32,
    count: u32,
}

/// Terms and locations of the retained entries `base + 1 ..= last`.
#[derive(Debug, Default)]
pub(crate) struct LogPositions {
    /// Index just before the first retained entry (the snapshot's index).
    base: LogIndex,
    /// Term at `base` (the snapshot's term).
    base_term: Term,
    last: LogIndex,
    /// The records holding the retained entries, in index order, without
    /// gaps; the first may begin at or before `base` (compacted in part).
    frames: VecDeque<FrameLoc>,
    /// `(first index, term)` of each run of equal terms, in index order;
    /// the first run begins at or before `base + 1`.
    runs: VecDeque<(LogIndex, Term)>,
}

impl LogPositions {
    /// An empty log after (`base`, `base_term`).
    pub fn new(base: LogIndex, base_term: Term) -> Self {
        LogPositions {
            base,
            base_term,
            last: base,
            ..LogPositions::default()
        }
    }

    pub fn base(&self) -> LogIndex {
        self.base
    }

    pub fn first_index(&self) -> LogIndex {
        self.base + 1
    }

    pub fn last_index(&self) -> LogIndex {
        self.last
    }

    pub fn is_empty(&self) -> bool {
        self.last == self.base
    }

    /// Retained entries.
    pub fn len(&self) -> u64 {
        self.last - self.base
    }

    pub fn get(&self, index: LogIndex) -> Option<EntryLoc> {
        if index <= self.base || index > self.last {
            return None;
        }
        let at = self.frames.partition_point(|f| f.first <= index);
        let frame = self.frames.get(at.checked_sub(1)?)?;
        Some(EntryLoc {
            term: self.run_term(index)?,
            seq: frame.seq,
            offset: frame.offset,
            frame_len: frame.frame_len,
            ordinal: u32::try_from(index - frame.first).ok()?,
        })
    }

    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.base {
            return Some(self.base_term);
        }
        if index < self.base || index > self.last {
            return None;
        }
        self.run_term(index)
    }

    fn run_term(&self, index: LogIndex) -> Option<Term> {
        let at = self.runs.partition_point(|(first, _)| *first <= index);
        self.runs.get(at.checked_sub(1)?).map(|(_, term)| *term)
    }

    /// The terms of the retained entries `lo ..= hi`, in order.
    pub fn terms(&self, lo: LogIndex, hi: LogIndex) -> Vec<Term> {
        (lo.max(self.base + 1)..=hi.min(self.last))
            .filter_map(|index| self.run_term(index))
            .collect()
    }

    /// The segment of the oldest record still needed, if any.
    pub fn first_seq(&self) -> Option<u64> {
        if self.is_empty() {
            return None;
        }
        self.frames.front().map(|f| f.seq)
    }

    /// Indexes the record at (`seq`, `offset`, `frame_len`) holding entries
    /// of `terms` from `from` on, dropping retained entries from `from` on.
    /// `from` must be within the log or right after it.
    pub fn push(&mut self, from: LogIndex, seq: u64, offset: u64, frame_len: u32, terms: &[Term]) {
        self.truncate_from(from);
        debug_assert_eq!(from, self.last + 1, "a record must continue the log");
        let Ok(count) = u32::try_from(terms.len()) else {
            return;
        };
        if count == 0 {
            return;
        }
        self.frames.push_back(FrameLoc {
            first: from,
            seq,
            offset,
            frame_len,
            count,
        });
        for (i, &term) in terms.iter().enumerate() {
            if self.runs.back().is_none_or(|(_, t)| *t != term) {
                self.runs.push_back((from + i as u64, term));
            }
        }
        self.last = from + u64::from(count) - 1;
    }

    /// Drops entries from `from` on.
    pub fn truncate_from(&mut self, from: LogIndex) {
        if from > self.last {
            return;
        }
        if from <= self.base + 1 {
            self.frames.clear();
            self.runs.clear();
            self.last = self.base;
            return;
        }
        while self.frames.back().is_some_and(|f| f.first >= from) {
            self.frames.pop_back();
        }
        if let Some(frame) = self.frames.back_mut() {
            let keep = from - frame.first;
            frame.count = frame.count.min(u32::try_from(keep).unwrap_or(u32::MAX));
        }
        while self.runs.back().is_some_and(|(first, _)| *first >= from) {
            self.runs.pop_back();
        }
        self.last = from - 1;
    }

    /// Drops entries up to and including `index`, which becomes the base.
    pub fn compact_to(&mut self, index: LogIndex, term: Term) {
        if index >= self.last {
            self.frames.clear();
            self.runs.clear();
            self.last = index;
        } else {
            while self
                .frames
                .front()
                .is_some_and(|f| f.first + u64::from(f.count) <= index + 1)
            {
                self.frames.pop_front();
            }
            while self.runs.len() > 1 && self.runs[1].0 <= index + 1 {
                self.runs.pop_front();
            }
        }
        self.base = index;
        self.base_term = term;
    }

    /// Forgets every entry; the log restarts after `index`.
    pub fn reset(&mut self, index: LogIndex, term: Term) {
        *self = LogPositions::new(index, term);
    }

    /// Records and term runs held (what the index costs).
    #[cfg(test)]
    pub fn held(&self) -> (usize, usize) {
        (self.frames.len(), self.runs.len())
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
        let mut p = LogPositions::default();
        for t in 1..=5 {
            p.push(t, 1, t * 100, 10, &[t]);
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
        assert_eq!(p.get(3).map(|l| (l.offset, l.ordinal)), Some((300, 0)));
        p.compact_to(9, 4);
        assert_eq!((p.first_index(), p.last_index()), (10, 9));
        assert!(p.is_empty() && p.first_seq().is_none());
    }

    /// Entries of one record share a location, entries of one term a run;
    /// cutting into a record or a run keeps its front, compacting into one
    /// keeps its back, and every entry still finds its term and place.
    #[test]
    fn positions_are_kept_per_record_and_per_term() {
        let mut p = LogPositions::new(10, 1);
        // Three records of 100 entries: terms 1 (x150), 2 (x100), 3 (x50).
        let terms: Vec<Term> = (0..300)
            .map(|i| 1 + (i >= 150) as u64 + (i >= 250) as u64)
            .collect();
        for (r, chunk) in terms.chunks(100).enumerate() {
            p.push(11 + r as u64 * 100, 7, r as u64 * 1000, 999, chunk);
        }
        assert_eq!(p.held(), (3, 3));
        let check = |p: &LogPositions| {
            for index in p.first_index()..=p.last_index() {
                let loc = p.get(index).unwrap();
                let i = (index - 11) as usize;
                assert_eq!(loc.term, terms[i], "term of {index}");
                assert_eq!(p.term(index), Some(terms[i]));
                assert_eq!(
                    (loc.offset, loc.ordinal),
                    ((i / 100) as u64 * 1000, (i % 100) as u32)
                );
            }
            assert!(p.get(p.last_index() + 1).is_none() && p.get(p.base()).is_none());
        };
        check(&p);
        // A conflicting append inside the second record and the second term.
        p.push(200, 8, 5000, 99, &[4, 4]);
        assert_eq!(
            (p.last_index(), p.term(199), p.term(200), p.term(201)),
            (201, Some(2), Some(4), Some(4))
        );
        assert_eq!(p.get(150).map(|l| (l.seq, l.ordinal)), Some((7, 39)));
        assert_eq!(
            p.get(201).map(|l| (l.seq, l.offset, l.ordinal)),
            Some((8, 5000, 1))
        );
        assert_eq!(p.held(), (3, 3));
        p.truncate_from(200);
        check(&p);
        // Compacted into the middle of the first record and the first run.
        p.compact_to(60, 1);
        assert_eq!(
            (p.first_index(), p.term(60), p.term(59)),
            (61, Some(1), None)
        );
        assert_eq!(p.first_seq(), Some(7));
        check(&p);
        p.compact_to(111, 1);
        assert_eq!(p.held(), (1, 2));
        check(&p);
        assert_eq!(p.terms(159, 162), vec![1, 1, 2, 2]);
    }
}
