//! `LazyFs`: an in-memory FUSE filesystem that forgets what was not fsynced.
//!
//! The harness mounts one on each node's data dir so that a power loss can
//! be real: [`LazyFs::power_loss`] undoes every write and truncate made to a
//! file since its last `fsync`/`fdatasync` (as LazyFS does for etcd's
//! robustness tests). SIGKILL alone keeps the page cache, so it cannot show a
//! missing fsync. Names (create, rename, unlink, mkdir) are durable at once:
//! the model is a filesystem with a synchronous journal for metadata and
//! delayed data, which is how a file that was created but never fsynced
//! comes back empty after a crash.
//!
//! Each file keeps its current bytes plus an undo log of what the writes
//! since the last fsync overwrote, so an fsync is O(1) and appending a WAL
//! costs no copies. The kernel caches nothing: attributes have a zero TTL and
//! files are opened with direct I/O, so after a power loss the node sees
//! exactly what survived. Everything runs on fuser's own thread; no Python.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use pyo3::prelude::*;

use crate::errors::harness_error;

const TTL: Duration = Duration::ZERO;

/// What one write or truncate changed, enough to undo it.
struct Undo {
    offset: u64,
    old: Vec<u8>,
    old_len: u64,
}

enum Body {
    File { data: Vec<u8>, undo: Vec<Undo> },
    Dir { entries: BTreeMap<OsString, u64> },
}

struct Inode {
    body: Body,
    perm: u16,
    mtime: SystemTime,
    parent: u64,
}

#[derive(Default)]
struct Counters {
    fsyncs: u64,
    power_losses: u64,
    bytes_lost: u64,
    writes_lost: u64,
}

struct State {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    uid: u32,
    gid: u32,
    counters: Counters,
}

impl State {
    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let node = self.inodes.get(&ino)?;
        let (kind, size, nlink) = match &node.body {
            Body::File { data, .. } => (FileType::RegularFile, data.len() as u64, 1),
            Body::Dir { .. } => (FileType::Directory, 0, 2),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: node.mtime,
            mtime: node.mtime,
            ctime: node.mtime,
            crtime: node.mtime,
            kind,
            perm: node.perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn entries(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        match self.inodes.get_mut(&ino).map(|n| &mut n.body) {
            Some(Body::Dir { entries }) => Ok(entries),
            Some(Body::File { .. }) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn child(&mut self, parent: u64, name: &OsStr) -> Result<Option<u64>, Errno> {
        Ok(self.entries(parent)?.get(name).copied())
    }

    fn add(&mut self, parent: u64, name: &OsStr, body: Body, perm: u16) -> Result<u64, Errno> {
        if self.child(parent, name)?.is_some() {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let node = Inode {
            body,
            perm,
            mtime: SystemTime::now(),
            parent,
        };
        self.inodes.insert(ino, node);
        self.entries(parent)?.insert(name.to_owned(), ino);
        Ok(ino)
    }

    fn file(&mut self, ino: u64) -> Result<(&mut Vec<u8>, &mut Vec<Undo>), Errno> {
        match self.inodes.get_mut(&ino).map(|n| &mut n.body) {
            Some(Body::File { data, undo }) => Ok((data, undo)),
            Some(Body::Dir { .. }) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn write(&mut self, ino: u64, offset: u64, bytes: &[u8]) -> Result<(), Errno> {
        let (data, undo) = self.file(ino)?;
        let start = usize::try_from(offset).map_err(|_| Errno::EFBIG)?;
        let end = start.checked_add(bytes.len()).ok_or(Errno::EFBIG)?;
        let old_len = data.len() as u64;
        let kept = data.get(start..end.min(data.len())).unwrap_or_default();
        undo.push(Undo {
            offset,
            old: kept.to_vec(),
            old_len,
        });
        if data.len() < end {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(bytes);
        self.touch(ino);
        Ok(())
    }

    fn truncate(&mut self, ino: u64, size: u64) -> Result<(), Errno> {
        let (data, undo) = self.file(ino)?;
        let new_len = usize::try_from(size).map_err(|_| Errno::EFBIG)?;
        let old_len = data.len() as u64;
        let old = data.get(new_len..).unwrap_or_default().to_vec();
        undo.push(Undo {
            offset: size,
            old,
            old_len,
        });
        data.resize(new_len, 0);
        self.touch(ino);
        Ok(())
    }

    fn touch(&mut self, ino: u64) {
        if let Some(node) = self.inodes.get_mut(&ino) {
            node.mtime = SystemTime::now();
        }
    }

    fn fsync(&mut self, ino: u64) {
        self.counters.fsyncs += 1;
        if let Ok((_, undo)) = self.file(ino) {
            undo.clear();
        }
    }

    /// Undoes, newest first, every change not fsynced, in every file.
    fn power_loss(&mut self) -> (u64, u64) {
        let (mut writes, mut bytes) = (0u64, 0u64);
        for node in self.inodes.values_mut() {
            let Body::File { data, undo } = &mut node.body else {
                continue;
            };
            writes += undo.len() as u64;
            let before = data.len() as u64;
            while let Some(change) = undo.pop() {
                let start = change.offset as usize;
                let end = start + change.old.len();
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[start..end].copy_from_slice(&change.old);
                data.resize(change.old_len as usize, 0);
            }
            bytes += before.abs_diff(data.len() as u64);
        }
        self.counters.power_losses += 1;
        self.counters.writes_lost += writes;
        self.counters.bytes_lost += bytes;
        (writes, bytes)
    }

    fn unsynced(&self) -> (u64, u64) {
        let mut writes = 0u64;
        let mut bytes = 0u64;
        for node in self.inodes.values() {
            if let Body::File { undo, data } = &node.body {
                writes += undo.len() as u64;
                if let Some(first) = undo.first() {
                    bytes += (data.len() as u64).abs_diff(first.old_len);
                }
            }
        }
        (writes, bytes)
    }
}

/// The fuser side: every request locks the state once.
struct Fs(Arc<Mutex<State>>);

impl Fs {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic on fuser's thread must not wedge the node's disk.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn reply_entry(state: &State, ino: u64, reply: ReplyEntry) {
    match state.attr(ino) {
        Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
        None => reply.error(Errno::ENOENT),
    }
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut state = self.lock();
        match state.child(parent.0, name) {
            Ok(Some(ino)) => reply_entry(&state, ino, reply),
            Ok(None) => reply.error(Errno::ENOENT),
            Err(err) => reply.error(err),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.lock().attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.lock();
        if let Some(size) = size
            && let Err(err) = state.truncate(ino.0, size)
        {
            return reply.error(err);
        }
        if let Some(mode) = mode
            && let Some(node) = state.inodes.get_mut(&ino.0)
        {
            node.perm = (mode & 0o7777) as u16;
        }
        match state.attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut state = self.lock();
        let body = Body::Dir {
            entries: BTreeMap::new(),
        };
        match state.add(parent.0, name, body, (mode & !umask & 0o7777) as u16) {
            Ok(ino) => reply_entry(&state, ino, reply),
            Err(err) => reply.error(err),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.lock();
        match state.child(parent.0, name) {
            Ok(Some(ino)) if matches!(state.inodes[&ino].body, Body::Dir { .. }) => {
                reply.error(Errno::EISDIR)
            }
            Ok(Some(ino)) => {
                if let Ok(entries) = state.entries(parent.0) {
                    entries.remove(name);
                }
                state.inodes.remove(&ino);
                reply.ok();
            }
            Ok(None) => reply.error(Errno::ENOENT),
            Err(err) => reply.error(err),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.lock();
        let ino = match state.child(parent.0, name) {
            Ok(Some(ino)) => ino,
            Ok(None) => return reply.error(Errno::ENOENT),
            Err(err) => return reply.error(err),
        };
        match state.entries(ino) {
            Ok(entries) if !entries.is_empty() => return reply.error(Errno::ENOTEMPTY),
            Ok(_) => {}
            Err(err) => return reply.error(err),
        }
        if let Ok(entries) = state.entries(parent.0) {
            entries.remove(name);
        }
        state.inodes.remove(&ino);
        reply.ok();
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut state = self.lock();
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(Errno::EINVAL);
        }
        let ino = match state.child(parent.0, name) {
            Ok(Some(ino)) => ino,
            Ok(None) => return reply.error(Errno::ENOENT),
            Err(err) => return reply.error(err),
        };
        let replaced = match state.child(newparent.0, newname) {
            Ok(found) => found,
            Err(err) => return reply.error(err),
        };
        if let Some(old) = replaced {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return reply.error(Errno::EEXIST);
            }
            if let Ok(entries) = state.entries(old)
                && !entries.is_empty()
            {
                return reply.error(Errno::ENOTEMPTY);
            }
            if old != ino {
                state.inodes.remove(&old);
            }
        }
        if let Ok(entries) = state.entries(parent.0) {
            entries.remove(name);
        }
        match state.entries(newparent.0) {
            Ok(entries) => {
                entries.insert(newname.to_owned(), ino);
            }
            Err(err) => return reply.error(err),
        }
        if let Some(node) = state.inodes.get_mut(&ino) {
            node.parent = newparent.0;
        }
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.lock().inodes.contains_key(&ino.0) {
            reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
        } else {
            reply.error(Errno::ENOENT);
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = self.lock();
        let body = Body::File {
            data: Vec::new(),
            undo: Vec::new(),
        };
        let made = state.add(parent.0, name, body, (mode & !umask & 0o7777) as u16);
        match made.map(|ino| state.attr(ino)) {
            Ok(Some(attr)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Ok(None) => reply.error(Errno::EIO),
            Err(err) => reply.error(err),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut state = self.lock();
        match state.file(ino.0) {
            Ok((data, _)) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                let end = start.saturating_add(size as usize).min(data.len());
                reply.data(&data[start..end]);
            }
            Err(err) => reply.error(err),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.lock().write(ino.0, offset, data) {
            Ok(()) => reply.written(data.len() as u32),
            Err(err) => reply.error(err),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.lock().fsync(ino.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut state = self.lock();
        let parent = state.inodes.get(&ino.0).map_or(1, |n| n.parent);
        let names: Vec<(OsString, u64)> = match state.entries(ino.0) {
            Ok(entries) => entries.iter().map(|(n, i)| (n.clone(), *i)).collect(),
            Err(err) => return reply.error(err),
        };
        let mut all = vec![
            (OsString::from("."), ino.0, FileType::Directory),
            (OsString::from(".."), parent, FileType::Directory),
        ];
        for (name, child) in names {
            let kind = match state.inodes.get(&child).map(|n| &n.body) {
                Some(Body::Dir { .. }) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            all.push((name, child, kind));
        }
        for (i, (name, child, kind)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ds: bool,
        reply: ReplyEmpty,
    ) {
        // Names are durable at once (see the module doc).
        self.lock().counters.fsyncs += 1;
        reply.ok();
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}

/// A mounted `LazyFs` (Python: `titanstore._titanstore.LazyFs`).
#[pyclass(module = "titanstore._titanstore")]
pub struct LazyFs {
    state: Arc<Mutex<State>>,
    session: Mutex<Option<BackgroundSession>>,
    mountpoint: String,
}

#[pymethods]
impl LazyFs {
    /// Mounts an empty filesystem on `mountpoint` (an existing empty dir).
    #[new]
    fn new(py: Python<'_>, mountpoint: String) -> PyResult<Self> {
        let state = Arc::new(Mutex::new(State {
            inodes: HashMap::from([(
                1,
                Inode {
                    body: Body::Dir {
                        entries: BTreeMap::new(),
                    },
                    perm: 0o755,
                    mtime: SystemTime::now(),
                    parent: 1,
                },
            )]),
            next_ino: 2,
            uid: std::fs::metadata(&mountpoint)
                .map_or(0, |m| std::os::unix::fs::MetadataExt::uid(&m)),
            gid: std::fs::metadata(&mountpoint)
                .map_or(0, |m| std::os::unix::fs::MetadataExt::gid(&m)),
            counters: Counters::default(),
        }));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("titanstore-lazyfs".into()),
            MountOption::DefaultPermissions,
        ];
        let fs = Fs(Arc::clone(&state));
        let session = py
            .detach(|| fuser::spawn_mount(fs, &mountpoint, &config))
            .map_err(|err| {
                harness_error(py, format!("cannot mount LazyFs on {mountpoint}: {err}"))
            })?;
        Ok(LazyFs {
            state,
            session: Mutex::new(Some(session)),
            mountpoint,
        })
    }

    #[getter]
    fn mountpoint(&self) -> &str {
        &self.mountpoint
    }

    /// Drops every write not fsynced; returns `(writes, bytes)` undone.
    /// Kill the process using the filesystem first.
    fn power_loss(&self) -> (u64, u64) {
        Fs(Arc::clone(&self.state)).lock().power_loss()
    }

    /// `(writes, bytes)` not yet fsynced.
    fn unsynced(&self) -> (u64, u64) {
        Fs(Arc::clone(&self.state)).lock().unsynced()
    }

    /// Counters since the mount: `fsyncs`, `power_losses`, `writes_lost`, `bytes_lost`.
    fn stats(&self) -> HashMap<&'static str, u64> {
        let state = Fs(Arc::clone(&self.state));
        let state = state.lock();
        let c = &state.counters;
        HashMap::from([
            ("fsyncs", c.fsyncs),
            ("power_losses", c.power_losses),
            ("writes_lost", c.writes_lost),
            ("bytes_lost", c.bytes_lost),
        ])
    }

    /// Unmounts (every file is gone with it); a second call does nothing.
    fn unmount(&self, py: Python<'_>) -> PyResult<()> {
        let session = self.session.lock().ok().and_then(|mut s| s.take());
        if let Some(session) = session {
            py.detach(|| session.umount_and_join()).map_err(|err| {
                harness_error(py, format!("cannot unmount {}: {err}", self.mountpoint))
            })?;
        }
        Ok(())
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        if let Some(session) = self.session.get_mut().ok().and_then(|s| s.take()) {
            let _ = session.umount_and_join();
        }
    }
}
