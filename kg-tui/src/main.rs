//! The `kg-tui` binary: parse the command line and run the dashboard.

use std::process::ExitCode;

use clap::Parser;
use kg_tui::{run, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
