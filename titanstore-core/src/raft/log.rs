//! The Raft log: the terms of every entry after the latest snapshot, a
//! bounded cache of the most recent entries themselves, the configs in the
//! log, plus the commit index and the two runtime cursors (handed out /
//! persisted).
//!
//! It owns index arithmetic and the log-matching rules (conflict detection,
//! suffix truncation, fast back-off hints). It never talks to storage: the
//! node hands entries out through `Ready` and learns about durability from
//! `on_persisted`. Entries older than the cache are only on disk; the node
//! asks the runtime to read them back (`Ready::fetches`) when a lagging
//! follower or the state machine needs them. Only entries that are durable
//! and handed to the state machine are ever dropped from the cache, so what
//! is missing from memory can always be read back from the WAL.

use std::collections::VecDeque;

use super::terms::TermRuns;
use crate::types::{ClusterConfig, Entry, EntryPayload, LogIndex, SnapshotMeta, StoredLog, Term};

/// The log since the last snapshot.
#[derive(Debug, Clone)]
pub(crate) struct RaftLog {
    /// The snapshot the log starts after (`last_index` 0 when none).
    snapshot: SnapshotMeta,
    /// Position `i` holds the term of entry `snapshot.last_index + 1 + i`;
    /// every entry in the log, in memory or not.
    terms: TermRuns,
    /// The newest entries, a suffix of the log: `cache.back()` is the last
    /// entry (when the log is not empty and the cache is not).
    cache: VecDeque<Entry>,
    /// [`Entry::memory_bytes`] of everything in `cache`.
    cache_bytes: u64,
    /// Every config entry in the log, in index order.
    configs: Vec<(LogIndex, ClusterConfig)>,
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
    /// Entries cut off by compaction, a snapshot install or eviction from
    /// the cache, for the runtime to free away from the event loop (a
    /// compaction can drop 100k+).
    discarded: Vec<Entry>,
}

impl RaftLog {
    /// A log whose entries are all durable already (boot): `stored` names
    /// what is only on disk, `entries` the newest ones that follow it.
    /// The caller has validated that they are contiguous after `snapshot`.
    pub(crate) fn new(
        snapshot: SnapshotMeta,
        stored: StoredLog,
        entries: Vec<Entry>,
        committed: LogIndex,
    ) -> Self {
        let mut log = RaftLog {
            terms: TermRuns::from_terms(stored.terms),
            cache: VecDeque::with_capacity(entries.len()),
            cache_bytes: 0,
            configs: stored.configs,
            committed: 0,
            persisted: 0,
            handed_out: 0,
            min_persist_seq: 0,
            next_seq: 1,
            discarded: Vec::new(),
            snapshot,
        };
        for entry in entries {
            log.push(entry);
        }
        let last = log.last_index();
        log.committed = committed.clamp(log.snapshot.last_index, last);
        log.persisted = last;
        log.handed_out = last;
        log
    }

    fn push(&mut self, entry: Entry) {
        self.terms.push_back(entry.term);
        if let EntryPayload::Config(config) = &*entry.payload {
            self.configs.push((entry.index, config.clone()));
        }
        self.cache_bytes += entry.memory_bytes();
        self.cache.push_back(entry);
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
        self.snapshot.last_index + self.terms.len() as u64
    }

    /// The first entry held in memory (`last_index() + 1` when none is):
    /// entries from `first_index()` up to it are read back from storage.
    pub(crate) fn cache_first(&self) -> LogIndex {
        self.last_index() + 1 - self.cache.len() as u64
    }

    /// Bytes of the entries in memory (see [`Entry::memory_bytes`]).
    pub(crate) fn cache_bytes(&self) -> u64 {
        self.cache_bytes
    }

    pub(crate) fn last_term(&self) -> Term {
        self.terms.back().unwrap_or(self.snapshot.last_term)
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
        let pos = index.checked_sub(self.first_index())?;
        self.terms.get(usize::try_from(pos).ok()?)
    }

    pub(crate) fn match_term(&self, index: LogIndex, term: Term) -> bool {
        self.term(index) == Some(term)
    }

    /// Raft §5.4.1: is a log ending at (`last_index`, `last_term`) at least as up to date as ours?
    pub(crate) fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Clones entries `lo..=hi`, at most `max` of them, from memory. Empty
    /// if `lo` is not in memory (compacted, or only on disk: see `cache_first`).
    pub(crate) fn slice(&self, lo: LogIndex, hi: LogIndex, max: usize) -> Vec<Entry> {
        if lo < self.cache_first() || lo > hi {
            return Vec::new();
        }
        let hi = hi.min(self.last_index());
        let start = (lo - self.cache_first()) as usize;
        let end = ((hi - self.cache_first()) as usize + 1).min(start.saturating_add(max.max(1)));
        self.cache.range(start..end.max(start)).cloned().collect()
    }

    /// Appends one entry at `last_index() + 1` (leader path).
    pub(crate) fn append(&mut self, term: Term, payload: EntryPayload) -> LogIndex {
        let index = self.last_index() + 1;
        self.push(Entry {
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
        if first.index <= self.last_index() {
            tracing::debug!(from = first.index, "truncating conflicting log suffix");
            self.truncate_from(first.index);
        }
        let before = first.index - 1;
        if self.handed_out > before {
            self.min_persist_seq = self.next_seq;
        }
        self.handed_out = self.handed_out.min(before);
        self.persisted = self.persisted.min(before);
        for entry in entries {
            self.push(entry.clone());
        }
    }

    /// Drops entries from `from` on (`from` > the snapshot index).
    fn truncate_from(&mut self, from: LogIndex) {
        let keep = from.saturating_sub(self.first_index()) as usize;
        self.terms.truncate(keep);
        while self.cache.back().is_some_and(|e| e.index >= from) {
            if let Some(entry) = self.cache.pop_back() {
                self.cache_bytes -= entry.memory_bytes();
                self.discarded.push(entry);
            }
        }
        self.configs.retain(|(index, _)| *index < from);
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
        // Terms never decrease along a log: the first entry of `term` is
        // found by bisection (the log may hold millions of terms).
        let first_of_term = self.first_index() + self.terms.count_below(term) as u64;
        let index = first_of_term.min(prev_index);
        (index.max(self.committed + 1), term)
    }

    /// Last index holding an entry of `term`, if we have one.
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        let after = self.terms.count_at_most(term);
        after
            .checked_sub(1)
            .filter(|pos| self.terms.get(*pos) == Some(term))
            .map(|pos| self.first_index() + pos as u64)
            .or((self.snapshot.last_term == term && term > 0).then_some(self.snapshot.last_index))
    }

    /// Discards the whole log in favour of a snapshot received from the leader.
    pub(crate) fn restore(&mut self, meta: SnapshotMeta) {
        let index = meta.last_index;
        self.discarded.extend(std::mem::take(&mut self.cache));
        self.cache_bytes = 0;
        self.terms.clear();
        self.configs.clear();
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
        self.terms.drop_front(drop);
        let cached = self.cache.iter().take_while(|e| e.index <= index).count();
        for entry in self.cache.drain(..cached) {
            self.cache_bytes -= entry.memory_bytes();
            self.discarded.push(entry);
        }
        self.configs.retain(|(at, _)| *at > index);
        self.snapshot = meta;
        true
    }

    /// Drops the oldest entries from memory while the cache holds more
    /// than `max_bytes`, but never one above `floor` (the caller passes what
    /// is durable and already handed to the state machine, so everything
    /// dropped can be read back from storage). Returns how many it dropped.
    pub(crate) fn evict(&mut self, floor: LogIndex, max_bytes: u64) -> usize {
        let floor = floor.min(self.persisted);
        let mut dropped = 0;
        while self.cache_bytes > max_bytes && self.cache.front().is_some_and(|e| e.index <= floor) {
            if let Some(entry) = self.cache.pop_front() {
                self.cache_bytes -= entry.memory_bytes();
                self.discarded.push(entry);
                dropped += 1;
            }
        }
        dropped
    }

    /// Entries no longer in the log, to be freed by the caller.
    pub(crate) fn take_discarded(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.discarded)
    }

    /// The latest config in the log and the index of its entry (the
    /// snapshot's config and index when the log holds no config entry).
    pub(crate) fn latest_config(&self) -> (ClusterConfig, LogIndex) {
        self.config_before(self.last_index())
    }

    /// The config in effect at `index` (>= the snapshot index).
    pub(crate) fn config_at(&self, index: LogIndex) -> ClusterConfig {
        self.config_before(index).0
    }

    fn config_before(&self, index: LogIndex) -> (ClusterConfig, LogIndex) {
        self.configs
            .iter()
            .rev()
            .find(|(at, _)| *at <= index)
            .map(|(at, config)| (config.clone(), *at))
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

    /// Entries not handed to the runtime yet; marks them handed out. They
    /// are always in memory: only persisted entries leave the cache.
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
        let mut log = RaftLog::new(
            SnapshotMeta::default(),
            StoredLog::default(),
            vec![e(1, 1), e(2, 1), e(3, 1)],
            1,
        );
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
        let mut log = RaftLog::new(SnapshotMeta::default(), StoredLog::default(), vec![], 0);
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
            StoredLog::default(),
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
        let mut log = RaftLog::new(
            SnapshotMeta::default(),
            StoredLog::default(),
            vec![e(1, 1), e(2, 1), e(3, 2)],
            3,
        );
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

    #[test]
    fn eviction_keeps_terms_and_configs_and_never_drops_what_is_not_durable_or_applied() {
        let config = crate::types::ClusterConfig::default();
        let stored = StoredLog {
            terms: vec![1, 1, 2],
            configs: vec![(2, config.clone())],
        };
        let mut log = RaftLog::new(SnapshotMeta::default(), stored, vec![e(4, 2), e(5, 2)], 1);
        assert_eq!(log.cache_first(), 4);
        assert_eq!(log.term(2), Some(1));
        assert_eq!(log.term(3), Some(2));
        assert!(log.slice(3, 5, 10).is_empty(), "entry 3 is only on disk");
        assert_eq!(log.slice(4, 5, 10), vec![e(4, 2), e(5, 2)]);
        assert_eq!(log.latest_config().1, 2);
        assert_eq!(log.last_index_of_term(1), Some(2));

        for _ in 6..=9 {
            log.append(3, EntryPayload::Noop);
        }
        // Not persisted: nothing above 5 may leave memory, whatever the floor.
        assert_eq!(log.evict(9, 0), 2);
        assert_eq!(log.cache_first(), 6);
        let seq = log.start_ready();
        assert_eq!(log.take_unhanded().len(), 4);
        assert!(log.on_persisted(seq, 9, 3));
        // Durable, but handed to the state machine only up to 7.
        assert_eq!(log.evict(7, 0), 2);
        assert_eq!(log.cache_first(), 8);
        assert_eq!(log.take_discarded().len(), 4);
        // Under the byte bound nothing goes.
        assert_eq!(log.evict(9, u64::MAX), 0);

        // A conflicting suffix below the cache empties it and starts it again.
        log.truncate_and_append(&[e(7, 4)]);
        assert_eq!(log.last_index(), 7);
        assert_eq!(log.cache_first(), 7);
        assert_eq!(log.term(6), Some(3));
        assert_eq!(log.slice(7, 7, 1), vec![e(7, 4)]);
        log.truncate_and_append(&[e(2, 4)]);
        assert_eq!(log.latest_config().1, 0, "the config entry at 2 was cut");
    }
}
