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
    lakemount::init_logging(default);
    lakemount::agent::main(cli)
}
