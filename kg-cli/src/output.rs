//! Printing: aligned text tables and one-line JSON documents.

use std::io::{self, Write};

/// Writes `rows` under `headers` (none for a key-value listing), columns padded to align.
pub fn print_table(out: &mut dyn Write, headers: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let n_columns = rows
        .iter()
        .map(Vec::len)
        .chain([headers.len()])
        .max()
        .unwrap_or(0);
    let mut widths = vec![0; n_columns];
    for (column, header) in headers.iter().enumerate() {
        widths[column] = header.chars().count();
    }
    for row in rows {
        for (column, cell) in row.iter().enumerate() {
            widths[column] = widths[column].max(cell.chars().count());
        }
    }
    let write_row =
        |out: &mut dyn Write, cells: &mut dyn Iterator<Item = &str>| -> io::Result<()> {
            let mut line = String::new();
            for (column, cell) in cells.enumerate() {
                if column > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if column + 1 < n_columns {
                    line.push_str(&" ".repeat(widths[column] - cell.chars().count()));
                }
            }
            writeln!(out, "{}", line.trim_end())
        };
    if !headers.is_empty() {
        write_row(out, &mut headers.iter().copied())?;
    }
    for row in rows {
        write_row(out, &mut row.iter().map(String::as_str))?;
    }
    Ok(())
}

/// Writes a JSON document on one line.
pub fn write_value(out: &mut dyn Write, value: &serde_json::Value) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_align_on_the_widest_cell() {
        let mut out = Vec::new();
        let rows = vec![
            vec!["a".to_owned(), "1".to_owned()],
            vec!["longer-key".to_owned(), "12345".to_owned()],
        ];
        print_table(&mut out, &["KEY", "N"], &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "KEY         N\na           1\nlonger-key  12345\n"
        );
    }
}
