//! One object version on the cache disk: its bytes in a plain file at their own offsets
//! (sparse while partly cached), so a complete one can back a passthrough open, and beside it
//! a table of the blocks held, each with its CRC32C, so no byte is served unchecked.
//!
//! `HASH` holds the data; `HASH.sums` starts with a header (magic, size, block size, the
//! identity) followed by one entry per block: its length (0 while the block is not held) and
//! the CRC32C of each 64 KiB chunk of it, so a random read checks only the chunks it reads,
//! not its whole block. A block's data is written before its entry and its entry is cleared
//! before its hole is punched, so an entry never names bytes that are not there (short of the
//! disk lying, which the CRCs catch). After the entries, from the next 4 KiB boundary, the
//! table holds the CRCs of pages kept of blocks not held whole (see `pages`).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"LMOBJ003";
/// The unit a CRC32C covers.
pub const CHUNK: u64 = 64 << 10;

/// What makes an object version's bytes what they are, and how it is cut into blocks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    /// The store's object id and ETag.
    pub id: String,
    pub size: u64,
    pub block_size: u64,
}

impl ObjectKey {
    /// The file name: SHA-256 of everything that identifies the bytes and the table's shape.
    pub fn hash(&self) -> String {
        let identity = format!("{}\n{}\n{}", self.id, self.size, self.block_size);
        format!("{:x}", Sha256::digest(identity.as_bytes()))
    }

    pub fn blocks(&self) -> u64 {
        self.size.div_ceil(self.block_size)
    }

    pub fn block_len(&self, index: u64) -> u64 {
        let start = index * self.block_size;
        (start + self.block_size).min(self.size) - start.min(self.size)
    }

    /// Chunks of a full block.
    fn chunks(&self) -> u64 {
        self.block_size.div_ceil(CHUNK)
    }

    /// Bytes of one block's entry: length, then one CRC per chunk.
    fn entry_len(&self) -> u64 {
        4 + 4 * self.chunks()
    }

    fn header(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(28 + self.id.len());
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&self.size.to_le_bytes());
        h.extend_from_slice(&self.block_size.to_le_bytes());
        h.extend_from_slice(&(self.id.len() as u32).to_le_bytes());
        h.extend_from_slice(self.id.as_bytes());
        h
    }
}

/// The pair of files of one object in a cache directory.
pub struct ObjectFiles {
    pub data: PathBuf,
    pub sums: PathBuf,
}

impl ObjectFiles {
    pub fn new(root: &Path, hash: &str) -> ObjectFiles {
        let data = root.join(&hash[..2]).join(hash);
        let sums = data.with_extension("sums");
        ObjectFiles { data, sums }
    }
}

pub(super) fn bad(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

/// A table that does not exist is `Ok(None)`; one for another object or cut short is an error.
pub(super) fn open_table(
    files: &ObjectFiles,
    key: &ObjectKey,
    write: bool,
) -> io::Result<Option<File>> {
    let f = match OpenOptions::new().read(true).write(write).open(&files.sums) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let want = key.header();
    let mut got = vec![0u8; want.len()];
    f.read_exact_at(&mut got, 0)
        .map_err(|_| bad("truncated table"))?;
    if got != want {
        return Err(bad("table of another object"));
    }
    Ok(Some(f))
}

pub(super) fn entry_at(key: &ObjectKey, index: u64) -> u64 {
    28 + key.id.len() as u64 + index * key.entry_len()
}

/// One block's entry: its length (0: not held) and its chunks' CRCs.
pub struct Entry {
    len: u64,
    crcs: Vec<u32>,
}

impl Entry {
    fn parse(b: &[u8]) -> Entry {
        let word = |i: usize| u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
        Entry {
            len: word(0) as u64,
            crcs: (1..b.len() / 4).map(word).collect(),
        }
    }

    fn of(key: &ObjectKey, data: &[u8]) -> Vec<u8> {
        let mut e = Vec::with_capacity(key.entry_len() as usize);
        e.extend_from_slice(&(data.len() as u32).to_le_bytes());
        for i in 0..key.chunks() as usize {
            let c = data.get(i * CHUNK as usize..).unwrap_or(&[]);
            let c = &c[..c.len().min(CHUNK as usize)];
            e.extend_from_slice(&crc32c::crc32c(c).to_le_bytes());
        }
        e
    }

    /// Checks `data`, the bytes of chunks `first..` of the block, against their CRCs.
    fn check(&self, first: usize, data: &[u8]) -> io::Result<()> {
        for (i, c) in data.chunks(CHUNK as usize).enumerate() {
            if self.crcs.get(first + i) != Some(&crc32c::crc32c(c)) {
                return Err(bad(&format!("chunk {} fails its checksum", first + i)));
            }
        }
        Ok(())
    }
}

fn read_entry(t: &File, key: &ObjectKey, index: u64) -> io::Result<Entry> {
    let mut e = vec![0u8; key.entry_len() as usize];
    match t.read_exact_at(&mut e, entry_at(key, index)) {
        Ok(()) => Ok(Entry::parse(&e)),
        // Entries past the end were never written: not held.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Entry {
            len: 0,
            crcs: Vec::new(),
        }),
        Err(e) => Err(e),
    }
}

/// Every entry of the table, `None` when the table is cut short of them.
fn read_entries(t: &File, key: &ObjectKey) -> io::Result<Vec<Entry>> {
    let n = key.entry_len() as usize;
    let mut all = vec![0u8; key.blocks() as usize * n];
    let got = t.read_at(&mut all, entry_at(key, 0))?;
    Ok(all[..got - got % n].chunks(n).map(Entry::parse).collect())
}

/// The lengths of the blocks the table says are held (0: not held).
pub fn held_blocks(files: &ObjectFiles, key: &ObjectKey) -> io::Result<Vec<u64>> {
    let Some(t) = open_table(files, key, false)? else {
        return Ok(Vec::new());
    };
    let entries = read_entries(&t, key)?;
    Ok((0..key.blocks())
        .map(|i| match entries.get(i as usize) {
            Some(e) if e.len == key.block_len(i) => e.len,
            _ => 0,
        })
        .collect())
}

/// The header alone, read back from a table file: lets a scan of the cache directory index
/// tables it finds without knowing their objects first.
pub fn read_key(sums: &Path) -> io::Result<ObjectKey> {
    let data = fs::read(sums)?;
    if data.len() < 28 || &data[..8] != MAGIC {
        return Err(bad("not a table"));
    }
    let size = u64::from_le_bytes(data[8..16].try_into().unwrap());
    let block_size = u64::from_le_bytes(data[16..24].try_into().unwrap());
    let id_len = u32::from_le_bytes(data[24..28].try_into().unwrap()) as usize;
    let id = data
        .get(28..28 + id_len)
        .ok_or_else(|| bad("truncated table"))?;
    if block_size == 0 {
        return Err(bad("zero block size"));
    }
    Ok(ObjectKey {
        id: String::from_utf8(id.to_vec()).map_err(|_| bad("identity is not UTF-8"))?,
        size,
        block_size,
    })
}

/// Block `index` if the table holds it and its bytes match their CRCs. `Ok(None)`: not held.
/// `Err`: files that must not be trusted.
pub fn read_block(files: &ObjectFiles, key: &ObjectKey, index: u64) -> io::Result<Option<Bytes>> {
    Ok(read_range(files, key, index, 0..key.block_len(index))?.map(|(b, _)| b))
}

/// Bytes `range` (offsets within block `index`) if the table holds the block, reading and
/// checking only the chunks they fall in; with the count of bytes read from the disk.
pub fn read_range(
    files: &ObjectFiles,
    key: &ObjectKey,
    index: u64,
    range: Range<u64>,
) -> io::Result<Option<(Bytes, u64)>> {
    let Some(entry) = held_entry(files, key, index)? else {
        return Ok(None);
    };
    let d = File::open(&files.data)?;
    read_checked(&d, key, index, &entry, range).map(Some)
}

/// The entry of block `index` if the table holds the block.
pub fn held_entry(files: &ObjectFiles, key: &ObjectKey, index: u64) -> io::Result<Option<Entry>> {
    let Some(t) = open_table(files, key, false)? else {
        return Ok(None);
    };
    let entry = read_entry(&t, key, index)?;
    if entry.len == 0 {
        return Ok(None);
    }
    if entry.len != key.block_len(index) {
        return Err(bad("entry length does not match the block"));
    }
    Ok(Some(entry))
}

/// Bytes `range` of block `index` from the object's data file, reading only the chunks they
/// fall in and checking them against `entry`.
pub fn read_checked(
    data: &File,
    key: &ObjectKey,
    index: u64,
    entry: &Entry,
    range: Range<u64>,
) -> io::Result<(Bytes, u64)> {
    read_checked_with(data, key, index, entry, range, 0)
}

/// `read_checked` with `preadv2` flags: with `RWF_NOWAIT`, bytes not in the page cache are
/// an error (`WouldBlock`), not a wait for the disk.
pub fn read_checked_with(
    data: &File,
    key: &ObjectKey,
    index: u64,
    entry: &Entry,
    range: Range<u64>,
    flags: libc::c_int,
) -> io::Result<(Bytes, u64)> {
    if range.end > entry.len {
        return Err(bad("entry length does not match the block"));
    }
    let first = range.start / CHUNK;
    let span = first * CHUNK
        ..range
            .end
            .div_ceil(CHUNK)
            .saturating_mul(CHUNK)
            .min(entry.len);
    let buf = read_fresh_with(
        data,
        (span.end - span.start) as usize,
        index * key.block_size + span.start,
        flags,
    )
    .map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock => e,
        _ => bad("truncated data"),
    })?;
    entry.check(first as usize, &buf)?;
    let read = buf.len() as u64;
    let buf = Bytes::from(buf);
    let wanted = (range.start - span.start) as usize..(range.end - span.start) as usize;
    Ok((buf.slice(wanted), read))
}

/// `len` bytes of `f` at `offset` in a new buffer, not zero-filled first: a block read from
/// the cache is overwritten whole at once, and filling it with zeros before cost as much as
/// its checksum.
pub fn read_fresh(f: &File, len: usize, offset: u64) -> io::Result<Vec<u8>> {
    read_fresh_with(f, len, offset, 0)
}

/// `read_fresh` with `preadv2` flags.
pub fn read_fresh_with(
    f: &File,
    len: usize,
    offset: u64,
    flags: libc::c_int,
) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len);
    let mut done = 0;
    while done < len {
        let spare = &mut buf.spare_capacity_mut()[done..len];
        let at = libc::off_t::try_from(offset + done as u64).map_err(|_| bad("offset"))?;
        let iov = libc::iovec {
            iov_base: spare.as_mut_ptr().cast(),
            iov_len: spare.len(),
        };
        // SAFETY: preadv2 writes at most `spare.len()` bytes into memory this buffer owns.
        let n = unsafe { libc::preadv2(f.as_raw_fd(), &iov, 1, at, flags) };
        match n {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n => done += n as usize,
        }
    }
    // SAFETY: the reads above wrote all `len` bytes.
    unsafe { buf.set_len(len) };
    Ok(buf)
}

/// Writes block `index`: the data at its offset, then its entry, so no table lists bytes not
/// yet written. A new object's table appears whole, header and first entry together. The
/// data file grows to its full length as its blocks land.
pub fn write_block(
    files: &ObjectFiles,
    key: &ObjectKey,
    index: u64,
    data: &[u8],
) -> io::Result<()> {
    debug_assert_eq!(data.len() as u64, key.block_len(index));
    let table = table_for_writing(files, key)?;
    open_data(files)?.write_all_at(data, index * key.block_size)?;
    let entry = Entry::of(key, data);
    match table {
        Some(t) => {
            t.write_all_at(&entry, entry_at(key, index))?;
            // Pages a random reader kept of this block are now part of it: free their CRCs.
            super::pages::forget_block(&t, key, index)
        }
        None => create_table(files, key, entry_at(key, index), &entry),
    }
}

/// The object's table, open for writing; `None` when there is none yet. A damaged one (or
/// an identity clash) is removed with its data: the object starts over.
pub(super) fn table_for_writing(files: &ObjectFiles, key: &ObjectKey) -> io::Result<Option<File>> {
    match open_table(files, key, true) {
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            remove(files);
            Ok(None)
        }
        r => r,
    }
}

/// The data file, open for writing, created (with its directory) when missing.
pub(super) fn open_data(files: &ObjectFiles) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&files.data)
    };
    match open() {
        // The first object of its directory.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            super::disk::mkdir_private(files.data.parent().expect("object paths have a parent"))?;
            open()
        }
        r => r,
    }
}

/// Makes the table of a new object with `bytes` (an entry, or page CRCs) at offset `at`:
/// written in an unnamed file, then linked into place, so no reader sees half of it. A link,
/// not a rename: when writers of two blocks (here or in another mount) create the table at
/// once, the second must not replace the first and lose its entries; it writes its bytes into
/// the first's table instead.
pub(super) fn create_table(
    files: &ObjectFiles,
    key: &ObjectKey,
    at: u64,
    bytes: &[u8],
) -> io::Result<()> {
    let dir = files.sums.parent().expect("object paths have a parent");
    let fill = |f: &File| {
        f.write_all_at(&key.header(), 0)?;
        f.write_all_at(bytes, at)
    };
    let unnamed = unnamed_in(dir).and_then(|f| {
        fill(&f)?;
        let fd = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
        link_following(&fd, &files.sums)
    });
    let linked = match unnamed {
        // A file system without O_TMPFILE, or no /proc: a named temporary file.
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => named_then_linked(dir, files, fill),
        r => r,
    };
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => open_table(files, key, true)?
            .ok_or(e)?
            .write_all_at(bytes, at),
        Err(e) => Err(e),
    }
}

fn unnamed_in(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(dir)
}

/// `linkat` with AT_SYMLINK_FOLLOW: gives a name to an unnamed file through its /proc link.
fn link_following(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: two valid NUL-terminated paths.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn named_then_linked(
    dir: &Path,
    files: &ObjectFiles,
    fill: impl Fn(&File) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{:?}",
        files.sums.file_name().unwrap().to_string_lossy(),
        std::process::id(),
        std::thread::current().id()
    ));
    let res = (|| {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        fill(&f)?;
        fs::hard_link(&tmp, &files.sums)
    })();
    let _ = fs::remove_file(&tmp);
    res
}

/// Drops block `index`, whole or the pages of it held: its entry and page CRCs first, then
/// its bytes (a hole) in `data`, the data file the caller opened, locked and found partial
/// (see `DiskCache::drop_block`): the hole goes into the inode that was checked, never into
/// one that took its place at the path meanwhile.
pub fn punch_block(
    files: &ObjectFiles,
    key: &ObjectKey,
    index: u64,
    data: &File,
) -> io::Result<()> {
    if let Some(t) = open_table(files, key, true)? {
        t.write_all_at(&vec![0u8; key.entry_len() as usize], entry_at(key, index))?;
        super::pages::forget_block(&t, key, index)?;
    }
    punch(data, index * key.block_size, key.block_len(index))
}

pub(super) fn punch(f: &File, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: fallocate on a descriptor we own; no memory is passed.
    let r = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes both files. A process that has the data file open keeps reading its bytes.
pub fn remove(files: &ObjectFiles) {
    let _ = fs::remove_file(&files.sums);
    let _ = fs::remove_file(&files.data);
}

/// Whether the object's data file may hold it whole, and so may be read by a passthrough
/// reader (or a mapping left after one): such a file is never punched. Told from the inode
/// itself, not from its table alone: the table at the path may be missing or changing while
/// another mount removes or rewrites the object, and a missing table is no evidence that the
/// file open here is partial. Certainly partial: a file shorter than its object (its last
/// block never landed: data lands before its entry), or one with a hole in a block that a
/// readable table does not list. A file as long as its object with no hole has every byte
/// written: it may be whole. One `fstat`, one `lseek`, and one entry for a file with a hole.
/// (A hole in a listed block is possible on file systems that store written zeros as holes.)
pub fn may_be_whole(files: &ObjectFiles, key: &ObjectKey, data: &File) -> bool {
    match data.metadata() {
        Ok(m) if m.len() < key.size => return false,
        Ok(_) => {}
        Err(_) => return true,
    }
    // SAFETY: lseek on a descriptor we own.
    let hole = unsafe { libc::lseek(data.as_raw_fd(), 0, libc::SEEK_HOLE) };
    if hole < 0 || hole as u64 >= key.size {
        return true;
    }
    let index = hole as u64 / key.block_size;
    match open_table(files, key, false) {
        Ok(Some(t)) => !matches!(read_entry(&t, key, index), Ok(e) if e.len == 0),
        _ => true,
    }
}

/// Whether `data` (the object's data file, open) holds the complete object: every block in
/// the table and, with `verify`, every byte matching its CRC, read through that descriptor,
/// so what was checked is what a passthrough open reads. `Err`: a block failed its check.
pub fn is_complete(
    files: &ObjectFiles,
    key: &ObjectKey,
    data: &File,
    verify: bool,
) -> io::Result<bool> {
    let Some(t) = open_table(files, key, false)? else {
        return Ok(false);
    };
    let entries = read_entries(&t, key)?;
    let held = |i: u64| {
        entries
            .get(i as usize)
            .filter(|e| e.len == key.block_len(i))
    };
    if (0..key.blocks()).any(|i| held(i).is_none()) {
        return Ok(false);
    }
    if data.metadata()?.len() != key.size {
        return Err(bad("data file of the wrong length"));
    }
    if verify {
        for i in 0..key.blocks() {
            let buf = read_fresh(data, key.block_len(i) as usize, i * key.block_size)?;
            held(i)
                .expect("checked above")
                .check(0, &buf)
                .map_err(|e| bad(&format!("block {i}: {e}")))?;
        }
    }
    Ok(true)
}

#[cfg(test)]
#[path = "objfile_tests.rs"]
mod tests;
