//! Linearizable reads (Raft §6.4, ReadIndex), leader and follower side.
//!
//! Leader: a read waits until an entry of the current term is committed,
//! then joins the next *read round*: the commit index is recorded, a
//! heartbeat carrying the round number goes to every follower, and once a
//! majority echoed that round (or a later one) the reads are answered with
//! the recorded index. All reads that arrive between two `ready()` calls
//! share one round. In lease mode a leader holding a lease answers at once
//! (`lease.rs`).
//!
//! Follower: reads that arrive between two `ready()` calls are forwarded as
//! one batch: a single `ReadIndex` whose request id names the batch, and the
//! one `ReadIndexReply` answers every read in it with the same index. (Not
//! held back while an earlier batch is outstanding: that would add up to a
//! round trip to every read arriving mid-flight, and the leader folds
//! concurrent batches into one heartbeat round anyway.) Reads that can no
//! longer complete (leadership lost, leader changed, no answer by the
//! deadline) are failed, the whole batch together; never answered with an
//! index from another leader or another incarnation's request.

use std::collections::{BTreeMap, VecDeque};

use super::error::ReadError;
use super::lease::LeaseState;
use super::message::MessageBody;
use super::node::RaftNode;
use super::ready::{ReadState, Role};
use crate::types::{LogIndex, NodeId};

/// Who asked for a read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requester {
    Local(u64),
    Remote {
        from: NodeId,
        request_id: u64,
        nonce: u64,
    },
}

/// Follower: one batch of reads forwarded as a single `ReadIndex`.
#[derive(Debug, Clone)]
struct ForwardedBatch {
    leader: NodeId,
    /// Read-clock tick at which the batch fails if unanswered.
    deadline: u64,
    reads: Vec<u64>,
}

/// One heartbeat round confirming leadership for a batch of reads.
#[derive(Debug, Clone)]
struct ReadRound {
    round: u64,
    index: LogIndex,
    requesters: Vec<Requester>,
}

#[derive(Debug, Default)]
pub(crate) struct ReadIndexState {
    /// Number of the latest round started; echoed by followers.
    pub(crate) round: u64,
    /// Leader: reads waiting to start a round (at the next `ready()`).
    unsent: Vec<Requester>,
    /// Leader: reads waiting for the first commit of this term.
    awaiting_commit: Vec<Requester>,
    rounds: VecDeque<ReadRound>,
    /// Leader: highest round each follower echoed in this term.
    pub(super) acks: BTreeMap<NodeId, u64>,
    /// Follower: reads to forward at the next `ready()`, as one batch.
    unforwarded: Vec<u64>,
    /// Follower: batch id (the wire request id) -> batch, of batches sent.
    forwarded: BTreeMap<u64, ForwardedBatch>,
    /// Follower: the last batch id used (unique within this incarnation).
    last_batch: u64,
    /// The read clock: ticks since this node started.
    pub(super) ticks: u64,
    pub(super) lease: LeaseState,
    pub(crate) ready: Vec<ReadState>,
    pub(crate) failed: Vec<u64>,
}

impl ReadIndexState {
    pub(crate) fn reset_leader(&mut self) {
        self.acks.clear();
        self.lease = LeaseState::default();
    }
}

impl RaftNode {
    /// Asks for a linearizable read. The answer is a `ReadState` (or a failed
    /// read) in a later `Ready`.
    pub fn read_index(&mut self, request_id: u64) -> Result<(), ReadError> {
        if self.role == Role::Leader {
            self.leader_read(Requester::Local(request_id));
            return Ok(());
        }
        if self.leader.is_none() {
            return Err(ReadError::NoLeader);
        }
        // Any change of leader before the batch goes out fails it
        // (`fail_forwarded_reads`), so it always goes to this leader.
        self.reads.unforwarded.push(request_id);
        Ok(())
    }

    /// Follower: sends the reads that arrived since the last call to the
    /// leader as one batch.
    fn forward_reads(&mut self) {
        if self.reads.unforwarded.is_empty() {
            return;
        }
        let reads = std::mem::take(&mut self.reads.unforwarded);
        let leader = match (&self.role, &self.leader) {
            (Role::Follower, Some(leader)) => leader.clone(),
            _ => {
                self.reads.failed.extend(reads);
                return;
            }
        };
        self.reads.last_batch += 1;
        let request_id = self.reads.last_batch;
        let deadline = self.reads.ticks + 2 * self.cfg.election_timeout_max_ticks;
        self.reads.forwarded.insert(
            request_id,
            ForwardedBatch {
                leader: leader.clone(),
                deadline,
                reads,
            },
        );
        let term = self.term;
        let nonce = self.cfg.incarnation;
        self.send(
            leader,
            MessageBody::ReadIndex {
                term,
                request_id,
                nonce,
            },
        );
    }

    fn committed_in_current_term(&self) -> bool {
        self.log.term(self.log.committed()) == Some(self.term)
    }

    fn leader_read(&mut self, requester: Requester) {
        if self.lease_valid() {
            let index = self.log.committed();
            self.answer_read(requester, Some(index));
        } else if self.committed_in_current_term() {
            self.reads.unsent.push(requester);
        } else {
            self.reads.awaiting_commit.push(requester);
        }
    }

    pub(super) fn handle_read_request(&mut self, from: NodeId, request_id: u64, nonce: u64) {
        let requester = Requester::Remote {
            from,
            request_id,
            nonce,
        };
        if self.role == Role::Leader {
            self.leader_read(requester);
        } else {
            self.answer_read(requester, None);
        }
    }

    /// A reply counts only if it comes from the leader the read was sent to
    /// and names this incarnation: a reply meant for an earlier process with
    /// the same request id must not answer a newer read with an older index.
    pub(super) fn handle_read_reply(
        &mut self,
        from: &NodeId,
        request_id: u64,
        read_index: LogIndex,
        ok: bool,
        nonce: u64,
    ) {
        if nonce != self.cfg.incarnation {
            tracing::debug!(%from, request_id, "read reply for another incarnation ignored");
            return;
        }
        match self.reads.forwarded.get(&request_id) {
            Some(batch) if batch.leader == *from => {}
            _ => return,
        }
        let Some(batch) = self.reads.forwarded.remove(&request_id) else {
            return;
        };
        if ok {
            self.reads
                .ready
                .extend(batch.reads.into_iter().map(|request_id| ReadState {
                    request_id,
                    index: read_index,
                }));
        } else {
            self.reads.failed.extend(batch.reads);
        }
    }

    /// Leader: the first entry of this term committed, so waiting reads may go.
    pub(super) fn on_commit_advanced(&mut self) {
        if self.committed_in_current_term() && !self.reads.awaiting_commit.is_empty() {
            let waiting = std::mem::take(&mut self.reads.awaiting_commit);
            self.reads.unsent.extend(waiting);
        }
    }

    /// Starts one round for all reads that arrived since the last call (a
    /// follower forwards them as one batch instead).
    pub(super) fn flush_reads(&mut self) {
        self.forward_reads();
        if self.role != Role::Leader || self.reads.unsent.is_empty() {
            return;
        }
        self.reads.round += 1;
        self.lease_round_sent(self.reads.round);
        let round = ReadRound {
            round: self.reads.round,
            index: self.log.committed(),
            requesters: std::mem::take(&mut self.reads.unsent),
        };
        self.reads.rounds.push_back(round);
        for peer in self.peers() {
            self.send_heartbeat(&peer);
        }
        self.confirm_reads();
    }

    pub(super) fn on_read_ack(&mut self, from: &NodeId, round: u64) {
        let ack = self.reads.acks.entry(from.clone()).or_insert(0);
        if round > *ack {
            *ack = round;
            self.confirm_reads();
            self.lease_on_ack();
        }
    }

    /// Answers every round a majority has acknowledged.
    fn confirm_reads(&mut self) {
        while let Some(front) = self.reads.rounds.front() {
            let acked = usize::from(self.is_voter())
                + self
                    .reads
                    .acks
                    .iter()
                    .filter(|(id, r)| **r >= front.round && self.cluster.is_voter(id))
                    .count();
            if acked < self.cluster.quorum() {
                break;
            }
            let Some(done) = self.reads.rounds.pop_front() else {
                break;
            };
            for requester in done.requesters {
                self.answer_read(requester, Some(done.index));
            }
        }
    }

    fn answer_read(&mut self, requester: Requester, index: Option<LogIndex>) {
        match requester {
            Requester::Local(request_id) => match index {
                Some(index) => self.reads.ready.push(ReadState { request_id, index }),
                None => self.reads.failed.push(request_id),
            },
            Requester::Remote {
                from,
                request_id,
                nonce,
            } => {
                let term = self.term;
                self.send(
                    from,
                    MessageBody::ReadIndexReply {
                        term,
                        request_id,
                        read_index: index.unwrap_or(0),
                        ok: index.is_some(),
                        nonce,
                    },
                );
            }
        }
    }

    /// Leadership lost: every read the leader held fails.
    pub(super) fn fail_leader_reads(&mut self) {
        let mut all = std::mem::take(&mut self.reads.unsent);
        all.append(&mut self.reads.awaiting_commit);
        for round in std::mem::take(&mut self.reads.rounds) {
            all.extend(round.requesters);
        }
        self.reads.acks.clear();
        self.lease_reset();
        for requester in all {
            self.answer_read(requester, None);
        }
    }

    /// The leader we forwarded reads to is no longer (known to be) the leader.
    pub(super) fn fail_forwarded_reads(&mut self) {
        let unforwarded = std::mem::take(&mut self.reads.unforwarded);
        self.reads.failed.extend(unforwarded);
        for batch in std::mem::take(&mut self.reads.forwarded).into_values() {
            self.reads.failed.extend(batch.reads);
        }
    }

    pub(super) fn reads_tick(&mut self) {
        self.reads.ticks += 1;
        let now = self.reads.ticks;
        let expired: Vec<u64> = self
            .reads
            .forwarded
            .iter()
            .filter(|(_, batch)| batch.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(batch) = self.reads.forwarded.remove(&id) {
                self.reads.failed.extend(batch.reads);
            }
        }
    }

    pub(super) fn reads_pending_output(&self) -> bool {
        !self.reads.ready.is_empty()
            || !self.reads.failed.is_empty()
            || !self.reads.unforwarded.is_empty()
            || (self.role == Role::Leader && !self.reads.unsent.is_empty())
    }
}
