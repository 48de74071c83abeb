//! The storage thread: group commit.
//!
//! The event loop hands over write jobs in order and never waits. This thread
//! takes every job that queued up, writes them all, makes them durable with
//! one fsync, and only then reports them done (with the messages that were
//! waiting on that durability). Compaction behind a snapshot goes through the
//! same queue, so the WAL is never compacted behind entries still being
//! written. The node's own snapshots are written by [`run_snapshot_writer`]
//! on a thread of their own, so a big snapshot never holds up WAL fsyncs.

use std::sync::mpsc as std_mpsc;

use tokio::sync::mpsc;

use crate::raft::Message;
use crate::storage::{SnapshotWriter, Storage};
use crate::types::{Entry, HardState, LogIndex, Snapshot, SnapshotMeta, Term};

/// Work for the storage thread.
#[derive(Debug)]
pub enum StorageJob {
    /// Persist what one `Ready` (numbered `seq`) asked for; `then` goes out
    /// once it is durable.
    Write {
        seq: u64,
        snapshot: Option<Snapshot>,
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
        then: Vec<Message>,
    },
    /// Compact the WAL behind a snapshot the snapshot writer has saved.
    Compact(SnapshotMeta),
}

/// What the storage thread reports back, in job order.
#[derive(Debug)]
pub enum StorageDone {
    Written {
        seq: u64,
        last: Option<(LogIndex, Term)>,
        snapshot_index: Option<LogIndex>,
        then: Vec<Message>,
    },
    /// The snapshot writer saved the node's own snapshot (not yet compacted).
    SnapshotSaved(SnapshotMeta),
    /// The WAL is compacted behind this snapshot.
    SnapshotTaken(SnapshotMeta),
    /// The disk failed: the node must stop, since it can no longer keep promises.
    Failed(String),
}

/// Most jobs folded into one fsync.
const MAX_BATCH: usize = 4096;

/// Runs until the job channel closes (node shutdown), then returns.
pub(crate) fn run(
    mut storage: Storage,
    jobs: std_mpsc::Receiver<StorageJob>,
    done: mpsc::UnboundedSender<StorageDone>,
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match write_batch(&mut storage, batch) {
            Ok(reports) => {
                for report in reports {
                    if done.send(report).is_err() {
                        return;
                    }
                }
            }
            Err(err) => {
                tracing::error!(%err, "storage failed; the node must stop");
                let _ = done.send(StorageDone::Failed(err.to_string()));
                return;
            }
        }
    }
}

/// Carries out a batch of jobs with as few fsyncs as it can (one for all
/// appends), returning one report per job. The storage thread and the
/// whole-node simulation both run exactly this.
pub fn write_batch(
    storage: &mut Storage,
    batch: Vec<StorageJob>,
) -> Result<Vec<StorageDone>, crate::storage::StorageError> {
    let mut reports = Vec::with_capacity(batch.len());
    let mut dirty = false;
    for job in batch {
        match job {
            StorageJob::Write {
                seq,
                snapshot,
                entries,
                hard_state,
                then,
            } => {
                let snapshot_index = match snapshot {
                    Some(snapshot) => {
                        // Syncs what this batch appended before it, then saves.
                        storage.save_snapshot(&snapshot)?;
                        dirty = false;
                        Some(snapshot.meta.last_index)
                    }
                    None => None,
                };
                if !entries.is_empty() {
                    storage.append(&entries)?;
                    dirty = true;
                }
                if let Some(hard_state) = &hard_state {
                    storage.set_hard_state(hard_state)?;
                    dirty = true;
                }
                reports.push(StorageDone::Written {
                    seq,
                    last: entries.last().map(|e| (e.index, e.term)),
                    snapshot_index,
                    then,
                });
            }
            StorageJob::Compact(meta) => {
                // Syncs what this batch appended before it, then compacts.
                storage.compact_to(&meta)?;
                dirty = false;
                reports.push(StorageDone::SnapshotTaken(meta));
            }
        }
    }
    if dirty {
        storage.sync()?;
    }
    Ok(reports)
}

/// Saves the node's own snapshots, one at a time, off the storage thread.
/// Runs until the channel closes; a failed save stops the node.
pub(crate) fn run_snapshot_writer(
    writer: SnapshotWriter,
    snapshots: std_mpsc::Receiver<Snapshot>,
    done: mpsc::UnboundedSender<StorageDone>,
) {
    while let Ok(snapshot) = snapshots.recv() {
        let report = match writer.save(&snapshot) {
            Ok(_) => StorageDone::SnapshotSaved(snapshot.meta),
            Err(err) => {
                tracing::error!(%err, "cannot save a snapshot; the node must stop");
                StorageDone::Failed(err.to_string())
            }
        };
        let failed = matches!(report, StorageDone::Failed(_));
        if done.send(report).is_err() || failed {
            return;
        }
    }
}
