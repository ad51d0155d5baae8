//! Drawing: `draw(frame, &app)` renders the whole screen from the state and does nothing else.
//! Every state reads without colour too: statuses are words, the focused panel is marked.

use std::time::Duration;

use kg_api::{DeleteReason, DependencyState, EventType};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Sparkline, Table, Wrap};
use ratatui::Frame;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use crate::app::{App, EventPlace, FeedState, Mode, NodeState, Panel, PutField, HISTORY_SECONDS};

/// Bytes of a value the value view shows; past this it says the value is cut.
pub const VALUE_VIEW_BYTES: usize = 64 * 1024;

/// `text` in at most `width` terminal columns: cut in the middle with `…` when longer, so that
/// both a key's prefix and its distinguishing end stay visible (`drill/65…/000`).
pub fn truncate_middle(text: &str, width: usize) -> String {
    if text.width() <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let budget = width - 1; // the ellipsis takes one column
    let head_budget = budget.div_ceil(2);
    let tail_budget = budget - head_budget;
    let mut head = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > head_budget {
            break;
        }
        head.push(c);
        used += w;
    }
    let mut tail = Vec::new();
    let mut used = 0;
    for c in text.chars().rev() {
        let w = c.width().unwrap_or(0);
        if used + w > tail_budget {
            break;
        }
        tail.push(c);
        used += w;
    }
    head.push('…');
    head.extend(tail.into_iter().rev());
    head
}

/// An address as the dashboard shows it: an endpoint without its `http://` (the default, as
/// kg takes a bare HOST:PORT; `https://` stays) and final slash, in at most `width` columns,
/// cut in the middle so that its port stays (`keygri…al:8001`).
pub fn shown_address(address: &str, width: usize) -> String {
    let bare = address.strip_prefix("http://").unwrap_or(address);
    truncate_middle(bare.strip_suffix('/').unwrap_or(bare), width)
}

/// The columns a table's flexible column gets: the area's inner width less the fixed
/// columns and the one-column gaps between columns.
fn flexible_width(area: Rect, fixed: &[u16]) -> usize {
    let gaps = u16::try_from(fixed.len()).unwrap_or(0);
    usize::from(
        area.width
            .saturating_sub(2)
            .saturating_sub(fixed.iter().sum::<u16>())
            .saturating_sub(gaps),
    )
}

pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    let node_rows = u16::try_from(app.nodes.len().clamp(1, 8)).unwrap_or(8);
    // The data-tier panel only when the dashboard was given Patroni or Sentinels: one row a
    // member, one for errors, one for the last change of leader.
    let tier_rows = app.tier.as_ref().map_or(0, |tier| {
        u16::try_from(tier.members.len().clamp(1, 8)).unwrap_or(8) + 5
    });
    let [header, nodes, tier, middle, throughput, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(node_rows + 3),
        Constraint::Length(tier_rows),
        Constraint::Min(6),
        Constraint::Length(4),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, app, header);
    draw_nodes(frame, app, nodes);
    draw_tier(frame, app, tier);
    let [events, keys] =
        Layout::horizontal([Constraint::Percentage(58), Constraint::Percentage(42)]).areas(middle);
    draw_events(frame, app, events);
    draw_keys(frame, app, keys);
    draw_throughput(frame, app, throughput);
    draw_footer(frame, app, footer);
    draw_mode(frame, app, area);
}

fn draw_header(frame: &mut Frame, app: &App, area: Rect) {
    let (feed, style) = match &app.feed {
        FeedState::Connected(source) => (format!("{source}: connected"), Style::new().green()),
        FeedState::Connecting(source) => (format!("{source}: connecting"), Style::new().yellow()),
        FeedState::Down(source, why) => (
            format!("{source}: UNREACHABLE ({why})"),
            Style::new().red().bold(),
        ),
    };
    let line = Line::from(vec![
        Span::styled(" KeyGrid ", Style::new().bold().reversed()),
        Span::raw(" events via "),
        Span::styled(feed, style),
        Span::raw(if app.read_only { " · read-only" } else { "" }),
        Span::raw(format!(
            " · {}",
            app.endpoints
                .iter()
                .map(|endpoint| shown_address(endpoint, usize::MAX))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    ]);
    frame.render_widget(Paragraph::new(line), area);
}

fn panel_block(title: &str, focused: bool) -> Block<'static> {
    let title = if focused {
        format!("[{title}]")
    } else {
        format!(" {title} ")
    };
    let block = Block::bordered().title(title);
    if focused {
        block.border_style(Style::new().cyan())
    } else {
        block
    }
}

fn state_style(state: NodeState) -> Style {
    match state {
        NodeState::Ok => Style::new().green(),
        NodeState::Degraded => Style::new().yellow(),
        NodeState::Stale => Style::new().magenta(),
        NodeState::Down => Style::new().red().add_modifier(Modifier::BOLD),
    }
}

fn dependency(state: DependencyState) -> &'static str {
    match state {
        DependencyState::Ok => "ok",
        DependencyState::Degraded => "degraded",
        DependencyState::Unavailable => "down",
        DependencyState::Disabled => "off",
    }
}

fn format_age(age: Duration) -> String {
    if age < Duration::from_secs(60) {
        format!("{:.1}s", age.as_secs_f64())
    } else {
        format!("{}m", age.as_secs() / 60)
    }
}

/// The nodes table's columns but ADDRESS, whose width is what is left of the line.
const NODE_COLUMNS: [u16; 7] = [9, 8, 6, 10, 8, 8, 8];

fn draw_nodes(frame: &mut Frame, app: &App, area: Rect) {
    let address_width = flexible_width(area, &NODE_COLUMNS).max(14);
    let rows = app.nodes.values().enumerate().map(|(index, node)| {
        let state = node.state(app.now);
        let (latency, database, cache) = match node.poll.as_ref().map(|poll| &poll.result) {
            Some(Ok(status)) => (
                format!("{:.1}ms", status.latency.as_secs_f64() * 1000.0),
                dependency(status.database).to_owned(),
                dependency(status.cache).to_owned(),
            ),
            Some(Err(_)) => ("error".to_owned(), "-".to_owned(), "-".to_owned()),
            // Known from heartbeats only: it is not behind an --endpoint, so nobody asked it.
            None => ("not polled".to_owned(), String::new(), String::new()),
        };
        let row = Row::new(vec![
            // A node that never answered is known by its endpoint: shown as an address too.
            Cell::from(shown_address(&node.id, usize::from(NODE_COLUMNS[0]))),
            Cell::from(shown_address(&node.address, address_width)),
            Cell::from(state.label()).style(state_style(state)),
            Cell::from(
                node.heartbeat_age(app.now)
                    .map_or("-".to_owned(), format_age),
            ),
            Cell::from(latency),
            Cell::from(database),
            Cell::from(cache),
            Cell::from(node.revision().map_or("-".to_owned(), |r| r.to_string())),
        ]);
        if app.focus == Panel::Nodes && index == app.selected_node {
            row.style(Style::new().reversed())
        } else {
            row
        }
    });
    let header = Row::new([
        "NODE", "ADDRESS", "STATUS", "BEAT", "LATENCY", "DB", "CACHE", "REVISION",
    ])
    .style(Style::new().bold());
    // At 80 columns every fixed column, "not polled" included, fits beside a 14-column address.
    let widths = [
        Constraint::Length(NODE_COLUMNS[0]),
        Constraint::Min(14),
        Constraint::Length(NODE_COLUMNS[1]),
        Constraint::Length(NODE_COLUMNS[2]),
        Constraint::Length(NODE_COLUMNS[3]),
        Constraint::Length(NODE_COLUMNS[4]),
        Constraint::Length(NODE_COLUMNS[5]),
        Constraint::Length(NODE_COLUMNS[6]),
    ];
    let title = format!("Nodes ({})", app.nodes.len());
    let table = Table::new(rows, widths)
        .header(header)
        .block(panel_block(&title, app.focus == Panel::Nodes));
    if app.nodes.is_empty() {
        frame.render_widget(
            Paragraph::new("waiting for heartbeats and status polls…")
                .block(panel_block(&title, app.focus == Panel::Nodes)),
            area,
        );
    } else {
        frame.render_widget(table, area);
    }
}

/// The data tier's members and roles, and its last changes of leader.
fn draw_tier(frame: &mut Frame, app: &App, area: Rect) {
    let Some(tier) = &app.tier else { return };
    let rows = tier.members.iter().map(|member| {
        let leads = member.role == "leader" || member.role == "master";
        let state_style = match member.state.as_str() {
            "running" | "streaming" | "up" => Style::new().green(),
            _ => Style::new().red().bold(),
        };
        Row::new(vec![
            Cell::from(member.kind),
            Cell::from(member.name.clone()),
            Cell::from(member.role.clone()).style(if leads {
                Style::new().bold()
            } else {
                Style::new()
            }),
            Cell::from(member.state.clone()).style(state_style),
            Cell::from(member.lag.map_or(String::new(), |lag| format!("{lag} B"))),
        ])
    });
    let header = Row::new(["KIND", "MEMBER", "ROLE", "STATE", "LAG"]).style(Style::new().bold());
    let widths = [
        Constraint::Length(9),
        Constraint::Min(16),
        Constraint::Length(13),
        Constraint::Length(10),
        Constraint::Length(10),
    ];
    let [table_area, notes] =
        Layout::vertical([Constraint::Min(2), Constraint::Length(3)]).areas(area);
    let leaders = ["postgres", "redis"]
        .iter()
        .filter(|kind| tier.members.iter().any(|m| m.kind == **kind))
        .map(|kind| format!("{kind}: {}", tier.leader(kind).unwrap_or("NO LEADER")))
        .collect::<Vec<_>>()
        .join(" · ");
    let block = Block::bordered()
        .borders(
            ratatui::widgets::Borders::TOP
                | ratatui::widgets::Borders::LEFT
                | ratatui::widgets::Borders::RIGHT,
        )
        .title(format!(" Data tier · {leaders} "));
    frame.render_widget(
        Table::new(rows, widths).header(header).block(block),
        table_area,
    );
    let mut lines = Vec::new();
    if !tier.errors.is_empty() {
        lines.push(Line::styled(tier.errors.join("; "), Style::new().red()));
    }
    lines.push(match app.tier_changes.front() {
        Some((at, change)) => Line::from(vec![
            Span::raw("last failover: "),
            Span::styled(change.clone(), Style::new().yellow().bold()),
            Span::raw(format!(" at {}", at.format("%H:%M:%S"))),
        ]),
        None => Line::raw("no failover seen"),
    });
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().borders(
            ratatui::widgets::Borders::BOTTOM
                | ratatui::widgets::Borders::LEFT
                | ratatui::widgets::Borders::RIGHT,
        )),
        notes,
    );
}

/// The events table's fixed columns: time, op, revision, node (the key takes the rest).
const EVENT_COLUMNS: [u16; 4] = [12, 3, 6, 7];
/// The key browser's fixed columns: version, revision, time left on a lease.
const KEY_COLUMNS: [u16; 3] = [4, 8, 7];

fn draw_events(frame: &mut Frame, app: &App, area: Rect) {
    let title = if app.paused {
        format!("Events · PAUSED ({} held, space resumes)", app.held.len())
    } else {
        "Events (newest first)".to_owned()
    };
    let visible = usize::from(area.height.saturating_sub(3));
    let first = app.selected_event.saturating_sub(visible.saturating_sub(1));
    let key_width = flexible_width(area, &EVENT_COLUMNS);
    let rows = app
        .events
        .iter()
        .enumerate()
        .skip(first)
        .take(visible)
        .map(|(index, event)| {
            // A delete made by a lease's end stands out from a client's delete.
            let (kind, style) = match (event.kind, event.reason) {
                (EventType::Put, _) => ("PUT", Style::new().green()),
                (EventType::Delete, None) => ("DEL", Style::new().red()),
                (EventType::Delete, Some(DeleteReason::Expired)) => {
                    ("EXP", Style::new().yellow().bold())
                }
                (EventType::Delete, Some(DeleteReason::Revoked)) => {
                    ("RVK", Style::new().yellow().bold())
                }
            };
            // The keys one revision changed together (a transaction, a prefix delete) are
            // drawn as one bracketed group, its time, revision and node once, at its top.
            let place = app.event_place(index);
            let (bracket, first) = match place {
                EventPlace::Alone => ("", true),
                EventPlace::First => ("┌ ", true),
                EventPlace::Inside => ("│ ", false),
                EventPlace::Last => ("└ ", false),
            };
            let key = truncate_middle(
                &event.key,
                key_width.saturating_sub(bracket.chars().count()),
            );
            let shown = |text: String| if first { text } else { String::new() };
            let row = Row::new(vec![
                Cell::from(shown(event.at.format("%H:%M:%S%.3f").to_string())),
                Cell::from(kind).style(style),
                Cell::from(format!("{bracket}{key}")),
                Cell::from(shown(event.revision.to_string())),
                Cell::from(shown(event.node.clone())),
            ]);
            if app.focus == Panel::Events && index == app.selected_event {
                row.style(Style::new().reversed())
            } else {
                row
            }
        });
    let [time, op, rev, node] = EVENT_COLUMNS;
    let table = Table::new(
        rows,
        [
            Constraint::Length(time),
            Constraint::Length(op),
            Constraint::Fill(1),
            Constraint::Length(rev),
            Constraint::Length(node),
        ],
    )
    .header(Row::new(["TIME", "OP", "KEY", "REV", "NODE"]).style(Style::new().bold()))
    .block(panel_block(&title, app.focus == Panel::Events));
    frame.render_widget(table, area);
}

fn draw_keys(frame: &mut Frame, app: &App, area: Rect) {
    // The cursor's position and every key under the prefix (count_only), not just the pages
    // fetched so far; "+" while more pages follow and the count is not known.
    let position = if app.keys.is_empty() {
        0
    } else {
        app.selected_key + 1
    };
    let total = match (app.keys_total, &app.keys_next) {
        (Some(total), _) => total.to_string(),
        (None, Some(_)) => format!("{}+", app.keys.len()),
        (None, None) => app.keys.len().to_string(),
    };
    let title = if app.prefix.is_empty() {
        format!("Keys {position}/{total}")
    } else {
        format!("Keys {}* {position}/{total}", app.prefix)
    };
    let block = panel_block(&title, app.focus == Panel::Keys);
    if let Some(err) = &app.keys_error {
        frame.render_widget(
            Paragraph::new(format!("cannot list keys: {err}"))
                .style(Style::new().red())
                .wrap(Wrap { trim: true })
                .block(block),
            area,
        );
        return;
    }
    let visible = usize::from(area.height.saturating_sub(3));
    let first = app.selected_key.saturating_sub(visible.saturating_sub(1));
    // The TTL column only while some key of the listing is leased: plain listings keep the
    // room for their keys.
    let leased = !app.key_deadlines.is_empty();
    let columns: &[u16] = if leased {
        &KEY_COLUMNS
    } else {
        &KEY_COLUMNS[..2]
    };
    let key_width = flexible_width(area, columns);
    let rows = app
        .keys
        .iter()
        .enumerate()
        .skip(first)
        .take(visible)
        .map(|(index, record)| {
            let ttl = match app.key_deadlines.get(&record.key) {
                None => Cell::from("-"),
                Some(deadline) => match deadline.checked_duration_since(app.now) {
                    Some(left) if !left.is_zero() => Cell::from(countdown(left)),
                    _ => Cell::from("expired").style(Style::new().yellow()),
                },
            };
            let mut cells = vec![
                Cell::from(truncate_middle(&record.key, key_width)),
                Cell::from(record.version.to_string()),
                Cell::from(record.mod_revision.to_string()),
            ];
            if leased {
                cells.push(ttl);
            }
            let row = Row::new(cells);
            if app.focus == Panel::Keys && index == app.selected_key {
                row.style(Style::new().reversed())
            } else {
                row
            }
        });
    let widths = std::iter::once(Constraint::Fill(1))
        .chain(columns.iter().map(|width| Constraint::Length(*width)));
    let headers = ["KEY", "VER", "REV", "TTL"];
    let table = Table::new(rows, widths)
        .header(Row::new(headers[..=columns.len()].iter().copied()).style(Style::new().bold()))
        .block(block);
    frame.render_widget(table, area);
}

/// Time left on a lease: tenths under ten seconds, whole seconds to an hour, then minutes.
fn countdown(left: Duration) -> String {
    let seconds = left.as_secs_f64();
    if seconds < 10.0 {
        format!("{seconds:.1}s")
    } else if seconds < 3600.0 {
        format!("{}s", left.as_secs())
    } else {
        format!("{}m", left.as_secs() / 60)
    }
}

fn draw_throughput(frame: &mut Frame, app: &App, area: Rect) {
    let total: Vec<u64> = app.throughput.total.iter().copied().collect();
    let per_node = app
        .throughput
        .per_node
        .iter()
        .map(|(node, series)| format!("{node} {}", series.iter().rev().nth(1).unwrap_or(&0)))
        .collect::<Vec<_>>()
        .join("  ");
    let title = format!(
        " Events/s, last {HISTORY_SECONDS}s: {} now · peak {} · per node: {} ",
        app.throughput.last_second(),
        total.iter().max().unwrap_or(&0),
        if per_node.is_empty() {
            "-".to_owned()
        } else {
            per_node
        }
    );
    // One bar per second would fill only 60 columns: each second gets its share of the width.
    let columns = usize::from(area.width.saturating_sub(2)).max(1);
    let stretched: Vec<u64> = (0..columns)
        .map(|column| total[column * total.len() / columns])
        .collect();
    let sparkline = Sparkline::default()
        .block(Block::bordered().title(title))
        .data(&stretched)
        .style(Style::new().cyan());
    frame.render_widget(sparkline, area);
}

fn draw_footer(frame: &mut Frame, app: &App, area: Rect) {
    let line = match &app.message {
        Some(Ok(message)) => Line::from(Span::styled(message.clone(), Style::new().green())),
        Some(Err(message)) => Line::from(Span::styled(
            format!("error: {message}"),
            Style::new().red(),
        )),
        None => Line::from(
            "Tab panel · / filter · ⏎ view · p put · d delete · space pause · ? help · q quit",
        ),
    };
    frame.render_widget(Paragraph::new(line).style(Style::new().dim()), area);
}

/// A centred box of at most `width` × `height` cells.
fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

fn draw_mode(frame: &mut Frame, app: &App, area: Rect) {
    match &app.mode {
        Mode::Normal => {}
        Mode::Help => {
            let lines = [
                ("Tab", "move between the nodes, events and keys panels"),
                ("↑ ↓  k j", "move the selection"),
                (
                    "/",
                    "filter the key browser by prefix (Enter applies, Esc cancels)",
                ),
                ("Enter ⏎", "show the selected key's value and metadata"),
                (
                    "PgUp PgDn",
                    "page the key browser; Home, End: its first and last key",
                ),
                ("p", "put a key (Tab switches field, Enter writes)"),
                ("d", "delete the selected key, after a y/n confirmation"),
                ("r", "reload the key browser"),
                ("space", "pause or resume the events panel"),
                ("?", "this help"),
                ("q  Ctrl-C", "quit"),
            ];
            let text: Vec<Line> = lines
                .iter()
                .map(|(key, what)| {
                    Line::from(vec![
                        Span::styled(format!("{key:>10}  "), Style::new().bold()),
                        Span::raw(*what),
                    ])
                })
                .chain([
                    Line::raw(""),
                    Line::raw("Nodes: stale after 3 s without a heartbeat, down after 10 s."),
                    Line::raw("Any key closes this help."),
                ])
                .collect();
            let box_area = centered(area, 76, 17);
            frame.render_widget(Clear, box_area);
            frame.render_widget(
                Paragraph::new(text).block(Block::bordered().title(" Help ")),
                box_area,
            );
        }
        Mode::Filter(text) => {
            let box_area = centered(area, 50, 3);
            frame.render_widget(Clear, box_area);
            frame.render_widget(
                Paragraph::new(format!("{text}▏"))
                    .block(Block::bordered().title(" Key prefix (Enter applies, Esc cancels) ")),
                box_area,
            );
        }
        Mode::Put { key, value, field } => {
            let marker = |this: PutField| if *field == this { "▸" } else { " " };
            let text = vec![
                Line::raw(format!("{} key:   {key}", marker(PutField::Key))),
                Line::raw(format!("{} value: {value}", marker(PutField::Value))),
                Line::raw(""),
                Line::raw("Tab switches field · Enter writes · Esc cancels").dim(),
            ];
            let box_area = centered(area, 60, 6);
            frame.render_widget(Clear, box_area);
            frame.render_widget(
                Paragraph::new(text).block(Block::bordered().title(" Put ")),
                box_area,
            );
        }
        Mode::ConfirmDelete(key) => {
            let box_area = centered(area, 50, 3);
            frame.render_widget(Clear, box_area);
            frame.render_widget(
                Paragraph::new(format!("Delete {key}? y / n"))
                    .style(Style::new().fg(Color::Red))
                    .block(Block::bordered().title(" Delete ")),
                box_area,
            );
        }
        Mode::Value { view, scroll } => {
            let cache = match view.cache_hit {
                Some(true) => "hit",
                Some(false) => "miss",
                None => "-",
            };
            let bytes = view.value.len();
            let mut end = bytes.min(VALUE_VIEW_BYTES);
            while !view.value.is_char_boundary(end) {
                end -= 1;
            }
            let shown = &view.value[..end];
            let n_lines = shown.lines().count().max(1);
            let size = if end < bytes {
                format!("{bytes} bytes, {n_lines} lines; CUT: the first {end} bytes shown")
            } else {
                format!("{bytes} bytes, {n_lines} lines")
            };
            let mut text = vec![
                Line::from(vec![
                    Span::styled("key       ", Style::new().bold()),
                    Span::raw(view.key.clone()),
                ]),
                Line::raw(format!(
                    "revision  {} (created at {}, version {})",
                    view.mod_revision, view.create_revision, view.version
                )),
                Line::raw(format!(
                    "node      {} · cache {cache}",
                    view.node.as_deref().unwrap_or("-")
                )),
                Line::raw(format!("size      {size}")),
                Line::raw(""),
            ];
            // The value's own lines, from the scroll position: a newline is a new line.
            text.extend(
                shown
                    .lines()
                    .skip(*scroll)
                    .map(|line| Line::raw(line.to_owned())),
            );
            let height = area.height.saturating_sub(4).max(8);
            let box_area = centered(area, area.width.saturating_sub(6).max(40), height);
            let title = if n_lines > usize::from(height.saturating_sub(7)) {
                format!(
                    " Value: line {} of {n_lines} (↑↓ PgUp PgDn scroll, any other key closes) ",
                    scroll + 1
                )
            } else {
                " Value (any key closes) ".to_owned()
            };
            frame.render_widget(Clear, box_area);
            frame.render_widget(
                Paragraph::new(text)
                    .wrap(Wrap { trim: false })
                    .block(Block::bordered().title(title)),
                box_area,
            );
        }
    }
}
