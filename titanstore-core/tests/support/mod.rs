//! A tiny hand-driven cluster for scenario tests: messages are delivered only
//! when a test says so, and each node's disk can be held back, so tests can
//! build exact interleavings (who persisted what, which reply arrived).
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::{BTreeMap, VecDeque};

use titanstore_core::raft::{Bootstrap, Message, RaftConfig, RaftNode, Ready};
use titanstore_core::types::{
    ClusterConfig, Command, Entry, EntryPayload, HardState, LogIndex, MemberAddr, SnapshotMeta,
    Term,
};

pub fn config_of(ids: &[&str]) -> ClusterConfig {
    ClusterConfig {
        voters: ids
            .iter()
            .map(|id| {
                let addr = MemberAddr {
                    raft_addr: format!("{id}:1"),
                    client_addr: format!("{id}:2"),
                };
                (id.to_string(), addr)
            })
            .collect(),
        learners: Default::default(),
        incarnations: Default::default(),
    }
}

pub fn raft_config(id: &str) -> RaftConfig {
    let mut cfg = RaftConfig::new(id);
    cfg.election_timeout_min_ticks = 10;
    cfg.election_timeout_max_ticks = 20;
    cfg.heartbeat_ticks = 2;
    cfg
}

pub fn entry(index: LogIndex, term: Term) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::Command(set(&format!("k{index}"), &format!("t{term}"))).into(),
    }
}

pub fn set(key: &str, value: &str) -> Command {
    Command::Set {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    }
}

pub fn node_with(id: &str, ids: &[&str], term: Term, entries: Vec<Entry>) -> RaftNode {
    node_with_config(raft_config(id), ids, term, entries)
}

/// `node_with` on a given config (its id is the node's).
pub fn node_with_config(
    cfg: RaftConfig,
    ids: &[&str],
    term: Term,
    entries: Vec<Entry>,
) -> RaftNode {
    let boot = Bootstrap {
        hard_state: HardState {
            term,
            voted_for: None,
            commit: 0,
        },
        snapshot: SnapshotMeta {
            last_index: 0,
            last_term: 0,
            config: config_of(ids),
        },
        stored: Default::default(),
        entries,
        applied: 0,
    };
    RaftNode::new(cfg, boot).unwrap()
}

/// Nodes plus a message pool; readys are processed with "instant" disks
/// unless a node's disk is held.
pub struct Cluster {
    pub nodes: BTreeMap<String, RaftNode>,
    /// Messages waiting for delivery.
    pub pool: VecDeque<Message>,
    /// Nodes whose disk is held: their Readys wait in `held`.
    pub held: BTreeMap<String, VecDeque<Ready>>,
    /// Nodes that are down: messages to them are dropped.
    pub down: Vec<String>,
    pub applied: BTreeMap<String, Vec<Entry>>,
    pub reads: BTreeMap<String, Vec<(u64, LogIndex)>>,
    pub failed_reads: BTreeMap<String, Vec<u64>>,
}

impl Cluster {
    pub fn new(ids: &[&str]) -> Self {
        Self::with_config(ids, |_| {})
    }

    /// Nodes on `raft_config(id)` changed by `tune`.
    pub fn with_config(ids: &[&str], tune: impl Fn(&mut RaftConfig)) -> Self {
        Cluster {
            nodes: ids
                .iter()
                .map(|id| {
                    let mut cfg = raft_config(id);
                    tune(&mut cfg);
                    (id.to_string(), node_with_config(cfg, ids, 0, Vec::new()))
                })
                .collect(),
            pool: VecDeque::new(),
            held: BTreeMap::new(),
            down: Vec::new(),
            applied: BTreeMap::new(),
            reads: BTreeMap::new(),
            failed_reads: BTreeMap::new(),
        }
    }

    pub fn node(&mut self, id: &str) -> &mut RaftNode {
        self.nodes.get_mut(id).unwrap()
    }

    pub fn hold_disk(&mut self, id: &str) {
        self.held.entry(id.to_string()).or_default();
    }

    /// Processes every pending Ready of every node.
    pub fn process(&mut self) {
        let ids: Vec<String> = self.nodes.keys().cloned().collect();
        for id in ids {
            while self.nodes[&id].has_ready() {
                let rd = self.node(&id).ready();
                self.pool.extend(rd.messages.iter().cloned());
                for e in &rd.committed_entries {
                    self.applied.entry(id.clone()).or_default().push(e.clone());
                }
                if let Some(last) = rd.committed_entries.last() {
                    let index = last.index;
                    self.node(&id).on_applied(index);
                }
                for rs in &rd.read_states {
                    self.reads
                        .entry(id.clone())
                        .or_default()
                        .push((rs.request_id, rs.index));
                }
                self.failed_reads
                    .entry(id.clone())
                    .or_default()
                    .extend(rd.failed_reads.iter().copied());
                if let Some(q) = self.held.get_mut(&id) {
                    q.push_back(rd);
                } else {
                    self.persist(&id, rd);
                }
            }
        }
    }

    fn persist(&mut self, id: &str, rd: Ready) {
        self.pool.extend(rd.persisted_messages);
        if let Some(s) = &rd.snapshot {
            let index = s.meta.last_index;
            self.node(id).on_snapshot_persisted(rd.seq, index);
        }
        if let Some(last) = rd.entries.last() {
            let (index, term) = (last.index, last.term);
            self.node(id).on_persisted(rd.seq, index, term);
        }
    }

    /// Makes every held Ready of `id` durable (and keeps the disk held).
    pub fn flush_disk(&mut self, id: &str) {
        let readys: Vec<Ready> = self
            .held
            .get_mut(id)
            .map(|q| q.drain(..).collect())
            .unwrap_or_default();
        for rd in readys {
            self.persist(id, rd);
        }
    }

    pub fn release_disk(&mut self, id: &str) {
        self.flush_disk(id);
        self.held.remove(id);
    }

    /// Delivers messages (and everything they cause) until the pool is empty.
    pub fn deliver_all(&mut self) {
        for _ in 0..10_000 {
            self.process();
            let Some(msg) = self.pool.pop_front() else {
                return;
            };
            if self.down.contains(&msg.to) || self.down.contains(&msg.from) {
                continue;
            }
            if let Some(n) = self.nodes.get_mut(&msg.to) {
                n.step(msg);
            }
        }
        panic!("messages never settle");
    }

    pub fn tick_all(&mut self, ticks: usize) {
        for _ in 0..ticks {
            for n in self.nodes.values_mut() {
                n.tick();
            }
            self.deliver_all();
        }
    }

    /// `id` campaigns and wins (everyone reachable, disks instant).
    pub fn elect(&mut self, id: &str) {
        self.node(id).campaign();
        self.deliver_all();
        assert_eq!(
            self.nodes[id].status().role,
            titanstore_core::raft::Role::Leader
        );
    }
}
