//! One simulated node: the Raft core plus its "disk" (durable hard state,
//! snapshot and log), the Readys handed out but not yet durable, a shadow of
//! the core's in-memory log rebuilt from Readys, and a digest state machine.
//!
//! Crashing drops everything not durable; restarting boots from the disk only.

use std::collections::VecDeque;

use titanstore_core::raft::{Bootstrap, EntryFetch, Message, RaftConfig, RaftNode};
use titanstore_core::types::{
    ClusterConfig, Entry, EntryPayload, HardState, LogIndex, Snapshot, SnapshotMeta, StoredLog,
    Term,
};

/// What survives a crash.
#[derive(Debug, Default, Clone)]
pub struct Disk {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
}

impl Disk {
    pub fn snapshot_index(&self) -> LogIndex {
        self.snapshot.as_ref().map_or(0, |s| s.meta.last_index)
    }

    /// Writes entries, dropping any stored suffix they overwrite.
    pub fn write_entries(&mut self, entries: &[Entry]) -> Result<(), String> {
        let snap = self.snapshot_index();
        for e in entries.iter().filter(|e| e.index > snap) {
            let pos = (e.index - snap - 1) as usize;
            if pos > self.entries.len() {
                return Err(format!("gap writing entry {} to disk", e.index));
            }
            self.entries.truncate(pos);
            self.entries.push(e.clone());
        }
        Ok(())
    }
}

/// Work from one Ready that becomes durable together.
#[derive(Debug, Default)]
pub struct PendingWrite {
    pub seq: u64,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    pub messages: Vec<Message>,
}

/// The core's log as reconstructed from Readys.
#[derive(Debug, Default, Clone)]
pub struct ShadowLog {
    pub snap_index: LogIndex,
    pub snap_term: Term,
    pub entries: Vec<Entry>,
}

impl ShadowLog {
    pub fn last_index(&self) -> LogIndex {
        self.snap_index + self.entries.len() as u64
    }

    pub fn get(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.snap_index {
            return None;
        }
        self.entries.get((index - self.snap_index - 1) as usize)
    }

    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.snap_index {
            return Some(self.snap_term);
        }
        self.get(index).map(|e| e.term)
    }

    pub fn append(&mut self, entries: &[Entry]) -> Result<(), String> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.snap_index || first.index > self.last_index() + 1 {
            return Err(format!(
                "Ready entries start at {} but log is ({}, {}]",
                first.index,
                self.snap_index,
                self.last_index()
            ));
        }
        self.entries
            .truncate((first.index - self.snap_index - 1) as usize);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    pub fn compact(&mut self, index: LogIndex, term: Term) {
        let drop = (index - self.snap_index) as usize;
        self.entries.drain(..drop.min(self.entries.len()));
        self.snap_index = index;
        self.snap_term = term;
    }
}

pub struct SimNode {
    pub id: String,
    pub raft: Option<RaftNode>,
    pub disk: Disk,
    pub pending: VecDeque<PendingWrite>,
    /// Reads of entries the core asked for, answered later (lost in a crash).
    pub fetches: VecDeque<EntryFetch>,
    pub shadow: ShadowLog,
    /// Digest state machine: applied index and a hash chain over applied entries.
    pub applied: LogIndex,
    pub digest: u64,
    /// Highest commit index already checked against the global record.
    pub commit_checked: LogIndex,
}

pub fn raft_config(id: &str, seed: u64, opts: &super::SimOptions) -> RaftConfig {
    let mut cfg = RaftConfig::new(id);
    cfg.election_timeout_min_ticks = 10;
    cfg.election_timeout_max_ticks = 20;
    cfg.heartbeat_ticks = 3;
    cfg.max_entries_per_append = 4;
    cfg.max_inflight_appends = 3;
    cfg.seed = seed;
    // A new incarnation per process, as the server picks one at every start:
    // ReadIndex replies are matched on it (request ids restart per process).
    cfg.incarnation = seed;
    cfg.pre_vote = opts.pre_vote;
    cfg.check_quorum = opts.check_quorum;
    cfg.read_mode = opts.read_mode;
    cfg.log_cache_bytes = opts.log_cache_bytes;
    cfg
}

pub fn digest_step(digest: u64, e: &Entry) -> u64 {
    let bytes = titanstore_core::types::encode(e).unwrap_or_default();
    bytes.iter().fold(digest ^ 0x9e37_79b9_7f4a_7c15, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl SimNode {
    pub fn new(
        id: String,
        config: &ClusterConfig,
        seed: u64,
        opts: &super::SimOptions,
    ) -> Result<Self, String> {
        let mut node = SimNode {
            id,
            raft: None,
            disk: Disk {
                snapshot: Some(Snapshot {
                    meta: SnapshotMeta {
                        last_index: 0,
                        last_term: 0,
                        config: config.clone(),
                    },
                    data: 0u64.to_le_bytes().to_vec(),
                }),
                ..Disk::default()
            },
            pending: VecDeque::new(),
            fetches: VecDeque::new(),
            shadow: ShadowLog::default(),
            applied: 0,
            digest: 0,
            commit_checked: 0,
        };
        node.restart(seed, opts)?;
        Ok(node)
    }

    pub fn crash(&mut self) {
        self.raft = None;
        self.pending.clear();
        self.fetches.clear();
    }

    /// Boots the core from the disk only.
    pub fn restart(&mut self, seed: u64, opts: &super::SimOptions) -> Result<(), String> {
        let snapshot = self.disk.snapshot.clone().ok_or("no snapshot on disk")?;
        let meta = snapshot.meta.clone();
        self.applied = meta.last_index;
        self.digest = decode_digest(&snapshot.data);
        self.shadow = ShadowLog {
            snap_index: meta.last_index,
            snap_term: meta.last_term,
            entries: self.disk.entries.clone(),
        };
        // With a small cache, only the last two entries come back whole.
        let mut entries = self.disk.entries.clone();
        let mut stored = StoredLog::default();
        if opts.log_cache_bytes < 1000 {
            let rest = entries.split_off(entries.len().saturating_sub(2));
            for e in &entries {
                stored.terms.push(e.term);
                if let EntryPayload::Config(c) = &*e.payload {
                    stored.configs.push((e.index, c.clone()));
                }
            }
            entries = rest;
        }
        let boot = Bootstrap {
            hard_state: self.disk.hard_state.clone(),
            snapshot: meta.clone(),
            stored,
            entries,
            applied: meta.last_index,
        };
        let raft = RaftNode::new(raft_config(&self.id, seed, opts), boot)
            .map_err(|e| format!("{}: restart failed: {e}", self.id))?;
        self.commit_checked = meta.last_index;
        self.raft = Some(raft);
        Ok(())
    }
}

pub fn decode_digest(data: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    if data.len() == 8 {
        buf.copy_from_slice(data);
    }
    u64::from_le_bytes(buf)
}
