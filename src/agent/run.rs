//! `lake-agent run`, the task: the framework container (or, without an image, the command on
//! the host) with the lake, the task's directories, GPUs and multi-node env; then the output
//! shipped to `LAKE/runs/JOB/TASK/`. The exit status is the command's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::attempts;
use super::batch_env::{hostname, BatchEnv};
use super::bootstrap::join_url;
use super::config::AgentConfig;
use super::container::{container_name, Bind, ContainerRuntime, RunSpec};
use super::gpu;
use super::lakemount::{Lakemount, UploadTarget};
use super::multinode::{self, Topology};
use super::probe;
use super::signals;
use super::status::{self, NodeInfo, TaskStatus, TASK_KIND};

/// Exit status when the container cannot be started (as docker and podman use it).
pub const CANNOT_START: u8 = 125;
/// Exit status when the command cannot be found on the host (as shells use it).
pub const NOT_FOUND: u8 = 127;

/// An error that ends the agent with a chosen exit status.
#[derive(Debug)]
pub struct ExitError {
    pub code: u8,
    pub error: anyhow::Error,
}

impl std::fmt::Display for ExitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for ExitError {}

fn exit_error(code: u8, error: anyhow::Error) -> anyhow::Error {
    anyhow::Error::new(ExitError { code, error })
}

#[derive(Debug, Default)]
pub struct RunArgs {
    pub image: Option<String>,
    pub host: bool,
    pub lake_rw: bool,
    pub output_dir: Option<PathBuf>,
    pub job: Option<String>,
    pub task: Option<String>,
    pub node_rank: Option<u32>,
    pub no_upload: bool,
    pub command: Vec<String>,
}

/// How long a stopped task's command gets to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Runs the task; Ok(exit status for the agent).
pub fn run(cfg: &AgentConfig, args: &RunArgs) -> Result<u8> {
    signals::install();
    let env = BatchEnv::from_process();
    let job = args
        .job
        .clone()
        .or_else(|| env.job_id.clone())
        .unwrap_or_else(|| "local".into());
    let task = args
        .task
        .clone()
        .or_else(|| env.task_id.clone())
        .unwrap_or_else(|| {
            format!(
                "{}-{}",
                hostname(),
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
            )
        });
    let workdir = match &env.task_working_dir {
        Some(d) => d.clone(),
        None => std::env::current_dir().context("cannot tell the current directory")?,
    };

    // A lake that is not mounted would show up as an empty directory: refuse instead.
    for lake in &cfg.lakes {
        if !probe::is_ready(&lake.mountpoint) {
            bail!(
                "lake {:?} is not mounted at {} (or does not answer): run `lake-agent bootstrap` first",
                lake.name,
                lake.mountpoint.display()
            );
        }
    }

    let gpus = gpu::detect(&cfg.agent.nvidia_smi, cfg.agent.gpus)?;
    let nproc = cfg
        .container
        .nproc_per_node
        .unwrap_or(gpus.gpus.len().max(1) as u32);
    let topo = multinode::topology(
        &env,
        cfg.container.master_port,
        nproc,
        args.node_rank,
        &multinode::local_addrs(),
    )?;

    let output_dir = args
        .output_dir
        .clone()
        .or_else(|| cfg.output.dir.clone())
        .unwrap_or_else(|| workdir.join("output"));
    std::fs::create_dir_all(&output_dir).with_context(|| {
        format!(
            "cannot create the output directory {}",
            output_dir.display()
        )
    })?;
    let output_dir = output_dir.canonicalize()?;
    let hostfile = workdir.join("hostfile");
    std::fs::write(&hostfile, topo.hostfile())
        .with_context(|| format!("cannot write {}", hostfile.display()))?;

    let command = if args.command.is_empty() {
        cfg.container.command.clone()
    } else {
        args.command.clone()
    };
    if command.is_empty() {
        bail!("no command: give one after `--` or set container.command");
    }
    let image = if args.host {
        None
    } else {
        args.image.clone().or_else(|| cfg.container.image.clone())
    };

    let mut vars: Vec<(String, String)> = env.vars.clone().into_iter().collect();
    vars.extend(topo.env());
    vars.push(("LAKE_AGENT_JOB_ID".into(), job.clone()));
    vars.push(("LAKE_AGENT_TASK_ID".into(), task.clone()));
    vars.push((
        "LAKE_AGENT_HOSTFILE".into(),
        hostfile.to_string_lossy().into_owned(),
    ));
    let output_seen = match image {
        Some(_) => cfg.container.output_path.clone(),
        None => output_dir.clone(),
    };
    vars.push((
        "LAKE_AGENT_OUTPUT_DIR".into(),
        output_seen.to_string_lossy().into_owned(),
    ));
    vars.extend(cfg.container.env.clone());

    let rank_part = if topo.nnodes() > 1 {
        format!("/node-{}", topo.node_rank)
    } else {
        String::new()
    };
    let task_path = format!("runs/{job}/{task}{rank_part}");
    let upload = if cfg.output.upload() && !args.no_upload {
        Some(upload_target(cfg, &task_path)?)
    } else {
        None
    };
    for earlier in attempts::cut_short(cfg, &task_path) {
        println!("lake-agent: {}", attempts::describe(&earlier));
    }
    let attempt = attempts::Attempt::start(
        cfg,
        attempts::new_record(&job, &task, NodeInfo::new(&env, cfg), topo.node_rank),
        &output_dir,
        upload.as_ref(),
    );

    let started_at = status::now();
    let start = Instant::now();
    let child = match &image {
        Some(image) => start_container(
            cfg,
            args,
            image,
            &command,
            &topo,
            !gpus.gpus.is_empty(),
            &workdir,
            &output_dir,
            vars,
            &job,
            &task,
        ),
        None => start_on_host(&command, &workdir, vars),
    };
    // An attempt that could not start (or wait) ended here, on a node that still runs.
    let exit = child.and_then(wait_forwarding_stops);
    let exit = match exit {
        Ok(exit) => exit,
        Err(e) => {
            attempt.finish();
            return Err(e);
        }
    };
    let code = exit_code(exit);
    let seconds = start.elapsed().as_secs_f64();
    println!("lake-agent: the command exited with status {code} after {seconds:.1}s");
    attempt.finish();
    let mut record = TaskStatus {
        kind: TASK_KIND.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        job_id: job.clone(),
        task_id: task.clone(),
        node: NodeInfo::new(&env, cfg),
        node_rank: topo.node_rank,
        nodes: topo.nnodes(),
        image: image.clone(),
        exit_code: Some(code.into()),
        started_at,
        finished_at: status::now(),
        seconds,
        output_dir: output_dir.clone(),
        output_url: upload.as_ref().map(|u| u.url.clone()),
        uploaded: false,
        snapshots: snapshots(cfg),
    };
    let dir = status::status_dir(cfg, &env);
    let record_file = dir
        .join("tasks")
        .join(&job)
        .join(format!("{task}.node-{}.json", topo.node_rank));
    // The record travels with the output, so costs can be added up from the lake later.
    status::write_json(&output_dir.join(".lake-agent/task.json"), &record)?;
    status::write_json(&record_file, &record)?;

    let Some(target) = upload else {
        return Ok(code);
    };
    println!(
        "lake-agent: uploading {} to {}",
        output_dir.display(),
        target.url
    );
    let shipped = Lakemount::find(cfg).and_then(|lm| lm.upload(&output_dir, &target.url, &target));
    match shipped {
        Ok(()) => {
            record.uploaded = true;
            status::write_json(&record_file, &record)?;
            println!("lake-agent: output uploaded to {}", target.url);
            Ok(code)
        }
        Err(e) => {
            eprintln!(
                "lake-agent: error: the upload of {} to {} failed: {e:#}; the task's output is kept in {}",
                output_dir.display(),
                target.url,
                output_dir.display()
            );
            Ok(if code == 0 { 1 } else { code })
        }
    }
}

/// The snapshots the lakes are mounted from, with their identities.
fn snapshots(cfg: &AgentConfig) -> Vec<status::SnapshotRef> {
    cfg.lakes
        .iter()
        .filter_map(|l| {
            let m = l.manifest.as_ref()?;
            let identity = match crate::snapshot::manifest::Manifest::load_header(m) {
                Ok(h) => h.identity,
                Err(e) => {
                    eprintln!("lake-agent: warning: {e:#}");
                    "unknown".into()
                }
            };
            Some(status::SnapshotRef {
                lake: l.name.clone(),
                manifest: m.clone(),
                identity,
            })
        })
        .collect()
}

fn upload_target(cfg: &AgentConfig, path: &str) -> Result<UploadTarget> {
    let first = cfg.lakes.first();
    let (base, endpoint, auth) = match &cfg.output.lake {
        Some(url) => (
            url.clone(),
            cfg.output.endpoint.clone(),
            cfg.output.auth.clone(),
        ),
        None => {
            let lake = first.ok_or_else(|| {
                anyhow!(
                    "no lake to upload the output to: set output.lake (or output.upload = false)"
                )
            })?;
            (
                lake.url.clone(),
                cfg.output
                    .endpoint
                    .clone()
                    .or_else(|| lake.endpoint.clone()),
                cfg.output.auth.clone().or_else(|| lake.auth.clone()),
            )
        }
    };
    Ok(UploadTarget {
        url: join_url(&base, path),
        endpoint,
        auth,
        threads: cfg.output.threads,
    })
}

#[allow(clippy::too_many_arguments)]
fn start_container(
    cfg: &AgentConfig,
    args: &RunArgs,
    image: &str,
    command: &[String],
    topo: &Topology,
    gpus: bool,
    workdir: &Path,
    output_dir: &Path,
    env: Vec<(String, String)>,
    job: &str,
    task: &str,
) -> Result<Child> {
    let c = &cfg.container;
    let rt = ContainerRuntime::new(c);
    rt.ensure_image(image, c.pull)
        .map_err(|e| exit_error(CANNOT_START, e))?;
    let mut binds: Vec<Bind> = cfg
        .lakes
        .iter()
        .map(|l| Bind {
            host: l.mountpoint.clone(),
            container: l
                .container_path
                .clone()
                .unwrap_or_else(|| l.mountpoint.clone()),
            read_only: !(l.read_write || args.lake_rw),
        })
        .collect();
    binds.push(Bind {
        host: workdir.to_path_buf(),
        container: workdir.to_path_buf(),
        read_only: false,
    });
    binds.push(Bind {
        host: output_dir.to_path_buf(),
        container: c.output_path.clone(),
        read_only: false,
    });
    let spec = RunSpec {
        name: container_name(job, task, topo.node_rank),
        image: image.to_string(),
        command: command.to_vec(),
        gpus,
        ipc_host: c.ipc_host,
        shm_size: c.shm_size.clone(),
        ulimits: c.ulimits.clone(),
        network: c.network.clone(),
        binds,
        workdir: Some(workdir.to_path_buf()),
        env,
        extra_args: c.run_args.clone(),
    };
    rt.remove(&spec.name);
    println!(
        "lake-agent: starting {image} with {} ({} GPU passthrough)",
        rt.kind.name(),
        if gpus { "with" } else { "no" }
    );
    rt.command()
        .args(rt.run_args(&spec))
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            exit_error(
                CANNOT_START,
                anyhow!("cannot run {}: {e}", rt.bin.display()),
            )
        })
}

/// The command gets the host's environment less credentials (the agent's own, for the lake,
/// and Batch's task token), plus the variables a container would get.
fn start_on_host(command: &[String], workdir: &Path, env: Vec<(String, String)>) -> Result<Child> {
    let mut cmd = Command::new(&command[0]);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("AZURE_") || k == "AZ_BATCH_AUTHENTICATION_TOKEN" || k == "NOTIFY_SOCKET" {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd.args(&command[1..])
        .envs(env)
        .current_dir(workdir)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                NOT_FOUND
            } else {
                CANNOT_START
            };
            exit_error(code, anyhow!("cannot run {}: {e}", command[0]))
        })
}

/// Waits for the command; a stop request (Batch terminating the task) is passed on to it
/// (docker/podman pass it into the container), and after a grace period it is killed.
fn wait_forwarding_stops(mut child: Child) -> Result<ExitStatus> {
    let mut stop_sent: Option<Instant> = None;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        match (signals::received(), stop_sent) {
            (Some(sig), None) => {
                // SAFETY: kill(2) on our own child, not yet waited for.
                unsafe { libc::kill(child.id() as libc::pid_t, sig) };
                stop_sent = Some(Instant::now());
            }
            (Some(_), Some(at)) if at.elapsed() > STOP_GRACE => {
                let _ = child.kill();
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The status a shell would report: the code, or 128 + the signal that ended it.
pub fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(s)) => (128 + s) as u8,
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_as_a_shell_reports_them() {
        let st = Command::new("sh").args(["-c", "exit 7"]).status().unwrap();
        assert_eq!(exit_code(st), 7);
        let st = Command::new("sh")
            .args(["-c", "kill -TERM $$"])
            .status()
            .unwrap();
        assert_eq!(exit_code(st), 128 + 15);
    }

    #[test]
    fn output_goes_under_runs_of_the_first_lake_unless_configured() {
        let cfg = AgentConfig::parse(
            r#"
[[lake]]
name = "data"
url = "az://acct/data/"
mountpoint = "/mnt/lake"
endpoint = "http://127.0.0.1:1/acct"
"#,
        )
        .unwrap();
        let t = upload_target(&cfg, "runs/j/t").unwrap();
        assert_eq!(t.url, "az://acct/data/runs/j/t");
        assert_eq!(t.endpoint.as_deref(), Some("http://127.0.0.1:1/acct"));
        let cfg = AgentConfig::parse("[output]\nlake = \"az://acct/results\"\n").unwrap();
        let t = upload_target(&cfg, "runs/j/t").unwrap();
        assert_eq!(t.url, "az://acct/results/runs/j/t");
        assert_eq!(t.endpoint, None);
        let e = upload_target(&AgentConfig::default(), "runs/j/t").unwrap_err();
        assert!(e.to_string().contains("output.lake"), "{e}");
    }
}
