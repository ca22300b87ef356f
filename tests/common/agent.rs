//! lake-agent in integration tests: the binary with a clean environment, a node directory
//! (config, status, mount points, cache, task dir) whose mounts are undone by Drop, a minimal
//! podman image made from Debian's busybox-static, and checks for the tools tests need.
//!
//! Included with `#[path]` from the agent tests, next to `mod common;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use crate::common::azurite::Azurite;
use crate::common::mount::{is_mounted, lakemount, wait_for};

pub fn agent_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lake-agent")
}

/// `lake-agent` seeing only the environment the test gives it: no Azure credentials, no Batch
/// variables and no config of the developer's own.
pub fn agent(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(agent_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("AZURE_")
            || k.starts_with("AZ_BATCH_")
            || k.starts_with("LAKE_AGENT_")
            || k == "NOTIFY_SOCKET"
        {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).envs(env.iter().copied());
    cmd
}

pub fn text(out: &Output) -> String {
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Whether a tool the test needs is here. Missing tools skip the test with a message, except in
/// CI (`CI` set), where `scripts/install-deps` installs them and a skip would hide a failure.
pub fn require(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{what} is missing in CI: scripts/install-deps should have installed it");
    }
    eprintln!("SKIPPED: {what} is not available here (run scripts/install-deps)");
    false
}

fn runs(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// podman with runc, as the tests run containers (crun does not work on every machine).
pub fn podman_available() -> bool {
    require(
        "podman + runc",
        runs("podman", &["--version"]) && runs("runc", &["--version"]),
    )
}

/// Global podman options of every test: runc, and podman's own state where the machine keeps it.
pub const PODMAN_ARGS: &[&str] = &["--runtime", "runc"];
pub const ULIMITS: &[&str] = &["nofile=1024:1024", "nproc=1024:1024"];

const IMAGE: &str = "localhost/lakemount-test-busybox:1";
/// The busybox applets the test containers use.
const APPLETS: &[&str] = &[
    "sh",
    "cat",
    "cp",
    "echo",
    "env",
    "ls",
    "mkdir",
    "sha256sum",
    "test",
    "touch",
    "printf",
    "grep",
    "id",
    "true",
    "false",
];

/// A minimal local image: Debian's static busybox and a few applet links, imported into podman
/// (no registry). Made once per test process; kept afterwards (images may stay).
pub fn busybox_image() -> &'static str {
    static MADE: OnceLock<()> = OnceLock::new();
    MADE.get_or_init(|| {
        let present = Command::new("podman")
            .args(PODMAN_ARGS)
            .args(["image", "exists", IMAGE])
            .status()
            .is_ok_and(|s| s.success());
        if present {
            return;
        }
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            .expect("busybox-static is installed (scripts/install-deps)");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
        }
        let tar = dir.path().join("rootfs.tar");
        let ok = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap()
            .success();
        assert!(ok, "tar of the busybox rootfs failed");
        let out = Command::new("podman")
            .args(PODMAN_ARGS)
            .arg("import")
            .args(["--change", "ENV PATH=/bin"])
            .arg(&tar)
            .arg(IMAGE)
            .output()
            .unwrap();
        assert!(out.status.success(), "podman import: {}", text(&out));
    });
    IMAGE
}

/// Removes containers by name on drop (they run with --rm; this covers a test that died
/// while one ran).
pub struct Containers(pub Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("podman")
                .args(PODMAN_ARGS)
                .args(["rm", "-f", "--ignore", name])
                .output();
        }
    }
}

/// One lake of a node's config.
pub struct LakeDef {
    pub name: &'static str,
    pub container: &'static str,
    pub extra: String,
}

/// A node: a temp dir with the config, status dir, mount points, cache and task dir. Drop runs
/// `lake-agent stop` and makes sure nothing stays mounted.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub lakes: Vec<PathBuf>,
    pub env: Vec<(String, String)>,
}

impl Node {
    /// `lakes` on `az` (None: no lakes), with `extra` TOML appended.
    pub fn new(az: Option<&Azurite>, lakes: &[LakeDef], extra: &str) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("lake-agent-node")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let mut toml = format!(
            "[agent]\nstatus_dir = \"{}\"\nlakemount_bin = \"{}\"\nmount_mode = \"daemon\"\n\
             mount_timeout = 60\nrestart_delay = 1\ngpus = \"none\"\n\n\
             [cache]\ndir = \"{}\"\n# Never the test machine's own disks.\ndevices = \"none\"\n\n",
            d.join("status").display(),
            crate::common::mount::lakemount_bin(),
            d.join("cache").display(),
        );
        let mut mps = Vec::new();
        for l in lakes {
            let az = az.expect("lakes need Azurite");
            let mp = d.join("mnt").join(l.name);
            toml.push_str(&format!(
                "[[lake]]\nname = \"{}\"\nurl = \"az://{}/{}\"\nmountpoint = \"{}\"\n\
                 endpoint = \"{}\"\nmetadata_ttl = 1\n{}\n\n",
                l.name,
                crate::common::azurite::ACCOUNT,
                l.container,
                mp.display(),
                az.endpoint(),
                l.extra
            ));
            mps.push(mp);
        }
        toml.push_str(extra);
        let config = d.join("lake-agent.toml");
        std::fs::write(&config, toml).unwrap();
        std::fs::create_dir_all(d.join("task")).unwrap();
        let env = az
            .map(|az| {
                vec![(
                    "AZURE_STORAGE_CONNECTION_STRING".to_string(),
                    az.connection_string(),
                )]
            })
            .unwrap_or_default();
        Node {
            dir,
            config,
            lakes: mps,
            env,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn status_dir(&self) -> PathBuf {
        self.path().join("status")
    }

    pub fn task_dir(&self) -> PathBuf {
        self.path().join("task")
    }

    /// `lake-agent ARGS --config CONFIG` with the node's credentials and `env`.
    pub fn agent(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut all: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        all.extend_from_slice(env);
        let mut a = vec!["--config", self.config.to_str().unwrap()];
        a.extend_from_slice(args);
        // Run from the node's directory: outside Batch, `run` writes its hostfile into the
        // current one, which would otherwise be the repository.
        agent(&a, &all).current_dir(self.path()).output().unwrap()
    }

    /// `bootstrap`, which must succeed.
    pub fn bootstrap(&self) -> Output {
        let out = self.agent(&["bootstrap"], &[]);
        assert!(out.status.success(), "bootstrap failed:\n{}", text(&out));
        out
    }

    pub fn status(&self) -> serde_json::Value {
        let p = self.status_dir().join("bootstrap.json");
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
    }

    /// The pid of the supervisor of lake `name`, if its pid file names a live one.
    pub fn supervisor_pid(&self, name: &str) -> Option<u32> {
        let p = self.status_dir().join(format!("mounts/{name}.pid"));
        let pid: u32 = std::fs::read_to_string(p).ok()?.trim().parse().ok()?;
        alive(pid).then_some(pid)
    }

    pub fn mount_state(&self, name: &str) -> serde_json::Value {
        let p = self.status_dir().join(format!("mounts/{name}.state"));
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null)
    }
}

/// Alive, and not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next().map(str::to_string))
        })
        .is_some_and(|st| st != "Z" && st != "X")
}

impl Drop for Node {
    fn drop(&mut self) {
        let out = self.agent(&["stop"], &[]);
        let mut left = Vec::new();
        for mp in &self.lakes {
            if !wait_for(Duration::from_secs(10), || !is_mounted(mp)) {
                let _ = lakemount(&["unmount", "--lazy", mp.to_str().unwrap()], &[]).output();
                left.push(mp.display().to_string());
            }
        }
        if !std::thread::panicking() {
            assert!(
                out.status.success(),
                "lake-agent stop failed:\n{}",
                text(&out)
            );
            assert!(left.is_empty(), "still mounted after stop: {left:?}");
        }
    }
}
