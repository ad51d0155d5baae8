//! `kg list` (and `kg get --prefix`): the keys under a prefix, now or at a revision, through
//! kg-api's paging, or only their count.

use std::io::{self, Write};

use kg_api::{Endpoints, KeyCountResponse, KeyRecord};
use serde::{Serialize, Serializer};
use unicode_width::{UnicodeWidthChar as _, UnicodeWidthStr as _};

use crate::cli::ListArgs;
use crate::output::{print_table, Render};
use crate::CliError;

/// The narrowest a value is cut to, however little room the other columns leave.
const MIN_VALUE_COLUMNS: usize = 12;

/// A listing: JSON is the array of records, text a table, raw `KEY<TAB>VALUE` lines (or the
/// keys alone with `--keys-only`).
#[derive(Debug)]
pub struct Listing {
    pub records: Vec<KeyRecord>,
    pub keys_only: bool,
    /// The terminal's width in columns, when printing to one: each value is cut so that a
    /// key's row fits on one line. `None` prints the values whole.
    pub width: Option<usize>,
}

impl Serialize for Listing {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.records.serialize(serializer)
    }
}

/// The table's columns before VALUE, which comes last so that it is the one cut.
const HEADERS: [&str; 5] = ["KEY", "VERSION", "MOD_REVISION", "SIZE", "TTL"];

impl Render for Listing {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        if self.keys_only {
            return self.raw(out);
        }
        let mut rows: Vec<Vec<String>> = self
            .records
            .iter()
            .map(|record| {
                vec![
                    record.key.clone(),
                    record.version.to_string(),
                    record.mod_revision.to_string(),
                    record.value.as_ref().map_or(0, String::len).to_string(),
                    record.ttl_remaining_ms.map_or("-".to_owned(), |ms| {
                        format!("{:.1}s", ms.max(0) as f64 / 1000.0)
                    }),
                ]
            })
            .collect();
        // The columns are two spaces apart; VALUE starts after the others and their gaps.
        let value_columns = self.width.map(|width| {
            let before: usize = (0..HEADERS.len())
                .map(|column| {
                    rows.iter()
                        .map(|row| row[column].width())
                        .chain([HEADERS[column].width()])
                        .max()
                        .unwrap_or(0)
                        + 2
                })
                .sum();
            width.saturating_sub(before).max(MIN_VALUE_COLUMNS)
        });
        for (row, record) in rows.iter_mut().zip(&self.records) {
            // One line per key: control characters (a line break) are shown escaped.
            let value: String = record
                .value
                .as_deref()
                .unwrap_or_default()
                .escape_debug()
                .collect();
            row.push(match value_columns {
                Some(columns) => cut(&value, columns),
                None => value,
            });
        }
        let mut headers = HEADERS.to_vec();
        headers.push("VALUE");
        print_table(out, &headers, &rows)
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

/// `text` in at most `columns` terminal columns, its end replaced by `…` when cut.
fn cut(text: &str, columns: usize) -> String {
    if text.width() <= columns {
        return text.to_owned();
    }
    let mut kept = String::new();
    let mut used = 0;
    for character in text.chars() {
        let width = character.width().unwrap_or(0);
        if used + width + 1 > columns {
            break;
        }
        kept.push(character);
        used += width;
    }
    kept.push('…');
    kept
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
    let (prefix, revision) = (args.prefix.clone(), args.revision);
    let count = endpoints
        .call(|client| {
            let prefix = prefix.clone();
            async move { client.count_at(Some(&prefix), revision).await }
        })
        .await?;
    Ok(Count(KeyCountResponse { count }))
}

pub async fn list(
    endpoints: &Endpoints,
    args: &ListArgs,
    width: Option<usize>,
) -> Result<Listing, CliError> {
    let (prefix, limit, keys_only) = (args.prefix.clone(), args.limit, args.keys_only);
    let revision = args.revision;
    let records = endpoints
        .call(|client| {
            let prefix = prefix.clone();
            async move {
                client
                    .list_up_to_at(
                        Some(&prefix),
                        limit,
                        keys_only,
                        kg_api::MAX_PAGE_SIZE,
                        revision,
                    )
                    .await
            }
        })
        .await?;
    Ok(Listing {
        records,
        keys_only,
        width,
    })
}

#[cfg(test)]
mod tests {
    use super::cut;

    #[test]
    fn a_value_is_cut_to_its_columns_with_an_ellipsis() {
        assert_eq!(cut("short", 12), "short");
        assert_eq!(cut("exactly five", 12), "exactly five");
        assert_eq!(cut("a longer value", 8), "a longe…");
        // Wide characters count two columns each.
        assert_eq!(cut("日本語のテキスト", 7), "日本語…");
    }
}
