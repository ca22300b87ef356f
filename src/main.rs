use std::process::ExitCode;

use lakemount::cli::{CacheCommand, Cli, Command};

/// Exit code of an upload or download refused because targets exist (see --help).
const CONFLICTS: u8 = 3;

fn init_logging(verbose: u8) {
    lakemount::init_logging(match verbose {
        // fuser's session warns at every clean unmount that its own second unmount failed.
        0 => "lakemount=info,warn,fuser::session=error",
        1 => "lakemount=debug,info,fuser::session=error",
        _ => "trace",
    });
}

fn main() -> ExitCode {
    lakemount::tune_allocator();
    lakemount::raise_open_file_limit();
    let argv: Vec<String> = std::env::args().collect();
    let parsed = match argv.first() {
        // Run by mount(8) for an fstab line of type `lakemount` or `fuse.lakemount`.
        Some(_) if lakemount::fstab::is_helper(&argv) => {
            match lakemount::fstab::command_line(&argv[1..]) {
                Ok(lakemount::fstab::Helper::Mount(line)) => {
                    lakemount::mount::set_command_line(line.clone());
                    lakemount::parse_args_from("mount.lakemount", line)
                }
                Ok(lakemount::fstab::Helper::Fake) => return ExitCode::SUCCESS,
                Err(e) => {
                    let e = lakemount::lake_url::hide_queries(&e);
                    eprintln!(
                        "mount.lakemount: error: {}",
                        lakemount::lake_url::one_line(&e)
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => lakemount::parse_args("lakemount"),
    };
    let cli: Cli = match parsed {
        Ok(cli) => cli,
        Err(code) => return code,
    };
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
        Command::Snapshot(args) => lakemount::snapshot::run(args),
        Command::Download(args) => lakemount::transfer::download::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<lakemount::transfer::tree::Conflicts>() => {
            eprintln!(
                "lakemount: {}",
                lakemount::lake_url::hide_queries(&e.to_string())
            );
            ExitCode::from(CONFLICTS)
        }
        Err(e) => {
            // One line: the chain of causes joined with ": ".
            // A value quoted back (a config file's) may be a SAS pasted in the wrong place.
            let line = lakemount::lake_url::hide_queries(&format!("{e:#}"));
            eprintln!("lakemount: error: {}", lakemount::lake_url::one_line(&line));
            ExitCode::FAILURE
        }
    }
}
