//! Mount settings: a TOML file whose keys mirror the command-line flags, overlaid by the flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use std::net::SocketAddr;

use crate::cache::disk::{parse_bytes, CacheSize};
use crate::cli::{MountArgs, TimeoutArgs};
use crate::lake_url::LakeUrl;
use crate::store::azure::AuthMethod;
use crate::store::deadline::Deadlines;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountFile {
    pub lake: Option<String>,
    pub mountpoint: Option<PathBuf>,
    pub read_only: Option<bool>,
    pub allow_other: Option<bool>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub file_mode: Option<String>,
    pub dir_mode: Option<String>,
    pub metadata_ttl: Option<u64>,
    pub rename_dir_limit: Option<u64>,
    pub commit_interval: Option<u64>,
    pub manifest: Option<PathBuf>,
    pub metadata_budget: Option<String>,
    pub metadata_timeout: Option<u64>,
    pub data_timeout: Option<u64>,
    pub endpoint: Option<String>,
    pub auth: Option<AuthMethod>,
    pub log_file: Option<PathBuf>,
    pub block_size: Option<String>,
    pub max_readahead: Option<String>,
    pub max_memory: Option<String>,
    pub cache_dir: Option<PathBuf>,
    pub cache_size: Option<String>,
    pub staging_dir: Option<PathBuf>,
    pub metrics_addr: Option<String>,
    pub passthrough: Option<Passthrough>,
}

impl MountFile {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            // toml's own rendering spans several lines with a source excerpt: one line here.
            let msg = e.message().replace('\n', " ");
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    anyhow!("config file {}, line {line}: {msg}", path.display())
                }
                None => anyhow!("config file {}: {msg}", path.display()),
            }
        })
    }
}

/// Everything `mount` needs, validated.
#[derive(Clone, Debug)]
pub struct MountSettings {
    pub lake: LakeUrl,
    pub mountpoint: PathBuf,
    pub read_only: bool,
    pub foreground: bool,
    pub allow_other: bool,
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u16,
    pub dir_mode: u16,
    pub metadata_ttl: Duration,
    pub rename_dir_limit: u64,
    /// Files open for writing are committed this often (zero: only at close and fsync).
    pub commit_interval: Duration,
    /// A snapshot to mount instead of the lake as it is (read-only).
    pub manifest: Option<PathBuf>,
    /// Bytes for cached listings and lookups.
    pub metadata_budget: u64,
    /// How long one call to the lake may take (see `store::deadline`).
    pub deadlines: Deadlines,
    pub endpoint: Option<String>,
    pub auth: AuthMethod,
    pub log_file: Option<PathBuf>,
    pub block_size: u64,
    pub max_readahead: u64,
    pub max_memory: u64,
    pub cache_dir: Option<PathBuf>,
    pub cache_size: CacheSize,
    pub staging_dir: PathBuf,
    pub metrics_addr: Option<SocketAddr>,
    pub passthrough: Passthrough,
}

pub const DEFAULT_BLOCK_SIZE: u64 = 8 << 20;

/// When files the disk cache holds whole are read by the kernel straight from the cache file
/// (FUSE passthrough: Linux 6.9+, CAP_SYS_ADMIN; without them, reads take the normal path).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Passthrough {
    /// On read-only mounts (snapshots included).
    #[default]
    Auto,
    /// Also on writable mounts: opening a file for writing while passthrough readers have it
    /// open then fails with ETXTBSY.
    On,
    Off,
}

impl Passthrough {
    pub fn wanted(self, read_only: bool) -> bool {
        match self {
            Passthrough::Auto => read_only,
            Passthrough::On => true,
            Passthrough::Off => false,
        }
    }
}

/// A size flag: `8M`, `1.5G`, `4096`.
fn size(flag: &str, v: Option<&str>, default: u64) -> Result<u64> {
    match v {
        None => Ok(default),
        Some(v) => parse_bytes(v).map_err(|e| anyhow!("--{flag}: {e}")),
    }
}

/// Longest metadata TTL taken: a year (the caches behind it refuse more than 1,000 years).
const MAX_METADATA_TTL: u64 = 365 * 24 * 3600;

fn metadata_ttl(v: Option<u64>, default: Duration) -> Result<Duration> {
    match v {
        None => Ok(default),
        Some(s) if s > MAX_METADATA_TTL => {
            bail!("--metadata-ttl: at most {MAX_METADATA_TTL} seconds (365 days), not {s}")
        }
        Some(s) => Ok(Duration::from_secs(s)),
    }
}

/// Longest live-commit interval taken: a day.
const MAX_COMMIT_INTERVAL: u64 = 24 * 3600;

fn commit_interval(v: Option<u64>, default: Duration) -> Result<Duration> {
    match v {
        None => Ok(default),
        Some(s) if s > MAX_COMMIT_INTERVAL => {
            bail!("--commit-interval: at most {MAX_COMMIT_INTERVAL} seconds (a day), not {s}")
        }
        Some(s) => Ok(Duration::from_secs(s)),
    }
}

/// Longest deadline taken for one call to the lake: an hour.
const MAX_TIMEOUT: u64 = 3600;

fn timeout(flag: &str, v: Option<u64>, default: Duration) -> Result<Duration> {
    match v {
        None => Ok(default),
        Some(s) if (1..=MAX_TIMEOUT).contains(&s) => Ok(Duration::from_secs(s)),
        Some(s) => bail!("--{flag}: between 1 and {MAX_TIMEOUT} seconds, not {s}"),
    }
}

/// The deadlines `--metadata-timeout` and `--data-timeout` ask for (the defaults when unset).
pub fn deadlines(t: &TimeoutArgs) -> Result<Deadlines> {
    let d = Deadlines::default();
    Ok(Deadlines {
        metadata: timeout("metadata-timeout", t.metadata_timeout, d.metadata)?,
        data: timeout("data-timeout", t.data_timeout, d.data)?,
    })
}

pub fn block_size(v: Option<&str>) -> Result<u64> {
    let bs = size("block-size", v, DEFAULT_BLOCK_SIZE)?;
    if !(64 << 10..=256 << 20).contains(&bs) {
        bail!("--block-size must be between 64K and 256M");
    }
    Ok(bs)
}

pub fn cache_size(v: Option<&str>) -> Result<CacheSize> {
    v.unwrap_or("80%")
        .parse()
        .map_err(|e| anyhow!("--cache-size: {e}"))
}

/// 1/8 of physical memory, kept between 512 MiB and 16 GiB.
fn ram() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(4 << 30, |kb| kb * 1024)
}

fn default_max_memory() -> u64 {
    (ram() / 8).clamp(512 << 20, 16 << 30)
}

/// An eighth of RAM: a 224 GB Batch node caches the entries of ~100 million files, this
/// 24 GiB machine ~12 million.
fn default_metadata_budget() -> u64 {
    (ram() / 8).clamp(256 << 20, 32 << 30)
}

/// Staging for writes when there is no cache disk: persistent state, not /tmp, so data
/// kept after a failed upload survives a reboot.
fn default_staging_dir() -> PathBuf {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/lakemount/staging");
    }
    user_state_dir().join("staging")
}

/// `$XDG_STATE_HOME/lakemount` (default `~/.local/state/lakemount`): a user's logs and staging.
pub fn user_state_dir() -> PathBuf {
    user_state_home().join("lakemount")
}

/// `$XDG_STATE_HOME`, default `~/.local/state`: where a user's programs keep state.
pub fn user_state_home() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".local/state"))
}

pub fn parse_mode(s: &str) -> Result<u16> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u16::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => bail!("invalid mode {s:?}: expected octal permission bits such as 0644"),
    }
}

impl MountSettings {
    pub fn resolve(args: &MountArgs) -> Result<Self> {
        let file = match &args.config {
            Some(p) => MountFile::load(p)?,
            None => MountFile::default(),
        };
        let manifest = args.manifest.clone().or(file.manifest);
        let (mut lake_arg, mut mp_arg) = (args.lake.clone(), args.mountpoint.clone());
        // `mount --manifest FILE MOUNTPOINT`: the one argument is the mount point (a lake URL
        // has a scheme, a directory has none).
        if manifest.is_some()
            && mp_arg.is_none()
            && lake_arg.as_ref().is_some_and(|l| !l.contains("://"))
        {
            mp_arg = lake_arg.take().map(PathBuf::from);
        }
        let lake = match &manifest {
            Some(m) => crate::snapshot::lake_of(m, lake_arg.or(file.lake).as_deref())?,
            None => lake_arg.or(file.lake).ok_or_else(|| {
                anyhow!("no lake URL given (argument LAKE or `lake` in --config)")
            })?,
        };
        let lake = LakeUrl::parse(&lake).map_err(|e| anyhow!(e))?;
        let mountpoint = mp_arg.or(file.mountpoint).ok_or_else(|| {
            anyhow!("no mount point given (argument MOUNTPOINT or `mountpoint` in --config)")
        })?;
        let d = MountSettings::defaults(lake, mountpoint);
        let file_mode = args.file_mode.clone().or(file.file_mode);
        let dir_mode = args.dir_mode.clone().or(file.dir_mode);
        let mode = |m: Option<String>, default| {
            m.as_deref()
                .map(parse_mode)
                .transpose()
                .map(|m| m.unwrap_or(default))
        };
        let metrics_addr = args.metrics_addr.clone().or(file.metrics_addr);
        MountSettings {
            // A snapshot is read-only by construction.
            read_only: args.read_only
                || manifest.is_some()
                || file.read_only.unwrap_or(d.read_only),
            foreground: args.foreground,
            allow_other: args.allow_other || file.allow_other.unwrap_or(d.allow_other),
            uid: args.uid.or(file.uid).unwrap_or(d.uid),
            gid: args.gid.or(file.gid).unwrap_or(d.gid),
            file_mode: mode(file_mode, d.file_mode)?,
            dir_mode: mode(dir_mode, d.dir_mode)?,
            metadata_ttl: metadata_ttl(args.metadata_ttl.or(file.metadata_ttl), d.metadata_ttl)?,
            rename_dir_limit: args
                .rename_dir_limit
                .or(file.rename_dir_limit)
                .unwrap_or(d.rename_dir_limit),
            manifest,
            commit_interval: commit_interval(
                args.commit_interval.or(file.commit_interval),
                d.commit_interval,
            )?,
            deadlines: deadlines(&TimeoutArgs {
                metadata_timeout: args.timeouts.metadata_timeout.or(file.metadata_timeout),
                data_timeout: args.timeouts.data_timeout.or(file.data_timeout),
            })?,
            endpoint: args.endpoint.clone().or(file.endpoint),
            auth: args.auth.or(file.auth).unwrap_or(d.auth),
            log_file: args.log_file.clone().or(file.log_file),
            block_size: block_size(args.block_size.as_deref().or(file.block_size.as_deref()))?,
            max_readahead: size(
                "max-readahead",
                args.max_readahead
                    .as_deref()
                    .or(file.max_readahead.as_deref()),
                d.max_readahead,
            )?,
            max_memory: size(
                "max-memory",
                args.max_memory.as_deref().or(file.max_memory.as_deref()),
                d.max_memory,
            )?,
            metadata_budget: size(
                "metadata-budget",
                args.metadata_budget
                    .as_deref()
                    .or(file.metadata_budget.as_deref()),
                d.metadata_budget,
            )?,
            staging_dir: args
                .staging_dir
                .clone()
                .or(file.staging_dir)
                .or_else(|| {
                    let cache = args.cache_dir.as_ref().or(file.cache_dir.as_ref())?;
                    Some(cache.join("staging"))
                })
                .unwrap_or(d.staging_dir),
            cache_dir: args.cache_dir.clone().or(file.cache_dir),
            cache_size: cache_size(args.cache_size.as_deref().or(file.cache_size.as_deref()))?,
            passthrough: args
                .passthrough
                .or(file.passthrough)
                .unwrap_or(d.passthrough),
            metrics_addr: metrics_addr
                .map(|a| {
                    a.parse().map_err(|_| {
                        anyhow!("--metrics-addr {a:?}: expected HOST:PORT, e.g. 127.0.0.1:9464")
                    })
                })
                .transpose()?,
            ..d
        }
        .checked()
    }

    /// The settings `lakemount mount LAKE MOUNTPOINT` gets without any other flag (but run in
    /// the foreground), for embedding the filesystem in another program.
    pub fn defaults(lake: LakeUrl, mountpoint: PathBuf) -> Self {
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        MountSettings {
            lake,
            mountpoint,
            read_only: false,
            foreground: true,
            allow_other: false,
            uid,
            gid,
            file_mode: 0o644,
            dir_mode: 0o755,
            metadata_ttl: Duration::from_secs(60),
            rename_dir_limit: crate::fs::DEFAULT_RENAME_DIR_LIMIT,
            commit_interval: Duration::from_secs(30),
            manifest: None,
            metadata_budget: default_metadata_budget(),
            deadlines: Deadlines::default(),
            endpoint: None,
            auth: AuthMethod::default(),
            log_file: None,
            block_size: DEFAULT_BLOCK_SIZE,
            max_readahead: 128 << 20,
            max_memory: default_max_memory(),
            cache_dir: None,
            cache_size: CacheSize::PercentOfDisk(80.0),
            staging_dir: default_staging_dir(),
            metrics_addr: None,
            passthrough: Passthrough::Auto,
        }
    }

    fn checked(self) -> Result<Self> {
        if self.max_memory < 4 * self.block_size {
            bail!(
                "--max-memory ({} MiB) must hold at least four blocks of --block-size ({} MiB)",
                self.max_memory >> 20,
                self.block_size >> 20
            );
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn flags_override_the_config_file() {
        let f = write("lake = \"az://acct/data\"\nmountpoint = \"/mnt/lake\"\nmetadata_ttl = 5\nfile_mode = \"0600\"\nauth = \"managed-identity\"\n");
        let args = MountArgs {
            config: Some(f.path().into()),
            metadata_ttl: Some(7),
            ..Default::default()
        };
        let s = MountSettings::resolve(&args).unwrap();
        assert_eq!(s.mountpoint, PathBuf::from("/mnt/lake"));
        assert_eq!(s.metadata_ttl, Duration::from_secs(7));
        assert_eq!(s.file_mode, 0o600);
        assert_eq!(s.auth, AuthMethod::ManagedIdentity);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_one_line_errors() {
        let f = write("lake = \"az://acct/data\"\nmetadata_tll = 5\n");
        let args = MountArgs {
            config: Some(f.path().into()),
            ..Default::default()
        };
        let err = format!("{:#}", MountSettings::resolve(&args).unwrap_err());
        assert!(err.contains("metadata_tll") && !err.contains('\n'), "{err}");
        assert!(err.contains("line 2"), "{err}");
        let f = write("lake = \"az://acct/data\"\n\nmountpoint = \"/mnt\n");
        let args = MountArgs {
            config: Some(f.path().into()),
            ..Default::default()
        };
        let err = format!("{:#}", MountSettings::resolve(&args).unwrap_err());
        assert!(err.contains("line 3") && !err.contains('\n'), "{err}");
        let f =
            write("lake = \"az://acct/data\"\nmountpoint = \"/mnt\"\ncommit_interval = 90000\n");
        let args = MountArgs {
            config: Some(f.path().into()),
            ..Default::default()
        };
        let err = format!("{:#}", MountSettings::resolve(&args).unwrap_err());
        assert!(err.contains("--commit-interval: at most 86400"), "{err}");
        let args = MountArgs {
            config: Some(f.path().into()),
            commit_interval: Some(0),
            ..Default::default()
        };
        let s = MountSettings::resolve(&args).unwrap();
        assert_eq!(s.commit_interval, Duration::ZERO, "the flag wins; 0 is off");
        let args = MountArgs {
            config: Some(f.path().into()),
            commit_interval: Some(5),
            metadata_budget: Some("2G".into()),
            ..Default::default()
        };
        assert_eq!(
            MountSettings::resolve(&args).unwrap().metadata_budget,
            2 << 30
        );
        let args = MountArgs {
            metadata_budget: Some("lots".into()),
            ..args
        };
        let err = format!("{:#}", MountSettings::resolve(&args).unwrap_err());
        assert!(err.starts_with("--metadata-budget:"), "{err}");
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("rw-r--r--").is_err());
        assert_eq!(parse_mode("755").unwrap(), 0o755);
    }
}
