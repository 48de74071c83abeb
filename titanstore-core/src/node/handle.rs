//! The cheap, cloneable handle connections use to talk to the node's event loop.

use tokio::sync::{mpsc, oneshot};

use crate::protocol::{Reply, Request};

/// A client request on its way to the event loop, with where to send the reply.
pub(crate) struct NodeRequest {
    pub request: Request,
    pub reply: oneshot::Sender<Reply>,
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
        let is_write = matches!(
            request,
            Request::Set(_) | Request::Delete(_) | Request::Member(_) | Request::Transfer(_)
        );
        let (reply, rx) = oneshot::channel();
        if self.tx.send(NodeRequest { request, reply }).await.is_err() {
            return Reply::Error("node is shutting down".into());
        }
        match rx.await {
            Ok(reply) => reply,
            Err(_) if is_write => Reply::Unknown("node stopped before the write finished".into()),
            Err(_) => Reply::Error("node is shutting down".into()),
        }
    }
}
