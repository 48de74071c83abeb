//! The tokio shell around the [`Replica`]: it turns timer ticks, peer
//! messages, client requests and storage completions into replica inputs and
//! carries out the effects. It decides nothing itself: every answer a client
//! gets is chosen by the replica (and so is covered by the whole-node
//! simulation). Nothing in here blocks on I/O.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::NodeError;
use super::handle::NodeRequest;
use super::replica::{DecodedSnapshot, Effect, Replica, Token};
use super::storage_thread::{StorageDone, StorageJob};
use crate::metrics::Metrics;
use crate::protocol::{Reply, WatchEnd, WatchEvent};
use crate::raft::MessageBody;
use crate::transport::{Dialer, Envelope, PeerSender};
use crate::types::{NodeId, Snapshot};

/// Most inputs of one kind folded into one pass before the effects are run.
const MAX_DRAIN: usize = 1024;
/// A pass this long is logged with where its time went: a pass should stay
/// well under it, and a few of them in a row near the shortest election timeout.
const LONG_PASS: std::time::Duration = std::time::Duration::from_millis(10);

pub(super) struct EventLoop {
    replica: Replica,
    tick: std::time::Duration,
    peers: HashMap<NodeId, PeerSender>,
    /// Addresses that override the configuration's (`--peer-addr`).
    peer_addrs: HashMap<NodeId, String>,
    /// Where new peers' senders read snapshot images from.
    dialer: Dialer,
    storage: Option<std_mpsc::Sender<StorageJob>>,
    snapshot_writer: Option<std_mpsc::Sender<Snapshot>>,
    garbage: std_mpsc::Sender<Garbage>,
    waiting: HashMap<Token, oneshot::Sender<Reply>>,
    /// Open watch streams (bounded buffers).
    watchers: HashMap<Token, mpsc::Sender<WatchEvent>>,
    next_token: Token,
    effects: Vec<Effect>,
    metrics: Arc<Metrics>,
    /// Stamped on every outgoing message (empty until the cluster has one).
    cluster_id: Arc<str>,
    /// When the oldest unanswered AppendEntries to each peer left.
    rtt_probes: HashMap<NodeId, Instant>,
    /// Received snapshot images decoded on a blocking thread come back here.
    decoded_tx: mpsc::UnboundedSender<DecodedSnapshot>,
    decoded_rx: Option<mpsc::UnboundedReceiver<DecodedSnapshot>>,
}

/// What the replica no longer needs, to be freed away from the event loop.
pub(super) type Garbage = Vec<Box<dyn std::any::Any + Send>>;

/// The threads that carry out storage effects, and the one that frees.
pub(super) struct Workers {
    pub(super) storage: std_mpsc::Sender<StorageJob>,
    pub(super) snapshot_writer: std_mpsc::Sender<Snapshot>,
    pub(super) garbage: std_mpsc::Sender<Garbage>,
}

/// A round-trip probe older than this counts as lost.
const PROBE_LOST: std::time::Duration = std::time::Duration::from_secs(1);

/// What woke the event loop.
enum Wake {
    Tick(tokio::time::Instant),
    Message(Envelope),
    Request(NodeRequest),
    Storage(StorageDone),
    Decoded(Box<DecodedSnapshot>),
    /// The replica left work for another pass (a long backlog to apply).
    Continue,
}

impl EventLoop {
    pub(super) fn new(
        replica: Replica,
        tick: std::time::Duration,
        peers: HashMap<NodeId, PeerSender>,
        peer_addrs: HashMap<NodeId, String>,
        dialer: Dialer,
        workers: Workers,
        metrics: Arc<Metrics>,
    ) -> EventLoop {
        let Workers {
            storage,
            snapshot_writer,
            garbage,
        } = workers;
        let (decoded_tx, decoded_rx) = mpsc::unbounded_channel();
        EventLoop {
            replica,
            tick,
            peers,
            peer_addrs,
            dialer,
            storage: Some(storage),
            snapshot_writer: Some(snapshot_writer),
            garbage,
            waiting: HashMap::new(),
            watchers: HashMap::new(),
            next_token: 1,
            effects: Vec::new(),
            metrics,
            rtt_probes: HashMap::new(),
            cluster_id: Arc::from(""),
            decoded_tx,
            decoded_rx: Some(decoded_rx),
        }
    }

    pub(super) async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Envelope>,
        mut requests: mpsc::Receiver<NodeRequest>,
        mut done: mpsc::UnboundedReceiver<StorageDone>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), NodeError> {
        tokio::pin!(shutdown);
        let Some(mut decoded) = self.decoded_rx.take() else {
            return Ok(());
        };
        let mut ticker = tokio::time::interval(self.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut clock = super::tick_clock::TickClock::new(self.tick);
        let mut sched = super::sched::ThreadSched::for_this_thread();
        let result = loop {
            let more = self.replica.has_work();
            let wake = tokio::select! {
                _ = &mut shutdown => break Ok(()),
                due = ticker.tick() => Wake::Tick(due),
                msg = inbox.recv() => match msg {
                    Some(msg) => Wake::Message(msg),
                    None => break Err(NodeError::RaftEndpointStopped),
                },
                Some(request) = requests.recv() => Wake::Request(request),
                Some(report) = done.recv() => Wake::Storage(report),
                Some(image) = decoded.recv() => Wake::Decoded(Box::new(image)),
                () = tokio::task::yield_now(), if more => Wake::Continue,
            };
            let started = Instant::now();
            sched.pass_started(started);
            if let Wake::Tick(_) = &wake {
                clock.ticked(started);
            }
            if clock.behind(started) {
                // The core's ticks lag real time: its read lease may be stale.
                self.replica.drop_read_lease();
            }
            let wake_kind = match &wake {
                Wake::Tick(_) => "tick",
                Wake::Message(_) => "peer message",
                Wake::Request(_) => "client request",
                Wake::Storage(_) => "storage report",
                Wake::Decoded(_) => "decoded snapshot",
                Wake::Continue => "backlog",
            };
            match wake {
                Wake::Tick(due) => {
                    self.metrics
                        .tick_late(started.saturating_duration_since(due.into_std()));
                    self.replica.set_wall_clock(unix_ms());
                    self.replica.tick();
                    self.metrics.publish(
                        self.replica.gauges(),
                        self.replica.counters(),
                        &self.replica.peer_lags(),
                    );
                }
                Wake::Message(msg) => {
                    self.on_message(msg, started);
                    for _ in 0..MAX_DRAIN {
                        match inbox.try_recv() {
                            Ok(msg) => self.on_message(msg, started),
                            Err(_) => break,
                        }
                    }
                }
                Wake::Request(request) => {
                    self.on_request(request);
                    for _ in 0..MAX_DRAIN {
                        match requests.try_recv() {
                            Ok(request) => self.on_request(request),
                            Err(_) => break,
                        }
                    }
                }
                Wake::Storage(report) => {
                    let mut result = self.replica.storage_done(report);
                    while result.is_ok()
                        && let Ok(report) = done.try_recv()
                    {
                        result = self.replica.storage_done(report);
                    }
                    if let Err(err) = result {
                        break Err(err);
                    }
                }
                Wake::Decoded(image) => self.replica.snapshot_decoded(*image),
                Wake::Continue => {}
            }
            let inputs = started.elapsed();
            let polled = self.replica.poll(&mut self.effects);
            let decided = started.elapsed();
            let garbage = self.replica.take_garbage();
            if !garbage.is_empty() {
                // A stopped freer gives the garbage back: it is freed here.
                let _ = self.garbage.send(garbage);
            }
            let ran = self.run_effects();
            let pass = started.elapsed();
            self.metrics.loop_pass(pass);
            if pass >= LONG_PASS {
                // Where the time went: on a core, waiting for one, or blocked.
                let times = sched.since_pass_started();
                let ms = |d: std::time::Duration| d.as_millis() as u64;
                tracing::warn!(
                    woken_by = wake_kind,
                    millis = ms(pass),
                    inputs_ms = ms(inputs),
                    poll_ms = ms(decided - inputs),
                    effects_ms = ms(pass - decided),
                    on_cpu_ms = times.map(|t| ms(t.on_cpu)),
                    waiting_for_cpu_ms = times.map(|t| ms(t.waiting_for_cpu)),
                    blocked_ms =
                        times.map(|t| ms(pass.saturating_sub(t.on_cpu + t.waiting_for_cpu))),
                    "event loop pass took long (peers may time out; see event_loop_pass_duration_seconds)"
                );
            }
            if let Err(err) = ran {
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

    /// A peer message; an AppendEntries reply closes that peer's round-trip probe.
    fn on_message(&mut self, Envelope { cluster_id, msg }: Envelope, now: Instant) {
        if matches!(msg.body, MessageBody::AppendEntriesReply { .. })
            && let Some(sent) = self.rtt_probes.remove(&msg.from)
        {
            self.metrics
                .peer_round_trip(&msg.from, now.saturating_duration_since(sent));
        }
        self.replica.step_from(&cluster_id, msg);
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
        if self.cluster_id.is_empty()
            && let Some(id) = self.replica.cluster_id()
        {
            self.cluster_id = Arc::from(id);
        }
        for effect in std::mem::take(&mut self.effects) {
            match effect {
                Effect::Send(msg) => {
                    if matches!(msg.body, MessageBody::AppendEntries { .. }) {
                        // A probe whose message was lost is restarted.
                        let probe = self
                            .rtt_probes
                            .entry(msg.to.clone())
                            .or_insert_with(Instant::now);
                        if probe.elapsed() > PROBE_LOST {
                            *probe = Instant::now();
                        }
                    }
                    if !self.peers.contains_key(&msg.to)
                        && let Some(addr) = self
                            .peer_addrs
                            .get(&msg.to)
                            .cloned()
                            .or_else(|| self.replica.raft_addr_of(&msg.to))
                    {
                        // A member added at runtime: open its stream now.
                        tracing::info!(peer = %msg.to, %addr, "connecting to new member");
                        let sender = PeerSender::spawn(addr, &self.dialer);
                        self.peers.insert(msg.to.clone(), sender);
                    }
                    match self.peers.get(&msg.to) {
                        Some(peer) => peer.send(msg, Arc::clone(&self.cluster_id)),
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
                Effect::DecodeSnapshot(msg) => {
                    let tx = self.decoded_tx.clone();
                    tokio::task::spawn_blocking(move || {
                        let _ = tx.send(DecodedSnapshot::decode(msg));
                    });
                }
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
