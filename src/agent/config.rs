//! lake-agent's TOML configuration: one file for the node side (bootstrap, run, stop) and the
//! submit side (pool, job and task specs, cost). Unknown keys and bad values are errors that
//! name the key, so a typo fails the start task instead of being silently ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use crate::lake_url::LakeUrl;
use crate::store::azure::AuthMethod;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    #[serde(default)]
    pub agent: AgentSection,
    #[serde(default, rename = "lake")]
    pub lakes: Vec<LakeConfig>,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub container: ContainerConfig,
    #[serde(default)]
    pub output: OutputConfig,
    #[serde(default)]
    pub pool: PoolConfig,
    #[serde(default)]
    pub job: JobConfig,
    /// Price of one node-hour per VM size, e.g. `Standard_NC24s_v3 = 12.24`; Spot prices
    /// under `[prices.spot]`.
    #[serde(default)]
    pub prices: Prices,
}

/// Node-hour prices per VM size: `[prices]` for dedicated nodes, `[prices.spot]` for Spot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prices {
    pub dedicated: BTreeMap<String, f64>,
    pub spot: BTreeMap<String, f64>,
}

impl<'de> Deserialize<'de> for Prices {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Entry {
            Price(f64),
            Table(BTreeMap<String, f64>),
        }
        let mut prices = Prices::default();
        for (key, entry) in BTreeMap::<String, Entry>::deserialize(d)? {
            match (key.as_str(), entry) {
                ("spot", Entry::Table(t)) => prices.spot = t,
                (_, Entry::Price(p)) => {
                    prices.dedicated.insert(key, p);
                }
                (_, Entry::Table(_)) => {
                    return Err(serde::de::Error::custom(format!(
                        "prices.{key}: a price (a number), or [prices.spot] for Spot prices"
                    )))
                }
            }
        }
        Ok(prices)
    }
}

/// How a lake mount is started and kept running.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MountMode {
    /// systemd when it runs the node, else a supervised daemon.
    #[default]
    Auto,
    Systemd,
    Daemon,
}

/// Whether GPUs are looked for and handed to containers.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum GpuPolicy {
    /// Use the GPUs `nvidia-smi -L` lists; none is fine.
    #[default]
    Auto,
    /// Fail unless at least one healthy GPU is found (a GPU pool's start task).
    Require,
    /// Never look, never pass GPUs.
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSection {
    /// Where status files, logs and pid files go [default: $AZ_BATCH_NODE_SHARED_DIR/lake-agent,
    /// else /var/lib/lake-agent as root, else ~/.local/state/lake-agent].
    pub status_dir: Option<PathBuf>,
    /// The lakemount executable [default: next to lake-agent, else on PATH].
    pub lakemount_bin: Option<PathBuf>,
    pub mount_mode: MountMode,
    /// Seconds to wait for a mount to answer before failing.
    pub mount_timeout: u64,
    /// Seconds between restarts of a supervised mount daemon that died.
    pub restart_delay: u64,
    pub gpus: GpuPolicy,
    /// The nvidia-smi executable.
    pub nvidia_smi: String,
    /// systemd's control program and where unit files and instance configs go.
    pub systemctl: String,
    pub systemd_unit_dir: PathBuf,
    pub lakemount_config_dir: PathBuf,
    /// VM size of this node, for cost reports [default: $LAKE_AGENT_VM_SIZE, else pool.vm_size].
    pub vm_size: Option<String>,
}

impl Default for AgentSection {
    fn default() -> Self {
        AgentSection {
            status_dir: None,
            lakemount_bin: None,
            mount_mode: MountMode::Auto,
            mount_timeout: 120,
            restart_delay: 5,
            gpus: GpuPolicy::Auto,
            nvidia_smi: "nvidia-smi".into(),
            systemctl: "systemctl".into(),
            systemd_unit_dir: "/etc/systemd/system".into(),
            lakemount_config_dir: "/etc/lakemount".into(),
            vm_size: None,
        }
    }
}

/// One lake mount. The keys after `mountpoint` are passed to `lakemount mount`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// Names the mount (systemd instance `lakemount@NAME`, log and pid files).
    pub name: String,
    pub url: String,
    pub mountpoint: PathBuf,
    /// Where containers see it [default: the same path as on the host].
    pub container_path: Option<PathBuf>,
    /// Bind it read-write into containers (else read-only).
    #[serde(default)]
    pub read_write: bool,
    /// Directories below the lake URL to fetch into the cache during bootstrap ("" = all).
    #[serde(default)]
    pub warm: Vec<String>,
    pub endpoint: Option<String>,
    pub auth: Option<String>,
    /// Containers usually run as users other than the one that mounted.
    #[serde(default = "yes")]
    pub allow_other: bool,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub metadata_ttl: Option<u64>,
    pub block_size: Option<String>,
    pub max_readahead: Option<String>,
    pub max_memory: Option<String>,
    pub metrics_addr: Option<String>,
    /// A snapshot of the lake to mount instead of the lake as it is (`lakemount snapshot`):
    /// read-only, no listings, and every task record names it [default: none].
    pub manifest: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// The disk block cache [default: `lakecache` on the largest local non-OS disk].
    pub dir: Option<PathBuf>,
    /// Its size cap: bytes (500G) or a share of its disk (80%).
    pub size: Option<String>,
    /// No disk cache at all.
    pub disabled: bool,
    /// Local disks made into the cache volume: "auto" (a Batch node's unused local NVMe
    /// disks), "none", or a list of block devices [default: auto].
    pub devices: super::volume::Devices,
    /// Where the cache volume is mounted [default: /mnt/nvme].
    pub volume_mount: Option<PathBuf>,
}

impl CacheConfig {
    pub fn volume_mount(&self) -> PathBuf {
        self.volume_mount
            .clone()
            .unwrap_or_else(|| PathBuf::from("/mnt/nvme"))
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    #[default]
    Docker,
    Podman,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// Pull when the image is not on the node.
    #[default]
    Missing,
    Always,
    Never,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerConfig {
    pub runtime: Runtime,
    /// The runtime's executable [default: `docker` or `podman` on PATH].
    pub runtime_bin: Option<PathBuf>,
    /// Arguments before `run`/`pull` (global options, e.g. podman's `--runtime runc`).
    pub runtime_args: Vec<String>,
    /// Extra arguments to `run`, placed before the image.
    pub run_args: Vec<String>,
    /// The framework image `run` starts when no `--image` is given.
    pub image: Option<String>,
    /// The command when none follows `--`.
    pub command: Vec<String>,
    /// More images to pull during bootstrap.
    pub images: Vec<String>,
    pub pull: PullPolicy,
    /// Share the host's IPC namespace (PyTorch DataLoader workers need a large /dev/shm).
    pub ipc_host: bool,
    /// /dev/shm size when `ipc_host` is off, e.g. "16g".
    pub shm_size: Option<String>,
    /// `NAME=SOFT[:HARD]`, as `--ulimit` takes them.
    pub ulimits: Vec<String>,
    /// The container's network [default: host, which NCCL and torchrun across nodes need].
    pub network: String,
    /// Where the task's output directory is bound in the container.
    pub output_path: PathBuf,
    /// Port for torchrun's rendezvous (never Batch's own port in AZ_BATCH_MASTER_NODE).
    pub master_port: u16,
    /// Processes per node for torchrun [default: the number of GPUs, at least 1].
    pub nproc_per_node: Option<u32>,
    /// More environment for the command.
    pub env: BTreeMap<String, String>,
}

impl Default for ContainerConfig {
    fn default() -> Self {
        ContainerConfig {
            runtime: Runtime::Docker,
            runtime_bin: None,
            runtime_args: Vec::new(),
            run_args: Vec::new(),
            image: None,
            command: Vec::new(),
            images: Vec::new(),
            pull: PullPolicy::Missing,
            ipc_host: true,
            shm_size: None,
            ulimits: vec![
                "memlock=-1:-1".into(),
                "stack=67108864:67108864".into(),
                "nofile=1048576:1048576".into(),
            ],
            network: "host".into(),
            output_path: "/mnt/output".into(),
            master_port: 6105,
            nproc_per_node: None,
            env: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Lake URL that receives `runs/JOB/TASK/` [default: the first lake's URL].
    pub lake: Option<String>,
    /// Endpoint for that lake [default: the first lake's endpoint when `lake` is not set].
    pub endpoint: Option<String>,
    pub auth: Option<String>,
    /// Host directory for the task's output [default: $AZ_BATCH_TASK_WORKING_DIR/output].
    pub dir: Option<PathBuf>,
    /// Upload the output after the command (on by default).
    pub upload: Option<bool>,
    /// How often a running task's attempt record in the lake is refreshed, so the time a
    /// preemption cost is known to within this [default: 300].
    pub heartbeat_seconds: Option<u64>,
    pub threads: Option<u32>,
}

impl OutputConfig {
    pub fn upload(&self) -> bool {
        self.upload.unwrap_or(true)
    }

    pub fn heartbeat_seconds(&self) -> u64 {
        self.heartbeat_seconds.unwrap_or(300).max(1)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    pub id: String,
    pub vm_size: String,
    pub image_publisher: String,
    pub image_offer: String,
    pub image_sku: String,
    pub image_version: String,
    /// The Batch node agent for the image (default: the one of an `ubuntu-hpc` SKU, so
    /// `2404` gives `batch.node.ubuntu 24.04` and `2204` gives `batch.node.ubuntu 22.04`).
    pub node_agent_sku_id: Option<String>,
    /// `dockerCompatible` (Batch installs Moby) or `criCompatible`.
    pub container_type: String,
    /// Most dedicated nodes autoscale may create; 0 pending tasks scale the pool to zero.
    pub max_nodes: u32,
    /// Most Spot (low-priority) nodes autoscale may create: they take pending work first,
    /// dedicated nodes the rest. Spot nodes cost a fraction and may be preempted: Batch then
    /// requeues their tasks [default: 0].
    pub spot_nodes: u32,
    /// Nodes per task (multi-instance tasks when above 1).
    pub nodes_per_task: u32,
    /// Where nodes download the binaries and this file (HTTPS URLs, e.g. blobs with SAS or
    /// readable by `resource_identity`).
    pub agent_url: Option<String>,
    pub lakemount_url: Option<String>,
    pub config_url: Option<String>,
    /// ARM id of a user-assigned identity the nodes use for resource files and registries.
    pub resource_identity: Option<String>,
    /// A private registry to pull from with `resource_identity`, e.g. myacr.azurecr.io.
    pub registry_server: Option<String>,
    /// Plain (non-secret) environment for the start task, e.g. AZURE_CLIENT_ID.
    pub env: BTreeMap<String, String>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            id: "lake-gpu".into(),
            vm_size: "Standard_NC24s_v3".into(),
            image_publisher: "microsoft-dsvm".into(),
            image_offer: "ubuntu-hpc".into(),
            // Ubuntu 22.04's node agent is supported until 2027-06-30.
            image_sku: "2404".into(),
            image_version: "latest".into(),
            node_agent_sku_id: None,
            container_type: "dockerCompatible".into(),
            max_nodes: 4,
            spot_nodes: 0,
            nodes_per_task: 1,
            agent_url: None,
            lakemount_url: None,
            config_url: None,
            resource_identity: None,
            registry_server: None,
            env: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobConfig {
    pub id: String,
    pub priority: i32,
    /// Wall-clock limit of a task, in minutes (0 = none).
    pub max_task_minutes: u64,
    pub max_task_retries: i32,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            id: "lake-train".into(),
            priority: 0,
            max_task_minutes: 0,
            max_task_retries: 0,
        }
    }
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("config file {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        // toml's message spans several lines with a source excerpt: keep the first, plus the
        // line number, so the error stays one line.
        let cfg: AgentConfig = toml::from_str(text).map_err(|e| {
            let msg = e.message().trim().replace('\n', " ");
            let Some(span) = e.span() else {
                return anyhow!("{msg}");
            };
            let start = span.start.min(text.len());
            let line_no = text[..start].matches('\n').count() + 1;
            // Name the key when the message does not ("invalid value: integer `-3`").
            let line = text.lines().nth(line_no - 1).unwrap_or("");
            match line
                .split_once('=')
                .map(|(k, _)| k.trim().trim_matches('"'))
            {
                Some(key) if !key.is_empty() && !msg.contains(key) => {
                    anyhow!("line {line_no}: {key}: {msg}")
                }
                _ => anyhow!("line {line_no}: {msg}"),
            }
        })?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Checks the values serde cannot: URLs, names, paths, sizes, ranges.
    fn check(&self) -> Result<()> {
        let mut names = std::collections::HashSet::new();
        for (i, l) in self.lakes.iter().enumerate() {
            let at = format!("lake {:?} ([[lake]] #{})", l.name, i + 1);
            check_name(&l.name).with_context(|| at.clone())?;
            if !names.insert(l.name.as_str()) {
                bail!("{at}: the name is used twice");
            }
            no_sas(LakeUrl::parse(&l.url)).map_err(|e| anyhow!("{at}: url: {e}"))?;
            check_absolute("mountpoint", &l.mountpoint).with_context(|| at.clone())?;
            if let Some(p) = &l.container_path {
                check_absolute("container_path", p).with_context(|| at.clone())?;
            }
            if let Some(p) = &l.manifest {
                check_absolute("manifest", p).with_context(|| at.clone())?;
            }
            if let Some(a) = &l.auth {
                check_auth(a).with_context(|| at.clone())?;
            }
            for (key, v) in [
                ("block_size", &l.block_size),
                ("max_readahead", &l.max_readahead),
                ("max_memory", &l.max_memory),
            ] {
                if let Some(v) = v {
                    crate::cache::disk::parse_bytes(v)
                        .map_err(|e| anyhow!("{at}: {key} {v:?}: {e}"))?;
                }
            }
            for w in &l.warm {
                if w.split('/').any(|s| s == "..") {
                    bail!("{at}: warm {w:?}: `..` is not allowed");
                }
            }
        }
        if let Some(s) = &self.cache.size {
            s.parse::<crate::cache::disk::CacheSize>()
                .map_err(|e| anyhow!("cache.size {s:?}: {e}"))?;
        }
        if let Some(d) = &self.cache.dir {
            check_absolute("cache.dir", d)?;
        }
        if let Some(d) = &self.cache.volume_mount {
            check_absolute("cache.volume_mount", d)?;
        }
        if let super::volume::Devices::List(devices) = &self.cache.devices {
            for d in devices {
                check_absolute("cache.devices", d)?;
            }
        }
        if self.agent.mount_timeout == 0 {
            bail!("agent.mount_timeout must be at least 1 (seconds)");
        }
        for u in &self.container.ulimits {
            check_ulimit(u)?;
        }
        for k in self.container.env.keys() {
            check_env_name("container.env", k)?;
        }
        for k in self.pool.env.keys() {
            check_env_name("pool.env", k)?;
        }
        check_absolute("container.output_path", &self.container.output_path)?;
        if self.container.master_port == 0 {
            bail!("container.master_port must be a port number (1-65535)");
        }
        if let Some(u) = &self.output.lake {
            no_sas(LakeUrl::parse(u)).map_err(|e| anyhow!("output.lake: {e}"))?;
        }
        if let Some(a) = &self.output.auth {
            check_auth(a).context("output")?;
        }
        if self.output.threads == Some(0) {
            bail!("output.threads must be at least 1");
        }
        if self.pool.nodes_per_task == 0 {
            bail!("pool.nodes_per_task must be at least 1");
        }
        if self.pool.max_nodes + self.pool.spot_nodes < self.pool.nodes_per_task {
            bail!(
                "pool.max_nodes + pool.spot_nodes ({}) is below pool.nodes_per_task ({}): no task could ever run",
                self.pool.max_nodes + self.pool.spot_nodes,
                self.pool.nodes_per_task
            );
        }
        let spot = self
            .prices
            .spot
            .iter()
            .map(|(s, p)| (format!("spot.{s}"), p));
        let dedicated = self.prices.dedicated.iter().map(|(s, p)| (s.clone(), p));
        for (size, price) in dedicated.chain(spot) {
            if !price.is_finite() || *price < 0.0 {
                bail!("prices.{size}: {price} is not a price (a number >= 0)");
            }
        }
        Ok(())
    }

    pub fn mount_timeout(&self) -> Duration {
        Duration::from_secs(self.agent.mount_timeout)
    }

    pub fn lake(&self, name: &str) -> Result<&LakeConfig> {
        self.lakes
            .iter()
            .find(|l| l.name == name)
            .ok_or_else(|| anyhow!("no [[lake]] named {name:?} in the config"))
    }
}

/// Systemd instance names and file names: keep them plain.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.starts_with('-');
    if !ok {
        bail!("name: use 1-64 letters, digits, `-` and `_`");
    }
    Ok(())
}

fn check_absolute(key: &str, p: &Path) -> Result<()> {
    if !p.is_absolute() {
        bail!("{key} {}: must be an absolute path", p.display());
    }
    Ok(())
}

fn check_auth(a: &str) -> Result<()> {
    if a.parse::<AuthMethod>().is_err() {
        bail!(
            "auth {a:?}: expected one of {}",
            AuthMethod::NAMES.join(", ")
        );
    }
    Ok(())
}

fn check_env_name(key: &str, k: &str) -> Result<()> {
    let ok = !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok {
        bail!("{key}: {k:?} is not an environment variable name");
    }
    Ok(())
}

/// `nofile=1024:1024`, `memlock=-1:-1`, `stack=67108864`.
fn check_ulimit(u: &str) -> Result<()> {
    let bad =
        || anyhow!("container.ulimits {u:?}: expected NAME=SOFT[:HARD], e.g. nofile=1024:1024");
    let (name, limits) = u.split_once('=').ok_or_else(bad)?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(bad());
    }
    for l in limits.split(':') {
        if l != "-1" && l.parse::<u64>().is_err() {
            return Err(bad());
        }
    }
    if limits.split(':').count() > 2 {
        return Err(bad());
    }
    Ok(())
}

impl ContainerConfig {
    /// The framework image, then the other images to pull.
    pub fn all_images(&self) -> Vec<&String> {
        self.image.iter().chain(self.images.iter()).collect()
    }
}

/// The agent writes lake URLs into unit files and mount configs: a SAS URL would put its
/// signature there, so the agent takes the SAS from the node's environment instead.
fn no_sas(url: Result<LakeUrl, String>) -> Result<LakeUrl, String> {
    match url? {
        LakeUrl::Azure { sas: Some(_), .. } => Err(
            "a SAS URL (not shown) is not taken here: give the URL without its query, and the \
             SAS as AZURE_STORAGE_SAS_TOKEN in the node's environment"
                .into(),
        ),
        url => Ok(url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
[agent]
mount_timeout = 30
mount_mode = "daemon"
gpus = "require"

[[lake]]
name = "datasets"
url = "az://acct/datasets"
mountpoint = "/mnt/lake"
warm = ["imagenet/train"]
metadata_ttl = 300

[cache]
size = "80%"

[container]
runtime = "podman"
runtime_args = ["--runtime", "runc"]
image = "localhost/train:1"
ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[output]
threads = 8

[pool]
vm_size = "Standard_NC24s_v3"
max_nodes = 8
nodes_per_task = 2

[prices]
Standard_NC24s_v3 = 12.24

[prices.spot]
Standard_NC24s_v3 = 2.45
"#;

    #[test]
    fn a_full_config_loads() {
        let c = AgentConfig::parse(FULL).unwrap();
        assert_eq!(c.lakes[0].name, "datasets");
        assert!(c.lakes[0].allow_other);
        assert_eq!(c.container.runtime, Runtime::Podman);
        assert_eq!(c.agent.gpus, GpuPolicy::Require);
        assert_eq!(c.mount_timeout(), Duration::from_secs(30));
        assert_eq!(c.prices.dedicated["Standard_NC24s_v3"], 12.24);
        assert_eq!(c.prices.spot["Standard_NC24s_v3"], 2.45);
        assert_eq!(c.prices.dedicated.len(), 1, "spot is no VM size");
    }

    #[test]
    fn an_empty_config_has_defaults() {
        let c = AgentConfig::parse("").unwrap();
        assert_eq!(c.container.runtime, Runtime::Docker);
        assert_eq!(c.container.master_port, 6105);
        assert!(c.output.upload());
        assert_eq!(c.agent.mount_mode, MountMode::Auto);
    }

    fn err(text: &str) -> String {
        format!("{:#}", AgentConfig::parse(text).unwrap_err())
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let e = err("[container]\nimgae = \"x\"\n");
        assert!(e.contains("imgae") && e.contains("line 2"), "{e}");
        let e = err(
            "[[lake]]\nname = \"a\"\nurl = \"az://acct/data\"\nmountpoint = \"/m\"\ncolour = 1\n",
        );
        assert!(e.contains("colour"), "{e}");
        let e = err("[nonsense]\n");
        assert!(e.contains("nonsense"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn bad_values_are_errors_that_say_what_is_wrong() {
        let lake = |extra: &str| {
            format!("[[lake]]\nname = \"data\"\nurl = \"az://acct/data\"\nmountpoint = \"/mnt/lake\"\n{extra}")
        };
        for (text, want) in [
            ("[container]\nruntime = \"lxc\"\n", "lxc"),
            ("[agent]\nmount_timeout = 0\n", "mount_timeout"),
            ("[agent]\nmount_timeout = -3\n", "mount_timeout"),
            ("[container]\nulimits = [\"nofile\"]\n", "NAME=SOFT"),
            (
                "[container]\nenv = { \"1X\" = \"a\" }\n",
                "environment variable",
            ),
            ("[cache]\nsize = \"lots\"\n", "cache.size"),
            ("[cache]\ndir = \"relative\"\n", "absolute"),
            (
                "[pool]\nmax_nodes = 1\nnodes_per_task = 2\n",
                "no task could ever run",
            ),
            ("[prices]\nStandard_X = -1.0\n", "not a price"),
            ("[prices.spot]\nStandard_X = -1.0\n", "prices.spot.Standard_X"),
            ("[prices.other]\nStandard_X = 1.0\n", "[prices.spot] for Spot prices"),
            ("[output]\nlake = \"s3://x\"\n", "output.lake"),
            (
                "[output]\nlake = \"https://acct.blob.core.windows.net/out?sv=1&sig=S3CRET\"\n",
                "a SAS URL (not shown) is not taken here",
            ),
            (
                "[[lake]]\nname = \"a\"\nurl = \"https://acct.blob.core.windows.net/data?sig=S3CRET\"\nmountpoint = \"/m\"\n",
                "AZURE_STORAGE_SAS_TOKEN in the node's environment",
            ),
            (
                "[[lake]]\nname = \"a b\"\nurl = \"az://acct/data\"\nmountpoint = \"/m\"\n",
                "name",
            ),
            (
                "[[lake]]\nname = \"a\"\nurl = \"az://Acct/data\"\nmountpoint = \"/m\"\n",
                "storage account",
            ),
            (
                "[[lake]]\nname = \"a\"\nurl = \"az://acct/data\"\nmountpoint = \"m\"\n",
                "absolute",
            ),
            (lake("auth = \"password\"\n").as_str(), "auth"),
            (lake("block_size = \"big\"\n").as_str(), "block_size"),
            (lake("warm = [\"../etc\"]\n").as_str(), ".."),
            (format!("{}{}", lake(""), lake("")).as_str(), "used twice"),
        ] {
            let e = err(text);
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
            assert!(!e.contains("S3CRET"), "a signature shown: {e}");
        }
    }
}
