//! A task's attempts. Batch runs a task again when its node goes away (a Spot node is
//! preempted, a node is lost): each attempt records itself in the lake as it starts and every
//! `output.heartbeat_seconds` while it runs (`runs/JOB/TASK/.lake-agent/attempts/`), so the
//! next attempt can say what happened to the last, and `lake-agent cost` can show the time
//! preemption cost. Output the cut-short attempt had put in the lake stays there.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::config::AgentConfig;
use super::lakemount::{Lakemount, UploadTarget};
use super::status::{self, AttemptRecord, NodeInfo, ATTEMPT_KIND};

/// The directory of attempt records below a task's output.
const ATTEMPTS: &str = ".lake-agent/attempts";

pub struct Attempt {
    record: Arc<Mutex<AttemptRecord>>,
    file: PathBuf,
    /// Tells the heartbeat to stop.
    stop: Arc<(Mutex<bool>, Condvar)>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

/// Where the attempts of a task go in the lake: `UPLOAD_URL/.lake-agent/attempts`.
struct Shipping {
    lakemount: Lakemount,
    target: UploadTarget,
    dir: PathBuf,
}

impl Shipping {
    fn ship(&self) {
        let url = format!("{}/{ATTEMPTS}", self.target.url);
        if let Err(e) = self.lakemount.upload(&self.dir, &url, &self.target) {
            eprintln!("lake-agent: warning: cannot record this attempt in the lake: {e:#}");
        }
    }
}

impl Attempt {
    /// Records the start of this attempt under `output_dir` and, when the output goes to the
    /// lake (`target`), there too, then keeps it fresh there while the task runs.
    pub fn start(
        cfg: &AgentConfig,
        record: AttemptRecord,
        output_dir: &Path,
        target: Option<&UploadTarget>,
    ) -> Attempt {
        let dir = output_dir.join(ATTEMPTS);
        let stamp = record.started_at.replace([':', '.'], "");
        let file = dir.join(format!("{}-{stamp}.json", record.node.node_id));
        let record = Arc::new(Mutex::new(record));
        if let Err(e) = status::write_json(&file, &*record.lock().unwrap()) {
            eprintln!(
                "lake-agent: warning: cannot write {}: {e:#}",
                file.display()
            );
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let shipping = target.and_then(|t| {
            Lakemount::find(cfg).ok().map(|lakemount| Shipping {
                lakemount,
                target: t.clone(),
                dir: dir.clone(),
            })
        });
        let heartbeat = shipping.map(|shipping| {
            shipping.ship();
            let every = Duration::from_secs(cfg.output.heartbeat_seconds());
            let (record, file, stop) = (record.clone(), file.clone(), stop.clone());
            std::thread::spawn(move || loop {
                let (lock, cv) = &*stop;
                let stopped = cv
                    .wait_timeout_while(lock.lock().unwrap(), every, |s| !*s)
                    .unwrap()
                    .0;
                if *stopped {
                    return;
                }
                drop(stopped);
                let now = {
                    let mut r = record.lock().unwrap();
                    r.last_seen = status::now();
                    r.clone()
                };
                if status::write_json(&file, &now).is_ok() {
                    shipping.ship();
                }
            })
        });
        Attempt {
            record,
            file,
            stop,
            heartbeat,
        }
    }

    /// The attempt ran to its end: the record says so (it goes up with the output).
    pub fn finish(mut self) {
        {
            let (lock, cv) = &*self.stop;
            *lock.lock().unwrap() = true;
            cv.notify_all();
        }
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        let mut r = self.record.lock().unwrap();
        r.last_seen = status::now();
        r.finished_at = Some(r.last_seen.clone());
        if let Err(e) = status::write_json(&self.file, &*r) {
            eprintln!(
                "lake-agent: warning: cannot write {}: {e:#}",
                self.file.display()
            );
        }
    }
}

/// This attempt's record as it starts.
pub fn new_record(job: &str, task: &str, node: NodeInfo, node_rank: u32) -> AttemptRecord {
    let now = status::now();
    AttemptRecord {
        kind: ATTEMPT_KIND.into(),
        job_id: job.into(),
        task_id: task.into(),
        node,
        node_rank,
        started_at: now.clone(),
        last_seen: now,
        finished_at: None,
    }
}

/// Earlier attempts of the task that never finished, read through the mount of the lake
/// that receives the output (the first lake, unless `output.lake` names another).
pub fn cut_short(cfg: &AgentConfig, task_path: &str) -> Vec<AttemptRecord> {
    let Some(lake) = cfg.lakes.first().filter(|_| cfg.output.lake.is_none()) else {
        return Vec::new();
    };
    let dir = lake.mountpoint.join(task_path).join(ATTEMPTS);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut cut: Vec<AttemptRecord> = entries
        .flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<AttemptRecord>(&b).ok())
        .filter(|a| a.kind == ATTEMPT_KIND && a.finished_at.is_none())
        .collect();
    cut.sort_by(|a, b| a.started_at.cmp(&b.started_at));
    cut
}

/// What the log says of an attempt that was cut short.
pub fn describe(a: &AttemptRecord) -> String {
    format!(
        "an earlier attempt of this task on node {} ({}) started {} and was last seen {} without finishing: its node was preempted or lost; what it had put in the lake stays",
        a.node.node_id,
        a.node.priority.as_deref().unwrap_or("priority unknown"),
        a.started_at,
        a.last_seen
    )
}
