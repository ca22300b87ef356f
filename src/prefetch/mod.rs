//! Per-handle read-ahead. A handle that reads sequentially gets a window of blocks fetched
//! ahead of it, starting at about 1 MiB past the read and doubling each time the reader moves
//! into a new block, up to `--max-readahead`; the blocks come as concurrent ranged GETs. Short
//! seeks (forward up to 16 MiB, backward up to 1 MiB) keep the handle sequential and are served
//! from blocks held or in flight. Anything else is random access: nothing is fetched ahead,
//! and a read that finds its block neither in memory nor on disk fetches only its own bytes
//! (a 4 KiB `pread` of a 1 GiB file sends 4 KiB, not an 8 MiB block).

use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use crate::cache::blocks::{Block, BlockCache};
use crate::metrics::Metrics;
use crate::reader::{Complete, FileReader, ObjectVersion, ReadPath};
use crate::store::StoreResult;

const INITIAL_WINDOW: u64 = 1 << 20;
const SHORT_FORWARD: u64 = 16 << 20;
const SHORT_BACKWARD: u64 = 1 << 20;
/// A handle reading at random counts as sequential again only after this many bytes read in
/// a row, each read starting within `RESUME_GAP` of where the one before ended: a random
/// reader's jump that happens to land near its last read, or a record spanning a few pages (an
/// LMDB value's overflow pages), must not fetch whole blocks and read ahead. A sequential
/// reader gets there in two of the kernel's read-ahead requests.
const RESUME_BYTES: u64 = 256 << 10;
const RESUME_GAP: u64 = 128 << 10;

pub struct PrefetchReadPath {
    cache: Arc<BlockCache>,
    max_readahead: u64,
}

impl PrefetchReadPath {
    pub fn new(cache: Arc<BlockCache>, max_readahead: u64) -> Arc<Self> {
        Arc::new(PrefetchReadPath {
            cache,
            max_readahead,
        })
    }
}

impl ReadPath for PrefetchReadPath {
    fn complete_file(&self, object: &ObjectVersion, may_verify: bool) -> Complete {
        self.cache.complete_on_disk(object, may_verify)
    }

    fn still_complete(&self, object: &ObjectVersion, file: &std::fs::File) -> bool {
        self.cache.still_complete_on_disk(object, file)
    }

    fn open(&self, object: ObjectVersion) -> Box<dyn FileReader> {
        Box::new(PrefetchReader {
            cache: self.cache.clone(),
            object,
            max_window: self.max_readahead,
            state: Mutex::new(State {
                current: None,
                last_end: 0,
                last_block: 0,
                window: INITIAL_WINDOW,
                streak: 0,
            }),
        })
    }
}

struct State {
    /// The block the previous read ended in: small reads in a row use it without asking
    /// the cache. Weak: an open handle keeps no memory between reads, or many handles would
    /// hold more than the budget.
    current: Option<(u64, Weak<Block>)>,
    /// End of the previous read: where a sequential reader continues.
    last_end: u64,
    last_block: u64,
    /// How far past the current read to have blocks coming; 0 when reading randomly.
    window: u64,
    /// Bytes read in a row, each read continuing the one before, while reading randomly.
    streak: u64,
}

pub struct PrefetchReader {
    cache: Arc<BlockCache>,
    object: ObjectVersion,
    max_window: u64,
    state: Mutex<State>,
}

impl PrefetchReader {
    /// Updates the access pattern with a read of `[offset, end)` and returns the window.
    fn observe(&self, offset: u64, end: u64) -> u64 {
        let bs = self.cache.config().block_size;
        let mut st = self.state.lock().unwrap();
        let sequential = if st.window == 0 {
            let continues = offset.abs_diff(st.last_end) <= RESUME_GAP;
            st.streak = if continues {
                st.streak + (end - offset)
            } else {
                0
            };
            st.streak >= RESUME_BYTES
        } else {
            offset <= st.last_end + SHORT_FORWARD && offset + SHORT_BACKWARD >= st.last_end
        };
        let block = offset / bs;
        if !sequential {
            if st.window > 0 {
                st.streak = 0;
            }
            st.window = 0;
        } else if st.window == 0 {
            st.window = INITIAL_WINDOW;
        } else if block > st.last_block {
            st.window = (st.window * 2).min(self.max_window);
        }
        st.last_end = st.last_end.max(end);
        if !sequential {
            st.last_end = end;
        }
        st.last_block = block;
        st.window.min(self.max_window)
    }
}

#[async_trait]
impl FileReader for PrefetchReader {
    async fn read(&self, offset: u64, len: u32) -> StoreResult<Bytes> {
        let size = self.object.size;
        let end = offset.saturating_add(len as u64).min(size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let bs = self.cache.config().block_size;
        let (first, last) = (offset / bs, (end - 1) / bs);
        let window = self.observe(offset, end);
        if window == 0 {
            let mut out = BytesMut::with_capacity((end - offset) as usize);
            for i in first..=last {
                let r = self.cache.block_range(size, i);
                let (from, to) = (offset.max(r.start), end.min(r.end));
                let part = self.cache.get_range(&self.object, from..to).await?;
                if first == last {
                    return Ok(part);
                }
                out.extend_from_slice(&part);
            }
            return Ok(out.freeze());
        }
        if end < size {
            let ahead_end = (end + window).min(size);
            for index in last + 1..=(ahead_end - 1) / bs {
                if !self.cache.prefetch(&self.object, index) {
                    break; // out of memory budget: the window is effectively smaller
                }
            }
        }
        if first == last {
            let held = self.state.lock().unwrap().current.clone();
            let lease = match held.and_then(|(i, b)| (i == first).then(|| b.upgrade()).flatten()) {
                Some(b) => {
                    Metrics::add(&self.cache.metrics().memory_hit_bytes_total, end - offset);
                    self.cache.lease(b)
                }
                None => {
                    let b = self.cache.get(&self.object, first, end - offset).await?;
                    self.state.lock().unwrap().current = Some((first, b.downgrade()));
                    b
                }
            };
            let start = (offset - first * bs) as usize;
            return Ok(lease.slice(start..start + (end - offset) as usize));
        }
        // One block at a time, each let go of once copied: a read never holds one block while
        // it waits for memory for the next. The later ones are asked for first, to come at
        // once where the budget allows.
        for index in first + 1..=last {
            if !self.cache.prefetch(&self.object, index) {
                break;
            }
        }
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for i in first..=last {
            let r = self.cache.block_range(size, i);
            let (from, to) = (offset.max(r.start), end.min(r.end));
            let b = self.cache.get(&self.object, i, to - from).await?;
            out.extend_from_slice(&b.data()[(from - r.start) as usize..(to - r.start) as usize]);
            if i == last {
                self.state.lock().unwrap().current = Some((last, b.downgrade()));
            }
        }
        Ok(out.freeze())
    }
}

#[cfg(test)]
mod tests;
