//! The client-facing TCP server: accepts connections, reads request lines,
//! runs them against the node and writes replies in request order.
//!
//! Shaped like mini-redis: [`run`] takes a listener and a shutdown future, so
//! the binary, the Python module and the tests all start it the same way.
//! It owns connection handling only; what a request does is the node's job.

mod connection;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::node::NodeHandle;

/// Limits for client connections.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Longest accepted request line, in bytes (without `\n`).
    pub max_line_bytes: usize,
    /// Connections served at once; further ones wait in the accept queue.
    pub max_connections: usize,
    /// Requests one connection may have in flight (pipelining depth).
    pub max_pipeline: usize,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            max_line_bytes: 1 << 20,
            max_connections: 4096,
            max_pipeline: 1024,
        }
    }
}

/// Serves clients on `listener` until `shutdown` completes; then tells every
/// connection to finish the replies it owes and close.
pub async fn run(
    listener: TcpListener,
    node: NodeHandle,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = Arc::clone(&limit).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (socket, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let node = node.clone();
        let config = config.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            if let Err(err) = connection::serve(socket, node, &config, stop).await {
                tracing::debug!(%peer, %err, "client connection ended with an error");
            }
            drop(permit);
        });
    }
    let _ = stop_tx.send(true);
}
