//! Preallocated WAL segments: what a roll leaves on disk, power loss at any
//! step (also while the next segment is being preallocated), a full disk
//! while preallocating or inside preallocated space, and recovery telling a
//! zero tail from damage.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{DIR, entries, snapshot};
use proptest::prelude::*;
use titanstore_core::storage::{
    RealFs, Recovered, SimFs, Storage, StorageError, StorageOptions, Vfs,
};
use titanstore_core::types::Entry;

const SEGMENT: u64 = 512;
const SPARE: &str = "next-segment.prealloc";

fn open_any(fs: &SimFs, segment_bytes: u64) -> Result<(Storage, Recovered), StorageError> {
    let opts = StorageOptions {
        segment_bytes,
        ..StorageOptions::default()
    };
    Storage::open(Arc::new(fs.clone()), Path::new(DIR), opts)
}

/// Opens a log whose records are all intact (whatever zeros follow them).
fn open(fs: &SimFs, segment_bytes: u64) -> Result<(Storage, Vec<Entry>), StorageError> {
    let (s, rec) = open_any(fs, segment_bytes)?;
    assert_eq!(rec.torn_tail, None, "a zero tail was taken for a torn one");
    Ok((s, rec.entries))
}

fn wal() -> PathBuf {
    Path::new(DIR).join("wal")
}

/// Segment paths in order (not the spare).
fn segments(fs: &SimFs) -> Vec<PathBuf> {
    let mut names: Vec<String> = fs.list_dir(&wal()).unwrap();
    names.retain(|n| n.ends_with(".log"));
    names.sort();
    names.into_iter().map(|n| wal().join(n)).collect()
}

/// Appends batches of three entries from `next` on, syncing each, until the
/// log holds `count` segments; returns the next index.
fn fill_segments(s: &mut Storage, fs: &SimFs, mut next: u64, count: usize) -> u64 {
    while segments(fs).len() < count {
        s.append(&entries(next, next + 2, 1)).unwrap();
        s.sync().unwrap();
        next += 3;
    }
    next
}

#[test]
fn rolled_segments_are_preallocated_and_sealed_ones_end_at_their_records() {
    let fs = SimFs::new();
    let (mut s, _) = open(&fs, SEGMENT).unwrap();
    let spare = wal().join(SPARE);
    let mut next = fill_segments(&mut s, &fs, 1, 3);
    let segs = segments(&fs);
    // The active one was the spare: preallocated, records at its front.
    let active = fs.file_bytes(&segs[2]).unwrap();
    assert_eq!(active.len() as u64, SEGMENT);
    assert!(active.starts_with(b"TSWAL"));
    assert_eq!(
        *active.last().unwrap(),
        0,
        "the preallocated space is used up"
    );
    // Sealed segments end with their last record (no zero tail).
    for seg in &segs[..2] {
        let bytes = fs.file_bytes(seg).unwrap();
        assert!(bytes.len() as u64 >= SEGMENT, "{}", seg.display());
        assert_ne!(*bytes.last().unwrap(), 0, "{}", seg.display());
    }
    // The next one is prepared once the active one is half full.
    assert!(fs.file_bytes(&spare).is_none());
    while fs.file_bytes(&spare).is_none() {
        s.append(&entries(next, next + 2, 1)).unwrap();
        s.sync().unwrap();
        next += 3;
    }
    assert_eq!(fs.file_len(&spare).unwrap(), SEGMENT);
    assert_eq!(s.stats().segments, 3);

    // Compaction deletes whole old segments; the active and the spare stay.
    s.save_snapshot(&snapshot(next - 1, 1)).unwrap();
    assert_eq!(segments(&fs), vec![segs[2].clone()]);
    assert_eq!(s.stats().segments, 1);
    assert!(fs.file_bytes(&spare).is_some());
    s.append(&entries(next, next + 2, 1)).unwrap();
    s.sync().unwrap();
    drop(s);
    fs.crash(7);
    let (_, got) = open(&fs, SEGMENT).unwrap();
    assert_eq!(got, entries(next, next + 2, 1));
}

#[test]
fn appends_after_recovery_go_on_where_the_records_end() {
    let fs = SimFs::new();
    let (mut s, _) = open(&fs, SEGMENT).unwrap();
    let next = fill_segments(&mut s, &fs, 1, 2);
    drop(s);
    fs.crash(1);
    let (mut s, got) = open(&fs, SEGMENT).unwrap();
    assert_eq!(got, entries(1, next - 1, 1));
    let active = segments(&fs)[1].clone();
    let before = fs.file_bytes(&active).unwrap();
    s.append(&entries(next, next, 1)).unwrap();
    s.sync().unwrap();
    let after = fs.file_bytes(&active).unwrap();
    assert_eq!(after.len(), before.len(), "the append grew the file");
    let end = before.iter().rposition(|&b| b != 0).unwrap() + 1;
    assert_eq!(after[..end], before[..end]);
    assert_ne!(after[end..], before[end..]);
    drop(s);
    fs.crash(2);
    let (_, got) = open(&fs, SEGMENT).unwrap();
    assert_eq!(got, entries(1, next, 1));
}

#[test]
fn damage_before_a_zero_tail_is_still_corruption_or_torn_as_before() {
    let fs = SimFs::new();
    let (mut s, _) = open(&fs, SEGMENT).unwrap();
    let next = fill_segments(&mut s, &fs, 1, 2);
    s.append(&entries(next, next + 2, 1)).unwrap();
    s.sync().unwrap();
    drop(s);
    let seg = segments(&fs)[1].clone();
    let good = fs.file_bytes(&seg).unwrap();
    // Frame offsets in the preallocated segment, up to the zero tail.
    let end = good.iter().rposition(|&b| b != 0).unwrap() + 1;
    let mut offs = Vec::new();
    let mut off = 8;
    while off < end {
        offs.push(off);
        off += 12 + u32::from_le_bytes(good[off..off + 4].try_into().unwrap()) as usize;
    }
    assert!(offs.len() >= 2);
    // An early record: corruption naming file and offset, file untouched.
    for &victim in &offs[..offs.len() - 1] {
        for at in [victim + 1, victim + 13] {
            let mut bad = good.clone();
            bad[at] ^= 0x04;
            fs.set_file_bytes(&seg, &bad).unwrap();
            match open_any(&fs, SEGMENT) {
                Err(StorageError::Corrupt { file, offset, .. }) => {
                    assert_eq!((file, offset), (seg.clone(), victim as u64));
                }
                other => panic!("expected corruption at {victim}, got {other:?}"),
            }
            assert_eq!(fs.file_bytes(&seg).unwrap(), bad);
        }
    }
    // The last record damaged, zeros after it: torn, cut, reported.
    let last = *offs.last().unwrap();
    let mut bad = good.clone();
    bad[end - 1] ^= 0x04;
    fs.set_file_bytes(&seg, &bad).unwrap();
    let (s, rec) = open_any(&fs, SEGMENT).unwrap();
    let torn = rec.torn_tail.unwrap();
    assert_eq!(
        (torn.offset, torn.bytes_cut),
        (last as u64, (bad.len() - last) as u64)
    );
    assert_eq!(rec.entries, entries(1, next - 1, 1));
    assert_eq!(fs.file_bytes(&seg).unwrap(), good[..last].to_vec());
    drop(s);
    // Non-zero garbage in the zeros after the records: corruption, as before.
    let mut bad = good.clone();
    bad[end + 20] = 0x5a;
    fs.set_file_bytes(&seg, &bad).unwrap();
    let err = open(&fs, SEGMENT).unwrap_err();
    assert!(
        matches!(err, StorageError::Corrupt { ref file, .. } if *file == seg),
        "{err}"
    );
}

#[test]
fn a_zero_tail_in_an_older_segment_is_damage() {
    let fs = SimFs::new();
    let (mut s, _) = open(&fs, SEGMENT).unwrap();
    fill_segments(&mut s, &fs, 1, 3);
    drop(s);
    let first = segments(&fs)[0].clone();
    let mut bytes = fs.file_bytes(&first).unwrap();
    let n = bytes.len();
    bytes[n - 10..].fill(0);
    fs.set_file_bytes(&first, &bytes).unwrap();
    let err = open(&fs, SEGMENT).unwrap_err();
    assert!(
        matches!(err, StorageError::Corrupt { ref file, .. } if *file == first),
        "{err}"
    );
}

#[test]
fn a_segment_preallocated_larger_is_cut_to_its_records_when_rolled() {
    let fs = SimFs::new();
    let (mut s, _) = open(&fs, 4 * SEGMENT).unwrap();
    let next = fill_segments(&mut s, &fs, 1, 2);
    drop(s);
    // Reopened with smaller segments: the active one rolls with a zero tail.
    let (mut s, _) = open(&fs, SEGMENT).unwrap();
    let next = fill_segments(&mut s, &fs, next, 3);
    let second = fs.file_bytes(&segments(&fs)[1]).unwrap();
    assert!((second.len() as u64) < 4 * SEGMENT);
    assert_ne!(*second.last().unwrap(), 0);
    drop(s);
    fs.crash(3);
    let (_, got) = open(&fs, SEGMENT).unwrap();
    assert_eq!(got, entries(1, next - 1, 1));
}

#[test]
fn a_full_disk_while_preallocating_leaves_no_spare_and_writes_resume() {
    let fs = SimFs::new();
    let (mut s, _) = open(&fs, SEGMENT).unwrap();
    let spare = wal().join(SPARE);
    let mut next = fill_segments(&mut s, &fs, 1, 2);
    let mut acked = next - 1;
    // Room for records, not for the next spare: the roll into the ready
    // spare starts a preallocation that fails, and its file is removed.
    fs.set_capacity(Some(fs.used_bytes() + SEGMENT / 2));
    let err = loop {
        let batch = entries(next, next + 2, 1);
        match s.append(&batch).and_then(|()| s.sync()) {
            Ok(()) => {
                acked = next + 2;
                next += 3;
            }
            Err(e) => break e,
        }
    };
    assert!(err.is_no_space(), "{err}");
    assert!(segments(&fs).len() >= 3, "never rolled past the spare");
    assert!(
        fs.file_bytes(&spare).is_none(),
        "a failed spare was left behind"
    );
    // Writes resume by themselves once there is room.
    fs.set_capacity(None);
    s.append(&entries(acked + 1, acked + 3, 1)).unwrap();
    s.sync().unwrap();
    let acked = acked + 3;
    let next = fill_segments(&mut s, &fs, acked + 1, segments(&fs).len() + 2);
    drop(s);
    fs.crash(4);
    let (_, got) = open(&fs, SEGMENT).unwrap();
    assert_eq!(got, entries(1, next - 1, 1));
}

#[test]
fn a_full_disk_inside_a_preallocated_segment_is_no_space_then_resumes() {
    let fs = SimFs::new();
    let (mut s, _) = open(&fs, SEGMENT).unwrap();
    let next = fill_segments(&mut s, &fs, 1, 2);
    // Every write needs room (as on a copy-on-write file system), even into
    // preallocated space.
    fs.set_capacity(Some(fs.used_bytes() + 10));
    let err = s
        .append(&entries(next, next + 2, 1))
        .and_then(|()| s.sync())
        .unwrap_err();
    assert!(err.is_no_space(), "{err}");
    fs.set_capacity(None);
    s.append(&entries(next, next + 2, 1)).unwrap();
    s.sync().unwrap();
    drop(s);
    fs.crash(5);
    let (_, got) = open(&fs, SEGMENT).unwrap();
    assert_eq!(got, entries(1, next + 2, 1));
}

#[derive(Clone, Debug)]
enum Step {
    /// Append a batch of `n` entries.
    Append(u64),
    Sync,
    /// Power loss after `ops` more file-system operations (so possibly in
    /// the middle of a roll or of preparing the next segment's spare).
    CrashAfter {
        ops: u64,
        seed: u64,
        partial_dir: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (1..6u64).prop_map(Step::Append),
        3 => Just(Step::Sync),
        1 => (0..12u64, any::<u64>(), any::<bool>())
            .prop_map(|(ops, seed, partial_dir)| Step::CrashAfter { ops, seed, partial_dir }),
    ]
}

/// Writes batches over small preallocated segments, crashing at random
/// steps; after each recovery the log is a prefix of what was written that
/// holds every acknowledged entry, and appends continue from it.
fn run(steps: Vec<Step>) {
    let fs = SimFs::new();
    let (mut s, _) = open_any(&fs, 200).unwrap();
    // `written` is the log as appended; `acked` of it were synced.
    let mut written: Vec<Entry> = Vec::new();
    let mut acked = 0;
    for step in steps {
        match step {
            Step::Append(n) => {
                let lo = written.len() as u64 + 1;
                let batch = entries(lo, lo + n - 1, 1);
                s.append(&batch).unwrap();
                written.extend(batch);
            }
            Step::Sync => {
                s.sync().unwrap();
                acked = written.len();
            }
            Step::CrashAfter {
                ops,
                seed,
                partial_dir,
            } => {
                fs.fail_after(Some(ops));
                // Keep writing until the disk stops us.
                loop {
                    let lo = written.len() as u64 + 1;
                    let batch = entries(lo, lo + 2, 1);
                    if s.append(&batch).is_err() {
                        break;
                    }
                    written.extend(batch);
                    if s.sync().is_err() {
                        break;
                    }
                    acked = written.len();
                }
                drop(s);
                if partial_dir {
                    fs.crash_keeping_some_dir_changes(seed);
                } else {
                    fs.crash(seed);
                }
                let (reopened, rec) = open_any(&fs, 200).unwrap();
                let got = rec.entries;
                assert!(
                    got.len() >= acked && got[..] == written[..got.len()],
                    "recovered {} entries, {} acknowledged, {} written",
                    got.len(),
                    acked,
                    written.len()
                );
                written = got;
                acked = written.len();
                s = reopened;
            }
        }
    }
    s.sync().unwrap();
    drop(s);
    fs.crash(0);
    let (_, got) = open(&fs, 200).unwrap();
    assert_eq!(got, written);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn power_loss_at_any_step_keeps_exactly_a_prefix_with_every_acked_entry(
        steps in proptest::collection::vec(step(), 1..80)
    ) {
        run(steps);
    }
}

#[test]
fn on_a_real_disk_rolled_segments_are_preallocated_and_reopen_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = StorageOptions {
        segment_bytes: 4096,
        ..StorageOptions::default()
    };
    let open_real = || Storage::open(Arc::new(RealFs), tmp.path(), opts.clone()).unwrap();
    let logs = || {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(tmp.path().join("wal"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        paths.sort();
        paths
    };
    let (mut s, _) = open_real();
    let mut next = 1;
    while logs().len() < 3 {
        s.append(&entries(next, next + 9, 1)).unwrap();
        s.sync().unwrap();
        next += 10;
    }
    let active = logs()[2].clone();
    assert_eq!(std::fs::metadata(&active).unwrap().len(), 4096);
    drop(s);
    let (mut s, rec) = open_real();
    assert_eq!(rec.torn_tail, None);
    assert_eq!(rec.entries, entries(1, next - 1, 1));
    s.append(&entries(next, next + 9, 1)).unwrap();
    s.sync().unwrap();
    assert_eq!(std::fs::metadata(&active).unwrap().len(), 4096);
    drop(s);
    let (_, rec) = open_real();
    assert_eq!(rec.entries, entries(1, next + 9, 1));
}
