//! Typed errors of the Raft core: one enum per caller-facing operation.
//!
//! Nothing here is caused by a peer: malformed or stale peer messages are
//! dropped (and logged) by `step`, never turned into errors.

use crate::types::{LogIndex, NodeId, Term};

/// Why a node could not be constructed from its durable state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    #[error("invalid raft config: {0}")]
    InvalidConfig(String),
    #[error("cluster config has no voters")]
    EmptyClusterConfig,
    #[error("bootstrap entries not contiguous: expected index {expected}, found {found}")]
    EntriesNotContiguous { expected: LogIndex, found: LogIndex },
    #[error("bootstrap entry {index} has term {term}, lower than the term {previous} before it")]
    TermsDecreasing {
        index: LogIndex,
        term: Term,
        previous: Term,
    },
    #[error("applied index {applied} outside [snapshot {snapshot}, last log index {last}]")]
    AppliedOutOfRange {
        applied: LogIndex,
        snapshot: LogIndex,
        last: LogIndex,
    },
}

/// Why a proposal was refused. The command was not appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader accepts proposals; `leader` is the one we know of.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// A leadership transfer is under way: writes wait for the new leader.
    #[error("leadership is being transferred to {target}")]
    Transferring { target: NodeId },
    /// A membership change that cannot be made (now or ever).
    #[error("{0}")]
    BadChange(String),
}

/// Why a linearizable read could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No leader is known, so no read index can be obtained.
    #[error("no leader known")]
    NoLeader,
}
