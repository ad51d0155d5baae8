//! The `kg` binary: parse the command line, run it, print any error once, exit with its code.

use std::io::{self, ErrorKind, Write};
use std::process::ExitCode;

use clap::Parser;
use kg_cli::{run_at, Cli, CliError, Command, Terminal};

/// Exit code after ctrl-c, as shells report SIGINT.
const EXIT_INTERRUPTED: u8 = 130;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut input = io::stdin().lock();
    let terminal = Terminal::detect();
    // `kg lock` handles ctrl-c itself: it must release the lock before it exits.
    let result = if matches!(cli.command, Command::Lock(_)) {
        run_at(cli, &mut out, &mut input, terminal).await
    } else {
        tokio::select! {
            result = run_at(cli, &mut out, &mut input, terminal) => result,
            _ = tokio::signal::ctrl_c() => return ExitCode::from(EXIT_INTERRUPTED),
        }
    };
    let _ = out.flush();
    match result {
        Ok(code) => ExitCode::from(code),
        // A closed pipe (`kg list | head`) is the reader's choice, not a failure.
        Err(CliError::Output(err)) if err.kind() == ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
