//! The tokio shell around the [`Replica`]: it turns timer ticks, peer
//! messages, client requests and storage completions into replica inputs and
//! carries out the effects. It decides nothing itself: every answer a client
//! gets is chosen by the replica (and so is covered by the whole-node
//! simulation). Nothing in here blocks on I/O.

use std::collections::HashMap;
use std::future::Future;
use std::sync::mpsc as std_mpsc;

use tokio::sync::{mpsc, oneshot};

use super::NodeError;
use super::handle::NodeRequest;
use super::replica::{Effect, Replica, Token};
use super::storage_thread::{StorageDone, StorageJob};
use crate::protocol::Reply;
use crate::raft::Message;
use crate::transport::{PeerSender, SnapshotSource};
use crate::types::{NodeId, Snapshot};

/// Most inputs of one kind folded into one pass before the effects are run.
const MAX_DRAIN: usize = 1024;

pub(super) struct EventLoop {
    replica: Replica,
    tick: std::time::Duration,
    peers: HashMap<NodeId, PeerSender>,
    /// Where new peers' senders read snapshot images from.
    snapshots: std::sync::Arc<dyn SnapshotSource>,
    storage: Option<std_mpsc::Sender<StorageJob>>,
    snapshot_writer: Option<std_mpsc::Sender<Snapshot>>,
    waiting: HashMap<Token, oneshot::Sender<Reply>>,
    next_token: Token,
    effects: Vec<Effect>,
}

impl EventLoop {
    pub(super) fn new(
        replica: Replica,
        tick: std::time::Duration,
        peers: HashMap<NodeId, PeerSender>,
        snapshots: std::sync::Arc<dyn SnapshotSource>,
        storage: std_mpsc::Sender<StorageJob>,
        snapshot_writer: std_mpsc::Sender<Snapshot>,
    ) -> EventLoop {
        EventLoop {
            replica,
            tick,
            peers,
            snapshots,
            storage: Some(storage),
            snapshot_writer: Some(snapshot_writer),
            waiting: HashMap::new(),
            next_token: 1,
            effects: Vec::new(),
        }
    }

    pub(super) async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Message>,
        mut requests: mpsc::Receiver<NodeRequest>,
        mut done: mpsc::UnboundedReceiver<StorageDone>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), NodeError> {
        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                _ = &mut shutdown => break Ok(()),
                _ = ticker.tick() => self.replica.tick(),
                msg = inbox.recv() => {
                    let Some(msg) = msg else {
                        break Err(NodeError::RaftEndpointStopped);
                    };
                    self.replica.step(msg);
                    for _ in 0..MAX_DRAIN {
                        match inbox.try_recv() {
                            Ok(msg) => self.replica.step(msg),
                            Err(_) => break,
                        }
                    }
                }
                Some(request) = requests.recv() => {
                    self.on_request(request);
                    for _ in 0..MAX_DRAIN {
                        match requests.try_recv() {
                            Ok(request) => self.on_request(request),
                            Err(_) => break,
                        }
                    }
                }
                Some(report) = done.recv() => {
                    let mut result = self.replica.storage_done(report);
                    while result.is_ok() && let Ok(report) = done.try_recv() {
                        result = self.replica.storage_done(report);
                    }
                    if let Err(err) = result {
                        break Err(err);
                    }
                }
            }
            let polled = self.replica.poll(&mut self.effects);
            if let Err(err) = self.run_effects() {
                break Err(err);
            }
            if let Err(err) = polled {
                break Err(err);
            }
        };
        self.replica.shutdown(&mut self.effects);
        let _ = self.run_effects();
        self.storage = None;
        self.snapshot_writer = None;
        result
    }

    fn on_request(&mut self, NodeRequest { request, reply }: NodeRequest) {
        let token = self.next_token;
        self.next_token += 1;
        self.waiting.insert(token, reply);
        self.replica.request(token, request);
    }

    fn run_effects(&mut self) -> Result<(), NodeError> {
        for effect in std::mem::take(&mut self.effects) {
            match effect {
                Effect::Send(msg) => {
                    if !self.peers.contains_key(&msg.to)
                        && let Some(addr) = self.replica.raft_addr_of(&msg.to)
                    {
                        // A member added at runtime: open its stream now.
                        tracing::info!(peer = %msg.to, %addr, "connecting to new member");
                        let sender =
                            PeerSender::spawn(addr, std::sync::Arc::clone(&self.snapshots));
                        self.peers.insert(msg.to.clone(), sender);
                    }
                    match self.peers.get(&msg.to) {
                        Some(peer) => peer.send(msg),
                        None => tracing::debug!(to = %msg.to, "no route to node"),
                    }
                }
                Effect::Persist(job) => {
                    let sent = self.storage.as_ref().is_some_and(|tx| tx.send(job).is_ok());
                    if !sent {
                        return Err(NodeError::StorageFailed("storage thread is gone".into()));
                    }
                }
                Effect::SaveSnapshot(snapshot) => {
                    let sent = self
                        .snapshot_writer
                        .as_ref()
                        .is_some_and(|tx| tx.send(snapshot).is_ok());
                    if !sent {
                        return Err(NodeError::StorageFailed("snapshot writer is gone".into()));
                    }
                }
                Effect::Reply { token, reply } => {
                    if let Some(tx) = self.waiting.remove(&token) {
                        let _ = tx.send(reply);
                    }
                }
            }
        }
        Ok(())
    }
}
