//! Command-line interface.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};

use crate::store::azure::AuthMethod;

#[derive(Debug, Parser)]
#[command(
    name = "lakemount",
    version,
    about = "Mount an Azure Data Lake / Blob container as a POSIX directory tree, and move data in and out",
    long_about = "Mount an Azure Data Lake Storage Gen2 or Blob Storage container (or a local \
directory) as a POSIX directory tree.\n\n\
Examples:\n  \
lakemount mount az://myaccount/datasets /mnt/lake\n  \
lakemount mount abfss://datasets@myaccount.dfs.core.windows.net/imagenet /mnt/imagenet\n  \
lakemount mount az://devstoreaccount1/data /mnt/lake --endpoint http://127.0.0.1:10000/devstoreaccount1\n  \
lakemount mount 'https://myaccount.blob.core.windows.net/datasets?sv=...&sig=...' /mnt/lake\n  \
lakemount mount file:///srv/sample-lake /mnt/lake\n  \
lakemount unmount /mnt/lake\n  \
lakemount upload ./crops az://myaccount/datasets/crops/v2\n  \
lakemount download az://myaccount/results/runs/42 ./runs/42\n\n\
Credentials come from a SAS URL given as the lake, or from the standard places: \
AZURE_STORAGE_CONNECTION_STRING, \
AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_TOKEN, a service principal \
(AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET), workload identity \
(AZURE_FEDERATED_TOKEN_FILE), the Azure CLI (--auth azure-cli) or the VM's managed identity \
(AZURE_CLIENT_ID picks a user-assigned one)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount a lake at a directory. Returns once the mount answers (or fails with the reason).
    Mount(Box<MountArgs>),
    /// Unmount a lakemount mount point; the daemon serving it then exits.
    Unmount(UnmountArgs),
    /// Pre-fetch a dataset into the disk block cache, so a later mount with the same
    /// --cache-dir reads it without touching the lake.
    Warm(WarmArgs),
    /// Inspect or empty a disk block cache.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Snapshot a lake into a manifest (every object with its size, ETag and MD5), which
    /// `mount --manifest` and `warm --manifest` then see exactly, with no listing; compare
    /// two manifests (`diff`) or a manifest with the lake now (`verify`).
    #[command(
        long_about = "Snapshot a lake into a manifest: every object below LAKE_URL with its \
size, ETag, Last-Modified, Content-MD5 and metadata, plus the lake URL, the time and the \
manifest's identity (sha256 of its objects: the same data gives the same identity). \
`mount --manifest FILE` then shows exactly that tree, read-only, with no listing or lookup \
request, and reads pinned to the ETags: a blob changed since is ESTALE, never other bytes. \
`warm --manifest FILE` warms exactly the snapshot.\n\n\
Examples:\n  \
lakemount snapshot az://myaccount/datasets/imagenet -o imagenet-2026-12.manifest\n  \
lakemount mount --manifest imagenet-2026-12.manifest /mnt/imagenet\n  \
lakemount snapshot diff imagenet-2026-11.manifest imagenet-2026-12.manifest\n  \
lakemount snapshot verify imagenet-2026-12.manifest",
        args_conflicts_with_subcommands = true
    )]
    Snapshot(SnapshotArgs),
    /// Copy a local file or directory tree into the lake, many files and blocks at once.
    #[command(
        long_about = "Copy a local file or directory tree into the lake, many files and \
blocks at once. SRC's contents go below DEST (a directory, as with `rclone copy`); a file SRC \
becomes DEST/NAME. Every object is committed whole with its Content-MD5: an interrupted upload \
leaves the previous version (or nothing), never a part.\n\n\
Without --overwrite, nothing is uploaded if any target exists and differs: the first conflicts \
are listed and the exit code is 3. Identical targets (same size and Content-MD5) are skipped.\n\n\
Example:\n  lakemount upload ./crops az://myaccount/datasets/crops/v2 --threads 32"
    )]
    Upload(TransferArgs),
    /// Copy everything below a lake URL (or one blob) to a local directory.
    #[command(
        long_about = "Copy everything below a lake URL (or one blob) to a local \
directory, many files and blocks at once. Each file is checked against its Content-MD5 (when \
the blob has one) and renamed into place only when complete.\n\n\
Without --overwrite, nothing is downloaded if any local target exists and differs: the first \
conflicts are listed and the exit code is 3. Identical files are skipped.\n\n\
Example:\n  lakemount download az://myaccount/runs/job42 ./job42"
    )]
    Download(TransferArgs),
}

/// Arguments of `upload` (SRC local, DEST lake URL) and `download` (SRC lake URL, DEST local).
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Upload: a local file or directory. Download: a lake URL (az://ACCOUNT/CONTAINER/PATH, ...).
    pub src: String,

    /// Upload: a lake URL naming the destination directory. Download: a local directory.
    pub dest: String,

    /// Files and blocks transferred at once.
    #[arg(long, default_value_t = 16, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=512).map(usize::from))]
    pub threads: usize,

    /// Replace targets that exist and differ (without it: exit code 3, nothing transferred).
    #[arg(long)]
    pub overwrite: bool,

    /// Only paths (relative to SRC) matching this glob, e.g. '**/*.jpg'; repeatable.
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,

    /// Leave out paths matching this glob, e.g. 'tmp/**'; repeatable, wins over --include.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,

    /// Block size of large files [default: 8M; larger for files over 390 GiB].
    #[arg(long, value_name = "SIZE")]
    pub block_size: Option<String>,

    #[command(flatten)]
    pub access: LakeAccess,
}

#[derive(Debug, Args, Default)]
pub struct MountArgs {
    /// Lake URL: az://ACCOUNT/CONTAINER[/PREFIX], abfss://CONTAINER@ACCOUNT.dfs.core.windows.net[/PREFIX],
    /// https://ACCOUNT.blob.core.windows.net/CONTAINER[/PREFIX] or file:///PATH.
    /// May come from --config instead.
    pub lake: Option<String>,

    /// An existing, empty directory to mount on. May come from --config instead.
    pub mountpoint: Option<PathBuf>,

    /// Refuse all changes (EROFS). Without it, files written through the mount are uploaded
    /// to the lake when closed (see SEMANTICS.md for what is supported).
    #[arg(long)]
    pub read_only: bool,

    /// Where files being written are staged before they are uploaded; a failed upload's data
    /// stays here [default: CACHE_DIR/staging with --cache-dir, else /var/lib/lakemount/staging
    /// as root, else ~/.local/state/lakemount/staging].
    #[arg(long, value_name = "DIR")]
    pub staging_dir: Option<PathBuf>,

    /// Stay in the foreground and log to stderr instead of running as a daemon.
    #[arg(short, long)]
    pub foreground: bool,

    /// Let other users (and containers running as them) use the mount; permissions are then
    /// checked by the kernel against --uid/--gid/--file-mode/--dir-mode.
    #[arg(long)]
    pub allow_other: bool,

    /// Owner shown for every file and directory [default: the mounting user].
    #[arg(long, value_name = "UID")]
    pub uid: Option<u32>,

    /// Group shown for every file and directory [default: the mounting user's group].
    #[arg(long, value_name = "GID")]
    pub gid: Option<u32>,

    /// Permission bits of files, octal [default: 0644].
    #[arg(long, value_name = "MODE")]
    pub file_mode: Option<String>,

    /// Permission bits of directories, octal [default: 0755].
    #[arg(long, value_name = "MODE")]
    pub dir_mode: Option<String>,

    /// How long listings and attributes are trusted before asking the lake again; changes
    /// made by other clients show up after at most this long [default: 60; at most 31536000,
    /// a year].
    #[arg(long, value_name = "SECONDS")]
    pub metadata_ttl: Option<u64>,

    /// On a flat (Blob) account, a directory is renamed by copying every object below it
    /// server-side, then deleting the originals; past this many objects rename(2) answers EXDEV
    /// (`mv` then copies by itself). 0: always EXDEV. Hierarchical accounts rename atomically
    /// whatever the size [default: 10000].
    #[arg(long, value_name = "OBJECTS")]
    pub rename_dir_limit: Option<u64>,

    /// Memory for cached listings and lookups, e.g. 2G: about 4 million directory entries a
    /// GiB. A walk of a tree that fits lists nothing twice within --metadata-ttl
    /// [default: an eighth of RAM, 256M to 32G].
    #[arg(long, value_name = "SIZE")]
    pub metadata_budget: Option<String>,

    /// Mount a snapshot (see `lakemount snapshot`): the tree the manifest lists, read-only,
    /// with no listing or lookup request; reads are pinned to its ETags, so a blob changed
    /// since is ESTALE (and logged), never other bytes. LAKE may then be left out.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,

    /// A file open for writing longer than this is committed while it stays open (a training
    /// log, a TensorBoard event file shows in the lake as it grows; a preempted node loses at
    /// most this much of it), sending only what changed; each commit is whole. 0: only at
    /// close and fsync [default: 30; at most 86400].
    #[arg(long, value_name = "SECONDS")]
    pub commit_interval: Option<u64>,

    #[command(flatten)]
    pub timeouts: TimeoutArgs,

    /// Blob service endpoint, for Azurite or sovereign clouds, e.g.
    /// http://127.0.0.1:10000/devstoreaccount1 [default: https://ACCOUNT.blob.core.windows.net,
    /// or the BlobEndpoint of AZURE_STORAGE_CONNECTION_STRING].
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,

    /// Which credential to use [default: auto, which takes the first one configured].
    #[arg(long, value_parser = auth_parser())]
    pub auth: Option<AuthMethod>,

    /// A TOML file whose keys mirror these flags (lake, mountpoint, read_only, allow_other, uid,
    /// gid, file_mode, dir_mode, metadata_ttl, rename_dir_limit, commit_interval, manifest, metadata_budget, metadata_timeout, data_timeout, endpoint, auth,
    /// log_file, block_size,
    /// max_readahead, max_memory, cache_dir, cache_size, staging_dir, metrics_addr, passthrough).
    /// Flags win.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Where the daemon logs [default: /var/log/lakemount/MOUNT.log as root,
    /// else ~/.local/state/lakemount/MOUNT.log].
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    /// Unit of fetching and caching, e.g. 8M [default: 8M]. Part of the cache key: warm and
    /// mount must use the same size for the cache to be shared.
    #[arg(long, value_name = "SIZE")]
    pub block_size: Option<String>,

    /// Most a sequentially read file is fetched ahead of its reader [default: 128M].
    #[arg(long, value_name = "SIZE")]
    pub max_readahead: Option<String>,

    /// Memory for blocks being fetched plus blocks held [default: 1/8 of RAM, 512M to 16G].
    #[arg(long, value_name = "SIZE")]
    pub max_memory: Option<String>,

    /// Persistent block cache directory on a local disk (on Azure VMs: the temp disk, e.g.
    /// /mnt/lakecache). Survives remounts; may be shared by several mounts.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Size cap of --cache-dir: bytes (500G), a share of its file system (80%), or free:PCT to
    /// use whatever keeps PCT percent of the file system free (free:15%), re-checked at every
    /// write so the cache yields to other users of the disk [default: 80%].
    #[arg(long, value_name = "SIZE")]
    pub cache_size: Option<String>,

    /// Serve Prometheus metrics at http://HOST:PORT/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,

    /// Let the kernel read files that --cache-dir holds whole straight from the cache disk, at
    /// local-disk speed (FUSE passthrough; needs Linux 6.9+ and root, else reads take the
    /// normal path) [default: auto, on for read-only mounts].
    #[arg(long, value_enum, value_name = "WHEN")]
    pub passthrough: Option<crate::config::Passthrough>,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub action: Option<SnapshotAction>,

    /// The lake URL to snapshot (everything below it), e.g. az://myaccount/datasets/imagenet.
    pub lake: Option<String>,

    /// The manifest to write.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Directories listed at once.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub threads: usize,

    #[command(flatten)]
    pub access: LakeAccess,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotAction {
    /// What changed from manifest A to manifest B: a summary line, then `+ KEY` (added),
    /// `- KEY` (removed), `~ KEY` (changed: another ETag or size).
    Diff {
        a: PathBuf,
        b: PathBuf,
        /// One JSON object instead: from, to, added, removed, changed.
        #[arg(long)]
        json: bool,
    },
    /// Whether the lake still holds exactly the snapshot (exit 0), else what differs (exit 1).
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    pub manifest: PathBuf,

    /// Directories listed at once.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub threads: usize,

    #[command(flatten)]
    pub access: LakeAccess,
}

#[derive(Debug, Args)]
pub struct WarmArgs {
    /// The lake URL of a directory to warm (everything below it), e.g.
    /// az://myaccount/datasets/imagenet/train. With --manifest: the manifest's lake.
    pub lake: Option<String>,

    /// Warm exactly this snapshot (see `lakemount snapshot`), without listing the lake.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,

    /// The disk block cache to fill (the --cache-dir of the mount that will use it).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: PathBuf,

    /// Size cap of the cache: 500G, 80% or free:15% (see `mount --help`) [default: 80%].
    /// Warming more than fits evicts what came first.
    #[arg(long, value_name = "SIZE")]
    pub cache_size: Option<String>,

    /// Block size; must match the mount's [default: 8M].
    #[arg(long, value_name = "SIZE")]
    pub block_size: Option<String>,

    /// Blocks fetched at once.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub threads: usize,

    #[command(flatten)]
    pub access: LakeAccess,
}

/// How to reach a lake: the endpoint, the credential, the deadlines.
#[derive(Debug, Clone, Default, Args)]
pub struct LakeAccess {
    /// Blob service endpoint (Azurite, sovereign clouds); see `lakemount mount --help`.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,

    /// Which credential to use.
    #[arg(long, value_parser = auth_parser())]
    pub auth: Option<AuthMethod>,

    #[command(flatten)]
    pub timeouts: TimeoutArgs,
}

/// How long one call to the lake may take: the bound on any wait for an unresponsive lake.
#[derive(Debug, Clone, Default, Args)]
pub struct TimeoutArgs {
    /// Most one metadata call to the lake (a listing page, a lookup, a delete) may take, its
    /// retries included; past it the operation fails (ETIMEDOUT through a mount). Bounds how
    /// long a process can hang on an unresponsive lake [default: 30; 1 to 3600].
    #[arg(long, value_name = "SECONDS")]
    pub metadata_timeout: Option<u64>,

    /// Most one block read or upload may take, its retries included. Raise it for large
    /// --block-size on slow links [default: 120; 1 to 3600].
    #[arg(long, value_name = "SECONDS")]
    pub data_timeout: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Blocks held whole, blocks held in part (pages random reads fetched) and bytes of a disk
    /// block cache.
    Stats {
        #[arg(long, value_name = "DIR")]
        cache_dir: PathBuf,
    },
    /// Delete every block of a disk block cache (stop mounts using it first).
    Clear {
        #[arg(long, value_name = "DIR")]
        cache_dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct UnmountArgs {
    /// The mount point.
    pub mountpoint: PathBuf,

    /// Detach now even if files are open; the mount goes away when they are closed.
    #[arg(long)]
    pub lazy: bool,
}

/// `--auth`: the store's method names, listed in --help.
fn auth_parser() -> impl TypedValueParser<Value = AuthMethod> {
    PossibleValuesParser::new(AuthMethod::NAMES).map(|s| s.parse().expect("a listed name"))
}
