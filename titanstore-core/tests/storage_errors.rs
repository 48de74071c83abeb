//! Every error a user can meet opening or using storage: a directory that
//! cannot be created, unreadable files, corruption, and a locked data dir.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::entries;
use titanstore_core::storage::{RealFs, SimFs, Storage, StorageError, StorageOptions, Vfs};

#[test]
fn uncreatable_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = Storage::open_real(&file.join("node")).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::Io {
                op: "create data directory",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("plain-file"), "{err}");
}

#[test]
fn missing_parent_on_sim_fs() {
    // SimFs creates parents like the real one; a file in the way fails.
    let fs = SimFs::new();
    fs.create_dir_all(Path::new("/a")).unwrap();
    fs.write(Path::new("/a/f"), b"x").unwrap();
    let err = Storage::open(
        Arc::new(fs),
        Path::new("/a/f/node"),
        StorageOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, StorageError::Io { .. }), "{err}");
}

#[test]
fn unreadable_snapshot_file() {
    // A directory where the snapshot file should be fails even for root.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("snapshot.bin")).unwrap();
    let err = Storage::open_real(tmp.path()).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::Io {
                op: "read snapshot",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn unreadable_wal_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = tmp
        .path()
        .join("wal")
        .join(format!("{:020}-{:020}.log", 1, 1));
    std::fs::create_dir_all(&seg).unwrap();
    let err = Storage::open_real(tmp.path()).unwrap_err();
    assert!(
        matches!(err, StorageError::Io { op: "read WAL segment", ref path, .. } if *path == seg),
        "{err}"
    );
}

#[test]
fn corrupt_record_on_real_disk_names_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut s, _) = Storage::open_real(tmp.path()).unwrap();
    s.append(&entries(1, 3, 1)).unwrap();
    s.append(&entries(4, 6, 1)).unwrap();
    s.sync().unwrap();
    drop(s);
    let wal = tmp.path().join("wal");
    let seg = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let offs = common::frame_offsets(&bytes);
    bytes[offs[1] + 20] ^= 0x80;
    std::fs::write(&seg, &bytes).unwrap();
    let err = Storage::open_real(tmp.path()).unwrap_err();
    let StorageError::Corrupt { file, offset, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!((file, *offset), (&seg, offs[1] as u64));
    assert!(
        err.to_string().contains(&format!("offset {}", offs[1])),
        "{err}"
    );
}

#[test]
fn corrupt_snapshot_is_an_error() {
    let fs = SimFs::new();
    let dir = Path::new("/d");
    let (mut s, _) = Storage::open(Arc::new(fs.clone()), dir, StorageOptions::default()).unwrap();
    s.append(&entries(1, 3, 1)).unwrap();
    s.save_snapshot(&common::snapshot(2, 1)).unwrap();
    drop(s);
    let path = dir.join("snapshot.bin");
    let mut bytes = fs.file_bytes(&path).unwrap();
    bytes[14] ^= 1;
    fs.set_file_bytes(&path, &bytes).unwrap();
    let err = Storage::open(Arc::new(fs), dir, StorageOptions::default()).unwrap_err();
    assert!(
        matches!(err, StorageError::Corrupt { ref file, .. } if *file == path),
        "{err}"
    );
}

/// Spawning a process forks this one, and the fork briefly shares every open
/// file (locks included) until it execs: tests that spawn and tests that
/// expect a lock to be free right after a drop take turns.
static SPAWN_GUARD: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn locked_data_dir_in_process() {
    let _turn = SPAWN_GUARD.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let (first, _) = Storage::open_real(tmp.path()).unwrap();
    let err = Storage::open_real(tmp.path()).unwrap_err();
    assert!(matches!(err, StorageError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("locked"), "{err}");
    drop(first);
    Storage::open_real(tmp.path()).unwrap();

    let fs = SimFs::new();
    let (_held, _) = Storage::open(
        Arc::new(fs.clone()),
        Path::new("/d"),
        StorageOptions::default(),
    )
    .unwrap();
    let err = Storage::open(Arc::new(fs), Path::new("/d"), StorageOptions::default()).unwrap_err();
    assert!(matches!(err, StorageError::Locked { .. }), "{err}");
}

const CHILD_ENV: &str = "TITANSTORE_LOCK_PROBE_DIR";

/// Run by `locked_data_dir_across_processes` in a child process.
#[test]
fn lock_probe_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    match Storage::open(Arc::new(RealFs), Path::new(&dir), StorageOptions::default()) {
        Err(StorageError::Locked { .. }) => println!("PROBE=locked"),
        Err(e) => println!("PROBE=error {e}"),
        Ok(_) => println!("PROBE=opened"),
    }
}

#[test]
fn locked_data_dir_across_processes() {
    let _turn = SPAWN_GUARD.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let (held, _) = Storage::open_real(tmp.path()).unwrap();
    let probe = || {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "lock_probe_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, tmp.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(probe().contains("PROBE=locked"));
    drop(held);
    assert!(probe().contains("PROBE=opened"));
}

#[test]
fn failed_write_or_fsync_poisons_the_storage() {
    let fs = SimFs::new();
    let (mut s, _) = Storage::open(
        Arc::new(fs.clone()),
        Path::new("/d"),
        StorageOptions::default(),
    )
    .unwrap();
    s.append(&entries(1, 3, 1)).unwrap();
    fs.fail_after(Some(0));
    assert!(matches!(
        s.sync(),
        Err(StorageError::Io {
            op: "fdatasync WAL segment",
            ..
        })
    ));
    fs.fail_after(None);
    // What reached the disk is unknown now: no more writes, reopen instead.
    assert!(matches!(s.sync(), Err(StorageError::Poisoned(_))));
    assert!(matches!(
        s.append(&entries(4, 4, 1)),
        Err(StorageError::Poisoned(_))
    ));
    drop(s);
    let (_, rec) = Storage::open(Arc::new(fs), Path::new("/d"), StorageOptions::default()).unwrap();
    assert_eq!(rec.entries, entries(1, 3, 1));
}
