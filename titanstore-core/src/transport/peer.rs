//! One ordered outgoing stream per peer, reconnected with back-off.

use std::sync::Arc;
use std::time::Duration;

use titanstore_proto::raft_client::RaftClient;
use tokio::sync::{Mutex, mpsc};

use super::snapshot::{SnapshotSends, start_send};
use super::{Dialer, MAX_MESSAGE_BYTES, PeerTls, error_chain, to_wire};
use crate::raft::{Message, MessageBody};
use crate::storage::SnapshotFile;

/// Where a peer task gets the snapshot image to fill an `InstallSnapshot`.
pub trait SnapshotSource: Send + Sync + 'static {
    /// The newest snapshot on disk, if any, opened to be read piece by piece.
    fn open(&self) -> Result<Option<Arc<SnapshotFile>>, String>;
}

/// Messages queued for one peer before it counts as slow and drops them.
const QUEUE_DEPTH: usize = 8192;

/// The node's handle to one peer's sender task.
pub struct PeerSender {
    tx: mpsc::Sender<Outgoing>,
}

/// A message and the cluster id it goes out with.
type Outgoing = (Message, Arc<str>);

impl PeerSender {
    /// Starts the sender task for the peer at `raft_addr` (`host:port`).
    pub fn spawn(raft_addr: String, dialer: &Dialer) -> PeerSender {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(
            raft_addr,
            rx,
            Arc::clone(&dialer.snapshots),
            dialer.tls.clone(),
        ));
        PeerSender { tx }
    }

    /// Queues a message, stamped with this node's cluster id (empty if it
    /// has none yet); drops it if the peer's queue is full.
    pub fn send(&self, msg: Message, cluster_id: Arc<str>) {
        if let Err(err) = self.tx.try_send((msg, cluster_id)) {
            tracing::debug!(to = %err.into_inner().0.to, "peer queue full, dropping message");
        }
    }
}

async fn run(
    raft_addr: String,
    queue: mpsc::Receiver<Outgoing>,
    snapshots: Arc<dyn SnapshotSource>,
    tls: Option<Arc<PeerTls>>,
) {
    // The request body of the gRPC stream reads straight from this queue, so a
    // message goes from the event loop to the HTTP/2 connection in one hop.
    let queue = Arc::new(Mutex::new(queue));
    let sends = Arc::new(SnapshotSends::default());
    let mut backoff = Duration::from_millis(20);
    let mut failures = 0u64;
    loop {
        let mut client = match connect(&raft_addr, tls.as_deref()).await {
            Ok(client) => client,
            Err(err) => {
                failures += 1;
                let why = error_chain(&err);
                // A refused TLS handshake needs an operator: say it, now and then.
                if tls.is_some() && failures % 100 == 1 {
                    tracing::warn!(peer = %raft_addr, %why, "cannot connect to peer over TLS");
                } else {
                    tracing::debug!(peer = %raft_addr, %why, "cannot connect to peer");
                }
                // Whatever queued up while the peer was away is stale by now.
                let mut rx = queue.lock().await;
                loop {
                    match rx.try_recv() {
                        Ok(_) => {}
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                    }
                }
                drop(rx);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
                continue;
            }
        };
        backoff = Duration::from_millis(20);
        failures = 0;
        sends.reconnected();
        let images = Images {
            client: client.clone(),
            snapshots: Arc::clone(&snapshots),
            sends: Arc::clone(&sends),
        };
        let body = outgoing(Arc::clone(&queue), images);
        if let Err(status) = client.stream(body).await {
            tracing::debug!(peer = %raft_addr, why = %error_chain(&status), "stream to peer ended");
        }
        if queue.lock().await.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What sends snapshot images to the peer, beside its message stream.
#[derive(Clone)]
struct Images {
    client: RaftClient<tonic::transport::Channel>,
    snapshots: Arc<dyn SnapshotSource>,
    sends: Arc<SnapshotSends>,
}

/// The stream of wire messages for one gRPC call: it ends when the node drops
/// its sender (shutdown); a broken connection drops it and a new call starts.
/// An `InstallSnapshot` leaves the stream: its image goes on a call of its own.
fn outgoing(
    queue: Arc<Mutex<mpsc::Receiver<Outgoing>>>,
    images: Images,
) -> impl futures_util::Stream<Item = titanstore_proto::RaftMessage> + Send + 'static {
    futures_util::stream::unfold((queue, images), |(queue, images)| async move {
        loop {
            let (msg, cluster_id) = queue.lock().await.recv().await?;
            if matches!(msg.body, MessageBody::InstallSnapshot { .. }) {
                start_send(
                    images.client.clone(),
                    msg,
                    cluster_id,
                    Arc::clone(&images.snapshots),
                    Arc::clone(&images.sends),
                );
                continue;
            }
            match to_wire(&msg) {
                Ok(mut wire) => {
                    wire.cluster_id = cluster_id.to_string();
                    return Some((wire, (queue, images)));
                }
                Err(err) => tracing::error!(%err, "cannot encode message"),
            }
        }
    })
}

async fn connect(
    raft_addr: &str,
    tls: Option<&PeerTls>,
) -> Result<RaftClient<tonic::transport::Channel>, tonic::transport::Error> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{raft_addr}"))?;
    if let Some(tls) = tls {
        // The peer's certificate must name the host it is dialed at.
        let host = raft_addr
            .rsplit_once(':')
            .map_or(raft_addr, |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        endpoint = endpoint.tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tls.ca())
                .identity(tls.identity())
                .domain_name(host),
        )?;
    }
    let endpoint = endpoint
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(2));
    let channel = endpoint.connect().await?;
    Ok(RaftClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}
