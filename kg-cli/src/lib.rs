//! kg, the KeyGrid command-line client. `main.rs` parses [`Cli`] and calls [`run`]; tests do
//! the same in-process with `Cli::try_parse_from`, capturing what would go to stdout.

pub mod cli;
pub mod commands;
pub mod drill;
mod output;

use std::io::{Read, Write};

use clap::CommandFactory;
use kg_api::{ClientOptions, Endpoints};

pub use cli::{Cli, Command, Output};
use output::emit;
pub use output::print_drill as print_drill_report;

/// What a command can fail with; each maps to one documented exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The key (or lease) does not exist: exit 1.
    #[error("{0}")]
    NotFound(String),
    /// Bad arguments, or input the server rejected: exit 2.
    #[error("{0}")]
    Usage(String),
    /// A local file (or standard input) that cannot be read or written: exit 2, as a usage
    /// error, for the fix is on this machine, not the server's.
    #[error("{0}")]
    File(String),
    /// A precondition (--if-revision, --create-only) did not hold: exit 3.
    #[error("{0}")]
    Precondition(String),
    /// No node answered, or it could not serve: exit 4.
    #[error("{0}")]
    Unavailable(String),
    /// Writing the output failed (other than a closed pipe, which counts as success): exit 2,
    /// a local file error too.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::NotFound(_) => 1,
            CliError::Usage(_) | CliError::File(_) | CliError::Output(_) => 2,
            CliError::Precondition(_) => 3,
            CliError::Unavailable(_) => 4,
        }
    }
}

impl From<kg_api::Error> for CliError {
    fn from(err: kg_api::Error) -> Self {
        use kg_api::Error as E;
        match err {
            E::NotFound { detail } => CliError::NotFound(detail),
            E::PreconditionFailed { detail } => CliError::Precondition(detail),
            E::Api { status, detail } if status.is_client_error() => {
                CliError::Usage(format!("{detail} ({status})"))
            }
            E::InvalidEndpoint { .. } => CliError::Usage(err.to_string()),
            other => CliError::Unavailable(other.to_string()),
        }
    }
}

/// Exit code of a command that ran but found something wrong (`health` with a sick node,
/// `status` with an endpoint that did not answer).
pub const EXIT_UNHEALTHY: u8 = 1;

/// What kg knows of the terminal it runs at. Tests run as if at none, so that what they see
/// does not depend on where they run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Terminal {
    /// Standard input is a terminal: `kg txn` prompts for each part of the transaction.
    pub stdin: bool,
    /// Standard output's width in columns when it is a terminal (or `COLUMNS` names one):
    /// `kg list` cuts values to fit it.
    pub width: Option<usize>,
}

impl Terminal {
    /// The terminal of this process: `COLUMNS` if set, else standard output's own width.
    pub fn detect() -> Self {
        use std::io::IsTerminal as _;
        let from_env = std::env::var("COLUMNS")
            .ok()
            .and_then(|columns| columns.trim().parse::<usize>().ok())
            .filter(|columns| *columns > 0);
        let width = from_env.or_else(|| {
            std::io::stdout()
                .is_terminal()
                .then(|| crossterm::terminal::size().ok())
                .flatten()
                .map(|(columns, _)| usize::from(columns))
        });
        Self {
            stdin: std::io::stdin().is_terminal(),
            width,
        }
    }
}

/// Runs one command, writing results to `out` and reading `-` values from `input`; returns
/// the exit code of a command that ran (0, or 1 for an unhealthy `health`).
pub async fn run(cli: Cli, out: &mut dyn Write, input: &mut dyn Read) -> Result<u8, CliError> {
    run_at(cli, out, input, Terminal::default()).await
}

/// [`run`] at `terminal`.
pub async fn run_at(
    cli: Cli,
    out: &mut dyn Write,
    input: &mut dyn Read,
    terminal: Terminal,
) -> Result<u8, CliError> {
    use commands::{failover, health, history, keys, leases, list, snapshot, status, txn, watch};
    let options = ClientOptions {
        timeout: cli.global.timeout,
        token: cli.global.token.clone(),
    };
    let endpoints = Endpoints::new(&cli.global.endpoint, &options)?;
    let format = cli.global.output;
    match cli.command {
        Command::Put(args) => emit(out, format, &keys::put(&endpoints, args, input).await?)?,
        Command::Get(args) if args.prefix => {
            let args = cli::ListArgs {
                prefix: args.key,
                limit: args.limit,
                keys_only: args.keys_only,
                count: false,
                revision: args.revision,
            };
            emit(
                out,
                format,
                &list::list(&endpoints, &args, terminal.width).await?,
            )?;
        }
        Command::Get(args) => emit(out, format, &keys::get(&endpoints, args).await?)?,
        Command::Delete(args) if args.prefix || args.all => {
            emit(out, format, &keys::delete_range(&endpoints, args).await?)?;
        }
        Command::Delete(args) => emit(out, format, &keys::delete(&endpoints, args).await?)?,
        Command::List(args) if args.count => {
            emit(out, format, &list::count(&endpoints, &args).await?)?;
        }
        Command::List(args) => {
            emit(
                out,
                format,
                &list::list(&endpoints, &args, terminal.width).await?,
            )?;
        }
        Command::Txn(args) => emit(
            out,
            format,
            &txn::txn(&endpoints, args, input, terminal.stdin).await?,
        )?,
        Command::History(args) => emit(out, format, &history::history(&endpoints, args).await?)?,
        Command::Compact { revision } => {
            emit(out, format, &history::compact(&endpoints, revision).await?)?
        }
        Command::Watch(args) => return watch::watch(&endpoints, args, format, out).await,
        Command::Health => {
            let health = health::health(&endpoints, &options).await?;
            emit(out, format, &health)?;
            return Ok(if health.healthy() { 0 } else { EXIT_UNHEALTHY });
        }
        Command::Status => {
            let status = status::status(&endpoints).await?;
            emit(out, format, &status)?;
            return Ok(if status.all_answered() {
                0
            } else {
                EXIT_UNHEALTHY
            });
        }
        Command::Lease(command) => return leases::lease(&endpoints, command, format, out).await,
        Command::Lock(args) => return leases::lock(&endpoints, args, format, out).await,
        Command::Snapshot(command) => {
            return snapshot::snapshot(&endpoints, command, format, out, input).await
        }
        Command::Completions(args) => {
            // Into a buffer first: clap_complete panics when its writer fails, and a closed
            // pipe (`kg completions fish | head`) must end the command quietly.
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "kg", &mut script);
            out.write_all(&script)?;
        }
        Command::FailoverDrill(args) => {
            let entry = cli.global.endpoint.first().map_or("", String::as_str);
            let client = kg_api::Client::with_options(entry, &options)?;
            return failover::failover_drill(&client, &options, args, format, out).await;
        }
    }
    Ok(0)
}
