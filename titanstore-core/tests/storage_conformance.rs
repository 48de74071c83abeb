//! One behavioural suite run against `Storage` on the real disk and on SimFs.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{entries, snapshot};
use titanstore_core::storage::{RealFs, SimFs, Storage, StorageError, StorageOptions, Vfs};
use titanstore_core::types::HardState;

fn open(
    vfs: &Arc<dyn Vfs>,
    dir: &Path,
    segment_bytes: u64,
) -> (Storage, titanstore_core::storage::Recovered) {
    Storage::open(
        vfs.clone(),
        dir,
        StorageOptions {
            segment_bytes,
            ..StorageOptions::default()
        },
    )
    .unwrap()
}

fn suite(vfs: Arc<dyn Vfs>, root: &Path) {
    let dir = root.join("node");
    let (mut s, rec) = open(&vfs, &dir, 64 << 20);
    assert_eq!(
        (
            rec.entries.len(),
            rec.snapshot.is_none(),
            rec.torn_tail.is_none()
        ),
        (0, true, true)
    );
    assert_eq!(
        (s.first_index(), s.last_index(), s.term(0), s.term(1)),
        (1, 0, Some(0), None)
    );

    // Append, read back, conflict-truncate, explicit truncate.
    s.append(&entries(1, 10, 1)).unwrap();
    s.sync().unwrap();
    assert_eq!(s.entries(1, 11).unwrap(), entries(1, 10, 1));
    assert_eq!(s.entries(4, 4).unwrap(), vec![]);
    s.append(&entries(8, 12, 2)).unwrap();
    assert_eq!(
        (s.last_index(), s.term(7), s.term(8)),
        (12, Some(1), Some(2))
    );
    let mut want = entries(1, 7, 1);
    want.extend(entries(8, 12, 2));
    assert_eq!(s.entries(1, 13).unwrap(), want);
    let hs = HardState {
        term: 2,
        voted_for: Some("n1".into()),
        commit: 5,
    };
    s.set_hard_state(&hs).unwrap();
    s.truncate_suffix(11).unwrap();
    s.sync().unwrap();
    assert_eq!((s.last_index(), s.hard_state()), (10, &hs));

    // Caller errors.
    assert!(matches!(
        s.append(&entries(12, 12, 2)),
        Err(StorageError::InvalidAppend(_))
    ));
    let mut gappy = entries(11, 12, 2);
    gappy[1].index = 13;
    assert!(matches!(
        s.append(&gappy),
        Err(StorageError::InvalidAppend(_))
    ));
    assert!(matches!(
        s.entries(0, 2),
        Err(StorageError::Compacted { .. })
    ));
    assert!(matches!(
        s.entries(5, 20),
        Err(StorageError::OutOfRange { .. })
    ));

    // Snapshot on a matching entry compacts the prefix.
    s.save_snapshot(&snapshot(6, 1)).unwrap();
    assert_eq!(
        (s.first_index(), s.last_index(), s.term(6), s.term(5)),
        (7, 10, Some(1), None)
    );
    assert!(matches!(
        s.entries(6, 8),
        Err(StorageError::Compacted { .. })
    ));
    assert!(matches!(
        s.append(&entries(6, 6, 3)),
        Err(StorageError::Compacted { .. })
    ));
    assert!(matches!(
        s.save_snapshot(&snapshot(3, 1)),
        Err(StorageError::StaleSnapshot { .. })
    ));
    drop(s);

    let (mut s, rec) = open(&vfs, &dir, 64 << 20);
    assert_eq!(rec.hard_state, hs);
    assert_eq!(rec.snapshot, Some(snapshot(6, 1)));
    assert_eq!(rec.entries, want[6..10].to_vec());
    assert_eq!(s.load_snapshot().unwrap(), Some(snapshot(6, 1)));

    // A snapshot the log does not match discards the log, durably.
    s.save_snapshot(&snapshot(20, 9)).unwrap();
    assert_eq!(
        (s.first_index(), s.last_index(), s.term(20)),
        (21, 20, Some(9))
    );
    s.append(&entries(21, 25, 9)).unwrap();
    s.sync().unwrap();
    drop(s);
    let (s, rec) = open(&vfs, &dir, 64 << 20);
    assert_eq!(
        (rec.entries, rec.hard_state),
        (entries(21, 25, 9), hs.clone())
    );
    assert_eq!(s.entries(21, 26).unwrap(), entries(21, 25, 9));
    drop(s);

    // Small segments: rolling, and compaction deleting whole segments.
    let dir = root.join("rolling");
    let (mut s, _) = open(&vfs, &dir, 512);
    for lo in (1..=200).step_by(10) {
        s.append(&entries(lo, lo + 9, 1)).unwrap();
        s.sync().unwrap();
    }
    s.set_hard_state(&hs).unwrap();
    s.sync().unwrap();
    let before = s.stats().segments;
    assert!(before > 5, "{before} segments");
    s.save_snapshot(&snapshot(150, 1)).unwrap();
    assert!(
        s.stats().segments <= before / 2,
        "{before} -> {:?}",
        s.stats()
    );
    assert_eq!(s.entries(151, 201).unwrap(), entries(151, 200, 1));
    drop(s);
    let (s, rec) = open(&vfs, &dir, 512);
    assert_eq!((rec.entries, rec.hard_state), (entries(151, 200, 1), hs));
    assert_eq!((s.first_index(), s.last_index()), (151, 200));
}

#[test]
fn conformance_real_fs() {
    let tmp = tempfile::tempdir().unwrap();
    suite(Arc::new(RealFs), tmp.path());
}

#[test]
fn conformance_sim_fs() {
    suite(Arc::new(SimFs::new()), Path::new("/sim"));
}

#[test]
fn storage_and_sim_fs_can_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Storage>();
    send_sync::<SimFs>();
    send_sync::<titanstore_core::state_machine::StateMachine>();
}
