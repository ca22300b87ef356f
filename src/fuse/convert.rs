//! Conversions between the filesystem core's types and fuser's: errnos, attributes, names,
//! and the reply of a passthrough open.

use std::ffi::OsStr;

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, FopenFlags, INodeNo, ReplyEmpty, ReplyOpen,
};

use crate::fs::{Attr, FsError, Kind, LakeFs};

pub(super) fn errno(e: FsError) -> Errno {
    Errno::from_i32(e.0)
}

pub(super) fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: match a.kind {
            Kind::File => FileType::RegularFile,
            Kind::Dir => FileType::Directory,
        },
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        // Large I/O hint for files: `cp` and friends size their buffers from it. A directory's
        // is small because readdir(3) sizes its getdents buffer from it (up to 1 MiB), and with
        // READDIRPLUS_AUTO only a listing's first buffer is sent with attributes (see `init`).
        blksize: match a.kind {
            Kind::File => 1 << 20,
            Kind::Dir => 4096,
        },
        flags: 0,
    }
}

pub(super) fn name_str(name: &OsStr) -> Result<&str, Errno> {
    // Blob names are UTF-8: a name that is not cannot exist in the lake.
    name.to_str().ok_or(Errno::ENOENT)
}

/// Replies an open with the inode's backing file: registered with the kernel at its first
/// open, the same id for every open while any is open (the kernel's rule), and closed when
/// the filesystem drops the backing with its last handle. A kernel that refuses (no
/// CAP_SYS_ADMIN) gets a normal open, and passthrough goes off for the mount.
pub(super) fn reply_passthrough(
    fs: &LakeFs,
    reply: ReplyOpen,
    fh: u64,
    flags: FopenFlags,
    backing: &crate::fs::passthrough::Backing,
) {
    let mut edge = backing.edge.lock().unwrap();
    if edge.is_none() {
        match reply.open_backing(&backing.file) {
            Ok(id) => *edge = Some(Box::new(id)),
            Err(e) => {
                drop(edge);
                fs.passthrough_refused(fh, &format!("the kernel refused a backing file: {e}"));
                return reply.opened(FileHandle(fh), flags);
            }
        }
    }
    let id = edge
        .as_ref()
        .and_then(|b| b.downcast_ref::<BackingId>())
        .expect("the edge holds a backing id");
    reply.opened_passthrough(FileHandle(fh), flags, id);
}

pub(super) fn empty(reply: ReplyEmpty, r: Result<(), FsError>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}
