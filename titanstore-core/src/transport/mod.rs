//! Moves Raft messages between nodes over gRPC (tonic).
//!
//! Each node runs one gRPC server ([`serve`]) that feeds incoming messages into
//! the node's inbox, and one [`PeerSender`] per peer holding an ordered stream
//! to it. Sending never blocks the node: when a peer is slow or unreachable its
//! queue fills and further messages are dropped, which Raft tolerates.
//! This module knows nothing about Raft's rules.

mod convert;
mod peer;
mod server;

pub use convert::{ConvertError, from_wire, to_wire};
pub use peer::{PeerSender, SnapshotSource};
pub use server::serve;

/// A message as it arrives: with the cluster id its sender put on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Empty when the sender has no cluster id yet.
    pub cluster_id: String,
    pub msg: crate::raft::Message,
}

/// Largest gRPC message accepted or sent (snapshots travel as one message).
pub const MAX_MESSAGE_BYTES: usize = 1 << 30;
