//! Durability is a property of fsync: what recovery counts as durable must
//! survive a later power loss, and a vote must survive any single damaged
//! record or file. Each test failed on the storage of release 1.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{DIR, entries, frame_offsets, open};
use titanstore_core::storage::{SimFs, StorageError, Vfs};
use titanstore_core::types::HardState;

fn vote(term: u64, for_: &str) -> HardState {
    HardState {
        term,
        voted_for: Some(for_.into()),
        commit: 0,
    }
}

/// Review finding: after a SIGKILL the WAL's unsynced tail is still in the
/// page cache; recovery replayed it without fsyncing it, so the node acked
/// entries that the next power loss erased.
#[test]
fn what_recovery_read_from_the_page_cache_survives_a_later_power_loss() {
    for seed in 0..20 {
        let fs = SimFs::new();
        let (mut s, _) = open(&fs).unwrap();
        s.append(&entries(1, 5, 1)).unwrap();
        s.sync().unwrap();
        s.append(&entries(6, 10, 1)).unwrap();
        drop(s);
        fs.kill_process();
        let (s, recovered) = open(&fs).unwrap();
        assert_eq!(recovered.entries.len(), 10, "the page cache holds 6..=10");
        drop(s);
        fs.crash(seed);
        let (_, after) = open(&fs).unwrap();
        assert_eq!(
            after.entries, recovered.entries,
            "seed {seed}: entries recovery counted as durable were lost"
        );
    }
}

/// The same for a snapshot saved just before the kill and for the hard state.
#[test]
fn snapshot_and_hard_state_read_after_a_kill_survive_a_power_loss() {
    for seed in 0..20 {
        let fs = SimFs::new();
        let (mut s, _) = open(&fs).unwrap();
        s.append(&entries(1, 8, 1)).unwrap();
        s.save_snapshot(&common::snapshot(6, 1)).unwrap();
        s.set_hard_state(&vote(3, "n2")).unwrap();
        s.sync().unwrap();
        drop(s);
        fs.kill_process();
        let (s, recovered) = open(&fs).unwrap();
        drop(s);
        fs.crash_keeping_some_dir_changes(seed);
        let (_, after) = open(&fs).unwrap();
        assert_eq!(after.snapshot, recovered.snapshot, "seed {seed}");
        assert_eq!(after.hard_state, vote(3, "n2"), "seed {seed}");
    }
}

/// Review finding: a fsynced HardState that is the WAL's last record and is
/// later damaged was cut off as a torn append, so the node forgot its vote
/// and could vote twice in one term.
#[test]
fn a_damaged_last_wal_record_cannot_make_the_node_forget_its_vote() {
    let fs = SimFs::new();
    let (mut s, _) = open(&fs).unwrap();
    s.append(&entries(1, 3, 1)).unwrap();
    s.set_hard_state(&vote(1, "n1")).unwrap();
    s.sync().unwrap();
    s.set_hard_state(&vote(2, "n3")).unwrap();
    s.sync().unwrap();
    drop(s);
    let wal = Path::new(DIR).join("wal");
    let seg = wal.join(&fs.list_dir(&wal).unwrap()[0]);
    let mut bytes = fs.file_bytes(&seg).unwrap();
    let last = *frame_offsets(&bytes).last().unwrap();
    let at = bytes.len() - 1;
    assert!(at > last + 12);
    bytes[at] ^= 0x40;
    fs.set_file_bytes(&seg, &bytes).unwrap();
    let (_, recovered) = open(&fs).unwrap();
    assert_eq!(
        recovered.hard_state,
        vote(2, "n3"),
        "the vote was forgotten"
    );
}

/// Any one of the two hard-state copies may be damaged; both is a loud error.
#[test]
fn one_damaged_hard_state_copy_is_survived_two_are_an_error() {
    for damaged in [
        &["hardstate.0"][..],
        &["hardstate.1"],
        &["hardstate.0", "hardstate.1"],
    ] {
        let fs = SimFs::new();
        let (mut s, _) = open(&fs).unwrap();
        s.set_hard_state(&vote(4, "n1")).unwrap();
        s.sync().unwrap();
        s.set_hard_state(&vote(5, "n2")).unwrap();
        s.sync().unwrap();
        drop(s);
        for name in damaged {
            let path = Path::new(DIR).join(name);
            let mut bytes = fs.file_bytes(&path).unwrap();
            let at = bytes.len() / 2;
            bytes[at] ^= 0x01;
            fs.set_file_bytes(&path, &bytes).unwrap();
        }
        match (damaged.len(), open(&fs)) {
            (1, Ok((_, rec))) => assert_eq!(rec.hard_state, vote(5, "n2"), "{damaged:?}"),
            (2, Err(StorageError::Corrupt { reason, .. })) => {
                assert!(reason.contains("hard state"), "{reason}")
            }
            (_, other) => panic!("{damaged:?}: unexpected {:?}", other.map(|(_, r)| r)),
        }
    }
}

/// A power loss in the middle of saving a hard state leaves the old or the
/// new one, never neither.
#[test]
fn power_loss_during_a_hard_state_save_keeps_old_or_new() {
    for budget in 0..6 {
        for seed in 0..4 {
            let fs = SimFs::new();
            let (mut s, _) = open(&fs).unwrap();
            s.set_hard_state(&vote(1, "n1")).unwrap();
            s.sync().unwrap();
            fs.fail_after(Some(budget));
            let saved = s
                .set_hard_state(&vote(2, "n2"))
                .and_then(|()| s.sync())
                .is_ok();
            drop(s);
            fs.crash(seed);
            let (_, rec) = open(&fs).unwrap();
            if saved {
                assert_eq!(rec.hard_state, vote(2, "n2"));
            } else {
                assert!(
                    [vote(1, "n1"), vote(2, "n2")].contains(&rec.hard_state),
                    "budget {budget}: {:?}",
                    rec.hard_state
                );
            }
        }
    }
}

/// Found by the whole-node simulation: the hard state names a commit index,
/// and it reached its files before the entries it covers reached the WAL. A
/// power loss between the two fsyncs let recovery apply entries that were
/// never committed (they had been replaced in the log). The files are now
/// written only after the WAL is synced.
#[test]
fn a_durable_commit_index_never_covers_entries_a_crash_took_away() {
    for budget in 0..12 {
        for seed in 0..4 {
            let fs = SimFs::new();
            let (mut s, _) = open(&fs).unwrap();
            s.append(&entries(1, 2, 1)).unwrap();
            s.sync().unwrap();
            s.append(&entries(3, 5, 2)).unwrap();
            s.set_hard_state(&HardState {
                term: 2,
                voted_for: Some("n1".into()),
                commit: 5,
            })
            .unwrap();
            fs.fail_after(Some(budget));
            let _ = s.sync();
            drop(s);
            fs.crash(seed);
            let (_, rec) = open(&fs).unwrap();
            let last = rec.entries.last().map_or(0, |e| e.index);
            assert!(
                rec.hard_state.commit <= last,
                "budget {budget} seed {seed}: commit {} but the log ends at {last}",
                rec.hard_state.commit
            );
        }
    }
}

/// The two-copy files guard the term and the vote; a batch that only moves
/// the commit index costs the WAL's one fsync, and a power loss after it
/// keeps the vote (the commit may come back lower, which is safe).
#[test]
fn only_a_new_term_or_vote_rewrites_the_hard_state_files() {
    let fs = SimFs::new();
    let (mut s, _) = open(&fs).unwrap();
    s.append(&entries(1, 3, 2)).unwrap();
    s.set_hard_state(&vote(2, "n1")).unwrap();
    s.sync().unwrap();
    let before = fs.file_syncs();
    s.append(&entries(4, 4, 2)).unwrap();
    let mut committed = vote(2, "n1");
    committed.commit = 4;
    s.set_hard_state(&committed).unwrap();
    s.sync().unwrap();
    assert_eq!(
        fs.file_syncs() - before,
        1,
        "a commit-only batch fsyncs more than the WAL"
    );
    assert_eq!(s.hard_state(), &committed);
    let before = fs.file_syncs();
    s.set_hard_state(&vote(3, "n2")).unwrap();
    s.sync().unwrap();
    assert_eq!(
        fs.file_syncs() - before,
        3,
        "a new vote is the WAL's and both copies' fsync"
    );
    drop(s);
    fs.crash(7);
    let (_, recovered) = open(&fs).unwrap();
    assert_eq!(
        (
            recovered.hard_state.term,
            recovered.hard_state.voted_for.as_deref()
        ),
        (3, Some("n2"))
    );
}
