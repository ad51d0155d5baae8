//! Printing: every command's result is a typed struct that says how it reads as text, raw
//! and JSON (`Render`), and `emit` picks the one the user asked for; plus aligned tables.

use std::io::{self, Write};

use crate::cli::Output;

/// A command's result in each output format. JSON is the struct as serde writes it, on one
/// line; raw, for scripts, is the JSON unless the result has a barer form.
pub trait Render: serde::Serialize {
    fn text(&self, out: &mut dyn Write) -> io::Result<()>;

    fn raw(&self, out: &mut dyn Write) -> io::Result<()> {
        self.json(out)
    }

    fn json(&self, out: &mut dyn Write) -> io::Result<()> {
        serde_json::to_writer(&mut *out, self)?;
        writeln!(out)
    }
}

/// `n` and the noun that goes with it: `1 key`, `2 keys`, `0 keys`.
pub fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Writes `value` in `format`.
pub fn emit(out: &mut dyn Write, format: Output, value: &impl Render) -> io::Result<()> {
    match format {
        Output::Text => value.text(out),
        Output::Raw => value.raw(out),
        Output::Json => value.json(out),
    }
}

/// The tables kg prints are kg-bench's: the same helper, the same look.
pub use kg_bench::report::table as print_table;

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
                    // Nothing failed, so nothing recovered.
                    _ if phase.successes == phase.requests => "-".to_owned(),
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
        "acknowledged writes: {}, lost: {}; stale reads: {}, linearizability violations: {}",
        report.acknowledged_writes, report.lost_writes, report.stale_reads, report.violations
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

    #[test]
    fn recovery_shows_a_dash_for_a_phase_without_failures() {
        use crate::drill::{Action, DrillReport, Expect, PhaseReport};
        let phase = |name: &str, successes: u64, recovery_ms: Option<u64>| PhaseReport {
            name: name.to_owned(),
            action: Action::None,
            nodes_up: 3,
            expect: Expect::Recovers,
            action_ms: 0,
            requests: 10,
            successes,
            failed_gets: 10 - successes,
            failed_puts: 0,
            errors: Default::default(),
            p50_ms: 1.0,
            p99_ms: 2.0,
            answered_by: Default::default(),
            recovery_ms,
            passed: true,
            problem: None,
        };
        let report = DrillReport {
            endpoint: "http://127.0.0.1:8000".to_owned(),
            rate: 10,
            write_ratio: 0.5,
            phase_duration_ms: 1000,
            max_recovery_ms: 5000,
            phases: vec![phase("clean", 10, Some(0)), phase("restart", 7, Some(120))],
            acknowledged_writes: 0,
            lost_writes: 0,
            lost_examples: Vec::new(),
            stale_reads: 0,
            violations: 0,
            passed: true,
        };
        let mut out = Vec::new();
        print_drill(&mut out, &report).unwrap();
        let text = String::from_utf8(out).unwrap();
        let recovery = |name: &str| {
            let line = text.lines().find(|line| line.starts_with(name)).unwrap();
            line.split_whitespace().rev().nth(1).unwrap().to_owned()
        };
        assert_eq!(recovery("clean"), "-", "{text}");
        assert_eq!(recovery("restart"), "120ms", "{text}");
    }
}
