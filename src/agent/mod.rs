//! lake-agent: the node side of running training jobs on Azure Batch GPU pools with the lake
//! mounted, and the specs to submit them.
//!
//! [`bootstrap`] (the pool's start task) uses [`gpu`], [`disks`] and [`volume`] (the local
//! NVMe cache volume), [`mounts`] (over [`systemd`] or [`daemon`], driving [`lakemount`],
//! checked by [`probe`]) and [`container`] to prepare a node, recording what it found in
//! [`status`] files. [`run`] (the task) adds [`multinode`] env, records its [`attempts`] in
//! the lake and ships the output. [`spec`] writes pool/job/task JSON; [`cost`] adds up what
//! jobs cost. Everything reads one [`config`] file and the [`batch_env`].

pub mod attempts;
pub mod batch_env;
pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod container;
pub mod cost;
pub mod daemon;
pub mod disks;
pub mod gpu;
pub mod lakemount;
pub mod mounts;
pub mod multinode;
pub mod probe;
pub mod run;
pub mod signals;
pub mod spec;
pub mod status;
pub mod systemd;
pub mod volume;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use cli::{AgentCli, AgentCommand};
use config::AgentConfig;

fn load(path: &Option<PathBuf>) -> Result<AgentConfig> {
    let path = path
        .as_ref()
        .ok_or_else(|| anyhow!("no configuration: pass --config FILE or set LAKE_AGENT_CONFIG"))?;
    AgentConfig::load(path)
}

/// Runs a parsed command line; the process's exit status.
pub fn main(cli: AgentCli) -> ExitCode {
    match dispatch(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line: the chain of causes joined with ": ".
            let line = crate::lake_url::hide_queries(&format!("{e:#}"));
            eprintln!("lake-agent: error: {}", crate::lake_url::one_line(&line));
            let code = e.downcast_ref::<run::ExitError>().map_or(1, |x| x.code);
            ExitCode::from(code)
        }
    }
}

fn print_json(v: &serde_json::Value) -> Result<u8> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(0)
}

fn dispatch(cli: &AgentCli) -> Result<u8> {
    match &cli.command {
        AgentCommand::Bootstrap => {
            bootstrap::run(&load(&cli.config)?)?;
            Ok(0)
        }
        AgentCommand::Run(r) => {
            let cfg = load(&cli.config)?;
            run::run(
                &cfg,
                &run::RunArgs {
                    image: r.image.clone(),
                    host: r.host,
                    lake_rw: r.lake_rw,
                    output_dir: r.output_dir.clone(),
                    job: r.job.clone(),
                    task: r.task.clone(),
                    node_rank: r.node_rank,
                    no_upload: r.no_upload,
                    command: r.command.clone(),
                },
            )
        }
        AgentCommand::Stop => {
            stop(&load(&cli.config)?)?;
            Ok(0)
        }
        AgentCommand::Status => {
            let cfg = load(&cli.config)?;
            let dir = status::status_dir(&cfg, &batch_env::BatchEnv::from_process());
            let file = status::bootstrap_file(&dir);
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("no status at {} (has bootstrap run?)", file.display()))?;
            print!("{text}");
            Ok(0)
        }
        AgentCommand::PoolSpec => print_json(&spec::pool_spec(&load(&cli.config)?)?),
        AgentCommand::JobSpec { id } => {
            print_json(&spec::job_spec(&load(&cli.config)?, id.as_deref()))
        }
        AgentCommand::TaskSpec(t) => {
            let cfg = load(&cli.config)?;
            let command = if t.command.is_empty() {
                cfg.container.command.clone()
            } else {
                t.command.clone()
            };
            if command.is_empty() {
                anyhow::bail!("no command: give one after `--` or set container.command");
            }
            print_json(&spec::task_spec(
                &cfg,
                &spec::TaskRequest {
                    id: &t.id,
                    image: t.image.as_deref().or(cfg.container.image.as_deref()),
                    nodes: t.nodes,
                    command: &command,
                },
            )?)
        }
        AgentCommand::Cost { dirs } => {
            let cfg = match &cli.config {
                Some(_) => load(&cli.config)?,
                None => AgentConfig::default(),
            };
            let dirs: Vec<PathBuf> = if dirs.is_empty() {
                vec![status::status_dir(
                    &cfg,
                    &batch_env::BatchEnv::from_process(),
                )]
            } else {
                dirs.clone()
            };
            let refs: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
            let (rows, warnings) = cost::collect(&refs)?;
            for w in warnings {
                eprintln!("lake-agent: warning: skipped {w}");
            }
            if rows.is_empty() {
                anyhow::bail!(
                    "no task records or status files under {}",
                    dirs.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            print!("{}", cost::table(&rows, &cfg.prices));
            Ok(0)
        }
        AgentCommand::Supervise(s) => {
            daemon::supervise(daemon::SuperviseArgs {
                mountpoint: s.mountpoint.clone(),
                state_file: s.state_file.clone(),
                log_file: s.log_file.clone(),
                restart_delay: Duration::from_secs(s.restart_delay),
                command: s.command.clone(),
            })?;
            Ok(0)
        }
    }
}

/// Unmounts every configured lake, stopping what kept it mounted; goes on past failures and
/// reports them all.
fn stop(cfg: &AgentConfig) -> Result<()> {
    let env = batch_env::BatchEnv::from_process();
    let dir = status::status_dir(cfg, &env);
    let lakemount = lakemount::Lakemount::find(cfg)?;
    let mounter = mounts::Mounter {
        cfg,
        lakemount: &lakemount,
        status_dir: &dir,
        mode: mounts::Mode::resolve(cfg),
    };
    let mut failed = Vec::new();
    for lake in &cfg.lakes {
        match mounter.stop(lake) {
            Ok(()) => println!("lake-agent: {} is unmounted", lake.mountpoint.display()),
            Err(e) => failed.push(format!("{}: {e:#}", lake.mountpoint.display())),
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("{}", failed.join("; "));
    }
    Ok(())
}
