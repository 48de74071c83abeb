//! The snapshot file: one CRC-framed [`Snapshot`] at `<data dir>/snapshot.bin`.
//! Since images may exceed 4 GiB, the file starts with [`SNAPSHOT_MAGIC`] and
//! a 64-bit length; a file without it (older releases) is one WAL-style
//! frame with a 32-bit length, and is still read.
//!
//! Saving writes a temp file, fsyncs it, renames it over the previous one and
//! fsyncs the directory, so a crash at any point leaves the old or the new
//! snapshot, never neither. This module does not decide when to snapshot.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::{debug, warn};

use super::error::StorageError;
use super::frame::{HEADER_LEN, read_frame};
use super::vfs::Vfs;
use crate::types::{self, LogIndex, Snapshot, SnapshotMeta};

const SNAPSHOT_FILE: &str = "snapshot.bin";
const TEMP_FILE: &str = "snapshot.tmp";
/// A name and version, then `u64 len | u32 crc32c(len) | u32 crc32c(payload)
/// | payload` (little endian), the payload being the encoded [`Snapshot`].
const SNAPSHOT_MAGIC: [u8; 8] = *b"TSSNAP\0\x02";
/// Bytes before the payload in that format.
const FILE_HEADER_LEN: usize = 24;

/// The header of a snapshot file whose payload has `len` bytes and CRC `crc`.
fn file_header(len: u64, crc: u32) -> [u8; FILE_HEADER_LEN] {
    let mut header = [0; FILE_HEADER_LEN];
    let len_bytes = len.to_le_bytes();
    header[..8].copy_from_slice(&SNAPSHOT_MAGIC);
    header[8..16].copy_from_slice(&len_bytes);
    header[16..20].copy_from_slice(&crc32c::crc32c(&len_bytes).to_le_bytes());
    header[20..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Reads and atomically replaces the snapshot file. Clones share one lock,
/// so saves from different threads never interleave and an older snapshot
/// never replaces a newer one.
#[derive(Clone, Debug)]
pub(crate) struct SnapshotStore {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    /// Last index of the snapshot on disk (0: none).
    saved: Arc<Mutex<LogIndex>>,
}

impl SnapshotStore {
    /// Opens the store in `dir`, removing a temp file left by an interrupted save.
    pub fn open(vfs: Arc<dyn Vfs>, dir: &Path) -> Result<Self, StorageError> {
        let store = SnapshotStore {
            vfs,
            dir: dir.to_path_buf(),
            saved: Arc::new(Mutex::new(0)),
        };
        let tmp = store.dir.join(TEMP_FILE);
        match store.vfs.remove(&tmp) {
            Ok(()) => warn!(file = %tmp.display(), "removed a snapshot temp file left by a crash"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("remove snapshot temp file", tmp)(e)),
        }
        Ok(store)
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_FILE)
    }

    /// Records the index of the snapshot found on disk at open.
    pub fn set_saved(&self, index: LogIndex) -> Result<(), StorageError> {
        *self.lock()? = index;
        Ok(())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, LogIndex>, StorageError> {
        self.saved
            .lock()
            .map_err(|_| StorageError::Poisoned("snapshot lock poisoned by a panic".into()))
    }

    /// Durably replaces the snapshot, unless the one on disk is newer
    /// (returns false then, and changes nothing).
    pub fn save(&self, snap: &Snapshot) -> Result<bool, StorageError> {
        let mut saved = self.lock()?;
        if snap.meta.last_index < *saved {
            debug!(
                index = snap.meta.last_index,
                on_disk = *saved,
                "older snapshot not saved"
            );
            return Ok(false);
        }
        // The frame is written in pieces, so the image is never copied: a
        // big one would otherwise need twice its size in memory.
        let head = head(&snap.meta, snap.data.len())?;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&head), &snap.data);
        let header = file_header((head.len() + snap.data.len()) as u64, crc);
        let bytes = FILE_HEADER_LEN + head.len() + snap.data.len();
        let (tmp, path) = (self.dir.join(TEMP_FILE), self.path());
        let written = self
            .write_parts(&tmp, &[&header, &head, &snap.data])
            .and_then(|()| {
                self.vfs
                    .sync_file(&tmp)
                    .map_err(StorageError::io("fsync snapshot temp file", &tmp))
            });
        if let Err(err) = written {
            // A part-written temp file must not keep a full disk full.
            let _ = self.vfs.remove(&tmp);
            return Err(err);
        }
        self.vfs
            .rename(&tmp, &path)
            .map_err(StorageError::io("rename snapshot into place", &path))?;
        self.vfs
            .sync_dir(&self.dir)
            .map_err(StorageError::io("fsync data directory", &self.dir))?;
        debug!(index = snap.meta.last_index, bytes, "snapshot saved");
        *saved = snap.meta.last_index;
        Ok(true)
    }

    /// Loads and checks the snapshot; `None` if there is none yet.
    pub fn load(&self) -> Result<Option<Snapshot>, StorageError> {
        let path = self.path();
        let mut bytes = match self.vfs.read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError::io("read snapshot", path)(e)),
        };
        let corrupt = |offset: usize, reason: String| StorageError::Corrupt {
            file: path.clone(),
            offset: offset as u64,
            reason,
        };
        let (start, end) = if bytes.starts_with(&SNAPSHOT_MAGIC) {
            let header = bytes
                .get(..FILE_HEADER_LEN)
                .ok_or_else(|| corrupt(0, "snapshot header cut short".into()))?;
            let word = |at: usize| {
                u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
            };
            let len_bytes: [u8; 8] = header[8..16].try_into().unwrap_or_default();
            if crc32c::crc32c(&len_bytes) != word(16) {
                return Err(corrupt(8, "snapshot length fails its checksum".into()));
            }
            let len = u64::from_le_bytes(len_bytes);
            if (bytes.len() - FILE_HEADER_LEN) as u64 != len {
                return Err(corrupt(
                    FILE_HEADER_LEN,
                    format!(
                        "snapshot of {len} bytes, file holds {}",
                        bytes.len() - FILE_HEADER_LEN
                    ),
                ));
            }
            if crc32c::crc32c(&bytes[FILE_HEADER_LEN..]) != word(20) {
                return Err(corrupt(
                    FILE_HEADER_LEN,
                    "snapshot fails its checksum".into(),
                ));
            }
            (FILE_HEADER_LEN, bytes.len())
        } else {
            let frame = match read_frame(&bytes, 0) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Err(corrupt(0, "empty snapshot file".into())),
                Err(e) => return Err(corrupt(0, format!("{e:?}"))),
            };
            if frame.next != bytes.len() {
                return Err(corrupt(
                    frame.next,
                    "trailing bytes after the snapshot".into(),
                ));
            }
            (HEADER_LEN, frame.next)
        };
        let payload = &bytes[start..end];
        // The image is moved to the front of the buffer it was read into,
        // not copied out of it.
        if let Some((meta, at)) = split(payload, payload.len() as u64) {
            bytes.drain(..start + at);
            return Ok(Some(Snapshot { meta, data: bytes }));
        }
        let snap = match types::decode::<Snapshot>(payload) {
            Ok(snap) => snap,
            // A release 1 file: its configuration has no learners.
            Err(e) => types::decode::<types::LegacySnapshot>(payload)
                .map(Snapshot::from)
                .map_err(|_| corrupt(0, format!("undecodable snapshot: {e}")))?,
        };
        Ok(Some(snap))
    }

    /// Writes `parts` one after the other as the new content of `path`.
    fn write_parts(&self, path: &Path, parts: &[&[u8]]) -> Result<(), StorageError> {
        match self.vfs.remove(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("remove snapshot temp file", path)(e)),
        }
        let mut file = self
            .vfs
            .open_append(path)
            .map_err(StorageError::io("create snapshot temp file", path))?;
        let mut at = 0;
        for part in parts {
            file.write_at(at, part)
                .map_err(StorageError::io("write snapshot temp file", path))?;
            at += part.len() as u64;
        }
        Ok(())
    }
}

/// What bincode writes for a [`Snapshot`] before the image's bytes: its
/// metadata and the image's length (`serde_bytes` writes a length, then the bytes).
fn head(meta: &SnapshotMeta, data_len: usize) -> Result<Vec<u8>, StorageError> {
    let mut head = types::encode(meta)?;
    head.extend_from_slice(&types::encode(&(data_len as u64))?);
    Ok(head)
}

/// The most bytes of a head read to find where the image starts.
const HEAD_LIMIT: u64 = 64 << 20;

/// The metadata and image length a snapshot head (see [`SnapshotFile::head`])
/// encodes, if it is one and nothing follows it.
pub fn decode_snapshot_head(head: &[u8]) -> Option<(SnapshotMeta, u64)> {
    let config = types::codec_config().with_limit::<{ 64 << 20 }>();
    let (meta, n): (SnapshotMeta, usize) = bincode::serde::decode_from_slice(head, config).ok()?;
    let (len, m): (u64, usize) = bincode::serde::decode_from_slice(head.get(n..)?, config).ok()?;
    (n + m == head.len()).then_some((meta, len))
}

/// The metadata of an encoded [`Snapshot`] and where its image starts, if
/// `prefix` begins a payload of `payload_len` bytes in the current format.
fn split(prefix: &[u8], payload_len: u64) -> Option<(SnapshotMeta, usize)> {
    let config = types::codec_config().with_limit::<{ 64 << 20 }>();
    let (meta, n): (SnapshotMeta, usize) =
        bincode::serde::decode_from_slice(prefix, config).ok()?;
    let (len, m): (u64, usize) =
        bincode::serde::decode_from_slice(prefix.get(n..)?, config).ok()?;
    let at = n + m;
    (payload_len.checked_sub(at as u64)? == len).then_some((meta, at))
}

/// A saved snapshot opened to be sent to a peer. Its metadata, the head of
/// its payload and the payload's checksum are read at once; the image is
/// read by offset, from the file, which stays readable through its handle
/// even after a newer snapshot is renamed over it. Nothing checks the image
/// here: the receiver checks it whole against [`SnapshotFile::crc32c`].
pub struct SnapshotFile {
    pub meta: SnapshotMeta,
    /// The payload's bytes before the image: the encoded metadata and the
    /// image's length.
    pub head: Vec<u8>,
    /// CRC-32C of `head` followed by the image, as the file records it.
    pub crc32c: u32,
    pub image_len: u64,
    body: Body,
    /// Bytes of the image read so far, over all reads.
    read: std::sync::atomic::AtomicU64,
}

enum Body {
    /// The image starts `at` bytes into the file.
    File { file: std::fs::File, at: u64 },
    /// A file of an earlier format, loaded whole.
    Memory(Vec<u8>),
}

impl SnapshotFile {
    /// A snapshot in memory, as it would be read from its file.
    pub fn from_snapshot(snap: Snapshot) -> Result<Self, StorageError> {
        let head = head(&snap.meta, snap.data.len())?;
        Ok(SnapshotFile {
            crc32c: crc32c::crc32c_append(crc32c::crc32c(&head), &snap.data),
            image_len: snap.data.len() as u64,
            meta: snap.meta,
            head,
            body: Body::Memory(snap.data),
            read: Default::default(),
        })
    }

    /// Reads the whole image and checks it against [`SnapshotFile::crc32c`].
    pub fn verify(&self) -> Result<(), StorageError> {
        let mut crc = crc32c::crc32c(&self.head);
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < self.image_len {
            let n = (self.image_len - at).min(buf.len() as u64) as usize;
            self.read_image_at(at, &mut buf[..n])
                .map_err(StorageError::io("read snapshot", "snapshot.bin"))?;
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            at += n as u64;
        }
        if crc != self.crc32c {
            return Err(StorageError::Corrupt {
                file: "snapshot.bin".into(),
                offset: 0,
                reason: format!(
                    "image has checksum {crc:08x}, the file says {:08x}",
                    self.crc32c
                ),
            });
        }
        Ok(())
    }

    /// Bytes of the image read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fills `buf` with the image's bytes from `offset` on.
    pub fn read_image_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let past = || io::Error::new(io::ErrorKind::InvalidInput, "read past the image's end");
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.image_len)
            .ok_or_else(past)?;
        self.read
            .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
        match &self.body {
            Body::File { file, at } => {
                use std::os::unix::fs::FileExt;
                file.read_exact_at(buf, at + offset)
            }
            Body::Memory(data) => {
                let range = usize::try_from(offset).map_err(|_| past())?
                    ..usize::try_from(end).map_err(|_| past())?;
                buf.copy_from_slice(data.get(range).ok_or_else(past)?);
                Ok(())
            }
        }
    }
}

/// Opens the snapshot in `dir` (on the real file system) to be sent; `None`
/// if there is none. Only the header and the metadata are read, unless the
/// file is of an earlier format: that one is loaded and checked whole.
pub fn open_snapshot_file(dir: &Path) -> Result<Option<SnapshotFile>, StorageError> {
    let path = snapshot_path(dir);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io("open snapshot", path)(e)),
    };
    let file_len = file
        .metadata()
        .map_err(StorageError::io("stat snapshot", &path))?
        .len();
    let Some(prefix) = read_file_prefix(&file, &path)? else {
        // A file of an earlier format.
        return read_snapshot(dir)?
            .map(SnapshotFile::from_snapshot)
            .transpose();
    };
    let payload_len = prefix.head.len() as u64 + prefix.image_len;
    if file_len - FILE_HEADER_LEN as u64 != payload_len {
        return Err(StorageError::Corrupt {
            file: path,
            offset: FILE_HEADER_LEN as u64,
            reason: format!(
                "snapshot of {payload_len} bytes, file holds {}",
                file_len - FILE_HEADER_LEN as u64
            ),
        });
    }
    let at = prefix.image_at();
    Ok(Some(SnapshotFile {
        meta: prefix.meta,
        image_len: prefix.image_len,
        crc32c: prefix.crc32c,
        body: Body::File { file, at },
        head: prefix.head,
        read: Default::default(),
    }))
}

/// What a snapshot file in the current format says before its image: the
/// metadata, the head it was read from, the image's length and the checksum
/// the header records for head and image.
#[derive(Clone, Debug, PartialEq)]
pub struct ImagePrefix {
    pub meta: SnapshotMeta,
    pub head: Vec<u8>,
    pub image_len: u64,
    pub crc32c: u32,
}

impl ImagePrefix {
    /// The bytes of the snapshot file that holds this image, before the image.
    pub fn to_bytes(&self) -> Vec<u8> {
        let payload_len = self.head.len() as u64 + self.image_len;
        let mut bytes = file_header(payload_len, self.crc32c).to_vec();
        bytes.extend_from_slice(&self.head);
        bytes
    }

    /// Where the image starts in its file.
    pub fn image_at(&self) -> u64 {
        (FILE_HEADER_LEN + self.head.len()) as u64
    }
}

/// Reads the header and head of a snapshot file, which may hold less of its
/// image than the header announces (a file still being written). `None`
/// for a file of an earlier format (or too short to tell).
pub fn read_file_prefix(
    file: &std::fs::File,
    path: &Path,
) -> Result<Option<ImagePrefix>, StorageError> {
    use std::os::unix::fs::FileExt;
    let read_at = |buf: &mut [u8], at: u64| {
        file.read_exact_at(buf, at)
            .map_err(StorageError::io("read snapshot", path))
    };
    let file_len = file
        .metadata()
        .map_err(StorageError::io("stat snapshot", path))?
        .len();
    let mut header = [0u8; FILE_HEADER_LEN];
    if file_len < FILE_HEADER_LEN as u64 {
        return Ok(None);
    }
    read_at(&mut header, 0)?;
    if !header.starts_with(&SNAPSHOT_MAGIC) {
        return Ok(None);
    }
    let len_bytes: [u8; 8] = header[8..16].try_into().unwrap_or_default();
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    if crc32c::crc32c(&len_bytes) != word(16) {
        return Err(StorageError::Corrupt {
            file: path.to_path_buf(),
            offset: 8,
            reason: "snapshot length fails its checksum".into(),
        });
    }
    let payload_len = u64::from_le_bytes(len_bytes);
    let present = file_len - FILE_HEADER_LEN as u64;
    // The head is small (a configuration); read more only if it is not.
    let mut want: u64 = 64 << 10;
    loop {
        let n = want.min(payload_len).min(present).min(HEAD_LIMIT);
        let mut prefix = vec![0u8; usize::try_from(n).unwrap_or(usize::MAX)];
        read_at(&mut prefix, FILE_HEADER_LEN as u64)?;
        if let Some((meta, at)) = split(&prefix, payload_len) {
            prefix.truncate(at);
            return Ok(Some(ImagePrefix {
                meta,
                image_len: payload_len - at as u64,
                head: prefix,
                crc32c: word(20),
            }));
        }
        if n == payload_len || n == present || n >= HEAD_LIMIT {
            // An encoding of an earlier release inside this header.
            return Ok(None);
        }
        want *= 8;
    }
}

/// Where the snapshot in `dir` lives.
pub fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOT_FILE)
}

/// Reads the snapshot in `dir` on the real file system without changing
/// anything, so it is safe while the node saves a new one (the rename is atomic).
pub fn read_snapshot(dir: &Path) -> Result<Option<Snapshot>, StorageError> {
    SnapshotStore {
        vfs: Arc::new(super::vfs::RealFs),
        dir: dir.to_path_buf(),
        saved: Arc::new(Mutex::new(0)),
    }
    .load()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::storage::frame::encode_framed;
    use crate::types::ClusterConfig;

    /// Written in pieces, the file is byte for byte the header and the whole
    /// encoded snapshot (bincode's length prefixes of every width), and it
    /// loads back unchanged; so does the 32-bit frame of earlier releases.
    #[test]
    fn a_snapshot_written_in_pieces_is_its_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(Arc::new(super::super::vfs::RealFs), dir.path()).unwrap();
        let mut config = ClusterConfig::default();
        config.voters.insert(
            "n1".into(),
            types::MemberAddr {
                raft_addr: "h:1".into(),
                client_addr: "h:2".into(),
            },
        );
        for (i, len) in [0usize, 1, 250, 251, 65_535, 65_536, 300_000]
            .into_iter()
            .enumerate()
        {
            let snap = Snapshot {
                meta: SnapshotMeta {
                    last_index: 10 + i as u64,
                    last_term: 2,
                    config: config.clone(),
                },
                data: (0..len).map(|b| (b * 7 % 251) as u8).collect(),
            };
            assert!(store.save(&snap).unwrap());
            let payload = types::encode(&snap).unwrap();
            let mut expected = file_header(payload.len() as u64, crc32c::crc32c(&payload)).to_vec();
            expected.extend_from_slice(&payload);
            let on_disk = std::fs::read(store.path()).unwrap();
            assert!(on_disk == expected, "image of {len} bytes");
            assert_eq!(store.load().unwrap(), Some(snap.clone()));
            // A file of an earlier release (one 32-bit frame) still loads.
            let mut framed = Vec::new();
            encode_framed(&snap, &mut framed).unwrap();
            std::fs::write(store.path(), &framed).unwrap();
            assert_eq!(store.load().unwrap(), Some(snap));
            // Damage anywhere, or a cut, is refused.
            for at in [9, 17, 21, on_disk.len() - 1] {
                let mut bad = on_disk.clone();
                bad[at] ^= 0x10;
                std::fs::write(store.path(), &bad).unwrap();
                assert!(store.load().is_err(), "byte {at} of {len} damaged");
            }
            std::fs::write(store.path(), &on_disk[..on_disk.len() - 1]).unwrap();
            assert!(store.load().is_err(), "cut by one byte");
        }
    }

    /// Opened to be sent, a saved snapshot gives the same head, checksum and
    /// image as the snapshot in memory, reading only what is asked for; the
    /// open file still reads the old image after a newer one replaced it.
    /// A file of the earlier format is loaded whole and gives the same.
    #[test]
    fn a_snapshot_opened_for_sending_reads_its_image_by_offset() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(Arc::new(super::super::vfs::RealFs), dir.path()).unwrap();
        assert!(open_snapshot_file(dir.path()).unwrap().is_none());
        let snap = |index: u64, len: usize| Snapshot {
            meta: SnapshotMeta {
                last_index: index,
                last_term: 2,
                config: ClusterConfig::default(),
            },
            data: (0..len).map(|b| (b * 13 % 251) as u8).collect(),
        };
        let first = snap(10, 200_000);
        store.save(&first).unwrap();
        let opened = open_snapshot_file(dir.path()).unwrap().unwrap();
        let expected = SnapshotFile::from_snapshot(first.clone()).unwrap();
        assert_eq!(opened.meta, first.meta);
        assert_eq!(opened.head, expected.head);
        assert_eq!(opened.crc32c, expected.crc32c);
        assert_eq!(opened.image_len, 200_000);
        assert_eq!(opened.bytes_read(), 0, "opening read the image");
        store.save(&snap(11, 5)).unwrap();
        let mut piece = vec![0u8; 1000];
        opened.read_image_at(150_000, &mut piece).unwrap();
        assert!(piece[..] == first.data[150_000..151_000]);
        assert_eq!(opened.bytes_read(), 1000);
        let mut past = vec![0u8; 2];
        assert!(opened.read_image_at(199_999, &mut past).is_err());
        assert_eq!(
            decode_snapshot_head(&opened.head),
            Some((first.meta.clone(), 200_000))
        );
        opened.verify().unwrap();
        // Damage in the image is not seen at open, only by a whole check.
        assert!(store.save(&snap(12, 200_000)).unwrap());
        let mut bytes = std::fs::read(store.path()).unwrap();
        let at = bytes.len() - 500;
        bytes[at] ^= 1;
        std::fs::write(store.path(), &bytes).unwrap();
        let damaged = open_snapshot_file(dir.path()).unwrap().unwrap();
        assert!(damaged.verify().is_err());

        let mut framed = Vec::new();
        encode_framed(&first, &mut framed).unwrap();
        std::fs::write(store.path(), &framed).unwrap();
        let old = open_snapshot_file(dir.path()).unwrap().unwrap();
        assert_eq!((&old.head, old.crc32c), (&expected.head, expected.crc32c));
        let mut all = vec![0u8; 200_000];
        old.read_image_at(0, &mut all).unwrap();
        assert!(all == first.data);
    }
}
