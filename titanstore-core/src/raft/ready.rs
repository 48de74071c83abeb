//! The values the core hands to the runtime: `Ready` (work to do), `SoftState`,
//! `ReadState`, `Role` and `Status`.
//!
//! Plain data only; `node.rs` decides what goes into them.

use std::fmt;

use super::message::Message;
use crate::types::{Entry, HardState, LogIndex, NodeId, Snapshot, Term};

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    /// Collecting pre-votes; term not yet bumped. Shown as "candidate".
    PreCandidate,
    Candidate,
    Leader,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Follower => "follower",
            Role::PreCandidate | Role::Candidate => "candidate",
            Role::Leader => "leader",
        })
    }
}

/// Volatile state the runtime may want to show or react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftState {
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
}

/// A confirmed linearizable read: answer `request_id` once applied >= `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadState {
    pub request_id: u64,
    pub index: LogIndex,
}

/// Everything the core wants done. Handle the parts in this order:
///
/// 1. send `messages` (any time, may overlap with persisting);
/// 2. persist `snapshot` (if any: discard the whole log and install it into the
///    state machine), then `entries` (if `entries[0].index` is at or below an
///    index handed out before, first drop the stored suffix from it), then
///    `hard_state`; persistence of successive Readys completes in order;
/// 3. once durable, send `persisted_messages` and call `on_snapshot_persisted`
///    / `on_persisted(seq, last entry index, last entry term)`;
/// 4. apply `committed_entries` in order (they are never past the local
///    durable index) and call `on_applied`; answer `read_states` once applied
///    reaches their index; fail `failed_reads`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ready {
    /// This Ready's number: report its persistence with it
    /// (`on_persisted(seq, ..)`, `on_snapshot_persisted(seq, ..)`).
    pub seq: u64,
    pub soft_state: Option<SoftState>,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    pub messages: Vec<Message>,
    pub persisted_messages: Vec<Message>,
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
    pub failed_reads: Vec<u64>,
    /// Entries the node needs but no longer holds in memory: read each
    /// range from storage (any time, in any order) and hand what was read to
    /// [`super::RaftNode::on_fetched`], an empty vector if it is gone.
    pub fetches: Vec<EntryFetch>,
}

/// A range of durable entries to read back from storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFetch {
    /// First index wanted.
    pub lo: LogIndex,
    /// Last index wanted (inclusive); reading may stop earlier, after at
    /// least one entry, to bound the bytes read at once.
    pub hi: LogIndex,
    pub purpose: FetchPurpose,
}

/// What a fetch is for (the node checks on return that it still is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchPurpose {
    /// An AppendEntries to a follower that lags behind the cache, for the
    /// leader of `term`.
    Replicate { peer: NodeId, term: Term },
    /// Committed entries for the state machine (after a restart, the log
    /// since the snapshot is applied from disk).
    Apply,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.soft_state.is_none()
            && self.snapshot.is_none()
            && self.entries.is_empty()
            && self.hard_state.is_none()
            && self.messages.is_empty()
            && self.persisted_messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
            && self.failed_reads.is_empty()
            && self.fetches.is_empty()
    }
}

/// A snapshot of the node's state for `STATUS` and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit: LogIndex,
    pub applied: LogIndex,
    pub last_index: LogIndex,
    pub snapshot_index: LogIndex,
    /// The first entry held in memory (older ones are read back from disk).
    pub log_cache_first: LogIndex,
    /// Bytes of the entries held in memory.
    pub log_cache_bytes: u64,
    /// Started on an empty data dir, waiting for peers to confirm they are new.
    pub bootstrapping: bool,
    /// Why the node refuses to take part (a peer already belongs to a cluster).
    pub refused: Option<String>,
    pub voters: usize,
    pub learners: usize,
    /// Its latest config does not include it.
    pub removed: bool,
}
