//! The FUSE edge: translates fuser callbacks into calls on the filesystem core and replies
//! from tokio tasks, so no request waits behind another one's network call.

use std::ffi::OsStr;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenAccMode,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};
use tokio::runtime::Handle;

use crate::fs::{Kind, LakeFs, OpenMode};

mod convert;
use convert::{empty, errno, file_attr, name_str, reply_passthrough};

pub struct FuseAdapter {
    fs: Arc<LakeFs>,
    rt: Handle,
    ttl: Duration,
}

impl FuseAdapter {
    pub fn new(fs: Arc<LakeFs>, rt: Handle) -> Self {
        let ttl = fs.config().metadata_ttl;
        FuseAdapter { fs, rt, ttl }
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Kernel read-ahead feeds our reads in large requests; READDIRPLUS saves a lookup per
        // entry on `ls -l`; a deep background queue keeps many reads in flight.
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_background(128);
        let _ = config.set_congestion_threshold(96);
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        // Adaptive, like NFS: the kernel asks for attributes with a listing's first buffer,
        // and again only once programs look names of the directory up (`ls -l`, a loader's
        // opens). A walk that only lists (`find`, `du --inodes`) then leaves no kernel inode
        // per file, which is what bends a FUSE walk's cost past a million entries.
        let _ = config.add_capabilities(InitFlags::FUSE_READDIRPLUS_AUTO);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // No FUSE_ATOMIC_O_TRUNC: with it, the O_TRUNC of an open reaches us before the
        // kernel's own checks (ETXTBSY for a file being executed), and a running program's
        // file would be emptied under it. Without it the kernel checks, then sends a truncate
        // on the new handle, which the file's writer stages like any other change.
        // Writes of up to 1 MiB per request (cp, dd bs=1M) instead of 128 KiB.
        let _ = config.set_max_write(1 << 20);
        if self.fs.config().passthrough {
            // Backing files on a plain file system (depth 1): this mount may still be a lower
            // layer of an overlay (a container's bind mount does not count).
            let pt = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH);
            if pt.is_err() || config.set_max_stack_depth(1).is_err() {
                self.fs
                    .disable_passthrough("the kernel does not offer FUSE passthrough (Linux 6.9+)");
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match name_str(name) {
            Ok(n) => n.to_string(),
            Err(e) => return reply.error(e),
        };
        let (fs, ttl) = (self.fs.clone(), self.ttl);
        self.rt.spawn(async move {
            match fs.lookup(parent.0, &name).await {
                Ok(a) => reply.entry(&ttl, &file_attr(&a), Generation(0)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let (fs, ttl) = (self.fs.clone(), self.ttl);
        self.rt.spawn(async move {
            match fs.getattr(ino.0).await {
                Ok(a) => reply.attr(&ttl, &file_attr(&a)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mode = OpenMode {
            write: flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0,
            truncate: flags.0 & libc::O_TRUNC != 0,
            pid: req.pid(),
        };
        let fs = self.fs.clone();
        // The close of a handle that cannot write does nothing here: the kernel need not ask
        // (one round trip less per file in an epoch of small files).
        let no_flush = if mode.write {
            FopenFlags::empty()
        } else {
            FopenFlags::FOPEN_NOFLUSH
        };
        self.rt.spawn(async move {
            match fs.open_for_kernel(ino.0, mode).await {
                Ok(o) => {
                    let keep = if o.keep_cache {
                        FopenFlags::FOPEN_KEEP_CACHE
                    } else {
                        FopenFlags::empty()
                    };
                    let flags = keep | no_flush;
                    match &o.passthrough {
                        // The kernel takes only NOFLUSH and the direct I/O flags beside
                        // PASSTHROUGH; the page cache is the backing file's own.
                        Some(b) => reply_passthrough(&fs, reply, o.fh, no_flush, b),
                        None => reply.opened(FileHandle(o.fh), flags),
                    }
                }
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.read(fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // A read handle's close is a few map updates: answered here, without a task (one
        // thread hop less per file in an epoch of small files).
        let _rt = self.rt.enter();
        if self.fs.release_if_reading(fh.0) {
            return reply.ok();
        }
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            fs.release(fh.0).await;
            reply.ok();
        });
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        let (fs, pid) = (self.fs.clone(), req.pid());
        self.rt
            .spawn(async move { empty(reply, fs.close(fh.0, pid).await) });
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _ds: bool, reply: ReplyEmpty) {
        let fs = self.fs.clone();
        self.rt
            .spawn(async move { empty(reply, fs.flush(fh.0).await) });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.opendir(ino.0).await {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        // Async: past the listed entries of a large directory, readdir lists the next page.
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            let res = fs
                .readdir(fh.0, offset, false, &mut |e| {
                    let kind = match e.attr.kind {
                        Kind::File => FileType::RegularFile,
                        Kind::Dir => FileType::Directory,
                    };
                    reply.add(INodeNo(e.ino), e.next_offset, kind, e.name)
                })
                .await;
            match res {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let ttl = self.ttl;
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            let res = fs
                .readdir(fh.0, offset, true, &mut |e| {
                    reply.add(
                        INodeNo(e.ino),
                        e.next_offset,
                        e.name,
                        &ttl,
                        &file_attr(&e.attr),
                        Generation(0),
                    )
                })
                .await;
            match res {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(
            s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
        );
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        // ENOSYS makes the kernel stop asking (it answers EOPNOTSUPP itself from then on):
        // `ls -l` would otherwise cost two round trips per file for SELinux labels and ACLs.
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let (fs, ttl) = (self.fs.clone(), self.ttl);
        // Only the modification time is kept: atime and ctime are not stored.
        let attrs = crate::store::posix::PosixAttrs {
            mtime: mtime.map(|t| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => SystemTime::now(),
            }),
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
        };
        self.rt.spawn(async move {
            match fs.setattr(ino.0, size, fh.map(|f| f.0), &attrs).await {
                Ok(a) => reply.attr(&ttl, &file_attr(&a)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _m: u32,
        _u: u32,
        reply: ReplyEntry,
    ) {
        let name = match name_str(name) {
            Ok(n) => n.to_string(),
            Err(e) => return reply.error(e),
        };
        let (fs, ttl) = (self.fs.clone(), self.ttl);
        self.rt.spawn(async move {
            match fs.mkdir(parent.0, &name).await {
                Ok(a) => reply.entry(&ttl, &file_attr(&a), Generation(0)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match name_str(name) {
            Ok(n) => n.to_string(),
            Err(e) => return reply.error(e),
        };
        let (fs, ttl, pid) = (self.fs.clone(), self.ttl, req.pid());
        let perm = (mode & !umask & 0o7777) as u16;
        self.rt.spawn(async move {
            let created = match fs
                .create(parent.0, &name, flags & libc::O_EXCL != 0, pid)
                .await
            {
                // A mode other than the mount's default is stored with the first commit.
                Ok((a, fh)) if a.perm != perm => {
                    let attrs = crate::store::posix::PosixAttrs {
                        mode: Some(perm.into()),
                        ..Default::default()
                    };
                    fs.setattr(a.ino, None, Some(fh), &attrs)
                        .await
                        .map(|a| (a, fh))
                }
                r => r,
            };
            match created {
                Ok((a, fh)) => reply.created(
                    &ttl,
                    &file_attr(&a),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                ),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _wf: WriteFlags,
        _flags: OpenFlags,
        _lo: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let fs = self.fs.clone();
        let data = data.to_vec();
        self.rt.spawn(async move {
            match fs.write(fh.0, offset, &data).await {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_str(name) {
            Ok(n) => n.to_string(),
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        self.rt
            .spawn(async move { empty(reply, fs.unlink(parent.0, &name).await) });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_str(name) {
            Ok(n) => n.to_string(),
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        self.rt
            .spawn(async move { empty(reply, fs.rmdir(parent.0, &name).await) });
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // Regular files come through create(); FIFOs, sockets and devices cannot be blobs.
        reply.error(Errno::EPERM);
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
        let (name, newname) = match (name_str(name), name_str(newname)) {
            (Ok(a), Ok(b)) => (a.to_string(), b.to_string()),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            let r = fs
                .rename(parent.0, &name, newparent.0, &newname, noreplace)
                .await;
            empty(reply, r)
        });
    }

    // What the lake cannot do is answered at once with its errno and no log line: these come
    // in normal use (every Python `open` asks TCGETS by ioctl) and would flood the log. Where
    // ENOSYS makes the kernel stop asking and do the generic thing itself, that is the answer.

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory changes are in the lake when their own request returns.
        reply.ok();
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // ENOSYS: the kernel stops asking and lets every access through (or checks the
        // mode itself with default_permissions).
        reply.error(Errno::ENOSYS);
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
        // ENOSYS: the kernel answers EOPNOTSUPP itself from then on.
        reply.error(Errno::ENOSYS);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: ReplyLseek,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // ENOSYS: the kernel copies through read and write instead.
        reply.error(Errno::ENOSYS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }
}
