//! Snapshots saved off the storage thread (`SnapshotWriter`) and the
//! compaction that follows (`Storage::compact_to`).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{entries, snapshot};
use titanstore_core::storage::{SimFs, Storage, StorageOptions, Vfs};

fn open(fs: &SimFs) -> (Storage, titanstore_core::storage::Recovered) {
    let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
    Storage::open(vfs, Path::new("/data"), StorageOptions::default()).unwrap()
}

#[test]
fn writer_save_then_compact_recovers_snapshot_plus_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = Storage::open_real(tmp.path()).unwrap();
    s.append(&entries(1, 100, 1)).unwrap();
    s.sync().unwrap();
    let writer = s.snapshot_writer();
    let saver = std::thread::spawn(move || writer.save(&snapshot(50, 1)).unwrap());
    // The WAL keeps taking writes while the snapshot is written elsewhere.
    s.append(&entries(101, 120, 1)).unwrap();
    s.sync().unwrap();
    assert!(saver.join().unwrap());
    s.compact_to(&snapshot(50, 1).meta).unwrap();
    assert_eq!(s.first_index(), 51);
    drop(s);
    let (s, recovered) = Storage::open_real(tmp.path()).unwrap();
    assert_eq!(recovered.snapshot, Some(snapshot(50, 1)));
    assert_eq!(recovered.entries, entries(51, 120, 1));
    assert_eq!(s.last_index(), 120);
}

#[test]
fn an_older_snapshot_never_replaces_a_newer_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = Storage::open_real(tmp.path()).unwrap();
    s.append(&entries(1, 100, 1)).unwrap();
    s.sync().unwrap();
    let writer = s.snapshot_writer();
    s.save_snapshot(&snapshot(80, 1)).unwrap();
    assert!(!writer.save(&snapshot(60, 1)).unwrap());
    s.compact_to(&snapshot(60, 1).meta).unwrap();
    assert_eq!(s.load_snapshot().unwrap(), Some(snapshot(80, 1)));
    assert_eq!(s.first_index(), 81);
}

#[test]
fn crash_between_save_and_compaction_loses_nothing() {
    let fs = SimFs::new();
    let (mut s, _) = open(&fs);
    s.append(&entries(1, 40, 1)).unwrap();
    s.sync().unwrap();
    assert!(s.snapshot_writer().save(&snapshot(30, 1)).unwrap());
    drop(s);
    fs.crash(7);
    let (_, recovered) = open(&fs);
    assert_eq!(recovered.snapshot, Some(snapshot(30, 1)));
    assert_eq!(recovered.entries, entries(31, 40, 1));
}

#[test]
fn compact_to_makes_earlier_appends_durable_even_with_nothing_to_compact() {
    let fs = SimFs::new();
    let (mut s, _) = open(&fs);
    s.append(&entries(1, 40, 1)).unwrap();
    s.sync().unwrap();
    s.save_snapshot(&snapshot(30, 1)).unwrap();
    s.append(&entries(41, 50, 1)).unwrap();
    // Already compacted to 30: nothing to compact, but 41..=50 must be durable.
    s.compact_to(&snapshot(20, 1).meta).unwrap();
    drop(s);
    fs.crash(3);
    let (_, recovered) = open(&fs);
    assert_eq!(recovered.entries, entries(31, 50, 1));
}
