//! The cheap, cloneable handle connections use to talk to the node's event loop.

use tokio::sync::{mpsc, oneshot};

use crate::protocol::{Reply, Request, Watch, WatchEvent};

/// Events one watcher may have buffered; a watcher that falls further behind
/// gets `ERR WATCH_OVERFLOW` (the last slot is kept for it) and is closed.
pub const WATCH_BUFFER: usize = 8192;

/// A client request on its way to the event loop, with where to send the reply.
pub(crate) struct NodeRequest {
    pub request: Request,
    pub reply: oneshot::Sender<Reply>,
    /// For a WATCH: where its stream goes after the reply.
    pub events: Option<mpsc::Sender<WatchEvent>>,
}

/// Submits client requests to a running node.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<NodeRequest>,
}

impl NodeHandle {
    pub(crate) fn new(tx: mpsc::Sender<NodeRequest>) -> NodeHandle {
        NodeHandle { tx }
    }

    /// Runs one request and waits for its reply.
    pub async fn call(&self, request: Request) -> Reply {
        let is_write = request.is_write();
        let (reply, rx) = oneshot::channel();
        let events = None;
        let sent = self.tx.send(NodeRequest {
            request,
            reply,
            events,
        });
        if sent.await.is_err() {
            return Reply::Error("node is shutting down".into());
        }
        match rx.await {
            Ok(reply) => reply,
            Err(_) if is_write => Reply::Unknown("node stopped before the write finished".into()),
            Err(_) => Reply::Error("node is shutting down".into()),
        }
    }

    /// Starts a watch: its reply and, if it is `WATCHING`, the stream.
    pub async fn watch(&self, watch: Watch) -> (Reply, Option<mpsc::Receiver<WatchEvent>>) {
        let (reply, rx) = oneshot::channel();
        let (events, stream) = mpsc::channel(WATCH_BUFFER);
        let request = NodeRequest {
            request: Request::Watch(watch),
            reply,
            events: Some(events),
        };
        let stopping = || Reply::Error("node is shutting down".into());
        if self.tx.send(request).await.is_err() {
            return (stopping(), None);
        }
        match rx.await {
            Ok(reply @ Reply::Watching(_)) => (reply, Some(stream)),
            Ok(reply) => (reply, None),
            Err(_) => (stopping(), None),
        }
    }
}
