//! [`Replica`]: everything a node decides, with no I/O (events in, effects out).
//!
//! It owns the Raft core, the key-value state machine, the pending client
//! writes and reads and what each is told, snapshot scheduling, the
//! storage-job protocol and the disk-stall rule. Time is counted in ticks.
//! The tokio event loop (`event_loop.rs`) and the whole-node simulation
//! (`tests/node_sim.rs`) both drive this same code: they feed it ticks, peer
//! messages, client requests and storage completions, and carry out the
//! [`Effect`]s it returns (send a message, run a storage job, save a
//! snapshot, answer a client). It never holds a channel, a socket or a clock.
//!
//! What a client is told, and why it is true:
//! - `OK`: the write's entry (index, term) was committed and applied.
//! - `ERR DROPPED`: the write can never apply: it never entered a log, or a
//!   different entry was committed at its index. A newer proposal at the same
//!   index decides nothing (the old entry may still commit elsewhere), so both
//!   stay pending until that index is committed.
//! - `ERR UNKNOWN`: anything else that ends a write early (deadline, a
//!   snapshot that covered its index, shutdown).
//! - `OK <rev>` / `ERR CONFLICT <rev>` / `ERR SESSION_EXPIRED`: what the state
//!   machine decided when it applied the write's entry (CAS, CAD, REQ).
//!
//! Watches are streams: their events leave as [`Effect::Watch`] (see `watches.rs`).

use std::collections::{BTreeMap, VecDeque};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

mod members;

pub use members::parse_member;
use members::{AfterCommit, CatchUp, HeldWrite, PendingTransfer};

use super::NodeError;
use super::storage_thread::{StorageDone, StorageJob};
use super::watches::{ApiConfig, WatchHub};
use crate::metrics::{RaftGauges, ReplicaCounters};
use crate::protocol::{Reply, Request, Scan, ScanPage, WatchEvent};
use crate::raft::{Message, MessageBody, ProposeError, RaftNode, Ready, Role, Status};
use crate::state_machine::{ImageProgress, StateMachine, WriteResult};
use crate::types::{
    ClusterConfig, Command, Entry, EntryPayload, LogIndex, NodeId, Snapshot, SnapshotMeta, Term,
};

/// Names a client request; its reply comes back in [`Effect::Reply`].
pub type Token = u64;

/// Tunables of a replica. Times are in ticks.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    pub id: NodeId,
    /// Shown in STATUS.
    pub advertise_client_addr: String,
    /// Take a snapshot once this many entries were applied since the last one.
    pub snapshot_threshold: u64,
    /// ... or once the commands applied since then carry this many bytes of
    /// keys and values, and as many as the map holds: the log kept in memory
    /// and on disk stays within about the size of the state (big values).
    pub snapshot_log_bytes: u64,
    /// Keys of a snapshot image written per tick (also at most
    /// [`SNAPSHOT_SLICE_BYTES`]): a big map is encoded across many ticks,
    /// while entries are applied, so no pass of the event loop is long.
    pub snapshot_slice_keys: usize,
    /// How long a client request may wait for commit or read confirmation.
    pub request_timeout_ticks: u64,
    /// A storage job outstanding this long means the disk is stalled: a
    /// leader steps down and the node stops campaigning until it completes.
    pub disk_stall_ticks: u64,
    /// Keep every applied entry for [`Replica::take_applied`] (simulation checks).
    pub record_applied: bool,
    /// Seeds the choice of a new cluster's id.
    pub seed: u64,
    /// Sessions and watches.
    pub api: ApiConfig,
}

/// Work the runtime must carry out, in order.
#[derive(Debug)]
pub enum Effect {
    /// Send to a peer (may be lost; Raft copes).
    Send(Message),
    /// Hand to the storage worker; jobs complete in order
    /// ([`Replica::storage_done`] with their reports).
    Persist(StorageJob),
    /// Save the node's own snapshot (off the storage worker); report
    /// `StorageDone::SnapshotSaved` when durable.
    SaveSnapshot(Snapshot),
    /// Check and decode the image of this `InstallSnapshot` off the event
    /// loop ([`DecodedSnapshot::decode`], which may take seconds for a big
    /// map), then hand the result to [`Replica::snapshot_decoded`].
    DecodeSnapshot(Message),
    /// Answer a client request.
    Reply { token: Token, reply: Reply },
    /// The next line of the watch stream started by request `token` (after
    /// its `WATCHING` reply). An [`WatchEvent::End`] is its last.
    Watch { token: Token, event: WatchEvent },
}

/// A received snapshot image, checked and decoded (or why not), built off
/// the event loop for [`Replica::snapshot_decoded`].
pub struct DecodedSnapshot {
    msg: Message,
    kv: Result<StateMachine, String>,
}

impl DecodedSnapshot {
    /// Checks and decodes the image an [`Effect::DecodeSnapshot`] carries.
    /// A decoder that panics gives an error, so the replica always hears back.
    pub fn decode(msg: Message) -> DecodedSnapshot {
        let kv = match &msg.body {
            MessageBody::InstallSnapshot { meta, data, .. } => {
                std::panic::catch_unwind(|| StateMachine::from_image(meta, data))
                    .map_err(|_| "the image decoder panicked".to_string())
                    .and_then(|decoded| decoded.map_err(|err| err.to_string()))
            }
            _ => Err("not a snapshot".into()),
        };
        DecodedSnapshot { msg, kv }
    }
}

struct PendingWrite {
    term: Term,
    token: Token,
    deadline: u64,
    then: AfterCommit,
}

/// What a linearizable read answers once its read index is applied.
enum Query {
    Get(Vec<u8>),
    GetRev(Vec<u8>),
    Scan(Scan),
}

struct PendingRead {
    query: Query,
    token: Token,
    deadline: u64,
}

/// Readys handled per [`Replica::poll`]: each applies at most 4,096 entries,
/// so a pass of the event loop applies at most ~16k (a few ms).
const MAX_READYS_PER_POLL: usize = 4;
/// Ticks to wait after a snapshot could not be saved.
const SNAPSHOT_RETRY_TICKS: u64 = 100;
/// Bytes of a snapshot image written per tick, at most (see
/// [`ReplicaConfig::snapshot_slice_keys`]).
pub const SNAPSHOT_SLICE_BYTES: usize = 4 << 20;

/// Ticks between sweeps of requests past their deadline.
const SWEEP_TICKS: u64 = 10;

/// The node's decision logic. See the module docs.
pub struct Replica {
    cfg: ReplicaConfig,
    raft: RaftNode,
    kv: StateMachine,
    snapshot: SnapshotMeta,
    snapshot_in_flight: bool,
    /// An image being written: the configuration at its index.
    snapshot_encoding: Option<ClusterConfig>,
    /// Big things to free (a replaced state machine, compacted entries):
    /// see [`Replica::take_garbage`].
    garbage: Vec<Box<dyn std::any::Any + Send>>,
    /// Size of the last snapshot image, to size the next one's buffer.
    last_image_len: usize,
    /// Bytes of keys and values applied since the last snapshot was begun.
    log_bytes: u64,
    /// Writes by index; several when newer leaders proposed at the same index.
    writes: BTreeMap<LogIndex, Vec<PendingWrite>>,
    reads: BTreeMap<u64, PendingRead>,
    /// Reads whose read index is known, waiting until it is applied.
    reads_waiting_apply: BTreeMap<LogIndex, Vec<PendingRead>>,
    next_read_id: u64,
    /// A received snapshot image already decoded and checked, by its metadata.
    incoming: Option<(SnapshotMeta, StateMachine)>,
    /// Last index of the received image being decoded (one at a time).
    decoding: Option<LogIndex>,
    /// Submit tick of each storage-worker job not yet reported, in order.
    outstanding: VecDeque<u64>,
    disk_stalled: bool,
    /// The disk refused a write (ENOSPC): writes get `ERR NOSPACE`, and the
    /// node neither leads nor campaigns, until the storage worker has room.
    disk_full: bool,
    /// No snapshot is attempted before this tick (after one failed).
    snapshot_retry_tick: u64,
    now: u64,
    rng: SmallRng,
    /// Term in which this node proposed the cluster id (once per term).
    bootstrap_proposed: Option<Term>,
    effects: Vec<Effect>,
    applied_log: Vec<Entry>,
    catching_up: Vec<CatchUp>,
    transfers: Vec<PendingTransfer>,
    held_writes: Vec<HeldWrite>,
    watches: WatchHub,
    /// The runtime's wall clock (Unix ms), written into session entries.
    wall_ms: u64,
    /// Snapshot images refused because they failed their checksum or decode.
    pub bad_snapshots: u64,
    /// How writes were answered, leader changes (for metrics).
    counters: ReplicaCounters,
    last_leader: Option<NodeId>,
    foreign_messages: u64,
}

impl Replica {
    /// A replica from the core and the state machine it was booted with.
    pub fn new(
        cfg: ReplicaConfig,
        raft: RaftNode,
        kv: StateMachine,
        snapshot: SnapshotMeta,
    ) -> Replica {
        let rng = SmallRng::seed_from_u64(cfg.seed);
        let watches = WatchHub::new(&cfg.api, kv.applied_index());
        Replica {
            cfg,
            raft,
            kv,
            snapshot,
            snapshot_in_flight: false,
            snapshot_encoding: None,
            garbage: Vec::new(),
            last_image_len: 0,
            log_bytes: 0,
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            reads_waiting_apply: BTreeMap::new(),
            next_read_id: 1,
            incoming: None,
            decoding: None,
            outstanding: VecDeque::new(),
            disk_stalled: false,
            disk_full: false,
            snapshot_retry_tick: 0,
            now: 0,
            rng,
            bootstrap_proposed: None,
            effects: Vec::new(),
            applied_log: Vec::new(),
            catching_up: Vec::new(),
            transfers: Vec::new(),
            held_writes: Vec::new(),
            watches,
            wall_ms: 0,
            bad_snapshots: 0,
            counters: ReplicaCounters::default(),
            last_leader: None,
            foreign_messages: 0,
        }
    }

    // ----- inputs -----

    /// The runtime's ticks fell behind real time: no lease reads until a
    /// heartbeat round sent from now on renews the lease.
    pub fn drop_read_lease(&mut self) {
        self.raft.drop_read_lease();
    }

    /// One tick of logical time.
    pub fn tick(&mut self) {
        self.now += 1;
        self.raft.tick();
        self.check_disk();
        if self.now.is_multiple_of(SWEEP_TICKS) {
            self.expire();
        }
        self.watches
            .tick(self.kv.applied_index(), &mut self.effects);
        self.continue_snapshot();
    }

    /// What the replica let go of and is costly to free (a million-key map
    /// takes tens of milliseconds): the runtime takes it after every
    /// [`Replica::poll`] and frees it away from the event loop.
    pub fn take_garbage(&mut self) -> Vec<Box<dyn std::any::Any + Send>> {
        std::mem::take(&mut self.garbage)
    }

    /// The runtime's wall clock, Unix milliseconds. A leader writes it into
    /// exactly-once entries, so that sessions expire by the entries' clock.
    pub fn set_wall_clock(&mut self, unix_ms: u64) {
        self.wall_ms = unix_ms;
    }

    /// The client of watch `token` is gone (closed, or its buffer overflowed).
    pub fn cancel_watch(&mut self, token: Token) {
        self.watches.cancel(token);
    }

    /// A message from a peer, with the cluster id its sender stamped on it.
    /// A node that holds a cluster id refuses messages carrying another (a
    /// node of another cluster, or one started on a foreign data dir) and
    /// logs both ids; an empty id (a sender with none yet) is accepted.
    pub fn step_from(&mut self, cluster_id: &str, msg: Message) {
        if let Some(mine) = self.kv.cluster_id()
            && !cluster_id.is_empty()
            && cluster_id != mine
        {
            self.foreign_messages += 1;
            // The first, then one in a thousand: a foreign peer retries forever.
            if self.foreign_messages % 1000 == 1 {
                tracing::warn!(id = %self.cfg.id, from = %msg.from, their_cluster = %cluster_id,
                    our_cluster = %mine, refused = self.foreign_messages,
                    "refusing messages from a node of another cluster");
            }
            return;
        }
        self.step(msg);
    }

    /// This node's cluster id, once its bootstrap entry is applied.
    pub fn cluster_id(&self) -> Option<&str> {
        self.kv.cluster_id()
    }

    /// Messages refused because they carried another cluster's id.
    pub fn foreign_messages(&self) -> u64 {
        self.foreign_messages
    }

    /// A message from a peer (no cluster check: see [`Replica::step_from`]).
    /// A snapshot image that would move this node ahead is not stepped yet:
    /// it goes out as [`Effect::DecodeSnapshot`] and comes back through
    /// [`Replica::snapshot_decoded`], so a bad image is refused before the
    /// core sees it and a big one never stalls the node.
    pub fn step(&mut self, msg: Message) {
        // A stale or malformed image is answered by the core at once, with
        // no decode.
        if let MessageBody::InstallSnapshot { meta, term, .. } = &msg.body
            && meta.last_index > self.raft.committed()
            && *term >= self.raft.term()
            && msg.is_valid()
        {
            let index = meta.last_index;
            // One at a time, whatever its index: two big decodes at once
            // would double the memory and slow both (the leader re-sends).
            if let Some(busy) = self.decoding {
                tracing::debug!(from = %msg.from, index, busy, "an image is already being decoded");
                return;
            }
            self.decoding = Some(index);
            self.effects.push(Effect::DecodeSnapshot(msg));
            return;
        }
        self.raft.step(msg);
    }

    /// The outcome of an [`Effect::DecodeSnapshot`]: a good image is stepped
    /// into the core (which may still find it stale by now), a bad one is
    /// refused and counted (the leader sends another later).
    pub fn snapshot_decoded(&mut self, decoded: DecodedSnapshot) {
        let DecodedSnapshot { msg, kv } = decoded;
        let MessageBody::InstallSnapshot { meta, .. } = &msg.body else {
            return;
        };
        self.decoding = None;
        match kv {
            Ok(kv) if meta.last_index > self.raft.committed() => {
                self.incoming = Some((meta.clone(), kv));
                self.raft.step(msg);
                // The core may not install it (a stale term, or it holds
                // that entry already): then the decoded map is not needed.
                if !self.raft.has_pending_snapshot()
                    && let Some((_, unused)) = self.incoming.take()
                {
                    self.garbage.push(Box::new(unused));
                }
            }
            Ok(kv) => {
                // Overtaken while it was decoded: the core answers with
                // what this node has committed, so the leader moves on.
                self.garbage.push(Box::new(kv));
                self.raft.step(msg);
            }
            Err(err) => {
                self.bad_snapshots += 1;
                tracing::warn!(from = %msg.from, index = meta.last_index, %err,
                    "refusing a snapshot image that fails its check");
            }
        }
    }

    /// A client request; its answer comes as [`Effect::Reply`] with `token`.
    pub fn request(&mut self, token: Token, request: Request) {
        let deadline = self.now + self.cfg.request_timeout_ticks;
        match request {
            Request::Set(set) => self.propose(
                Command::Set {
                    key: set.key,
                    value: set.value,
                },
                token,
                deadline,
            ),
            Request::Delete(delete) => {
                self.propose(Command::Delete { key: delete.key }, token, deadline)
            }
            Request::Cas(_) | Request::Cad(_) => match write_command(request) {
                Some(command) => self.propose(command, token, deadline),
                None => self.reply(token, Reply::Error("not a write".into())),
            },
            Request::Req(req) => match write_command(*req.write) {
                Some(command) => {
                    let command = Command::Session {
                        client: req.client,
                        seq: req.seq,
                        now_ms: self.wall_ms,
                        ttl_ms: self.cfg.api.session_ttl_ms,
                        command: Box::new(command),
                    };
                    self.propose(command, token, deadline)
                }
                None => self.reply(token, Reply::Error("REQ needs a write".into())),
            },
            Request::Get(get) if get.stale => {
                let reply = self.lookup(&Query::Get(get.key));
                self.reply(token, reply);
            }
            Request::Get(get) => self.read(Query::Get(get.key), token, deadline),
            Request::GetRev(get) => self.read(Query::GetRev(get.key), token, deadline),
            Request::Scan(scan) => self.read(Query::Scan(scan), token, deadline),
            Request::Watch(watch) => {
                let (reply, events) = self.watches.start(token, watch, self.kv.applied_index());
                self.reply(token, reply);
                self.effects.extend(events);
            }
            Request::Ping(_) => self.reply(token, Reply::Pong),
            Request::Status(_) => {
                let reply = self.status_reply();
                self.reply(token, reply);
            }
            Request::Member(member) => self.member(token, member, deadline),
            Request::Transfer(t) => self.transfer(token, t.target, deadline),
        }
    }

    /// Starts a linearizable read (ReadIndex).
    fn read(&mut self, query: Query, token: Token, deadline: u64) {
        if self.disk_full && self.raft.role() != Role::Leader {
            // It cannot apply what it cannot persist: the read would wait
            // for the disk. The leader answers it at once.
            let reply = self.not_leader(self.raft.status().leader);
            self.reply(token, reply);
            return;
        }
        let id = self.next_read_id;
        self.next_read_id += 1;
        match self.raft.read_index(id) {
            Ok(()) => {
                self.reads.insert(
                    id,
                    PendingRead {
                        query,
                        token,
                        deadline,
                    },
                );
            }
            Err(_) => {
                let reply = self.not_leader(self.raft.status().leader);
                self.reply(token, reply);
            }
        }
    }

    /// A report from the storage worker or the snapshot writer.
    pub fn storage_done(&mut self, report: StorageDone) -> Result<(), NodeError> {
        match report {
            StorageDone::Written {
                seq,
                last,
                snapshot_index,
                then,
            } => {
                self.job_completed();
                if let Some(index) = snapshot_index {
                    self.raft.on_snapshot_persisted(seq, index);
                }
                if let Some((index, term)) = last {
                    self.raft.on_persisted(seq, index, term);
                }
                self.effects.extend(then.into_iter().map(Effect::Send));
            }
            StorageDone::SnapshotSaved(meta) => {
                self.submit(StorageJob::Compact(meta));
            }
            StorageDone::Read { fetch, entries } => {
                self.job_completed();
                self.raft.on_fetched(fetch, entries);
            }
            StorageDone::SnapshotTaken(meta) => {
                self.job_completed();
                tracing::info!(index = meta.last_index, "snapshot saved, log compacted");
                self.snapshot_in_flight = false;
                // A newer snapshot from the leader may have been installed meanwhile.
                if meta.last_index > self.snapshot.last_index {
                    self.snapshot = meta.clone();
                }
                self.raft.on_snapshot_taken(meta);
            }
            StorageDone::NoSpace(why) => {
                tracing::warn!(id = %self.cfg.id, %why,
                    "disk full: refusing writes, not leading or campaigning until there is room");
                self.disk_full = true;
                self.raft.set_disk_stalled(true);
            }
            StorageDone::SpaceAvailable => {
                tracing::info!(id = %self.cfg.id, "disk has room again");
                self.disk_full = false;
                self.raft.set_disk_stalled(self.disk_stalled);
            }
            StorageDone::SnapshotFailed(why) => {
                tracing::warn!(id = %self.cfg.id, %why, "snapshot not saved; trying again later");
                self.snapshot_in_flight = false;
                self.snapshot_retry_tick = self.now + SNAPSHOT_RETRY_TICKS;
            }
            StorageDone::Failed(err) => return Err(NodeError::StorageFailed(err)),
        }
        Ok(())
    }

    /// Starts an election now (tests, leadership transfer).
    pub fn campaign(&mut self) {
        self.raft.campaign();
    }

    /// Runs the core until it has nothing more to hand out and moves every
    /// effect into `out`. An error means the node must stop.
    pub fn poll(&mut self, out: &mut Vec<Effect>) -> Result<(), NodeError> {
        // A bounded number of Readys per call: after a restart or a long
        // partition, hundreds of thousands of committed entries wait to be
        // applied, and applying them in one go would hold up ticks and
        // heartbeats for a long time. The rest waits for the next call
        // ([`Replica::has_work`]).
        let mut readys = 0;
        loop {
            while self.raft.has_ready() && readys < MAX_READYS_PER_POLL {
                let ready = self.raft.ready();
                self.on_ready(ready)?;
                readys += 1;
            }
            self.advance_member_ops();
            if !self.raft.has_ready() || readys >= MAX_READYS_PER_POLL {
                break;
            }
        }
        out.append(&mut self.effects);
        let discarded = self.raft.take_discarded();
        if !discarded.is_empty() {
            self.garbage.push(Box::new(discarded));
        }
        if let Some(reason) = self.raft.refusal() {
            return Err(NodeError::Refused(reason.to_string()));
        }
        Ok(())
    }

    /// Whether [`Replica::poll`] left work for another call (call it again
    /// soon, without waiting for an input).
    pub fn has_work(&self) -> bool {
        self.raft.has_ready()
    }

    /// The node is stopping: every pending request gets its final answer.
    pub fn shutdown(&mut self, out: &mut Vec<Effect>) {
        for write in std::mem::take(&mut self.writes).into_values().flatten() {
            self.reply(
                write.token,
                Reply::Unknown("node stopped before the write was confirmed".into()),
            );
        }
        let tokens: Vec<Token> = std::mem::take(&mut self.catching_up)
            .into_iter()
            .map(|c| c.token)
            .chain(
                std::mem::take(&mut self.transfers)
                    .into_iter()
                    .map(|t| t.token),
            )
            .collect();
        for token in tokens {
            self.reply(
                token,
                Reply::Unknown("node stopped before the change finished".into()),
            );
        }
        for held in std::mem::take(&mut self.held_writes) {
            self.reply(held.token, Reply::Dropped("node stopped".into()));
        }
        let reads = std::mem::take(&mut self.reads).into_values();
        let waiting = std::mem::take(&mut self.reads_waiting_apply)
            .into_values()
            .flatten();
        for read in reads.chain(waiting).collect::<Vec<_>>() {
            self.reply(read.token, Reply::Error("node is shutting down".into()));
        }
        self.watches.shutdown(&mut self.effects);
        out.append(&mut self.effects);
    }

    // ----- observation (STATUS, simulation checks) -----

    pub fn raft_status(&self) -> Status {
        self.raft.status()
    }

    /// The latest configuration in this node's log.
    pub fn config(&self) -> crate::types::ClusterConfig {
        self.raft.config().clone()
    }

    /// The configuration as of this node's commit index.
    pub fn committed_config(&self) -> crate::types::ClusterConfig {
        self.raft.config_at(self.raft.committed())
    }

    pub fn kv(&self) -> &StateMachine {
        &self.kv
    }

    pub fn id(&self) -> &str {
        &self.cfg.id
    }

    /// The Raft address of member `id` in the latest config.
    pub fn raft_addr_of(&self, id: &str) -> Option<String> {
        self.raft.config().addr(id).map(|a| a.raft_addr.clone())
    }

    pub fn disk_stalled(&self) -> bool {
        self.disk_stalled
    }

    /// The disk refused a write for lack of space (and has not taken one since).
    pub fn disk_full(&self) -> bool {
        self.disk_full
    }

    /// Entries applied since the last call (only with `record_applied`).
    pub fn take_applied(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.applied_log)
    }

    /// How writes were answered so far, and leader changes seen.
    pub fn counters(&self) -> ReplicaCounters {
        self.counters
    }

    /// The Raft state as the metrics and `/health` show it.
    pub fn gauges(&self) -> RaftGauges {
        let status = self.raft.status();
        RaftGauges {
            role: Some(status.role),
            term: status.term,
            leader: status.leader,
            commit: status.commit,
            applied: self.kv.applied_index(),
            last_index: status.last_index,
            snapshot_index: status.snapshot_index,
            log_cache_bytes: status.log_cache_bytes,
            voters: status.voters,
            learners: status.learners,
            disk_full: self.disk_full,
            refused: status.refused.is_some(),
        }
    }

    /// Leader only: how many entries each peer is behind its last index.
    pub fn peer_lags(&self) -> Vec<(NodeId, u64)> {
        self.raft.peer_lags()
    }

    /// Writes still waiting for an answer.
    pub fn pending_writes(&self) -> usize {
        self.writes.values().map(Vec::len).sum()
    }

    // ----- decisions -----

    fn reply(&mut self, token: Token, reply: Reply) {
        match reply {
            Reply::Dropped(_) => self.counters.dropped += 1,
            Reply::Unknown(_) => self.counters.unknown += 1,
            _ => {}
        }
        self.effects.push(Effect::Reply { token, reply });
    }

    fn submit(&mut self, job: StorageJob) {
        self.outstanding.push_back(self.now);
        self.effects.push(Effect::Persist(job));
    }

    fn job_completed(&mut self) {
        self.outstanding.pop_front();
        self.check_disk();
    }

    /// The disk-stall rule: a job outstanding for `disk_stall_ticks` stalls
    /// the node (a leader steps down); it recovers once the disk catches up.
    fn check_disk(&mut self) {
        let stalled = self
            .outstanding
            .front()
            .is_some_and(|&at| self.now.saturating_sub(at) >= self.cfg.disk_stall_ticks);
        if stalled != self.disk_stalled {
            self.disk_stalled = stalled;
            if stalled {
                tracing::warn!(id = %self.cfg.id, "disk has not completed a write in time: \
                    not leading or campaigning until it does");
            } else {
                tracing::info!(id = %self.cfg.id, "disk writes complete again");
            }
            self.raft.set_disk_stalled(stalled || self.disk_full);
        }
    }

    fn propose(&mut self, command: Command, token: Token, deadline: u64) {
        if self.disk_full {
            self.counters.no_space += 1;
            self.reply(
                token,
                Reply::NoSpace("this node's disk is full; the write was not attempted".into()),
            );
            return;
        }
        if self.disk_stalled {
            self.reply(
                token,
                Reply::Dropped("this node's disk is stalled; try another node".into()),
            );
            return;
        }
        // Checked first so that the command moves into the log uncloned.
        let refused = match self.raft.check_can_propose() {
            Ok(()) => match self.raft.propose(command) {
                Ok((index, term)) => {
                    self.writes.entry(index).or_default().push(PendingWrite {
                        term,
                        token,
                        deadline,
                        then: AfterCommit::Ok,
                    });
                    return;
                }
                Err(err) => {
                    self.reply(token, Reply::Dropped(err.to_string()));
                    return;
                }
            },
            Err(err) => err,
        };
        match refused {
            ProposeError::NotLeader { leader } => {
                let reply = self.not_leader(leader);
                self.reply(token, reply);
            }
            // Held until the transfer ends: then proposed here, or redirected.
            ProposeError::Transferring { .. } => self.held_writes.push(HeldWrite {
                token,
                command,
                deadline,
            }),
            err => self.reply(token, Reply::Dropped(err.to_string())),
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

    fn lookup(&self, query: &Query) -> Reply {
        match query {
            Query::Get(key) => match self.kv.get(key) {
                Some(value) => Reply::Value(value.to_vec()),
                None => Reply::NotFound,
            },
            Query::GetRev(key) => match self.kv.get_rev(key) {
                Some((rev, value)) => Reply::ValueRev(rev, value.to_vec()),
                None => Reply::NotFound,
            },
            Query::Scan(scan) => {
                let prefix = scan.prefix.as_deref().unwrap_or_default();
                let (entries, more) = self.kv.scan(prefix, scan.after.as_deref(), scan.limit);
                Reply::Keys(ScanPage {
                    revision: self.kv.applied_index(),
                    more,
                    entries,
                })
            }
        }
    }

    fn status_reply(&self) -> Reply {
        let status = self.raft.status();
        let role = if status.refused.is_some() {
            "refused".to_string()
        } else if status.removed {
            "removed".to_string()
        } else {
            status.role.to_string()
        };
        let fields = [
            ("id", status.id.clone()),
            ("role", role),
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
            ("voters", status.voters.to_string()),
            ("learners", status.learners.to_string()),
            ("client_addr", self.cfg.advertise_client_addr.clone()),
            (
                "cluster_id",
                self.kv.cluster_id().unwrap_or("-").to_string(),
            ),
            (
                "disk",
                if self.disk_full {
                    "full"
                } else if self.disk_stalled {
                    "stalled"
                } else {
                    "ok"
                }
                .to_string(),
            ),
            (
                "bootstrap",
                if status.bootstrapping {
                    "waiting"
                } else {
                    "done"
                }
                .to_string(),
            ),
        ];
        Reply::Status(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    fn on_ready(&mut self, ready: Ready) -> Result<(), NodeError> {
        let Ready {
            seq,
            soft_state,
            snapshot,
            entries,
            hard_state,
            messages,
            persisted_messages,
            committed_entries,
            read_states,
            failed_reads,
            fetches,
        } = ready;
        if let Some(soft) = &soft_state {
            if soft.leader.is_some() && soft.leader != self.last_leader {
                self.counters.leader_changes += 1;
            }
            if soft.leader.is_some() {
                self.last_leader.clone_from(&soft.leader);
            }
            tracing::info!(
                id = %self.cfg.id,
                role = %soft.role,
                term = soft.term,
                leader = soft.leader.as_deref().unwrap_or("-"),
                "role changed"
            );
        }
        self.effects.extend(messages.into_iter().map(Effect::Send));
        if let Some(snapshot) = &snapshot {
            self.install_snapshot(snapshot)?;
        }
        if snapshot.is_some()
            || !entries.is_empty()
            || hard_state.is_some()
            || !persisted_messages.is_empty()
        {
            self.submit(StorageJob::Write {
                seq,
                snapshot,
                entries,
                hard_state,
                then: persisted_messages,
            });
        }
        for fetch in fetches {
            self.submit(StorageJob::Read(fetch));
        }
        self.apply(committed_entries);
        // After applying: what this Ready committed is answered first.
        if soft_state.as_ref().is_some_and(|s| s.role != Role::Leader) {
            self.leadership_lost();
        }
        for state in read_states {
            if let Some(read) = self.reads.remove(&state.request_id) {
                let index = state.index;
                if index <= self.kv.applied_index() {
                    let reply = self.lookup(&read.query);
                    self.reply(read.token, reply);
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
                let reply = self.not_leader(self.raft.status().leader);
                self.reply(read.token, reply);
            }
        }
        if soft_state.is_some_and(|s| s.role == Role::Leader) {
            self.maybe_propose_cluster_id();
        }
        Ok(())
    }

    /// This node stopped leading: its pending writes may still commit (under
    /// another leader) or not, and it will not learn which in time. They are
    /// answered `ERR UNKNOWN` at once rather than at their deadline (clients
    /// retry them safely with `REQ`).
    fn leadership_lost(&mut self) {
        // Writes at or below the commit index are decided: applying them
        // answers them (`OK`, or `DROPPED` for another entry at the index).
        let commit = self.raft.committed();
        let undecided = self.writes.split_off(&(commit + 1));
        for write in undecided.into_values().flatten() {
            self.reply(
                write.token,
                Reply::Unknown(
                    "leadership lost before the write committed; outcome unknown".into(),
                ),
            );
        }
        for held in std::mem::take(&mut self.held_writes) {
            let reply = self.not_leader(self.raft.status().leader);
            self.reply(held.token, reply);
        }
    }

    /// The first leader of a cluster without an id chooses one.
    fn maybe_propose_cluster_id(&mut self) {
        let term = self.raft.status().term;
        if self.kv.cluster_id().is_some() || self.bootstrap_proposed == Some(term) {
            return;
        }
        let cluster_id = format!("{:016x}", self.rng.random::<u64>());
        if self
            .raft
            .propose_payload(EntryPayload::Bootstrap {
                cluster_id: cluster_id.clone(),
            })
            .is_ok()
        {
            tracing::info!(id = %self.cfg.id, %cluster_id, "proposing the new cluster's id");
            self.bootstrap_proposed = Some(term);
        }
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), NodeError> {
        let index = snapshot.meta.last_index;
        let kv = match self.incoming.take() {
            Some((meta, kv)) if meta == snapshot.meta => kv,
            _ => StateMachine::from_image(&snapshot.meta, &snapshot.data)
                .map_err(|err| NodeError::Snapshot(err.to_string()))?,
        };
        let old = std::mem::replace(&mut self.kv, kv);
        self.garbage.push(Box::new(old));
        self.snapshot = snapshot.meta.clone();
        self.log_bytes = 0;
        self.watches.reset(index, &mut self.effects);
        // Writes this node proposed up to here were decided elsewhere; whether
        // they made it cannot be told from a snapshot.
        let decided: Vec<LogIndex> = self.writes.range(..=index).map(|(i, _)| *i).collect();
        for i in decided {
            for write in self.writes.remove(&i).unwrap_or_default() {
                self.reply(
                    write.token,
                    Reply::Unknown("leadership changed; outcome unknown".into()),
                );
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
        for entry in entries {
            if entry.index <= self.kv.applied_index() {
                continue;
            }
            if let EntryPayload::Command(command) = entry.payload.as_ref() {
                self.log_bytes += command.data_len() as u64;
            }
            let applied = self.kv.apply_entry(&entry).unwrap_or_default();
            if let Some(change) = applied.change {
                self.watches.record(entry.index, change, &mut self.effects);
            }
            for write in self.writes.remove(&entry.index).unwrap_or_default() {
                // Same index and term: the same entry (Log Matching). Any
                // other term: a different entry is committed at the index,
                // so this write can never apply.
                if write.term != entry.term {
                    let reply = Reply::Dropped("another entry was committed at its index".into());
                    self.reply(write.token, reply);
                    continue;
                }
                match write.then {
                    AfterCommit::Ok => {
                        self.counters.committed += 1;
                        self.reply(write.token, write_reply(applied.result.as_ref()))
                    }
                    AfterCommit::CatchUpThenPromote(id) => self.catching_up.push(CatchUp {
                        token: write.token,
                        id,
                        deadline: write.deadline,
                    }),
                }
            }
            if self.cfg.record_applied {
                self.applied_log.push(entry);
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
                let reply = self.lookup(&read.query);
                self.reply(read.token, reply);
            }
        }
    }

    fn maybe_snapshot(&mut self) {
        let applied = self.kv.applied_index();
        // Past the threshold, also wait for as many entries as a quarter of the keys:
        // encoding is O(keys), so snapshots of a big map stay rare and their
        // cost per write stays constant, while the log stays O(state).
        // Big values reach the byte bound first, for the same reason.
        let threshold = self.cfg.snapshot_threshold.max(self.kv.len() as u64 / 4);
        let byte_bound = self.cfg.snapshot_log_bytes.max(self.kv.data_bytes());
        if self.snapshot_in_flight
            || self.snapshot_encoding.is_some()
            || self.now < self.snapshot_retry_tick
            || applied <= self.snapshot.last_index
            || applied < self.snapshot.last_index + threshold && self.log_bytes < byte_bound
        {
            return;
        }
        let capacity = self.last_image_len + self.last_image_len / 8;
        if let Err(err) = self.kv.begin_image(capacity) {
            tracing::error!(%err, "cannot encode a snapshot");
            self.snapshot_retry_tick = self.now + SNAPSHOT_RETRY_TICKS;
            return;
        }
        self.snapshot_encoding = Some(self.raft.config_at(applied));
        self.log_bytes = 0;
        // A small map is written at once; a big one goes on at every tick.
        self.continue_snapshot();
    }

    /// Writes the next slice of the snapshot image in progress; once it is
    /// complete, hands it to storage.
    fn continue_snapshot(&mut self) {
        if self.snapshot_encoding.is_none() {
            return;
        }
        let progress = self
            .kv
            .continue_image(self.cfg.snapshot_slice_keys, SNAPSHOT_SLICE_BYTES);
        let (index, term, data) = match progress {
            Ok(ImageProgress::Pending) => return,
            Ok(ImageProgress::Done { index, term, data }) => (index, term, data),
            Ok(ImageProgress::Idle) => {
                // An installed snapshot replaced the state it was writing.
                tracing::info!("snapshot image abandoned: the state was replaced");
                self.snapshot_encoding = None;
                return;
            }
            Err(err) => {
                tracing::error!(%err, "cannot encode a snapshot");
                self.snapshot_encoding = None;
                self.snapshot_retry_tick = self.now + SNAPSHOT_RETRY_TICKS;
                return;
            }
        };
        let Some(config) = self.snapshot_encoding.take() else {
            return;
        };
        self.last_image_len = data.len();
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                last_index: index,
                last_term: term,
                config,
            },
            data,
        };
        tracing::info!(index, bytes = snapshot.data.len(), "taking a snapshot");
        self.snapshot_in_flight = true;
        self.effects.push(Effect::SaveSnapshot(snapshot));
    }

    fn expire(&mut self) {
        let now = self.now;
        let late = |deadline: u64| deadline <= now;
        let mut late_writes = Vec::new();
        for writes in self.writes.values_mut() {
            late_writes.extend(writes.extract_if(.., |w| late(w.deadline)));
        }
        self.writes.retain(|_, writes| !writes.is_empty());
        for write in late_writes {
            self.reply(
                write.token,
                Reply::Unknown("not committed within the request timeout; outcome unknown".into()),
            );
        }
        for c in self
            .catching_up
            .extract_if(.., |c| late(c.deadline))
            .collect::<Vec<_>>()
        {
            let reply = Reply::Error(format!(
                "timed out waiting for {} to catch up; it stays a learner until removed",
                c.id
            ));
            self.reply(c.token, reply);
        }
        for t in self
            .transfers
            .extract_if(.., |t| late(t.deadline))
            .collect::<Vec<_>>()
        {
            self.reply(
                t.token,
                Reply::Error(format!("timed out transferring to {}", t.target)),
            );
        }
        for w in self
            .held_writes
            .extract_if(.., |w| late(w.deadline))
            .collect::<Vec<_>>()
        {
            self.reply(
                w.token,
                Reply::Dropped("leadership transfer took too long".into()),
            );
        }
        // (`BTreeMap::extract_if` is newer than the crate's MSRV.)
        let (gone, keep): (BTreeMap<u64, PendingRead>, _) = std::mem::take(&mut self.reads)
            .into_iter()
            .partition(|(_, r)| late(r.deadline));
        self.reads = keep;
        let mut late_reads: Vec<PendingRead> = gone.into_values().collect();
        for reads in self.reads_waiting_apply.values_mut() {
            late_reads.extend(reads.extract_if(.., |r| late(r.deadline)));
        }
        self.reads_waiting_apply
            .retain(|_, reads| !reads.is_empty());
        for read in late_reads {
            self.reply(read.token, Reply::Error("read timed out".into()));
        }
    }
}

/// The command a write request proposes (`None` for anything else).
fn write_command(request: Request) -> Option<Command> {
    Some(match request {
        Request::Set(set) => Command::Set {
            key: set.key,
            value: set.value,
        },
        Request::Delete(delete) => Command::Delete { key: delete.key },
        Request::Cas(cas) => Command::Cas {
            key: cas.key,
            expected: cas.expected,
            value: cas.value,
        },
        Request::Cad(cad) => Command::Cad {
            key: cad.key,
            expected: cad.expected,
        },
        _ => return None,
    })
}

/// What a client is told about its applied write.
fn write_reply(result: Option<&WriteResult>) -> Reply {
    match result {
        None | Some(WriteResult::Ok) => Reply::Ok,
        Some(WriteResult::Rev(rev)) => Reply::OkRev(*rev),
        Some(WriteResult::Conflict(rev)) => Reply::Conflict(*rev),
        Some(WriteResult::SessionExpired) => Reply::SessionExpired,
        Some(WriteResult::Invalid(why)) => Reply::Error((*why).to_string()),
    }
}
