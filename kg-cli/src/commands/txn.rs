//! `kg txn`: one transaction, read from a file or stdin as the JSON of `POST /api/txn` or in
//! etcdctl's text form (`txn_text`).

use std::io::{self, Read, Write};

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

pub async fn txn(
    endpoints: &Endpoints,
    args: TxnArgs,
    input: &mut dyn Read,
) -> Result<TxnDone, CliError> {
    let text = match args.file.as_deref() {
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
    let request: TxnRequest = if text.trim_start().starts_with('{') {
        serde_json::from_str(&text)
            .map_err(|err| CliError::Usage(format!("not a transaction: {err}")))?
    } else {
        super::txn_text::parse(&text)
            .map_err(|err| CliError::Usage(format!("not a transaction: {err}")))?
    };
    let id = args.idempotency_key;
    let done = endpoints
        .call(|client| {
            let (request, id) = (request.clone(), id.clone());
            async move { client.txn(&request, id.as_deref()).await }
        })
        .await?;
    Ok(TxnDone(done))
}
