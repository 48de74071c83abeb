//! A crash at any step of `save_snapshot` (write temp, fsync, rename, directory
//! fsync, WAL compaction) leaves the old or the new snapshot, never neither,
//! and the log stays consistent with whichever survived.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{entries, snapshot};
use titanstore_core::storage::{SimFs, Storage, StorageOptions};

fn open(fs: &SimFs) -> (Storage, titanstore_core::storage::Recovered) {
    let opts = StorageOptions {
        segment_bytes: 256,
        ..StorageOptions::default()
    };
    Storage::open(Arc::new(fs.clone()), Path::new("/d"), opts).unwrap()
}

/// A node with snapshot (10, 1) and synced entries 11..=40.
fn setup() -> (SimFs, Storage) {
    let fs = SimFs::new();
    let (mut s, _) = open(&fs);
    s.append(&entries(1, 40, 1)).unwrap();
    s.sync().unwrap();
    s.save_snapshot(&snapshot(10, 1)).unwrap();
    (fs, s)
}

fn check_after_crash(fs: &SimFs, completed: bool, new_index: u64, new_term: u64) -> bool {
    let (s, rec) = open(fs);
    let snap = rec.snapshot.clone().unwrap();
    let is_new = snap == snapshot(new_index, new_term);
    assert!(
        is_new || snap == snapshot(10, 1),
        "neither snapshot: {snap:?}"
    );
    assert!(
        is_new || !completed,
        "save_snapshot returned Ok but the old snapshot came back"
    );
    let kept = if is_new && new_term != 1 {
        vec![]
    } else {
        entries(snap.meta.last_index + 1, 40, 1)
    };
    assert_eq!(rec.entries, kept);
    assert_eq!(s.first_index(), snap.meta.last_index + 1);
    is_new
}

fn crash_at_every_step(new_index: u64, new_term: u64) {
    let mut saw = (false, false);
    for budget in 0.. {
        for seed in 0..4 {
            let (fs, mut s) = setup();
            fs.fail_after(Some(budget));
            let completed = s.save_snapshot(&snapshot(new_index, new_term)).is_ok();
            drop(s);
            if seed % 2 == 0 {
                fs.crash(seed);
            } else {
                fs.crash_keeping_some_dir_changes(seed);
            }
            let is_new = check_after_crash(&fs, completed, new_index, new_term);
            if is_new {
                saw.1 = true
            } else {
                saw.0 = true
            }
            if completed && seed == 3 {
                assert!(saw.0 && saw.1);
                return;
            }
        }
    }
}

#[test]
fn crash_during_compacting_snapshot() {
    crash_at_every_step(30, 1);
}

#[test]
fn crash_during_log_discarding_snapshot() {
    crash_at_every_step(50, 3);
}
