//! WAL append throughput on the real disk: 100-byte entries in batches of 1,
//! 16 and 256 per fsync, against a bare `write + fdatasync` loop, plus the
//! time to reopen (replay) the largest log. Run with `cargo bench`.
//! Set `TITANSTORE_BENCH_DIR` to choose the disk (default: the system temp
//! dir; make sure it is not a tmpfs).
#![allow(clippy::unwrap_used)]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use titanstore_core::storage::Storage;
use titanstore_core::types::{Command, Entry, EntryPayload};

const RUN: Duration = Duration::from_secs(3);

fn bench_dir() -> tempfile::TempDir {
    let base =
        std::env::var_os("TITANSTORE_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    tempfile::tempdir_in(base).unwrap()
}

fn entry(index: u64) -> Entry {
    // Key and value together are 100 bytes.
    let key = format!("key{index:013}").into_bytes();
    let value = vec![b'v'; 100 - key.len()];
    Entry {
        term: 1,
        index,
        payload: EntryPayload::Command(Command::Set { key, value }).into(),
    }
}

fn baseline() -> f64 {
    let dir = bench_dir();
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("bare"))
        .unwrap();
    let record = [7u8; 128];
    let (start, mut n) = (Instant::now(), 0u64);
    while start.elapsed() < RUN {
        file.write_all(&record).unwrap();
        file.sync_data().unwrap();
        n += 1;
    }
    let per_sec = n as f64 / start.elapsed().as_secs_f64();
    println!(
        "bare write+fdatasync loop: {per_sec:>10.0} fsyncs/s ({:.1} us each, {n} fsyncs)",
        1e6 / per_sec
    );
    per_sec
}

/// Appends batches for `RUN` (each followed by `sync` if `fsync`);
/// returns (entries/s, the dir, entries written).
fn append(batch: u64, fsync: bool) -> (f64, tempfile::TempDir, u64) {
    let dir = bench_dir();
    let (mut storage, _) = Storage::open_real(dir.path()).unwrap();
    // Build entries ahead of time in chunks so encoding them is what is timed, not creating them.
    let mut next = 1u64;
    let mut elapsed = Duration::ZERO;
    while elapsed < RUN {
        let batches: Vec<Vec<Entry>> = (0..(512 / batch).max(16))
            .map(|b| (0..batch).map(|i| entry(next + b * batch + i)).collect())
            .collect();
        let start = Instant::now();
        for b in &batches {
            storage.append(b).unwrap();
            if fsync {
                storage.sync().unwrap();
            }
        }
        elapsed += start.elapsed();
        next += batches.len() as u64 * batch;
    }
    let written = next - 1;
    if !fsync {
        let start = Instant::now();
        storage.sync().unwrap();
        elapsed += start.elapsed();
    }
    let stats = storage.stats();
    let per_sec = written as f64 / elapsed.as_secs_f64();
    if fsync {
        println!(
            "batch {batch:>3}: {per_sec:>10.0} entries/s, {:>6.0} syncs/s ({:.1} us per append+sync; {written} entries, {} fdatasyncs, {} segments)",
            stats.wal_fsyncs as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64() * 1e6 / stats.wal_fsyncs as f64,
            stats.wal_fsyncs,
            stats.segments,
        );
    } else {
        println!(
            "batch {batch:>3}, no fsync per batch (engine cost only): {per_sec:>10.0} entries/s ({written} entries, {} segment rolls)",
            stats.segments - 1,
        );
    }
    (per_sec, dir, written)
}

fn main() {
    println!("bench dir: {}", bench_dir().path().display());
    let bare = baseline();
    let (one, _, _) = append(1, true);
    println!(
        "  batch of 1 reaches {:.0}% of the bare fdatasync loop",
        100.0 * one / bare
    );
    append(16, true);
    let (_, dir, written) = append(256, true);
    // The engine's own cost: encode, frame, write, without waiting for the disk.
    append(256, false);
    let start = Instant::now();
    let (_storage, recovered) = Storage::open_real(dir.path()).unwrap();
    let took = start.elapsed();
    assert_eq!(recovered.entries.len() as u64, written);
    println!(
        "reopen (replay) of {written} entries: {:.0} ms ({:.0} entries/s)",
        took.as_secs_f64() * 1e3,
        written as f64 / took.as_secs_f64()
    );
}
