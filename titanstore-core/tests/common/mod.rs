//! Helpers shared by the storage test files.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use titanstore_core::storage::{Recovered, SimFs, Storage, StorageError, StorageOptions};
use titanstore_core::types::{
    Command, Entry, EntryPayload, LogIndex, Snapshot, SnapshotMeta, Term,
};

/// An entry whose payload names its index and term.
pub fn entry(index: LogIndex, term: Term) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::Command(Command::Set {
            key: format!("k{index}").into_bytes(),
            value: format!("v{index}-t{term}").into_bytes(),
        })
        .into(),
    }
}

/// Consecutive entries `lo ..= hi` of one term.
pub fn entries(lo: LogIndex, hi: LogIndex, term: Term) -> Vec<Entry> {
    (lo..=hi).map(|i| entry(i, term)).collect()
}

/// A snapshot at (`index`, `term`) with recognisable data.
pub fn snapshot(index: LogIndex, term: Term) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            last_index: index,
            last_term: term,
            config: Default::default(),
        },
        data: format!("state@{index}/{term}").into_bytes(),
    }
}

/// Offsets of every frame in a segment's bytes (u32 len | crc | crc | payload).
pub fn frame_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offs = Vec::new();
    // Segments begin with an 8-byte magic and version.
    let mut off = if bytes.starts_with(b"TSWAL\0") { 8 } else { 0 };
    while off + 12 <= bytes.len() {
        offs.push(off);
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
        off += 12 + len;
    }
    offs
}

/// Where the storage tests keep their data dir on the simulated disk.
pub const DIR: &str = "/data";

/// Opens (recovers) the storage in [`DIR`] on `fs` with default options.
pub fn open(fs: &SimFs) -> Result<(Storage, Recovered), StorageError> {
    Storage::open(
        Arc::new(fs.clone()),
        Path::new(DIR),
        StorageOptions::default(),
    )
}
