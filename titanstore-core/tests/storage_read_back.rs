//! Recovery hands back only the newest entries whole; the older ones come
//! back as terms and configs, and are read back from the WAL on demand.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{DIR, entries, entry, snapshot};
use titanstore_core::storage::{SimFs, Storage, StorageOptions};
use titanstore_core::types::{ClusterConfig, Entry, EntryPayload, HardState, MemberAddr};

fn open_with_tail(fs: &SimFs, tail: u64) -> (Storage, titanstore_core::storage::Recovered) {
    let options = StorageOptions {
        segment_bytes: 2048,
        recovered_entry_bytes: tail,
    };
    Storage::open(Arc::new(fs.clone()), Path::new(DIR), options).unwrap()
}

fn config_entry(index: u64, term: u64, voter: &str) -> Entry {
    let mut config = ClusterConfig::default();
    config.voters.insert(
        voter.to_string(),
        MemberAddr {
            raft_addr: "127.0.0.1:1".into(),
            client_addr: "127.0.0.1:2".into(),
        },
    );
    Entry {
        term,
        index,
        payload: EntryPayload::Config(config).into(),
    }
}

/// The log as written: 1..=19 compacted behind a snapshot at 20, a config
/// at 50, a conflicting suffix from 150 on in term 2 (with a config at 160
/// that replaces a cut one at 155), up to 200.
fn write_log(fs: &SimFs) -> Vec<Entry> {
    let (mut s, _) = open_with_tail(fs, u64::MAX);
    let mut log = entries(1, 49, 1);
    log.push(config_entry(50, 1, "a"));
    log.extend(entries(51, 154, 1));
    log.push(config_entry(155, 1, "cut"));
    log.extend(entries(156, 170, 1));
    s.append(&log).unwrap();
    s.set_hard_state(&HardState {
        term: 2,
        voted_for: None,
        commit: 100,
    })
    .unwrap();
    s.sync().unwrap();
    let mut suffix = entries(150, 159, 2);
    suffix.push(config_entry(160, 2, "b"));
    suffix.extend(entries(161, 200, 2));
    s.append(&suffix).unwrap();
    s.sync().unwrap();
    s.save_snapshot(&snapshot(20, 1)).unwrap();
    log.truncate(149);
    log.extend(suffix);
    log.split_off(20)
}

#[test]
fn recovery_keeps_the_tail_whole_and_the_rest_as_terms_and_configs() {
    let fs = SimFs::new();
    let written = write_log(&fs);
    let tail_bytes = 12 * entry(200, 2).memory_bytes();
    let (storage, rec) = open_with_tail(&fs, tail_bytes);
    let kept: u64 = rec.entries.iter().map(Entry::memory_bytes).sum();
    assert!(kept <= tail_bytes, "{kept} bytes kept whole");
    assert!(
        rec.entries.len() >= 10,
        "only {} entries kept",
        rec.entries.len()
    );
    assert_eq!(rec.entries.last().map(|e| e.index), Some(200));
    assert_eq!(rec.stored.terms.len() + rec.entries.len(), written.len());
    let terms: Vec<u64> = written.iter().map(|e| e.term).collect();
    assert_eq!(rec.stored.terms, terms[..rec.stored.terms.len()]);
    assert_eq!(&written[rec.stored.terms.len()..], &rec.entries[..]);
    // The config at 155 was cut; the one at 160 is in the stored part.
    let configs: Vec<u64> = rec.stored.configs.iter().map(|(i, _)| *i).collect();
    assert_eq!(configs, vec![50, 160]);
    assert!(rec.holds_state());

    // Every stored entry reads back as written, in bounded steps.
    let mut next = 21;
    let mut steps = 0;
    while next <= 200 {
        let read = storage.read_entries(next, 200, 256).unwrap();
        assert!(!read.is_empty(), "nothing read at {next}");
        assert!(
            read.len() < 180,
            "a 256-byte read returned {} entries",
            read.len()
        );
        let from = (next - 21) as usize;
        assert_eq!(read, written[from..from + read.len()]);
        next += read.len() as u64;
        steps += 1;
    }
    assert!(steps > 1);
    // Compacted, or past the end: nothing.
    assert!(storage.read_entries(5, 30, u64::MAX).unwrap().is_empty());
    assert!(storage.read_entries(201, 300, u64::MAX).unwrap().is_empty());
    assert_eq!(storage.read_entries(199, 300, u64::MAX).unwrap().len(), 2);
}

#[test]
fn a_tail_bound_beyond_the_log_hands_back_everything() {
    let fs = SimFs::new();
    let written = write_log(&fs);
    let (_, rec) = open_with_tail(&fs, u64::MAX);
    assert!(rec.stored.terms.is_empty() && rec.stored.configs.is_empty());
    assert_eq!(rec.entries, written);
}

#[test]
fn after_a_power_loss_what_comes_back_in_either_part_is_what_was_written() {
    let fs = SimFs::new();
    let written = write_log(&fs);
    {
        let (mut s, _) = open_with_tail(&fs, 500);
        s.append(&entries(201, 230, 2)).unwrap();
        // Not synced: a power loss takes it away.
    }
    fs.crash(7);
    let (storage, rec) = open_with_tail(&fs, 500);
    // The unsynced batch is lost or, if its record reached the disk whole, kept.
    let last = rec.entries.last().map(|e| e.index).unwrap();
    assert!(last == 200 || last == 230, "recovered up to {last}");
    assert_eq!(
        rec.stored.terms.len() + rec.entries.len(),
        (last - 20) as usize
    );
    let mut expected = written;
    expected.extend(entries(201, last, 2));
    assert_eq!(storage.read_entries(21, last, u64::MAX).unwrap(), expected);
    assert_eq!(&expected[rec.stored.terms.len()..], &rec.entries[..]);
}
