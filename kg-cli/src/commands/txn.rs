//! `kg txn`: one transaction, read from a file or stdin as the JSON of `POST /api/txn` or in
//! etcdctl's text form (`txn_text`), or typed at prompts as in etcdctl's interactive mode.

use std::io::{self, BufRead as _, Read, Write};

use kg_api::{Endpoints, TxnRequest, TxnResponse, TxnResult};
use serde::Serialize;

use crate::cli::TxnArgs;
use crate::output::Render;
use crate::CliError;

/// What `kg txn` prints: the node's answer as it came.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct TxnDone(pub TxnResponse);

impl Render for TxnDone {
    /// etcdctl's shape: which branch ran, then a line per op, a get's value on its own line.
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        let TxnResponse {
            succeeded,
            revision,
            results,
        } = &self.0;
        let branch = if *succeeded { "SUCCESS" } else { "FAILURE" };
        writeln!(out, "{branch} revision {revision}")?;
        for result in results {
            match result {
                TxnResult::Put { key, version, .. } => {
                    writeln!(out, "put {key} (version {version})")?;
                }
                TxnResult::Delete { key, deleted } => {
                    writeln!(out, "delete {key} ({deleted} deleted)")?;
                }
                TxnResult::DeletePrefix { prefix, deleted } => {
                    writeln!(out, "delete_prefix {prefix} ({deleted} deleted)")?;
                }
                TxnResult::Get { key, kv: Some(kv) } => {
                    writeln!(out, "get {key} (revision {})", kv.mod_revision)?;
                    writeln!(out, "{}", kv.value.as_deref().unwrap_or_default())?;
                }
                TxnResult::Get { key, kv: None } => writeln!(out, "get {key}: not found")?,
            }
        }
        Ok(())
    }
}

/// Runs `kg txn`: the transaction from FILE or stdin, or typed at the prompts when stdin is a
/// terminal (`interactive`).
pub async fn txn(
    endpoints: &Endpoints,
    args: TxnArgs,
    input: &mut dyn Read,
    interactive: bool,
) -> Result<TxnDone, CliError> {
    let from_stdin = args
        .file
        .as_deref()
        .is_none_or(|path| path.as_os_str() == "-");
    let request = if from_stdin && interactive {
        prompt(input, &mut io::stderr())?
    } else {
        read(args.file.as_deref(), input)?
    };
    // etcdctl sends an empty transaction and prints SUCCESS; here it is a mistake, named.
    if request.compare.is_empty() && request.success.is_empty() && request.failure.is_empty() {
        return Err(CliError::Usage(
            "an empty transaction: give compares and ops (see kg txn --help)".to_owned(),
        ));
    }
    let id = args.idempotency_key;
    let done = endpoints
        .call(|client| {
            let (request, id) = (request.clone(), id.clone());
            async move { client.txn(&request, id.as_deref()).await }
        })
        .await?;
    Ok(TxnDone(done))
}

/// etcdctl's interactive txn: a prompt for each part (compares, success ops, failure ops), each
/// part ended by an empty line. Each line is checked as it is typed; a mistake is named and the
/// line dropped, so that it can be typed again. The end of input ends the transaction too.
fn prompt(input: &mut dyn Read, prompts: &mut dyn Write) -> Result<TxnRequest, CliError> {
    let mut request = TxnRequest::default();
    let mut lines = io::BufReader::new(input).lines();
    let parts = [
        "compares:",
        "success requests (get, put, del):",
        "failure requests (get, put, del):",
    ];
    for (part, title) in parts.into_iter().enumerate() {
        writeln!(prompts, "{title}")?;
        loop {
            let Some(line) = lines.next() else {
                return Ok(request);
            };
            let line =
                line.map_err(|err| CliError::File(format!("cannot read standard input: {err}")))?;
            let line = line.trim();
            if line.is_empty() {
                break;
            }
            let parsed = match part {
                0 => {
                    super::txn_text::compare_line(line).map(|compare| request.compare.push(compare))
                }
                1 => super::txn_text::op_line(line).map(|op| request.success.push(op)),
                _ => super::txn_text::op_line(line).map(|op| request.failure.push(op)),
            };
            if let Err(err) = parsed {
                writeln!(prompts, "error: {err}; type the line again")?;
            }
        }
    }
    Ok(request)
}

/// The transaction from `file` (stdin without one, or with `-`), as JSON or etcdctl's text.
fn read(file: Option<&std::path::Path>, input: &mut dyn Read) -> Result<TxnRequest, CliError> {
    let text = match file {
        Some(path) if path.as_os_str() != "-" => std::fs::read_to_string(path)
            .map_err(|err| CliError::File(format!("cannot read {}: {err}", path.display())))?,
        _ => {
            let mut text = String::new();
            input
                .read_to_string(&mut text)
                .map_err(|err| CliError::File(format!("cannot read standard input: {err}")))?;
            text
        }
    };
    // Parsed here, so that a typo is named before anything is sent; the node checks it again.
    // JSON is an object; anything else is the text form.
    if text.trim_start().starts_with('{') {
        serde_json::from_str(&text)
            .map_err(|err| CliError::Usage(format!("not a transaction: {err}")))
    } else {
        super::txn_text::parse(&text)
            .map_err(|err| CliError::Usage(format!("not a transaction: {err}")))
    }
}
