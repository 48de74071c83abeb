//! Plain data shared by every layer: log entries, commands, hard state,
//! cluster configuration and snapshot metadata.
//!
//! These types are part of the on-disk format (bincode, `standard()` config):
//! change them only by adding variants at the end of enums.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A node's id, such as `node1`.
pub type NodeId = String;
/// A Raft term.
pub type Term = u64;
/// A position in the replicated log (the first entry has index 1).
pub type LogIndex = u64;

/// A command for the key-value state machine. Keys and values are raw bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    // `serde_bytes`: one length and one copy instead of a value per byte
    // (the encoding is the same; only the speed differs).
    Set {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Delete {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Write `value` only if the key's `mod_rev` is `expected` (0: only if absent).
    Cas {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        expected: LogIndex,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    /// Delete the key only if its `mod_rev` is `expected` (never 0).
    Cad {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        expected: LogIndex,
    },
    /// `command` run at most once per (`client`, `seq`). `now_ms` and `ttl_ms`
    /// are the proposing leader's clock and session lifetime, written into
    /// the entry so that every node expires sessions identically.
    Session {
        #[serde(with = "serde_bytes")]
        client: Vec<u8>,
        seq: u64,
        now_ms: u64,
        ttl_ms: u64,
        command: Box<Command>,
    },
}

impl Command {
    /// Bytes of keys, values and client ids it carries (its size in a log).
    pub fn data_len(&self) -> usize {
        match self {
            Command::Set { key, value } | Command::Cas { key, value, .. } => {
                key.len() + value.len()
            }
            Command::Delete { key } | Command::Cad { key, .. } => key.len(),
            Command::Session {
                client, command, ..
            } => client.len() + command.data_len(),
        }
    }
}

/// What a log entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// Appended by a new leader so that entries of earlier terms get committed.
    Noop,
    /// A client command for the state machine.
    Command(Command),
    /// A new cluster configuration (membership changes, later).
    Config(ClusterConfig),
    /// Written by the first leader of a new cluster: the cluster's id. The
    /// first one applied wins; later ones change nothing.
    Bootstrap { cluster_id: String },
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: LogIndex,
    /// Shared, never copied: an entry is handed to the WAL, to every
    /// follower's AppendEntries and to the state machine, and each clone is
    /// one reference count (serde encodes an `Arc<T>` exactly as the `T`).
    pub payload: Arc<EntryPayload>,
}

impl Entry {
    /// Bytes the entry is counted for in memory: its data plus a fixed
    /// estimate of the structures around it (entry, shared payload, vectors).
    pub fn memory_bytes(&self) -> u64 {
        let data = match &*self.payload {
            EntryPayload::Command(command) => command.data_len(),
            EntryPayload::Bootstrap { cluster_id } => cluster_id.len(),
            EntryPayload::Config(config) => 64 * (config.voters.len() + config.learners.len()),
            EntryPayload::Noop => 0,
        };
        data as u64 + 96
    }
}

/// What a boot knows of the log before the entries it holds in memory:
/// the entries after the snapshot that were left on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredLog {
    /// Their terms, in index order (the first is the snapshot index + 1).
    pub terms: Vec<Term>,
    /// The config entries among them, as (index, config), in index order.
    pub configs: Vec<(LogIndex, ClusterConfig)>,
}

/// Raft state that must be durable before a node answers anyone who depends on it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub voted_for: Option<NodeId>,
    /// Highest index known committed. Persisting it is an optimisation
    /// (a restarted node can apply that far at once); never required for safety.
    pub commit: LogIndex,
}

/// Where a member can be reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddr {
    /// `host:port` of the member's Raft (gRPC) endpoint.
    pub raft_addr: String,
    /// `host:port` clients use to reach the member (its advertised client address).
    pub client_addr: String,
}

/// The members of the cluster: voters, and learners (which receive the log
/// but never vote or count for commit). Lives in the log (config entries)
/// and in snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub voters: BTreeMap<NodeId, MemberAddr>,
    pub learners: BTreeMap<NodeId, MemberAddr>,
    /// For members that joined at runtime: the incarnation (a random number
    /// the joining node chose on its empty data dir) this membership is for.
    /// A node votes only when its config names its own incarnation, so a
    /// re-added id never votes on the strength of its previous life's config.
    pub incarnations: BTreeMap<NodeId, u64>,
}

/// Release 1's configuration: voters only (snapshot files and images of
/// release 1 hold it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyClusterConfig {
    pub voters: BTreeMap<NodeId, MemberAddr>,
}

impl From<LegacyClusterConfig> for ClusterConfig {
    fn from(legacy: LegacyClusterConfig) -> ClusterConfig {
        ClusterConfig {
            voters: legacy.voters,
            learners: BTreeMap::new(),
            incarnations: BTreeMap::new(),
        }
    }
}

/// One membership change (single-server changes; see `raft/membership.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfChange {
    AddLearner {
        id: NodeId,
        addr: MemberAddr,
        incarnation: Option<u64>,
    },
    Promote {
        id: NodeId,
    },
    Remove {
        id: NodeId,
    },
}

impl ClusterConfig {
    /// Whether `id` is a voter.
    pub fn is_voter(&self, id: &str) -> bool {
        self.voters.contains_key(id)
    }

    /// Whether `id` is a learner.
    pub fn is_learner(&self, id: &str) -> bool {
        self.learners.contains_key(id)
    }

    /// Whether `id` is a voter or a learner.
    pub fn is_member(&self, id: &str) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Where member `id` can be reached.
    pub fn addr(&self, id: &str) -> Option<&MemberAddr> {
        self.voters.get(id).or_else(|| self.learners.get(id))
    }

    /// Every member, voters first.
    pub fn members(&self) -> impl Iterator<Item = (&NodeId, &MemberAddr, bool)> {
        self.voters
            .iter()
            .map(|(id, a)| (id, a, true))
            .chain(self.learners.iter().map(|(id, a)| (id, a, false)))
    }

    /// Number of votes that form a strict majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
}

/// Release 1's snapshot, as its snapshot files hold it.
#[derive(Clone, Debug, Deserialize)]
pub struct LegacySnapshot {
    pub meta: LegacySnapshotMeta,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// Release 1's snapshot metadata.
#[derive(Clone, Debug, Deserialize)]
pub struct LegacySnapshotMeta {
    pub last_index: LogIndex,
    pub last_term: Term,
    pub config: LegacyClusterConfig,
}

impl From<LegacySnapshot> for Snapshot {
    fn from(legacy: LegacySnapshot) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                last_index: legacy.meta.last_index,
                last_term: legacy.meta.last_term,
                config: legacy.meta.config.into(),
            },
            data: legacy.data,
        }
    }
}

/// Describes the state captured by a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Index of the last entry the snapshot covers.
    pub last_index: LogIndex,
    /// Term of that entry.
    pub last_term: Term,
    /// The cluster configuration as of `last_index`.
    pub config: ClusterConfig,
}

/// A snapshot: metadata and the encoded state machine image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// The one bincode configuration used for everything TitanStore encodes.
/// It is part of the on-disk and wire format: never change it.
pub fn codec_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes a value with [`codec_config`].
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(value, codec_config())
}

/// Decodes a value encoded with [`encode`], rejecting trailing bytes.
///
/// Untrusted bytes may claim any length for a container: the decoder may
/// allocate at most 64 times the input's size (a limit picked from a few
/// tiers, since bincode takes it as a constant), so a forged length is an
/// error, never an allocation that takes the process down. The limit
/// changes no byte of the format.
pub fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, bincode::error::DecodeError> {
    fn with<T: serde::de::DeserializeOwned, const LIMIT: usize>(
        bytes: &[u8],
    ) -> Result<(T, usize), bincode::error::DecodeError> {
        bincode::serde::decode_from_slice(bytes, codec_config().with_limit::<LIMIT>())
    }
    const KIB: usize = 1 << 10;
    const MIB: usize = 1 << 20;
    let (value, read) = match bytes.len() {
        n if n <= 64 * KIB => with::<T, { 4 * MIB }>(bytes)?,
        n if n <= MIB => with::<T, { 64 * MIB }>(bytes)?,
        n if n <= 16 * MIB => with::<T, { 1024 * MIB }>(bytes)?,
        n if n <= 256 * MIB => with::<T, { 16384 * MIB }>(bytes)?,
        _ => with::<T, { usize::MAX }>(bytes)?,
    };
    if read != bytes.len() {
        return Err(bincode::error::DecodeError::OtherString(format!(
            "{} trailing bytes after value",
            bytes.len() - read
        )));
    }
    Ok(value)
}
