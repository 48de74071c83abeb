//! Plain data shared by every layer: log entries, commands, hard state,
//! cluster configuration and snapshot metadata.
//!
//! These types are part of the on-disk format (bincode, `standard()` config):
//! change them only by adding variants at the end of enums.

use std::collections::BTreeMap;

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
    pub payload: EntryPayload,
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

/// The voting members of the cluster. Lives in the log and in snapshots, so
/// that runtime membership change can be added without a format change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    pub voters: BTreeMap<NodeId, MemberAddr>,
}

impl ClusterConfig {
    /// Whether `id` is a voter.
    pub fn is_voter(&self, id: &str) -> bool {
        self.voters.contains_key(id)
    }

    /// Number of votes that form a strict majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
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
pub fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, bincode::error::DecodeError> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, codec_config())?;
    if read != bytes.len() {
        return Err(bincode::error::DecodeError::OtherString(format!(
            "{} trailing bytes after value",
            bytes.len() - read
        )));
    }
    Ok(value)
}
