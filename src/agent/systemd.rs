//! The systemd path: one `lakemount@NAME` instance per lake, configured by
//! /etc/lakemount/NAME.toml (settings) and NAME.env (credentials, mode 0600), as
//! `systemd/lakemount@.service` expects. systemd then restarts a failed daemon, remounts after
//! a reboot and unmounts at shutdown.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::config::AgentSection;
use super::lakemount::MountSpec;

/// The unit template shipped in `systemd/`, installed with the node's lakemount path.
const UNIT_TEMPLATE: &str = include_str!("../../systemd/lakemount@.service");
const UNIT_NAME: &str = "lakemount@.service";
const UNIT_BIN: &str = "/usr/local/bin/lakemount";

/// Whether systemd runs this machine (as `sd_booted()` decides, plus PID 1 being systemd, which
/// rules out containers that merely have the directory).
pub fn detect() -> bool {
    Path::new("/run/systemd/system").is_dir()
        && std::fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() == "systemd")
}

pub fn unit(name: &str) -> String {
    format!("lakemount@{name}.service")
}

/// The `lakemount@.service` text for a node whose lakemount lives at `bin`.
pub fn render_unit(bin: &Path) -> String {
    UNIT_TEMPLATE.replace(UNIT_BIN, &bin.to_string_lossy())
}

/// Environment lines for systemd's EnvironmentFile (and sh): single-quoted where possible.
pub fn render_env(vars: &[(String, String)]) -> String {
    let mut out = String::from("# Written by lake-agent bootstrap: credentials for lakemount.\n");
    for (k, v) in vars {
        if v.contains('\'') || v.contains('\n') {
            let escaped = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('$', "\\$")
                .replace('`', "\\`")
                .replace('\n', "\\n");
            out.push_str(&format!("{k}=\"{escaped}\"\n"));
        } else {
            out.push_str(&format!("{k}='{v}'\n"));
        }
    }
    out
}

/// The credentials the mount needs: the AZURE_* variables of our own environment.
pub fn credential_vars() -> Vec<(String, String)> {
    let mut v: Vec<_> = std::env::vars()
        .filter(|(k, _)| k.starts_with("AZURE_"))
        .collect();
    v.sort();
    v
}

pub struct Systemd<'a> {
    pub agent: &'a AgentSection,
}

impl Systemd<'_> {
    fn systemctl(&self, args: &[&str]) -> Result<()> {
        let out = Command::new(&self.agent.systemctl)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", self.agent.systemctl))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let err = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            bail!(
                "{} {} failed ({}): {}",
                self.agent.systemctl,
                args.join(" "),
                out.status,
                err.trim()
            );
        }
        Ok(())
    }

    /// Installs (or updates) the unit template; Ok(true) if systemd had to reload.
    pub fn install_unit(&self, bin: &Path) -> Result<bool> {
        let path = self.agent.systemd_unit_dir.join(UNIT_NAME);
        let text = render_unit(bin);
        if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
            return Ok(false);
        }
        std::fs::create_dir_all(&self.agent.systemd_unit_dir)?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        self.systemctl(&["daemon-reload"])?;
        Ok(true)
    }

    fn instance_files(&self, name: &str) -> (PathBuf, PathBuf) {
        let dir = &self.agent.lakemount_config_dir;
        (
            dir.join(format!("{name}.toml")),
            dir.join(format!("{name}.env")),
        )
    }

    /// Writes the instance's files; Ok(true) if either changed.
    pub fn write_instance(
        &self,
        name: &str,
        spec: &MountSpec,
        env: &[(String, String)],
    ) -> Result<bool> {
        let (toml_path, env_path) = self.instance_files(name);
        std::fs::create_dir_all(&self.agent.lakemount_config_dir).with_context(|| {
            format!(
                "cannot create {}",
                self.agent.lakemount_config_dir.display()
            )
        })?;
        let toml = spec.toml();
        let env_text = render_env(env);
        let same = std::fs::read_to_string(&toml_path).is_ok_and(|t| t == toml)
            && std::fs::read_to_string(&env_path).is_ok_and(|t| t == env_text);
        if same {
            return Ok(false);
        }
        std::fs::write(&toml_path, toml)
            .with_context(|| format!("cannot write {}", toml_path.display()))?;
        write_private(&env_path, &env_text)?;
        Ok(true)
    }

    /// Starts the instance, or restarts it (new settings, or a mount that does not answer).
    /// `systemctl start` of a `Type=notify` unit returns once the mount answers (or failed).
    pub fn start(&self, name: &str, restart: bool) -> Result<()> {
        let verb = if restart { "restart" } else { "start" };
        self.systemctl(&[verb, &unit(name)]).with_context(|| {
            format!(
                "the mount did not start; see `journalctl -u {}`",
                unit(name)
            )
        })
    }

    pub fn stop(&self, name: &str) -> Result<()> {
        self.systemctl(&["stop", &unit(name)])
    }
}

/// Writes a file only its owner can read, never leaving it readable to others on the way.
fn write_private(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("env.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_unit_is_installed_with_this_nodes_lakemount() {
        let text = render_unit(Path::new("/mnt/batch/tasks/startup/wd/lakemount"));
        assert!(text.contains("ExecStart=/mnt/batch/tasks/startup/wd/lakemount mount"));
        assert!(!text.contains(UNIT_BIN));
    }

    #[test]
    fn env_files_quote_values_for_systemd_and_sh() {
        let text = render_env(&[
            (
                "AZURE_STORAGE_CONNECTION_STRING".into(),
                "A=b;Key=x+y/z==;".into(),
            ),
            ("AZURE_STORAGE_SAS_TOKEN".into(), "it's $x".into()),
        ]);
        assert!(text.contains("AZURE_STORAGE_CONNECTION_STRING='A=b;Key=x+y/z==;'\n"));
        assert!(text.contains("AZURE_STORAGE_SAS_TOKEN=\"it's \\$x\"\n"));
    }

    #[test]
    fn instance_files_are_written_once_and_credentials_stay_private() {
        let dir = tempfile::tempdir().unwrap();
        let agent = AgentSection {
            lakemount_config_dir: dir.path().join("etc"),
            ..AgentSection::default()
        };
        let sd = Systemd { agent: &agent };
        let spec = MountSpec {
            lake: "az://acct/data".into(),
            mountpoint: "/mnt/lake".into(),
            settings: Vec::new(),
        };
        let env = vec![("AZURE_STORAGE_ACCOUNT_KEY".to_string(), "k".to_string())];
        assert!(sd.write_instance("data", &spec, &env).unwrap());
        assert!(
            !sd.write_instance("data", &spec, &env).unwrap(),
            "unchanged"
        );
        let mode = std::fs::metadata(dir.path().join("etc/data.env"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let toml = std::fs::read_to_string(dir.path().join("etc/data.toml")).unwrap();
        assert!(toml.contains("mountpoint = \"/mnt/lake\""));
    }
}
