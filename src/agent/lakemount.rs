//! The agent drives `lakemount` as a separate program (mount, warm, upload, unmount): the
//! mount daemon's life stays independent of the agent's, and each step's output and exit
//! status are the same a person gets from the command line.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

use super::config::{AgentConfig, LakeConfig};

pub struct Lakemount {
    pub bin: PathBuf,
}

/// `lakemount upload` exit status for "some files were already there" (refused to clobber).
const UPLOAD_CONFLICTS: i32 = 3;

impl Lakemount {
    /// `agent.lakemount_bin`, else `lakemount` next to this executable (where a Batch start
    /// task's resource files put both), else on PATH.
    pub fn find(cfg: &AgentConfig) -> Result<Self> {
        if let Some(bin) = &cfg.agent.lakemount_bin {
            if !is_executable(bin) {
                bail!(
                    "agent.lakemount_bin {} is not an executable file",
                    bin.display()
                );
            }
            return Ok(Lakemount { bin: bin.clone() });
        }
        let beside = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join("lakemount")));
        let on_path = || {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|d| d.join("lakemount"))
                    .find(|p| is_executable(p))
            })
        };
        match beside.filter(|p| is_executable(p)).or_else(on_path) {
            Some(bin) => Ok(Lakemount { bin }),
            None => bail!(
                "cannot find the lakemount executable: put it next to lake-agent or on PATH, \
                 or set agent.lakemount_bin"
            ),
        }
    }

    /// A `lakemount` command that does not inherit systemd's notification socket (the agent's
    /// own unit must not be told "ready" by a mount).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env_remove("NOTIFY_SOCKET").stdin(Stdio::null());
        cmd
    }

    /// `lakemount warm URL --cache-dir DIR ...`, its progress shown on our stdout (a start
    /// task's stdout.txt is where people look).
    pub fn warm(
        &self,
        lake: &LakeConfig,
        url: &str,
        cache: &Path,
        cache_size: Option<&str>,
    ) -> Result<()> {
        let mut cmd = self.command();
        cmd.arg("warm");
        // A snapshot is warmed whole, as it is: exactly what the mount shows.
        match &lake.manifest {
            Some(m) => cmd.arg("--manifest").arg(m),
            None => cmd.arg(url),
        };
        cmd.arg("--cache-dir").arg(cache);
        if let Some(s) = cache_size {
            cmd.args(["--cache-size", s]);
        }
        if let Some(bs) = &lake.block_size {
            cmd.args(["--block-size", bs]);
        }
        if let Some(e) = &lake.endpoint {
            cmd.args(["--endpoint", e]);
        }
        if let Some(a) = &lake.auth {
            cmd.args(["--auth", a]);
        }
        let stdout = std::io::stdout().as_fd().try_clone_to_owned()?;
        cmd.stdout(Stdio::from(stdout.try_clone()?))
            .stderr(Stdio::from(stdout));
        let status = cmd
            .status()
            .with_context(|| format!("cannot run {}", self.bin.display()))?;
        if !status.success() {
            bail!("lakemount warm {url} failed ({status}); its output is above");
        }
        Ok(())
    }

    /// `lakemount upload DIR URL --overwrite ...`: Ok, or why not (its last error line).
    pub fn upload(&self, dir: &Path, url: &str, up: &UploadTarget) -> Result<()> {
        let mut cmd = self.command();
        cmd.arg("upload").arg(dir).arg(url).arg("--overwrite");
        if let Some(e) = &up.endpoint {
            cmd.args(["--endpoint", e]);
        }
        if let Some(a) = &up.auth {
            cmd.args(["--auth", a]);
        }
        if let Some(t) = up.threads {
            cmd.args(["--threads", &t.to_string()]);
        }
        // Progress goes to the task's stdout; errors are kept to explain a failure.
        let stdout = std::io::stdout().as_fd().try_clone_to_owned()?;
        let out = cmd
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", self.bin.display()))?
            .wait_with_output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        eprint!("{err}");
        if out.status.success() {
            return Ok(());
        }
        let last = error_line(&err);
        match out.status.code() {
            Some(UPLOAD_CONFLICTS) => Err(anyhow!("some files were already in the lake: {last}")),
            _ => Err(anyhow!("{last} ({})", out.status)),
        }
    }

    /// `lakemount unmount MP [--lazy]`.
    pub fn unmount(&self, mountpoint: &Path, lazy: bool) -> Result<()> {
        let mut cmd = self.command();
        cmd.arg("unmount").arg(mountpoint);
        if lazy {
            cmd.arg("--lazy");
        }
        let out = cmd
            .output()
            .with_context(|| format!("cannot run {}", self.bin.display()))?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }
}

/// Where `lake-agent run` ships the task's output.
#[derive(Clone, Debug, Default)]
pub struct UploadTarget {
    pub url: String,
    pub endpoint: Option<String>,
    pub auth: Option<String>,
    pub threads: Option<u32>,
}

/// The line of a command's stderr that says what went wrong: the last one that mentions an
/// error (usage hints follow it), else the last one.
fn error_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = lines
        .iter()
        .rev()
        .find(|l| l.to_ascii_lowercase().contains("error"))
        .or(lines.last())
        .copied()
        .unwrap_or("no error message");
    line.trim_start_matches("lakemount: ")
        .trim_start_matches("error: ")
        .to_string()
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A value of one `lakemount mount` setting.
#[derive(Clone, Debug, PartialEq)]
pub enum Setting {
    Flag(bool),
    Int(u64),
    Text(String),
}

/// The settings of one mount, kept as key/value pairs so the daemon path (command-line
/// flags) and the systemd path (the instance's TOML file) say exactly the same thing.
#[derive(Clone, Debug)]
pub struct MountSpec {
    pub lake: String,
    pub mountpoint: PathBuf,
    /// Keys as in `lakemount mount --config` files; flags are the same with `-` for `_`.
    pub settings: Vec<(&'static str, Setting)>,
}

impl MountSpec {
    pub fn new(lake: &LakeConfig, cache_dir: Option<&Path>, cache_size: Option<&str>) -> Self {
        let mut s: Vec<(&'static str, Setting)> = Vec::new();
        let text = |v: &Option<String>| v.clone().map(Setting::Text);
        if lake.allow_other {
            s.push(("allow_other", Setting::Flag(true)));
        }
        let pairs: [(&'static str, Option<Setting>); 11] = [
            (
                "manifest",
                lake.manifest
                    .as_ref()
                    .map(|m| Setting::Text(m.to_string_lossy().into_owned())),
            ),
            ("uid", lake.uid.map(|v| Setting::Int(v.into()))),
            ("gid", lake.gid.map(|v| Setting::Int(v.into()))),
            ("metadata_ttl", lake.metadata_ttl.map(Setting::Int)),
            ("endpoint", text(&lake.endpoint)),
            ("auth", text(&lake.auth)),
            ("block_size", text(&lake.block_size)),
            ("max_readahead", text(&lake.max_readahead)),
            ("max_memory", text(&lake.max_memory)),
            ("metrics_addr", text(&lake.metrics_addr)),
            (
                "cache_dir",
                cache_dir.map(|d| Setting::Text(d.to_string_lossy().into_owned())),
            ),
        ];
        s.extend(pairs.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        if let (Some(_), Some(size)) = (cache_dir, cache_size) {
            s.push(("cache_size", Setting::Text(size.to_string())));
        }
        MountSpec {
            lake: lake.url.clone(),
            mountpoint: lake.mountpoint.clone(),
            settings: s,
        }
    }

    /// `mount LAKE MOUNTPOINT --flag value ...`
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "mount".into(),
            self.lake.clone().into(),
            self.mountpoint.clone().into(),
        ];
        for (k, v) in &self.settings {
            let flag = format!("--{}", k.replace('_', "-"));
            match v {
                Setting::Flag(true) => a.push(flag.into()),
                Setting::Flag(false) => {}
                Setting::Int(i) => a.extend([flag.into(), i.to_string().into()]),
                Setting::Text(t) => a.extend([flag.into(), t.into()]),
            }
        }
        a
    }

    /// The same as a `lakemount mount --config` file.
    pub fn toml(&self) -> String {
        let mut t = toml::Table::new();
        t.insert("lake".into(), self.lake.clone().into());
        t.insert(
            "mountpoint".into(),
            self.mountpoint.to_string_lossy().into_owned().into(),
        );
        for (k, v) in &self.settings {
            let v = match v {
                Setting::Flag(b) => toml::Value::Boolean(*b),
                Setting::Int(i) => toml::Value::Integer(*i as i64),
                Setting::Text(s) => toml::Value::String(s.clone()),
            };
            t.insert((*k).into(), v);
        }
        toml::to_string(&t).expect("a table of plain values serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lake() -> LakeConfig {
        let cfg = AgentConfig::parse(
            r#"
[[lake]]
name = "data"
url = "az://acct/data"
mountpoint = "/mnt/lake"
endpoint = "http://127.0.0.1:10000/acct"
metadata_ttl = 300
"#,
        )
        .unwrap();
        cfg.lakes[0].clone()
    }

    #[test]
    fn flags_and_config_file_say_the_same() {
        let spec = MountSpec::new(&lake(), Some(Path::new("/mnt/lakecache")), Some("50%"));
        let args: Vec<String> = spec
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "mount",
                "az://acct/data",
                "/mnt/lake",
                "--allow-other",
                "--metadata-ttl",
                "300",
                "--endpoint",
                "http://127.0.0.1:10000/acct",
                "--cache-dir",
                "/mnt/lakecache",
                "--cache-size",
                "50%"
            ]
        );
        let toml: toml::Table = spec.toml().parse().unwrap();
        assert_eq!(toml["lake"].as_str(), Some("az://acct/data"));
        assert_eq!(toml["mountpoint"].as_str(), Some("/mnt/lake"));
        assert_eq!(toml["allow_other"].as_bool(), Some(true));
        assert_eq!(toml["metadata_ttl"].as_integer(), Some(300));
        assert_eq!(toml["cache_dir"].as_str(), Some("/mnt/lakecache"));
        assert_eq!(toml["cache_size"].as_str(), Some("50%"));
        // Every key is one lakemount's config file accepts.
        let file: crate::config::MountFile = toml::from_str(&spec.toml()).unwrap();
        assert_eq!(file.metadata_ttl, Some(300));
    }

    #[test]
    fn the_error_line_is_picked_from_a_commands_stderr() {
        let clap = "error: unrecognized subcommand 'upload'\n\nUsage: lakemount [OPTIONS] <COMMAND>\n\nFor more information, try '--help'.\n";
        assert_eq!(error_line(clap), "unrecognized subcommand 'upload'");
        assert_eq!(
            error_line("progress 10%\nlakemount: error: access denied (HTTP 403)\n"),
            "access denied (HTTP 403)"
        );
        assert_eq!(error_line("just this\n"), "just this");
    }

    #[test]
    fn a_missing_configured_binary_is_a_clear_error() {
        let mut cfg = AgentConfig::default();
        cfg.agent.lakemount_bin = Some("/nonexistent/lakemount".into());
        let e = Lakemount::find(&cfg).err().unwrap().to_string();
        assert!(e.contains("not an executable"), "{e}");
    }
}
