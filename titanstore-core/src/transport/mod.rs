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
mod snapshot;

pub use convert::{ConvertError, from_wire, to_wire};
pub use peer::{PeerSender, SnapshotSource};
pub use snapshot::{CHUNK_BYTES, ReceiveError};
use std::sync::Arc;

/// How a node reaches peers: where snapshot images come from, and TLS.
#[derive(Clone)]
pub struct Dialer {
    pub snapshots: Arc<dyn SnapshotSource>,
    pub tls: Option<Arc<PeerTls>>,
}
pub use server::serve;

/// What a receiver counts of the snapshot images it takes in, and what it
/// reads of its node.
#[derive(Clone, Debug)]
pub struct ImageCounters {
    /// Bytes of images, as they arrive.
    pub received_bytes: prometheus::IntCounter,
    /// Sends that went on from where an earlier send broke off.
    pub resumes: prometheus::IntCounter,
    /// The node's applied index, as it publishes it each tick: part of an
    /// image at or below it is of no more use (the node caught up without
    /// it) and is dropped.
    pub applied_index: prometheus::IntGauge,
}

/// Mutual TLS between nodes (`--peer-tls-cert/-key/-ca`), PEM encoded. Every
/// node presents `cert` both as a server and as a client; a peer whose
/// certificate `ca` did not sign is refused at the handshake.
#[derive(Clone)]
pub struct PeerTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub ca_pem: Vec<u8>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("PeerTls").finish_non_exhaustive()
    }
}

impl PeerTls {
    fn identity(&self) -> tonic::transport::Identity {
        tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    fn ca(&self) -> tonic::transport::Certificate {
        tonic::transport::Certificate::from_pem(&self.ca_pem)
    }
}

/// A message as it arrives: with the cluster id its sender put on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Empty when the sender has no cluster id yet.
    pub cluster_id: String,
    pub msg: crate::raft::Message,
}

/// An error and its causes, on one line (TLS failures hide in the sources).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Largest gRPC message accepted or sent (a snapshot image travels in
/// chunks of [`CHUNK_BYTES`], of any total size).
pub const MAX_MESSAGE_BYTES: usize = 1 << 30;
