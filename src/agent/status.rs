//! Status files: what bootstrap found and did on a node, and what each task ran for. JSON, so
//! people, scripts and `lake-agent cost` read the same thing. Written to a temporary file and
//! renamed, so a reader never sees half a file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::batch_env::BatchEnv;
use super::config::AgentConfig;
use super::disks::Disk;
use super::gpu::GpuReport;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node_id: String,
    pub pool_id: Option<String>,
    pub vm_size: Option<String>,
    pub in_batch: bool,
    /// `dedicated` or `spot`; absent outside Batch (and in records of older agents).
    #[serde(default)]
    pub priority: Option<String>,
}

impl NodeInfo {
    pub fn new(env: &BatchEnv, cfg: &AgentConfig) -> Self {
        NodeInfo {
            node_id: env.node_id.clone(),
            pool_id: env.pool_id.clone(),
            vm_size: vm_size(cfg),
            in_batch: env.in_batch,
            priority: env.priority.clone(),
        }
    }
}

/// The node's VM size: `agent.vm_size`, else what the pool spec gives the start task
/// (LAKE_AGENT_VM_SIZE), else `pool.vm_size` (tasks do not see the start task's environment,
/// but read the same config).
pub fn vm_size(cfg: &AgentConfig) -> Option<String> {
    cfg.agent
        .vm_size
        .clone()
        .or_else(|| std::env::var("LAKE_AGENT_VM_SIZE").ok())
        .filter(|s| !s.is_empty())
        .or_else(|| Some(cfg.pool.vm_size.clone()))
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MountStatus {
    pub name: String,
    pub lake: String,
    pub mountpoint: PathBuf,
    /// `systemd` or `daemon`.
    pub mode: String,
    /// `mounted` (now) or `already mounted` (by an earlier run).
    pub state: String,
    pub ready_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WarmStatus {
    pub lake: String,
    pub url: String,
    pub ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageStatus {
    pub image: String,
    /// `present` or `pulled`.
    pub action: String,
    pub ms: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CacheStatus {
    pub dir: Option<PathBuf>,
    /// How it was chosen: `configured`, `largest local disk`, `disabled` or `none found`.
    pub source: String,
    pub free_bytes: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Timings {
    pub gpus_ms: u64,
    pub disks_ms: u64,
    pub mounts_ms: u64,
    pub warm_ms: u64,
    pub images_ms: u64,
    pub total_ms: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BootstrapStatus {
    pub kind: String,
    pub version: String,
    pub ok: bool,
    pub error: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    pub node: NodeInfo,
    pub gpus: GpuReport,
    pub disks: Vec<Disk>,
    pub cache: CacheStatus,
    pub mounts: Vec<MountStatus>,
    pub warm: Vec<WarmStatus>,
    pub images: Vec<ImageStatus>,
    pub timings: Timings,
}

/// One task's run on one node: the unit `lake-agent cost` adds up.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TaskStatus {
    pub kind: String,
    pub version: String,
    pub job_id: String,
    pub task_id: String,
    pub node: NodeInfo,
    pub node_rank: u32,
    pub nodes: u32,
    pub image: Option<String>,
    pub exit_code: Option<i32>,
    pub started_at: String,
    pub finished_at: String,
    pub seconds: f64,
    pub output_dir: PathBuf,
    pub output_url: Option<String>,
    pub uploaded: bool,
    /// The snapshots of the lakes the task saw (mounted with a manifest): which data it
    /// trained on.
    #[serde(default)]
    pub snapshots: Vec<SnapshotRef>,
}

/// A lake mounted from a manifest, as a task record names it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotRef {
    pub lake: String,
    pub manifest: PathBuf,
    /// The manifest's identity (`sha256:...`).
    pub identity: String,
}

/// One attempt at a task, written to the lake when it starts and again while it runs: an
/// attempt whose node was preempted (or lost) is one that never says it finished.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AttemptRecord {
    pub kind: String,
    pub job_id: String,
    pub task_id: String,
    pub node: NodeInfo,
    pub node_rank: u32,
    pub started_at: String,
    /// When it was last known to run (each heartbeat moves it on).
    pub last_seen: String,
    pub finished_at: Option<String>,
}

pub const ATTEMPT_KIND: &str = "lake-agent/attempt";
pub const BOOTSTRAP_KIND: &str = "lake-agent/bootstrap";
pub const TASK_KIND: &str = "lake-agent/task";

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Where status, logs and pid files go (see `agent.status_dir`).
pub fn status_dir(cfg: &AgentConfig, env: &BatchEnv) -> PathBuf {
    if let Some(d) = &cfg.agent.status_dir {
        return d.clone();
    }
    if let Some(shared) = &env.node_shared_dir {
        return shared.join("lake-agent");
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/lake-agent");
    }
    crate::config::user_state_home().join("lake-agent")
}

pub fn bootstrap_file(dir: &Path) -> PathBuf {
    dir.join("bootstrap.json")
}

/// Writes `value` as pretty JSON to `path` atomically, creating its directory.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_files_are_written_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/bootstrap.json");
        let s = BootstrapStatus {
            kind: BOOTSTRAP_KIND.into(),
            ok: true,
            started_at: now(),
            ..Default::default()
        };
        write_json(&path, &s).unwrap();
        let back: BootstrapStatus =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(back.ok);
        assert_eq!(back.kind, BOOTSTRAP_KIND);
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn the_status_dir_follows_batch_then_config() {
        let mut cfg = AgentConfig::default();
        let env = BatchEnv {
            node_shared_dir: Some("/mnt/batch/tasks/shared".into()),
            ..Default::default()
        };
        assert_eq!(
            status_dir(&cfg, &env),
            Path::new("/mnt/batch/tasks/shared/lake-agent")
        );
        cfg.agent.status_dir = Some("/srv/status".into());
        assert_eq!(status_dir(&cfg, &env), Path::new("/srv/status"));
    }
}
