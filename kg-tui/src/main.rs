//! The `kg-tui` binary: parse the command line and run the dashboard.

use std::process::ExitCode;

use kg_tui::{run, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    match run(kg_api::cli::parse::<Cli>()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
