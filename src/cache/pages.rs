//! Pages of blocks not held whole: what a random reader fetched (its bytes widened to whole
//! 4 KiB pages), kept in the object's data file at their own offsets, so the next random read
//! of them, in this mount or the next, needs no GET. A later sequential reader or `warm`
//! writes the whole block over them.
//!
//! Each page's CRC32C is a word in the table's page area, which starts at the first 4 KiB
//! boundary after the entries: block `i`, page `p` at `base + (i * pages_per_block + p) * 4`,
//! a hole until written. A zero word is a page not held (a page whose CRC is 0 is simply not
//! kept). Bytes are written before their words, and words are cleared (a hole punched in the
//! area) before their bytes, so a word never names bytes that are not there. Should a race
//! with another process leave one over a hole anyway, the hole reads as zeros, and zeros pass
//! a page's CRC only when they are its bytes.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use bytes::Bytes;

use super::objfile::{
    bad, create_table, entry_at, open_data, open_table, punch, table_for_writing, ObjectFiles,
    ObjectKey,
};

/// The unit kept and checked.
pub const PAGE: u64 = 4096;

fn per_block(key: &ObjectKey) -> u64 {
    key.block_size.div_ceil(PAGE)
}

fn base(key: &ObjectKey) -> u64 {
    entry_at(key, key.blocks()).div_ceil(PAGE) * PAGE
}

fn word_at(key: &ObjectKey, index: u64, page: u64) -> u64 {
    base(key) + (index * per_block(key) + page) * 4
}

/// Words `n` from `at`; those past the end of the table are zero (never written).
fn read_words(t: &File, at: u64, n: usize) -> io::Result<Vec<u32>> {
    let mut buf = vec![0u8; n * 4];
    let mut got = 0;
    while got < buf.len() {
        match t.read_at(&mut buf[got..], at + got as u64)? {
            0 => break,
            k => got += k,
        }
    }
    Ok(buf
        .chunks(4)
        .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
        .collect())
}

/// Writes `data`, the bytes of block `index` from `offset` (a page boundary) to a page
/// boundary or the block's end, then the CRCs of its pages. Returns the bytes of pages that
/// were not held before.
pub fn write(
    files: &ObjectFiles,
    key: &ObjectKey,
    index: u64,
    offset: u64,
    data: &[u8],
) -> io::Result<u64> {
    let block_len = key.block_len(index);
    let end = offset + data.len() as u64;
    if !offset.is_multiple_of(PAGE)
        || end > block_len
        || (!end.is_multiple_of(PAGE) && end != block_len)
    {
        return Err(bad("pages off their boundaries"));
    }
    let table = table_for_writing(files, key)?;
    open_data(files)?.write_all_at(data, index * key.block_size + offset)?;
    let crcs: Vec<u32> = data.chunks(PAGE as usize).map(crc32c::crc32c).collect();
    let words: Vec<u8> = crcs.iter().flat_map(|c| c.to_le_bytes()).collect();
    let at = word_at(key, index, offset / PAGE);
    let before = match &table {
        Some(t) => {
            let before = read_words(t, at, crcs.len())?;
            t.write_all_at(&words, at)?;
            before
        }
        None => {
            create_table(files, key, at, &words)?;
            vec![0; crcs.len()]
        }
    };
    Ok(data
        .chunks(PAGE as usize)
        .zip(crcs.iter().zip(before))
        .filter(|(_, (new, old))| **new != 0 && *old == 0)
        .map(|(c, _)| c.len() as u64)
        .sum())
}

/// Bytes `range` (offsets within block `index`) if every page they fall in is held, each
/// page read from `data` (the object's data file, open) and checked against its CRC; with the
/// count of bytes read from the disk. `Ok(None)`: some page is not held. `Err`: a page fails
/// its check.
pub fn read(
    files: &ObjectFiles,
    data: &File,
    key: &ObjectKey,
    index: u64,
    range: Range<u64>,
) -> io::Result<Option<(Bytes, u64)>> {
    let Some(t) = open_table(files, key, false)? else {
        return Ok(None);
    };
    let (first, last) = (range.start / PAGE, range.end.div_ceil(PAGE));
    let words = read_words(&t, word_at(key, index, first), (last - first) as usize)?;
    if words.contains(&0) {
        return Ok(None);
    }
    let span = first * PAGE..(last * PAGE).min(key.block_len(index));
    if range.end > span.end {
        return Err(bad("pages past the block's end"));
    }
    let buf = super::objfile::read_fresh(
        data,
        (span.end - span.start) as usize,
        index * key.block_size + span.start,
    )
    .map_err(|_| bad("truncated data"))?;
    for (i, (c, w)) in buf.chunks(PAGE as usize).zip(&words).enumerate() {
        if crc32c::crc32c(c) != *w {
            return Err(bad(&format!(
                "page {} fails its checksum",
                first + i as u64
            )));
        }
    }
    let read = buf.len() as u64;
    let wanted = (range.start - span.start) as usize..(range.end - span.start) as usize;
    Ok(Some((Bytes::from(buf).slice(wanted), read)))
}

/// The bytes of pages held, per block: a scan of the page area that skips its holes.
pub fn held(files: &ObjectFiles, key: &ObjectKey) -> io::Result<Vec<u64>> {
    let mut out = vec![0u64; key.blocks() as usize];
    let Some(t) = open_table(files, key, false)? else {
        return Ok(out);
    };
    let (start, end) = (base(key), t.metadata()?.len());
    let per = per_block(key);
    for extent in written(&t, start, end)? {
        // Extents start on file system blocks, a multiple of 4 bytes past the base.
        let from = start + (extent.start - start) / 4 * 4;
        let mut pos = from;
        while pos < extent.end {
            let n = ((extent.end - pos).div_ceil(4) as usize).min(1 << 18);
            for (k, w) in read_words(&t, pos, n)?.into_iter().enumerate() {
                let word = (pos - start) / 4 + k as u64;
                let (index, page) = (word / per, word % per);
                if w != 0 && index < key.blocks() {
                    let r = page * PAGE..((page + 1) * PAGE).min(key.block_len(index));
                    out[index as usize] += r.end.saturating_sub(r.start);
                }
            }
            pos += n as u64 * 4;
        }
    }
    Ok(out)
}

/// The parts of `start..end` of `f` that hold data (a file system without SEEK_DATA: all of
/// it).
fn written(f: &File, start: u64, end: u64) -> io::Result<Vec<Range<u64>>> {
    let seek = |at: u64, whence: libc::c_int| {
        // SAFETY: lseek on a descriptor we own; it moves only this description's offset.
        let r = unsafe { libc::lseek(f.as_raw_fd(), at as libc::off_t, whence) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as u64)
        }
    };
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        let data = match seek(pos, libc::SEEK_DATA) {
            Ok(d) => d,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                out.push(pos..end);
                break;
            }
            Err(e) => return Err(e),
        };
        if data >= end {
            break;
        }
        let hole = seek(data, libc::SEEK_HOLE)?.min(end);
        out.push(data..hole);
        pos = hole;
    }
    Ok(out)
}

/// Clears the page CRCs of block `index`: none of its pages is held any more.
pub(super) fn forget_block(t: &File, key: &ObjectKey, index: u64) -> io::Result<()> {
    let from = word_at(key, index, 0);
    if t.metadata()?.len() <= from {
        // No page of it (nor of any later block) was ever kept.
        return Ok(());
    }
    let len = per_block(key) * 4;
    match punch(t, from, len) {
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            t.write_all_at(&vec![0u8; len as usize], from)
        }
        r => r,
    }
}

#[cfg(test)]
#[path = "pages_tests.rs"]
mod tests;
