//! `--report FILE.html`: one self-contained HTML page per run (or two runs overlaid, from
//! `compare`), with its charts drawn by plotters as inline SVG: no script, no font and no
//! network at view time. Latency over time, throughput and errors per second, and the latency
//! distribution (an HDR percentile plot) overall, per operation and per node. Pure: it writes
//! to any `Write`.

use std::fmt::Write as _;
use std::io::{self, Write};

use plotters::prelude::*;

use crate::stats::{Distribution, Report};

const WIDTH: u32 = 900;
const HEIGHT: u32 = 340;

/// A line of a chart: its legend label, points, and whether it is the second (baseline) run.
struct Line {
    label: String,
    points: Vec<(f64, f64)>,
    dashed: bool,
}

/// Writes the report of `runs`: one `(name, report)`, or two to overlay (base first).
pub fn write_report(out: &mut dyn Write, runs: &[(&str, &Report)]) -> io::Result<()> {
    let overlay = runs.len() > 1;
    let name = |run: &str, series: &str| {
        if overlay {
            format!("{run}: {series}")
        } else {
            series.to_owned()
        }
    };
    // Base runs are dashed, so that two runs read apart without colour too.
    let dashed = |index: usize| overlay && index == 0;

    let mut latency = Vec::new();
    let mut throughput = Vec::new();
    let mut by_op = Vec::new();
    let mut by_node = Vec::new();
    for (index, (run, report)) in runs.iter().enumerate() {
        // Whole seconds only: the second a run ends in holds the stragglers of the last
        // requests, and even scaled it would draw a false cliff or spike.
        let seconds = |value: fn(&crate::stats::SecondReport) -> f64| -> Vec<(f64, f64)> {
            report
                .series
                .iter()
                .filter(|second| !second.partial)
                .map(|second| (second.second as f64, value(second)))
                .collect()
        };
        latency.push(Line {
            label: name(run, "p50"),
            points: seconds(|s| s.p50_us as f64 / 1000.0),
            dashed: dashed(index),
        });
        latency.push(Line {
            label: name(run, "p99"),
            points: seconds(|s| s.p99_us as f64 / 1000.0),
            dashed: dashed(index),
        });
        throughput.push(Line {
            label: name(run, "requests/s"),
            points: seconds(|s| s.rps as f64),
            dashed: dashed(index),
        });
        throughput.push(Line {
            label: name(run, "errors/s"),
            points: seconds(|s| s.errors as f64),
            dashed: dashed(index),
        });
        for distribution in &report.distributions {
            let line = Line {
                label: name(run, &distribution.series),
                points: hdr_points(distribution),
                dashed: dashed(index),
            };
            if distribution.series.starts_with("node ") {
                by_node.push(line);
            } else {
                by_op.push(line);
            }
        }
    }

    let mut page = String::new();
    let title = if overlay {
        format!("kg-bench: {} against {}", runs[1].0, runs[0].0)
    } else {
        format!("kg-bench: {}", runs.first().map_or("", |(run, _)| *run))
    };
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title}</title><style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n",
        title = escape(&title)
    );
    for (run, report) in runs {
        let _ = writeln!(
            page,
            "<p class=\"headline\">{}</p>",
            escape(&headline(run, report))
        );
    }
    page.push_str(&section(
        "Latency over time (successful requests, ms)",
        &chart("second of the run", "ms", &latency, Axis::Linear)?,
    ));
    page.push_str(&section(
        "Throughput and errors per second",
        &chart("second of the run", "per second", &throughput, Axis::Linear)?,
    ));
    page.push_str(&section(
        "Latency distribution: all and per operation (ms, HDR percentile plot)",
        &chart("percentile", "ms", &by_op, Axis::Percentile)?,
    ));
    if !by_node.is_empty() {
        page.push_str(&section(
            "Latency distribution per node (ms)",
            &chart("percentile", "ms", &by_node, Axis::Percentile)?,
        ));
    }
    for (run, report) in runs {
        page.push_str(&settings(run, report));
        page.push_str(&tables(run, report));
    }
    page.push_str("</body></html>\n");
    out.write_all(page.as_bytes())
}

/// How the run was made (from its settings) and what it met: endpoint, model, mix, keys,
/// duration, date and version; requests, errors, refusals and the cache hit rate; then each
/// threshold with its value and verdict.
fn settings(run: &str, report: &Report) -> String {
    let setting = |name: &str| {
        crate::report::setting_text(
            name,
            report
                .settings
                .get(name)
                .unwrap_or(&serde_json::Value::Null),
        )
    };
    let seconds = |name: &str| {
        report
            .settings
            .get(name)
            .and_then(serde_json::Value::as_f64)
            .map(|seconds| format!("{}s", trim_float(seconds)))
    };
    let model = match report.settings.get("model").and_then(|m| m.as_str()) {
        Some("open") => format!(
            "open: {} req/s, at most {} connections",
            setting("rate"),
            setting("concurrency")
        ),
        _ => format!("closed: {} connections", setting("concurrency")),
    };
    let preloaded = report
        .settings
        .get("preload")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let keys = format!(
        "{} ({}){}",
        setting("keys"),
        setting("key_dist"),
        if preloaded { ", preloaded" } else { "" }
    );
    let duration = match (seconds("duration_s"), report.settings.get("requests")) {
        (Some(duration), _) => duration,
        (None, Some(requests)) if !requests.is_null() => format!("{requests} requests"),
        _ => "-".to_owned(),
    };
    let cache = match report.cache.hit_ratio {
        Some(ratio) => format!(
            "{:.1}% ({} hits, {} misses)",
            ratio * 100.0,
            report.cache.hits,
            report.cache.misses
        ),
        None => "not reported (no answer carried X-Cache)".to_owned(),
    };
    let refusals = crate::report::refusals(report);
    let mut rows = vec![
        ("endpoint", setting("endpoints")),
        ("model", model),
        ("mix", setting("mix")),
        ("keys", keys),
        ("value size", format!("{} bytes", setting("value_size"))),
        ("duration", duration),
        (
            "warmup",
            seconds("warmup_s").unwrap_or_else(|| "-".to_owned()),
        ),
        (
            "timeout",
            seconds("timeout_s").unwrap_or_else(|| "-".to_owned()),
        ),
        ("date", setting("started_at")),
        ("version", setting("version")),
        ("requests", report.requests.to_string()),
        (
            "errors",
            format!("{} ({:.3}%)", report.errors, report.error_ratio * 100.0),
        ),
        ("not found", report.not_found.to_string()),
    ];
    if let Some(refusals) = refusals.strip_prefix(", ") {
        rows.push(("refused", refusals.to_owned()));
    }
    rows.push(("cache hit rate", cache));
    let mut html = format!(
        "<section><h2>{}: settings and totals</h2><table>",
        escape(run)
    );
    for (name, value) in rows {
        let _ = write!(
            html,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(name),
            escape(&value)
        );
    }
    html.push_str("</table>");
    if !report.thresholds.is_empty() {
        html.push_str(
            "<h2>thresholds</h2><table><tr><th>threshold</th><th>value</th><th>verdict</th></tr>",
        );
        for threshold in &report.thresholds {
            let value = match threshold.unit.as_str() {
                "us" => format!("{:.3} ms", threshold.value / 1000.0),
                "ratio" => format!("{:.3}%", threshold.value * 100.0),
                _ => format!("{:.1}", threshold.value),
            };
            let (class, verdict) = if threshold.passed {
                ("pass", "pass")
            } else {
                ("fail", "FAIL")
            };
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{verdict}</td></tr>",
                escape(&threshold.threshold),
                escape(&value)
            );
        }
        html.push_str("</table>");
    }
    html.push_str("</section>\n");
    html
}

/// `2` for 2.0, `0.5` for 0.5: a duration as it was given.
fn trim_float(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// `kg-bench leases --report`: one page with how the load was made, its totals, and the
/// latencies of its grants and keep-alives.
pub fn write_leases(
    out: &mut dyn Write,
    endpoint: &str,
    per_request: u64,
    load: &crate::leases::LeaseLoad,
) -> io::Result<()> {
    let ms = |us: u64| format!("{:.2}", us as f64 / 1000.0);
    let mut page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>kg-bench leases</title><style>{STYLE}</style></head><body>\n\
         <h1>kg-bench leases</h1>\n<section><h2>settings and totals</h2><table>"
    );
    for (name, value) in [
        ("endpoint", endpoint.to_owned()),
        ("leases", load.leases.to_string()),
        ("TTL", format!("{}s", load.ttl_seconds)),
        ("leases per keep-alive request", per_request.to_string()),
        ("duration", format!("{}s", trim_float(load.seconds))),
        ("keep-alives", load.keepalives.to_string()),
        ("failed", load.failed.to_string()),
        ("version", env!("CARGO_PKG_VERSION").to_owned()),
    ] {
        let _ = write!(
            page,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(name),
            escape(&value)
        );
    }
    page.push_str(
        "</table></section>\n<section><h2>latency</h2><table><tr><th>requests</th>\
         <th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th></tr>",
    );
    for (name, latency) in [
        ("grants", &load.grant_latency_us),
        ("keep-alives", &load.keepalive_latency_us),
    ] {
        let _ = write!(
            page,
            "<tr><th>{name}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ms(latency.p50),
            ms(latency.p90),
            ms(latency.p99),
            ms(latency.p999),
            ms(latency.max)
        );
    }
    page.push_str("</table></section>\n</body></html>\n");
    out.write_all(page.as_bytes())
}

/// The one-line summary the text report opens with, for this run.
fn headline(run: &str, report: &Report) -> String {
    let model = report.model_summary();
    format!(
        "{run}: {} requests in {:.2} s, {model}; {} errors; p50 {:.2} ms, p99 {:.2} ms",
        report.requests,
        report.duration_s,
        report.errors,
        report.latency_us.p50 as f64 / 1000.0,
        report.latency_us.p99 as f64 / 1000.0,
    )
}

/// The x of an HDR plot: how many nines (90% is 1, 99% is 2, 99.9% is 3), so the tail gets
/// the room it needs.
fn nines(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(1e-6);
    -rest.log10()
}

fn hdr_points(distribution: &Distribution) -> Vec<(f64, f64)> {
    distribution
        .points
        .iter()
        .map(|point| (nines(point.percentile), point.latency_us as f64 / 1000.0))
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Axis {
    Linear,
    Percentile,
}

/// One chart of `lines` as an SVG string.
fn chart(x_label: &str, y_label: &str, lines: &[Line], axis: Axis) -> io::Result<String> {
    let all = || lines.iter().flat_map(|line| line.points.iter());
    let x_max = all().map(|(x, _)| *x).fold(1.0_f64, f64::max);
    let y_max = all().map(|(_, y)| *y).fold(0.0_f64, f64::max).max(1e-3) * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(plot_error)?;
        let percentile_label = |x: &f64| match x.round() as i32 {
            0 => "0%".to_owned(),
            nines => format!("{}%", 100.0 - 100.0 * 10f64.powi(-nines)),
        };
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(x_label).y_desc(y_label);
        if axis == Axis::Percentile {
            mesh.x_labels(x_max.ceil() as usize + 1)
                .x_label_formatter(&percentile_label);
        }
        mesh.draw().map_err(plot_error)?;
        for (index, line) in lines.iter().enumerate() {
            let colour = Palette99::pick(if line.dashed { index + 40 } else { index }).to_rgba();
            let style = ShapeStyle::from(colour).stroke_width(2);
            let series = line.points.iter().copied();
            let drawn = if line.dashed {
                chart
                    .draw_series(DashedLineSeries::new(series, 6, 4, style))
                    .map_err(plot_error)?
            } else {
                chart
                    .draw_series(LineSeries::new(series, style))
                    .map_err(plot_error)?
            };
            drawn
                .label(line.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
        if !lines.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .draw()
                .map_err(plot_error)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

fn plot_error<E: std::fmt::Display>(err: E) -> io::Error {
    io::Error::other(format!("cannot draw the chart: {err}"))
}

fn section(title: &str, svg: &str) -> String {
    format!(
        "<section><h2>{}</h2><figure>{svg}</figure></section>\n",
        escape(title)
    )
}

/// The per-operation and per-node figures as tables.
fn tables(run: &str, report: &Report) -> String {
    let ms = |us: u64| format!("{:.2}", us as f64 / 1000.0);
    let mut html = format!(
        "<section><h2>{}: per operation and per node</h2>\
         <table><tr><th>series</th><th>requests</th><th>errors</th><th>p50 ms</th>\
         <th>p99 ms</th><th>max ms</th></tr>",
        escape(run)
    );
    let rows = report
        .ops
        .iter()
        .map(|(name, op)| (name.clone(), op.requests, op.errors, &op.latency_us))
        .chain(report.nodes.iter().map(|(name, node)| {
            (
                format!("node {name}"),
                node.requests,
                node.errors,
                &node.latency_us,
            )
        }));
    for (name, requests, errors, latency) in rows {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{requests}</td><td>{errors}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&name),
            ms(latency.p50),
            ms(latency.p99),
            ms(latency.max)
        );
    }
    html.push_str("</table></section>\n");
    html
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str =
    "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2330;max-width:960px}\
h1{font-size:1.3rem}h2{font-size:1.05rem;margin-top:1.6rem}.headline{font-family:monospace}\
figure{margin:0}table{border-collapse:collapse}td,th{border:1px solid #d8dde4;padding:.2rem .6rem;\
text-align:right}td:first-child,th:first-child{text-align:left}.pass{color:#1a7f37}\
.fail{color:#cf222e;font-weight:bold}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_put_the_tail_apart() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert!(
            (nines(100.0) - 6.0).abs() < 1e-9,
            "100% is capped, not infinite"
        );
        assert_eq!(nines(0.0), 0.0);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
