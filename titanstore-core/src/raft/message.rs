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
    },
    /// A follower asks the leader for a confirmed commit index.
    ReadIndex {
        term: Term,
        request_id: u64,
    },
    ReadIndexReply {
        term: Term,
        request_id: u64,
        read_index: LogIndex,
        ok: bool,
    },
    /// Leadership transfer: the receiver starts an election at once.
    TimeoutNow {
        term: Term,
    },
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
        }
    }
}
