//! The client-facing TCP server: accepts connections, reads request lines,
//! runs them against the node and writes replies in request order.
//!
//! Shaped like mini-redis: [`run`] takes a listener and a shutdown future, so
//! the binary, the Python module and the tests all start it the same way.
//! It owns connection handling only; what a request does is the node's job.

mod connection;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::metrics::Metrics;
use crate::node::NodeHandle;

/// Limits for client connections.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Longest accepted request line, in bytes (without `\n`).
    pub max_line_bytes: usize,
    /// Connections served at once; one more is told `ERR BUSY` and closed.
    pub max_connections: usize,
    /// Requests one connection may have in flight (pipelining depth).
    pub max_pipeline: usize,
    /// A connection that completes no request line for this long (and has
    /// none in flight) is closed.
    pub idle_timeout: Duration,
    /// Bytes of request lines in flight on all connections together; a
    /// request past it is answered `ERR BUSY` (memory bounded by bytes).
    pub max_buffered_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            max_line_bytes: 1 << 20,
            max_connections: 4096,
            max_pipeline: 1024,
            idle_timeout: Duration::from_secs(300),
            max_buffered_bytes: 256 << 20,
        }
    }
}

/// What every connection of one server shares.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) node: NodeHandle,
    pub(crate) metrics: Arc<Metrics>,
    /// Request bytes in flight (see [`ServerConfig::max_buffered_bytes`]).
    pub(crate) buffered: AtomicUsize,
}

/// Serves clients on `listener` until `shutdown` completes; then tells every
/// connection to finish the replies it owes and close.
pub async fn run(
    listener: TcpListener,
    node: NodeHandle,
    config: ServerConfig,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let shared = Arc::new(Shared {
        config,
        node,
        metrics,
        buffered: AtomicUsize::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(5);
    loop {
        let (mut socket, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(%err, retry_in_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(5);
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            // Refused at once rather than left waiting: the client learns why.
            shared.metrics.connections_refused.inc();
            tracing::debug!(%peer, "refusing a connection: at --max-connections");
            tokio::spawn(async move {
                let _ = socket
                    .write_all(b"ERR BUSY too many client connections; try again later\n")
                    .await;
                let _ = socket.shutdown().await;
            });
            continue;
        };
        let _ = socket.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            shared.metrics.connections.inc();
            if let Err(err) = connection::serve(socket, &shared, stop).await {
                tracing::debug!(%peer, %err, "client connection ended with an error");
            }
            shared.metrics.connections.dec();
            drop(permit);
        });
    }
    let _ = stop_tx.send(true);
}
