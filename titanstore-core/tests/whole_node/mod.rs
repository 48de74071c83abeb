//! Whole-node simulation: real [`Replica`]s (the code that decides what a
//! client is told) over real [`Storage`] on a [`SimFs`] each, a simulated
//! network and simulated clients, all driven from one seeded RNG.
//!
//! Faults: message drops, duplicates, delays (so reordering), partitions
//! (also ones that leave the old leader with a minority), one-way cuts,
//! process kills that keep the page cache, power losses that drop and tear
//! what was not fsynced (also in the middle of a storage batch), stalled
//! disks, and corrupted snapshot images. A low snapshot threshold makes
//! snapshots, compaction and InstallSnapshot constant.
//!
//! Every reply a client gets goes into a history. Checked: at most one leader
//! per term; every node applies the same entry at each index; no write that
//! got `OK` is missing from the committed log; no write told `DROPPED` (or
//! refused) is ever applied; after healing, every node converges to the same
//! state; and the history is linearizable (the project's checker).
//!
//! `SIM_TRACE=1` prints the run's leaders, crashes, refusals, snapshot
//! transfers and admin requests, to read a failing seed's story.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

mod api;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use titanstore_core::checker::{self, Kind, Op, Outcome, Verdict};
use titanstore_core::node::storage_thread::{DiskFull, StorageDone, StorageJob, write_batch};
use titanstore_core::node::{
    ApiConfig, DecodedSnapshot, Effect, Replica, ReplicaConfig, Token, boot,
};
use titanstore_core::protocol::{
    Delete, Get, Member, MemberSpec, Reply, Request, Set, StatusCmd, Transfer,
};
use titanstore_core::raft::{Message, MessageBody, RaftConfig, ReadMode, Role};
use titanstore_core::storage::{SimFs, SnapshotWriter, Storage, StorageOptions};
use titanstore_core::types::{ClusterConfig, Command, Entry, EntryPayload, LogIndex, NodeId, Term};

pub use api::{ApiClients, COUNTER};
pub use titanstore_core::checker::Outcome as OpOutcome;

/// Knobs of one run. Chances are per mille.
#[derive(Debug, Clone)]
pub struct Options {
    pub nodes: usize,
    pub chaos_ticks: u64,
    pub heal_ticks: u64,
    pub clients: usize,
    pub keys: usize,
    pub drop_pm: u32,
    pub dup_pm: u32,
    pub max_delay: u64,
    /// Per tick: a node is killed (page cache kept) / loses power.
    pub kill_pm: u32,
    pub power_pm: u32,
    /// Per tick: a new partition / a one-way cut / heal the network.
    pub partition_pm: u32,
    /// Per tick: a node's disk stalls for a while.
    pub stall_pm: u32,
    /// Per tick: a running node's disk fills up (ENOSPC) for a while.
    pub full_pm: u32,
    /// Per InstallSnapshot message: its image is damaged in transit.
    pub corrupt_snapshot_pm: u32,
    /// Per tick: a node's storage worker runs its queued jobs.
    pub persist_pm: u32,
    pub snapshot_threshold: u64,
    pub snapshot_log_bytes: u64,
    /// The core's `log_cache_bytes` and recovery's `recovered_entry_bytes`:
    /// small, entries are read back from the WAL for lagging followers and
    /// for applying after a restart.
    pub log_cache_bytes: u64,
    /// Machines beyond `nodes` that membership changes may add.
    pub spares: usize,
    /// Per tick: a membership change or leadership transfer is asked for.
    pub membership_pm: u32,
    /// Exactly-once sessions expire after this long (the sim's wall clock
    /// runs 10 ms a tick).
    pub session_ttl_ms: u64,
    /// How leaders confirm reads. Lease mode assumes bounded clock drift,
    /// so there a node skips at most one tick in `LEASE_SKIP_SPACING`
    /// (10%, the default bound) instead of any tick with 3% chance.
    pub read_mode: ReadMode,
}

/// Lease mode: least ticks between two skipped ticks of one node.
const LEASE_SKIP_SPACING: u64 = 10;

impl Options {
    pub fn shape(nodes: usize, seed: u64) -> Options {
        Options {
            nodes,
            chaos_ticks: 1500 + seed % 500,
            heal_ticks: 3000,
            clients: 4,
            keys: 3,
            drop_pm: 30,
            dup_pm: 20,
            max_delay: 4,
            kill_pm: 2 + (seed % 3) as u32,
            power_pm: 2 + (seed % 4) as u32,
            partition_pm: 4,
            stall_pm: 1,
            full_pm: 1,
            corrupt_snapshot_pm: 100,
            persist_pm: 300 + (seed % 5) as u32 * 120,
            snapshot_threshold: 15 + seed % 30,
            snapshot_log_bytes: if seed.is_multiple_of(3) {
                300
            } else {
                u64::MAX
            },
            log_cache_bytes: if seed.is_multiple_of(2) { 500 } else { 8 << 20 },
            spares: 0,
            membership_pm: 0,
            session_ttl_ms: ApiConfig::default().session_ttl_ms,
            read_mode: ReadMode::Index,
        }
    }
}

/// Every key's value on one node.
type KeyValues = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// Ticks of a replica's request timeout, and how long a client waits at most.
const REQUEST_TIMEOUT: u64 = 150;
const CLIENT_TIMEOUT: u64 = 250;

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub ticks: u64,
    pub delivered: u64,
    pub kills: u64,
    pub power_losses: u64,
    pub mid_batch_crashes: u64,
    pub stalls: u64,
    pub disk_fulls: u64,
    pub stepdowns_disk: u64,
    pub snapshots_sent: u64,
    pub snapshots_corrupted: u64,
    pub snapshots_decoded: u64,
    /// Entries read back from the WAL (the core no longer held them).
    pub entry_reads: u64,
    pub writes_ok: u64,
    pub writes_failed: u64,
    pub writes_unknown: u64,
    pub reads_ok: u64,
    pub leaders: u64,
    pub refused: u64,
    pub membership_changes: u64,
    pub max_commit: LogIndex,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.ticks += o.ticks;
        self.delivered += o.delivered;
        self.kills += o.kills;
        self.power_losses += o.power_losses;
        self.mid_batch_crashes += o.mid_batch_crashes;
        self.stalls += o.stalls;
        self.disk_fulls += o.disk_fulls;
        self.stepdowns_disk += o.stepdowns_disk;
        self.snapshots_sent += o.snapshots_sent;
        self.snapshots_corrupted += o.snapshots_corrupted;
        self.snapshots_decoded += o.snapshots_decoded;
        self.entry_reads += o.entry_reads;
        self.writes_ok += o.writes_ok;
        self.writes_failed += o.writes_failed;
        self.writes_unknown += o.writes_unknown;
        self.reads_ok += o.reads_ok;
        self.leaders += o.leaders;
        self.refused += o.refused;
        self.membership_changes += o.membership_changes;
        self.max_commit = self.max_commit.max(o.max_commit);
    }
}

/// A running node: the replica, its storage and the work queued for it.
pub struct Up {
    pub replica: Replica,
    storage: Storage,
    writer: SnapshotWriter,
    jobs: VecDeque<StorageJob>,
    saves: VecDeque<titanstore_core::types::Snapshot>,
    /// Received images waiting for the decode thread (lost in a crash).
    decodes: VecDeque<Message>,
    /// What the replica was told about a full disk (as the storage thread does).
    full: DiskFull,
}

/// One simulated machine.
pub struct Node {
    pub id: NodeId,
    pub fs: SimFs,
    dir: PathBuf,
    pub up: Option<Up>,
    stalled_until: u64,
    /// The tick it last skipped (see `Options::read_mode`).
    last_skip: u64,
    /// Its disk is full until this tick (0: not full).
    full_until: u64,
    /// Crash during the next storage batch: (operations allowed, power loss?).
    crash_in_batch: Option<(u64, bool)>,
    pub refused: Option<String>,
    /// Not started unless a membership change adds it.
    pub spare: bool,
    /// Boots with no configuration and waits for the leader (a new member).
    joining: bool,
    /// A joined node's incarnation (as `<data dir>/incarnation` keeps it).
    pub incarnation: Option<u64>,
}

struct InFlight {
    at: u64,
    msg: Message,
}

/// One client operation in the history.
struct HistOp {
    op: Op,
    node: usize,
    sent_tick: u64,
    done: bool,
    /// For SETs: the (unique) value written.
    set_value: Option<Vec<u8>>,
    /// The reply as sent on the wire.
    reply: Option<String>,
}

pub struct Sim {
    rng: SmallRng,
    pub opts: Options,
    pub now: u64,
    /// Orders every call and return in the history.
    clock: f64,
    pub nodes: Vec<Node>,
    pub membership: ClusterConfig,
    net: Vec<InFlight>,
    cut: BTreeSet<(usize, usize)>,
    chaos: bool,
    /// Per client: the history index of its operation in flight.
    busy: Vec<Option<usize>>,
    history: Vec<HistOp>,
    by_token: HashMap<Token, usize>,
    next_token: Token,
    next_value: u64,
    /// The committed log as applied by the nodes: every node must agree.
    committed: BTreeMap<LogIndex, Entry>,
    leaders: BTreeMap<Term, NodeId>,
    /// Disk stalls apply even outside the chaos phase (scripted stalls).
    chaos_disk: bool,
    admin_replies: HashMap<Token, Option<String>>,
    pub stats: Stats,
    /// Release 2 clients (counters over REQ + CAS, watchers).
    pub api: ApiClients,
    /// Received snapshot images wait, undecoded, while this is set.
    pub hold_decodes: bool,
}

fn membership(n: usize) -> ClusterConfig {
    let ids: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
    let mut config = ClusterConfig::default();
    for id in ids {
        config.voters.insert(
            id.clone(),
            titanstore_core::types::MemberAddr {
                raft_addr: format!("{id}:1"),
                client_addr: format!("{id}:2"),
            },
        );
    }
    config
}

impl Sim {
    pub fn new(seed: u64, opts: Options) -> Result<Sim, String> {
        let rng = SmallRng::seed_from_u64(seed);
        let membership = membership(opts.nodes);
        let nodes = (1..=opts.nodes + opts.spares)
            .map(|i| {
                let id = format!("n{i}");
                Node {
                    dir: PathBuf::from(format!("/data/{id}")),
                    id,
                    fs: SimFs::new(),
                    up: None,
                    stalled_until: 0,
                    last_skip: 0,
                    full_until: 0,
                    crash_in_batch: None,
                    refused: None,
                    spare: i > opts.nodes,
                    joining: false,
                    incarnation: None,
                }
            })
            .collect();
        let clients = opts.clients;
        let mut sim = Sim {
            rng,
            opts,
            now: 0,
            clock: 0.0,
            nodes,
            membership,
            net: Vec::new(),
            cut: BTreeSet::new(),
            chaos: true,
            busy: vec![None; clients],
            history: Vec::new(),
            by_token: HashMap::new(),
            next_token: 1,
            next_value: 1,
            committed: BTreeMap::new(),
            leaders: BTreeMap::new(),
            chaos_disk: false,
            admin_replies: HashMap::new(),
            stats: Stats::default(),
            api: ApiClients::default(),
            hold_decodes: false,
        };
        for i in 0..sim.nodes.len() {
            if !sim.nodes[i].spare {
                sim.start(i)?;
            }
        }
        Ok(sim)
    }

    fn pm(&mut self, pm: u32) -> bool {
        pm > 0 && self.rng.random_range(0..1000) < pm
    }

    /// Boots node `i` from whatever its disk holds, exactly as the server does.
    pub fn start(&mut self, i: usize) -> Result<(), String> {
        let node = &mut self.nodes[i];
        if node.up.is_some() || node.refused.is_some() {
            return Ok(());
        }
        let options = StorageOptions {
            segment_bytes: 4096,
            recovered_entry_bytes: self.opts.log_cache_bytes,
        };
        let (storage, recovered) = Storage::open(Arc::new(node.fs.clone()), &node.dir, options)
            .map_err(|e| format!("{}: recovery failed: {e}", node.id))?;
        let mut raft = RaftConfig::new(node.id.clone());
        raft.election_timeout_min_ticks = 15;
        raft.election_timeout_max_ticks = 30;
        raft.heartbeat_ticks = 4;
        raft.seed = self.rng.random();
        raft.incarnation = self.rng.random();
        raft.bootstrap_grace_ticks = 100;
        raft.member_incarnation = node.incarnation;
        raft.read_mode = self.opts.read_mode;
        raft.log_cache_bytes = self.opts.log_cache_bytes;
        let replica = ReplicaConfig {
            id: node.id.clone(),
            advertise_client_addr: format!("{}:2", node.id),
            snapshot_threshold: self.opts.snapshot_threshold,
            // Values in the simulation are short: a few hundred bytes of
            // them also trigger a snapshot, as big values do for real.
            snapshot_log_bytes: self.opts.snapshot_log_bytes,
            // A few keys a tick: images are written across ticks while
            // entries are applied, as a big map's are for real.
            snapshot_slice_keys: 3,
            request_timeout_ticks: REQUEST_TIMEOUT,
            disk_stall_ticks: 120,
            record_applied: true,
            seed: self.rng.random(),
            api: ApiConfig {
                watch_progress_ticks: 50,
                watch_history: 400,
                // Values are short here: both bounds trim.
                watch_history_bytes: 3000,
                watch_catch_up_per_tick: 64,
                session_ttl_ms: self.opts.session_ttl_ms,
            },
        };
        let membership = if node.joining {
            ClusterConfig::default()
        } else {
            self.membership.clone()
        };
        let replica = boot(raft, replica, membership, recovered)
            .map_err(|e| format!("{}: boot failed: {e}", node.id))?;
        let writer = storage.snapshot_writer();
        node.up = Some(Up {
            replica,
            storage,
            writer,
            jobs: VecDeque::new(),
            saves: VecDeque::new(),
            decodes: VecDeque::new(),
            full: DiskFull::default(),
        });
        Ok(())
    }

    /// Stops node `i`: the process dies; with `power` the machine loses power too.
    pub fn crash(&mut self, i: usize, power: bool) {
        let seed = self.rng.random();
        let node = &mut self.nodes[i];
        if node.up.take().is_none() {
            return;
        }
        node.crash_in_batch = None;
        // The operator made room before restarting it (recovery writes too).
        node.fs.set_capacity(None);
        node.full_until = 0;
        if std::env::var("SIM_TRACE").is_ok() {
            eprintln!("t={} crash {} power={power}", self.now, node.id);
        }
        if power {
            node.fs.crash(seed);
            self.stats.power_losses += 1;
        } else {
            node.fs.kill_process();
            self.stats.kills += 1;
        }
        self.api.on_crash(i);
        // Whatever the clients of this node were waiting for is now unknown.
        for h in self.history.iter_mut().filter(|h| h.node == i && !h.done) {
            h.done = true;
            h.op.outcome = Outcome::Unknown;
        }
        for slot in self.busy.iter_mut() {
            if slot.is_some_and(|h| self.history[h].node == i) {
                *slot = None;
            }
        }
        self.net.retain(|m| m.msg.to != self.nodes[i].id);
    }

    /// Chaos phase, then heal and require convergence; then all checks.
    pub fn run(&mut self) -> Result<(), String> {
        for _ in 0..self.opts.chaos_ticks {
            self.chaos_events();
            self.step()?;
        }
        self.heal()?;
        self.check_history()
    }

    fn chaos_events(&mut self) {
        let n = self.nodes.len();
        // Runs with membership changes let the bootstrap finish in peace: a
        // founder cut off for the whole grace period is (rightly) refused
        // for good, and membership changes can then leave no quorum.
        if self.opts.membership_pm > 0 && self.calm() {
            return;
        }
        if self.pm(self.opts.kill_pm + self.opts.power_pm) {
            let i = self.rng.random_range(0..n);
            // With membership changes the cluster may shrink to two voters:
            // a node that loses everything before it ever stored a term is
            // (rightly) refused forever, and then no quorum is left to
            // replace it. Those runs keep new nodes alive until they hold state.
            let fresh = self.nodes[i]
                .up
                .as_ref()
                .is_some_and(|u| u.storage.hard_state().term == 0);
            if self.opts.membership_pm > 0 && fresh {
                return;
            }
            let power = self
                .rng
                .random_range(0..self.opts.kill_pm + self.opts.power_pm)
                >= self.opts.kill_pm;
            if self.rng.random_bool(0.3) {
                // In the middle of the node's next storage batch.
                let ops = self.rng.random_range(0..6);
                self.nodes[i].crash_in_batch = Some((ops, power));
            } else {
                self.crash(i, power);
            }
        }
        if self.pm(self.opts.membership_pm) {
            self.membership_event();
        }
        for i in 0..n {
            if self.nodes[i].up.is_none() && !self.nodes[i].spare && self.pm(30) {
                // A failed boot is a finding: recovery must always work.
                if let Err(e) = self.start(i) {
                    panic!("{e}");
                }
            }
        }
        if self.pm(self.opts.partition_pm) {
            self.cut.clear();
            let leader = self.leader();
            let side: Vec<bool> = (0..n).map(|_| self.rng.random_bool(0.4)).collect();
            let mut side = side;
            if let Some(l) = leader
                && self.rng.random_bool(0.5)
            {
                // The old leader keeps a minority.
                for (j, s) in side.iter_mut().enumerate() {
                    *s = j == l || (j + 1) % n == l && n == 5;
                }
            }
            for a in 0..n {
                for b in 0..n {
                    if side[a] != side[b] {
                        self.cut.insert((a, b));
                    }
                }
            }
        }
        if self.pm(self.opts.partition_pm / 2) {
            let (a, b) = (self.rng.random_range(0..n), self.rng.random_range(0..n));
            self.cut.insert((a, b));
        }
        if self.pm(self.opts.partition_pm * 2) {
            self.cut.clear();
        }
        if self.pm(self.opts.stall_pm) {
            let i = self.rng.random_range(0..n);
            let len = self.rng.random_range(50..400);
            self.nodes[i].stalled_until = self.now + len;
            self.stats.stalls += 1;
        }
        if self.pm(self.opts.full_pm) {
            let i = self.rng.random_range(0..n);
            if self.nodes[i].up.is_some() && self.nodes[i].full_until == 0 {
                let slack = self.rng.random_range(0..2000);
                self.nodes[i].full_until = self.now + self.rng.random_range(50..400);
                let fs = &self.nodes[i].fs;
                fs.set_capacity(Some(fs.used_bytes() + slack));
                self.stats.disk_fulls += 1;
            }
        }
        for i in 0..n {
            if self.nodes[i].full_until != 0 && self.nodes[i].full_until <= self.now {
                self.free_disk(i);
            }
        }
    }

    /// Whether some founding node has not finished its bootstrap yet.
    fn calm(&self) -> bool {
        self.nodes.iter().any(|n| {
            n.up.as_ref()
                .is_some_and(|u| u.replica.raft_status().bootstrapping)
        })
    }

    /// Index of a node that is up and leads (the highest term wins).
    pub fn leader(&self) -> Option<usize> {
        let mut best: Option<(Term, usize)> = None;
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some(up) = &node.up {
                let s = up.replica.raft_status();
                if s.role == Role::Leader && best.is_none_or(|(t, _)| s.term > t) {
                    best = Some((s.term, i));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// One tick of the whole system.
    pub fn step(&mut self) -> Result<(), String> {
        self.now += 1;
        self.stats.ticks += 1;
        for i in 0..self.nodes.len() {
            let spaced = self.opts.read_mode == ReadMode::Index
                || self.now >= self.nodes[i].last_skip + LEASE_SKIP_SPACING;
            let skip = self.chaos && spaced && self.pm(30);
            if skip {
                self.nodes[i].last_skip = self.now;
            }
            if let Some(up) = self.nodes[i].up.as_mut()
                && !skip
            {
                // A wall clock of 10 ms per tick, for session expiry.
                up.replica.set_wall_clock(self.now * 10);
                up.replica.tick();
            }
        }
        self.poll_all()?;
        self.deliver()?;
        self.run_storage()?;
        self.run_decodes();
        self.run_clients()?;
        self.run_api_clients();
        self.poll_all()?;
        self.check_leaders()
    }

    fn deliver(&mut self) -> Result<(), String> {
        let now = self.now;
        let (due, later): (Vec<InFlight>, Vec<InFlight>) = std::mem::take(&mut self.net)
            .into_iter()
            .partition(|m| m.at <= now);
        self.net = later;
        for m in due {
            let (Some(from), Some(to)) = (self.index_of(&m.msg.from), self.index_of(&m.msg.to))
            else {
                continue;
            };
            // A partition also drops what was already on the wire.
            if self.cut.contains(&(from, to)) {
                continue;
            }
            if let Some(up) = self.nodes[to].up.as_mut() {
                up.replica.step(m.msg);
                self.stats.delivered += 1;
            }
        }
        self.poll_all()
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        // Ids are n1..nN, in order.
        let n: usize = id.strip_prefix('n')?.parse().ok()?;
        (1..=self.nodes.len()).contains(&n).then(|| n - 1)
    }

    /// Each node's decode thread: in chaos it takes a while (a big image),
    /// so messages and ticks go on meanwhile. It runs the runtime's own
    /// [`DecodedSnapshot::decode`].
    fn run_decodes(&mut self) {
        for i in 0..self.nodes.len() {
            let slow = self.hold_decodes || self.chaos && self.pm(700);
            let Some(up) = self.nodes[i].up.as_mut() else {
                continue;
            };
            if slow {
                continue;
            }
            if let Some(msg) = up.decodes.pop_front() {
                self.stats.snapshots_decoded += 1;
                up.replica.snapshot_decoded(DecodedSnapshot::decode(msg));
            }
        }
    }

    /// Each node's storage worker, when its disk is not stalled, runs its
    /// queued jobs with the server's own `write_batch`.
    fn run_storage(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].up.is_none()
                || self.nodes[i].stalled_until > self.now && (self.chaos || self.chaos_disk)
                || self.chaos && !self.pm(self.opts.persist_pm)
            {
                continue;
            }
            let crash = self.nodes[i].crash_in_batch.take();
            let node = &mut self.nodes[i];
            let Some(up) = node.up.as_mut() else {
                continue;
            };
            let mut reports = Vec::new();
            let batch: Vec<StorageJob> = up.jobs.drain(..).collect();
            if let Some((ops, _)) = crash {
                node.fs.fail_after(Some(ops));
            }
            let mut failed = false;
            if !batch.is_empty() {
                match write_batch(&mut up.storage, batch) {
                    Ok(outcome) => {
                        // Refused by a full disk: retried first, next time.
                        for job in outcome.unfinished.into_iter().rev() {
                            up.jobs.push_front(job);
                        }
                        reports.extend(up.full.reports(outcome.reports, outcome.no_space));
                    }
                    Err(_) if crash.is_some() => failed = true,
                    Err(e) => return Err(format!("{}: storage failed: {e}", node.id)),
                }
            }
            if !failed && let Some(snap) = up.saves.pop_front() {
                match up.writer.save(&snap) {
                    Ok(_) => reports.push(StorageDone::SnapshotSaved(snap.meta)),
                    Err(_) if crash.is_some() => {}
                    Err(e) if e.is_no_space() => {
                        reports.push(StorageDone::SnapshotFailed(e.to_string()))
                    }
                    Err(e) => return Err(format!("{}: snapshot save failed: {e}", node.id)),
                }
            }
            if let Some((_, power)) = crash {
                node.fs.fail_after(None);
                self.stats.mid_batch_crashes += 1;
                self.crash(i, power);
                continue;
            }
            let mut reads = 0;
            for report in reports {
                if let StorageDone::Read { entries, .. } = &report {
                    reads += entries.len() as u64;
                }
                up.replica
                    .storage_done(report)
                    .map_err(|e| format!("{}: {e}", node.id))?;
            }
            self.stats.entry_reads += reads;
        }
        self.poll_all()
    }

    fn run_clients(&mut self) -> Result<(), String> {
        let now = self.now;
        for c in 0..self.busy.len() {
            if let Some(h) = self.busy[c] {
                let hist = &mut self.history[h];
                if !hist.done && now.saturating_sub(hist.sent_tick) > CLIENT_TIMEOUT {
                    hist.done = true;
                    hist.op.outcome = Outcome::Unknown;
                    self.busy[c] = None;
                } else if hist.done {
                    self.busy[c] = None;
                }
                continue;
            }
            if !self.chaos || !self.pm(250) {
                continue;
            }
            let up: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].up.is_some())
                .collect();
            if up.is_empty() {
                continue;
            }
            // Clients mostly know the leader, sometimes ask anyone.
            let node = match self.leader() {
                Some(l) if self.rng.random_bool(0.7) => l,
                _ => up[self.rng.random_range(0..up.len())],
            };
            let key = format!("k{}", self.rng.random_range(0..self.opts.keys)).into_bytes();
            let roll = self.rng.random_range(0..10);
            let h = self.issue(node, key, roll);
            self.busy[c] = Some(h);
        }
        Ok(())
    }

    /// Sends one request for a client: 0..5 SET, 5 DELETE, else GET.
    fn issue(&mut self, node: usize, key: Vec<u8>, roll: u32) -> usize {
        let token = self.next_token;
        self.next_token += 1;
        self.clock += 1.0;
        let (request, kind, value, set_value) = if roll < 5 {
            let v = format!("v{}", self.next_value).into_bytes();
            self.next_value += 1;
            let req = Request::Set(Set {
                key: key.clone(),
                value: v.clone(),
            });
            (req, Kind::Write, Some(v.clone()), Some(v))
        } else if roll == 5 {
            (
                Request::Delete(Delete { key: key.clone() }),
                Kind::Write,
                None,
                None,
            )
        } else {
            (
                Request::Get(Get {
                    key: key.clone(),
                    stale: false,
                }),
                Kind::Read,
                None,
                None,
            )
        };
        let h = self.history.len();
        self.history.push(HistOp {
            op: Op {
                kind,
                key,
                value,
                expected: None,
                call: self.clock,
                ret: f64::INFINITY,
                outcome: Outcome::Unknown,
            },
            node,
            sent_tick: self.now,
            done: false,
            set_value,
            reply: None,
        });
        self.by_token.insert(token, h);
        if let Some(up) = self.nodes[node].up.as_mut() {
            up.replica.request(token, request);
        }
        h
    }

    /// Collects every node's effects until none are left.
    fn poll_all(&mut self) -> Result<(), String> {
        for _ in 0..100 {
            let mut any = false;
            for i in 0..self.nodes.len() {
                let Some(up) = self.nodes[i].up.as_mut() else {
                    continue;
                };
                let mut effects = Vec::new();
                let polled = up.replica.poll(&mut effects);
                // Freed at once here; the runtime frees it on another thread.
                drop(up.replica.take_garbage());
                let applied = up.replica.take_applied();
                if let Err(e) = polled {
                    let msg = e.to_string();
                    if msg.contains("refusing to take part") {
                        if std::env::var("SIM_TRACE").is_ok() {
                            eprintln!("t={} {} refused: {msg}", self.now, self.nodes[i].id);
                        }
                        self.stats.refused += 1;
                        self.nodes[i].refused = Some(msg);
                        self.crash(i, false);
                        continue;
                    }
                    return Err(format!("{}: node stopped: {msg}", self.nodes[i].id));
                }
                self.check_applied(i, applied)?;
                any |= !effects.is_empty();
                for effect in effects {
                    self.on_effect(i, effect);
                }
            }
            if !any {
                return Ok(());
            }
        }
        Err("effects never drain".into())
    }

    fn on_effect(&mut self, i: usize, effect: Effect) {
        match effect {
            Effect::Send(msg) => self.send(i, msg),
            Effect::Persist(job) => {
                if let Some(up) = self.nodes[i].up.as_mut() {
                    up.jobs.push_back(job);
                }
            }
            Effect::SaveSnapshot(snap) => {
                if let Some(up) = self.nodes[i].up.as_mut() {
                    up.saves.push_back(snap);
                }
            }
            Effect::Reply { token, reply } if self.api.owns(token) => {
                self.api.on_reply(token, reply)
            }
            Effect::Reply { token, reply } => self.on_reply(token, reply),
            Effect::Watch { token, event } => self.api.on_watch_event(token, event),
            Effect::DecodeSnapshot(msg) => {
                if let Some(up) = self.nodes[i].up.as_mut() {
                    up.decodes.push_back(msg);
                }
            }
        }
    }

    fn on_reply(&mut self, token: Token, reply: Reply) {
        if let Some(slot) = self.admin_replies.get_mut(&token) {
            let mut wire = Vec::new();
            reply.encode(&mut wire);
            *slot = Some(String::from_utf8_lossy(&wire).trim().to_string());
            return;
        }
        let Some(h) = self.by_token.remove(&token) else {
            return;
        };
        let hist = &mut self.history[h];
        if hist.done {
            return;
        }
        self.clock += 1.0;
        hist.done = true;
        hist.op.ret = self.clock;
        let mut wire = Vec::new();
        reply.encode(&mut wire);
        hist.reply = Some(String::from_utf8_lossy(&wire).trim().to_string());
        hist.op.outcome = match (&hist.op.kind, &reply) {
            (Kind::Write, Reply::Ok) => {
                self.stats.writes_ok += 1;
                Outcome::Ok
            }
            (Kind::Write, Reply::Unknown(_)) => {
                self.stats.writes_unknown += 1;
                hist.op.ret = f64::INFINITY;
                Outcome::Unknown
            }
            (Kind::Write, _) => {
                self.stats.writes_failed += 1;
                Outcome::Fail
            }
            (Kind::Read, Reply::Value(v)) => {
                hist.op.value = Some(v.clone());
                self.stats.reads_ok += 1;
                Outcome::Ok
            }
            (Kind::Read, Reply::NotFound) => {
                hist.op.value = None;
                self.stats.reads_ok += 1;
                Outcome::Ok
            }
            (Kind::Read, _) => Outcome::Fail,
            // The simulation's own clients send no CAS (its API clients check
            // their counters against the log instead).
            (Kind::Cas | Kind::CasConflict, _) => Outcome::Fail,
        };
    }

    /// The network: snapshot images are read from the sender's disk (as the
    /// transport does) and sometimes damaged on the way.
    fn send(&mut self, from: usize, mut msg: Message) {
        let Some(to) = self.index_of(&msg.to) else {
            return;
        };
        if let MessageBody::InstallSnapshot { meta, data, .. } = &mut msg.body {
            let Some(up) = self.nodes[from].up.as_ref() else {
                return;
            };
            match up.storage.load_snapshot() {
                Ok(Some(snap)) if snap.meta.last_index >= meta.last_index => {
                    *meta = snap.meta;
                    *data = snap.data;
                }
                _ => return,
            }
            self.stats.snapshots_sent += 1;
            if std::env::var("SIM_TRACE").is_ok() {
                eprintln!(
                    "t={} SNAP {} -> {} index {}",
                    self.now, self.nodes[from].id, self.nodes[to].id, meta.last_index
                );
            }
            if self.chaos && self.pm(self.opts.corrupt_snapshot_pm) && !data.is_empty() {
                let at = self.rng.random_range(0..data.len());
                data[at] ^= 0x5a;
                self.stats.snapshots_corrupted += 1;
            }
        }
        let calm = self.opts.membership_pm > 0 && self.calm();
        if self.cut.contains(&(from, to)) || self.chaos && !calm && self.pm(self.opts.drop_pm) {
            return;
        }
        let copies = if self.chaos && self.pm(self.opts.dup_pm) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.rng.random_range(1..=self.opts.max_delay.max(1));
            self.net.push(InFlight {
                at: self.now + delay,
                msg: msg.clone(),
            });
        }
    }

    /// Every node applies the same entry at each index.
    fn check_applied(&mut self, i: usize, applied: Vec<Entry>) -> Result<(), String> {
        for e in applied {
            self.stats.max_commit = self.stats.max_commit.max(e.index);
            match self.committed.get(&e.index) {
                Some(c) if *c != e => {
                    return Err(format!(
                        "{} applied {e:?} at {} but another node applied {c:?}",
                        self.nodes[i].id, e.index
                    ));
                }
                Some(_) => {}
                None => {
                    self.committed.insert(e.index, e);
                }
            }
        }
        Ok(())
    }

    fn check_leaders(&mut self) -> Result<(), String> {
        for node in &self.nodes {
            let Some(up) = &node.up else { continue };
            let s = up.replica.raft_status();
            if s.role != Role::Leader {
                continue;
            }
            match self.leaders.get(&s.term) {
                Some(other) if *other != node.id => {
                    return Err(format!(
                        "two leaders in term {}: {other} and {}",
                        s.term, node.id
                    ));
                }
                Some(_) => {}
                None => {
                    if std::env::var("SIM_TRACE").is_ok() {
                        eprintln!(
                            "t={} leader {} term {} config {:?} last {}",
                            self.now,
                            node.id,
                            s.term,
                            up.replica.config().voters.keys().collect::<Vec<_>>(),
                            s.last_index
                        );
                    }
                    self.leaders.insert(s.term, node.id.clone());
                    self.stats.leaders += 1;
                }
            }
        }
        Ok(())
    }

    /// Heals everything and waits until the cluster commits a new write and
    /// every running node has applied it; then reads every key on every node.
    fn heal(&mut self) -> Result<(), String> {
        self.chaos = false;
        self.cut.clear();
        for i in 0..self.nodes.len() {
            self.nodes[i].stalled_until = 0;
            self.free_disk(i);
            self.nodes[i].crash_in_batch = None;
            if !self.nodes[i].spare {
                self.start(i)?;
            }
        }
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up.is_some())
            .collect();
        if up.len() * 2 <= self.nodes.len() {
            // Too many nodes refused (lost their data before the bootstrap): no quorum.
            return Ok(());
        }
        let mut marker: Option<usize> = None;
        for _ in 0..self.opts.heal_ticks {
            self.step()?;
            for c in 0..self.busy.len() {
                if self.busy[c].is_some_and(|h| self.history[h].done) {
                    self.busy[c] = None;
                }
            }
            match marker {
                Some(h) if self.history[h].done && self.history[h].op.outcome == Outcome::Ok => {
                    let last = self.committed.keys().last().copied().unwrap_or(0);
                    // The members now: removed nodes stay out of it.
                    let up: Vec<usize> = match self.leader() {
                        Some(l) => {
                            let config = self.nodes[l].up.as_ref().unwrap().replica.config();
                            up.iter()
                                .copied()
                                .filter(|&i| config.is_member(&self.nodes[i].id))
                                .collect()
                        }
                        None => continue,
                    };
                    let all = up.iter().all(|&i| {
                        self.nodes[i]
                            .up
                            .as_ref()
                            .is_some_and(|u| u.replica.kv().applied_index() >= last)
                    });
                    if all {
                        return self.final_reads(&up);
                    }
                }
                Some(h) if self.history[h].done || self.now.is_multiple_of(200) => marker = None,
                None => {
                    if let Some(l) = self.leader() {
                        marker = Some(self.issue(l, b"marker".to_vec(), 0));
                    }
                }
                _ => {}
            }
        }
        let states: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|n| {
                n.up.as_ref()
                    .map(|u| format!("{:?}", u.replica.raft_status()))
            })
            .collect();
        let others: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.up.is_none())
            .map(|n| format!("{} spare={} refused={}", n.id, n.spare, n.refused.is_some()))
            .collect();
        Err(format!(
            "no convergence after healing: {states:#?}\ndown: {others:?}"
        ))
    }

    fn final_reads(&mut self, up: &[usize]) -> Result<(), String> {
        let digests: Vec<(String, KeyValues)> = up
            .iter()
            .map(|&i| {
                let kv = self.nodes[i].up.as_ref().unwrap().replica.kv();
                let keys = (0..self.opts.keys)
                    .map(|k| {
                        let key = format!("k{k}").into_bytes();
                        let v = kv.get(&key).map(<[u8]>::to_vec);
                        (key, v)
                    })
                    .collect();
                (self.nodes[i].id.clone(), keys)
            })
            .collect();
        if let Some((first, rest)) = digests.split_first() {
            for other in rest {
                if other.1 != first.1 {
                    return Err(format!(
                        "state diverges after healing: {first:?} vs {other:?}"
                    ));
                }
            }
        }
        for &i in up {
            for k in 0..self.opts.keys {
                let key = format!("k{k}").into_bytes();
                let h = self.issue(i, key, 9);
                for _ in 0..200 {
                    if self.history[h].done {
                        break;
                    }
                    self.step()?;
                }
            }
        }
        Ok(())
    }

    /// The client-visible checks over the whole history.
    fn check_history(&mut self) -> Result<(), String> {
        let applied_sets: HashMap<Vec<u8>, LogIndex> = self
            .committed
            .values()
            .filter_map(|e| match &*e.payload {
                EntryPayload::Command(Command::Set { value, .. }) => Some((value.clone(), e.index)),
                _ => None,
            })
            .collect();
        for h in &self.history {
            let Some(v) = &h.set_value else { continue };
            let applied = applied_sets.get(v);
            match (h.op.outcome, applied) {
                (Outcome::Ok, None) => {
                    return Err(format!(
                        "write {} = {} was acknowledged but is not in the committed log",
                        String::from_utf8_lossy(&h.op.key),
                        String::from_utf8_lossy(v)
                    ));
                }
                (Outcome::Fail, Some(index)) => {
                    return Err(format!(
                        "write {} = {} was answered {:?} but applied at {index}",
                        String::from_utf8_lossy(&h.op.key),
                        String::from_utf8_lossy(v),
                        h.reply.as_deref().unwrap_or("-"),
                    ));
                }
                _ => {}
            }
        }
        let ops: Vec<Op> = self
            .history
            .iter()
            .filter(|h| h.op.key != b"marker")
            .map(|h| h.op.clone())
            .collect();
        for report in checker::check(&ops, None) {
            match report.verdict {
                Verdict::Ok => {}
                Verdict::Violation | Verdict::Unknown => {
                    return Err(format!(
                        "history of key {} is {}: {}",
                        String::from_utf8_lossy(&report.key),
                        report.verdict.as_str(),
                        report.explanation
                    ));
                }
            }
        }
        Ok(())
    }

    /// One random membership change or transfer, asked of the leader.
    fn membership_event(&mut self) {
        let Some(l) = self.leader() else { return };
        let config = self.nodes[l].up.as_ref().unwrap().replica.config();
        let committed = self.nodes[l]
            .up
            .as_ref()
            .unwrap()
            .replica
            .committed_config();
        let request = match self.rng.random_range(0..4) {
            0 => {
                // The operator wipes only a machine whose removal is
                // committed (a wiped member would be lost data, not a new node).
                let outside: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| {
                        !config.is_member(&self.nodes[i].id)
                            && !committed.is_member(&self.nodes[i].id)
                    })
                    .collect();
                if outside.is_empty() {
                    return;
                }
                let i = outside[self.rng.random_range(0..outside.len())];
                // A new member starts on an empty disk (a removed id comes
                // back only that way).
                self.make_joining(i);
                let id = self.nodes[i].id.clone();
                let member = MemberSpec::parse(&format!("{id}:{id}:1:2")).unwrap();
                Request::Member(Member::Add {
                    member,
                    learner: self.rng.random_bool(0.3),
                    incarnation: self.nodes[i].incarnation,
                })
            }
            1 => {
                let learners: Vec<String> = config.learners.keys().cloned().collect();
                if learners.is_empty() {
                    return;
                }
                let id = learners[self.rng.random_range(0..learners.len())].clone();
                Request::Member(Member::Promote { id })
            }
            2 => {
                let members: Vec<String> = config.members().map(|(id, _, _)| id.clone()).collect();
                if members.len() <= 2 {
                    return;
                }
                let id = members[self.rng.random_range(0..members.len())].clone();
                Request::Member(Member::Remove { id })
            }
            _ => {
                let voters: Vec<String> = config.voters.keys().cloned().collect();
                let target = self
                    .rng
                    .random_bool(0.7)
                    .then(|| voters[self.rng.random_range(0..voters.len())].clone());
                Request::Transfer(Transfer { target })
            }
        };
        self.stats.membership_changes += 1;
        if std::env::var("SIM_TRACE").is_ok() {
            eprintln!("t={} admin to {}: {request:?}", self.now, self.nodes[l].id);
        }
        self.admin(l, request);
    }

    /// Sends an admin request (membership, transfer) outside the history.
    pub fn admin(&mut self, i: usize, request: Request) -> Token {
        let token = self.next_token;
        self.next_token += 1;
        self.admin_replies.insert(token, None);
        if let Some(up) = self.nodes[i].up.as_mut() {
            up.replica.request(token, request);
        }
        let _ = self.poll_all();
        token
    }

    /// The reply to an admin request, once it came.
    pub fn admin_reply(&self, token: Token) -> Option<&str> {
        self.admin_replies.get(&token).and_then(|r| r.as_deref())
    }

    // ----- scripted scenarios -----

    /// A cluster with no random faults and no random clients: the test
    /// decides every partition, election and request.
    pub fn quiet(seed: u64, nodes: usize) -> Sim {
        Sim::quiet_with(seed, nodes, |_| {})
    }

    /// [`Sim::quiet`] with options changed by `tune`.
    pub fn quiet_with(seed: u64, nodes: usize, tune: impl FnOnce(&mut Options)) -> Sim {
        let mut opts = Options {
            chaos_ticks: 0,
            kill_pm: 0,
            power_pm: 0,
            partition_pm: 0,
            stall_pm: 0,
            full_pm: 0,
            corrupt_snapshot_pm: 0,
            drop_pm: 0,
            dup_pm: 0,
            max_delay: 1,
            snapshot_threshold: 1000,
            ..Options::shape(nodes, seed)
        };
        tune(&mut opts);
        let mut sim = Sim::new(seed, opts).unwrap();
        sim.chaos = false;
        sim
    }

    /// Only these links (both directions) carry messages.
    pub fn links(&mut self, allowed: &[(usize, usize)]) {
        let n = self.nodes.len();
        self.cut.clear();
        for a in 0..n {
            for b in 0..n {
                if a != b && !allowed.contains(&(a, b)) && !allowed.contains(&(b, a)) {
                    self.cut.insert((a, b));
                }
            }
        }
    }

    /// Turns the random parts (drops, skipped ticks, clients, damage) on or off.
    pub fn set_chaos(&mut self, on: bool) {
        self.chaos = on;
    }

    /// Keeps only snapshot damage among the random faults.
    pub fn set_faults_off(&mut self) {
        let o = &mut self.opts;
        (o.kill_pm, o.power_pm, o.partition_pm, o.stall_pm) = (0, 0, 0, 0);
        o.full_pm = 0;
        (o.drop_pm, o.dup_pm, o.persist_pm) = (0, 0, 1000);
    }

    pub fn connect_all(&mut self) {
        self.cut.clear();
    }

    pub fn ticks(&mut self, n: u64) {
        for _ in 0..n {
            self.step().unwrap();
        }
    }

    /// Steps until `pred` holds, at most `max` ticks; whether it did.
    pub fn until(&mut self, max: u64, pred: impl Fn(&Sim) -> bool) -> bool {
        for _ in 0..max {
            if pred(self) {
                return true;
            }
            self.step().unwrap();
        }
        pred(self)
    }

    pub fn campaign(&mut self, i: usize) {
        if let Some(up) = self.nodes[i].up.as_mut() {
            up.replica.campaign();
        }
        self.poll_all().unwrap();
    }

    pub fn role(&self, i: usize) -> Option<Role> {
        self.nodes[i]
            .up
            .as_ref()
            .map(|u| u.replica.raft_status().role)
    }

    /// Received snapshot images node `i` has not decoded yet.
    pub fn decodes_waiting(&self, i: usize) -> usize {
        self.nodes[i].up.as_ref().map_or(0, |u| u.decodes.len())
    }

    pub fn status(&self, i: usize) -> Option<titanstore_core::raft::Status> {
        self.nodes[i].up.as_ref().map(|u| u.replica.raft_status())
    }

    /// Sends `SET key value` to node `i`; returns the history index.
    pub fn write(&mut self, i: usize, key: &str, value: &str) -> usize {
        let token = self.next_token;
        self.next_token += 1;
        self.clock += 1.0;
        let h = self.history.len();
        self.history.push(HistOp {
            op: Op {
                kind: Kind::Write,
                key: key.as_bytes().to_vec(),
                value: Some(value.as_bytes().to_vec()),
                expected: None,
                call: self.clock,
                ret: f64::INFINITY,
                outcome: Outcome::Unknown,
            },
            node: i,
            sent_tick: self.now,
            done: false,
            set_value: Some(value.as_bytes().to_vec()),
            reply: None,
        });
        self.by_token.insert(token, h);
        if let Some(up) = self.nodes[i].up.as_mut() {
            up.replica.request(
                token,
                Request::Set(Set {
                    key: key.as_bytes().to_vec(),
                    value: value.as_bytes().to_vec(),
                }),
            );
        }
        self.poll_all().unwrap();
        h
    }

    /// The wire reply operation `h` got, if any.
    pub fn reply(&self, h: usize) -> Option<&str> {
        self.history[h].reply.as_deref()
    }

    pub fn outcome(&self, h: usize) -> Outcome {
        self.history[h].op.outcome
    }

    /// Whether some node applied a SET of `value`.
    pub fn applied(&self, value: &str) -> bool {
        self.committed.values().any(|e| {
            matches!(&*e.payload, EntryPayload::Command(Command::Set { value: v, .. }) if v == value.as_bytes())
        })
    }

    /// Starts spare machine `i` as a new, empty node waiting to be added.
    pub fn make_joining(&mut self, i: usize) {
        self.wipe(i);
        self.nodes[i].spare = false;
        self.nodes[i].joining = true;
        self.nodes[i].refused = None;
        self.nodes[i].incarnation = Some(self.rng.random::<u64>() | 1);
        self.start(i).unwrap();
    }

    /// The machine's disk is replaced by an empty one (node down first).
    pub fn wipe(&mut self, i: usize) {
        self.crash(i, false);
        self.nodes[i].fs = SimFs::new();
    }

    /// Node `i`'s disk refuses to grow (ENOSPC) until [`Sim::free_disk`].
    pub fn fill_disk(&mut self, i: usize) {
        let fs = &self.nodes[i].fs;
        fs.set_capacity(Some(fs.used_bytes()));
        self.nodes[i].full_until = u64::MAX;
    }

    /// Node `i`'s disk has room again.
    pub fn free_disk(&mut self, i: usize) {
        self.nodes[i].fs.set_capacity(None);
        self.nodes[i].full_until = 0;
    }

    /// Stalls node `i`'s disk for `ticks`.
    pub fn stall(&mut self, i: usize, ticks: u64) {
        self.nodes[i].stalled_until = self.now + ticks;
        self.chaos_disk = true;
    }

    /// Heals everything, converges, reads back and checks the whole history.
    pub fn finish(&mut self) -> Result<(), String> {
        self.heal()?;
        self.check_history()
    }

    /// STATUS of node `i` as a client would see it.
    pub fn status_line(&mut self, i: usize) -> Option<String> {
        let token = self.next_token;
        self.next_token += 1;
        let up = self.nodes[i].up.as_mut()?;
        up.replica.request(token, Request::Status(StatusCmd));
        let mut effects = Vec::new();
        let _ = up.replica.poll(&mut effects);
        effects.into_iter().find_map(|e| match e {
            Effect::Reply { token: t, reply } if t == token => {
                let mut out = Vec::new();
                reply.encode(&mut out);
                Some(String::from_utf8_lossy(&out).trim().to_string())
            }
            _ => None,
        })
    }
}

/// Runs `count` seeds from `base` (or just `NODE_SIM_SEED`; `NODE_SIM_SEEDS`
/// overrides the count), panicking with the line that replays a failing seed.
pub fn run_seeds(name: &str, base: u64, count: u64, opts: impl Fn(u64) -> Options) {
    let seeds: Vec<u64> = match std::env::var("NODE_SIM_SEED") {
        Ok(s) => vec![s.trim().parse().expect("NODE_SIM_SEED must be a u64")],
        Err(_) => {
            let count = std::env::var("NODE_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(count);
            (base..base + count).collect()
        }
    };
    let started = std::time::Instant::now();
    let mut total = Stats::default();
    let n = seeds.len();
    let mut small_caches = 0;
    for seed in seeds {
        let o = opts(seed);
        small_caches += u64::from(o.log_cache_bytes < 1000);
        let hint = format!(
            "replay: NODE_SIM_SEED={seed} cargo test -p titanstore-core --test replica_sim {name}"
        );
        let result = std::panic::catch_unwind(|| {
            let mut sim = Sim::new(seed, o.clone())?;
            sim.run().map(|()| sim.stats.clone())
        });
        match result {
            Ok(Ok(stats)) => total.add(&stats),
            Ok(Err(e)) => panic!("seed {seed} failed: {e}\n{hint}"),
            Err(_) => panic!("seed {seed} panicked\n{hint}"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{name}: {n} seeds in {secs:.1} s ({:.1} seeds/s): {total:?}",
        n as f64 / secs.max(1e-9)
    );
    assert!(
        small_caches < 10 || total.entry_reads > 0,
        "{small_caches} seeds kept few entries in memory, yet none was ever read back"
    );
}
