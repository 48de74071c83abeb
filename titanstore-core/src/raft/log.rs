//! The in-memory Raft log: the entries after the latest snapshot, plus the
//! commit index and the two runtime cursors (handed out / persisted).
//!
//! It owns index arithmetic and the log-matching rules (conflict detection,
//! suffix truncation, fast back-off hints). It never talks to storage: the
//! node hands entries out through `Ready` and learns about durability from
//! `on_persisted`.

use crate::types::{Entry, LogIndex, SnapshotMeta, Term};

/// The log since the last snapshot.
#[derive(Debug, Clone)]
pub(crate) struct RaftLog {
    /// The snapshot the log starts after (`last_index` 0 when none).
    snapshot: SnapshotMeta,
    /// `entries[i].index == snapshot.last_index + 1 + i`.
    entries: Vec<Entry>,
    /// Highest index known committed.
    committed: LogIndex,
    /// Highest index the runtime reported durable (and still in our log).
    persisted: LogIndex,
    /// Highest index already handed to the runtime in a `Ready`.
    handed_out: LogIndex,
    /// Persistence reports of Readys numbered below this are ignored: the
    /// log was cut or replaced after they were handed out, so what they made
    /// durable may be undone on disk by a later job before it is redone.
    min_persist_seq: u64,
    /// Number of the Ready being assembled next (see `RaftNode::ready`).
    next_seq: u64,
    /// Entries cut off by compaction or a snapshot install, for the runtime
    /// to free away from the event loop (a compaction can drop 100k+).
    discarded: Vec<Entry>,
}

impl RaftLog {
    /// A log whose entries are all durable already (boot).
    /// The caller has validated that `entries` are contiguous after `snapshot`.
    pub(crate) fn new(snapshot: SnapshotMeta, entries: Vec<Entry>, committed: LogIndex) -> Self {
        let last = snapshot.last_index + entries.len() as u64;
        RaftLog {
            committed: committed.clamp(snapshot.last_index, last),
            persisted: last,
            handed_out: last,
            min_persist_seq: 0,
            next_seq: 1,
            discarded: Vec::new(),
            snapshot,
            entries,
        }
    }

    pub(crate) fn snapshot_meta(&self) -> &SnapshotMeta {
        &self.snapshot
    }

    pub(crate) fn snapshot_index(&self) -> LogIndex {
        self.snapshot.last_index
    }

    pub(crate) fn first_index(&self) -> LogIndex {
        self.snapshot.last_index + 1
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        self.snapshot.last_index + self.entries.len() as u64
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries
            .last()
            .map_or(self.snapshot.last_term, |e| e.term)
    }

    pub(crate) fn committed(&self) -> LogIndex {
        self.committed
    }

    pub(crate) fn persisted(&self) -> LogIndex {
        self.persisted
    }

    /// Term of the entry at `index`, if it is known (snapshot boundary or in the log).
    pub(crate) fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot.last_index {
            return Some(self.snapshot.last_term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub(crate) fn entry(&self, index: LogIndex) -> Option<&Entry> {
        if index < self.first_index() {
            return None;
        }
        let pos = usize::try_from(index - self.first_index()).ok()?;
        self.entries.get(pos)
    }

    pub(crate) fn match_term(&self, index: LogIndex, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Raft §5.4.1: is a log ending at (`last_index`, `last_term`) at least as up to date as ours?
    pub(crate) fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Clones entries `lo..=hi`, at most `max` of them. Empty if `lo` is compacted.
    pub(crate) fn slice(&self, lo: LogIndex, hi: LogIndex, max: usize) -> Vec<Entry> {
        if lo < self.first_index() || lo > hi {
            return Vec::new();
        }
        let hi = hi.min(self.last_index());
        let start = (lo - self.first_index()) as usize;
        let end = ((hi - self.first_index()) as usize + 1).min(start.saturating_add(max.max(1)));
        self.entries
            .get(start..end)
            .map(<[Entry]>::to_vec)
            .unwrap_or_default()
    }

    /// Appends one entry at `last_index() + 1` (leader path).
    pub(crate) fn append(&mut self, term: Term, payload: crate::types::EntryPayload) -> LogIndex {
        let index = self.last_index() + 1;
        self.entries.push(Entry {
            term,
            index,
            payload: std::sync::Arc::new(payload),
        });
        index
    }

    /// Position in `entries` of the first entry that is not already in our
    /// log with the same term (a conflict or simply new).
    pub(crate) fn find_conflict(&self, entries: &[Entry]) -> Option<usize> {
        entries
            .iter()
            .position(|e| !self.match_term(e.index, e.term))
    }

    /// Replaces our suffix from `entries[0].index` with `entries`. Entries before
    /// that index are untouched. The caller guarantees `entries[0].index` is in
    /// `(committed, last_index + 1]` and that `entries` are contiguous.
    pub(crate) fn truncate_and_append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else {
            return;
        };
        let keep = first.index.saturating_sub(self.first_index()) as usize;
        if keep < self.entries.len() {
            tracing::debug!(from = first.index, "truncating conflicting log suffix");
            self.entries.truncate(keep);
        }
        let before = first.index - 1;
        if self.handed_out > before {
            self.min_persist_seq = self.next_seq;
        }
        self.handed_out = self.handed_out.min(before);
        self.persisted = self.persisted.min(before);
        self.entries.extend_from_slice(entries);
    }

    pub(crate) fn commit_to(&mut self, index: LogIndex) -> bool {
        let index = index.min(self.last_index());
        if index > self.committed {
            self.committed = index;
            return true;
        }
        false
    }

    /// Fast back-off hint for a rejected AppendEntries whose `prev_index` did
    /// not match: `(conflict_index, conflict_term)`.
    pub(crate) fn conflict_hint(&self, prev_index: LogIndex) -> (LogIndex, Term) {
        if prev_index > self.last_index() {
            return (self.last_index() + 1, 0);
        }
        let Some(term) = self.term(prev_index) else {
            return (self.committed + 1, 0);
        };
        let mut index = prev_index;
        while index > self.committed + 1 && self.term(index - 1) == Some(term) {
            index -= 1;
        }
        (index.max(self.committed + 1), term)
    }

    /// Last index holding an entry of `term`, if we have one.
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.term == term)
            .map(|e| e.index)
            .or((self.snapshot.last_term == term && term > 0).then_some(self.snapshot.last_index))
    }

    /// Discards the whole log in favour of a snapshot received from the leader.
    pub(crate) fn restore(&mut self, meta: SnapshotMeta) {
        let index = meta.last_index;
        let old = std::mem::take(&mut self.entries);
        self.discard(old);
        self.committed = index;
        // Only the previous snapshot is known durable until the runtime reports
        // this one persisted: acking `index` earlier could promise the leader
        // entries a crash would take away.
        self.persisted = self.persisted.min(self.snapshot.last_index);
        self.handed_out = index;
        self.min_persist_seq = self.next_seq;
        self.snapshot = meta;
    }

    /// Drops entries up to `meta.last_index` after the runtime took a snapshot.
    /// Returns false (and changes nothing) if the snapshot does not fit the log.
    pub(crate) fn compact(&mut self, meta: SnapshotMeta) -> bool {
        let index = meta.last_index;
        if index <= self.snapshot.last_index || index > self.persisted.min(self.committed) {
            return false;
        }
        if self.term(index) != Some(meta.last_term) {
            return false;
        }
        let drop = (index - self.snapshot.last_index) as usize;
        let kept = self.entries.split_off(drop.min(self.entries.len()));
        let old = std::mem::replace(&mut self.entries, kept);
        self.discard(old);
        self.snapshot = meta;
        true
    }

    fn discard(&mut self, old: Vec<Entry>) {
        if self.discarded.is_empty() {
            self.discarded = old;
        } else {
            self.discarded.extend(old);
        }
    }

    /// Entries no longer in the log, to be freed by the caller.
    pub(crate) fn take_discarded(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.discarded)
    }

    /// The latest config in the log and the index of its entry (the
    /// snapshot's config and index when the log holds no config entry).
    pub(crate) fn latest_config(&self) -> (crate::types::ClusterConfig, LogIndex) {
        self.config_before(self.last_index())
    }

    /// The config in effect at `index` (>= the snapshot index).
    pub(crate) fn config_at(&self, index: LogIndex) -> crate::types::ClusterConfig {
        self.config_before(index).0
    }

    fn config_before(&self, index: LogIndex) -> (crate::types::ClusterConfig, LogIndex) {
        self.entries
            .iter()
            .rev()
            .filter(|e| e.index <= index)
            .find_map(|e| match &*e.payload {
                crate::types::EntryPayload::Config(c) => Some((c.clone(), e.index)),
                _ => None,
            })
            .unwrap_or_else(|| (self.snapshot.config.clone(), self.snapshot.last_index))
    }

    pub(crate) fn has_unhanded(&self) -> bool {
        self.last_index() > self.handed_out
    }

    /// Numbers the Ready being handed out now; returns its number.
    pub(crate) fn start_ready(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Entries not handed to the runtime yet; marks them handed out.
    pub(crate) fn take_unhanded(&mut self) -> Vec<Entry> {
        let lo = (self.handed_out + 1).max(self.first_index());
        let last = self.last_index();
        self.handed_out = last;
        if lo > last {
            return Vec::new();
        }
        self.slice(lo, last, usize::MAX)
    }

    /// Runtime reports that the Ready numbered `seq` made entries up to
    /// (`index`, `term`) durable. Ignored when our log no longer has that entry
    /// or was cut after that Ready was handed out: an entry with the same
    /// (index, term) handed out again later is made durable by a later job.
    pub(crate) fn on_persisted(&mut self, seq: u64, index: LogIndex, term: Term) -> bool {
        if seq >= self.min_persist_seq
            && index > self.persisted
            && index <= self.handed_out
            && self.match_term(index, term)
        {
            self.persisted = index;
            return true;
        }
        false
    }

    /// Runtime reports the snapshot at `index`, handed out in Ready `seq`, durable.
    pub(crate) fn on_snapshot_persisted(&mut self, seq: u64, index: LogIndex) {
        if seq >= self.min_persist_seq
            && index == self.snapshot.last_index
            && index > self.persisted
        {
            self.persisted = index;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::types::EntryPayload;

    fn e(index: LogIndex, term: Term) -> Entry {
        Entry {
            term,
            index,
            payload: EntryPayload::Noop.into(),
        }
    }

    #[test]
    fn truncate_keeps_matching_prefix_and_rewinds_cursors() {
        let mut log = RaftLog::new(SnapshotMeta::default(), vec![e(1, 1), e(2, 1), e(3, 1)], 1);
        assert_eq!(log.find_conflict(&[e(2, 1), e(3, 2)]), Some(1));
        log.truncate_and_append(&[e(3, 2), e(4, 2)]);
        assert_eq!(log.last_index(), 4);
        assert_eq!(log.term(2), Some(1));
        assert_eq!(log.term(3), Some(2));
        assert_eq!(log.persisted(), 2);
        let seq = log.start_ready();
        assert_eq!(log.take_unhanded(), vec![e(3, 2), e(4, 2)]);
        // A stale completion for the replaced entry is ignored.
        assert!(!log.on_persisted(seq, 3, 1));
        assert!(log.on_persisted(seq, 4, 2));
    }

    #[test]
    fn completion_of_a_job_from_before_a_restore_is_ignored() {
        // Job 1 writes 1..=3; a snapshot at 1 from the leader replaces the log
        // (job 2); entries 2..=3 come again (job 3). Job 1's report arrives
        // while jobs 2 and 3 are not durable: on disk, job 2 may already have
        // discarded what job 1 wrote, so it must not count.
        let mut log = RaftLog::new(SnapshotMeta::default(), vec![], 0);
        for i in 1..=3 {
            log.append(1, EntryPayload::Noop);
            let _ = i;
        }
        let job1 = log.start_ready();
        assert_eq!(log.take_unhanded().len(), 3);
        log.restore(SnapshotMeta {
            last_index: 1,
            last_term: 1,
            config: Default::default(),
        });
        let job2 = log.start_ready();
        log.truncate_and_append(&[e(2, 1), e(3, 1)]);
        let job3 = log.start_ready();
        assert_eq!(log.take_unhanded(), vec![e(2, 1), e(3, 1)]);
        assert!(!log.on_persisted(job1, 3, 1), "stale report counted");
        assert_eq!(log.persisted(), 0);
        log.on_snapshot_persisted(job2, 1);
        assert_eq!(log.persisted(), 1);
        assert!(log.on_persisted(job3, 3, 1));
        assert_eq!(log.persisted(), 3);
    }

    #[test]
    fn conflict_hint_points_at_first_index_of_term() {
        let log = RaftLog::new(
            SnapshotMeta::default(),
            vec![e(1, 1), e(2, 2), e(3, 2), e(4, 2)],
            1,
        );
        assert_eq!(log.conflict_hint(4), (2, 2));
        assert_eq!(log.conflict_hint(9), (5, 0));
        assert_eq!(log.last_index_of_term(2), Some(4));
        assert_eq!(log.last_index_of_term(3), None);
    }

    #[test]
    fn compact_and_restore() {
        let mut log = RaftLog::new(SnapshotMeta::default(), vec![e(1, 1), e(2, 1), e(3, 2)], 3);
        let meta = SnapshotMeta {
            last_index: 2,
            last_term: 1,
            config: Default::default(),
        };
        assert!(log.compact(meta.clone()));
        assert_eq!(log.first_index(), 3);
        assert_eq!(log.term(2), Some(1));
        assert_eq!(log.term(1), None);
        assert!(log.slice(1, 3, 10).is_empty());
        assert_eq!(log.slice(3, 3, 10), vec![e(3, 2)]);
        log.restore(SnapshotMeta {
            last_index: 10,
            last_term: 3,
            config: Default::default(),
        });
        assert_eq!(log.last_index(), 10);
        assert_eq!(log.committed(), 10);
        assert!(!log.has_unhanded());
    }
}
