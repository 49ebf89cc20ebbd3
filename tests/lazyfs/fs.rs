//! The FUSE filesystem: a passthrough to a backing folder whose file data waits in memory
//! until fsync.
//!
//! Inode numbers are ours, one per path seen (the root is 1); a rename moves the number with
//! the path, an unlink orphans it. File data goes through [`Overlay`]s, one per inode with
//! unsynced writes; metadata operations go straight to the backing folder. Every file is
//! opened with `FOPEN_DIRECT_IO` and every attribute and entry is given a zero TTL, so the
//! kernel caches nothing that could hide a power cut.

use crate::overlay::Overlay;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, FileTimes, Metadata, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nothing is cached by the kernel.
const TTL: Duration = Duration::ZERO;

/// Counters for the `stats` command.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// FSYNC requests (fsync and fdatasync of files).
    pub fsyncs: u64,
    /// FSYNCDIR requests.
    pub fsyncdirs: u64,
    /// WRITE requests.
    pub writes: u64,
    /// Power cuts so far.
    pub cuts: u64,
}

/// What a power cut threw away.
#[derive(Debug, Clone, Copy)]
pub struct Cut {
    /// Files that had unsynced data or size changes.
    pub files: usize,
    /// Dirty bytes dropped (whole pages).
    pub bytes: u64,
}

struct Node {
    /// Backing path; `None` once unlinked or replaced by a rename.
    path: Option<PathBuf>,
    /// Open handles.
    open: u32,
}

struct Dirty {
    overlay: Overlay,
    /// The backing file, readable and writable.
    file: File,
}

struct Handle {
    ino: u64,
    file: File,
    writable: bool,
}

#[derive(Default)]
struct State {
    paths: HashMap<PathBuf, u64>,
    nodes: HashMap<u64, Node>,
    dirty: HashMap<u64, Dirty>,
    handles: HashMap<u64, Handle>,
    next_ino: u64,
    next_fh: u64,
    stats: Stats,
}

/// The filesystem; clones share one state (the FUSE session and the control loop).
#[derive(Clone)]
pub struct LazyFs {
    root: PathBuf,
    state: Arc<Mutex<State>>,
}

impl LazyFs {
    /// A filesystem over the folder `root`.
    pub fn new(root: PathBuf) -> LazyFs {
        let mut state = State {
            next_ino: 2,
            next_fh: 1,
            ..State::default()
        };
        state.paths.insert(root.clone(), 1);
        state.nodes.insert(
            1,
            Node {
                path: Some(root.clone()),
                open: 0,
            },
        );
        LazyFs {
            root,
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("no filesystem operation panics while holding the state")
    }

    /// The power cut: every unsynced write and size change is forgotten.
    pub fn cut(&self) -> Cut {
        let mut s = self.lock();
        let cut = Cut {
            files: s.dirty.len(),
            bytes: s.dirty.values().map(|d| d.overlay.dirty_bytes()).sum(),
        };
        s.dirty.clear();
        s.stats.cuts += 1;
        cut
    }

    /// Counters, and the unsynced files and bytes now.
    pub fn stats(&self) -> (Stats, Cut) {
        let s = self.lock();
        let pending = Cut {
            files: s.dirty.len(),
            bytes: s.dirty.values().map(|d| d.overlay.dirty_bytes()).sum(),
        };
        (s.stats, pending)
    }
}

impl State {
    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.nodes
            .get(&ino.0)
            .and_then(|n| n.path.clone())
            .ok_or(Errno::ENOENT)
    }

    fn ino_for(&mut self, path: &Path) -> u64 {
        if let Some(&ino) = self.paths.get(path) {
            return ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.paths.insert(path.to_path_buf(), ino);
        self.nodes.insert(
            ino,
            Node {
                path: Some(path.to_path_buf()),
                open: 0,
            },
        );
        ino
    }

    /// The name `path` no longer leads to its inode: forget the inode once it is closed.
    fn orphan(&mut self, path: &Path) {
        let Some(ino) = self.paths.remove(path) else {
            return;
        };
        let closed = match self.nodes.get_mut(&ino) {
            Some(node) => {
                node.path = None;
                node.open == 0
            }
            None => false,
        };
        if closed {
            self.nodes.remove(&ino);
            self.dirty.remove(&ino);
        }
    }

    /// `from` (and everything under it) is now called `to`.
    fn moved(&mut self, from: &Path, to: &Path) {
        let moved: Vec<(PathBuf, u64)> = self
            .paths
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, &ino)| (p.clone(), ino))
            .collect();
        for (old, _) in &moved {
            self.paths.remove(old);
        }
        for (old, ino) in moved {
            let new = match old.strip_prefix(from) {
                Ok(rest) if rest.as_os_str().is_empty() => to.to_path_buf(),
                Ok(rest) => to.join(rest),
                Err(_) => continue,
            };
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.path = Some(new.clone());
            }
            self.paths.insert(new, ino);
        }
    }

    /// Attributes of `ino` from `meta`, with the size the application sees.
    fn attr(&self, ino: u64, meta: &Metadata) -> FileAttr {
        let size = self
            .dirty
            .get(&ino)
            .map_or(meta.len(), |d| d.overlay.size());
        let time = |secs: i64, nanos: i64| {
            UNIX_EPOCH
                + Duration::new(
                    u64::try_from(secs).unwrap_or(0),
                    u32::try_from(nanos).unwrap_or(0),
                )
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512).max(meta.blocks()),
            atime: time(meta.atime(), meta.atime_nsec()),
            mtime: time(meta.mtime(), meta.mtime_nsec()),
            ctime: time(meta.ctime(), meta.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind: FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile),
            perm: (meta.mode() & 0o7777) as u16,
            nlink: u32::try_from(meta.nlink()).unwrap_or(u32::MAX),
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: u32::try_from(meta.rdev()).unwrap_or(0),
            blksize: 4096,
            flags: 0,
        }
    }

    /// Metadata of `ino`: from its path, or from an open handle once it is unlinked.
    fn metadata(&self, ino: INodeNo) -> Result<Metadata, Errno> {
        if let Ok(path) = self.path(ino) {
            return std::fs::symlink_metadata(path).map_err(Errno::from);
        }
        self.handles
            .values()
            .find(|h| h.ino == ino.0)
            .ok_or(Errno::ENOENT)?
            .file
            .metadata()
            .map_err(Errno::from)
    }

    /// The overlay of `ino`, made over `file` (readable and writable) if it has none yet.
    fn dirty(
        &mut self,
        ino: u64,
        file: impl FnOnce() -> io::Result<File>,
    ) -> io::Result<&mut Dirty> {
        Ok(match self.dirty.entry(ino) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let file = file()?;
                let overlay = Overlay::new(file.metadata()?.len());
                e.insert(Dirty { overlay, file })
            }
        })
    }

    fn open_handle(&mut self, ino: u64, file: File, writable: bool) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(
            fh,
            Handle {
                ino,
                file,
                writable,
            },
        );
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.open += 1;
        }
        fh
    }
}

/// Opens a backing file: read-only, or read and write (pages are filled from it).
fn open_backing(path: &Path, flags: i32) -> io::Result<(File, bool)> {
    let writable = OpenFlags(flags).acc_mode() != OpenAccMode::O_RDONLY;
    let file = OpenOptions::new().read(true).write(writable).open(path)?;
    Ok((file, writable))
}

fn entry_reply(fs: &LazyFs, path: &Path, reply: ReplyEntry) {
    let mut s = fs.lock();
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            let ino = s.ino_for(path);
            reply.entry(&TTL, &s.attr(ino, &meta), Generation(0));
        }
        Err(e) => reply.error(e.into()),
    }
}

fn attr_reply(s: &State, ino: INodeNo, reply: ReplyAttr) {
    match s.metadata(ino) {
        Ok(meta) => reply.attr(&TTL, &s.attr(ino.0, &meta)),
        Err(e) => reply.error(e),
    }
}

fn child(fs: &LazyFs, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
    Ok(fs.lock().path(parent)?.join(name))
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match child(self, parent, name) {
            Ok(path) => entry_reply(self, &path, reply),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        attr_reply(&self.lock(), ino, reply);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.lock();
        let result = (|| -> Result<(), Errno> {
            let path = s.path(ino);
            if let Some(mode) = mode {
                std::fs::set_permissions(path.clone()?, std::fs::Permissions::from_mode(mode))?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::lchown(path.clone()?, uid, gid)?;
            }
            if let Some(size) = size {
                // ftruncate or truncate: a size change is volatile like data.
                let handle = fh
                    .and_then(|fh| s.handles.get(&fh.0))
                    .filter(|h| h.writable);
                let from_handle = handle.map(|h| h.file.try_clone());
                let path = path.clone();
                let open = move || match from_handle {
                    Some(file) => file,
                    None => {
                        let path = path.map_err(|e| io::Error::from_raw_os_error(e.code()))?;
                        OpenOptions::new().read(true).write(true).open(path)
                    }
                };
                s.dirty(ino.0, open)?.overlay.truncate(size);
            }
            if atime.is_some() || mtime.is_some() {
                let when = |t: TimeOrNow| match t {
                    TimeOrNow::SpecificTime(t) => t,
                    TimeOrNow::Now => SystemTime::now(),
                };
                let mut times = FileTimes::new();
                if let Some(t) = atime {
                    times = times.set_accessed(when(t));
                }
                if let Some(t) = mtime {
                    times = times.set_modified(when(t));
                }
                File::open(path?)?.set_times(times)?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => attr_reply(&s, ino, reply),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let path = self.lock().path(ino);
        match path.and_then(|p| std::fs::read_link(p).map_err(Errno::from)) {
            Ok(target) => reply.data(target.as_os_str().as_bytes()),
            Err(e) => reply.error(e),
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
        let path = match child(self, parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        match std::fs::DirBuilder::new().mode(mode & !umask).create(&path) {
            Ok(()) => entry_reply(self, &path, reply),
            Err(e) => reply.error(e.into()),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let path = match child(self, parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        match std::fs::remove_file(&path) {
            Ok(()) => {
                self.lock().orphan(&path);
                reply.ok();
            }
            Err(e) => reply.error(e.into()),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let path = match child(self, parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        match std::fs::remove_dir(&path) {
            Ok(()) => {
                self.lock().orphan(&path);
                reply.ok();
            }
            Err(e) => reply.error(e.into()),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let path = match child(self, parent, link_name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        match std::os::unix::fs::symlink(target, &path) {
            Ok(()) => entry_reply(self, &path, reply),
            Err(e) => reply.error(e.into()),
        }
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
        let (from, to) = match (child(self, parent, name), child(self, newparent, newname)) {
            (Ok(f), Ok(t)) => (f, t),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let mut s = self.lock();
        let renamed = rustix::fs::renameat_with(
            rustix::fs::CWD,
            &from,
            rustix::fs::CWD,
            &to,
            rustix::fs::RenameFlags::from_bits_retain(flags.bits()),
        );
        if let Err(e) = renamed {
            return reply.error(Errno::from_i32(e.raw_os_error()));
        }
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            let parked = self.root.join(".lazyfs-exchange");
            s.moved(&from, &parked);
            s.moved(&to, &from);
            s.moved(&parked, &to);
        } else {
            s.orphan(&to);
            s.moved(&from, &to);
        }
        reply.ok();
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        // One path per inode keeps the overlay bookkeeping simple; nothing under test links.
        reply.error(Errno::EPERM);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut s = self.lock();
        let opened = s
            .path(ino)
            .and_then(|p| open_backing(&p, flags.0).map_err(Errno::from));
        match opened {
            Ok((file, writable)) => {
                let fh = s.open_handle(ino.0, file, writable);
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
            }
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let s = self.lock();
        let result = match (s.dirty.get(&ino.0), s.handles.get(&fh.0)) {
            (Some(d), _) => d.overlay.read(&d.file, offset, size as usize),
            (None, Some(h)) => {
                let len = h.file.metadata().map(|m| m.len()).unwrap_or(0);
                Overlay::new(len).read(&h.file, offset, size as usize)
            }
            (None, None) => Err(io::Error::from_raw_os_error(Errno::EBADF.code())),
        };
        match result {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e.into()),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut s = self.lock();
        s.stats.writes += 1;
        let Some(file) = s
            .handles
            .get(&fh.0)
            .filter(|h| h.writable)
            .map(|h| h.file.try_clone())
        else {
            return reply.error(Errno::EBADF);
        };
        let written = s
            .dirty(ino.0, || file)
            .and_then(|d| d.overlay.write(&d.file, offset, data));
        match written {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e.into()),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() is not a sync: the data stays in the cache.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = self.lock();
        s.handles.remove(&fh.0);
        let gone = match s.nodes.get_mut(&ino.0) {
            Some(node) => {
                node.open = node.open.saturating_sub(1);
                node.open == 0 && node.path.is_none()
            }
            None => false,
        };
        if gone {
            s.nodes.remove(&ino.0);
            s.dirty.remove(&ino.0);
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let synced = {
            let mut s = self.lock();
            s.stats.fsyncs += 1;
            // Written through under the lock, so no read sees the backing file half updated;
            // synced outside it, so other requests go on meanwhile.
            match s.dirty.remove(&ino.0) {
                Some(d) => {
                    let file = d.file.try_clone();
                    d.overlay.apply(&d.file).and(file)
                }
                None => s
                    .handles
                    .get(&fh.0)
                    .map(|h| h.file.try_clone())
                    .unwrap_or_else(|| Err(io::Error::from_raw_os_error(Errno::EBADF.code()))),
            }
        };
        let result = synced.and_then(|f| {
            if datasync {
                f.sync_data()
            } else {
                f.sync_all()
            }
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e.into()),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let mut s = self.lock();
        let path = match s.path(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let listing = match std::fs::read_dir(&path) {
            Ok(rd) => rd,
            Err(e) => return reply.error(e.into()),
        };
        let mut entries = vec![
            (ino.0, FileType::Directory, OsStr::new(".").to_os_string()),
            (ino.0, FileType::Directory, OsStr::new("..").to_os_string()),
        ];
        for entry in listing.flatten() {
            let kind = entry
                .file_type()
                .ok()
                .and_then(FileType::from_std)
                .unwrap_or(FileType::RegularFile);
            let child = s.ino_for(&entry.path());
            entries.push((child, kind, entry.file_name()));
        }
        for (i, (child, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*child), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let path = {
            let mut s = self.lock();
            s.stats.fsyncdirs += 1;
            s.path(ino)
        };
        match path.and_then(|p| {
            File::open(p)
                .and_then(|d| d.sync_all())
                .map_err(Errno::from)
        }) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match rustix::fs::statvfs(&self.root) {
            Ok(v) => reply.statfs(
                v.f_blocks,
                v.f_bfree,
                v.f_bavail,
                v.f_files,
                v.f_ffree,
                u32::try_from(v.f_bsize).unwrap_or(4096),
                u32::try_from(v.f_namemax).unwrap_or(255),
                u32::try_from(v.f_frsize).unwrap_or(4096),
            ),
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error())),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        match self.lock().metadata(ino) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let path = match child(self, parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let writable = OpenFlags(flags).acc_mode() != OpenAccMode::O_RDONLY;
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .create_new(flags & libc::O_EXCL != 0)
            .mode(mode & !umask)
            .open(&path);
        let file = match opened {
            Ok(f) => f,
            Err(e) => return reply.error(e.into()),
        };
        let mut s = self.lock();
        let ino = s.ino_for(&path);
        let result = (|| -> io::Result<Metadata> {
            if flags & libc::O_TRUNC != 0 {
                let clone = file.try_clone()?;
                s.dirty(ino, || Ok(clone))?.overlay.truncate(0);
            }
            file.metadata()
        })();
        match result {
            Ok(meta) => {
                let attr = s.attr(ino, &meta);
                let fh = s.open_handle(ino, file, writable);
                reply.created(
                    &TTL,
                    &attr,
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::FOPEN_DIRECT_IO,
                );
            }
            Err(e) => reply.error(e.into()),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EOPNOTSUPP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rename_moves_the_inode_and_everything_under_it() {
        let fs = LazyFs::new(PathBuf::from("/b"));
        let mut s = fs.lock();
        let dir = s.ino_for(Path::new("/b/d"));
        let file = s.ino_for(Path::new("/b/d/f"));
        let target = s.ino_for(Path::new("/b/e"));
        s.orphan(Path::new("/b/e"));
        s.moved(Path::new("/b/d"), Path::new("/b/e"));
        assert_eq!(s.paths.get(Path::new("/b/e")), Some(&dir));
        assert_eq!(s.paths.get(Path::new("/b/e/f")), Some(&file));
        assert!(!s.paths.contains_key(Path::new("/b/d/f")));
        assert!(!s.nodes.contains_key(&target), "the replaced inode is gone");
        assert!(
            s.ino_for(Path::new("/b/d")) > target,
            "a new name gets a new inode"
        );
    }
}
