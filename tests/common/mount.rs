//! Real FUSE mounts for integration tests: `lakemount mount` as a user runs it, undone by Drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn lakemount_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lakemount")
}

/// `lakemount` with a clean Azure environment: only what the test passes in `env` is seen, so a
/// test never falls back to a managed identity or a developer's own credentials.
pub fn lakemount(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(lakemount_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("AZURE_") || k == "NOTIFY_SOCKET" {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).envs(env.iter().copied());
    cmd
}

/// What a command printed, stdout then stderr, for assertion messages.
#[allow(dead_code)]
pub fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `lakemount ARGS --endpoint AZURITE` with Azurite's credentials.
#[allow(dead_code)]
pub fn lakemount_on(az: &super::azurite::Azurite, args: &[&str]) -> Output {
    let endpoint = az.endpoint();
    let cs = az.connection_string();
    let mut all = args.to_vec();
    all.extend(["--endpoint", endpoint.as_str()]);
    lakemount(&all, &[("AZURE_STORAGE_CONNECTION_STRING", cs.as_str())])
        .output()
        .unwrap()
}

/// The errno of a failed call (panics if it succeeded).
pub fn errno<T>(r: std::io::Result<T>) -> Option<i32> {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.raw_os_error(),
    }
}

/// Whether `path` is currently a mount point.
pub fn is_mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = path.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Mount {
    dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl Mount {
    /// Mounts `lake` on a fresh temporary directory in daemon mode; returns once the mount
    /// answers, or the command's output if it failed.
    pub fn start(lake: &str, extra: &[&str], env: &[(&str, &str)]) -> Result<Mount, Output> {
        Mount::start_with(lake, extra, env, |_| {})
    }

    /// [`Mount::start`] with no lake argument (`mount --manifest FILE MOUNTPOINT`).
    #[allow(dead_code)]
    pub fn start_with_mountpoint_only(
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Mount, Output> {
        Mount::start_inner(None, extra, env, |_| {})
    }

    /// [`Mount::start`], with `tweak` applied to the `lakemount mount` command first.
    pub fn start_with(
        lake: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        tweak: impl FnOnce(&mut Command),
    ) -> Result<Mount, Output> {
        Mount::start_inner(Some(lake), extra, env, tweak)
    }

    fn start_inner(
        lake: Option<&str>,
        extra: &[&str],
        env: &[(&str, &str)],
        tweak: impl FnOnce(&mut Command),
    ) -> Result<Mount, Output> {
        let dir = tempfile::Builder::new()
            .prefix("lakemount-mnt")
            .tempdir()
            .unwrap();
        let mp = dir.path().join("mnt");
        std::fs::create_dir(&mp).unwrap();
        let log = dir.path().join("daemon.log");
        let mut args = vec!["mount"];
        args.extend(lake);
        args.extend([mp.to_str().unwrap(), "--log-file", log.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let mut cmd = lakemount(&args, env);
        tweak(&mut cmd);
        let out = cmd.output().unwrap();
        if !out.status.success() {
            return Err(out);
        }
        assert!(
            is_mounted(&mp),
            "mount returned 0 but {} is not mounted",
            mp.display()
        );
        Ok(Mount { dir, log })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let mp = self.path();
        if !is_mounted(&mp) {
            return;
        }
        let ok = lakemount(&["unmount", mp.to_str().unwrap()], &[])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            // Something still holds it (a failed test's open file): detach lazily.
            let _ = lakemount(&["unmount", "--lazy", mp.to_str().unwrap()], &[]).output();
        }
        let gone = wait_for(Duration::from_secs(10), || !is_mounted(&mp));
        if !gone && !std::thread::panicking() {
            panic!("{} is still mounted after unmount", mp.display());
        }
    }
}

/// Mounts `container` of `az` through its loopback endpoint with its connection string;
/// panics with the command's output if that fails.
pub fn mount_azurite(az: &super::azurite::Azurite, container: &str, extra: &[&str]) -> Mount {
    let endpoint = az.endpoint();
    let mut args = vec!["--endpoint", endpoint.as_str()];
    args.extend_from_slice(extra);
    let cs = az.connection_string();
    let lake = format!("az://{}/{container}", super::azurite::ACCOUNT);
    Mount::start(
        &lake,
        &args,
        &[("AZURE_STORAGE_CONNECTION_STRING", cs.as_str())],
    )
    .unwrap_or_else(|o| {
        panic!(
            "mount failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}
