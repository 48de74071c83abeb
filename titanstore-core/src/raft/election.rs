//! Elections and role changes: ticks, pre-vote, votes, check-quorum.
//!
//! Safety rules kept here: a vote is granted at most once per term and is
//! never cleared within a term (only a term change resets it); a real vote
//! and a candidate's own vote become durable before anyone acts on them
//! (replies and vote requests travel in `persisted_messages`); a pre-vote
//! changes nobody's term or vote.

use rand::Rng;

use super::message::MessageBody;
use super::node::RaftNode;
use super::progress::Progress;
use super::ready::Role;
use crate::types::{EntryPayload, LogIndex, NodeId, Term};

impl RaftNode {
    pub(super) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.randomized_timeout = self
            .rng
            .random_range(self.cfg.election_timeout_min_ticks..self.cfg.election_timeout_max_ticks);
    }

    /// We heard from a live leader recently (or are a leader that checks its
    /// quorum, or, in lease mode, just started), so requests to replace it
    /// are refused. Lease reads rely on this (see `lease.rs`).
    pub(super) fn in_lease(&self) -> bool {
        match self.role {
            Role::Leader => self.cfg.check_quorum,
            _ => {
                (self.leader.is_some()
                    && self.election_elapsed < self.cfg.election_timeout_min_ticks)
                    || self.lease_boot_hold()
            }
        }
    }

    pub(super) fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.randomized_timeout && self.promotable() {
            tracing::debug!(id = %self.id, term = self.term, "election timeout");
            self.hup();
        }
    }

    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_timeout_min_ticks {
            self.election_elapsed = 0;
            if self.cfg.check_quorum && !self.quorum_active() {
                tracing::info!(id = %self.id, term = self.term, "check quorum failed: stepping down");
                self.become_follower(self.term, None);
                return;
            }
        }
        self.tick_progress();
        self.tick_transfer();
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.lease_heartbeat_round();
            self.bcast_heartbeat();
        }
    }

    /// Whether a majority (counting us) was heard from in this round; resets the marks.
    fn quorum_active(&mut self) -> bool {
        let mut active = usize::from(self.is_voter());
        for (id, pr) in self.progress.iter_mut() {
            if pr.recent_active && self.cluster.is_voter(id) {
                active += 1;
            }
            pr.recent_active = false;
        }
        active >= self.cluster.quorum()
    }

    /// Election timeout (or `campaign`): pre-vote first if enabled.
    pub(super) fn hup(&mut self) {
        if self.role == Role::Leader || !self.promotable() || !self.may_campaign {
            return;
        }
        if self.cfg.pre_vote {
            self.become_pre_candidate();
        } else {
            self.become_candidate();
        }
    }

    /// Follows `leader` (if known) in `term`. The vote is kept when the term
    /// does not change: clearing it would allow a second vote in this term.
    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        let term_changed = term > self.term;
        if term_changed {
            self.term = term;
            self.voted_for = None;
        }
        if self.role == Role::Leader {
            self.fail_leader_reads();
            self.progress.clear();
            self.transfer = None;
        }
        // A reply from the old term would be dropped: fail such reads now
        // rather than at their deadline (also when the same node leads again).
        if self.leader != leader || term_changed {
            self.fail_forwarded_reads();
        }
        if self.role != Role::Follower || self.leader != leader {
            tracing::debug!(id = %self.id, term, leader = ?leader, "became follower");
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.reset_election_timer();
    }

    /// Accepts `from` as the leader of our current term (AppendEntries or
    /// InstallSnapshot received). Returns false if that contradicts our state.
    pub(super) fn accept_leader(&mut self, from: &NodeId) -> bool {
        if self.role == Role::Leader {
            tracing::error!(id = %self.id, other = %from, term = self.term, "two leaders in one term: ignoring message");
            return false;
        }
        if self.role != Role::Follower || self.leader.as_ref() != Some(from) {
            self.become_follower(self.term, Some(from.clone()));
        }
        self.election_elapsed = 0;
        true
    }

    fn become_pre_candidate(&mut self) {
        tracing::debug!(id = %self.id, term = self.term, "starting pre-vote");
        if self.leader.is_some() {
            self.fail_forwarded_reads();
        }
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.id.clone(), true);
        self.reset_election_timer();
        if self.tally() == Some(true) {
            self.become_candidate();
            return;
        }
        let body = MessageBody::RequestVote {
            term: self.term + 1,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            pre_vote: true,
            transfer: false,
        };
        for peer in self.voter_peers() {
            self.send(peer, body.clone());
        }
    }

    pub(super) fn become_candidate(&mut self) {
        self.become_candidate_with(false);
    }

    /// Starts a real election; `transfer` when a leader handed over (its vote
    /// requests are granted even inside a peer's leader lease).
    pub(super) fn become_candidate_with(&mut self, transfer: bool) {
        if self.role == Role::Leader {
            return;
        }
        if self.leader.is_some() {
            self.fail_forwarded_reads();
        }
        self.term += 1;
        self.voted_for = Some(self.id.clone());
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.id.clone(), true);
        self.reset_election_timer();
        tracing::debug!(id = %self.id, term = self.term, "became candidate");
        if self.tally() == Some(true) {
            self.become_leader();
            return;
        }
        let body = MessageBody::RequestVote {
            term: self.term,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            pre_vote: false,
            transfer,
        };
        // Our own vote must be durable before anyone grants theirs.
        for peer in self.voter_peers() {
            self.send_persisted(peer, body.clone());
        }
    }

    fn become_leader(&mut self) {
        tracing::debug!(id = %self.id, term = self.term, "became leader");
        self.role = Role::Leader;
        self.leader = Some(self.id.clone());
        self.votes.clear();
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        let next = self.log.last_index() + 1;
        self.progress = self
            .peers()
            .into_iter()
            .map(|p| (p, Progress::new(next)))
            .collect();
        self.reads.reset_leader();
        self.log.append(self.term, EntryPayload::Noop);
        self.bcast_append();
        // A single voter commits once its own persistence completes.
        self.maybe_commit();
    }

    /// Some(true): a majority granted; Some(false): a majority refused.
    fn tally(&self) -> Option<bool> {
        // Only votes of voters in the current config count.
        let voters = self
            .votes
            .iter()
            .filter(|(id, _)| self.cluster.is_voter(id));
        let granted = voters.clone().filter(|(_, g)| **g).count();
        let refused = voters.count() - granted;
        let quorum = self.cluster.quorum();
        if granted >= quorum {
            Some(true)
        } else if refused >= quorum {
            Some(false)
        } else {
            None
        }
    }

    pub(super) fn handle_vote_request(
        &mut self,
        from: NodeId,
        mterm: Term,
        last_log_index: LogIndex,
        last_log_term: Term,
        pre_vote: bool,
    ) {
        let up_to_date = self.log.is_up_to_date(last_log_index, last_log_term)
            // A node that joined at runtime votes only once its log names
            // this life of it: replaying configs of an earlier life of its id,
            // it must not vote on their strength.
            && self.votes_in_this_life();
        if pre_vote {
            // Granted only for a future term, to an up-to-date log, when we
            // have not heard from a live leader within the minimum timeout.
            let granted = mterm > self.term && up_to_date && !self.in_lease();
            let term = if granted { mterm } else { self.term };
            tracing::debug!(id = %self.id, candidate = %from, granted, "pre-vote");
            self.send(
                from,
                MessageBody::RequestVoteReply {
                    term,
                    granted,
                    pre_vote: true,
                },
            );
            return;
        }
        // mterm == self.term here: higher terms were adopted by `step`.
        let can_vote = match &self.voted_for {
            None => self.leader.is_none(),
            Some(v) => *v == from,
        };
        let granted = can_vote && up_to_date;
        if granted {
            self.voted_for = Some(from.clone());
            self.reset_election_timer();
        }
        tracing::debug!(id = %self.id, candidate = %from, term = self.term, granted, "vote");
        let term = self.term;
        self.send_persisted(
            from,
            MessageBody::RequestVoteReply {
                term,
                granted,
                pre_vote: false,
            },
        );
    }

    pub(super) fn handle_vote_reply(
        &mut self,
        from: NodeId,
        mterm: Term,
        granted: bool,
        pre_vote: bool,
    ) {
        let expected = if pre_vote {
            self.role == Role::PreCandidate && mterm == self.term + u64::from(granted)
        } else {
            self.role == Role::Candidate && mterm == self.term
        };
        if !expected {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        match self.tally() {
            Some(true) if pre_vote => self.become_candidate(),
            Some(true) => self.become_leader(),
            Some(false) => self.become_follower(self.term, None),
            None => {}
        }
    }
}
