//! What Azure Batch tells a task through its environment, with stand-ins outside Batch (a
//! workstation, a test), so every command works in both places.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Variables Batch sets that hold credentials: never copied into containers or status files.
const SECRET_VARS: &[&str] = &["AZ_BATCH_AUTHENTICATION_TOKEN"];

#[derive(Clone, Debug, Default)]
pub struct BatchEnv {
    /// Whether this runs under Batch at all (AZ_BATCH_NODE_ID is set).
    pub in_batch: bool,
    pub node_id: String,
    pub pool_id: Option<String>,
    pub job_id: Option<String>,
    pub task_id: Option<String>,
    pub node_root_dir: Option<PathBuf>,
    pub node_shared_dir: Option<PathBuf>,
    pub node_startup_dir: Option<PathBuf>,
    pub task_working_dir: Option<PathBuf>,
    pub task_dir: Option<PathBuf>,
    /// Multi-instance tasks: every node's IP, in Batch's order.
    pub host_list: Vec<String>,
    /// Multi-instance tasks: the primary's `IP:PORT` (that port is Batch's own).
    pub master_node: Option<String>,
    pub is_master: Option<bool>,
    /// `dedicated` or `spot` (a low-priority node, which Batch may preempt); None outside Batch.
    pub priority: Option<String>,
    /// Every `AZ_BATCH_*` variable except credentials, to hand on to the task's command.
    pub vars: BTreeMap<String, String>,
}

impl BatchEnv {
    pub fn from_process() -> Self {
        Self::from_vars(std::env::vars())
    }

    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("AZ_BATCH_") && !SECRET_VARS.contains(&k.as_str()))
            .collect();
        let get = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
        let path = |k: &str| get(k).map(PathBuf::from);
        let host_list = get("AZ_BATCH_HOST_LIST")
            .map(|l| {
                l.split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let node_id = get("AZ_BATCH_NODE_ID");
        BatchEnv {
            in_batch: node_id.is_some(),
            node_id: node_id.unwrap_or_else(hostname),
            pool_id: get("AZ_BATCH_POOL_ID"),
            job_id: get("AZ_BATCH_JOB_ID"),
            task_id: get("AZ_BATCH_TASK_ID"),
            node_root_dir: path("AZ_BATCH_NODE_ROOT_DIR"),
            node_shared_dir: path("AZ_BATCH_NODE_SHARED_DIR"),
            node_startup_dir: path("AZ_BATCH_NODE_STARTUP_DIR"),
            task_working_dir: path("AZ_BATCH_TASK_WORKING_DIR"),
            task_dir: path("AZ_BATCH_TASK_DIR"),
            host_list,
            master_node: get("AZ_BATCH_MASTER_NODE"),
            is_master: get("AZ_BATCH_IS_CURRENT_NODE_MASTER").map(|v| v == "true"),
            priority: get("AZ_BATCH_NODE_IS_DEDICATED")
                .map(|v| if v == "true" { "dedicated" } else { "spot" }.to_string()),
            vars,
        }
    }
}

/// This machine's host name, the node id outside Batch.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BatchEnv {
        BatchEnv::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn reads_a_batch_task_environment() {
        let e = env(&[
            ("AZ_BATCH_NODE_ID", "tvmps_abc"),
            ("AZ_BATCH_POOL_ID", "gpu"),
            ("AZ_BATCH_JOB_ID", "j1"),
            ("AZ_BATCH_TASK_ID", "t1"),
            ("AZ_BATCH_NODE_SHARED_DIR", "/mnt/batch/tasks/shared"),
            (
                "AZ_BATCH_TASK_WORKING_DIR",
                "/mnt/batch/tasks/workitems/j1/job-1/t1/wd",
            ),
            ("AZ_BATCH_HOST_LIST", "10.0.0.4,10.0.0.5"),
            ("AZ_BATCH_MASTER_NODE", "10.0.0.4:6000"),
            ("AZ_BATCH_IS_CURRENT_NODE_MASTER", "false"),
            ("AZ_BATCH_AUTHENTICATION_TOKEN", "secret"),
            ("HOME", "/root"),
        ]);
        assert!(e.in_batch);
        assert_eq!(e.node_id, "tvmps_abc");
        assert_eq!(e.pool_id.as_deref(), Some("gpu"));
        assert_eq!(e.host_list, ["10.0.0.4", "10.0.0.5"]);
        assert_eq!(e.is_master, Some(false));
        assert_eq!(
            e.node_shared_dir,
            Some(PathBuf::from("/mnt/batch/tasks/shared"))
        );
        assert!(!e.vars.contains_key("AZ_BATCH_AUTHENTICATION_TOKEN"));
        assert!(!e.vars.contains_key("HOME"));
        assert_eq!(e.vars.len(), 9);
    }

    #[test]
    fn works_outside_batch() {
        let e = env(&[("HOME", "/root")]);
        assert!(!e.in_batch);
        assert!(!e.node_id.is_empty());
        assert!(e.host_list.is_empty() && e.job_id.is_none());
    }
}
