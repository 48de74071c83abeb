//! The gRPC endpoint that receives peers' message streams.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use titanstore_proto::raft_server::{Raft, RaftServer};
use titanstore_proto::{
    RaftMessage, SnapshotChunk, SnapshotHeldReply, SnapshotOffer, SnapshotReceived, StreamClosed,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::snapshot::{ReceiveError, Spool};
use super::{Envelope, MAX_MESSAGE_BYTES, PeerTls, from_wire};
use crate::types::NodeId;

struct RaftService {
    id: NodeId,
    inbox: mpsc::Sender<Envelope>,
    /// One image is received at a time: a second sender (an old and a new
    /// leader) is refused before anything is buffered, and retries later.
    receiving: Arc<tokio::sync::Semaphore>,
    /// Part of an image whose send broke off, for the next send to go on with.
    spool: Arc<Spool>,
    counters: Option<super::ImageCounters>,
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn stream(
        &self,
        request: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<StreamClosed>, Status> {
        let mut stream = request.into_inner();
        while let Some(mut wire) = stream.message().await? {
            if wire.to != self.id {
                tracing::warn!(to = %wire.to, from = %wire.from, "dropping a message addressed to another node");
                continue;
            }
            let cluster_id = std::mem::take(&mut wire.cluster_id);
            let msg = match from_wire(wire) {
                Ok(msg) => msg,
                Err(err) => {
                    tracing::warn!(%err, "dropping an undecodable message");
                    continue;
                }
            };
            if self.inbox.send(Envelope { cluster_id, msg }).await.is_err() {
                return Err(Status::unavailable("node is shutting down"));
            }
        }
        Ok(Response::new(StreamClosed {}))
    }

    async fn snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotReceived>, Status> {
        let Ok(_receiving) = Arc::clone(&self.receiving).try_acquire_owned() else {
            return Err(Status::resource_exhausted(
                "another snapshot image is being received",
            ));
        };
        let mut stream = request.into_inner();
        let envelope = match super::snapshot::receive(
            &mut stream,
            &self.id,
            &self.spool,
            self.counters.as_ref(),
        )
        .await
        {
            Ok(envelope) => envelope,
            Err(err) => {
                tracing::warn!(%err, "refusing a snapshot image");
                // A wrong checksum may be the sender's disk: it is told apart.
                return Err(match err {
                    ReceiveError::Checksum { .. } => Status::data_loss(err.to_string()),
                    // This node's trouble, not the image's.
                    ReceiveError::Spool(_)
                    | ReceiveError::Worker(_)
                    | ReceiveError::TooLarge(_) => Status::resource_exhausted(err.to_string()),
                    ReceiveError::Superseded => Status::aborted(err.to_string()),
                    _ => Status::invalid_argument(err.to_string()),
                });
            }
        };
        tracing::info!(from = %envelope.msg.from, "snapshot image received");
        if self.inbox.send(envelope).await.is_err() {
            return Err(Status::unavailable("node is shutting down"));
        }
        Ok(Response::new(SnapshotReceived {}))
    }

    async fn snapshot_held(
        &self,
        request: Request<SnapshotOffer>,
    ) -> Result<Response<SnapshotHeldReply>, Status> {
        let offer = request.into_inner();
        if offer.to != self.id {
            return Err(Status::invalid_argument(format!(
                "image offered to {}, this node is {}",
                offer.to, self.id
            )));
        }
        let spool = Arc::clone(&self.spool);
        let offset = tokio::task::spawn_blocking(move || spool.offered(&offer))
            .await
            .map_err(|err| Status::internal(err.to_string()))?;
        Ok(Response::new(SnapshotHeldReply { offset }))
    }
}

/// Serves the Raft gRPC endpoint on `listener` until `shutdown` completes;
/// snapshot images are received into a file in `data_dir`.
pub async fn serve(
    listener: TcpListener,
    id: NodeId,
    data_dir: PathBuf,
    inbox: mpsc::Sender<Envelope>,
    tls: Option<PeerTls>,
    counters: Option<super::ImageCounters>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    // Opening reads no more than a file header: it runs here, once.
    let spool = Arc::new(Spool::open(&data_dir));
    // Part of an image nobody goes on with, or that the node no longer
    // needs, is deleted in time, asked or not.
    let weak = Arc::downgrade(&spool);
    let applied = counters.as_ref().map(|c| c.applied_index.clone());
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            every.tick().await;
            let Some(spool) = weak.upgrade() else {
                return;
            };
            let applied = applied
                .as_ref()
                .map_or(0, |gauge| u64::try_from(gauge.get()).unwrap_or(0));
            if tokio::task::spawn_blocking(move || spool.expire(applied))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let service = RaftServer::new(RaftService {
        id,
        inbox,
        receiving: Arc::new(tokio::sync::Semaphore::new(1)),
        spool,
        counters,
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        // Client certificates are required: only the cluster's CA admits a peer.
        builder = builder.tls_config(
            tonic::transport::ServerTlsConfig::new()
                .identity(tls.identity())
                .client_ca_root(tls.ca()),
        )?;
    }
    builder
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
