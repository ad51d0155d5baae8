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

/// The drill's report: a table of phases, the write check, then the verdict and its reasons.
pub fn print_drill(out: &mut dyn Write, report: &crate::drill::DrillReport) -> io::Result<()> {
    writeln!(
        out,
        "failover drill via {}: {} req/s, {:.0}% PUTs, {} ms per phase",
        report.endpoint,
        report.rate,
        report.write_ratio * 100.0,
        report.phase_duration_ms
    )?;
    writeln!(out)?;
    let rows: Vec<Vec<String>> = report
        .phases
        .iter()
        .map(|phase| {
            let errors = if phase.errors.is_empty() {
                "-".to_owned()
            } else {
                phase
                    .errors
                    .iter()
                    .map(|(status, count)| format!("{status}:{count}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let nodes = if phase.answered_by.is_empty() {
                "-".to_owned()
            } else {
                phase
                    .answered_by
                    .iter()
                    .map(|(node, count)| format!("{node}:{count}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            vec![
                phase.name.clone(),
                phase.nodes_up.to_string(),
                phase.requests.to_string(),
                phase.successes.to_string(),
                errors,
                format!("{:.1}ms", phase.p50_ms),
                format!("{:.1}ms", phase.p99_ms),
                nodes,
                match (phase.expect, phase.recovery_ms) {
                    (crate::drill::Expect::AllBadGateway, _) => "-".to_owned(),
                    (_, Some(ms)) => format!("{ms}ms"),
                    (_, None) => "never".to_owned(),
                },
                if phase.passed { "ok" } else { "FAIL" }.to_owned(),
            ]
        })
        .collect();
    print_table(
        out,
        &[
            "PHASE",
            "UP",
            "REQUESTS",
            "OK",
            "ERRORS",
            "P50",
            "P99",
            "ANSWERED BY",
            "RECOVERY",
            "CHECK",
        ],
        &rows,
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "acknowledged writes: {}, lost: {}",
        report.acknowledged_writes, report.lost_writes
    )?;
    for key in &report.lost_examples {
        writeln!(out, "  lost: {key}")?;
    }
    for phase in &report.phases {
        if let Some(problem) = &phase.problem {
            writeln!(out, "{}: {problem}", phase.name)?;
        }
    }
    writeln!(out, "{}", if report.passed { "PASS" } else { "FAIL" })
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
