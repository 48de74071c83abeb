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
//! The part stays in the spool while chunks are written to it, never in
//! the receive that writes them: a receive can end anywhere (its call is
//! dropped when the sender resets the stream or the connection dies), and
//! what it wrote is held all the same. An offer while a receive is still
//! going on stops that receive and waits for it, so it is answered with
//! what arrived: a sender offers again only once it gave its last send up.
//!
//! Every call here does file I/O: callers run them off the async threads.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use titanstore_proto::SnapshotOffer;
use tokio::sync::Notify;

use super::{CHUNK_BYTES, ImageId, PARTIAL_TTL};
use crate::storage::{ImagePrefix, read_file_prefix};
use crate::types::LogIndex;

/// The file's name in the data directory.
pub const SPOOL_FILE: &str = "snapshot.recv";

/// How long an offer waits for a receive it told to stop.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// What a receiver holds of an image (one at most), and whether a receive
/// is writing to it.
pub(in crate::transport) struct Spool {
    path: PathBuf,
    held: Mutex<Held>,
    /// Signalled when a receive ends.
    ended: Condvar,
}

struct Held {
    part: Option<Part>,
    /// The receive going on, told to stop through this.
    receiving: Option<Arc<Notify>>,
}

impl Held {
    /// Deletes the part held, and its file.
    fn delete(&mut self) {
        if let Some(part) = self.part.take() {
            part.discard();
        }
    }
}

/// An image received in part, in the spool file.
struct Part {
    id: ImageId,
    prefix: ImagePrefix,
    file: File,
    path: PathBuf,
    /// Bytes of the image in the file.
    len: u64,
    /// CRC-32C of the head and the image so far; `None` for a part found on
    /// disk at start, until a send goes on with it.
    crc: Option<u32>,
    touched: Instant,
}

/// A receive going on; it ends when this is dropped, however the receive
/// ended.
pub(super) struct Receiving {
    spool: Arc<Spool>,
    stop: Arc<Notify>,
}

impl Receiving {
    /// Completes once an offer told this receive to stop.
    pub(super) async fn stopped(&self) {
        self.stop.notified().await;
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        let mut held = self.spool.held();
        if held
            .receiving
            .as_ref()
            .is_some_and(|stop| Arc::ptr_eq(stop, &self.stop))
        {
            held.receiving = None;
        }
        drop(held);
        self.spool.ended.notify_all();
    }
}

fn gone() -> io::Error {
    io::Error::other("the part of the image was deleted while it arrived")
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
            held: Mutex::new(Held {
                part,
                receiving: None,
            }),
            ended: Condvar::new(),
        }
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        // A panic while holding it left at worst a stale part: drop it.
        let mut held = self.held.lock().unwrap_or_else(|poisoned| {
            let mut held = poisoned.into_inner();
            held.delete();
            held
        });
        if held
            .part
            .as_ref()
            .is_some_and(|p| p.touched.elapsed() > PARTIAL_TTL)
        {
            tracing::info!("deleting part of a snapshot image no send went on with");
            held.delete();
        }
        held
    }

    /// Marks a receive as going on until the returned guard is dropped.
    pub(super) fn receiving(self: &Arc<Self>) -> Receiving {
        let stop = Arc::new(Notify::new());
        self.held().receiving = Some(Arc::clone(&stop));
        Receiving {
            spool: Arc::clone(self),
            stop,
        }
    }

    /// Bytes held of `offer`'s image; anything held of another is deleted.
    /// A receive still going on is stopped first, and waited for.
    pub(in crate::transport) fn offered(&self, offer: &SnapshotOffer) -> u64 {
        let id = ImageId::of_offer(offer);
        let mut held = self.held();
        if let Some(stop) = &held.receiving {
            stop.notify_one();
            let deadline = Instant::now() + STOP_WAIT;
            while held.receiving.is_some() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                held = match self.ended.wait_timeout(held, left) {
                    Ok((held, _)) => held,
                    Err(poisoned) => poisoned.into_inner().0,
                };
            }
        }
        match held.part.as_ref() {
            Some(part) if part.id == id => part.len,
            _ => {
                // A receive that did not stop in time fails on its own.
                if held.receiving.is_none() {
                    held.delete();
                }
                0
            }
        }
    }

    /// Deletes a part held longer than [`PARTIAL_TTL`] without progress, or
    /// of an image at or below `applied`, the node's applied index.
    pub(in crate::transport) fn expire(&self, applied: LogIndex) {
        let mut held = self.held();
        if held
            .part
            .as_ref()
            .is_some_and(|p| p.id.last_index <= applied)
        {
            tracing::info!(
                applied,
                "deleting part of a snapshot image the node caught up without"
            );
            held.delete();
        }
    }

    /// Deletes what is held.
    pub(super) fn clear(&self) {
        self.held().delete();
    }

    /// Starts the spool file over for the image `prefix` describes.
    pub(super) fn begin(&self, id: ImageId, prefix: ImagePrefix) -> io::Result<()> {
        let mut held = self.held();
        // The file is truncated below: what was held is of no more use.
        drop(held.part.take());
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
        held.part = Some(Part {
            id,
            crc: Some(crc32c::crc32c(&prefix.head)),
            prefix,
            file,
            path: self.path.clone(),
            len: 0,
            touched: Instant::now(),
        });
        Ok(())
    }

    /// Whether the part held is of image `id` and ends at `offset`; its
    /// checksum is then known. A part of `id` that ends elsewhere stays
    /// for a send that gets it right; a part of another image is deleted.
    pub(super) fn resume(&self, id: ImageId, offset: u64) -> io::Result<bool> {
        let mut held = self.held();
        match held.part.as_mut() {
            Some(part) if part.id == id && part.len == offset => {
                if let Err(err) = part.checksum() {
                    held.delete();
                    return Err(err);
                }
                Ok(true)
            }
            Some(part) if part.id == id => Ok(false),
            Some(_) => {
                held.delete();
                Ok(false)
            }
            None => Ok(false),
        }
    }

    /// Writes `data` as the bytes of image `id` at `at`, which must be where
    /// the part held of it ends.
    pub(super) fn append(&self, id: ImageId, at: u64, data: &[u8]) -> io::Result<()> {
        let mut held = self.held();
        let part = held
            .part
            .as_mut()
            .filter(|part| part.id == id && part.len == at)
            .ok_or_else(gone)?;
        part.append(data)
    }

    /// CRC-32C of the head and what is held of image `id`.
    pub(super) fn checksum(&self, id: ImageId) -> io::Result<u32> {
        let mut held = self.held();
        let part = held
            .part
            .as_mut()
            .filter(|part| part.id == id)
            .ok_or_else(gone)?;
        part.checksum()
    }

    /// Keeps what is held of image `id` for the next send of it, fsynced
    /// first so a power loss takes as little of it as it can; returns the
    /// bytes kept. A part with no bytes is deleted instead.
    pub(super) fn keep(&self, id: ImageId) -> Option<u64> {
        let mut held = self.held();
        let part = held.part.as_mut().filter(|part| part.id == id)?;
        let synced = if part.len == 0 {
            None
        } else {
            match part.file.sync_data() {
                Ok(()) => Some(part.len),
                Err(err) => {
                    tracing::warn!(file = %part.path.display(), %err,
                        "cannot fsync part of a snapshot image: deleting it");
                    None
                }
            }
        };
        match synced {
            Some(len) => {
                part.touched = Instant::now();
                Some(len)
            }
            None => {
                held.delete();
                None
            }
        }
    }

    /// Deletes the part held of image `id`.
    pub(super) fn discard(&self, id: ImageId) {
        let mut held = self.held();
        if held.part.as_ref().is_some_and(|part| part.id == id) {
            held.delete();
        }
    }

    /// The whole image `id`, read from the file, which is then deleted. An
    /// image that does not fit in memory fails with `OutOfMemory`.
    pub(super) fn finish(&self, id: ImageId) -> io::Result<Vec<u8>> {
        let mut held = self.held();
        match held.part.take() {
            Some(part) if part.id == id => {
                drop(held);
                part.finish()
            }
            other => {
                held.part = other;
                Err(gone())
            }
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
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let crc = self.checksum()?;
        self.file
            .write_all_at(data, self.prefix.image_at() + self.len)?;
        self.crc = Some(crc32c::crc32c_append(crc, data));
        self.len += data.len() as u64;
        self.touched = Instant::now();
        Ok(())
    }

    /// CRC-32C of the head and the image so far (read back from the file
    /// for a part found at start).
    fn checksum(&mut self) -> io::Result<u32> {
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

    /// The whole image, read from the file, which is then deleted.
    fn finish(self) -> io::Result<Vec<u8>> {
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
    fn discard(self) {
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
        spool.begin(id, prefix.clone()).unwrap();
        spool.append(id, 0, &data[..100_000]).unwrap();
        spool.append(id, 100_000, &data[100_000..150_000]).unwrap();
        assert!(spool.append(id, 100_000, &data[..10]).is_err(), "a gap");
        assert_eq!(spool.keep(id), Some(150_000));
        assert_eq!(spool.offered(&offer(id)), 150_000);
        drop(spool);

        let spool = Spool::open(dir.path());
        assert_eq!(spool.offered(&offer(id)), 150_000, "lost at restart");
        assert!(!spool.resume(id, 100_000).unwrap(), "wrong offset");
        assert_eq!(
            spool.offered(&offer(id)),
            150_000,
            "dropped by a wrong offset"
        );
        assert!(spool.resume(id, 150_000).unwrap());
        spool.append(id, 150_000, &data[150_000..]).unwrap();
        assert_eq!(spool.checksum(id).unwrap(), id.crc32c);
        // The file is the snapshot file the sender has.
        let on_disk = std::fs::read(dir.path().join(SPOOL_FILE)).unwrap();
        let mut expected = prefix.to_bytes();
        expected.extend_from_slice(&data);
        assert!(on_disk == expected);
        assert!(spool.finish(id).unwrap() == data);
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
        spool.begin(id, prefix.clone()).unwrap();
        spool.append(id, 0, &data[..120_000]).unwrap();
        spool.keep(id);
        drop(spool);
        let path = dir.path().join(SPOOL_FILE);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0; 4000], prefix.image_at() + 116_000)
            .unwrap();
        let spool = Spool::open(dir.path());
        assert!(spool.resume(id, 120_000).unwrap());
        spool.append(id, 120_000, &data[120_000..]).unwrap();
        assert_ne!(spool.checksum(id).unwrap(), id.crc32c);
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
            spool.begin(id, prefix.clone()).unwrap();
            spool.append(id, 0, &data[..300]).unwrap();
            assert_eq!(spool.keep(id), Some(300));
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
        spool.begin(other, other_prefix).unwrap();
        assert_eq!(
            spool.offered(&offer(id)),
            0,
            "kept after another image began"
        );
        assert!(!path.exists());
        // A part with nothing in it is not kept.
        spool.begin(id, prefix.clone()).unwrap();
        assert_eq!(spool.keep(id), None);
        assert!(!path.exists());
        keep_some(&spool);
        drop(spool);
        std::fs::write(&path, b"something else entirely, long enough for a header").unwrap();
        let spool = Spool::open(dir.path());
        assert!(!path.exists());
        assert_eq!(spool.offered(&offer(id)), 0);
    }

    /// An offer while a receive is still going on (a sender that gave the
    /// send up without the receiver noticing) tells that receive to stop,
    /// waits for it to end, and is answered with what it wrote; a receive
    /// that ends without keeping its part (its call dropped) leaves the
    /// part held all the same.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_offer_stops_a_receive_still_going_on_and_gets_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let (id, prefix, data) = image(70, 5000);
        let spool = Arc::new(Spool::open(dir.path()));
        let receiving = spool.receiving();
        spool.begin(id, prefix).unwrap();
        spool.append(id, 0, &data[..2000]).unwrap();
        let asking = Arc::clone(&spool);
        let asked = tokio::task::spawn_blocking(move || asking.offered(&offer(id)));
        tokio::time::timeout(Duration::from_secs(10), receiving.stopped())
            .await
            .expect("the receive was not told to stop");
        // It writes what it had in hand before it ends.
        spool.append(id, 2000, &data[2000..3000]).unwrap();
        assert!(!asked.is_finished(), "answered before the receive ended");
        drop(receiving);
        assert_eq!(asked.await.unwrap(), 3000);
        assert_eq!(spool.offered(&offer(id)), 3000, "no longer held");
    }
}
