//! Bringing lake mounts up (idempotently) and down, by systemd or by a supervised daemon.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use super::config::{AgentConfig, LakeConfig, MountMode};
use super::daemon;
use super::lakemount::{Lakemount, MountSpec};
use super::probe;
use super::status::MountStatus;
use super::systemd::{self, Systemd};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Systemd,
    Daemon,
}

impl Mode {
    pub fn resolve(cfg: &AgentConfig) -> Mode {
        match cfg.agent.mount_mode {
            MountMode::Systemd => Mode::Systemd,
            MountMode::Daemon => Mode::Daemon,
            MountMode::Auto if systemd::detect() => Mode::Systemd,
            MountMode::Auto => Mode::Daemon,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Systemd => "systemd",
            Mode::Daemon => "daemon",
        }
    }
}

pub struct Mounter<'a> {
    pub cfg: &'a AgentConfig,
    pub lakemount: &'a Lakemount,
    pub status_dir: &'a Path,
    pub mode: Mode,
}

impl Mounter<'_> {
    /// Mounts `lake` unless it is mounted and answering already, and waits (bounded) until it
    /// answers.
    pub fn ensure(&self, lake: &LakeConfig, spec: &MountSpec) -> Result<MountStatus> {
        let mp = &lake.mountpoint;
        let start = Instant::now();
        let status = |state: &str, ready: Duration| MountStatus {
            name: lake.name.clone(),
            lake: lake.url.clone(),
            mountpoint: mp.clone(),
            mode: self.mode.name().into(),
            state: state.into(),
            ready_ms: ready.as_millis() as u64,
        };
        if self.mode == Mode::Daemon && probe::is_ready(mp) {
            return Ok(status("already mounted", start.elapsed()));
        }
        // A dead mount (its daemon killed) is left for lakemount to clear: creating the
        // directory under it would fail with ENOTCONN.
        if !probe::is_lakemount(mp) {
            std::fs::create_dir_all(mp)
                .with_context(|| format!("cannot create mount point {}", mp.display()))?;
        }
        let timeout = self.cfg.mount_timeout();
        let what = format!("lake {:?} ({}) at {}", lake.name, lake.url, mp.display());
        match self.mode {
            Mode::Systemd => {
                let sd = Systemd {
                    agent: &self.cfg.agent,
                };
                sd.install_unit(&self.lakemount.bin)?;
                let changed = sd.write_instance(&lake.name, spec, &systemd::credential_vars())?;
                if !changed && probe::is_ready(mp) {
                    // Still make sure systemd holds it (a no-op when active).
                    sd.start(&lake.name, false)?;
                    return Ok(status("already mounted", start.elapsed()));
                }
                // Restart also when nothing changed but the mount does not answer: a start of
                // an active unit would do nothing.
                sd.start(&lake.name, true)
                    .with_context(|| format!("cannot mount {what}"))?;
                probe::wait_ready(mp, timeout, || None).map_err(|e| {
                    anyhow!(
                        "{what} is not ready: {e}; see `journalctl -u {}`",
                        systemd::unit(&lake.name)
                    )
                })?;
            }
            Mode::Daemon => {
                // A supervisor whose mount does not answer (dead, or still restarting): start
                // over; lakemount clears a dead mount left behind.
                daemon::stop(self.status_dir, &lake.name)?;
                let mut cmd = spec.args();
                cmd.push("--foreground".into());
                cmd.insert(0, self.lakemount.bin.clone().into());
                let delay = Duration::from_secs(self.cfg.agent.restart_delay);
                let pid = daemon::start(self.status_dir, &lake.name, mp, delay, cmd)?;
                let files = daemon::files(self.status_dir, &lake.name);
                let log = files.log.display().to_string();
                let waited = probe::wait_ready(mp, timeout, || {
                    let st = daemon::read_state(&files.state);
                    match st {
                        Some(s) if s.state == "failed" => Some(
                            s.message
                                .unwrap_or_else(|| "the mount daemon failed".into()),
                        ),
                        _ if daemon::running_pid(self.status_dir, &lake.name) != Some(pid) => {
                            Some(format!("the mount supervisor exited; see {log}"))
                        }
                        _ => None,
                    }
                });
                // The supervisor must have seen the mount answer too: until it has, it treats
                // a daemon that dies as a mount that never worked, and does not restart it.
                let waited = waited.and_then(|waited_for| {
                    let deadline = std::time::Instant::now() + timeout;
                    loop {
                        match daemon::read_state(&files.state) {
                            Some(s) if s.state == "ready" => return Ok(waited_for),
                            Some(s) if s.state == "failed" => {
                                return Err(anyhow!(s
                                    .message
                                    .unwrap_or_else(|| "the mount daemon failed".into())))
                            }
                            _ if std::time::Instant::now() > deadline => {
                                return Err(anyhow!(
                                    "the mount supervisor did not report the mount ready within {timeout:?}"
                                ))
                            }
                            _ => std::thread::sleep(Duration::from_millis(20)),
                        }
                    }
                });
                if let Err(e) = waited {
                    // Leave nothing half-started behind: the start task fails visibly and a
                    // rerun begins from a clean slate.
                    let _ = daemon::stop(self.status_dir, &lake.name);
                    let tail = daemon::last_line_since(&files.log, 0)
                        .map(|l| format!("; last log line: {l}"))
                        .unwrap_or_default();
                    return Err(anyhow!("cannot mount {what}: {e} (log: {log}{tail})"));
                }
            }
        }
        Ok(status("mounted", start.elapsed()))
    }

    /// Unmounts `lake` and stops whatever kept it mounted.
    pub fn stop(&self, lake: &LakeConfig) -> Result<()> {
        let mp = &lake.mountpoint;
        let stopped = daemon::stop(self.status_dir, &lake.name)?;
        if !stopped && self.mode == Mode::Systemd {
            Systemd {
                agent: &self.cfg.agent,
            }
            .stop(&lake.name)?;
        }
        if probe::is_lakemount(mp) {
            if let Err(e) = self.lakemount.unmount(mp, false) {
                eprintln!("lake-agent: {e}; detaching lazily");
                self.lakemount.unmount(mp, true)?;
            }
        }
        Ok(())
    }
}
