//! `kg` run in-process, as the binary would run it: the test binaries `cli` and `cluster`
//! both include this file.

use clap::Parser as _;
use kg_cli::{run, Cli};

/// Runs `kg ARGS` with `stdin`; returns the exit code and stdout (with `error: ...` after it
/// when the command failed), as the binary would.
pub async fn kg(args: &[&str], stdin: &str) -> (u8, String) {
    let cli = match Cli::try_parse_from(std::iter::once("kg").chain(args.iter().copied())) {
        Ok(cli) => cli,
        Err(err) => return (err.exit_code() as u8, err.to_string()),
    };
    let mut out = Vec::new();
    let code = match run(cli, &mut out, &mut stdin.as_bytes()).await {
        Ok(code) => code,
        Err(err) => {
            out.extend_from_slice(format!("error: {err}").as_bytes());
            err.exit_code()
        }
    };
    (code, String::from_utf8(out).unwrap())
}
