//! Recovery from damaged WAL files: torn tails are cut and reported, damage
//! before the tail is an error naming the file and offset, a zero tail (as
//! preallocation leaves) is the clean end.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{DIR, entries, frame_offsets, open};
use titanstore_core::storage::{SimFs, Storage, StorageError, StorageOptions, Vfs};
use titanstore_core::types::HardState;

/// Writes three synced batches and a hard state; returns the segment path.
fn setup(fs: &SimFs) -> PathBuf {
    let (mut s, _) = open(fs).unwrap();
    s.append(&entries(1, 5, 1)).unwrap();
    s.set_hard_state(&HardState {
        term: 1,
        voted_for: None,
        commit: 3,
    })
    .unwrap();
    s.append(&entries(6, 10, 1)).unwrap();
    s.sync().unwrap();
    s.append(&entries(11, 14, 2)).unwrap();
    s.sync().unwrap();
    let wal = Path::new(DIR).join("wal");
    let names = segment_names(fs, &wal);
    assert_eq!(names.len(), 1);
    wal.join(&names[0])
}

/// The WAL segments in `wal`, in order (not the spare being preallocated).
fn segment_names(fs: &SimFs, wal: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs
        .list_dir(wal)
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

#[test]
fn crash_at_every_byte_of_the_final_record_is_cut_and_reported() {
    let fs = SimFs::new();
    let seg = setup(&fs);
    let full = fs.file_bytes(&seg).unwrap();
    let last = *frame_offsets(&full).last().unwrap();
    for cut in last..full.len() {
        fs.set_file_bytes(&seg, &full[..cut]).unwrap();
        let (s, rec) = open(&fs).unwrap();
        assert_eq!(rec.entries, entries(1, 10, 1), "cut at {cut}");
        assert_eq!(rec.hard_state.commit, 3);
        if cut == last {
            assert_eq!(rec.torn_tail, None);
        } else {
            let torn = rec.torn_tail.unwrap();
            assert_eq!(
                (torn.file, torn.offset, torn.bytes_cut),
                (seg.clone(), last as u64, (cut - last) as u64)
            );
        }
        assert_eq!(
            fs.file_bytes(&seg).unwrap(),
            full[..last].to_vec(),
            "file not truncated"
        );
        drop(s);
    }
}

/// Since segments are preallocated, zeros after the last record are the
/// log's clean end: not torn, not cut, and appends go on where the records
/// end. (Before, an all-zero tail was reported and cut as torn.)
#[test]
fn all_zero_tail_is_the_clean_end_and_bad_last_checksum_is_torn() {
    let fs = SimFs::new();
    let seg = setup(&fs);
    let full = fs.file_bytes(&seg).unwrap();
    let all = || {
        entries(1, 10, 1)
            .into_iter()
            .chain(entries(11, 14, 2))
            .collect::<Vec<_>>()
    };
    let mut zeros = full.clone();
    zeros.extend_from_slice(&[0; 4096]);
    fs.set_file_bytes(&seg, &zeros).unwrap();
    let (mut s, rec) = open(&fs).unwrap();
    assert_eq!(rec.entries, all());
    assert_eq!(rec.torn_tail, None);
    assert_eq!(fs.file_bytes(&seg).unwrap(), zeros, "the zero tail was cut");
    s.append(&entries(15, 16, 2)).unwrap();
    s.sync().unwrap();
    let now = fs.file_bytes(&seg).unwrap();
    assert_eq!(
        now.len(),
        zeros.len(),
        "the append did not go into the zeros"
    );
    assert_eq!(now[..full.len()], full[..]);
    drop(s);
    let (s, rec) = open(&fs).unwrap();
    assert_eq!(rec.entries[..], [all(), entries(15, 16, 2)].concat()[..]);
    assert_eq!(rec.torn_tail, None);
    drop(s);

    // A bad checksum in the last record is torn, with zeros after it or not.
    for tail in [0, 4096] {
        let mut flipped = full.clone();
        let n = flipped.len();
        flipped[n - 2] ^= 0x10;
        flipped.extend(std::iter::repeat_n(0, tail));
        fs.set_file_bytes(&seg, &flipped).unwrap();
        let (_s, rec) = open(&fs).unwrap();
        assert_eq!(rec.entries, entries(1, 10, 1));
        let torn = rec.torn_tail.unwrap();
        assert!(torn.reason.contains("checksum"));
        assert_eq!(
            torn.bytes_cut as usize,
            flipped.len() - torn.offset as usize
        );
    }
}

#[test]
fn flipped_payload_bit_in_an_early_record_names_file_and_offset() {
    let fs = SimFs::new();
    let seg = setup(&fs);
    let full = fs.file_bytes(&seg).unwrap();
    let offs = frame_offsets(&full);
    for &victim in &offs[..offs.len() - 1] {
        let mut bad = full.clone();
        bad[victim + 14] ^= 0x04;
        fs.set_file_bytes(&seg, &bad).unwrap();
        match open(&fs) {
            Err(StorageError::Corrupt { file, offset, .. }) => {
                assert_eq!((file, offset), (seg.clone(), victim as u64));
            }
            other => panic!("expected corruption error, got {other:?}"),
        }
        // The file is untouched: nothing was silently dropped.
        assert_eq!(fs.file_bytes(&seg).unwrap(), bad);
    }
}

#[test]
fn flipped_length_bit_in_an_early_record_is_an_error() {
    let fs = SimFs::new();
    let seg = setup(&fs);
    let full = fs.file_bytes(&seg).unwrap();
    let offs = frame_offsets(&full);
    for &victim in &offs[..offs.len() - 1] {
        for bit in 0..32 {
            let mut bad = full.clone();
            bad[victim + bit / 8] ^= 1 << (bit % 8);
            fs.set_file_bytes(&seg, &bad).unwrap();
            let err = open(&fs).unwrap_err();
            assert!(
                matches!(&err, StorageError::Corrupt { offset, .. } if *offset == victim as u64),
                "bit {bit} of the length at {victim}: {err}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains(&seg.display().to_string()) && msg.contains(&victim.to_string()),
                "{msg}"
            );
        }
    }
}

/// A WAL of 60 synced entries spread over several small segments; returns
/// the disk, the options, the WAL dir and the segment names in order.
fn several_synced_segments() -> (SimFs, StorageOptions, PathBuf, Vec<String>) {
    let fs = SimFs::new();
    let opts = StorageOptions {
        segment_bytes: 200,
        ..StorageOptions::default()
    };
    let (mut s, _) = Storage::open(Arc::new(fs.clone()), Path::new(DIR), opts.clone()).unwrap();
    for lo in (1..=60).step_by(5) {
        s.append(&entries(lo, lo + 4, 1)).unwrap();
        s.sync().unwrap();
    }
    drop(s);
    let wal = Path::new(DIR).join("wal");
    let names = segment_names(&fs, &wal);
    (fs, opts, wal, names)
}

#[test]
fn damage_in_an_older_segment_is_never_treated_as_torn() {
    let (fs, opts, wal, names) = several_synced_segments();
    assert!(names.len() > 2);
    let first = wal.join(&names[0]);
    let bytes = fs.file_bytes(&first).unwrap();
    fs.set_file_bytes(&first, &bytes[..bytes.len() - 3])
        .unwrap();
    let err = Storage::open(Arc::new(fs.clone()), Path::new(DIR), opts).unwrap_err();
    assert!(
        matches!(err, StorageError::Corrupt { ref file, .. } if *file == first),
        "{err}"
    );
}

#[test]
fn a_missing_segment_is_a_log_gap_not_silent_loss() {
    let (fs, opts, wal, names) = several_synced_segments();
    fs.remove(&wal.join(&names[0])).unwrap();
    fs.sync_dir(&wal).unwrap();
    let err = Storage::open(Arc::new(fs.clone()), Path::new(DIR), opts).unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::LogGap {
                snapshot_index: 0,
                ..
            }
        ),
        "{err}"
    );
}
