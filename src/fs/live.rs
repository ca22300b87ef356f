//! Live files: a file open for writing longer than `--commit-interval` is committed while it
//! stays open, so a training log or a TensorBoard event file shows in the lake as it grows
//! and a preempted node loses at most one interval of it. Each live commit is whole (one
//! Put Block List of the content as of then) and sends only the blocks changed since the
//! last one; the last close still commits the rest (SEMANTICS.md, "Who commits what").

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::LakeFs;

impl LakeFs {
    /// Commits every file being written whose first uncommitted change is `interval` old or
    /// older; returns how many were committed.
    pub async fn commit_live_files(&self, interval: Duration) -> usize {
        let due: Vec<_> = self
            .writers
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, entry)| entry.w.live_commit_due(interval))
            .map(|(ino, entry)| (*ino, entry.w.clone()))
            .collect();
        let mut done = 0;
        for (ino, w) in due {
            if self.commit_as(ino, &w, true).await.is_ok() {
                done += 1;
            }
        }
        done
    }
}

/// Runs live commits for `fs` every `interval` (checked four times as often), until `fs`
/// is gone. `None` when the interval is zero (live commits off) or the mount is read-only.
pub fn start(fs: &Arc<LakeFs>, interval: Duration) -> Option<tokio::task::JoinHandle<()>> {
    if interval.is_zero() || fs.config().read_only {
        return None;
    }
    let fs: Weak<LakeFs> = Arc::downgrade(fs);
    let tick = (interval / 4).max(Duration::from_millis(100));
    Some(tokio::spawn(async move {
        loop {
            tokio::time::sleep(tick).await;
            let Some(fs) = fs.upgrade() else { return };
            fs.commit_live_files(interval).await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::write::WriteConfig;
    use crate::fs::{FsConfig, ROOT_INO};
    use crate::reader::DirectReadPath;
    use crate::store::memory::MemoryStore;
    use std::sync::atomic::Ordering;

    /// A log written line by line and never closed: each live commit shows every line so
    /// far and sends what was added since the last (the blocks it touched), never the
    /// whole file again; a failed live commit tells nobody and the next one lands.
    #[tokio::test]
    async fn a_file_kept_open_is_committed_as_it_grows_sending_what_was_added() {
        const BLOCK: u64 = 1024;
        let staging = tempfile::tempdir().unwrap();
        let store = Arc::new(MemoryStore::new());
        let cfg = FsConfig {
            write: WriteConfig {
                staging_dir: staging.path().to_path_buf(),
                block_size: BLOCK,
            },
            ..FsConfig::default()
        };
        let fs = LakeFs::new(store.clone(), DirectReadPath::new(store.clone()), cfg);
        let (_, fh) = fs.create(ROOT_INO, "train.log", false, 0).await.unwrap();
        let interval = Duration::from_millis(20);
        let mut log = Vec::new();
        let sent = || store.counters.put_bytes.load(Ordering::Relaxed);
        for round in 0..12 {
            let line = format!("step {round:3}: loss {:.6}\n", 1.0 / (round + 1) as f64);
            let lines = line.repeat(10 + round * 7);
            fs.write(fh, log.len() as u64, lines.as_bytes())
                .await
                .unwrap();
            log.extend_from_slice(lines.as_bytes());
            if round == 6 {
                // Still due since round 5's refused commit: this one lands it all.
                assert_eq!(fs.commit_live_files(interval).await, 1);
                assert_eq!(&store.data("train.log").unwrap()[..], &log[..]);
                continue;
            }
            assert_eq!(fs.commit_live_files(interval).await, 0, "not due yet");
            if round == 5 {
                store.fail_writes.store(true, Ordering::Relaxed);
            }
            tokio::time::sleep(interval).await;
            let before = sent();
            let done = fs.commit_live_files(interval).await;
            store.fail_writes.store(false, Ordering::Relaxed);
            if round == 5 {
                assert_eq!(done, 0, "the lake refused it");
                continue;
            }
            assert_eq!(done, 1, "round {round}");
            assert_eq!(
                &store.data("train.log").unwrap()[..],
                &log[..],
                "round {round}"
            );
            // What was added since the last live commit, widened to whole blocks.
            let added = lines.len() as u64;
            assert!(
                sent() - before <= added + 2 * BLOCK,
                "round {round}: {} bytes sent for {added} added",
                sent() - before
            );
        }
        assert_eq!(
            fs.commit_live_files(interval).await,
            0,
            "clean: nothing to do"
        );
        fs.write(fh, log.len() as u64, b"done\n").await.unwrap();
        log.extend_from_slice(b"done\n");
        fs.release(fh).await;
        assert_eq!(
            &store.data("train.log").unwrap()[..],
            &log[..],
            "the last close"
        );
    }
}
