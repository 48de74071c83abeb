//! A simulated, crashable file system for tests ([`SimFs`]).
//!
//! Each file keeps its durable bytes (as of its last fsync) apart from its
//! current bytes, and the namespace keeps its durable view (as of the last
//! directory fsync) apart from its current one. [`SimFs::crash`] throws away
//! everything not made durable: un-synced appends (also writes into a
//! preallocated zero tail) are lost or torn at a random byte, un-synced
//! creates, renames and removals are undone. A preallocated tail costs no
//! memory. With a capacity set, every write needs room for its bytes, even
//! one into preallocated space, as on a copy-on-write file system (btrfs,
//! ZFS): the engine must cope with ENOSPC anywhere. Directories
//! themselves are durable at once (a simplification: the engine creates them
//! only at open). An operation budget ([`SimFs::fail_after`]) makes every
//! mutating operation fail after N of them, to stop a writer at any step.
//! Cheap to clone (`Arc<Mutex<..>>` inside), `Send + Sync`; a crash with a
//! given seed is deterministic. A crash hits the whole disk: give each
//! simulated machine its own `SimFs`. Crashing while a `Storage` is still
//! open is fine: its handles and lock die with the crash.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::vfs::{AppendFile, Finished, Preallocation, Vfs, VfsLock};

/// The simulated file system. Clones share the same disk.
#[derive(Clone, Debug, Default)]
pub struct SimFs {
    state: Arc<Mutex<SimState>>,
}

/// A file's contents: `bytes`, then zeros up to `len`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Image {
    bytes: Vec<u8>,
    len: usize,
}

impl Image {
    fn from_bytes(bytes: &[u8]) -> Self {
        Image {
            bytes: bytes.to_vec(),
            len: bytes.len(),
        }
    }

    fn byte(&self, i: usize) -> u8 {
        self.bytes.get(i).copied().unwrap_or(0)
    }

    fn to_vec(&self) -> Vec<u8> {
        let mut out = self.bytes.clone();
        out.resize(self.len, 0);
        out
    }

    fn write_at(&mut self, offset: usize, data: &[u8]) {
        let end = offset + data.len();
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        self.bytes[offset..end].copy_from_slice(data);
        self.len = self.len.max(end);
    }

    fn set_len(&mut self, len: usize) {
        self.bytes.truncate(len);
        self.len = len;
    }

    /// What survives a power loss of a file last synced as `durable`. If the
    /// changes since are writes past a point after which `durable` holds only
    /// zeros (appends, also into a preallocated tail), a random prefix of
    /// them survives; any other change survives whole or not at all.
    fn after_power_loss(durable: &Image, current: &Image, rng: &mut SmallRng) -> Image {
        let (d, c) = (durable, current);
        let common = d.len.min(c.len);
        let scan = d.bytes.len().max(c.bytes.len()).min(common);
        let differs = |i: &usize| d.byte(*i) != c.byte(*i);
        let from = (0..scan).find(differs).unwrap_or(common);
        let zeros_after = d
            .bytes
            .get(from..)
            .is_none_or(|r| r.iter().all(|&b| b == 0));
        if c.len >= d.len && zeros_after {
            let end = if c.len > d.len {
                c.len
            } else {
                (from..scan).rev().find(differs).map_or(from, |i| i + 1)
            };
            let extra = end - from;
            let keep = match rng.random_range(0..4u8) {
                0 => 0,
                1 => extra,
                _ => rng.random_range(0..=extra),
            };
            let cut = from + keep;
            Image {
                bytes: c.bytes[..cut.min(c.bytes.len())].to_vec(),
                len: d.len.max(cut),
            }
        } else if rng.random_bool(0.5) {
            c.clone()
        } else {
            d.clone()
        }
    }
}

#[derive(Debug, Default)]
struct Inode {
    durable: Image,
    current: Image,
}

#[derive(Debug, Default)]
struct SimState {
    /// Ordered, so that a crash with a given seed is deterministic.
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
    /// Bumped by every crash; handles from before a crash stop working.
    generation: u64,
    /// Mutating operations left before every one fails (`None`: unlimited).
    budget: Option<u64>,
    file_syncs: u64,
    /// Bytes the disk holds at most (`None`: unlimited); see [`SimFs::set_capacity`].
    capacity: Option<u64>,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: not found", path.display()),
    )
}

fn disk_full() -> io::Error {
    io::Error::new(io::ErrorKind::StorageFull, "simulated full disk")
}

impl SimState {
    /// Bytes in use (every file's current contents).
    fn used(&self) -> u64 {
        self.inodes.values().map(|i| i.current.len as u64).sum()
    }

    /// How many of `wanted` more bytes fit.
    fn room(&self, wanted: usize) -> usize {
        match self.capacity {
            None => wanted,
            Some(cap) => {
                let free = cap.saturating_sub(self.used());
                wanted.min(usize::try_from(free).unwrap_or(usize::MAX))
            }
        }
    }

    fn spend(&mut self) -> io::Result<()> {
        match &mut self.budget {
            Some(0) => Err(io::Error::other("simulated power loss")),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn check_parent(&self, path: &Path) -> io::Result<()> {
        if self.dirs.contains(path) {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            ));
        }
        match path.parent() {
            Some(p) if self.dirs.contains(p) => Ok(()),
            _ => Err(not_found(path)),
        }
    }

    fn inode(&mut self, path: &Path) -> io::Result<&mut Inode> {
        if self.dirs.contains(path) {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            ));
        }
        let ino = *self.names.get(path).ok_or_else(|| not_found(path))?;
        self.inodes.get_mut(&ino).ok_or_else(|| not_found(path))
    }

    fn create(&mut self, path: &Path) -> io::Result<u64> {
        self.check_parent(path)?;
        if let Some(&ino) = self.names.get(path) {
            return Ok(ino);
        }
        self.next_inode += 1;
        let ino = self.next_inode;
        self.inodes.insert(ino, Inode::default());
        self.names.insert(path.to_path_buf(), ino);
        Ok(ino)
    }
}

impl SimFs {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Simulates power loss: everything not fsynced is lost, un-synced
    /// appends possibly torn at a random byte. Open handles and locks die.
    pub fn crash(&self, seed: u64) {
        self.crash_with(seed, false);
    }

    /// Like [`SimFs::crash`], but each un-synced directory change (per file
    /// name) independently survives or not, as a real file system may have
    /// written some directory blocks back on its own.
    pub fn crash_keeping_some_dir_changes(&self, seed: u64) {
        self.crash_with(seed, true);
    }

    fn crash_with(&self, seed: u64, keep_some_dir_changes: bool) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut st = self.lock();
        if keep_some_dir_changes {
            let st = &mut *st;
            let paths: BTreeSet<PathBuf> = st
                .names
                .keys()
                .chain(st.durable_names.keys())
                .cloned()
                .collect();
            for path in paths {
                if st.names.get(&path) != st.durable_names.get(&path) && rng.random_bool(0.5) {
                    match st.names.get(&path) {
                        Some(&ino) => st.durable_names.insert(path, ino),
                        None => st.durable_names.remove(&path),
                    };
                }
            }
        }
        for inode in st.inodes.values_mut() {
            let kept = Image::after_power_loss(&inode.durable, &inode.current, &mut rng);
            inode.durable = kept.clone();
            inode.current = kept;
        }
        st.names = st.durable_names.clone();
        let live: BTreeSet<u64> = st.names.values().copied().collect();
        st.inodes.retain(|ino, _| live.contains(ino));
        st.locks.clear();
        st.generation += 1;
        st.budget = None;
    }

    /// Simulates the process dying (SIGKILL) while the machine stays up: open
    /// handles and locks die, but nothing is lost, synced or not: the page
    /// cache still holds every write. A later [`SimFs::crash`] still drops
    /// what nobody fsynced.
    pub fn kill_process(&self) {
        let mut st = self.lock();
        st.locks.clear();
        st.generation += 1;
        st.budget = None;
    }

    /// After `ops` more mutating operations, every mutating operation fails
    /// (until [`SimFs::crash`]). `None` removes the limit.
    pub fn fail_after(&self, ops: Option<u64>) {
        self.lock().budget = ops;
    }

    /// Limits the disk to `bytes` in all (`None`: unlimited). A write that
    /// does not fit writes what fits and fails with `StorageFull` (ENOSPC),
    /// as a real file system does.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.lock().capacity = bytes;
    }

    /// Bytes the files hold now.
    pub fn used_bytes(&self) -> u64 {
        self.lock().used()
    }

    /// The current bytes of a file, if it exists.
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.lock();
        let ino = st.names.get(path)?;
        st.inodes.get(ino).map(|i| i.current.to_vec())
    }

    /// Overwrites a file's bytes, durably (to inject corruption).
    pub fn set_file_bytes(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut st = self.lock();
        let inode = st.inode(path)?;
        inode.current = Image::from_bytes(bytes);
        inode.durable = Image::from_bytes(bytes);
        Ok(())
    }

    /// Number of file fsyncs (`sync_data` and `sync_file`) so far.
    pub fn file_syncs(&self) -> u64 {
        self.lock().file_syncs
    }
}

#[derive(Debug)]
struct SimAppendFile {
    fs: SimFs,
    path: PathBuf,
    inode: u64,
    generation: u64,
}

impl SimAppendFile {
    fn with_inode<R>(&self, f: impl FnOnce(&mut Inode) -> R) -> io::Result<R> {
        let mut st = self.fs.lock();
        if st.generation != self.generation {
            return Err(io::Error::other("handle from before a simulated crash"));
        }
        st.spend()?;
        let inode = st
            .inodes
            .get_mut(&self.inode)
            .ok_or_else(|| not_found(&self.path))?;
        Ok(f(inode))
    }
}

impl AppendFile for SimAppendFile {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let offset = usize::try_from(offset).map_err(io::Error::other)?;
        let room = self.fs.lock().room(data.len());
        self.with_inode(|i| i.current.write_at(offset, &data[..room]))?;
        if room < data.len() {
            return Err(disk_full());
        }
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(io::Error::other)?;
        self.with_inode(|i| i.current.set_len(len))
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.with_inode(|i| i.durable = i.current.clone())?;
        self.fs.lock().file_syncs += 1;
        Ok(())
    }
}

#[derive(Debug)]
struct SimLock {
    fs: SimFs,
    path: PathBuf,
    generation: u64,
}

impl VfsLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut st = self.fs.lock();
        if st.generation == self.generation {
            st.locks.remove(&self.path);
        }
    }
}

impl Vfs for SimFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        if st.names.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "a file is in the way",
            ));
        }
        for dir in path.ancestors() {
            if st.names.contains_key(dir) {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    "not a directory",
                ));
            }
            st.dirs.insert(dir.to_path_buf());
        }
        Ok(())
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let mut st = self.lock();
        st.spend()?;
        let inode = st.create(path)?;
        Ok(Box::new(SimAppendFile {
            fs: self.clone(),
            path: path.to_path_buf(),
            inode,
            generation: st.generation,
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        Ok(self.lock().inode(path)?.current.to_vec())
    }

    fn read_at(&self, path: &Path, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut st = self.lock();
        let data = &st.inode(path)?.current;
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let end = start.saturating_add(len);
        if end > data.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past end",
            ));
        }
        Ok((start..end).map(|i| data.byte(i)).collect())
    }

    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut st = self.lock();
        st.spend()?;
        let ino = st.create(path)?;
        // Like `File::create` + `write_all`: truncated first, then filled.
        if let Some(inode) = st.inodes.get_mut(&ino) {
            inode.current = Image::default();
        }
        let room = st.room(data.len());
        if let Some(inode) = st.inodes.get_mut(&ino) {
            inode.current = Image::from_bytes(&data[..room]);
        }
        if room < data.len() {
            return Err(disk_full());
        }
        Ok(())
    }

    /// Done at once (deterministic): the zeros, then an fsync, each one
    /// mutating operation; on a full disk what fits is written, then removed.
    fn preallocate(&self, path: &Path, len: u64) -> Box<dyn Preallocation> {
        let mut st = self.lock();
        let done = (|| {
            st.spend()?;
            if st.names.contains_key(path) {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
            }
            let ino = st.create(path)?;
            let len = usize::try_from(len).map_err(io::Error::other)?;
            let room = st.room(len);
            if let Some(inode) = st.inodes.get_mut(&ino) {
                inode.current = Image {
                    bytes: Vec::new(),
                    len: room,
                };
            }
            if room < len {
                st.names.remove(path);
                st.inodes.remove(&ino);
                return Err(disk_full());
            }
            st.spend()?;
            st.file_syncs += 1;
            let inode = st.inode(path)?;
            inode.durable = inode.current.clone();
            Ok(())
        })();
        Box::new(Finished(done))
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.spend()?;
        st.file_syncs += 1;
        let inode = st.inode(path)?;
        inode.durable = inode.current.clone();
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.spend()?;
        st.check_parent(to)?;
        let ino = st.names.remove(from).ok_or_else(|| not_found(from))?;
        st.names.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.spend()?;
        st.names
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let st = self.lock();
        if !st.dirs.contains(path) {
            return Err(not_found(path));
        }
        let files = st.names.keys().filter(|p| p.parent() == Some(path));
        let dirs = st.dirs.iter().filter(|p| p.parent() == Some(path));
        Ok(files
            .chain(dirs)
            .filter_map(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .collect())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.spend()?;
        if !st.dirs.contains(path) {
            return Err(not_found(path));
        }
        let in_dir = |p: &PathBuf| p.parent() == Some(path);
        st.durable_names.retain(|p, _| !in_dir(p));
        let current: Vec<(PathBuf, u64)> = st
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        st.durable_names.extend(current);
        Ok(())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut st = self.lock();
        st.spend()?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        st.inode(path)?.current.set_len(len);
        Ok(())
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(self.lock().inode(path)?.current.len as u64)
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn VfsLock>>> {
        let mut st = self.lock();
        st.check_parent(path)?;
        if !st.locks.insert(path.to_path_buf()) {
            return Ok(None);
        }
        Ok(Some(Box::new(SimLock {
            fs: self.clone(),
            path: path.to_path_buf(),
            generation: st.generation,
        })))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn fs_with_dir() -> (SimFs, PathBuf) {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        (fs, PathBuf::from("/d"))
    }

    #[test]
    fn unsynced_create_is_lost_and_synced_one_survives() {
        let (fs, d) = fs_with_dir();
        fs.write(&d.join("a"), b"aaa").unwrap();
        fs.sync_file(&d.join("a")).unwrap();
        fs.crash(1);
        assert!(
            fs.file_bytes(&d.join("a")).is_none(),
            "create without dir sync survived"
        );
        fs.write(&d.join("a"), b"aaa").unwrap();
        fs.sync_file(&d.join("a")).unwrap();
        fs.sync_dir(&d).unwrap();
        fs.crash(2);
        assert_eq!(fs.file_bytes(&d.join("a")).unwrap(), b"aaa");
    }

    #[test]
    fn unsynced_appends_are_lost_or_torn_never_garbled() {
        for seed in 0..50 {
            let (fs, d) = fs_with_dir();
            let mut f = fs.open_append(&d.join("log")).unwrap();
            fs.sync_dir(&d).unwrap();
            f.write_at(0, b"durable|").unwrap();
            f.sync_data().unwrap();
            f.write_at(8, b"pending").unwrap();
            fs.crash(seed);
            let got = fs.file_bytes(&d.join("log")).unwrap();
            assert!(
                b"durable|pending".starts_with(&got) && got.len() >= 8,
                "{got:?}"
            );
            assert!(f.write_at(15, b"x").is_err(), "handle survived the crash");
        }
    }

    #[test]
    fn unsynced_writes_into_a_preallocated_tail_are_lost_or_torn() {
        let mut seen_torn = false;
        for seed in 0..50 {
            let (fs, d) = fs_with_dir();
            let path = d.join("seg");
            fs.preallocate(&path, 64).wait().unwrap();
            fs.sync_dir(&d).unwrap();
            let mut f = fs.open_append(&path).unwrap();
            f.write_at(0, b"durable|").unwrap();
            f.sync_data().unwrap();
            f.write_at(8, b"pending").unwrap();
            fs.crash(seed);
            let got = fs.file_bytes(&path).unwrap();
            assert_eq!(got.len(), 64, "the preallocated size was lost");
            let end = got.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            assert!(end >= 8 && b"durable|pending".starts_with(&got[..end]));
            seen_torn |= end > 8 && end < 15;
        }
        assert!(seen_torn, "never torn");
    }

    #[test]
    fn a_preallocation_that_does_not_fit_leaves_no_file() {
        let (fs, d) = fs_with_dir();
        fs.set_capacity(Some(100));
        let err = fs.preallocate(&d.join("spare"), 200).wait().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert!(fs.file_bytes(&d.join("spare")).is_none());
        assert_eq!(fs.used_bytes(), 0);
        fs.preallocate(&d.join("spare"), 100).wait().unwrap();
        assert_eq!(fs.used_bytes(), 100);
    }

    #[test]
    fn unsynced_rename_is_undone() {
        let (fs, d) = fs_with_dir();
        fs.write(&d.join("old"), b"1").unwrap();
        fs.sync_file(&d.join("old")).unwrap();
        fs.sync_dir(&d).unwrap();
        fs.rename(&d.join("old"), &d.join("new")).unwrap();
        fs.crash(3);
        assert_eq!(fs.list_dir(&d).unwrap(), vec!["old".to_string()]);
    }

    #[test]
    fn budget_fails_mutations_and_locks_die_with_a_crash() {
        let (fs, d) = fs_with_dir();
        let lock = fs.try_lock(&d.join("LOCK")).unwrap();
        assert!(lock.is_some());
        assert!(fs.try_lock(&d.join("LOCK")).unwrap().is_none());
        fs.fail_after(Some(1));
        fs.write(&d.join("a"), b"1").unwrap();
        assert!(fs.sync_file(&d.join("a")).is_err());
        fs.crash(4);
        let new_holder = fs.try_lock(&d.join("LOCK")).unwrap();
        assert!(new_holder.is_some());
        drop(lock); // a stale guard must not release the new holder's lock
        assert!(fs.try_lock(&d.join("LOCK")).unwrap().is_none());
        fs.write(&d.join("a"), b"1").unwrap();
        assert!(fs.read(&d).is_err(), "reading a directory must fail");
    }

    #[test]
    fn crash_is_deterministic_for_a_seed() {
        let run = |seed| {
            let (fs, d) = fs_with_dir();
            for n in 0..20 {
                let mut f = fs.open_append(&d.join(format!("f{n}"))).unwrap();
                f.write_at(0, &[n; 100]).unwrap();
            }
            fs.sync_dir(&d).unwrap();
            fs.crash(seed);
            (0..20)
                .map(|n| fs.file_bytes(&d.join(format!("f{n}"))).unwrap().len())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
    }
}
