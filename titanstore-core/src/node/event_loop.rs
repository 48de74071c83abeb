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
use crate::protocol::{Reply, WatchEnd, WatchEvent};
use crate::raft::Message;
use crate::transport::{PeerSender, SnapshotSource};
use crate::types::{NodeId, Snapshot};

/// Most inputs of one kind folded into one pass before the effects are run.
const MAX_DRAIN: usize = 1024;

pub(super) struct EventLoop {
    replica: Replica,
    tick: std::time::Duration,
    peers: HashMap<NodeId, PeerSender>,
    /// Addresses that override the configuration's (`--peer-addr`).
    peer_addrs: HashMap<NodeId, String>,
    /// Where new peers' senders read snapshot images from.
    snapshots: std::sync::Arc<dyn SnapshotSource>,
    storage: Option<std_mpsc::Sender<StorageJob>>,
    snapshot_writer: Option<std_mpsc::Sender<Snapshot>>,
    waiting: HashMap<Token, oneshot::Sender<Reply>>,
    /// Open watch streams (bounded buffers).
    watchers: HashMap<Token, mpsc::Sender<WatchEvent>>,
    next_token: Token,
    effects: Vec<Effect>,
}

impl EventLoop {
    pub(super) fn new(
        replica: Replica,
        tick: std::time::Duration,
        peers: HashMap<NodeId, PeerSender>,
        peer_addrs: HashMap<NodeId, String>,
        snapshots: std::sync::Arc<dyn SnapshotSource>,
        storage: std_mpsc::Sender<StorageJob>,
        snapshot_writer: std_mpsc::Sender<Snapshot>,
    ) -> EventLoop {
        EventLoop {
            replica,
            tick,
            peers,
            peer_addrs,
            snapshots,
            storage: Some(storage),
            snapshot_writer: Some(snapshot_writer),
            waiting: HashMap::new(),
            watchers: HashMap::new(),
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
                _ = ticker.tick() => {
                    self.replica.set_wall_clock(unix_ms());
                    self.replica.tick();
                }
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

    fn on_request(
        &mut self,
        NodeRequest {
            request,
            reply,
            events,
        }: NodeRequest,
    ) {
        let token = self.next_token;
        self.next_token += 1;
        self.waiting.insert(token, reply);
        if let Some(events) = events {
            self.watchers.insert(token, events);
        }
        self.replica.request(token, request);
    }

    fn run_effects(&mut self) -> Result<(), NodeError> {
        for effect in std::mem::take(&mut self.effects) {
            match effect {
                Effect::Send(msg) => {
                    if !self.peers.contains_key(&msg.to)
                        && let Some(addr) = self
                            .peer_addrs
                            .get(&msg.to)
                            .cloned()
                            .or_else(|| self.replica.raft_addr_of(&msg.to))
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
                    if !matches!(reply, Reply::Watching(_)) {
                        self.watchers.remove(&token);
                    }
                    if let Some(tx) = self.waiting.remove(&token) {
                        let _ = tx.send(reply);
                    }
                }
                Effect::Watch { token, event } => self.on_watch_event(token, event),
            }
        }
        Ok(())
    }

    /// Hands a watch event to its buffer. A full buffer gets the overflow
    /// notice in the slot kept for it and the watch ends; so does a closed one.
    fn on_watch_event(&mut self, token: Token, event: WatchEvent) {
        let Some(tx) = self.watchers.get(&token) else {
            return;
        };
        let end = matches!(event, WatchEvent::End(_));
        let delivered = if end {
            let _ = tx.try_send(event);
            false
        } else if tx.capacity() <= 1 {
            let _ = tx.try_send(WatchEvent::End(WatchEnd::Overflow));
            false
        } else {
            tx.try_send(event).is_ok()
        };
        if !delivered {
            self.watchers.remove(&token);
            if !end {
                self.replica.cancel_watch(token);
            }
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
