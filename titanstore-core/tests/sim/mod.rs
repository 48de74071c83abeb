//! Seeded cluster simulation for the Raft core: an in-memory network that
//! drops, delays, duplicates and reorders messages and partitions nodes;
//! crash-restarts from durable state only; snapshots and compaction; random
//! client writes and linearizable reads. Safety invariants are checked after
//! every tick; `run` ends with a healed-cluster liveness check.
#![allow(clippy::unwrap_used, dead_code)]

mod checks;
pub mod node;
mod runner;

pub use runner::run_seeds;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use titanstore_core::raft::{Message, MessageBody, ReadMode, Ready, Role};
use titanstore_core::types::{
    Command, Entry, EntryPayload, LogIndex, NodeId, Snapshot, SnapshotMeta, Term,
};

use node::{SimNode, digest_step};

/// Knobs of one simulation run.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub nodes: usize,
    /// Ticks of chaos before healing.
    pub chaos_ticks: u64,
    /// Ticks allowed for the healed cluster to commit a new write everywhere.
    pub liveness_ticks: u64,
    pub drop_pct: u32,
    pub dup_pct: u32,
    pub max_delay: u64,
    /// Core features (varied across seeds to get more contested elections).
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// Per-mille chance per tick that a node crashes / that a queued write completes.
    pub crash_pm: u32,
    pub persist_pm: u32,
    /// Lease mode needs `check_quorum`. Its clock assumption is kept: a
    /// node skips at most one tick in `LEASE_SKIP_SPACING` (10% drift, the
    /// default bound), instead of any tick with 5% chance.
    pub read_mode: ReadMode,
    /// The core's `log_cache_bytes`; a restarted node also leaves all but
    /// its last few entries on disk when it is small.
    pub log_cache_bytes: u64,
}

/// Lease mode: least ticks between two skipped ticks of one node.
const LEASE_SKIP_SPACING: u64 = 10;

struct InFlight {
    at: u64,
    msg: Message,
}

pub struct Sim {
    rng: SmallRng,
    opts: SimOptions,
    now: u64,
    nodes: Vec<SimNode>,
    index_of: HashMap<NodeId, usize>,
    net: Vec<InFlight>,
    /// Ordered pairs (from, to) whose messages are dropped.
    cut: BTreeSet<(usize, usize)>,
    chaos: bool,
    // ---- global history for the invariants ----
    leaders: BTreeMap<Term, NodeId>,
    committed: BTreeMap<LogIndex, Entry>,
    digests: BTreeMap<LogIndex, u64>,
    entry_at: HashMap<(LogIndex, Term), EntryPayload>,
    /// (node, request id) -> highest committed index when the read started.
    reads: HashMap<(usize, u64), LogIndex>,
    next_request: u64,
    next_value: u64,
    /// Tick each node last skipped (lease mode bounds the drift).
    last_skip: Vec<u64>,
    pub stats: Stats,
}

#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub delivered: u64,
    pub proposals: u64,
    pub reads_ok: u64,
    pub reads_failed: u64,
    pub crashes: u64,
    pub snapshots_sent: u64,
    /// Reads of entries the core no longer held in memory.
    pub fetches: u64,
    pub max_commit: LogIndex,
}

impl Sim {
    pub fn new(seed: u64, opts: SimOptions) -> Result<Self, String> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let ids: Vec<NodeId> = (1..=opts.nodes).map(|i| format!("n{i}")).collect();
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let config = crate::support::config_of(&id_refs);
        let mut nodes = Vec::new();
        for id in &ids {
            nodes.push(SimNode::new(id.clone(), &config, rng.random(), &opts)?);
        }
        Ok(Sim {
            rng,
            index_of: ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id.clone(), i))
                .collect(),
            opts,
            now: 0,
            nodes,
            net: Vec::new(),
            cut: BTreeSet::new(),
            chaos: true,
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            digests: BTreeMap::new(),
            entry_at: HashMap::new(),
            reads: HashMap::new(),
            next_request: 1,
            next_value: 1,
            last_skip: vec![0; ids.len()],
            stats: Stats::default(),
        })
    }

    /// Chaos phase, then heal and require progress.
    pub fn run(&mut self) -> Result<(), String> {
        for _ in 0..self.opts.chaos_ticks {
            self.chaos_events()?;
            self.step_tick()?;
        }
        self.check_log_matching()?;
        self.heal()?;
        self.check_liveness()?;
        self.check_log_matching()
    }

    fn pct(&mut self, pct: u32) -> bool {
        self.rng.random_range(0..1000) < pct * 10
    }

    fn per_mille(&mut self, pm: u32) -> bool {
        self.rng.random_range(0..1000) < pm
    }

    fn chaos_events(&mut self) -> Result<(), String> {
        let n = self.nodes.len();
        if self.per_mille(self.opts.crash_pm) {
            let i = self.rng.random_range(0..n);
            if self.nodes[i].raft.is_some() {
                self.nodes[i].crash();
                self.stats.crashes += 1;
            }
        }
        for i in 0..n {
            if self.nodes[i].raft.is_none() && self.per_mille(40) {
                let seed = self.rng.random();
                self.nodes[i].restart(seed, &self.opts)?;
            }
        }
        if self.per_mille(5) {
            // Random partition: a random minority or majority side.
            self.cut.clear();
            let side: Vec<bool> = (0..n).map(|_| self.rng.random_bool(0.4)).collect();
            for a in 0..n {
                for b in 0..n {
                    if side[a] != side[b] {
                        self.cut.insert((a, b));
                    }
                }
            }
        }
        if self.per_mille(3) {
            // One-way cut between two nodes.
            let (a, b) = (self.rng.random_range(0..n), self.rng.random_range(0..n));
            self.cut.insert((a, b));
        }
        if self.per_mille(8) {
            self.cut.clear();
        }
        Ok(())
    }

    fn heal(&mut self) -> Result<(), String> {
        self.chaos = false;
        self.cut.clear();
        for i in 0..self.nodes.len() {
            if self.nodes[i].raft.is_none() {
                let seed = self.rng.random();
                self.nodes[i].restart(seed, &self.opts)?;
            }
        }
        Ok(())
    }

    fn check_liveness(&mut self) -> Result<(), String> {
        let marker = Command::Set {
            key: b"liveness".to_vec(),
            value: b"marker".to_vec(),
        };
        let mut proposed_at: Option<u64> = None;
        for _ in 0..self.opts.liveness_ticks {
            self.step_tick()?;
            let done = self
                .committed
                .values()
                .find(|e| matches!(&*e.payload, EntryPayload::Command(c) if *c == marker));
            if let Some(e) = done {
                let index = e.index;
                if self.nodes.iter().all(|n| n.applied >= index) {
                    return Ok(());
                }
                continue;
            }
            if proposed_at.is_none_or(|t| self.now - t > 60) {
                for node in self.nodes.iter_mut() {
                    if let Some(raft) = node.raft.as_mut()
                        && raft.propose(marker.clone()).is_ok()
                    {
                        proposed_at = Some(self.now);
                    }
                }
            }
        }
        let states: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|n| n.raft.as_ref().map(|r| format!("{:?}", r.status())))
            .collect();
        Err(format!(
            "liveness: no new write committed everywhere after healing; {states:#?}"
        ))
    }

    /// One tick: timers, deliveries, persistence, clients, snapshots, checks.
    fn step_tick(&mut self) -> Result<(), String> {
        self.now += 1;
        let n = self.nodes.len();
        for i in 0..n {
            // Occasional skipped ticks model clock drift (bounded in lease
            // mode, whose safety assumes bounded drift).
            let spaced = self.opts.read_mode == ReadMode::Index
                || self.now >= self.last_skip[i] + LEASE_SKIP_SPACING;
            if self.chaos && spaced && self.per_mille(50) {
                self.last_skip[i] = self.now;
                continue;
            }
            if let Some(raft) = self.nodes[i].raft.as_mut() {
                raft.tick();
            }
        }
        self.drain_all()?;
        self.deliver()?;
        self.persist()?;
        self.clients()?;
        self.maybe_snapshot()?;
        self.drain_all()?;
        self.check_commits()
    }

    fn deliver(&mut self) -> Result<(), String> {
        let now = self.now;
        let mut due: Vec<InFlight> = Vec::new();
        let mut i = 0;
        while i < self.net.len() {
            if self.net[i].at <= now {
                due.push(self.net.swap_remove(i));
            } else {
                i += 1;
            }
        }
        // Random order: reordering on top of random delays.
        for k in (1..due.len()).rev() {
            let j = self.rng.random_range(0..=k);
            due.swap(k, j);
        }
        for InFlight { msg, .. } in due {
            let (Some(&from), Some(&to)) =
                (self.index_of.get(&msg.from), self.index_of.get(&msg.to))
            else {
                return Err(format!("message between unknown nodes: {msg:?}"));
            };
            if self.cut.contains(&(from, to)) {
                continue;
            }
            if let Some(raft) = self.nodes[to].raft.as_mut() {
                raft.step(msg);
                self.stats.delivered += 1;
                self.drain(to)?;
            }
        }
        Ok(())
    }

    fn send(&mut self, from: usize, mut msg: Message) {
        if let MessageBody::InstallSnapshot { meta, data, .. } = &mut msg.body {
            // The runtime fills the image from its snapshot file.
            match &self.nodes[from].disk.snapshot {
                Some(s) if s.meta == *meta => *data = s.data.clone(),
                _ => return,
            }
            self.stats.snapshots_sent += 1;
        }
        if self.chaos && self.pct(self.opts.drop_pct) {
            return;
        }
        let copies = if self.chaos && self.pct(self.opts.dup_pct) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.rng.random_range(0..=self.opts.max_delay);
            self.net.push(InFlight {
                at: self.now + delay,
                msg: msg.clone(),
            });
        }
    }

    fn persist(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            while !self.nodes[i].pending.is_empty()
                && (!self.chaos || self.per_mille(self.opts.persist_pm))
            {
                self.persist_one(i)?;
            }
            while !self.nodes[i].fetches.is_empty()
                && (!self.chaos || self.per_mille(self.opts.persist_pm))
            {
                self.answer_fetch(i);
            }
        }
        Ok(())
    }

    /// Makes the oldest handed-out Ready of node `i` durable, then reports it.
    fn persist_one(&mut self, i: usize) -> Result<(), String> {
        let Some(w) = self.nodes[i].pending.pop_front() else {
            return Ok(());
        };
        let node = &mut self.nodes[i];
        let mut snap_index = None;
        if let Some(snap) = w.snapshot {
            let index = snap.meta.last_index;
            node.applied = index;
            node.digest = node::decode_digest(&snap.data);
            if let Some(d) = self.digests.get(&index)
                && *d != node.digest
            {
                return Err(format!(
                    "{}: installed snapshot at {index} diverges",
                    node.id
                ));
            }
            node.disk.snapshot = Some(snap);
            node.disk.entries.clear();
            snap_index = Some(index);
        }
        node.disk.write_entries(&w.entries)?;
        if let Some(hs) = w.hard_state {
            node.disk.hard_state = hs;
        }
        let last = w.entries.last().map(|e| (e.index, e.term));
        for m in w.messages {
            self.send(i, m);
        }
        let node = &mut self.nodes[i];
        if let Some(raft) = node.raft.as_mut() {
            if let Some(index) = snap_index {
                raft.on_snapshot_persisted(w.seq, index);
            }
            if let Some((index, term)) = last {
                raft.on_persisted(w.seq, index, term);
            }
        }
        self.drain(i)
    }

    fn clients(&mut self) -> Result<(), String> {
        let n = self.nodes.len();
        if self.per_mille(300) {
            let i = self.rng.random_range(0..n);
            let value = self.next_value;
            if let Some(raft) = self.nodes[i].raft.as_mut() {
                let cmd = Command::Set {
                    key: format!("k{}", value % 7).into_bytes(),
                    value: value.to_string().into_bytes(),
                };
                if raft.propose(cmd).is_ok() {
                    self.next_value += 1;
                    self.stats.proposals += 1;
                }
            }
        }
        if self.per_mille(150) {
            let i = self.rng.random_range(0..n);
            let request = self.next_request;
            let floor = self.committed.keys().next_back().copied().unwrap_or(0);
            if let Some(raft) = self.nodes[i].raft.as_mut()
                && raft.read_index(request).is_ok()
            {
                self.next_request += 1;
                self.reads.insert((i, request), floor);
            }
        }
        Ok(())
    }

    fn maybe_snapshot(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            let node = &mut self.nodes[i];
            let Some(raft) = node.raft.as_mut() else {
                continue;
            };
            let applied = node.applied;
            // A snapshot install still being persisted supersedes our state.
            let installing = node.pending.iter().any(|w| w.snapshot.is_some());
            if installing || applied < node.disk.snapshot_index() + 8 || !self.rng.random_bool(0.1)
            {
                continue;
            }
            let Some(term) = node.shadow.term(applied) else {
                return Err(format!("{}: applied {applied} not in log", node.id));
            };
            let meta = SnapshotMeta {
                last_index: applied,
                last_term: term,
                config: raft.config().clone(),
            };
            let snap_index = node.disk.snapshot_index();
            node.disk
                .entries
                .drain(..(applied - snap_index).min(node.disk.entries.len() as u64) as usize);
            node.disk.snapshot = Some(Snapshot {
                meta: meta.clone(),
                data: node.digest.to_le_bytes().to_vec(),
            });
            raft.on_snapshot_taken(meta);
            if raft.status().snapshot_index != applied {
                return Err(format!("{}: core refused snapshot at {applied}", node.id));
            }
            node.shadow.compact(applied, term);
        }
        Ok(())
    }

    fn drain_all(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            self.drain(i)?;
        }
        Ok(())
    }

    /// Takes every Ready from node `i` and handles it like the runtime does.
    fn drain(&mut self, i: usize) -> Result<(), String> {
        for _ in 0..100 {
            let Some(raft) = self.nodes[i].raft.as_mut() else {
                return Ok(());
            };
            if !raft.has_ready() {
                return Ok(());
            }
            let rd = raft.ready();
            if rd.is_empty() {
                return Err(format!("{}: has_ready() but empty Ready", self.nodes[i].id));
            }
            self.handle_ready(i, rd)?;
        }
        Err(format!("{}: Ready never drains", self.nodes[i].id))
    }

    fn handle_ready(&mut self, i: usize, rd: Ready) -> Result<(), String> {
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
        } = rd;
        for m in messages {
            self.send(i, m);
        }
        let id = self.nodes[i].id.clone();
        if let Some(s) = &snapshot {
            let meta = &s.meta;
            self.nodes[i].shadow = node::ShadowLog {
                snap_index: meta.last_index,
                snap_term: meta.last_term,
                entries: Vec::new(),
            };
        }
        for e in &entries {
            match self.entry_at.get(&(e.index, e.term)) {
                Some(p) if *p != *e.payload => {
                    return Err(format!(
                        "log matching: {id} has a different entry at ({}, {})",
                        e.index, e.term
                    ));
                }
                Some(_) => {}
                None => {
                    self.entry_at
                        .insert((e.index, e.term), (*e.payload).clone());
                }
            }
        }
        self.nodes[i]
            .shadow
            .append(&entries)
            .map_err(|e| format!("{id}: {e}"))?;
        if let Some(ss) = soft_state
            && ss.role == Role::Leader
        {
            match self.leaders.get(&ss.term) {
                Some(other) if *other != id => {
                    return Err(format!(
                        "election safety: {other} and {id} both lead term {}",
                        ss.term
                    ));
                }
                _ => {
                    self.leaders.insert(ss.term, id.clone());
                }
            }
            self.check_leader_completeness(i)?;
        }
        if snapshot.is_some()
            || !entries.is_empty()
            || hard_state.is_some()
            || !persisted_messages.is_empty()
        {
            self.nodes[i].pending.push_back(node::PendingWrite {
                seq,
                snapshot,
                entries,
                hard_state,
                messages: persisted_messages,
            });
        }
        for e in committed_entries {
            let node = &mut self.nodes[i];
            if e.index != node.applied + 1 {
                return Err(format!("{id}: applying {} after {}", e.index, node.applied));
            }
            // Committed entries are applied only once durable locally.
            if !node.disk.entries.contains(&e) {
                return Err(format!(
                    "{id}: applying entry {} that is not durable",
                    e.index
                ));
            }
            node.digest = digest_step(node.digest, &e);
            node.applied = e.index;
            match self.digests.get(&e.index) {
                Some(d) if *d != node.digest => {
                    return Err(format!(
                        "state machine safety: {id} applied a different entry at {}",
                        e.index
                    ));
                }
                Some(_) => {}
                None => {
                    self.digests.insert(e.index, node.digest);
                }
            }
            if let Some(raft) = node.raft.as_mut() {
                raft.on_applied(e.index);
            }
            self.record_committed(&id, &e)?;
        }
        for rs in read_states {
            let Some(floor) = self.reads.remove(&(i, rs.request_id)) else {
                return Err(format!(
                    "{id}: ReadState for unknown request {}",
                    rs.request_id
                ));
            };
            if rs.index < floor {
                return Err(format!(
                    "linearizability: {id} read {} at index {} below committed {floor}",
                    rs.request_id, rs.index
                ));
            }
            self.stats.reads_ok += 1;
        }
        for r in failed_reads {
            self.reads.remove(&(i, r));
            self.stats.reads_failed += 1;
        }
        for fetch in fetches {
            // The core only asks for entries that are durable (or were,
            // before a snapshot covered them): all of them are on the disk.
            let node = &mut self.nodes[i];
            let snap = node.disk.snapshot_index();
            let missing = (fetch.lo.max(snap + 1)..=fetch.hi)
                .find(|index| !node.disk.entries.iter().any(|e| e.index == *index));
            if let Some(index) = missing {
                return Err(format!("{id}: fetch of entry {index} that is not durable"));
            }
            node.fetches.push_back(fetch);
        }
        Ok(())
    }

    /// Answers node `i`'s oldest read of entries from what its disk holds
    /// now (a few at a time, as a bounded read stops early), however the
    /// log changed since it was asked for.
    fn answer_fetch(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(fetch) = node.fetches.pop_front() else {
            return;
        };
        let read: Vec<_> = node
            .disk
            .entries
            .iter()
            .filter(|e| e.index >= fetch.lo && e.index <= fetch.hi)
            .take(3)
            .cloned()
            .collect();
        self.stats.fetches += 1;
        if let Some(raft) = node.raft.as_mut() {
            raft.on_fetched(fetch, read);
        }
    }
}
