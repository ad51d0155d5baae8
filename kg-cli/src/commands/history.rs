//! `kg history` and `kg compact`: a key's versions, and dropping the history below a revision.

use std::io::{self, Write};

use kg_api::{CompactResponse, Endpoints, EventType, KeyVersion, MAX_PAGE_SIZE};
use serde::{Serialize, Serializer};

use crate::cli::HistoryArgs;
use crate::output::{counted, print_table, Render};
use crate::CliError;

/// The longest value a history table shows before cutting it with an ellipsis.
const SHOWN_VALUE_CHARS: usize = 40;

/// A key's versions, newest first: JSON is their array, text a table, raw one
/// `REVISION<TAB>put|delete<TAB>VALUE` line each.
#[derive(Debug)]
pub struct History {
    pub versions: Vec<KeyVersion>,
}

impl Serialize for History {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.versions.serialize(serializer)
    }
}

fn kind(version: &KeyVersion) -> &'static str {
    match version.kind {
        EventType::Put => "put",
        EventType::Delete => "delete",
    }
}

impl Render for History {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        let rows: Vec<Vec<String>> = self
            .versions
            .iter()
            .map(|version| {
                let shown = match (&version.value, version.reason) {
                    (Some(value), _) => shorten(value),
                    (None, Some(reason)) => format!("({})", reason.as_str()),
                    (None, None) => String::new(),
                };
                vec![
                    version.revision.to_string(),
                    kind(version).to_owned(),
                    version.version.to_string(),
                    version.at.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string(),
                    version.node.clone(),
                    shown,
                ]
            })
            .collect();
        print_table(
            out,
            &["REVISION", "TYPE", "VERSION", "AT", "NODE", "VALUE"],
            &rows,
        )
    }

    fn raw(&self, out: &mut dyn Write) -> io::Result<()> {
        for version in &self.versions {
            let value = version.value.as_deref().unwrap_or_default();
            writeln!(out, "{}\t{}\t{value}", version.revision, kind(version))?;
        }
        Ok(())
    }
}

/// One line of a table: control characters shown escaped, long values cut.
fn shorten(value: &str) -> String {
    let escaped: String = value.escape_debug().collect();
    if escaped.chars().count() <= SHOWN_VALUE_CHARS {
        escaped
    } else {
        let cut: String = escaped.chars().take(SHOWN_VALUE_CHARS - 1).collect();
        format!("{cut}…")
    }
}

pub async fn history(endpoints: &Endpoints, args: HistoryArgs) -> Result<History, CliError> {
    let wanted = args.limit.unwrap_or(usize::MAX);
    let mut versions: Vec<KeyVersion> = Vec::new();
    let mut before = None;
    while versions.len() < wanted {
        let page_size = u32::try_from(wanted - versions.len())
            .unwrap_or(MAX_PAGE_SIZE)
            .min(MAX_PAGE_SIZE);
        let key = args.key.clone();
        let page = endpoints
            .call(|client| {
                let key = key.clone();
                async move { client.history(&key, before, Some(page_size)).await }
            })
            .await?;
        versions.extend(page.history);
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    versions.truncate(wanted);
    Ok(History { versions })
}

/// What `kg compact` prints.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Compacted(pub CompactResponse);

impl Render for Compacted {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        let done = &self.0;
        writeln!(
            out,
            "compacted to revision {}: {} and {} dropped",
            done.compact_revision,
            counted(done.versions, "replaced version", "replaced versions"),
            counted(done.tombstones, "tombstone", "tombstones")
        )
    }

    fn raw(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "{}", self.0.compact_revision)
    }
}

pub async fn compact(endpoints: &Endpoints, revision: i64) -> Result<Compacted, CliError> {
    let done = endpoints
        .call(|client| async move { client.compact(revision).await })
        .await?;
    Ok(Compacted(done))
}
