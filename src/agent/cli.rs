//! lake-agent's command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "lake-agent",
    version,
    about = "Prepare Azure Batch GPU nodes for lake data, run training containers, write pool specs",
    long_about = "Prepare Azure Batch GPU nodes for lake data, run training containers, write pool specs.\n\n\
On a node:\n  \
lake-agent bootstrap --config lake-agent.toml     (the pool's start task, elevated)\n  \
lake-agent run --config lake-agent.toml --image IMG -- python train.py\n  \
lake-agent stop --config lake-agent.toml\n\n\
To submit:\n  \
lake-agent pool-spec --config lake-agent.toml > pool.json && az batch pool create --json-file pool.json\n  \
lake-agent job-spec --config lake-agent.toml > job.json && az batch job create --json-file job.json\n  \
lake-agent task-spec --config lake-agent.toml --id t1 -- python train.py > task.json\n  \
lake-agent cost --config lake-agent.toml /mnt/lake/runs"
)]
pub struct AgentCli {
    #[command(subcommand)]
    pub command: AgentCommand,

    /// The agent's TOML configuration.
    #[arg(long, global = true, env = "LAKE_AGENT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Prepare this node: detect GPUs, pick the cache disk, mount the lakes (ready before it
    /// returns), warm datasets, pull images, write the status file. Safe to rerun.
    Bootstrap,
    /// Run a task: the framework container (or, without an image, the command on the host)
    /// with the lake, GPUs and multi-node env; then upload its output to LAKE/runs/JOB/TASK/.
    Run(RunCmd),
    /// Unmount the lakes bootstrap mounted and stop their daemons.
    Stop,
    /// Print the status file of the last bootstrap (JSON).
    Status,
    /// Print a Batch pool spec (JSON for `az batch pool create --json-file`).
    PoolSpec,
    /// Print a Batch job spec (JSON for `az batch job create --json-file`).
    JobSpec {
        /// Job id [default: job.id].
        #[arg(long)]
        id: Option<String>,
    },
    /// Print a Batch task spec that runs `lake-agent run` (JSON for `az batch task create
    /// --json-file`).
    TaskSpec(TaskSpecCmd),
    /// What jobs cost: node-hours from task records times the price of the VM size.
    Cost {
        /// Directories holding status files or task records (searched recursively), e.g.
        /// the status directory or a mounted lake's runs/ [default: the status directory].
        dirs: Vec<PathBuf>,
    },
    /// Keep a lake mount running (started by bootstrap on nodes without systemd).
    #[command(hide = true)]
    Supervise(SuperviseCmd),
}

#[derive(Debug, Args)]
pub struct RunCmd {
    /// The container image [default: container.image; none: run on the host].
    #[arg(long)]
    pub image: Option<String>,
    /// Run on the host even if the config names an image.
    #[arg(long, conflicts_with = "image")]
    pub host: bool,
    /// Bind the lakes read-write into the container.
    #[arg(long)]
    pub lake_rw: bool,
    /// Host directory for the task's output [default: $AZ_BATCH_TASK_WORKING_DIR/output].
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Job id [default: $AZ_BATCH_JOB_ID, else "local"].
    #[arg(long)]
    pub job: Option<String>,
    /// Task id [default: $AZ_BATCH_TASK_ID, else HOST-TIME].
    #[arg(long)]
    pub task: Option<String>,
    /// This node's rank in a multi-node task [default: from the Batch host list].
    #[arg(long, value_name = "N")]
    pub node_rank: Option<u32>,
    /// Keep the output on the node.
    #[arg(long)]
    pub no_upload: bool,
    /// The command [default: container.command].
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TaskSpecCmd {
    /// Task id.
    #[arg(long)]
    pub id: String,
    /// The container image [default: container.image].
    #[arg(long)]
    pub image: Option<String>,
    /// Nodes for the task (a multi-instance task when above 1) [default: pool.nodes_per_task].
    #[arg(long)]
    pub nodes: Option<u32>,
    /// The command [default: container.command].
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SuperviseCmd {
    #[arg(long)]
    pub mountpoint: PathBuf,
    #[arg(long)]
    pub state_file: PathBuf,
    #[arg(long)]
    pub log_file: PathBuf,
    #[arg(long, default_value_t = 5)]
    pub restart_delay: u64,
    #[arg(last = true, required = true)]
    pub command: Vec<std::ffi::OsString>,
}
