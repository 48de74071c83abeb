//! The node's single event loop: the only owner of the Raft core and the
//! key-value state. Ticks, peer messages, client requests and storage
//! completions come in; the core's `Ready` goes out to peers, to the storage
//! thread and to the state machine. Nothing in here blocks on I/O.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::handle::NodeRequest;
use super::storage_thread::{StorageDone, StorageJob};
use super::{NodeConfig, NodeError};
use crate::protocol::{Reply, Request};
use crate::raft::{Message, ProposeError, RaftNode, Ready};
use crate::state_machine::StateMachine;
use crate::transport::PeerSender;
use crate::types::{Command, Entry, LogIndex, NodeId, Snapshot, SnapshotMeta, Term};

/// Most inputs of one kind folded into one pass before the core's `Ready` is taken.
const MAX_DRAIN: usize = 1024;

struct PendingWrite {
    term: Term,
    reply: oneshot::Sender<Reply>,
    deadline: Instant,
}

struct PendingRead {
    key: Vec<u8>,
    reply: oneshot::Sender<Reply>,
    deadline: Instant,
}

pub(super) struct EventLoop {
    config: NodeConfig,
    raft: RaftNode,
    kv: StateMachine,
    snapshot: SnapshotMeta,
    snapshot_in_flight: bool,
    /// Size of the last snapshot image, to size the next one's buffer.
    last_image_len: usize,
    peers: HashMap<NodeId, PeerSender>,
    storage: Option<std_mpsc::Sender<StorageJob>>,
    snapshot_writer: Option<std_mpsc::Sender<Snapshot>>,
    writes: BTreeMap<LogIndex, PendingWrite>,
    reads: BTreeMap<u64, PendingRead>,
    /// Reads whose read index is known, waiting until it is applied.
    reads_waiting_apply: BTreeMap<LogIndex, Vec<PendingRead>>,
    next_read_id: u64,
}

impl EventLoop {
    pub(super) fn new(
        config: NodeConfig,
        raft: RaftNode,
        kv: StateMachine,
        snapshot: SnapshotMeta,
        peers: HashMap<NodeId, PeerSender>,
        storage: std_mpsc::Sender<StorageJob>,
        snapshot_writer: std_mpsc::Sender<Snapshot>,
    ) -> EventLoop {
        EventLoop {
            config,
            raft,
            kv,
            snapshot,
            snapshot_in_flight: false,
            last_image_len: 0,
            peers,
            storage: Some(storage),
            snapshot_writer: Some(snapshot_writer),
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            reads_waiting_apply: BTreeMap::new(),
            next_read_id: 1,
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
        let mut ticker = tokio::time::interval(self.config.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweeper = tokio::time::interval(Duration::from_millis(100));
        let result = loop {
            tokio::select! {
                _ = &mut shutdown => break Ok(()),
                _ = ticker.tick() => self.raft.tick(),
                _ = sweeper.tick() => self.expire(Instant::now()),
                msg = inbox.recv() => {
                    let Some(msg) = msg else {
                        break Err(NodeError::RaftEndpointStopped);
                    };
                    self.raft.step(msg);
                    for _ in 0..MAX_DRAIN {
                        match inbox.try_recv() {
                            Ok(msg) => self.raft.step(msg),
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
                    if let Err(err) = self.on_storage_done(report) {
                        break Err(err);
                    }
                    while let Ok(report) = done.try_recv() {
                        if let Err(err) = self.on_storage_done(report) {
                            return self.stop(Err(err));
                        }
                    }
                }
            }
            while self.raft.has_ready() {
                let ready = self.raft.ready();
                if let Err(err) = self.on_ready(ready) {
                    return self.stop(Err(err));
                }
            }
        };
        self.stop(result)
    }

    fn stop(mut self, result: Result<(), NodeError>) -> Result<(), NodeError> {
        for (_, write) in std::mem::take(&mut self.writes) {
            let _ = write.reply.send(Reply::Unknown(
                "node stopped before the write was confirmed".into(),
            ));
        }
        let reads = std::mem::take(&mut self.reads).into_values();
        let waiting = std::mem::take(&mut self.reads_waiting_apply)
            .into_values()
            .flatten();
        for read in reads.chain(waiting) {
            let _ = read
                .reply
                .send(Reply::Error("node is shutting down".into()));
        }
        self.storage = None;
        self.snapshot_writer = None;
        result
    }

    fn on_request(&mut self, NodeRequest { request, reply }: NodeRequest) {
        let deadline = Instant::now() + self.config.request_timeout;
        match request {
            Request::Set(set) => self.propose(
                Command::Set {
                    key: set.key,
                    value: set.value,
                },
                reply,
                deadline,
            ),
            Request::Delete(delete) => {
                self.propose(Command::Delete { key: delete.key }, reply, deadline)
            }
            Request::Get(get) if get.stale => {
                let _ = reply.send(self.lookup(&get.key));
            }
            Request::Get(get) => {
                let id = self.next_read_id;
                self.next_read_id += 1;
                match self.raft.read_index(id) {
                    Ok(()) => {
                        self.reads.insert(
                            id,
                            PendingRead {
                                key: get.key,
                                reply,
                                deadline,
                            },
                        );
                    }
                    Err(_) => {
                        let _ = reply.send(self.not_leader(self.raft.status().leader));
                    }
                }
            }
            Request::Ping(_) => {
                let _ = reply.send(Reply::Pong);
            }
            Request::Status(_) => {
                let _ = reply.send(self.status());
            }
        }
    }

    fn propose(&mut self, command: Command, reply: oneshot::Sender<Reply>, deadline: Instant) {
        match self.raft.propose(command) {
            Ok((index, term)) => {
                let pending = PendingWrite {
                    term,
                    reply,
                    deadline,
                };
                if let Some(old) = self.writes.insert(index, pending) {
                    let _ = old
                        .reply
                        .send(Reply::Dropped("overwritten by a newer leader".into()));
                }
            }
            Err(ProposeError::NotLeader { leader }) => {
                let _ = reply.send(self.not_leader(leader));
            }
            #[allow(unreachable_patterns)]
            Err(err) => {
                let _ = reply.send(Reply::Dropped(err.to_string()));
            }
        }
    }

    fn not_leader(&self, leader: Option<NodeId>) -> Reply {
        let addr = leader.and_then(|id| {
            self.raft
                .config()
                .voters
                .get(&id)
                .map(|member| member.client_addr.clone())
        });
        match addr {
            Some(addr) if !addr.is_empty() => Reply::NotLeader(addr),
            _ => Reply::NoLeader,
        }
    }

    fn lookup(&self, key: &[u8]) -> Reply {
        match self.kv.get(key) {
            Some(value) => Reply::Value(value.to_vec()),
            None => Reply::NotFound,
        }
    }

    fn status(&self) -> Reply {
        let status = self.raft.status();
        let fields = [
            ("id", status.id.clone()),
            ("role", status.role.to_string()),
            ("term", status.term.to_string()),
            (
                "leader",
                status.leader.clone().unwrap_or_else(|| "-".into()),
            ),
            ("commit", status.commit.to_string()),
            ("applied", self.kv.applied_index().to_string()),
            ("last_index", status.last_index.to_string()),
            ("snapshot_index", status.snapshot_index.to_string()),
            ("keys", self.kv.len().to_string()),
            ("client_addr", self.config.advertise_client_addr.clone()),
        ];
        Reply::Status(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    fn send(&self, msg: Message) {
        match self.peers.get(&msg.to) {
            Some(peer) => peer.send(msg),
            None => tracing::debug!(to = %msg.to, "no route to node"),
        }
    }

    fn on_ready(&mut self, ready: Ready) -> Result<(), NodeError> {
        let Ready {
            soft_state,
            snapshot,
            entries,
            hard_state,
            messages,
            persisted_messages,
            committed_entries,
            read_states,
            failed_reads,
        } = ready;
        if let Some(soft) = soft_state {
            tracing::info!(
                id = %self.config.id,
                role = %soft.role,
                term = soft.term,
                leader = soft.leader.as_deref().unwrap_or("-"),
                "role changed"
            );
        }
        for msg in messages {
            self.send(msg);
        }
        if let Some(snapshot) = &snapshot {
            self.install_snapshot(snapshot)?;
        }
        if snapshot.is_some()
            || !entries.is_empty()
            || hard_state.is_some()
            || !persisted_messages.is_empty()
        {
            self.submit(StorageJob::Write {
                snapshot,
                entries,
                hard_state,
                then: persisted_messages,
            })?;
        }
        self.apply(committed_entries);
        for state in read_states {
            if let Some(read) = self.reads.remove(&state.request_id) {
                let index = state.index;
                if index <= self.kv.applied_index() {
                    let _ = read.reply.send(self.lookup(&read.key));
                } else {
                    self.reads_waiting_apply
                        .entry(index)
                        .or_default()
                        .push(read);
                }
            }
        }
        for id in failed_reads {
            if let Some(read) = self.reads.remove(&id) {
                let _ = read.reply.send(self.not_leader(self.raft.status().leader));
            }
        }
        Ok(())
    }

    fn submit(&mut self, job: StorageJob) -> Result<(), NodeError> {
        let sent = self.storage.as_ref().map(|tx| tx.send(job).is_ok());
        match sent {
            Some(true) => Ok(()),
            _ => Err(NodeError::StorageFailed("storage thread is gone".into())),
        }
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), NodeError> {
        let index = snapshot.meta.last_index;
        self.kv
            .restore(&snapshot.meta, &snapshot.data)
            .map_err(|err| NodeError::Snapshot(err.to_string()))?;
        self.snapshot = snapshot.meta.clone();
        // Writes this node proposed up to here were decided elsewhere; whether
        // they made it cannot be told from a snapshot.
        let decided: Vec<LogIndex> = self.writes.range(..=index).map(|(i, _)| *i).collect();
        for i in decided {
            if let Some(write) = self.writes.remove(&i) {
                let _ = write
                    .reply
                    .send(Reply::Unknown("leadership changed; outcome unknown".into()));
            }
        }
        self.raft.on_applied(index);
        self.serve_waiting_reads();
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        let Some(last) = entries.last().map(|e| e.index) else {
            return;
        };
        for entry in &entries {
            if entry.index <= self.kv.applied_index() {
                continue;
            }
            self.kv.apply(entry);
            if let Some(write) = self.writes.remove(&entry.index) {
                let reply = if write.term == entry.term {
                    Reply::Ok
                } else {
                    Reply::Dropped("a newer leader replaced the write".into())
                };
                let _ = write.reply.send(reply);
            }
        }
        self.raft.on_applied(last);
        self.serve_waiting_reads();
        self.maybe_snapshot();
    }

    fn serve_waiting_reads(&mut self) {
        let applied = self.kv.applied_index();
        while let Some(entry) = self.reads_waiting_apply.first_entry() {
            if *entry.key() > applied {
                break;
            }
            for read in entry.remove() {
                let _ = read.reply.send(self.lookup(&read.key));
            }
        }
    }

    fn maybe_snapshot(&mut self) {
        let applied = self.kv.applied_index();
        // Past the threshold, also wait for as many entries as a quarter of the keys:
        // encoding is O(keys), so snapshots of a big map stay rare and their
        // cost per write stays constant, while the log stays O(state).
        let threshold = self.config.snapshot_threshold.max(self.kv.len() as u64 / 4);
        if self.snapshot_in_flight || applied < self.snapshot.last_index + threshold {
            return;
        }
        let started = Instant::now();
        let capacity = self.last_image_len + self.last_image_len / 8;
        let data = match self.kv.snapshot_image_sized(capacity) {
            Ok(data) => data,
            Err(err) => {
                tracing::error!(%err, "cannot encode a snapshot");
                return;
            }
        };
        self.last_image_len = data.len();
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                last_index: applied,
                last_term: self.kv.applied_term(),
                config: self.raft.config().clone(),
            },
            data,
        };
        tracing::info!(
            index = applied,
            bytes = snapshot.data.len(),
            encode_ms = started.elapsed().as_millis() as u64,
            "taking a snapshot"
        );
        let sent = self
            .snapshot_writer
            .as_ref()
            .is_some_and(|tx| tx.send(snapshot).is_ok());
        if sent {
            self.snapshot_in_flight = true;
        }
    }

    fn on_storage_done(&mut self, report: StorageDone) -> Result<(), NodeError> {
        match report {
            StorageDone::Written {
                last,
                snapshot_index,
                then,
            } => {
                if let Some(index) = snapshot_index {
                    self.raft.on_snapshot_persisted(index);
                }
                if let Some((index, term)) = last {
                    self.raft.on_persisted(index, term);
                }
                for msg in then {
                    self.send(msg);
                }
            }
            StorageDone::SnapshotSaved(meta) => self.submit(StorageJob::Compact(meta))?,
            StorageDone::SnapshotTaken(meta) => {
                tracing::info!(index = meta.last_index, "snapshot saved, log compacted");
                self.snapshot_in_flight = false;
                // A newer snapshot from the leader may have been installed meanwhile.
                if meta.last_index > self.snapshot.last_index {
                    self.snapshot = meta.clone();
                }
                self.raft.on_snapshot_taken(meta);
            }
            StorageDone::Failed(err) => return Err(NodeError::StorageFailed(err)),
        }
        Ok(())
    }

    fn expire(&mut self, now: Instant) {
        for write in take_late(&mut self.writes, |w| w.deadline <= now) {
            let _ = write.reply.send(Reply::Unknown(
                "not committed within the request timeout; outcome unknown".into(),
            ));
        }
        let mut late = take_late(&mut self.reads, |r| r.deadline <= now);
        for reads in self.reads_waiting_apply.values_mut() {
            let (gone, keep): (Vec<_>, Vec<_>) = reads.drain(..).partition(|r| r.deadline <= now);
            *reads = keep;
            late.extend(gone);
        }
        self.reads_waiting_apply
            .retain(|_, reads| !reads.is_empty());
        for read in late {
            let _ = read.reply.send(Reply::Error("read timed out".into()));
        }
    }
}

/// Removes and returns the values for which `is_late` holds.
fn take_late<K: Ord, V>(map: &mut BTreeMap<K, V>, is_late: impl Fn(&V) -> bool) -> Vec<V> {
    let (late, keep): (BTreeMap<K, V>, BTreeMap<K, V>) = std::mem::take(map)
        .into_iter()
        .partition(|(_, v)| is_late(v));
    *map = keep;
    late.into_values().collect()
}
