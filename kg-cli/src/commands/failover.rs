//! `kg failover-drill`: the seed's drill (`crate::drill`) from the command line.

use std::io::{self, Write};

use kg_api::ClientOptions;

use crate::cli::{DrillArgs, Output, RuntimeKind};
use crate::drill::{self, DrillReport};
use crate::output::{emit, print_drill, Render};
use crate::{CliError, EXIT_UNHEALTHY};

impl Render for DrillReport {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        print_drill(out, self)
    }
}

/// Runs the seed's drill; the exit code is 0 on PASS and 1 on FAIL.
pub async fn failover_drill(
    client: &kg_api::Client,
    client_options: &ClientOptions,
    args: DrillArgs,
    format: Output,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    let (runtime, default_nodes) = match args.runtime {
        RuntimeKind::Local => {
            if !args.node_script.is_file() {
                return Err(CliError::Usage(format!(
                    "{} not found: run from the KeyGrid checkout or pass --node-script",
                    args.node_script.display()
                )));
            }
            (drill::Runtime::local(args.node_script), ["n1", "n2", "n3"])
        }
        RuntimeKind::Compose => (
            drill::Runtime::Compose,
            ["backend1", "backend2", "backend3"],
        ),
        RuntimeKind::Command => (
            drill::Runtime::Command {
                stop: args.stop_cmd.unwrap_or_default(),
                start: args.start_cmd.unwrap_or_default(),
            },
            ["n1", "n2", "n3"],
        ),
    };
    let nodes: Vec<String> = if args.nodes.is_empty() {
        default_nodes
            .iter()
            .map(|node| (*node).to_owned())
            .collect()
    } else {
        args.nodes
    };
    let options = drill::DrillOptions {
        phase_duration: args.phase_duration,
        rate: args.rate,
        write_ratio: args.write_ratio,
        max_recovery: args.max_recovery,
        concurrency: args.concurrency as usize,
        timeout: client_options.timeout,
        token: client_options.token.clone(),
        keep_history: args.keep_history.clone(),
    };
    let phases = drill::seed_phases(&nodes);
    let progress = format == Output::Text && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let report = drill::run_drill(client, &runtime, &phases, &options, progress)
        .await
        .map_err(CliError::Unavailable)?;
    emit(out, format, &report)?;
    Ok(if report.passed { 0 } else { EXIT_UNHEALTHY })
}
