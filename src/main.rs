use std::process::ExitCode;

use clap::Parser;
use lakemount::cli::{CacheCommand, Cli, Command};

/// Exit code of an upload or download refused because targets exist (see --help).
const CONFLICTS: u8 = 3;

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "lakemount=info,warn",
        1 => "lakemount=debug,info",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    lakemount::tune_allocator();
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match &cli.command {
        Command::Mount(args) => lakemount::mount::run(args),
        Command::Unmount(args) => lakemount::mount::unmount(&args.mountpoint, args.lazy),
        Command::Warm(args) => lakemount::transfer::warm::run(args),
        Command::Cache(CacheCommand::Stats { cache_dir }) => {
            lakemount::cache::admin::stats(cache_dir)
        }
        Command::Cache(CacheCommand::Clear { cache_dir }) => {
            lakemount::cache::admin::clear(cache_dir)
        }
        Command::Upload(args) => lakemount::transfer::upload::run(args),
        Command::Download(args) => lakemount::transfer::download::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<lakemount::transfer::tree::Conflicts>() => {
            eprintln!("lakemount: {e}");
            ExitCode::from(CONFLICTS)
        }
        Err(e) => {
            // One line: the chain of causes joined with ": ".
            eprintln!("lakemount: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
