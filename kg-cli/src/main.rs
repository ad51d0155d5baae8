//! The `kg` binary: parse the command line, run it, print any error once, exit with its code.

use std::io::{self, ErrorKind, Write};
use std::process::ExitCode;

use kg_cli::{run_at, Cli, CliError, Command, Terminal};

/// Exit code after ctrl-c, as shells report SIGINT.
const EXIT_INTERRUPTED: u8 = 130;

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = kg_api::cli::parse();
    // `kg lock` handles ctrl-c itself: it must release the lock before it exits.
    if !matches!(cli.command, Command::Lock(_)) {
        exit_on_interrupt();
    }
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut input = io::stdin().lock();
    let terminal = Terminal::detect();
    let result = run_at(cli, &mut out, &mut input, terminal).await;
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

/// Ends kg with 130 on ctrl-c, whatever it is doing. The handler is installed before any
/// command starts and waits on a task of its own, which the runtime runs on a worker thread:
/// a command blocked in a read of stdin (`kg put KEY -`) cannot keep it from running, as it
/// did when the wait was one branch of a select beside the command.
fn exit_on_interrupt() {
    #[cfg(unix)]
    let interrupted = {
        use tokio::signal::unix::{signal, SignalKind};
        let signal = signal(SignalKind::interrupt());
        async move {
            match signal {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        }
    };
    #[cfg(not(unix))]
    let interrupted = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::spawn(async move {
        interrupted.await;
        std::process::exit(i32::from(EXIT_INTERRUPTED));
    });
}
