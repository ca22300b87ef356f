//! lake-agent: prepares Azure Batch GPU nodes (lake mounts, cache, images), runs training
//! containers, writes pool/job/task specs and cost reports. See `lake-agent --help`.

use std::process::ExitCode;

use clap::Parser;
use lakemount::agent::cli::AgentCli;

fn main() -> ExitCode {
    let cli = AgentCli::parse();
    let default = match cli.verbose {
        0 => "warn",
        1 => "lakemount=debug,info",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    lakemount::agent::main(cli)
}
