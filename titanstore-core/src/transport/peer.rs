//! One ordered outgoing stream per peer, reconnected with back-off.

use std::sync::Arc;
use std::time::Duration;

use titanstore_proto::raft_client::RaftClient;
use tokio::sync::{Mutex, mpsc};

use super::{Dialer, MAX_MESSAGE_BYTES, PeerTls, to_wire};
use crate::raft::{Message, MessageBody};
use crate::types::Snapshot;

/// Where a peer task gets the snapshot image to fill an `InstallSnapshot`.
pub trait SnapshotSource: Send + Sync + 'static {
    /// The newest snapshot on disk, if any.
    fn latest(&self) -> Result<Option<Snapshot>, String>;
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
        let body = outgoing(Arc::clone(&queue), Arc::clone(&snapshots));
        if let Err(status) = client.stream(body).await {
            tracing::debug!(peer = %raft_addr, why = %error_chain(&status), "stream to peer ended");
        }
        if queue.lock().await.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The stream of wire messages for one gRPC call: it ends when the node drops
/// its sender (shutdown); a broken connection drops it and a new call starts.
fn outgoing(
    queue: Arc<Mutex<mpsc::Receiver<Outgoing>>>,
    snapshots: Arc<dyn SnapshotSource>,
) -> impl futures_util::Stream<Item = titanstore_proto::RaftMessage> + Send + 'static {
    futures_util::stream::unfold((queue, snapshots), |(queue, snapshots)| async move {
        loop {
            let (mut msg, cluster_id) = queue.lock().await.recv().await?;
            if let MessageBody::InstallSnapshot { meta, data, .. } = &mut msg.body
                && !fill_snapshot(&snapshots, meta, data).await
            {
                continue;
            }
            match to_wire(&msg) {
                Ok(mut wire) => {
                    wire.cluster_id = cluster_id.to_string();
                    return Some((wire, (queue, snapshots)));
                }
                Err(err) => tracing::error!(%err, "cannot encode message"),
            }
        }
    })
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

/// Loads the snapshot image off the node's event loop. A newer snapshot than
/// the one the core named is fine: the follower replies with what it got.
async fn fill_snapshot(
    snapshots: &Arc<dyn SnapshotSource>,
    meta: &mut crate::types::SnapshotMeta,
    data: &mut Vec<u8>,
) -> bool {
    let source = Arc::clone(snapshots);
    match tokio::task::spawn_blocking(move || source.latest()).await {
        Ok(Ok(Some(snapshot))) if snapshot.meta.last_index >= meta.last_index => {
            *meta = snapshot.meta;
            *data = snapshot.data;
            true
        }
        Ok(Ok(_)) => {
            tracing::warn!(index = meta.last_index, "snapshot to send is not on disk");
            false
        }
        Ok(Err(err)) => {
            tracing::error!(%err, "cannot read snapshot to send");
            false
        }
        Err(err) => {
            tracing::error!(%err, "snapshot loader failed");
            false
        }
    }
}
