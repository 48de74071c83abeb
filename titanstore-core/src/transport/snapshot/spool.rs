//! The receiver's file for an incoming image, `snapshot.recv` in the data
//! directory: an image arriving over minutes takes no memory until it is
//! whole, and what arrived outlives a send that broke off and a restart of
//! the receiver.
//!
//! The file is laid out as the snapshot file the image makes (the header
//! with the length and checksum the sender announced, the head, then the
//! image as far as it came), so a part found at start names its image
//! without any other record. It is a cache, not a durable record: it is
//! fsynced only when a send breaks off, and nothing in it reaches the node
//! before the whole image matched the sender's checksum. A part whose tail
//! a power loss took (zeros or old bytes where the page cache was lost)
//! fails that check, is deleted, and the next send starts from the
//! beginning.
//!
//! Every call here does file I/O: callers run them off the async threads.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use titanstore_proto::SnapshotOffer;

use super::{CHUNK_BYTES, ImageId, PARTIAL_TTL};
use crate::storage::{ImagePrefix, read_file_prefix};
use crate::types::LogIndex;

/// The file's name in the data directory.
pub const SPOOL_FILE: &str = "snapshot.recv";

/// What a receiver holds of an image whose send broke off (one at most).
pub(in crate::transport) struct Spool {
    path: PathBuf,
    part: Mutex<Option<Part>>,
}

/// An image received in part, in the spool file.
pub(super) struct Part {
    pub(super) id: ImageId,
    prefix: ImagePrefix,
    file: File,
    path: PathBuf,
    /// Bytes of the image in the file.
    pub(super) len: u64,
    /// CRC-32C of the head and the image so far; `None` for a part found on
    /// disk at start, until a send goes on with it.
    crc: Option<u32>,
    touched: Instant,
}

impl Spool {
    /// The spool of the data directory `dir`, holding the part of an image
    /// an earlier run of the node left there, if it names one.
    pub(in crate::transport) fn open(dir: &Path) -> Spool {
        let path = dir.join(SPOOL_FILE);
        let part = match Part::found(&path) {
            Ok(part) => part,
            Err(err) => {
                tracing::warn!(file = %path.display(), %err,
                    "deleting an unreadable part of a snapshot image");
                remove(&path);
                None
            }
        };
        if let Some(part) = &part {
            tracing::info!(
                index = part.id.last_index,
                bytes = part.len,
                total = part.id.total_len,
                "found part of a snapshot image received before a restart"
            );
        }
        Spool {
            path,
            part: Mutex::new(part),
        }
    }

    fn slot(&self) -> MutexGuard<'_, Option<Part>> {
        // A panic while holding it left at worst a stale part: drop it.
        let mut slot = self.part.lock().unwrap_or_else(|poisoned| {
            let mut slot = poisoned.into_inner();
            if let Some(part) = slot.take() {
                part.discard();
            }
            slot
        });
        if slot
            .as_ref()
            .is_some_and(|p| p.touched.elapsed() > PARTIAL_TTL)
        {
            tracing::info!("deleting part of a snapshot image no send went on with");
            if let Some(part) = slot.take() {
                part.discard();
            }
        }
        slot
    }

    /// Bytes held of `offer`'s image; anything held of another is deleted.
    pub(in crate::transport) fn offered(&self, offer: &SnapshotOffer) -> u64 {
        let id = ImageId::of_offer(offer);
        let mut slot = self.slot();
        match slot.as_ref() {
            Some(part) if part.id == id => part.len,
            _ => {
                if let Some(part) = slot.take() {
                    part.discard();
                }
                0
            }
        }
    }

    /// Deletes a part held longer than [`PARTIAL_TTL`] without progress, or
    /// of an image at or below `applied`, the node's applied index.
    pub(in crate::transport) fn expire(&self, applied: LogIndex) {
        let mut slot = self.slot();
        if slot.as_ref().is_some_and(|p| p.id.last_index <= applied) {
            tracing::info!(
                applied,
                "deleting part of a snapshot image the node caught up without"
            );
            if let Some(part) = slot.take() {
                part.discard();
            }
        }
    }

    /// Deletes what is held.
    pub(super) fn clear(&self) {
        if let Some(part) = self.slot().take() {
            part.discard();
        }
    }

    /// Starts the spool file over for the image `prefix` describes.
    pub(super) fn begin(&self, id: ImageId, prefix: ImagePrefix) -> io::Result<Part> {
        // The file is truncated below: what was held is of no more use.
        drop(self.slot().take());
        let created = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.path)
            .and_then(|file| file.write_all_at(&prefix.to_bytes(), 0).map(|()| file));
        let file = match created {
            Ok(file) => file,
            Err(err) => {
                remove(&self.path);
                return Err(err);
            }
        };
        Ok(Part {
            id,
            crc: Some(crc32c::crc32c(&prefix.head)),
            prefix,
            file,
            path: self.path.clone(),
            len: 0,
            touched: Instant::now(),
        })
    }

    /// The part held of image `id` if it ends at `offset`, its checksum
    /// known. A part of `id` that ends elsewhere stays for a send that gets
    /// it right; a part of another image is deleted.
    pub(super) fn resume(&self, id: ImageId, offset: u64) -> io::Result<Option<Part>> {
        let mut slot = self.slot();
        match slot.take() {
            Some(mut part) if part.id == id && part.len == offset => {
                drop(slot);
                if let Err(err) = part.checksum() {
                    part.discard();
                    return Err(err);
                }
                Ok(Some(part))
            }
            Some(part) if part.id == id => {
                *slot = Some(part);
                Ok(None)
            }
            Some(part) => {
                part.discard();
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// Holds `part` for the next send of its image; what it holds is
    /// fsynced first, so a power loss takes as little of it as it can.
    pub(super) fn keep(&self, mut part: Part) {
        if let Err(err) = part.file.sync_data() {
            tracing::warn!(file = %part.path.display(), %err,
                "cannot fsync part of a snapshot image: deleting it");
            part.discard();
            return;
        }
        part.touched = Instant::now();
        let mut slot = self.slot();
        if let Some(other) = slot.replace(part) {
            // Not reached: one image is received at a time.
            drop(other);
        }
    }
}

impl Part {
    /// The part of an image in the spool file at `path`, if there is one.
    fn found(path: &Path) -> io::Result<Option<Part>> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        let Some(prefix) = read_file_prefix(&file, path).map_err(io::Error::other)? else {
            return Err(io::Error::other("not a snapshot file of this release"));
        };
        let in_file = file.metadata()?.len().saturating_sub(prefix.image_at());
        Ok(Some(Part {
            id: ImageId {
                last_index: prefix.meta.last_index,
                last_term: prefix.meta.last_term,
                total_len: prefix.image_len,
                crc32c: prefix.crc32c,
            },
            len: in_file.min(prefix.image_len),
            prefix,
            file,
            path: path.to_path_buf(),
            crc: None,
            touched: Instant::now(),
        }))
    }

    /// Writes the image's next bytes.
    pub(super) fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let crc = self.checksum()?;
        self.file
            .write_all_at(data, self.prefix.image_at() + self.len)?;
        self.crc = Some(crc32c::crc32c_append(crc, data));
        self.len += data.len() as u64;
        Ok(())
    }

    /// CRC-32C of the head and the image so far (read back from the file
    /// for a part found at start).
    pub(super) fn checksum(&mut self) -> io::Result<u32> {
        if let Some(crc) = self.crc {
            return Ok(crc);
        }
        let mut crc = crc32c::crc32c(&self.prefix.head);
        let mut buf = vec![0u8; CHUNK_BYTES];
        let mut at = 0;
        while at < self.len {
            let n = (self.len - at).min(buf.len() as u64) as usize;
            self.file
                .read_exact_at(&mut buf[..n], self.prefix.image_at() + at)?;
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            at += n as u64;
        }
        self.crc = Some(crc);
        Ok(crc)
    }

    /// The whole image, read from the file, which is then deleted. An image
    /// that does not fit in memory fails with `OutOfMemory`.
    pub(super) fn finish(self) -> io::Result<Vec<u8>> {
        let read = usize::try_from(self.len)
            .ok()
            .and_then(|len| {
                let mut data: Vec<u8> = Vec::new();
                data.try_reserve_exact(len).ok().map(|()| {
                    data.resize(len, 0);
                    data
                })
            })
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))
            .and_then(|mut data| {
                self.file.read_exact_at(&mut data, self.prefix.image_at())?;
                Ok(data)
            });
        self.discard();
        read
    }

    /// Deletes the spool file, if it is still this part's.
    pub(super) fn discard(self) {
        let ours = match (self.file.metadata(), std::fs::metadata(&self.path)) {
            (Ok(mine), Ok(there)) => mine.ino() == there.ino() && mine.dev() == there.dev(),
            _ => false,
        };
        if ours {
            remove(&self.path);
        }
    }
}

fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => tracing::warn!(file = %path.display(), %err,
            "cannot delete part of a snapshot image"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::storage::{SnapshotFile, decode_snapshot_head};
    use crate::types::{ClusterConfig, Snapshot, SnapshotMeta};

    /// An image as its sender's snapshot file gives it.
    fn image(index: LogIndex, len: usize) -> (ImageId, ImagePrefix, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|b| (b * 31 % 251) as u8).collect();
        let meta = SnapshotMeta {
            last_index: index,
            last_term: 2,
            config: ClusterConfig::default(),
        };
        let file = SnapshotFile::from_snapshot(Snapshot {
            meta: meta.clone(),
            data: data.clone(),
        })
        .unwrap();
        assert_eq!(
            decode_snapshot_head(&file.head),
            Some((meta.clone(), len as u64))
        );
        let id = ImageId {
            last_index: index,
            last_term: 2,
            total_len: len as u64,
            crc32c: file.crc32c,
        };
        let prefix = ImagePrefix {
            meta,
            head: file.head.clone(),
            image_len: len as u64,
            crc32c: file.crc32c,
        };
        (id, prefix, data)
    }

    fn offer(id: ImageId) -> SnapshotOffer {
        SnapshotOffer {
            last_index: id.last_index,
            last_term: id.last_term,
            total_len: id.total_len,
            crc32c: id.crc32c,
            ..SnapshotOffer::default()
        }
    }

    /// A part kept on disk is found again by a spool opened on the same
    /// directory (a restarted receiver), goes on where it stopped with the
    /// checksum read back from the file, and makes the whole image; the
    /// finished image leaves no file behind.
    #[test]
    fn a_part_outlives_a_restart_and_finishes_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let (id, prefix, data) = image(40, 3 * 100_000 + 7);
        let spool = Spool::open(dir.path());
        assert_eq!(spool.offered(&offer(id)), 0);
        let mut part = spool.begin(id, prefix.clone()).unwrap();
        part.append(&data[..100_000]).unwrap();
        part.append(&data[100_000..150_000]).unwrap();
        spool.keep(part);
        assert_eq!(spool.offered(&offer(id)), 150_000);
        drop(spool);

        let spool = Spool::open(dir.path());
        assert_eq!(spool.offered(&offer(id)), 150_000, "lost at restart");
        assert!(spool.resume(id, 100_000).unwrap().is_none(), "wrong offset");
        assert_eq!(
            spool.offered(&offer(id)),
            150_000,
            "dropped by a wrong offset"
        );
        let mut part = spool.resume(id, 150_000).unwrap().unwrap();
        part.append(&data[150_000..]).unwrap();
        assert_eq!(part.checksum().unwrap(), id.crc32c);
        // The file is the snapshot file the sender has.
        let on_disk = std::fs::read(dir.path().join(SPOOL_FILE)).unwrap();
        let mut expected = prefix.to_bytes();
        expected.extend_from_slice(&data);
        assert!(on_disk == expected);
        assert!(part.finish().unwrap() == data);
        assert!(!dir.path().join(SPOOL_FILE).exists());
        assert_eq!(spool.offered(&offer(id)), 0);
    }

    /// Bytes a power loss replaced in a part's tail are read back into its
    /// checksum, so the whole image fails the sender's checksum.
    #[test]
    fn a_part_whose_tail_was_lost_fails_the_image_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let (id, prefix, data) = image(40, 200_000);
        let spool = Spool::open(dir.path());
        let mut part = spool.begin(id, prefix.clone()).unwrap();
        part.append(&data[..120_000]).unwrap();
        spool.keep(part);
        drop(spool);
        let path = dir.path().join(SPOOL_FILE);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0; 4000], prefix.image_at() + 116_000)
            .unwrap();
        let spool = Spool::open(dir.path());
        let mut part = spool.resume(id, 120_000).unwrap().unwrap();
        part.append(&data[120_000..]).unwrap();
        assert_ne!(part.checksum().unwrap(), id.crc32c);
    }

    /// A part goes when another image is offered or begun, once the node
    /// applied past its index, and when what is in the file is not one.
    #[test]
    fn a_part_is_deleted_when_it_is_of_no_more_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SPOOL_FILE);
        let (id, prefix, data) = image(50, 1000);
        let (other, other_prefix, _) = image(60, 1000);
        let spool = Spool::open(dir.path());
        let keep_some = |spool: &Spool| {
            let mut part = spool.begin(id, prefix.clone()).unwrap();
            part.append(&data[..300]).unwrap();
            spool.keep(part);
        };
        keep_some(&spool);
        spool.expire(49);
        assert_eq!(
            spool.offered(&offer(id)),
            300,
            "deleted before the node passed it"
        );
        spool.expire(50);
        assert_eq!(
            spool.offered(&offer(id)),
            0,
            "kept after the node applied it"
        );
        assert!(!path.exists());
        keep_some(&spool);
        assert_eq!(spool.offered(&offer(other)), 0);
        assert!(!path.exists(), "kept after another image was offered");
        keep_some(&spool);
        let part = spool.begin(other, other_prefix).unwrap();
        assert_eq!(
            spool.offered(&offer(id)),
            0,
            "kept after another image began"
        );
        part.discard();
        assert!(!path.exists());
        // A stale handle never deletes a newer file.
        let stale = spool.begin(id, prefix.clone()).unwrap();
        std::fs::remove_file(&path).unwrap();
        let newer = spool.begin(id, prefix.clone()).unwrap();
        stale.discard();
        assert!(path.exists());
        spool.keep(newer);
        drop(spool);
        std::fs::write(&path, b"something else entirely, long enough for a header").unwrap();
        let spool = Spool::open(dir.path());
        assert!(!path.exists());
        assert_eq!(spool.offered(&offer(id)), 0);
    }
}
