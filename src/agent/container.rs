//! The container runtime (docker or podman) as a command-line program: image checks and pulls,
//! and the `run` command line of a framework container.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::config::{ContainerConfig, PullPolicy, Runtime};

pub struct ContainerRuntime {
    pub kind: Runtime,
    pub bin: PathBuf,
    pub global_args: Vec<String>,
}

/// A directory bound into the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    pub host: PathBuf,
    pub container: PathBuf,
    pub read_only: bool,
}

/// Everything `run` needs to say.
#[derive(Clone, Debug, Default)]
pub struct RunSpec {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub gpus: bool,
    pub ipc_host: bool,
    pub shm_size: Option<String>,
    pub ulimits: Vec<String>,
    pub network: String,
    pub binds: Vec<Bind>,
    pub workdir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub extra_args: Vec<String>,
}

impl ContainerRuntime {
    pub fn new(c: &ContainerConfig) -> Self {
        ContainerRuntime {
            kind: c.runtime,
            bin: c
                .runtime_bin
                .clone()
                .unwrap_or_else(|| PathBuf::from(c.runtime.name())),
            global_args: c.runtime_args.clone(),
        }
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.global_args).stdin(Stdio::null());
        cmd
    }

    fn shown(&self) -> String {
        self.bin.display().to_string()
    }

    pub fn image_present(&self, image: &str) -> Result<bool> {
        let out = self
            .command()
            .args(["image", "inspect", "--format", "{{.Id}}", image])
            .output()
            .with_context(|| {
                format!(
                    "cannot run {} (container.runtime = {:?}): is it installed?",
                    self.shown(),
                    self.kind.name()
                )
            })?;
        Ok(out.status.success())
    }

    /// Pulls `image`, its progress on our stdout; on failure, the runtime's own reason.
    pub fn pull(&self, image: &str) -> Result<()> {
        let stdout = std::io::stdout().as_fd().try_clone_to_owned()?;
        let out = self
            .command()
            .args(["pull", image])
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("cannot run {}", self.shown()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let line = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            bail!("{} pull {image} failed: {line}", self.kind.name());
        }
        Ok(())
    }

    /// Makes sure `image` is on the node as `policy` asks: `present` or `pulled`.
    pub fn ensure_image(&self, image: &str, policy: PullPolicy) -> Result<&'static str> {
        let present = self.image_present(image)?;
        match (present, policy) {
            (true, PullPolicy::Missing | PullPolicy::Never) => Ok("present"),
            (false, PullPolicy::Never) => bail!(
                "image {image} is not on this node and container.pull = \"never\" \
                 (pull or load it first)"
            ),
            (_, _) => {
                self.pull(image).map_err(|e| {
                    e.context(format!(
                        "image {image} is not on this node and cannot be pulled"
                    ))
                })?;
                Ok("pulled")
            }
        }
    }

    /// Removes a leftover container of an earlier attempt of the same task (Batch retries).
    pub fn remove(&self, name: &str) {
        let _ = self
            .command()
            .args(["rm", "-f", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// `run ...` arguments (after the global ones) for `spec`.
    pub fn run_args(&self, spec: &RunSpec) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "run".into(),
            "--rm".into(),
            "--name".into(),
            spec.name.clone(),
        ];
        if spec.gpus {
            match self.kind {
                Runtime::Docker => a.extend(["--gpus".into(), "all".into()]),
                // Podman reaches GPUs through CDI (nvidia-ctk cdi generate).
                Runtime::Podman => a.extend(["--device".into(), "nvidia.com/gpu=all".into()]),
            }
        }
        if spec.ipc_host {
            a.push("--ipc=host".into());
        } else if let Some(s) = &spec.shm_size {
            a.push(format!("--shm-size={s}"));
        }
        for u in &spec.ulimits {
            a.extend(["--ulimit".into(), u.clone()]);
        }
        if !spec.network.is_empty() {
            a.push(format!("--network={}", spec.network));
        }
        for b in &spec.binds {
            let mode = if b.read_only { "ro" } else { "rw" };
            a.extend([
                "--volume".into(),
                format!("{}:{}:{mode}", b.host.display(), b.container.display()),
            ]);
        }
        if let Some(w) = &spec.workdir {
            a.extend(["--workdir".into(), w.display().to_string()]);
        }
        for (k, v) in &spec.env {
            a.extend(["--env".into(), format!("{k}={v}")]);
        }
        a.extend(spec.extra_args.iter().cloned());
        a.push(spec.image.clone());
        a.extend(spec.command.iter().cloned());
        a
    }
}

/// A container name from the job and task ids: stable across retries, valid for both runtimes.
pub fn container_name(job: &str, task: &str, rank: u32) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    format!("lake-agent-{}-{}-{rank}", clean(job), clean(task))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RunSpec {
        RunSpec {
            name: "lake-agent-j-t-0".into(),
            image: "pytorch:1".into(),
            command: vec!["python".into(), "train.py".into()],
            gpus: true,
            ipc_host: true,
            ulimits: vec!["memlock=-1:-1".into()],
            network: "host".into(),
            binds: vec![
                Bind {
                    host: "/mnt/lake".into(),
                    container: "/mnt/lake".into(),
                    read_only: true,
                },
                Bind {
                    host: "/wd/output".into(),
                    container: "/mnt/output".into(),
                    read_only: false,
                },
            ],
            workdir: Some("/wd".into()),
            env: vec![("NODE_RANK".into(), "1".into())],
            ..Default::default()
        }
    }

    fn runtime(kind: Runtime) -> ContainerRuntime {
        ContainerRuntime {
            kind,
            bin: kind.name().into(),
            global_args: vec![],
        }
    }

    #[test]
    fn docker_gets_gpus_all_and_podman_gets_the_cdi_device() {
        let d = runtime(Runtime::Docker).run_args(&spec());
        assert!(d.windows(2).any(|w| w == ["--gpus", "all"]), "{d:?}");
        let p = runtime(Runtime::Podman).run_args(&spec());
        assert!(
            p.windows(2)
                .any(|w| w == ["--device", "nvidia.com/gpu=all"]),
            "{p:?}"
        );
        let mut no_gpu = spec();
        no_gpu.gpus = false;
        let p = runtime(Runtime::Podman).run_args(&no_gpu);
        assert!(!p.iter().any(|a| a.contains("gpu")), "{p:?}");
    }

    #[test]
    fn the_lake_is_read_only_the_output_writable_and_the_command_last() {
        let a = runtime(Runtime::Docker).run_args(&spec());
        assert!(a
            .windows(2)
            .any(|w| w == ["--volume", "/mnt/lake:/mnt/lake:ro"]));
        assert!(a
            .windows(2)
            .any(|w| w == ["--volume", "/wd/output:/mnt/output:rw"]));
        assert!(a.contains(&"--ipc=host".to_string()));
        assert!(a.windows(2).any(|w| w == ["--ulimit", "memlock=-1:-1"]));
        assert!(a.windows(2).any(|w| w == ["--env", "NODE_RANK=1"]));
        assert_eq!(&a[a.len() - 3..], ["pytorch:1", "python", "train.py"]);
        let mut s = spec();
        s.ipc_host = false;
        s.shm_size = Some("16g".into());
        let a = runtime(Runtime::Docker).run_args(&s);
        assert!(
            a.contains(&"--shm-size=16g".to_string()) && !a.contains(&"--ipc=host".to_string())
        );
    }

    #[test]
    fn container_names_are_stable_and_clean() {
        assert_eq!(
            container_name("job 1", "task/2", 0),
            "lake-agent-job-1-task-2-0"
        );
    }

    #[test]
    fn a_missing_runtime_is_a_clear_error() {
        let r = ContainerRuntime {
            kind: Runtime::Docker,
            bin: "/nonexistent/docker".into(),
            global_args: vec![],
        };
        let e = r.image_present("x").unwrap_err().to_string();
        assert!(e.contains("is it installed"), "{e}");
    }
}
