//! The storage thread: group commit.
//!
//! The event loop hands over write jobs in order and never waits. This thread
//! takes every job that queued up, writes them all, makes them durable with
//! one fsync, and only then reports them done (with the messages that were
//! waiting on that durability). Compaction behind a snapshot goes through the
//! same queue, so the WAL is never compacted behind entries still being
//! written. The node's own snapshots are written by [`run_snapshot_writer`]
//! on a thread of their own, so a big snapshot never holds up WAL fsyncs.

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::raft::{EntryFetch, Message};
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
    /// Read back durable entries the core no longer holds in memory.
    Read(EntryFetch),
}

/// Most bytes of WAL records one [`StorageJob::Read`] reads (it reads at
/// least one record): a lagging follower or a restart is fed in steps of
/// about this.
pub const READ_BYTES: u64 = 2 << 20;

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
    /// The entries a [`StorageJob::Read`] asked for (empty if they are no
    /// longer retained), for `RaftNode::on_fetched`.
    Read {
        fetch: EntryFetch,
        entries: Vec<Entry>,
    },
    /// The disk is full: the jobs from the one reported next on wait and
    /// are retried until there is room (the reports then follow as usual).
    NoSpace(String),
    /// The disk took a write again after [`StorageDone::NoSpace`].
    SpaceAvailable,
    /// The node's own snapshot could not be saved (e.g. a full disk); the
    /// node goes on and tries again later.
    SnapshotFailed(String),
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
    metrics: Arc<Metrics>,
) {
    // Jobs a full disk refused; they go first, before anything newer.
    let mut retry: Vec<StorageJob> = Vec::new();
    let mut full = DiskFull::default();
    loop {
        let mut batch = std::mem::take(&mut retry);
        if batch.is_empty() {
            match jobs.recv() {
                Ok(job) => batch.push(job),
                Err(_) => return,
            }
        }
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let entries: usize = batch
            .iter()
            .map(|job| match job {
                StorageJob::Write { entries, .. } => entries.len(),
                StorageJob::Compact(_) | StorageJob::Read(_) => 0,
            })
            .sum();
        let before = storage.stats();
        let written = write_batch(&mut storage, batch);
        let after = storage.stats();
        let fsyncs = after.wal_fsyncs - before.wal_fsyncs;
        if fsyncs > 0 {
            metrics.fsyncs.inc_by(fsyncs);
            let each = (after.wal_fsync_time - before.wal_fsync_time) / fsyncs as u32;
            metrics.fsync_seconds.observe(each.as_secs_f64());
        }
        let outcome = match written {
            Ok(outcome) => outcome,
            Err(err) => {
                tracing::error!(%err, "storage failed; the node must stop");
                let _ = done.send(StorageDone::Failed(err.to_string()));
                return;
            }
        };
        if entries > 0 && outcome.unfinished.is_empty() {
            metrics.batch_entries.observe(entries as f64);
        }
        let reports = full.reports(outcome.reports, outcome.no_space);
        for report in reports {
            if done.send(report).is_err() {
                return;
            }
        }
        if !outcome.unfinished.is_empty() {
            retry = outcome.unfinished;
            // Wait for room, but stop at once when the node shuts down.
            match jobs.recv_timeout(NO_SPACE_RETRY) {
                Ok(job) => retry.push(job),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// Whether the disk is full, as the replica was told.
#[derive(Debug, Default)]
pub struct DiskFull {
    full: bool,
}

impl DiskFull {
    /// A batch's reports, with [`StorageDone::NoSpace`] after them when the
    /// disk has just filled up, or [`StorageDone::SpaceAvailable`] before
    /// them when it has just taken writes again.
    pub fn reports(
        &mut self,
        mut reports: Vec<StorageDone>,
        no_space: Option<String>,
    ) -> Vec<StorageDone> {
        match no_space {
            Some(why) if !self.full => {
                self.full = true;
                tracing::error!(%why, "disk full: writes are refused until there is room");
                reports.push(StorageDone::NoSpace(why));
            }
            None if self.full => {
                self.full = false;
                tracing::info!("disk has room again: writes resume");
                reports.insert(0, StorageDone::SpaceAvailable);
            }
            _ => {}
        }
        reports
    }
}

/// How often a full disk is tried again.
const NO_SPACE_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// What became of a batch of jobs.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// One report per job carried out (and durable), in order.
    pub reports: Vec<StorageDone>,
    /// Jobs not carried out because the disk is full, in order: retry them
    /// (before any later job) once there is room. What they had written
    /// already is harmless to write again.
    pub unfinished: Vec<StorageJob>,
    /// Why the disk refused (set when `unfinished` is not empty).
    pub no_space: Option<String>,
}

/// Carries out a batch of jobs with as few fsyncs as it can (one for all
/// appends), returning one report per job. A full disk is not a failure:
/// the jobs from the one that hit it on come back unfinished. The storage
/// thread and the whole-node simulation both run exactly this.
pub fn write_batch(
    storage: &mut Storage,
    batch: Vec<StorageJob>,
) -> Result<BatchOutcome, crate::storage::StorageError> {
    let mut done: Vec<(StorageJob, JobOutput)> = Vec::with_capacity(batch.len());
    let mut dirty = false;
    let mut jobs = batch.into_iter();
    let mut unfinished = Vec::new();
    let mut no_space = None;
    while let Some(job) = jobs.next() {
        match run_job(storage, &job, &mut dirty) {
            Ok(output) => done.push((job, output)),
            Err(err) if err.is_no_space() => {
                no_space = Some(err.to_string());
                unfinished.push(job);
                unfinished.extend(jobs);
                break;
            }
            Err(err) => return Err(err),
        }
    }
    if dirty && let Err(err) = storage.sync() {
        if !err.is_no_space() {
            return Err(err);
        }
        // Nothing of this batch is known durable: all of it is redone.
        no_space = Some(err.to_string());
        let rest = std::mem::take(&mut unfinished);
        unfinished = done.drain(..).map(|(job, _)| job).chain(rest).collect();
    }
    let reports = done
        .into_iter()
        .map(|(job, output)| match job {
            StorageJob::Write {
                seq, entries, then, ..
            } => StorageDone::Written {
                seq,
                last: entries.last().map(|e| (e.index, e.term)),
                snapshot_index: output.snapshot_index,
                then,
            },
            StorageJob::Compact(meta) => StorageDone::SnapshotTaken(meta),
            StorageJob::Read(fetch) => StorageDone::Read {
                fetch,
                entries: output.read,
            },
        })
        .collect();
    Ok(BatchOutcome {
        reports,
        unfinished,
        no_space,
    })
}

/// What one job produced besides durability.
#[derive(Default)]
struct JobOutput {
    /// The index of the snapshot it saved.
    snapshot_index: Option<LogIndex>,
    /// The entries it read back.
    read: Vec<Entry>,
}

/// Carries out one job; `dirty` tells whether an fsync is owed.
fn run_job(
    storage: &mut Storage,
    job: &StorageJob,
    dirty: &mut bool,
) -> Result<JobOutput, crate::storage::StorageError> {
    match job {
        StorageJob::Write {
            snapshot,
            entries,
            hard_state,
            ..
        } => {
            let snapshot_index = match snapshot {
                Some(snapshot) => {
                    // Syncs what this batch appended before it, then saves.
                    storage.save_snapshot(snapshot)?;
                    *dirty = false;
                    Some(snapshot.meta.last_index)
                }
                None => None,
            };
            if !entries.is_empty() {
                storage.append(entries)?;
                *dirty = true;
            }
            if let Some(hard_state) = hard_state {
                storage.set_hard_state(hard_state)?;
                *dirty = true;
            }
            Ok(JobOutput {
                snapshot_index,
                read: Vec::new(),
            })
        }
        StorageJob::Compact(meta) => {
            // Syncs what this batch appended before it, then compacts.
            storage.compact_to(meta)?;
            *dirty = false;
            Ok(JobOutput::default())
        }
        StorageJob::Read(fetch) => {
            // Only durable entries are ever asked for: they were synced by
            // an earlier batch, so what is read here is what is on disk.
            let read = storage.read_entries(fetch.lo, fetch.hi, READ_BYTES)?;
            Ok(JobOutput {
                snapshot_index: None,
                read,
            })
        }
    }
}

/// Saves the node's own snapshots, one at a time, off the storage thread.
/// Runs until the channel closes; a failed save stops the node.
pub(crate) fn run_snapshot_writer(
    writer: SnapshotWriter,
    snapshots: std_mpsc::Receiver<Snapshot>,
    done: mpsc::UnboundedSender<StorageDone>,
    metrics: Arc<Metrics>,
) {
    while let Ok(snapshot) = snapshots.recv() {
        let started = std::time::Instant::now();
        let report = match writer.save(&snapshot) {
            Ok(_) => {
                metrics.snapshots.inc();
                metrics
                    .snapshot_seconds
                    .observe(started.elapsed().as_secs_f64());
                StorageDone::SnapshotSaved(snapshot.meta)
            }
            Err(err) if err.is_no_space() => {
                tracing::warn!(%err, "cannot save a snapshot: the disk is full; will try again");
                StorageDone::SnapshotFailed(err.to_string())
            }
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
