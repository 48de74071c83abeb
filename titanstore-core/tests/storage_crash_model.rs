//! Model-based crash testing on SimFs: random appends, truncations, hard
//! states, snapshots, syncs and crashes; after every crash the recovered
//! state must be the last durable state, or that state plus a prefix of the
//! operations written after it (a crash may keep part of un-synced data),
//! never anything else.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use titanstore_core::storage::{Recovered, SimFs, Storage, StorageOptions};
use titanstore_core::types::{Entry, HardState, LogIndex, Snapshot};

#[derive(Clone, Debug)]
enum Op {
    /// Append `len` entries starting `back` entries before the end.
    Append {
        back: u64,
        len: u64,
    },
    HardState {
        commit: u64,
    },
    Truncate {
        back: u64,
    },
    /// Snapshot `back` entries before the end (beyond it if `ahead`), with a
    /// matching term unless `other_term`.
    Snapshot {
        back: u64,
        ahead: bool,
        other_term: bool,
    },
    Sync,
    /// `partial_dir`: some un-synced directory changes survive.
    Crash {
        seed: u64,
        partial_dir: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4u64, 1..6u64).prop_map(|(back, len)| Op::Append { back, len }),
        2 => (0..50u64).prop_map(|commit| Op::HardState { commit }),
        1 => (0..4u64).prop_map(|back| Op::Truncate { back }),
        1 => (0..6u64, proptest::bool::weighted(0.2), proptest::bool::weighted(0.2))
            .prop_map(|(back, ahead, other_term)| Op::Snapshot { back, ahead, other_term }),
        3 => Just(Op::Sync),
        2 => (any::<u64>(), any::<bool>()).prop_map(|(seed, partial_dir)| Op::Crash { seed, partial_dir }),
    ]
}

/// What recovery must return.
#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    snapshot: Option<Snapshot>,
    log: Vec<Entry>,
    hard_state: HardState,
}

impl Model {
    fn snap_index(&self) -> LogIndex {
        self.snapshot.as_ref().map_or(0, |s| s.meta.last_index)
    }

    fn last_index(&self) -> LogIndex {
        self.snap_index() + self.log.len() as u64
    }

    fn term(&self, i: LogIndex) -> Option<u64> {
        if i == self.snap_index() {
            return Some(self.snapshot.as_ref().map_or(0, |s| s.meta.last_term));
        }
        self.log.iter().find(|e| e.index == i).map(|e| e.term)
    }

    fn matches(&self, rec: &Recovered) -> bool {
        rec.snapshot == self.snapshot
            && rec.entries == self.log
            && rec.hard_state == self.hard_state
    }
}

fn open(fs: &SimFs) -> (Storage, Recovered) {
    Storage::open(
        Arc::new(fs.clone()),
        Path::new("/d"),
        StorageOptions {
            segment_bytes: 300,
            ..StorageOptions::default()
        },
    )
    .unwrap()
}

fn check_storage(s: &Storage, m: &Model) {
    assert_eq!(
        (s.first_index(), s.last_index()),
        (m.snap_index() + 1, m.last_index())
    );
    assert_eq!(
        s.entries(s.first_index(), s.last_index() + 1).unwrap(),
        m.log
    );
    for i in m.snap_index()..=m.last_index() + 1 {
        assert_eq!(s.term(i), m.term(i), "term of {i}");
    }
    assert_eq!(s.hard_state(), &m.hard_state);
}

fn run(ops: Vec<Op>) {
    let fs = SimFs::new();
    let (mut s, _) = open(&fs);
    let mut term = 1;
    // `states[0]` is durable; `states[k]` follows the k-th un-synced write.
    let mut states = vec![Model::default()];
    for op in ops {
        let mut m = states.last().unwrap().clone();
        match op {
            Op::Append { back, len } => {
                let from = m.last_index().saturating_sub(back).max(m.snap_index()) + 1;
                if from <= m.last_index() {
                    term += 1; // a new leader overwrites a suffix
                }
                let batch: Vec<Entry> =
                    (from..from + len).map(|i| common::entry(i, term)).collect();
                s.append(&batch).unwrap();
                m.log.retain(|e| e.index < from);
                m.log.extend(batch);
                states.push(m);
            }
            Op::HardState { commit } => {
                // As in Raft: a hard state never goes back (term, then the
                // vote within a term, then commit), and a vote is fixed per term.
                let prev = &m.hard_state;
                let (voted_for, commit) = if prev.term == term {
                    let vote = prev
                        .voted_for
                        .clone()
                        .unwrap_or_else(|| format!("n{}", commit % 3));
                    (Some(vote), commit.max(prev.commit))
                } else {
                    (Some(format!("n{}", commit % 3)), commit)
                };
                m.hard_state = HardState {
                    term,
                    voted_for,
                    commit,
                };
                s.set_hard_state(&m.hard_state).unwrap();
                states.push(m);
            }
            Op::Truncate { back } => {
                let from = m.last_index().saturating_sub(back).max(m.snap_index()) + 1;
                s.truncate_suffix(from).unwrap();
                if from <= m.last_index() {
                    m.log.retain(|e| e.index < from);
                    states.push(m);
                }
            }
            Op::Snapshot {
                back,
                ahead,
                other_term,
            } => {
                let index = if ahead {
                    m.last_index() + 1 + back
                } else {
                    m.last_index().saturating_sub(back)
                };
                let index = index.max(m.snap_index());
                let t = match m.term(index) {
                    Some(t) if !other_term => t,
                    _ => term + 1,
                };
                let snap = common::snapshot(index, t);
                s.save_snapshot(&snap).unwrap();
                if m.term(index) == Some(t) {
                    m.log.retain(|e| e.index > index);
                } else {
                    m.log.clear();
                }
                m.snapshot = Some(snap);
                term = term.max(t);
                states = vec![m];
            }
            Op::Sync => {
                s.sync().unwrap();
                states = vec![m];
            }
            Op::Crash { seed, partial_dir } => {
                drop(s);
                if partial_dir {
                    fs.crash_keeping_some_dir_changes(seed);
                } else {
                    fs.crash(seed);
                }
                let (reopened, rec) = open(&fs);
                let Some(k) = states.iter().position(|st| st.matches(&rec)) else {
                    panic!("recovered {rec:?}\nnot one of {states:#?}");
                };
                states = vec![states.swap_remove(k)];
                s = reopened;
            }
        }
        check_storage(&s, states.last().unwrap());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn recovery_returns_exactly_a_durable_state(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops);
    }
}
