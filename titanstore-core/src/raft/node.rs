//! [`RaftNode`]: the core's state, its public entry points and the assembly
//! of [`Ready`]. Protocol handling lives in `election.rs`, `replication.rs`
//! and `read_index.rs` (further `impl RaftNode` blocks).
//!
//! The runtime is asynchronous: `ready()` may be called again before earlier
//! entries are durable. The node therefore tracks what it handed out and what
//! the runtime reported persisted separately (see `log.rs`), a leader counts
//! itself only up to its persisted index, and replies that promise durability
//! travel in `persisted_messages`.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::bootstrap::Gate;
use super::log::RaftLog;
use super::message::{Message, MessageBody};
use super::progress::Progress;
use super::read_index::ReadIndexState;
use super::ready::{EntryFetch, FetchPurpose, Ready, Role, SoftState, Status};
use super::{Bootstrap, ProposeError, RaftConfig, RaftError};
use crate::types::{
    ClusterConfig, Command, EntryPayload, HardState, LogIndex, NodeId, Snapshot, SnapshotMeta, Term,
};

/// Most committed entries handed out by one `Ready`; the rest follow in the next.
const MAX_APPLY_PER_READY: usize = 4096;

/// Committed entries read back from storage ahead of the state machine.
const APPLY_READ_AHEAD: usize = 2 * MAX_APPLY_PER_READY;

/// One node's Raft state machine.
#[derive(Debug)]
pub struct RaftNode {
    pub(super) id: NodeId,
    pub(super) cfg: RaftConfig,
    pub(super) cluster: ClusterConfig,
    pub(super) role: Role,
    pub(super) term: Term,
    pub(super) voted_for: Option<NodeId>,
    pub(super) leader: Option<NodeId>,
    pub(super) log: RaftLog,
    /// Reported by the runtime through `on_applied` / snapshot install.
    pub(super) applied: LogIndex,
    /// Last index handed out in `committed_entries` (or installed by a snapshot).
    pub(super) apply_cursor: LogIndex,
    pub(super) election_elapsed: u64,
    pub(super) heartbeat_elapsed: u64,
    pub(super) randomized_timeout: u64,
    pub(super) rng: SmallRng,
    /// Votes received in the current (pre-)election.
    pub(super) votes: BTreeMap<NodeId, bool>,
    /// Leader only: one entry per other voter.
    pub(super) progress: BTreeMap<NodeId, Progress>,
    pub(super) reads: ReadIndexState,
    pub(super) msgs: Vec<Message>,
    pub(super) persisted_msgs: Vec<Message>,
    pub(super) pending_snapshot: Option<Snapshot>,
    /// A config named this node in this life (always, for a founding
    /// member): only then does a later config naming it in another life mean
    /// that it was removed and added again. A node that joined afresh may
    /// first read configs naming an earlier life of its id.
    pub(super) member_this_life: bool,
    prev_soft: SoftState,
    prev_hard: (Term, Option<NodeId>),
    /// Proposals since the last `ready()` not yet broadcast: they go out
    /// together, one AppendEntries per follower, when `ready()` is called.
    pub(super) append_pending: bool,
    pub(super) gate: Gate,
    /// Cleared by the runtime while its disk is stalled: no campaigning.
    pub(super) may_campaign: bool,
    /// Index of the entry holding the current config (the snapshot index
    /// when it comes from the snapshot).
    pub(super) conf_index: LogIndex,
    pub(super) transfer: Option<super::membership::Transfer>,
    /// Reads of entries no longer in memory, for the next `Ready`.
    pub(super) fetches: Vec<EntryFetch>,
    /// A read of committed entries for the state machine is outstanding.
    pub(super) apply_fetching: bool,
    /// Committed entries read back for the state machine, next to hand
    /// out: they follow `apply_cursor` (read-ahead of at most
    /// `APPLY_READ_AHEAD` plus one read).
    pub(super) fetched_apply: std::collections::VecDeque<crate::types::Entry>,
}

impl RaftNode {
    /// Builds a node from its durable state. It starts as a follower.
    pub fn new(config: RaftConfig, boot: Bootstrap) -> Result<Self, RaftError> {
        config.validate()?;
        let Bootstrap {
            hard_state,
            snapshot,
            stored,
            entries,
            applied,
        } = boot;
        let first = snapshot.last_index + 1;
        // Terms never decrease along the log, on disk or in memory.
        let mut previous = snapshot.last_term;
        let terms = stored
            .terms
            .iter()
            .copied()
            .chain(entries.iter().map(|e| e.term));
        for (index, term) in (first..).zip(terms) {
            if term < previous {
                return Err(RaftError::TermsDecreasing {
                    index,
                    term,
                    previous,
                });
            }
            previous = term;
        }
        let mut expected = first + stored.terms.len() as u64;
        let mut cluster = snapshot.config.clone();
        let names_me = |c: &ClusterConfig| {
            c.is_member(&config.id)
                && config
                    .member_incarnation
                    .is_none_or(|mine| c.incarnations.get(&config.id) == Some(&mine))
        };
        let mut member_this_life = config.member_incarnation.is_none() || names_me(&cluster);
        let mut at = first;
        for (index, c) in &stored.configs {
            if *index < at || *index >= expected {
                return Err(RaftError::EntriesNotContiguous {
                    expected: at,
                    found: *index,
                });
            }
            at = index + 1;
            member_this_life |= names_me(c);
            cluster = c.clone();
        }
        for e in &entries {
            if e.index != expected {
                return Err(RaftError::EntriesNotContiguous {
                    expected,
                    found: e.index,
                });
            }
            if let EntryPayload::Config(c) = &*e.payload {
                member_this_life |= names_me(c);
                cluster = c.clone();
            }
            expected += 1;
        }
        // An empty config is a node that joins an existing cluster: it never
        // campaigns and waits for the leader to send it the log.
        let _ = cluster;
        let last = expected - 1;
        if applied < snapshot.last_index || applied > last {
            return Err(RaftError::AppliedOutOfRange {
                applied,
                snapshot: snapshot.last_index,
                last,
            });
        }
        let commit = hard_state.commit.max(applied);
        let log = RaftLog::new(snapshot, stored, entries, commit);
        // Entries of a term newer than the durable term can survive a crash
        // between writing entries and hard state of one Ready; that Ready
        // only ever raised the term (a vote is persisted in an earlier one).
        let (term, voted_for) = if log.last_term() > hard_state.term {
            (log.last_term(), None)
        } else {
            (hard_state.term, hard_state.voted_for.clone())
        };
        let rng = SmallRng::seed_from_u64(config.seed);
        let mut node = RaftNode {
            id: config.id.clone(),
            cluster,
            role: Role::Follower,
            term,
            voted_for,
            leader: None,
            log,
            applied,
            apply_cursor: applied,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_timeout: config.election_timeout_min_ticks,
            rng,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            reads: ReadIndexState::default(),
            msgs: Vec::new(),
            persisted_msgs: Vec::new(),
            pending_snapshot: None,
            prev_soft: SoftState {
                role: Role::Follower,
                term,
                leader: None,
            },
            prev_hard: (hard_state.term, hard_state.voted_for),
            append_pending: false,
            gate: Gate::Open,
            may_campaign: true,
            conf_index: 0,
            member_this_life,
            transfer: None,
            fetches: Vec::new(),
            apply_fetching: false,
            fetched_apply: std::collections::VecDeque::new(),
            cfg: config,
        };
        node.refresh_config();
        node.gate = Gate::initial(node.cfg.fresh, !node.voter_peers().is_empty());
        node.reset_election_timer();
        tracing::info!(
            id = %node.id, term, last_index = node.log.last_index(),
            commit = node.log.committed(), "raft node started"
        );
        Ok(node)
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        if !self.gate_open() {
            self.tick_gate();
            return;
        }
        self.reads_tick();
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => self.tick_election(),
        }
    }

    /// Handles a message from a peer. Messages not addressed to us, from
    /// non-members or with stale terms are dropped (stale requests get a
    /// reply carrying our term so the sender can catch up).
    pub fn step(&mut self, msg: Message) {
        // Messages are processed whoever sends them, member of our config or
        // not (Raft §4.1): a lagging node learns of newer members only from
        // them, and a joining node knows no one. Votes are counted only from
        // voters of the candidate's config, and pre-vote with the leader
        // lease keeps a removed node from disrupting. Only the bootstrap
        // handshake is heard from configured members alone.
        let hello_from_stranger =
            matches!(msg.body, MessageBody::Hello { .. }) && !self.cluster.is_member(&msg.from);
        if msg.to != self.id || msg.from == self.id || hello_from_stranger {
            tracing::debug!(from = %msg.from, to = %msg.to, "dropping misaddressed message");
            return;
        }
        if !msg.is_valid() {
            tracing::warn!(from = %msg.from, "dropping message with out-of-range index or term");
            return;
        }
        if let MessageBody::Hello { fresh, reply } = msg.body {
            self.handle_hello(msg.from, fresh, reply);
            return;
        }
        if !self.gate_open() {
            // Not even a term change: a node that may have lost its data must
            // not let anything it receives count as durable state.
            return;
        }
        let mterm = msg.body.term();
        if mterm > self.term {
            match &msg.body {
                MessageBody::RequestVote {
                    pre_vote, transfer, ..
                } => {
                    if *pre_vote {
                        // A pre-vote never changes our term; handled below.
                    } else if self.cfg.check_quorum && self.in_lease() && !*transfer {
                        tracing::debug!(from = %msg.from, mterm, "ignoring vote request: leader lease");
                        return;
                    } else {
                        self.become_follower(mterm, None);
                    }
                }
                MessageBody::RequestVoteReply {
                    pre_vote: true,
                    granted: true,
                    ..
                } => {}
                MessageBody::AppendEntries { .. } | MessageBody::InstallSnapshot { .. } => {
                    self.become_follower(mterm, Some(msg.from.clone()));
                }
                _ => self.become_follower(mterm, None),
            }
        } else if mterm < self.term {
            self.reply_stale(msg);
            return;
        }
        let Message { from, body, .. } = msg;
        match body {
            MessageBody::RequestVote {
                term,
                last_log_index,
                last_log_term,
                pre_vote,
                ..
            } => self.handle_vote_request(from, term, last_log_index, last_log_term, pre_vote),
            MessageBody::RequestVoteReply {
                term,
                granted,
                pre_vote,
            } => self.handle_vote_reply(from, term, granted, pre_vote),
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_round,
                ..
            } => {
                if self.accept_leader(&from) {
                    self.handle_append(
                        from,
                        prev_log_index,
                        prev_log_term,
                        entries,
                        leader_commit,
                        read_round,
                    );
                }
            }
            MessageBody::AppendEntriesReply {
                success,
                match_index,
                conflict_index,
                conflict_term,
                read_round,
                reject_index,
                incarnation,
                ..
            } if self.reply_from_this_life(&from, incarnation) => self.handle_append_reply(
                from,
                super::replication::AppendReply {
                    success,
                    match_index,
                    conflict_index,
                    conflict_term,
                    read_round,
                    reject_index,
                },
            ),
            MessageBody::InstallSnapshot { meta, data, .. } => {
                if self.accept_leader(&from) {
                    self.handle_snapshot(from, meta, data);
                }
            }
            MessageBody::InstallSnapshotReply {
                last_index,
                incarnation,
                ..
            } => {
                if self.reply_from_this_life(&from, incarnation) {
                    self.handle_snapshot_reply(from, last_index)
                }
            }
            MessageBody::ReadIndex {
                request_id, nonce, ..
            } => self.handle_read_request(from, request_id, nonce),
            MessageBody::ReadIndexReply {
                request_id,
                read_index,
                ok,
                nonce,
                ..
            } => self.handle_read_reply(&from, request_id, read_index, ok, nonce),
            MessageBody::Hello { .. } | MessageBody::AppendEntriesReply { .. } => {}
            MessageBody::TimeoutNow { .. } => {
                if self.leader.as_deref() == Some(from.as_str())
                    && self.promotable()
                    && self.may_campaign
                {
                    tracing::info!(id = %self.id, "leadership transfer: campaigning now");
                    self.become_candidate_with(true);
                }
            }
        }
    }

    /// Appends a command (leader only). Returns its (index, term); it is
    /// committed once `committed_entries` hands it out.
    pub fn propose(&mut self, command: Command) -> Result<(LogIndex, Term), ProposeError> {
        self.propose_payload(EntryPayload::Command(command))
    }

    /// Appends any payload but a configuration (leader only).
    pub fn propose_payload(
        &mut self,
        payload: EntryPayload,
    ) -> Result<(LogIndex, Term), ProposeError> {
        self.check_can_propose()?;
        let index = self.log.append(self.term, payload);
        self.append_pending = true;
        Ok((index, self.term))
    }

    /// Only a leader that is not handing over leadership takes proposals.
    pub fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader.clone(),
            });
        }
        if let Some(t) = &self.transfer {
            return Err(ProposeError::Transferring {
                target: t.target.clone(),
            });
        }
        Ok(())
    }

    /// The runtime's disk is stalled (or well again). While stalled the node
    /// does not campaign, and a leader steps down so a healthy node can lead.
    pub fn set_disk_stalled(&mut self, stalled: bool) {
        if stalled != self.may_campaign {
            return;
        }
        self.may_campaign = !stalled;
        if stalled && self.role == Role::Leader {
            tracing::warn!(id = %self.id, term = self.term, "disk stalled: stepping down");
            self.become_follower(self.term, None);
        } else if stalled && self.role != Role::Follower {
            self.become_follower(self.term, None);
        }
    }

    /// Starts an election now (pre-vote first when enabled).
    pub fn campaign(&mut self) {
        self.hup();
    }

    /// Whether `ready()` would return something.
    pub fn has_ready(&self) -> bool {
        self.append_pending
            || self.soft_state() != self.prev_soft
            || (self.term, self.voted_for.as_ref()) != (self.prev_hard.0, self.prev_hard.1.as_ref())
            || self.pending_snapshot.is_some()
            || self.log.has_unhanded()
            || !self.msgs.is_empty()
            || !self.persisted_msgs.is_empty()
            || (self.apply_cursor < self.apply_limit() && !self.apply_fetching)
            || !self.fetched_apply.is_empty()
            || !self.fetches.is_empty()
            || self.reads_pending_output()
    }

    /// Hands out everything pending. Does not wait for anything: call again
    /// whenever `has_ready()` is true, even before earlier work is durable.
    pub fn ready(&mut self) -> Ready {
        if std::mem::take(&mut self.append_pending) && self.role == Role::Leader {
            self.bcast_append();
        }
        self.flush_reads();
        let mut rd = Ready {
            seq: self.log.start_ready(),
            ..Ready::default()
        };
        let soft = self.soft_state();
        if soft != self.prev_soft {
            self.prev_soft = soft.clone();
            rd.soft_state = Some(soft);
        }
        rd.snapshot = self.pending_snapshot.take();
        rd.entries = self.log.take_unhanded();
        if (self.term, self.voted_for.as_ref()) != (self.prev_hard.0, self.prev_hard.1.as_ref()) {
            self.prev_hard = (self.term, self.voted_for.clone());
            rd.hard_state = Some(HardState {
                term: self.term,
                voted_for: self.voted_for.clone(),
                commit: self.log.committed(),
            });
        }
        rd.messages = std::mem::take(&mut self.msgs);
        rd.persisted_messages = std::mem::take(&mut self.persisted_msgs);
        rd.committed_entries = self.committed_to_apply();
        if let Some(last) = rd.committed_entries.last() {
            self.apply_cursor = last.index;
        }
        // What is durable and handed to the state machine may leave memory.
        self.log.evict(self.apply_cursor, self.cfg.log_cache_bytes);
        rd.read_states = std::mem::take(&mut self.reads.ready);
        rd.failed_reads = std::mem::take(&mut self.reads.failed);
        rd.fetches = std::mem::take(&mut self.fetches);
        rd
    }

    /// The next committed entries for the state machine: from memory, or
    /// read back from storage. Reads run one at a time but ahead of the
    /// applying: the next is asked for as soon as one comes back, so the
    /// storage thread reads while the state machine applies.
    fn committed_to_apply(&mut self) -> Vec<crate::types::Entry> {
        // Read-ahead that a snapshot install overtook is of no use.
        while self
            .fetched_apply
            .front()
            .is_some_and(|e| e.index <= self.apply_cursor)
        {
            self.fetched_apply.pop_front();
        }
        if self
            .fetched_apply
            .front()
            .is_some_and(|e| e.index != self.apply_cursor + 1)
        {
            self.fetched_apply.clear();
        }
        let limit = self.apply_limit();
        let lo = self.apply_cursor + 1;
        let cache_first = self.log.cache_first();
        let out: Vec<crate::types::Entry> = if !self.fetched_apply.is_empty() {
            let n = self.fetched_apply.len().min(MAX_APPLY_PER_READY);
            self.fetched_apply.drain(..n).collect()
        } else if lo <= limit && lo >= cache_first {
            self.log.slice(lo, limit, MAX_APPLY_PER_READY)
        } else {
            Vec::new()
        };
        let next = out.last().map_or(lo, |e| e.index + 1) + self.fetched_apply.len() as u64;
        if !self.apply_fetching
            && next <= limit
            && next < cache_first
            && self.fetched_apply.len() < APPLY_READ_AHEAD
        {
            self.apply_fetching = true;
            let hi = limit
                .min(cache_first - 1)
                .min(next + APPLY_READ_AHEAD as u64 - 1);
            self.fetches.push(EntryFetch {
                lo: next,
                hi,
                purpose: FetchPurpose::Apply,
            });
        }
        out
    }

    /// The runtime read back the entries of `fetch` (empty: they are gone,
    /// e.g. compacted behind a snapshot meanwhile). Whatever no longer fits
    /// what the node is doing is dropped, and asked for again if still needed.
    pub fn on_fetched(&mut self, fetch: EntryFetch, entries: Vec<crate::types::Entry>) {
        // Only entries still in our log, from the first one asked for on.
        let valid = entries
            .iter()
            .enumerate()
            .take_while(|(i, e)| {
                e.index == fetch.lo + *i as u64
                    && e.index <= fetch.hi
                    && self.log.match_term(e.index, e.term)
            })
            .count();
        let mut entries = entries;
        entries.truncate(valid);
        match fetch.purpose {
            FetchPurpose::Apply => {
                self.apply_fetching = false;
                let limit = self.apply_limit();
                entries.retain(|e| e.index <= limit);
                let expected = self.apply_cursor + 1 + self.fetched_apply.len() as u64;
                if entries.first().is_some_and(|e| e.index == expected) {
                    self.fetched_apply.extend(entries);
                }
            }
            FetchPurpose::Replicate { peer, term } => {
                // A leader of another term has its own progress (and reads).
                if self.role != Role::Leader || self.term != term {
                    return;
                }
                if let Some(pr) = self.progress.get_mut(&peer)
                    && pr.reading == Some(fetch.lo)
                {
                    pr.reading = None;
                }
                self.send_fetched(&peer, fetch.lo, entries);
            }
        }
    }

    /// The runtime made entries up to (`index`, `term`) of Ready `seq` durable.
    pub fn on_persisted(&mut self, seq: u64, index: LogIndex, term: Term) {
        if self.log.on_persisted(seq, index, term) && self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    /// The runtime made the snapshot at `index` of Ready `seq` durable and installed it.
    pub fn on_snapshot_persisted(&mut self, seq: u64, index: LogIndex) {
        self.log.on_snapshot_persisted(seq, index);
        if index == self.log.snapshot_index() {
            self.applied = self.applied.max(index);
        }
    }

    /// The state machine applied everything up to `index`.
    pub fn on_applied(&mut self, index: LogIndex) {
        self.applied = self.applied.max(index.min(self.apply_cursor));
    }

    /// The runtime wrote a snapshot at `meta.last_index` (<= applied): drop the
    /// log up to it. Ignored if it does not fit our log.
    pub fn on_snapshot_taken(&mut self, meta: SnapshotMeta) {
        let index = meta.last_index;
        if index > self.applied || !self.log.compact(meta) {
            tracing::debug!(
                index,
                applied = self.applied,
                "ignoring snapshot that does not fit the log"
            );
        }
    }

    /// Entries compaction or a snapshot install cut off since the last call:
    /// freeing 100k+ entries takes milliseconds, so the runtime may do it
    /// on another thread.
    pub fn take_discarded(&mut self) -> Vec<crate::types::Entry> {
        self.log.take_discarded()
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// Whether a received snapshot waits to be handed out in a `Ready`.
    pub fn has_pending_snapshot(&self) -> bool {
        self.pending_snapshot.is_some()
    }

    /// Highest index known committed.
    pub fn committed(&self) -> LogIndex {
        self.log.committed()
    }

    /// Why the node refuses to take part, if it does (see `bootstrap.rs`).
    pub fn refusal(&self) -> Option<&str> {
        match &self.gate {
            Gate::Refused(reason) => Some(reason),
            _ => None,
        }
    }

    /// A snapshot of the node's state (clones; for STATUS and tests).
    pub fn status(&self) -> Status {
        Status {
            id: self.id.clone(),
            role: self.role,
            term: self.term,
            leader: self.leader.clone(),
            commit: self.log.committed(),
            applied: self.applied,
            last_index: self.log.last_index(),
            snapshot_index: self.log.snapshot_index(),
            log_cache_first: self.log.cache_first(),
            log_cache_bytes: self.log.cache_bytes(),
            bootstrapping: matches!(self.gate, Gate::Closed { .. }),
            voters: self.cluster.voters.len(),
            learners: self.cluster.learners.len(),
            removed: !self.cluster.voters.is_empty() && !self.cluster.is_member(&self.id),
            refused: self.refusal().map(str::to_string),
        }
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.cluster
    }

    /// Leader only: each peer's distance behind this node's last index
    /// (empty on any other role).
    pub fn peer_lags(&self) -> Vec<(NodeId, u64)> {
        if self.role != Role::Leader {
            return Vec::new();
        }
        let last = self.log.last_index();
        self.progress
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, p)| (id.clone(), last.saturating_sub(p.matched)))
            .collect()
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            term: self.term,
            leader: self.leader.clone(),
        }
    }

    /// Committed entries are applied only once they are durable locally.
    fn apply_limit(&self) -> LogIndex {
        self.log.committed().min(self.log.persisted())
    }

    pub(super) fn is_voter(&self) -> bool {
        self.counts_in(&self.cluster)
    }

    /// Whether this node is a voter of `config`, in this life.
    pub(super) fn counts_in(&self, config: &ClusterConfig) -> bool {
        config.is_voter(&self.id)
            && match self.cfg.member_incarnation {
                None => true,
                Some(mine) => config.incarnations.get(&self.id) == Some(&mine),
            }
    }

    /// Whether a reply from member `from` comes from the life of it our
    /// config names (a founding member: incarnation 0).
    pub(super) fn reply_from_this_life(&self, from: &str, incarnation: u64) -> bool {
        self.cluster.incarnations.get(from).copied().unwrap_or(0) == incarnation
    }

    /// This node's incarnation as its replies carry it.
    pub(super) fn my_incarnation(&self) -> u64 {
        self.cfg.member_incarnation.unwrap_or(0)
    }

    /// Whether this node's vote is its own promise: always for a founding
    /// member; for one that joined, once its config names its incarnation.
    /// (Votes of members who do not know yet that they were promoted are
    /// needed for progress, so this does not ask for voter status.)
    pub(super) fn votes_in_this_life(&self) -> bool {
        match self.cfg.member_incarnation {
            None => true,
            Some(mine) => self.cluster.incarnations.get(&self.id) == Some(&mine),
        }
    }

    /// Whether this node may campaign: a voter in its latest config, or, while
    /// that config is uncommitted, in the committed one. Otherwise a leader
    /// that lost leadership with its own removal uncommitted (it takes effect
    /// on append) would never campaign again, and the others may refuse their
    /// votes to each other for lacking that entry: no leader ever again. The
    /// votes it collects are still counted in its latest config.
    pub(super) fn promotable(&self) -> bool {
        self.is_voter()
            || (self.conf_index > self.log.committed()
                && self.counts_in(&self.log.config_at(self.log.committed())))
    }

    /// Every other member (voters and learners), in id order: who gets the log.
    pub(super) fn peers(&self) -> Vec<NodeId> {
        self.cluster
            .voters
            .keys()
            .chain(self.cluster.learners.keys())
            .filter(|v| **v != self.id)
            .cloned()
            .collect()
    }

    /// Other voters, in id order: who votes.
    pub(super) fn voter_peers(&self) -> Vec<NodeId> {
        self.cluster
            .voters
            .keys()
            .filter(|v| **v != self.id)
            .cloned()
            .collect()
    }

    pub(super) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.msgs.push(Message {
            from: self.id.clone(),
            to,
            body,
        });
    }

    /// Queues a message that may leave only once this Ready is durable.
    pub(super) fn send_persisted(&mut self, to: NodeId, body: MessageBody) {
        self.persisted_msgs.push(Message {
            from: self.id.clone(),
            to,
            body,
        });
    }

    /// Replies to a message from an older term so its sender learns ours.
    fn reply_stale(&mut self, msg: Message) {
        tracing::debug!(from = %msg.from, mterm = msg.body.term(), term = self.term, "stale message");
        let term = self.term;
        match msg.body {
            MessageBody::AppendEntries { read_round, .. } => {
                self.send(msg.from, reject_reply(term, read_round));
            }
            MessageBody::InstallSnapshot { .. } => {
                self.send(msg.from, reject_reply(term, 0));
            }
            MessageBody::RequestVote { pre_vote, .. } => self.send(
                msg.from,
                MessageBody::RequestVoteReply {
                    term,
                    granted: false,
                    pre_vote,
                },
            ),
            MessageBody::ReadIndex {
                request_id, nonce, ..
            } => self.send(
                msg.from,
                MessageBody::ReadIndexReply {
                    term,
                    request_id,
                    read_index: 0,
                    ok: false,
                    nonce,
                },
            ),
            _ => {}
        }
    }
}

/// An AppendEntriesReply that only tells a stale leader our term.
fn reject_reply(term: Term, read_round: u64) -> MessageBody {
    MessageBody::AppendEntriesReply {
        term,
        success: false,
        match_index: 0,
        conflict_index: 0,
        conflict_term: 0,
        read_round,
        reject_index: 0,
        incarnation: 0,
    }
}
