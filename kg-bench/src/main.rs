//! The `kg-bench` binary: parse, run, print, exit with the run's code.

use std::io::Write;
use std::process::ExitCode;

use kg_bench::{main_with, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = kg_api::cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = main_with(cli, &mut out).await;
    let _ = out.flush();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}
