//! The memory budget of the block layer. Invariant: every byte of block data the daemon
//! holds (a block being fetched, held by the memory tier, in a reply being sent, or waiting
//! to be written to the disk cache) is covered by a permit of one budget of `--max-memory`
//! bytes, taken before the block's memory exists and given back when the block is dropped.
//! Whoever needs memory evicts blocks nobody uses, or waits; nothing counts memory after the
//! fact, so no number of open handles or concurrent reads can take more than the budget.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Permits are counted in units of this many bytes: a small file's block takes little.
const UNIT: u64 = 64 << 10;

pub struct Budget {
    permits: Arc<Semaphore>,
    total: u64,
    /// Signalled when a user of a block lets go of it: the block may now be evicted.
    released: Notify,
    waiting: AtomicUsize,
}

/// The budget a block's bytes take; given back when dropped.
pub type Permit = OwnedSemaphorePermit;

impl Budget {
    pub fn new(bytes: u64) -> Arc<Self> {
        let total = (bytes / UNIT).max(1);
        Arc::new(Budget {
            permits: Arc::new(Semaphore::new(total as usize)),
            total,
            released: Notify::new(),
            waiting: AtomicUsize::new(0),
        })
    }

    fn units(len: u64) -> u32 {
        u32::try_from(len.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX)
    }

    /// Bytes covered by permits now.
    pub fn in_use(&self) -> u64 {
        (self.total - self.permits.available_permits() as u64) * UNIT
    }

    /// The budget for `len` bytes if it is free now, evicting (through `evict`, which frees
    /// one unused block per call and says whether it found one) as needed.
    pub fn try_take(&self, len: u64, mut evict: impl FnMut() -> bool) -> Option<Permit> {
        let n = Self::units(len);
        loop {
            if let Ok(p) = self.permits.clone().try_acquire_many_owned(n) {
                return Some(p);
            }
            if !evict() {
                return None;
            }
        }
    }

    /// The budget for `len` bytes: evicts what nobody uses, then waits for a block to be
    /// dropped or let go of. Callers bound the wait (the block's data deadline).
    pub async fn take(&self, len: u64, mut evict: impl FnMut() -> bool) -> Permit {
        let n = Self::units(len);
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        loop {
            // Registered before looking, so a release between the look and the wait is seen.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(p) = self.try_take(len, &mut evict) {
                return p;
            }
            tokio::select! {
                p = self.permits.clone().acquire_many_owned(n) => {
                    return p.expect("the budget's semaphore is never closed");
                }
                _ = &mut released => {}
            }
        }
    }

    /// A user of a block let go of it: waiters look for something to evict again.
    pub fn let_go(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.released.notify_waiters();
        }
    }
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    #[test]
    fn permits_cover_whole_units_and_come_back_when_dropped() {
        let b = Budget::new(1 << 20);
        let small = b.try_take(1, || false).unwrap();
        assert_eq!(b.in_use(), UNIT);
        let rest = b.try_take((1 << 20) - UNIT, || false).unwrap();
        assert!(b.try_take(1, || false).is_none(), "the budget is spent");
        drop(small);
        assert_eq!(b.in_use(), (1 << 20) - UNIT);
        drop(rest);
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn taking_evicts_until_enough_is_free_and_stops_when_nothing_is_left() {
        let b = Budget::new(4 * UNIT);
        let held = Mutex::new(vec![b.try_take(2 * UNIT, || false).unwrap()]);
        held.lock()
            .unwrap()
            .push(b.try_take(UNIT, || false).unwrap());
        let mut evictions = 0;
        let p = b.try_take(3 * UNIT, || {
            evictions += 1;
            held.lock().unwrap().pop().is_some()
        });
        assert!(p.is_some());
        assert_eq!(evictions, 2, "both blocks had to go");
        assert!(b.try_take(2 * UNIT, || false).is_none());
    }

    #[tokio::test]
    async fn a_waiter_gets_the_budget_when_a_block_is_let_go_of_and_can_then_be_evicted() {
        let b = Budget::new(2 * UNIT);
        let in_use = Arc::new(Mutex::new(Some(b.try_take(2 * UNIT, || false).unwrap())));
        let evictable = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let waiter = {
            let (b, in_use, evictable) = (b.clone(), in_use.clone(), evictable.clone());
            tokio::spawn(async move {
                b.take(UNIT, || {
                    evictable.load(Ordering::SeqCst) && in_use.lock().unwrap().take().is_some()
                })
                .await
            })
        };
        // The waiter finds nothing to evict and waits; nothing else will wake it but a
        // let-go, which marks the held block evictable.
        while b.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished());
        evictable.store(true, Ordering::SeqCst);
        b.let_go();
        let p = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the waiter was woken")
            .unwrap();
        assert_eq!(b.in_use(), UNIT);
        drop(p);
        assert_eq!(b.waiting.load(Ordering::SeqCst), 0);
    }
}
