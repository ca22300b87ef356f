//! The mount's life: checks, probe, daemon start with readiness reporting, serving, clean
//! unmount on SIGINT/SIGTERM, and `lakemount unmount`.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use fuser::{MountOption, SessionACL};

use crate::cache::blocks::{BlockCache, BlockConfig, ReadRetry};
use crate::cache::disk::DiskCache;
use crate::cli::MountArgs;
use crate::config::MountSettings;
use crate::fs::write::WriteConfig;
use crate::fs::{FsConfig, LakeFs};
use crate::fuse::FuseAdapter;
use crate::metrics::Metrics;
use crate::prefetch::PrefetchReadPath;
use crate::store::{self, DynStore, StoreError};

/// The daemon reports readiness ("ok") or the reason it failed ("error: ...") on this fd.
const READY_FD_ENV: &str = "LAKEMOUNT_READY_FD";
const FSNAME: &str = "lakemount";

/// Ours: a FUSE mount whose source is `lakemount` (the type reads `fuse` or `fuse.lakemount`
/// depending on whether the kernel or fusermount3 mounted it).
fn is_ours((fstype, source): &(String, String)) -> bool {
    (fstype == "fuse" || fstype == "fuse.lakemount") && source == FSNAME
}
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(args: &MountArgs) -> Result<()> {
    let mut settings = MountSettings::resolve(args)?;
    if let Some(token) = handed_over_sas() {
        settings.lake.adopt_sas(token);
    }
    if !settings.foreground {
        return spawn_daemon(&settings);
    }
    let mut ready = Readiness::from_env();
    let result = serve(&settings, &mut ready);
    if let Err(e) = &result {
        ready.failed(&format!("{e:#}"));
    }
    result
}

/// Tells whoever started us that the mount answers: the parent `lakemount mount` through a
/// pipe, and systemd through sd_notify when run as a `Type=notify` unit.
struct Readiness {
    pipe: Option<File>,
}

impl Readiness {
    fn from_env() -> Self {
        let fd = std::env::var(READY_FD_ENV)
            .ok()
            .and_then(|v| v.parse::<i32>().ok());
        std::env::remove_var(READY_FD_ENV);
        let pipe = fd.filter(|fd| *fd > 2).map(|fd| {
            // SAFETY: the parent handed us this descriptor for exactly this purpose. Mark it
            // close-on-exec so helpers we start (fusermount3) do not hold it open.
            unsafe {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                File::from_raw_fd(fd)
            }
        });
        Readiness { pipe }
    }

    fn ready(&mut self) {
        if let Some(mut p) = self.pipe.take() {
            let _ = writeln!(p, "ok");
        }
        sd_notify("READY=1");
    }

    fn failed(&mut self, msg: &str) {
        if let Some(mut p) = self.pipe.take() {
            let _ = writeln!(p, "error: {}", msg.replace('\n', " "));
        }
    }
}

fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let path = PathBuf::from(path);
    let sent = match path.to_str().and_then(|p| p.strip_prefix('@')) {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
        }
        None => sock.send_to(state.as_bytes(), &path),
    };
    if let Err(e) = sent {
        tracing::warn!("sd_notify failed: {e}");
    }
}

fn default_log_file(mountpoint: &Path) -> PathBuf {
    let name: String = mountpoint
        .to_string_lossy()
        .trim_matches('/')
        .replace('/', "-");
    let name = if name.is_empty() {
        "root".to_string()
    } else {
        name
    };
    // SAFETY: geteuid cannot fail.
    let dir = if unsafe { libc::geteuid() } == 0 {
        PathBuf::from("/var/log/lakemount")
    } else {
        crate::config::user_state_dir()
    };
    dir.join(format!("{name}.log"))
}

/// Starts `lakemount mount ... --foreground` detached, and returns once it reports that the
/// mount answers (exit 0) or why it could not mount (error).
/// Where the daemon finds the SAS of a SAS URL given to `lakemount mount`.
const LAKE_SAS_ENV: &str = "LAKEMOUNT_LAKE_SAS";

/// The SAS `spawn_daemon` handed to this process, if it is such a daemon; taken out of the
/// environment once read.
fn handed_over_sas() -> Option<String> {
    std::env::var_os(READY_FD_ENV)?;
    let token = std::env::var(LAKE_SAS_ENV).ok()?;
    std::env::remove_var(LAKE_SAS_ENV);
    Some(token)
}

/// The command line the daemon is started with, when it is not this process's own (the
/// mount(8) helper, `fstab`, translates its arguments into one).
static COMMAND_LINE: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Starts daemons with `line` (argv, with the program name first) instead of this process's
/// own arguments.
pub fn set_command_line(line: Vec<String>) {
    let _ = COMMAND_LINE.set(line);
}

fn spawn_daemon(s: &MountSettings) -> Result<()> {
    let log_path = s
        .log_file
        .clone()
        .unwrap_or_else(|| default_log_file(&s.mountpoint));
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create log directory {}", dir.display()))?;
    }
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open log file {}", log_path.display()))?;
    let (reader, writer) = std::io::pipe().context("cannot create a pipe")?;
    let wfd = writer.as_raw_fd();
    let mut cmd =
        Command::new(std::env::current_exe().context("cannot find the lakemount executable")?);
    // A SAS URL's SAS goes to the daemon in its environment, which only its user can read:
    // its command line, which anyone can, has the URL without it.
    let own: Vec<std::ffi::OsString> = match COMMAND_LINE.get() {
        Some(line) => line.iter().map(Into::into).collect(),
        None => std::env::args_os().collect(),
    };
    let args = own.into_iter().skip(1).map(|a| match a.to_str() {
        Some(t) if t.contains('?') && crate::lake_url::LakeUrl::parse(t).is_ok() => {
            t.split_once('?').map_or(a.clone(), |(base, _)| base.into())
        }
        _ => a,
    });
    if let crate::lake_url::LakeUrl::Azure { sas: Some(sas), .. } = &s.lake {
        cmd.env(LAKE_SAS_ENV, sas.token());
    }
    cmd.args(args)
        .arg("--foreground")
        .env(READY_FD_ENV, "3")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // A session of its own: the daemon survives the terminal that started it.
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // fd 3 carries the readiness pipe; dup2 clears close-on-exec on the copy.
            let r = if wfd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(wfd, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the mount daemon")?;
    drop(writer);

    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(reader).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(PROBE_TIMEOUT + READY_TIMEOUT + Duration::from_secs(10)) {
        Ok(line) if line.trim() == "ok" => {
            println!(
                "mounted {} at {} (log: {})",
                s.lake,
                s.mountpoint.display(),
                log_path.display()
            );
            if let Some(note) = staged_leftovers(&s.staging_dir, false) {
                eprintln!("lakemount: warning: {note}");
            }
            Ok(())
        }
        Ok(line) if line.starts_with("error: ") => {
            let _ = child.wait();
            bail!("{}", line.trim_start_matches("error: ").trim())
        }
        Ok(_) => {
            let status = child.wait()?;
            bail!(
                "the mount daemon exited ({status}) before the mount was ready: {}",
                last_line(&log_path).unwrap_or_else(|| format!("see {}", log_path.display()))
            )
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the mount did not become ready in time; see {}",
                log_path.display()
            )
        }
    }
}

fn last_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::to_string)
}

/// Absolute, lexically normalized (no syscalls: the path may be a dead mount).
fn absolute(p: &Path) -> Result<PathBuf> {
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    Ok(out)
}

/// Undoes the octal escapes mountinfo uses for spaces and the like.
pub(crate) fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push(u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The filesystem type and source mounted at `path`, if it is a mount point.
fn mounted_at(path: &Path) -> Option<(String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.to_string_lossy();
    // The last entry wins: mounts stack.
    info.lines().rev().find_map(|line| {
        let mut fields = line.split(' ');
        let mp = fields.nth(4)?;
        if unescape_mountinfo(mp) != want {
            return None;
        }
        let mut rest = line.split(" - ").nth(1)?.split(' ');
        Some((rest.next()?.to_string(), unescape_mountinfo(rest.next()?)))
    })
}

/// A mount whose daemon is gone answers everything with ENOTCONN (ECONNABORTED for a request
/// the kernel had already queued when the daemon died). (A stat of the mount point itself may
/// still be served from the kernel's attribute cache; listing it is not.)
fn is_dead(path: &Path) -> bool {
    let err = match std::fs::metadata(path) {
        Err(e) => e,
        Ok(_) => match std::fs::read_dir(path) {
            Err(e) => e,
            Ok(_) => return false,
        },
    };
    matches!(
        err.raw_os_error(),
        Some(libc::ENOTCONN | libc::ECONNABORTED)
    )
}

fn check_mountpoint(mp: &Path) -> Result<PathBuf> {
    let abs = absolute(mp)?;
    let shown = abs.display();
    if let Some(m) = mounted_at(&abs) {
        if is_ours(&m) && is_dead(&abs) {
            // A previous lakemount daemon died (crash, kill -9): clear its dead mount so a
            // restart (systemd Restart=on-failure, a rerun start task) just works.
            tracing::warn!("{shown}: clearing the dead mount of a previous lakemount");
            detach(&abs, true)?;
            return check_mountpoint(&abs);
        }
        bail!("{shown} is already a mount point ({} from {})", m.0, m.1);
    }
    match std::fs::metadata(&abs) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("mount point {shown} does not exist")
        }
        Err(e) => bail!("mount point {shown}: {e}"),
        Ok(m) if !m.is_dir() => bail!("mount point {shown} is not a directory"),
        Ok(_) => {}
    }
    let mut entries = std::fs::read_dir(&abs).with_context(|| format!("mount point {shown}"))?;
    if entries.next().is_some() {
        bail!("mount point {shown} is not empty");
    }
    Ok(abs)
}

pub(crate) fn explain(lake: &str, e: StoreError) -> anyhow::Error {
    explain_for("mount", lake, e)
}

/// "cannot VERB LAKE: reason: hint".
pub(crate) fn explain_for(verb: &str, lake: &str, e: StoreError) -> anyhow::Error {
    let hint = match &e {
        StoreError::Denied(_) => {
            ": check the account key, SAS token (expiry, list permission) or identity role assignment"
        }
        StoreError::Unreachable(_) => ": check the endpoint and the network",
        // A listing answered 404 without naming a missing container: not an Azure Blob
        // endpoint for this account.
        StoreError::NotFound(_) => ": check the endpoint and the account name",
        _ => "",
    };
    anyhow!("cannot {verb} {lake}: {e}{hint}")
}

/// The I/O runtime: FUSE requests are answered from its tasks.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    let workers = std::thread::available_parallelism()
        .map_or(4, |n| n.get())
        .max(4);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("lakemount-io")
        .enable_all()
        .build()
        .context("cannot start the I/O runtime")
}

/// The filesystem a mount serves: the core over read-ahead, the memory block cache and (with
/// `--cache-dir`) the disk block cache.
pub fn build_fs(store: DynStore, s: &MountSettings, metrics: Arc<Metrics>) -> Result<Arc<LakeFs>> {
    let disk = open_disk_cache(s, &metrics)?;
    Ok(build_fs_with(store, s, metrics, disk))
}

/// The disk block cache of `--cache-dir`, if any.
pub fn open_disk_cache(
    s: &MountSettings,
    metrics: &Arc<Metrics>,
) -> Result<Option<Arc<DiskCache>>> {
    let Some(dir) = &s.cache_dir else {
        return Ok(None);
    };
    no_file_at("cache directory", dir)?;
    let disk = DiskCache::open(dir, s.cache_size, metrics.clone())
        .with_context(|| format!("cache directory {}", dir.display()))?;
    Ok(Some(Arc::new(disk)))
}

/// `--max-memory` shared between reads (blocks fetched and held) and writes (blocks being
/// uploaded, one buffer per upload slot): up to 8 upload slots, at most a quarter of the
/// budget. A read-only mount gives reads all of it.
fn split_memory(s: &MountSettings) -> (u64, usize) {
    if s.read_only {
        return (s.max_memory, 1);
    }
    let slots = (s.max_memory / 4 / s.block_size).clamp(1, 8);
    (s.max_memory - slots * s.block_size, slots as usize)
}

/// [`build_fs`] over an already opened disk cache.
pub fn build_fs_with(
    store: DynStore,
    s: &MountSettings,
    metrics: Arc<Metrics>,
    disk: Option<Arc<DiskCache>>,
) -> Arc<LakeFs> {
    let (read_memory, upload_slots) = split_memory(s);
    let has_disk = disk.is_some();
    let blocks = BlockCache::new(
        store.clone(),
        disk,
        BlockConfig {
            block_size: s.block_size,
            max_memory: read_memory,
            retry: ReadRetry::within(&s.deadlines),
        },
        metrics.clone(),
    );
    let fs_cfg = FsConfig {
        uid: s.uid,
        gid: s.gid,
        file_mode: s.file_mode,
        dir_mode: s.dir_mode,
        metadata_ttl: s.metadata_ttl,
        read_only: s.read_only,
        write: WriteConfig {
            staging_dir: s.staging_dir.clone(),
            block_size: s.block_size,
        },
        upload_slots,
        rename_dir_limit: s.rename_dir_limit,
        max_cached_entries: (s.metadata_budget / crate::fs::BYTES_PER_CACHED_ENTRY).max(1000),
        passthrough: has_disk && s.passthrough.wanted(s.read_only),
    };
    let read_path = PrefetchReadPath::new(blocks, s.max_readahead);
    Arc::new(LakeFs::new(store, read_path, fs_cfg).with_metrics(metrics))
}

/// A FUSE session serving `fs` at a mount point, from a thread of this process.
pub struct Session {
    mountpoint: PathBuf,
    unmounter: fuser::SessionUnmounter,
    done: Option<tokio::sync::oneshot::Receiver<std::io::Result<()>>>,
}

impl Session {
    /// Mounts `fs` and returns once the mount answers.
    pub fn start(
        fs: Arc<LakeFs>,
        mountpoint: &Path,
        allow_other: bool,
        rt: tokio::runtime::Handle,
    ) -> Result<Session> {
        let read_only = fs.config().read_only;
        let adapter = FuseAdapter::new(fs.clone(), rt);
        let mut cfg = fuser::Config::default();
        cfg.mount_options = vec![
            MountOption::FSName(FSNAME.into()),
            MountOption::Subtype("lakemount".into()),
            MountOption::NoDev,
            MountOption::NoSuid,
        ];
        if read_only {
            cfg.mount_options.push(MountOption::RO);
        }
        if allow_other {
            cfg.acl = SessionACL::All;
            cfg.mount_options.push(MountOption::DefaultPermissions);
        }
        let mut session = fuser::Session::new(adapter, mountpoint, &cfg)
            .map_err(|e| anyhow!("cannot mount at {}: {e}", mountpoint.display()))?;
        let unmounter = session.unmount_callable();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("fuse-session".into())
            .spawn(move || {
                let _ = done_tx.send(session.run());
            })?;
        let mut s = Session {
            mountpoint: mountpoint.to_path_buf(),
            unmounter,
            done: Some(done_rx),
        };
        if let Err(e) = wait_until_answers(mountpoint) {
            s.unmount();
            return Err(e);
        }
        match std::fs::metadata(mountpoint) {
            Ok(m) => fs.set_device(std::os::unix::fs::MetadataExt::dev(&m)),
            Err(e) => tracing::debug!("stat {}: {e}", mountpoint.display()),
        }
        Ok(s)
    }

    /// Unmounts (lazily if busy) and waits (bounded) for the session thread to finish.
    pub fn unmount(&mut self) {
        if self.unmounter.unmount().is_err() {
            tracing::warn!("{} is busy; detaching lazily", self.mountpoint.display());
            let _ = detach(&self.mountpoint, true);
        }
        if let Some(done) = self.done.take() {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(done.blocking_recv());
            });
            let _ = rx.recv_timeout(Duration::from_secs(30));
        }
    }

    /// Waits until SIGINT/SIGTERM (then unmounts) or until unmounted from outside.
    async fn run_until_stopped(&mut self, mut stop: StopSignals) -> Result<()> {
        let (term, int) = (&mut stop.term, &mut stop.int);
        let Some(done) = self.done.as_mut() else {
            return Ok(());
        };
        let why = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            r = done => {
                // Unmounted from outside (`lakemount unmount`, fusermount3 -u, umount).
                self.done = None;
                tracing::info!("{} was unmounted", self.mountpoint.display());
                return r.unwrap_or(Ok(())).map_err(anyhow::Error::from);
            }
        };
        tracing::info!("{why}: unmounting {}", self.mountpoint.display());
        self.unmount();
        Ok(())
    }
}

/// SIGTERM and SIGINT, taken over before mounting so that a stop request arriving while the
/// mount starts is not fatal: it is answered with a clean unmount once the mount is up.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install(rt: &tokio::runtime::Runtime) -> Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let _g = rt.enter();
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.done.is_some() {
            self.unmount();
        }
    }
}

/// A directory we create if missing must not be something else already.
fn no_file_at(what: &str, dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("{what} {} is not a directory", dir.display());
    }
    Ok(())
}

/// Creates the staging directory (private: it holds file contents) so that a bad
/// `--staging-dir` fails the mount instead of every later write.
fn prepare_staging(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let shown = dir.display();
    no_file_at("staging directory", dir)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| std::fs::set_permissions(dir, PermissionsExt::from_mode(0o700)))
        .with_context(|| format!("staging directory {shown}"))
}

/// Staged writes that never reached the lake (a failed upload, a daemon killed before the
/// commit): with `each`, one log line per file; returns a summary saying how to recover them.
fn staged_leftovers(dir: &Path, each: bool) -> Option<String> {
    let left = crate::fs::write::leftovers(dir);
    if each {
        for l in &left {
            match &l.partial {
                None => tracing::warn!(
                    "not uploaded: {} ({} bytes) was meant for {}",
                    l.data.display(),
                    l.size,
                    l.target
                ),
                Some(etag) => tracing::warn!(
                    "not uploaded: {} holds only the blocks changed in {} over its version {etag} (holes elsewhere): not a whole file, do not upload it as it is",
                    l.data.display(),
                    l.target
                ),
            }
        }
    }
    (!left.is_empty()).then(|| {
        format!(
            "{} staged file(s) from an earlier run were never uploaded and are kept in {}; \
             each ID.target names the lake path of its ID.data: recover them with \
             `lakemount upload` (README: \"Recovering staged writes\")",
            left.len(),
            dir.display()
        )
    })
}

fn serve(s: &MountSettings, ready: &mut Readiness) -> Result<()> {
    let mountpoint = check_mountpoint(&s.mountpoint)?;
    if let Some(dir) = &s.cache_dir {
        // Before the staging directory, which defaults to one inside it.
        no_file_at("cache directory", dir)?;
    }
    if !s.read_only {
        prepare_staging(&s.staging_dir)?;
    }
    if let Some(note) = staged_leftovers(&s.staging_dir, true) {
        tracing::warn!("{note}");
    }
    let rt = runtime()?;
    let lake = s.lake.to_string();
    let store = {
        let _guard = rt.enter();
        store::open(&s.lake, s.endpoint.clone(), s.auth, s.deadlines)
            .map_err(|e| explain(&lake, e))?
    };
    // A snapshot: listings and lookups from its manifest, reads pinned to its ETags.
    let store = match &s.manifest {
        Some(m) => {
            let manifest = crate::snapshot::manifest::Manifest::load(m)?;
            tracing::info!(
                "snapshot {} ({} objects, taken {})",
                manifest.header.identity,
                manifest.header.objects,
                manifest.header.created
            );
            crate::snapshot::store::ManifestStore::wrap(store, manifest)
        }
        None => store,
    };
    rt.block_on(async { tokio::time::timeout(PROBE_TIMEOUT, store.probe()).await })
        .map_err(|_| {
            anyhow!(
                "cannot mount {lake}: no answer from {} within {PROBE_TIMEOUT:?}",
                store.describe()
            )
        })?
        .map_err(|e| explain(&lake, e))?;
    let metrics = Arc::new(Metrics::default());
    let store = store::counted::CountedStore::wrap(store, metrics.clone());
    let disk = open_disk_cache(s, &metrics)?;
    let fs = build_fs_with(store, s, metrics.clone(), disk.clone());
    let (_live_commits, _upkeep) = {
        let _guard = rt.enter();
        (
            crate::fs::live::start(&fs, s.commit_interval),
            crate::fs::upkeep::start(&fs),
        )
    };
    if let Some(addr) = s.metrics_addr {
        let bound = rt
            .block_on(crate::metrics::serve(addr, metrics))
            .with_context(|| format!("--metrics-addr {addr}"))?;
        tracing::info!("metrics at http://{bound}/metrics");
    }
    let stop = StopSignals::install(&rt)?;
    let mut session = Session::start(fs, &mountpoint, s.allow_other, rt.handle().clone())?;
    tracing::info!("mounted {lake} at {}", mountpoint.display());
    ready.ready();
    let result = rt.block_on(session.run_until_stopped(stop));
    if let Some(disk) = disk {
        if !disk.wait_idle(Duration::from_secs(30)) {
            tracing::warn!("some blocks were still being written to the disk cache at exit");
        }
    }
    result
}

/// Waits (bounded) until a stat of the mount point is answered by our filesystem.
///
/// The stat runs in a child process (`stat` from coreutils), never in a thread of ours: a
/// thread blocked on our own mount when this process is killed would wait forever for an
/// answer only this process could give, and the process could not finish dying.
fn wait_until_answers(mountpoint: &Path) -> Result<()> {
    let shown = mountpoint.display();
    let mut child = Command::new("stat")
        .arg("--")
        .arg(mountpoint)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run stat(1) to check the new mount")?;
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            bail!("the new mount at {shown} did not answer within {READY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        bail!("the new mount at {shown} does not answer: {}", err.trim());
    }
    match mounted_at(mountpoint) {
        Some(m) if is_ours(&m) => Ok(()),
        other => bail!("{shown} did not show up as a lakemount mount ({other:?})"),
    }
}

/// Unmounts `mp` directly as root, or through fusermount3 otherwise.
fn detach(mp: &Path, lazy: bool) -> Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let c = std::ffi::CString::new(mp.as_os_str().as_encoded_bytes())?;
        let flags = if lazy { libc::MNT_DETACH } else { 0 };
        // SAFETY: c is a valid NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), flags) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EBUSY) {
                bail!(
                    "{} is busy (files or directories in it are in use); close them or use --lazy",
                    mp.display()
                );
            }
            bail!("cannot unmount {}: {e}", mp.display());
        }
        return Ok(());
    }
    let mut cmd = Command::new("fusermount3");
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd
        .arg("--")
        .arg(mp)
        .output()
        .context("cannot run fusermount3 (install the fuse3 package)")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("cannot unmount {}: {}", mp.display(), err.trim());
    }
    Ok(())
}

pub fn unmount(mountpoint: &Path, lazy: bool) -> Result<()> {
    let mp = absolute(mountpoint)?;
    match mounted_at(&mp) {
        None => bail!("{} is not a mount point", mp.display()),
        Some(m) if !is_ours(&m) => bail!(
            "{} is not a lakemount mount (it is {} from {})",
            mp.display(),
            m.0,
            m.1
        ),
        Some(_) => detach(&mp, lazy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/mnt/my\\040lake"), "/mnt/my lake");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/trailing\\04"), "/trailing\\04");
    }

    #[test]
    fn paths_are_normalized_without_touching_the_filesystem() {
        assert_eq!(
            absolute(Path::new("/a/./b/../c/")).unwrap(),
            PathBuf::from("/a/c")
        );
    }

    #[test]
    fn bad_mount_points_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = check_mountpoint(&missing).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        std::fs::write(dir.path().join("f"), "x").unwrap();
        let err = check_mountpoint(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
        let err = check_mountpoint(&dir.path().join("f"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a directory"), "{err}");
        assert!(check_mountpoint(&std::fs::canonicalize("/proc").unwrap())
            .unwrap_err()
            .to_string()
            .contains("already a mount point"));
    }
}
