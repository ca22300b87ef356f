//! The supervised-daemon path, for nodes that systemd does not run: a detached
//! `lake-agent supervise` keeps `lakemount mount --foreground` running, restarting it when it
//! dies (as `Restart=on-failure` would), and unmounts cleanly on SIGTERM.
//!
//! Files per mount in `STATUS_DIR/mounts/`: `NAME.pid` (the supervisor), `NAME.state` (JSON:
//! starting, ready, restarting, failed, stopped) and `NAME.log` (the daemon's log).

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::probe;
use super::signals;
use super::status::write_json;

const POLL: Duration = Duration::from_millis(100);
/// How long a stopping daemon gets to unmount before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

pub struct Files {
    pub pid: PathBuf,
    pub state: PathBuf,
    pub log: PathBuf,
}

pub fn files(status_dir: &Path, name: &str) -> Files {
    let dir = status_dir.join("mounts");
    Files {
        pid: dir.join(format!("{name}.pid")),
        state: dir.join(format!("{name}.state")),
        log: dir.join(format!("{name}.log")),
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub state: String,
    pub attempt: u32,
    pub daemon_pid: Option<u32>,
    pub message: Option<String>,
}

pub fn read_state(path: &Path) -> Option<State> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Starts a detached supervisor for `mount_cmd` (`lakemount mount ... --foreground`).
pub fn start(
    status_dir: &Path,
    name: &str,
    mountpoint: &Path,
    restart_delay: Duration,
    mount_cmd: Vec<OsString>,
) -> Result<u32> {
    let f = files(status_dir, name);
    let dir = f.pid.parent().expect("files live in a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let _ = std::fs::remove_file(&f.state);
    let log = File::options()
        .create(true)
        .append(true)
        .open(&f.log)
        .with_context(|| format!("cannot open {}", f.log.display()))?;
    let exe = std::env::current_exe().context("cannot find the lake-agent executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("supervise")
        .arg("--mountpoint")
        .arg(mountpoint)
        .arg("--state-file")
        .arg(&f.state)
        .arg("--log-file")
        .arg(&f.log)
        .arg("--restart-delay")
        .arg(restart_delay.as_secs().to_string())
        .arg("--")
        .args(mount_cmd)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe. A session of its own: the supervisor outlives the
    // start task (or shell) that started it and gets none of its terminal's signals.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().context("cannot start the mount supervisor")?;
    let pid = child.id();
    std::fs::write(&f.pid, format!("{pid}\n"))
        .with_context(|| format!("cannot write {}", f.pid.display()))?;
    // Not waited for: it runs on after we exit (and is reaped by init then).
    std::mem::forget(child);
    Ok(pid)
}

/// The supervisor of `name`, if one is running.
pub fn running_pid(status_dir: &Path, name: &str) -> Option<u32> {
    let f = files(status_dir, name);
    let pid: u32 = std::fs::read_to_string(&f.pid).ok()?.trim().parse().ok()?;
    // The pid file may be older than a reboot: the process must still be our supervisor.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let ours = args.iter().any(|a| *a == b"supervise")
        && args
            .iter()
            .any(|a| *a == f.state.as_os_str().as_encoded_bytes());
    (ours && alive(pid)).then_some(pid)
}

/// Alive and not a zombie waiting to be reaped.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|s| s != "Z" && s != "X"),
    }
}

/// Stops the supervisor of `name` (which unmounts) and waits until it is gone. Ok(false) when
/// none was running.
pub fn stop(status_dir: &Path, name: &str) -> Result<bool> {
    let Some(pid) = running_pid(status_dir, name) else {
        return Ok(false);
    };
    // SAFETY: kill(2) on a pid checked just above to be our supervisor.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + STOP_GRACE + Duration::from_secs(5);
    while alive(pid) {
        if Instant::now() > deadline {
            bail!("the mount supervisor {pid} of {name} did not stop");
        }
        std::thread::sleep(POLL);
    }
    let _ = std::fs::remove_file(files(status_dir, name).pid);
    Ok(true)
}

pub struct SuperviseArgs {
    pub mountpoint: PathBuf,
    pub state_file: PathBuf,
    pub log_file: PathBuf,
    pub restart_delay: Duration,
    pub command: Vec<OsString>,
}

/// The supervisor's loop. A daemon that fails before its mount was ever ready is not
/// restarted (bad settings or credentials do not heal; bootstrap reports the reason); one that
/// dies later is, after `restart_delay`, for as long as the supervisor runs.
pub fn supervise(a: SuperviseArgs) -> Result<()> {
    signals::install();
    let Some((program, args)) = a.command.split_first() else {
        bail!("supervise: no command given");
    };
    let mut state = State::default();
    let mut ever_ready = false;
    loop {
        state.attempt += 1;
        let log_start = std::fs::metadata(&a.log_file).map_or(0, |m| m.len());
        let mut child = Command::new(program)
            .args(args)
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", program.to_string_lossy()))?;
        state.daemon_pid = Some(child.id());
        state.state = "starting".into();
        state.message = None;
        write_json(&a.state_file, &state)?;
        let mut ready = false;
        let status = loop {
            if signals::received().is_some() {
                stop_child(&mut child);
                state.state = "stopped".into();
                state.message = Some("stopped by a signal".into());
                write_json(&a.state_file, &state)?;
                return Ok(());
            }
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if !ready && probe::is_ready(&a.mountpoint) {
                ready = true;
                ever_ready = true;
                state.state = "ready".into();
                write_json(&a.state_file, &state)?;
            }
            std::thread::sleep(POLL);
        };
        if status.success() {
            // Unmounted from outside (`lakemount unmount`, umount): nothing to restart.
            state.state = "stopped".into();
            state.message = Some("unmounted".into());
            write_json(&a.state_file, &state)?;
            return Ok(());
        }
        let why = last_line_since(&a.log_file, log_start)
            .unwrap_or_else(|| format!("lakemount exited ({status})"));
        if !ever_ready {
            state.state = "failed".into();
            state.message = Some(why.clone());
            write_json(&a.state_file, &state)?;
            bail!("{why}");
        }
        eprintln!(
            "lake-agent supervise: the mount daemon exited ({status}); restarting in {}s",
            a.restart_delay.as_secs()
        );
        state.state = "restarting".into();
        state.message = Some(why);
        write_json(&a.state_file, &state)?;
        let until = Instant::now() + a.restart_delay;
        while Instant::now() < until {
            if signals::received().is_some() {
                state.state = "stopped".into();
                write_json(&a.state_file, &state)?;
                return Ok(());
            }
            std::thread::sleep(POLL);
        }
    }
}

/// SIGTERM (the daemon unmounts cleanly), then SIGKILL after the grace period.
fn stop_child(child: &mut Child) {
    // SAFETY: kill(2) on our own child, not yet waited for.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last non-empty line written to `path` after byte `start`.
pub fn last_line_since(path: &Path, start: u64) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let tail = text.get(start as usize..)?;
    String::from_utf8_lossy(tail)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_log_line_of_an_attempt_is_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        std::fs::write(&p, "old failure\nstarting\nlakemount: error: denied\n\n").unwrap();
        assert_eq!(
            last_line_since(&p, 12).as_deref(),
            Some("lakemount: error: denied")
        );
        assert_eq!(last_line_since(&p, 1000), None);
    }

    #[test]
    fn a_stale_pid_file_is_not_a_running_supervisor() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path(), "data");
        std::fs::create_dir_all(f.pid.parent().unwrap()).unwrap();
        // Our own pid: alive, but not a supervisor of this mount.
        std::fs::write(&f.pid, format!("{}\n", std::process::id())).unwrap();
        assert_eq!(running_pid(dir.path(), "data"), None);
        assert!(!stop(dir.path(), "data").unwrap());
    }

    #[test]
    fn a_daemon_that_never_mounts_is_reported_failed_with_its_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path(), "x");
        std::fs::create_dir_all(dir.path().join("mounts")).unwrap();
        let r = supervise(SuperviseArgs {
            mountpoint: dir.path().join("mnt"),
            state_file: f.state.clone(),
            log_file: f.log.clone(),
            restart_delay: Duration::from_secs(1),
            command: [
                "sh",
                "-c",
                &format!(
                    "echo 'lakemount: error: access denied' >> {}; exit 1",
                    f.log.display()
                ),
            ]
            .map(OsString::from)
            .to_vec(),
        });
        assert_eq!(
            r.unwrap_err().to_string(),
            "lakemount: error: access denied"
        );
        let s = read_state(&f.state).unwrap();
        assert_eq!(s.state, "failed");
        assert_eq!(s.attempt, 1);
    }
}
