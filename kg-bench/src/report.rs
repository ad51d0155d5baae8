//! Printers of a [`Report`]: `print_text` (aligned tables), `print_json` and `print_csv`, over
//! any writer; of a comparison; and of a linearizability check.

use std::io::{self, Write};

use crate::check::{Action, KeyResult, Verdict};
use crate::judge::Judgement;
use crate::stats::{Latency, Report};
use crate::threshold::Change;

#[allow(clippy::cast_precision_loss)]
fn ms(micros: u64) -> String {
    format!("{:.2}ms", micros as f64 / 1000.0)
}

fn latency_cells(l: &Latency) -> Vec<String> {
    vec![ms(l.p50), ms(l.p90), ms(l.p99), ms(l.p999), ms(l.max)]
}

/// `rows` under `headers` (none for a key-value listing), columns padded to align and two
/// spaces apart, without borders: comfy-table measures the cells in terminal columns. kg
/// prints its tables with it too.
pub fn table(out: &mut dyn Write, headers: &[&str], rows: &[Vec<String>]) -> io::Result<()> {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled);
    if !headers.is_empty() {
        table.set_header(headers.iter().copied());
    }
    for row in rows {
        table.add_row(row.iter().map(String::as_str));
    }
    // The preset pads every cell with a space on each side; the first column's left one
    // would indent the whole table.
    if let Some(first) = table.column_mut(0) {
        first.set_padding((0, 1));
    }
    for line in table.lines() {
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// The refusals a run's operations met that the store's rules make normal, each by name: a
/// CAS's lost race, a transaction's failure branch. Every operation of the mix that can be
/// refused is named, with 0 when it never was.
pub fn refusals(report: &Report) -> String {
    report
        .ops
        .iter()
        .filter_map(|(op, figures)| match op.as_str() {
            "cas" => Some(format!("{} CAS lost the race (412)", figures.refused)),
            "txn" => Some(format!(
                "{} transactions took the failure branch",
                figures.refused
            )),
            _ => None,
        })
        .map(|refusal| format!(", {refusal}"))
        .collect()
}

/// An error kind as the reports print it: a status with its reason (`status_409
/// (Conflict)`), so that a refusal reads as what it is.
pub fn error_kind(kind: &str) -> String {
    let reason = kind
        .strip_prefix("status_")
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| http::StatusCode::from_u16(code).ok())
        .and_then(|status| status.canonical_reason());
    match reason {
        Some(reason) => format!("{kind} ({reason})"),
        None => kind.to_owned(),
    }
}

/// One setting of a run as a person reads it: the mix as `get=90,put=9`, a key distribution
/// as `uniform` or `zipf 1.1`, a value size as `128` or `64..4096`, lists joined by commas,
/// anything absent as `-`.
pub fn setting_text(name: &str, value: &serde_json::Value) -> String {
    use serde_json::Value;
    match (name, value) {
        (_, Value::Null) => "-".to_owned(),
        // In the order --mix is written (a JSON object's keys come sorted).
        ("mix", Value::Object(weights)) => crate::workload::Op::ALL
            .iter()
            .filter_map(|op| {
                let weight = weights.get(op.name())?.as_u64()?;
                (weight > 0).then(|| format!("{op}={weight}"))
            })
            .collect::<Vec<_>>()
            .join(","),
        ("key_dist", Value::Object(dist)) => match (dist.get("kind"), dist.get("s")) {
            (Some(Value::String(kind)), Some(s)) => format!("{kind} {s}"),
            (Some(Value::String(kind)), None) => kind.clone(),
            _ => value.to_string(),
        },
        ("value_size", Value::Object(size)) => match (size.get("min"), size.get("max")) {
            (Some(min), Some(max)) if min == max => min.to_string(),
            (Some(min), Some(max)) => format!("{min}..{max}"),
            _ => value.to_string(),
        },
        (_, Value::Array(items)) => items
            .iter()
            .map(|item| setting_text("", item))
            .collect::<Vec<_>>()
            .join(", "),
        (_, Value::String(text)) => text.clone(),
        _ => value.to_string(),
    }
}

pub fn print_text(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    let model = report.model_summary();
    writeln!(
        out,
        "{} requests in {:.2}s, {model}; {} errors ({:.3}%), {} not found{}",
        report.requests,
        report.duration_s,
        report.errors,
        report.error_ratio * 100.0,
        report.not_found,
        refusals(report)
    )?;
    if report.requests > 0 && report.successes == 0 {
        writeln!(
            out,
            "every request failed: no latency of the store was measured"
        )?;
    }
    writeln!(out)?;
    let mut rows: Vec<Vec<String>> = report
        .ops
        .iter()
        .map(|(op, r)| {
            let mut row = vec![
                op.clone(),
                r.requests.to_string(),
                format!("{:.0}", r.rps),
                r.errors.to_string(),
            ];
            row.extend(latency_cells(&r.latency_us));
            row
        })
        .collect();
    let mut all = vec![
        "all".to_owned(),
        report.requests.to_string(),
        format!("{:.0}", report.rps),
        report.errors.to_string(),
    ];
    all.extend(latency_cells(&report.latency_us));
    rows.push(all);
    table(
        out,
        &[
            "OP", "REQUESTS", "RPS", "ERRORS", "P50", "P90", "P99", "P99.9", "MAX",
        ],
        &rows,
    )?;

    if !report.errors_by_kind.is_empty() {
        writeln!(out)?;
        let kinds: Vec<String> = report
            .errors_by_kind
            .iter()
            .map(|(kind, count)| format!("{}: {count}", error_kind(kind)))
            .collect();
        writeln!(out, "errors: {}", kinds.join(", "))?;
        if let Some(failed) = &report.failed_latency_us {
            // Apart from the table's, which are the successes' only.
            writeln!(
                out,
                "failed requests' latency: p50 {}, p99 {}, max {}",
                ms(failed.p50),
                ms(failed.p99),
                ms(failed.max)
            )?;
        }
    }
    if !report.nodes.is_empty() {
        writeln!(out)?;
        let rows: Vec<Vec<String>> = report
            .nodes
            .iter()
            .map(|(node, r)| {
                vec![
                    node.clone(),
                    r.requests.to_string(),
                    format!("{:.1}%", r.share * 100.0),
                    r.errors.to_string(),
                    ms(r.latency_us.p50),
                    ms(r.latency_us.p99),
                ]
            })
            .collect();
        table(
            out,
            &["NODE", "REQUESTS", "SHARE", "ERRORS", "P50", "P99"],
            &rows,
        )?;
    }
    if let Some(ratio) = report.cache.hit_ratio {
        writeln!(out)?;
        writeln!(
            out,
            "cache: {:.1}% hits ({} hits, {} misses)",
            ratio * 100.0,
            report.cache.hits,
            report.cache.misses
        )?;
    }
    if !report.thresholds.is_empty() {
        writeln!(out)?;
        for t in &report.thresholds {
            let value = match t.unit.as_str() {
                "us" => format!("{:.3}ms", t.value / 1000.0),
                "ratio" => format!("{:.3}%", t.value * 100.0),
                _ => format!("{:.1}", t.value),
            };
            writeln!(
                out,
                "{} {}: {value}",
                if t.passed { "✓" } else { "✗" },
                t.threshold
            )?;
        }
    }
    Ok(())
}

pub fn print_json(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, report)?;
    writeln!(out)
}

/// One row per operation and one for all: the figures a spreadsheet wants.
pub fn print_csv(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    writeln!(
        out,
        "op,requests,errors,rps,p50_us,p90_us,p99_us,p999_us,max_us"
    )?;
    let row = |out: &mut dyn Write, op: &str, requests: u64, errors: u64, rps: f64, l: &Latency| {
        writeln!(
            out,
            "{op},{requests},{errors},{rps:.1},{},{},{},{},{}",
            l.p50, l.p90, l.p99, l.p999, l.max
        )
    };
    for (op, r) in &report.ops {
        row(out, op, r.requests, r.errors, r.rps, &r.latency_us)?;
    }
    row(
        out,
        "all",
        report.requests,
        report.errors,
        report.rps,
        &report.latency_us,
    )
}

pub fn print_changes(out: &mut dyn Write, changes: &[Change], tolerance: f64) -> io::Result<()> {
    let rows: Vec<Vec<String>> = changes
        .iter()
        .map(|c| {
            vec![
                c.figure.clone(),
                format!("{:.2}", c.base),
                format!("{:.2}", c.new),
                c.change
                    .map_or("-".to_owned(), |c| format!("{:+.1}%", c * 100.0)),
                if c.regression { "REGRESSION" } else { "" }.to_owned(),
            ]
        })
        .collect();
    table(out, &["FIGURE", "BASE", "NEW", "CHANGE", ""], &rows)?;
    let regressions = changes.iter().filter(|c| c.regression).count();
    writeln!(
        out,
        "\n{regressions} regression(s) beyond {:.1}%",
        tolerance * 100.0
    )
}

/// The verdict per key of `kg-bench check`, then each violation's failing window with times in
/// milliseconds from the window's first invocation.
pub fn print_check(out: &mut dyn Write, results: &[KeyResult]) -> io::Result<()> {
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let verdict = match &r.verdict {
                Verdict::Linearizable => "linearizable".to_owned(),
                Verdict::Violation { window } => {
                    format!("VIOLATION ({} operations in the window)", window.len())
                }
                Verdict::Unknown { limit } => format!("undecided (gave up after {limit} states)"),
            };
            vec![
                r.key.clone(),
                r.operations.to_string(),
                r.unknown_outcomes.to_string(),
                verdict,
            ]
        })
        .collect();
    table(out, &["KEY", "OPERATIONS", "UNKNOWN", "VERDICT"], &rows)?;
    for r in results {
        let Verdict::Violation { window } = &r.verdict else {
            continue;
        };
        writeln!(out, "\n{}: smallest failing window", r.key)?;
        let origin = window.first().map_or(0, |op| op.invoke_us);
        #[allow(clippy::cast_precision_loss)]
        let at = |us: u64| format!("{:.3}", (us - origin) as f64 / 1000.0);
        let rows: Vec<Vec<String>> = window
            .iter()
            .map(|op| {
                let shown =
                    |value: &Option<String>| value.as_deref().unwrap_or("(none)").to_owned();
                let (action, value) = match &op.action {
                    Action::Write { value } => {
                        let name = if value.is_some() { "put" } else { "delete" };
                        (name.to_owned(), shown(value))
                    }
                    Action::Read { value } => ("get".to_owned(), shown(value)),
                    Action::Cas {
                        expected,
                        value,
                        swapped,
                    } => {
                        let result = match swapped {
                            Some(true) => "swapped",
                            Some(false) => "refused",
                            None => "unknown",
                        };
                        (
                            format!("cas ({result})"),
                            format!("{} -> {value}", shown(expected)),
                        )
                    }
                };
                vec![
                    op.client.to_string(),
                    action,
                    value,
                    at(op.invoke_us),
                    op.complete_us.map_or("unknown".to_owned(), at),
                ]
            })
            .collect();
        table(
            out,
            &["CLIENT", "OP", "VALUE", "INVOKED MS", "RETURNED MS"],
            &rows,
        )?;
    }
    let (violations, undecided) = crate::check::tally(results);
    writeln!(
        out,
        "\n{} keys, {} operations: {violations} violation(s), {undecided} undecided",
        results.len(),
        results.iter().map(|r| r.operations).sum::<usize>()
    )
}

/// Judged runs: one row of figures each, then each failed run's problems and examples.
pub fn print_judgements(out: &mut dyn Write, verdicts: &[Judgement]) -> io::Result<()> {
    let rows: Vec<Vec<String>> = verdicts.iter().map(judgement_row).collect();
    table(
        out,
        &[
            "RUN",
            "REQUESTS",
            "ERRORS",
            "UNKNOWN",
            "ACKED",
            "LOST",
            "STALE",
            "VIOLATIONS",
            "RECOVERED",
            "WRITE GAP",
            "UNTOUCHED",
            "WATCHED",
            "VERDICT",
        ],
        &rows,
    )?;
    for verdict in verdicts.iter().filter(|v| !v.problems.is_empty()) {
        if verdicts.len() > 1 {
            writeln!(out, "{}:", verdict.fault)?;
        }
        for problem in &verdict.problems {
            writeln!(out, "  {problem}")?;
        }
        for lost in &verdict.lost_examples {
            writeln!(out, "  lost: {}", serde_json::to_string(lost)?)?;
        }
        for stale in &verdict.stale_examples {
            writeln!(out, "  stale: {}", serde_json::to_string(stale)?)?;
        }
        for resurrected in &verdict.resurrected_examples {
            writeln!(
                out,
                "  resurrected: {}",
                serde_json::to_string(resurrected)?
            )?;
        }
        for twice in &verdict.retried_twice_examples {
            writeln!(out, "  retried twice: {}", serde_json::to_string(twice)?)?;
        }
    }
    Ok(())
}

fn judgement_row(verdict: &Judgement) -> Vec<String> {
    let errors = if verdict.errors_by_kind.is_empty() {
        "none".to_owned()
    } else {
        verdict
            .errors_by_kind
            .iter()
            .map(|(kind, n)| format!("{} {n}", kind.strip_prefix("status_").unwrap_or(kind)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        verdict.fault.clone(),
        verdict.requests.to_string(),
        errors,
        verdict.unknown_outcomes.to_string(),
        verdict.acknowledged_writes.to_string(),
        verdict
            .lost_acknowledged_writes
            .map_or_else(|| "-".to_owned(), |n| n.to_string()),
        verdict.stale_reads.to_string(),
        verdict.violations.to_string(),
        verdict
            .recovery_s
            .map_or_else(|| "no errors".to_owned(), |s| format!("{s:.2} s")),
        verdict
            .write_gap_s
            .map_or_else(|| "no writes".to_owned(), |s| format!("{s:.2} s")),
        verdict.untouched_reads.as_ref().map_or_else(
            || "-".to_owned(),
            |reads| format!("{}/{}", reads.answered, reads.during),
        ),
        // Changes the watchers were judged on, and how many wrong.
        verdict.watchers.as_ref().map_or_else(
            || "-".to_owned(),
            |watch| format!("{}/{} wrong", watch.judged, watch.violations),
        ),
        match (verdict.negative_control, verdict.passed) {
            (false, true) => "PASS",
            (false, false) => "FAIL",
            // A control passes when the judge saw the loss it was built to cause.
            (true, _) if verdict.lost_acknowledged_writes.unwrap_or(0) > 0 => {
                "FAIL (control: PASS)"
            }
            (true, _) => "NO LOSS (control: FAIL)",
        }
        .to_owned(),
    ]
}
