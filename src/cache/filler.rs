//! Cache fills off the request path: writes of fetched bytes to the disk cache run on threads
//! of their own, at a lower CPU priority than the daemon's request work. Where CPUs are busy
//! (data loaders decoding, the daemon serving reads), filling the cache then takes the time
//! they leave, not the time of the reads it was fetched for: a reader is never slowed for the
//! benefit of a later epoch. A nice value is a share, not a ban: fills still progress under
//! load, and a backlog of them holds memory budget, which slows fetches until they land.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How much lower than the daemon's request threads the fill threads run.
const NICE: libc::c_int = 10;
/// Fills in parallel: enough to keep a disk busy, few enough to leave CPUs to readers.
const THREADS: usize = 2;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
pub struct Filler {
    /// Started with the first job, so a cache that never fills starts no thread.
    queue: OnceLock<Sender<Job>>,
    /// Jobs handed over and not finished yet.
    pending: Arc<AtomicUsize>,
}

impl Filler {
    /// Runs `job` on a fill thread; lets it go unrun if none could be started.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        let pending = self.pending.clone();
        let job: Job = Box::new(move || {
            job();
            pending.fetch_sub(1, Ordering::SeqCst);
        });
        let queue = self.queue.get_or_init(start);
        if queue.send(job).is_err() {
            // No fill thread could be started (said at the time). The caller may be a request's
            // thread, which must not wait for a disk: the bytes go uncached (a cache write is
            // never owed), and the job is let go unrun, its memory with it.
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Jobs not finished yet.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Waits (polling, at most `limit`) until every job has run; false on timeout.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while self.pending() > 0 {
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

/// The fill threads: they end when the queue's sender goes (with its cache).
fn start() -> Sender<Job> {
    let (tx, rx) = channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..THREADS {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("lakemount-fill-{i}"))
            .spawn(move || {
                lower_priority();
                serve(&rx)
            });
        if let Err(e) = spawned {
            tracing::warn!("disk cache: cannot start a fill thread ({e}): fewer blocks are cached");
        }
    }
    tx
}

fn serve(rx: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while taking a job, not while running it.
        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// On Linux a nice value belongs to a thread: this lowers only the calling one.
fn lower_priority() {
    // SAFETY: plain syscall wrapper; its result (the new nice value, or -1) needs no check:
    // a thread left at normal priority still fills correctly.
    unsafe {
        libc::nice(NICE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tid() -> i32 {
        // SAFETY: gettid cannot fail.
        unsafe { libc::gettid() }
    }

    fn nice_of(tid: i32) -> i32 {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        // Field 19, counted after the command name's closing parenthesis.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn jobs_run_on_threads_of_lower_priority_and_are_counted_until_done() {
        use std::sync::atomic::AtomicBool;
        let f = Filler::default();
        let (tx, rx) = channel();
        // Jobs wait (a bounded poll) until the gate opens: run on the caller they would hold
        // it up, and the counts below would be wrong.
        let open = Arc::new(AtomicBool::new(false));
        for _ in 0..8 {
            let (tx, open) = (tx.clone(), open.clone());
            f.run(move || {
                let end = Instant::now() + Duration::from_secs(10);
                while !open.load(Ordering::SeqCst) && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(1));
                }
                tx.send(tid()).unwrap();
            });
        }
        assert_eq!(f.pending(), 8, "held back by the gate");
        assert!(!f.wait_idle(Duration::from_millis(50)));
        open.store(true, Ordering::SeqCst);
        assert!(f.wait_idle(Duration::from_secs(10)));
        let here = nice_of(tid());
        let tids: Vec<i32> = rx.try_iter().collect();
        assert_eq!(tids.len(), 8);
        for tid in tids {
            assert_ne!(tid, self::tid(), "not run on the caller");
            assert_eq!(nice_of(tid), (here + NICE).min(19));
        }
    }
}
