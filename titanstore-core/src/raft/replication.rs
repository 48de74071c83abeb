//! Log replication on both sides: the leader's AppendEntries / InstallSnapshot
//! sending, flow control and commit rule; the follower's log-matching check,
//! conflict truncation and replies.
//!
//! Rules kept here: a follower never truncates entries that match the
//! leader's; it replies only through `persisted_messages` (a reply promises
//! durability); the leader counts itself only up to its persisted index and
//! commits by counting only entries of its current term (Raft §5.4.2).

use super::message::MessageBody;
use super::node::RaftNode;
use super::progress::ProgressState;
use super::ready::{EntryFetch, FetchPurpose};
use crate::types::{Entry, LogIndex, NodeId, Snapshot, SnapshotMeta, Term};

/// The fields of an AppendEntriesReply the leader acts on.
pub(super) struct AppendReply {
    pub success: bool,
    pub match_index: LogIndex,
    pub conflict_index: LogIndex,
    pub conflict_term: Term,
    pub read_round: u64,
    pub reject_index: LogIndex,
}

impl RaftNode {
    // ----- leader side -----

    /// Sends new entries to every follower that can take them.
    pub(super) fn bcast_append(&mut self) {
        for peer in self.peers() {
            self.send_append(&peer, false);
        }
    }

    /// Heartbeat round: probes get a real AppendEntries, others a heartbeat.
    pub(super) fn bcast_heartbeat(&mut self) {
        for peer in self.peers() {
            let probing = match self.progress.get_mut(&peer) {
                Some(pr) if pr.state == ProgressState::Probe => {
                    pr.paused = false;
                    true
                }
                Some(_) => false,
                None => continue,
            };
            if !(probing && self.send_append(&peer, true)) {
                self.send_heartbeat(&peer);
            }
        }
    }

    /// Per-tick flow-control upkeep: recover from lost appends and snapshots.
    pub(super) fn tick_progress(&mut self) {
        let last = self.log.last_index();
        let patience = self.cfg.election_timeout_min_ticks;
        let mut retry = Vec::new();
        for (id, pr) in self.progress.iter_mut() {
            let waiting = match pr.state {
                ProgressState::Replicate => pr.matched < last && !pr.inflights.is_empty(),
                ProgressState::Snapshot { .. } => true,
                ProgressState::Probe => false,
            };
            if !waiting {
                pr.stall_ticks = 0;
                continue;
            }
            pr.stall_ticks += 1;
            let limit = match pr.state {
                // A big snapshot takes a while to load, send, install and fsync:
                // re-sending it too early only piles up copies.
                ProgressState::Snapshot { .. } => 10 * self.cfg.election_timeout_max_ticks,
                _ => patience,
            };
            if pr.stall_ticks >= limit {
                tracing::debug!(peer = %id, "no progress: falling back to probe");
                pr.become_probe();
                retry.push(id.clone());
            }
        }
        for peer in retry {
            self.send_append(&peer, true);
        }
    }

    /// Sends an AppendEntries (or InstallSnapshot if the entries are compacted).
    /// Returns whether a message was sent.
    pub(super) fn send_append(&mut self, peer: &NodeId, allow_empty: bool) -> bool {
        let max_inflight = self.cfg.max_inflight_appends;
        let Some(pr) = self.progress.get(peer) else {
            return false;
        };
        if pr.is_paused(max_inflight) {
            return false;
        }
        let next = pr.next;
        let prev = next - 1;
        let Some(prev_term) = self.log.term(prev) else {
            self.send_snapshot(peer);
            return true;
        };
        let cache_first = self.log.cache_first();
        if next < cache_first && next <= self.log.last_index() {
            // Durable, but no longer in memory: the runtime reads them back
            // and `on_fetched` sends them. One read fills the follower's
            // whole window of appends.
            let window = self.cfg.max_entries_per_append * self.cfg.max_inflight_appends;
            let hi = (cache_first - 1).min(next + window.max(1) as u64 - 1);
            if let Some(pr) = self.progress.get_mut(peer)
                && pr.reading.is_none()
            {
                pr.reading = Some(next);
                self.fetches.push(EntryFetch {
                    lo: next,
                    hi,
                    purpose: FetchPurpose::Replicate {
                        peer: peer.clone(),
                        term: self.term,
                    },
                });
            }
            return false;
        }
        let entries = self
            .log
            .slice(next, self.log.last_index(), self.cfg.max_entries_per_append);
        if entries.is_empty() && !allow_empty {
            return false;
        }
        self.send_entries(peer, prev, prev_term, entries);
        true
    }

    /// Sends entries read back from storage for `peer` (see `send_append`),
    /// if the follower still needs them from `lo` on; then goes on with
    /// what follows (from memory, or another read).
    pub(super) fn send_fetched(&mut self, peer: &NodeId, lo: LogIndex, entries: Vec<Entry>) {
        let max_inflight = self.cfg.max_inflight_appends;
        let per_append = self.cfg.max_entries_per_append.max(1);
        let mut next = lo;
        for chunk in entries.chunks(per_append) {
            let wanted = self
                .progress
                .get(peer)
                .is_some_and(|pr| pr.next == next && !pr.is_paused(max_inflight));
            let Some(prev_term) = self.log.term(next - 1).filter(|_| wanted) else {
                break;
            };
            self.send_entries(peer, next - 1, prev_term, chunk.to_vec());
            next += chunk.len() as u64;
        }
        while self.send_append(peer, false) {}
    }

    /// One AppendEntries after (`prev`, `prev_term`), counted in flight.
    fn send_entries(
        &mut self,
        peer: &NodeId,
        prev: LogIndex,
        prev_term: Term,
        entries: Vec<Entry>,
    ) {
        let last = entries.last().map(|e| e.index);
        if let Some(pr) = self.progress.get_mut(peer) {
            pr.on_sent(last);
        }
        let body = MessageBody::AppendEntries {
            term: self.term,
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries,
            leader_commit: self.log.committed(),
            read_round: self.reads.round,
        };
        self.send(peer.clone(), body);
    }

    /// An empty AppendEntries anchored at the follower's match index, so it
    /// always succeeds; carries the commit index and the current read round.
    pub(super) fn send_heartbeat(&mut self, peer: &NodeId) {
        let matched = self.progress.get(peer).map_or(0, |pr| pr.matched);
        let (prev, prev_term) = match self.log.term(matched) {
            Some(t) => (matched, t),
            None => (0, 0),
        };
        let body = MessageBody::AppendEntries {
            term: self.term,
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries: Vec::new(),
            leader_commit: self.log.committed(),
            read_round: self.reads.round,
        };
        self.send(peer.clone(), body);
    }

    fn send_snapshot(&mut self, peer: &NodeId) {
        let meta = self.log.snapshot_meta().clone();
        tracing::debug!(peer = %peer, index = meta.last_index, "sending snapshot");
        if let Some(pr) = self.progress.get_mut(peer) {
            pr.become_snapshot(meta.last_index);
        }
        let body = MessageBody::InstallSnapshot {
            term: self.term,
            meta,
            data: Vec::new(),
        };
        self.send(peer.clone(), body);
    }

    pub(super) fn handle_append_reply(&mut self, from: NodeId, reply: AppendReply) {
        let AppendReply {
            success,
            match_index,
            conflict_index,
            conflict_term,
            read_round,
            reject_index,
        } = reply;
        if self.role != super::Role::Leader {
            return;
        }
        self.on_read_ack(&from, read_round);
        let last = self.log.last_index();
        let hinted_next = if conflict_term > 0 {
            match self.log.last_index_of_term(conflict_term) {
                Some(i) => i + 1,
                None => conflict_index,
            }
        } else {
            conflict_index
        };
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        let mut committed_may_move = false;
        if success {
            if match_index > last {
                tracing::debug!(peer = %from, match_index, "reply beyond our log: ignored");
                return;
            }
            committed_may_move = pr.maybe_update(match_index);
            match pr.state {
                ProgressState::Probe => pr.become_replicate(),
                ProgressState::Snapshot { pending } if pr.matched >= pending => pr.become_probe(),
                _ => {}
            }
        } else if pr.is_stale_rejection(reject_index) {
            // A late rejection of an AppendEntries sent before the follower
            // caught up: acting on it would knock a healthy follower back.
            tracing::debug!(peer = %from, reject_index, "stale rejection ignored");
            return;
        } else if !matches!(pr.state, ProgressState::Snapshot { .. }) {
            let next = hinted_next
                .min(pr.next.saturating_sub(1))
                .min(last + 1)
                .max(1);
            pr.on_reject(next);
            tracing::debug!(peer = %from, next = pr.next, "append rejected: backing off");
        }
        if committed_may_move {
            self.maybe_commit();
        }
        if self.role != super::Role::Leader {
            return;
        }
        if success {
            self.maybe_send_timeout_now(&from);
            while self.send_append(&from, false) {}
        } else {
            self.send_append(&from, true);
        }
    }

    pub(super) fn handle_snapshot_reply(&mut self, from: NodeId, last_index: LogIndex) {
        if self.role != super::Role::Leader || last_index > self.log.last_index() {
            return;
        }
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        let updated = pr.maybe_update(last_index);
        if matches!(pr.state, ProgressState::Snapshot { .. }) {
            pr.become_probe();
        }
        if updated {
            self.maybe_commit();
        }
        self.send_append(&from, true);
    }

    /// Advances the commit index to the highest current-term index a majority
    /// (us counted only up to our persisted index) holds durably.
    pub(super) fn maybe_commit(&mut self) {
        let mut matches: Vec<LogIndex> = self
            .cluster
            .voters
            .keys()
            .map(|v| {
                if *v == self.id {
                    self.log.persisted()
                } else {
                    self.progress.get(v).map_or(0, |pr| pr.matched)
                }
            })
            .collect();
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&candidate) = matches.get(self.cluster.quorum() - 1) else {
            return;
        };
        if candidate <= self.log.committed() || self.log.term(candidate) != Some(self.term) {
            return;
        }
        self.log.commit_to(candidate);
        tracing::debug!(id = %self.id, commit = candidate, "commit advanced");
        self.on_commit_advanced();
        self.maybe_step_down_removed();
        if self.role != super::Role::Leader {
            return;
        }
        // Tell followers about the new commit index.
        for peer in self.peers() {
            if !self.send_append(&peer, false) {
                self.send_heartbeat(&peer);
            }
        }
    }

    // ----- follower side -----

    pub(super) fn handle_append(
        &mut self,
        leader: NodeId,
        prev_index: LogIndex,
        prev_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
        read_round: u64,
    ) {
        // Indexes come from the wire: checked arithmetic (`step` has already
        // refused values near overflow, this keeps the rule local).
        if entries.iter().enumerate().any(|(i, e)| {
            prev_index
                .checked_add(1 + i as u64)
                .is_none_or(|expected| e.index != expected)
                || e.term > self.term
        }) {
            tracing::debug!(from = %leader, "malformed AppendEntries dropped");
            return;
        }
        let committed = self.log.committed();
        let (prev_index, prev_term, entries) = if prev_index < committed {
            // Everything up to our commit index matches the leader already.
            let skip = (committed - prev_index) as usize;
            if entries.len() <= skip {
                self.reply_append(leader, true, committed, read_round);
                return;
            }
            let Some(term) = self.log.term(committed) else {
                return;
            };
            (committed, term, &entries[skip..])
        } else {
            (prev_index, prev_term, &entries[..])
        };
        if !self.log.match_term(prev_index, prev_term) {
            let rejected = prev_index;
            let (conflict_index, conflict_term) = self.log.conflict_hint(prev_index);
            let term = self.term;
            // A rejection promises nothing durable.
            self.send(
                leader,
                MessageBody::AppendEntriesReply {
                    term,
                    success: false,
                    match_index: 0,
                    conflict_index,
                    conflict_term,
                    read_round,
                    reject_index: rejected,
                    incarnation: self.my_incarnation(),
                },
            );
            return;
        }
        let Some(last_new) = prev_index.checked_add(entries.len() as u64) else {
            return;
        };
        if let Some(pos) = self.log.find_conflict(entries) {
            // Only the conflicting suffix goes; matching entries stay.
            let cuts_config = self.conf_index >= entries[pos].index;
            self.log.truncate_and_append(&entries[pos..]);
            let has_config = entries[pos..]
                .iter()
                .any(|e| matches!(*e.payload, crate::types::EntryPayload::Config(_)));
            if cuts_config || has_config {
                self.refresh_config();
            }
        }
        self.log.commit_to(leader_commit.min(last_new));
        self.reply_append(leader, true, last_new, read_round);
    }

    /// A success reply promises `match_index` is durable: it waits for the
    /// Ready unless that is already so (then, like heartbeat acks, it may go now).
    fn reply_append(
        &mut self,
        leader: NodeId,
        success: bool,
        match_index: LogIndex,
        read_round: u64,
    ) {
        let term = self.term;
        let body = MessageBody::AppendEntriesReply {
            term,
            success,
            match_index,
            conflict_index: 0,
            conflict_term: 0,
            read_round,
            reject_index: 0,
            incarnation: self.my_incarnation(),
        };
        if match_index <= self.log.persisted() {
            self.send(leader, body);
        } else {
            self.send_persisted(leader, body);
        }
    }

    pub(super) fn handle_snapshot(&mut self, leader: NodeId, meta: SnapshotMeta, data: Vec<u8>) {
        let index = meta.last_index;
        let term = self.term;
        let incarnation = self.my_incarnation();
        let reply = |last_index| MessageBody::InstallSnapshotReply {
            term,
            last_index,
            incarnation,
        };
        if index <= self.log.committed() {
            let committed = self.log.committed();
            self.send_persisted(leader, reply(committed));
            return;
        }
        if self.log.match_term(index, meta.last_term) {
            // We hold that entry: the snapshot only tells us it is committed.
            self.log.commit_to(index);
            self.send_persisted(leader, reply(index));
            return;
        }
        tracing::info!(id = %self.id, index, "installing snapshot from leader");
        self.log.restore(meta.clone());
        self.apply_cursor = index;
        self.refresh_config();
        self.pending_snapshot = Some(Snapshot { meta, data });
        self.send_persisted(leader, reply(index));
    }
}
