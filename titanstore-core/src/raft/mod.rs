//! The pure Raft core: messages and ticks in, work out (`Ready`).
//!
//! Nothing in this module does I/O, reads a clock or spawns a task: time is
//! counted in `tick()` calls and randomness comes from a seeded RNG, so a
//! whole cluster can be simulated deterministically (see `tests/raft_sim.rs`).
//!
//! Files:
//! - `node.rs`: [`RaftNode`], the public entry points and the `Ready` assembly.
//! - `bootstrap.rs`: the gate that keeps a node with an empty data dir from voting.
//! - `election.rs`: pre-vote, votes, role changes, ticks, check-quorum.
//! - `replication.rs`: AppendEntries / InstallSnapshot on both sides, commit.
//! - `read_index.rs`: linearizable reads (ReadIndex), leader and follower side.
//! - `lease.rs`: the leader's read lease (`ReadMode::Lease`) and its safety rules.
//! - `membership.rs`: single-server membership changes, learners, leadership transfer.
//! - `log.rs`: the in-memory log since the snapshot; `progress.rs`: per-follower state.
//! - `ready.rs`: the data handed to the runtime; `error.rs`: typed errors.
//! - `message.rs`: the messages between cores.

mod bootstrap;
mod election;
mod error;
mod lease;
mod log;
mod membership;
pub mod message;
mod node;
mod progress;
mod read_index;
mod ready;
mod replication;
mod terms;

pub use error::{ProposeError, RaftError, ReadError};
pub use membership::apply_change;
pub use message::{Message, MessageBody};
pub use node::RaftNode;
pub use ready::{EntryFetch, FetchPurpose, ReadState, Ready, Role, SoftState, Status};

use crate::types::{Entry, HardState, LogIndex, NodeId, SnapshotMeta, StoredLog};

/// How a leader confirms that it still leads before answering a linearizable read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// A heartbeat round a majority acknowledged after the read arrived
    /// (Raft §6.4 ReadIndex). Safe whatever the clocks do.
    #[default]
    Index,
    /// Inside a leader lease reads are answered at once; outside it, as
    /// `Index`. Safe only under bounded clock drift (see `lease.rs`).
    Lease,
}

/// Tunables of one Raft core. Times are in ticks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftConfig {
    pub id: NodeId,
    /// The election timeout is drawn uniformly from `[min, max)` ticks.
    pub election_timeout_min_ticks: u64,
    pub election_timeout_max_ticks: u64,
    pub heartbeat_ticks: u64,
    /// Cap on entries per AppendEntries message.
    pub max_entries_per_append: usize,
    /// Pipelining window per follower in replicate state.
    pub max_inflight_appends: usize,
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// Seeds the election-timeout RNG.
    pub seed: u64,
    /// Names this process (a new value at every start): ReadIndex replies are
    /// matched on it, since request ids restart in every process.
    pub incarnation: u64,
    /// Whether this node started on an empty data dir and must first confirm
    /// with its peers that the whole cluster is new before it may vote
    /// (see `bootstrap.rs`). False for a node that holds state.
    pub fresh: bool,
    /// Ticks a fresh node waits for every configured member to confirm that
    /// it is new; after that a majority of confirmations is enough.
    pub bootstrap_grace_ticks: u64,
    /// Set on a node that joined at runtime: its own incarnation. It counts
    /// as a voter only where its config names this incarnation.
    pub member_incarnation: Option<u64>,
    /// How linearizable reads are confirmed.
    pub read_mode: ReadMode,
    /// Lease mode: the most any node's ticks may run fast or slow against
    /// another's, in percent. The lease is shortened by it (see `lease.rs`).
    pub lease_drift_percent: u64,
    /// Bytes of the newest entries kept in memory (see `log.rs`); older
    /// ones are read back from storage when a lagging follower or the state
    /// machine needs them. Entries not yet durable or applied always stay.
    pub log_cache_bytes: u64,
}

impl RaftConfig {
    /// Defaults: timeout [15, 30) ticks, heartbeat 5 ticks, 512 entries per
    /// append, 8 appends in flight, pre-vote and check-quorum on, seed from the id,
    /// 4 MiB of entries in memory.
    pub fn new(id: impl Into<NodeId>) -> Self {
        let id = id.into();
        // FNV-1a: stable across Rust versions, unlike std's hasher.
        let seed = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        RaftConfig {
            id,
            election_timeout_min_ticks: 15,
            election_timeout_max_ticks: 30,
            heartbeat_ticks: 5,
            max_entries_per_append: 512,
            max_inflight_appends: 8,
            pre_vote: true,
            check_quorum: true,
            seed,
            incarnation: seed,
            fresh: false,
            bootstrap_grace_ticks: 300,
            member_incarnation: None,
            read_mode: ReadMode::Index,
            lease_drift_percent: 10,
            log_cache_bytes: 4 << 20,
        }
    }

    fn validate(&self) -> Result<(), RaftError> {
        if self.election_timeout_min_ticks == 0 {
            return Err(RaftError::InvalidConfig(
                "election_timeout_min_ticks must be > 0".into(),
            ));
        }
        if self.election_timeout_max_ticks <= self.election_timeout_min_ticks {
            return Err(RaftError::InvalidConfig(
                "election_timeout_max_ticks must be > election_timeout_min_ticks".into(),
            ));
        }
        if self.heartbeat_ticks == 0 || self.heartbeat_ticks >= self.election_timeout_min_ticks {
            return Err(RaftError::InvalidConfig(
                "heartbeat_ticks must be in [1, election_timeout_min_ticks)".into(),
            ));
        }
        if self.read_mode == ReadMode::Lease {
            if !self.check_quorum {
                return Err(RaftError::InvalidConfig(
                    "lease reads need check_quorum (followers refuse votes inside a leader lease)"
                        .into(),
                ));
            }
            if self.lease_drift_percent >= 100 || self.lease_ticks() == 0 {
                return Err(RaftError::InvalidConfig(
                    "lease reads need election_timeout_min_ticks long enough for a lease of at \
                     least one tick after the drift margin"
                        .into(),
                ));
            }
        }
        Ok(())
    }
}

/// The durable state a node starts from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bootstrap {
    pub hard_state: HardState,
    /// `last_index` 0 / `last_term` 0 when there is no snapshot; `.config` is
    /// the cluster configuration.
    pub snapshot: SnapshotMeta,
    /// Durable log entries after `snapshot.last_index` that are left on
    /// disk (terms and configs only; the node reads them back when needed).
    pub stored: StoredLog,
    /// Durable log entries after those, contiguous: the newest of the log,
    /// held in memory.
    pub entries: Vec<Entry>,
    /// The state machine's applied index (>= `snapshot.last_index`).
    pub applied: LogIndex,
}
