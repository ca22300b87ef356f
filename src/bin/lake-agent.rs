//! lake-agent: prepares Azure Batch GPU nodes (lake mounts, cache, images), runs training
//! containers, writes pool/job/task specs and cost reports. See `lake-agent --help`.

use std::process::ExitCode;

use lakemount::agent::cli::AgentCli;

fn main() -> ExitCode {
    let cli: AgentCli = match lakemount::parse_args("lake-agent") {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let default = match cli.verbose {
        0 => "warn",
        1 => "lakemount=debug,info",
        _ => "trace",
    };
    lakemount::init_logging(default);
    lakemount::agent::main(cli)
}
