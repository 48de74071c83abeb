//! Messages exchanged between Raft cores. The transport maps them 1:1 onto
//! `raft.proto`; the core never sees the wire format.

use crate::types::{Entry, LogIndex, NodeId, SnapshotMeta, Term};

/// A message from one node to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub body: MessageBody,
}

/// What a message says. Requests and replies are all one-way messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    RequestVote {
        term: Term,
        last_log_index: LogIndex,
        last_log_term: Term,
        /// A pre-vote changes no one's term or vote.
        pre_vote: bool,
        /// Sent by the target of a leadership transfer: granted even by peers
        /// inside their leader lease.
        transfer: bool,
    },
    RequestVoteReply {
        term: Term,
        granted: bool,
        pre_vote: bool,
    },
    AppendEntries {
        term: Term,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
        /// Heartbeat round for ReadIndex confirmation; echoed in the reply.
        read_round: u64,
    },
    AppendEntriesReply {
        term: Term,
        success: bool,
        /// On success, the highest index known to match the leader's log.
        match_index: LogIndex,
        /// On failure, where the leader should retry from (fast back-off hint).
        conflict_index: LogIndex,
        /// On failure, the term of the follower's conflicting entry (0 if none).
        conflict_term: Term,
        read_round: u64,
        /// On failure, the `prev_log_index` of the AppendEntries rejected, so
        /// that a late rejection of an old message can be told apart and ignored.
        reject_index: LogIndex,
        /// The sender's incarnation (0 for a founding member): a reply from
        /// an earlier life of a re-added id must not move its progress.
        incarnation: u64,
    },
    /// The leader's core sends `data` empty; the runtime fills it with the
    /// snapshot file's image before it goes on the wire.
    InstallSnapshot {
        term: Term,
        meta: SnapshotMeta,
        data: Vec<u8>,
    },
    InstallSnapshotReply {
        term: Term,
        last_index: LogIndex,
        incarnation: u64,
    },
    /// A follower asks the leader for a confirmed commit index.
    /// `nonce` names the sender's incarnation (process): request ids restart
    /// in every process, so a reply is matched on (leader, id, nonce).
    ReadIndex {
        term: Term,
        request_id: u64,
        nonce: u64,
    },
    ReadIndexReply {
        term: Term,
        request_id: u64,
        read_index: LogIndex,
        ok: bool,
        nonce: u64,
    },
    /// Leadership transfer: the receiver starts an election at once.
    TimeoutNow { term: Term },
    /// Bootstrap handshake of a node that started on an empty data dir: "I am
    /// new" (`fresh`) or "I hold state". `reply` is false on the question.
    /// Carries no term and changes no one's term.
    Hello { fresh: bool, reply: bool },
}

/// Indexes and terms from the wire above this are refused, so that index
/// arithmetic (`index + 1`, `term + 1`) can never overflow.
pub const MAX_WIRE_INDEX: u64 = 1 << 62;

impl Message {
    /// Whether every index and term in the message is in range. The core
    /// drops messages that are not.
    pub fn is_valid(&self) -> bool {
        let ok = |v: u64| v <= MAX_WIRE_INDEX;
        match &self.body {
            MessageBody::RequestVote {
                term,
                last_log_index,
                last_log_term,
                ..
            } => ok(*term) && ok(*last_log_index) && ok(*last_log_term),
            MessageBody::RequestVoteReply { term, .. } | MessageBody::TimeoutNow { term } => {
                ok(*term)
            }
            MessageBody::AppendEntries {
                term,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                ..
            } => {
                ok(*term)
                    && ok(*prev_log_term)
                    && ok(*leader_commit)
                    && prev_log_index
                        .checked_add(entries.len() as u64)
                        .is_some_and(ok)
                    && entries.iter().all(|e| ok(e.index) && ok(e.term))
            }
            MessageBody::AppendEntriesReply {
                term,
                match_index,
                conflict_index,
                conflict_term,
                reject_index,
                ..
            } => {
                ok(*term)
                    && ok(*match_index)
                    && ok(*conflict_index)
                    && ok(*conflict_term)
                    && ok(*reject_index)
            }
            MessageBody::InstallSnapshot { term, meta, .. } => {
                ok(*term) && ok(meta.last_index) && ok(meta.last_term)
            }
            MessageBody::InstallSnapshotReply {
                term, last_index, ..
            } => ok(*term) && ok(*last_index),
            MessageBody::ReadIndex { term, .. } => ok(*term),
            MessageBody::ReadIndexReply {
                term, read_index, ..
            } => ok(*term) && ok(*read_index),
            MessageBody::Hello { .. } => true,
        }
    }
}

impl MessageBody {
    /// The sender's term carried by every message.
    pub fn term(&self) -> Term {
        match self {
            MessageBody::RequestVote { term, .. }
            | MessageBody::RequestVoteReply { term, .. }
            | MessageBody::AppendEntries { term, .. }
            | MessageBody::AppendEntriesReply { term, .. }
            | MessageBody::InstallSnapshot { term, .. }
            | MessageBody::InstallSnapshotReply { term, .. }
            | MessageBody::ReadIndex { term, .. }
            | MessageBody::ReadIndexReply { term, .. }
            | MessageBody::TimeoutNow { term } => *term,
            MessageBody::Hello { .. } => 0,
        }
    }
}
