//! The hard state (term, vote) in two small files that are never both in
//! flight: `hardstate.0` and `hardstate.1` in the data dir.
//!
//! Why not only the WAL: recovery cuts a damaged last WAL record off as a
//! torn append, and it cannot tell a torn append from a record that was
//! fsynced and damaged later. If that record held a vote, the node would
//! forget it and could vote twice in one term. Here every save writes copy 0
//! and fsyncs it, then writes copy 1 and fsyncs it; each copy is a CRC frame
//! holding a sequence number and the hard state. So at any time at most one
//! copy is being written, and the other is intact:
//! - a crash during the write of copy 0 leaves copy 1 with the previous state,
//!   which is right: the new one was never durable, so nobody was told of it;
//! - a crash during the write of copy 1 leaves copy 0 with the new state, durable;
//! - damage to one copy after both were written leaves the other with the
//!   same state.
//!
//! Load takes the valid copy with the higher sequence number. Both copies
//! damaged cannot be explained by one crash: that is a loud error. Missing or
//! empty copies mean the state was never saved here (a new data dir, or one
//! from release 1 whose hard state lives in the WAL only).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::error::StorageError;
use super::frame::{encode_framed, read_frame};
use super::vfs::Vfs;
use crate::types::{self, HardState};

const FILES: [&str; 2] = ["hardstate.0", "hardstate.1"];

#[derive(Serialize, Deserialize)]
struct Copy {
    seq: u64,
    state: HardState,
}

/// What one file holds.
enum Slot {
    Valid(u64, HardState),
    /// Missing, empty or all zeros: never written.
    Empty,
    Damaged(String),
}

/// The two-copy hard state store.
#[derive(Debug)]
pub(crate) struct HardStateStore {
    vfs: Arc<dyn Vfs>,
    paths: [PathBuf; 2],
    seq: u64,
    current: Option<HardState>,
}

impl HardStateStore {
    /// Reads both copies, makes whatever they hold durable (a killed process
    /// leaves unsynced bytes in the page cache, which recovery must not
    /// trust until they are fsynced), and returns the newest valid state
    /// (`None` if no copy was ever written).
    pub(crate) fn open(vfs: Arc<dyn Vfs>, dir: &Path) -> Result<HardStateStore, StorageError> {
        let paths = FILES.map(|f| dir.join(f));
        let mut best: Option<(u64, HardState)> = None;
        let mut damaged = Vec::new();
        for path in &paths {
            match read_slot(vfs.as_ref(), path)? {
                Slot::Valid(seq, state) => {
                    vfs.sync_file(path)
                        .map_err(StorageError::io("fsync hard state", path))?;
                    if best.as_ref().is_none_or(|(s, _)| seq > *s) {
                        best = Some((seq, state));
                    }
                }
                Slot::Empty => {}
                Slot::Damaged(reason) => damaged.push((path.clone(), reason)),
            }
        }
        if best.is_none()
            && let Some((file, reason)) = damaged.into_iter().next()
        {
            return Err(StorageError::Corrupt {
                file,
                offset: 0,
                reason: format!("no intact copy of the hard state: {reason}"),
            });
        }
        let (seq, current) = match best {
            Some((seq, state)) => (seq, Some(state)),
            None => (0, None),
        };
        Ok(HardStateStore {
            vfs,
            paths,
            seq,
            current,
        })
    }

    /// The state loaded at open or saved since.
    pub(crate) fn current(&self) -> Option<&HardState> {
        self.current.as_ref()
    }

    /// Durably saves `state`: copy 0 written and fsynced, then copy 1. The
    /// first save also fsyncs the directory, which then holds both names.
    pub(crate) fn save(&mut self, state: &HardState, dir: &Path) -> Result<(), StorageError> {
        if self.current.as_ref() == Some(state) {
            return Ok(());
        }
        let first = self.seq == 0;
        self.seq += 1;
        let mut buf = Vec::new();
        encode_framed(
            &Copy {
                seq: self.seq,
                state: state.clone(),
            },
            &mut buf,
        )?;
        for path in &self.paths {
            self.vfs
                .write(path, &buf)
                .map_err(StorageError::io("write hard state", path))?;
            self.vfs
                .sync_file(path)
                .map_err(StorageError::io("fsync hard state", path))?;
        }
        if first {
            self.vfs
                .sync_dir(dir)
                .map_err(StorageError::io("fsync data directory", dir))?;
        }
        self.current = Some(state.clone());
        Ok(())
    }
}

fn read_slot(vfs: &dyn Vfs, path: &Path) -> Result<Slot, StorageError> {
    let data = match vfs.read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Slot::Empty),
        Err(e) => return Err(StorageError::io("read hard state", path)(e)),
    };
    if data.iter().all(|&b| b == 0) {
        return Ok(Slot::Empty);
    }
    let frame = match read_frame(&data, 0) {
        Ok(Some(frame)) if frame.next == data.len() => frame,
        Ok(_) => return Ok(Slot::Damaged("trailing bytes after the record".into())),
        Err(e) => return Ok(Slot::Damaged(format!("{e:?}"))),
    };
    match types::decode::<Copy>(frame.payload) {
        Ok(copy) => Ok(Slot::Valid(copy.seq, copy.state)),
        Err(e) => Ok(Slot::Damaged(format!("undecodable: {e}"))),
    }
}
