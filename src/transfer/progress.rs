//! Progress of long transfers: a live bar on a terminal, a line every few seconds otherwise
//! (a Batch start task's stdout file, CI logs).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    files_total: u64,
    files: AtomicU64,
    bytes: AtomicU64,
    started: Instant,
    verb: &'static str,
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

impl Progress {
    pub fn new(verb: &'static str, files_total: u64, bytes_total: u64) -> Arc<Self> {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(bytes_total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar
        });
        let p = Arc::new(Progress {
            bar,
            files_total,
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            started: Instant::now(),
            verb,
        });
        if p.bar.is_none() {
            // Plain lines for logs; the task ends when the last Arc is dropped.
            let weak = Arc::downgrade(&p);
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_secs(5));
                match weak.upgrade() {
                    Some(p) => eprintln!("{}", p.line(bytes_total)),
                    None => return,
                }
            });
        }
        p.refresh();
        p
    }

    fn line(&self, bytes_total: u64) -> String {
        let (files, bytes) = (
            self.files.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        );
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        format!(
            "{}: {files}/{} files, {:.1}/{:.1} MiB, {:.1} MiB/s",
            self.verb,
            self.files_total,
            mib(bytes),
            mib(bytes_total),
            mib(bytes) / secs
        )
    }

    fn refresh(&self) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "{} {}/{} files",
                self.verb,
                self.files.load(Ordering::Relaxed),
                self.files_total
            ));
        }
    }

    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    pub fn file_done(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.refresh();
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}
