//! lakemount: an Azure Data Lake / Blob container as a POSIX tree, for training jobs and people.
//!
//! Data flows one way: [`fuse`] (kernel edge) -> [`fs`] (POSIX core) -> [`reader`] / [`cache`]
//! -> [`store`] (Azure, local directory, in-memory).

pub mod agent;
pub mod cache;
pub mod cli;
pub mod config;
pub mod fs;
pub mod fstab;
pub mod fuse;
pub mod lake_url;
pub mod metrics;
pub mod mount;
pub mod prefetch;
pub mod reader;
pub mod snapshot;
pub mod store;
pub mod transfer;

/// Parses the command line; clap's refusals (an unknown flag, `--uid abc`, `--threads 0`)
/// become one line and exit code 1, like every other bad input. Help and version print as
/// clap prints them.
pub fn parse_args<C: clap::Parser>(program: &str) -> Result<C, std::process::ExitCode> {
    parse_args_from(program, std::env::args_os())
}

/// [`parse_args`] of a given command line.
pub fn parse_args_from<C: clap::Parser, I: Into<std::ffi::OsString> + Clone>(
    program: &str,
    args: impl IntoIterator<Item = I>,
) -> Result<C, std::process::ExitCode> {
    use clap::error::ErrorKind;
    C::try_parse_from(args).map_err(|e| {
        if matches!(
            e.kind(),
            ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        ) {
            e.exit();
        }
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default();
        let first = first.strip_prefix("error: ").unwrap_or(first);
        let first = lake_url::hide_queries(first);
        eprintln!("{program}: error: {first} (see {program} --help)");
        std::process::ExitCode::FAILURE
    })
}

/// Logs to stderr at `default` (a tracing filter) unless `RUST_LOG` says otherwise; colours
/// only on a terminal.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// This process's limits of open files (soft, hard), if the kernel tells.
fn nofile() -> Option<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid rlimit out-buffer.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim)
}

/// Raises the soft limit of open files to the hard one: the daemon holds a descriptor per
/// file being written (and per cache file read), and systemd's default soft limit of 1,024
/// is soon reached by training jobs. Call first thing in `main`.
pub fn raise_open_file_limit() {
    let Some(mut lim) = nofile().filter(|l| l.rlim_cur < l.rlim_max) else {
        return;
    };
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit with a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        tracing::debug!(
            "cannot raise RLIMIT_NOFILE: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The soft limit of open files of this process (1,024 if unknown).
pub fn open_file_limit() -> usize {
    nofile().map_or(1024, |l| usize::try_from(l.rlim_cur).unwrap_or(usize::MAX))
}

/// Keeps the daemon's resident memory near what its caches account for. Block buffers (MiB
/// each, 8 by default) come from the heap below a fixed mmap threshold: a fresh mmap per block
/// would cost page faults and zeroing (a quarter of the disk-cache read rate here). The
/// threshold is 16 MiB so that fuser's zero-filled 16 MiB request buffer, of which the kernel
/// writes at most `max_write`, is mapped and not resident (16 MiB less idle RSS). One arena lets a
/// buffer freed by any thread be reused by any other; with four arenas, each
/// kept its own freed blocks and the peak RSS of 16 readers and 4 writers went past
/// --max-memory + 64 MiB (tests/stress_azurite.rs). Call first thing in `main`.
/// Hands freed heap back to the system (after large releases: the trim threshold set by
/// [`tune_allocator`] keeps it otherwise).
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 16 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}
