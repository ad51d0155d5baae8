//! `kg list`: the keys under a prefix, through kg-api's paging, or only their count.

use std::io::{self, Write};

use kg_api::{Endpoints, KeyCountResponse, KeyRecord};
use serde::{Serialize, Serializer};

use crate::cli::ListArgs;
use crate::output::{print_table, Render};
use crate::CliError;

/// A listing: JSON is the array of records, text a table, raw `KEY<TAB>VALUE` lines (or the
/// keys alone with `--keys-only`).
#[derive(Debug)]
pub struct Listing {
    pub records: Vec<KeyRecord>,
    pub keys_only: bool,
}

impl Serialize for Listing {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.records.serialize(serializer)
    }
}

impl Render for Listing {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        if self.keys_only {
            return self.raw(out);
        }
        let rows: Vec<Vec<String>> = self
            .records
            .iter()
            .map(|record| {
                vec![
                    record.key.clone(),
                    record.version.to_string(),
                    record.mod_revision.to_string(),
                    record.value.as_ref().map_or(0, String::len).to_string(),
                ]
            })
            .collect();
        print_table(out, &["KEY", "VERSION", "MOD_REVISION", "SIZE"], &rows)
    }

    fn raw(&self, out: &mut dyn Write) -> io::Result<()> {
        for record in &self.records {
            if self.keys_only {
                writeln!(out, "{}", record.key)?;
            } else {
                let value = record.value.as_deref().unwrap_or_default();
                writeln!(out, "{}\t{value}", record.key)?;
            }
        }
        Ok(())
    }
}

/// `kg list --count`: the number alone, or `{"count": N}`.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Count(pub KeyCountResponse);

impl Render for Count {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "{}", self.0.count)
    }

    fn raw(&self, out: &mut dyn Write) -> io::Result<()> {
        self.text(out)
    }
}

pub async fn count(endpoints: &Endpoints, args: &ListArgs) -> Result<Count, CliError> {
    let prefix = args.prefix.clone();
    let count = endpoints
        .call(|client| {
            let prefix = prefix.clone();
            async move { client.count(Some(&prefix)).await }
        })
        .await?;
    Ok(Count(KeyCountResponse { count }))
}

pub async fn list(endpoints: &Endpoints, args: &ListArgs) -> Result<Listing, CliError> {
    let (prefix, limit, keys_only) = (args.prefix.clone(), args.limit, args.keys_only);
    let records = endpoints
        .call(|client| {
            let prefix = prefix.clone();
            async move {
                client
                    .list_up_to(Some(&prefix), limit, keys_only, kg_api::MAX_PAGE_SIZE)
                    .await
            }
        })
        .await?;
    Ok(Listing { records, keys_only })
}
