//! Drawing: `draw(frame, &app)` renders the whole screen from the state and does nothing else.
//! Every state reads without colour too: statuses are words, the focused panel is marked.

use std::time::Duration;

use kg_api::{DependencyState, EventType};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Sparkline, Table, Wrap};
use ratatui::Frame;

use crate::app::{App, FeedState, Mode, NodeState, Panel, PutField, HISTORY_SECONDS};

pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    let node_rows = u16::try_from(app.nodes.len().clamp(1, 8)).unwrap_or(8);
    let [header, nodes, middle, throughput, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(node_rows + 3),
        Constraint::Min(6),
        Constraint::Length(4),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, app, header);
    draw_nodes(frame, app, nodes);
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
        Span::raw(format!(" · {}", app.endpoints.join(", "))),
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

fn draw_nodes(frame: &mut Frame, app: &App, area: Rect) {
    let rows = app.nodes.values().enumerate().map(|(index, node)| {
        let state = node.state(app.now);
        let (latency, database, cache) = match node.poll.as_ref().map(|poll| &poll.result) {
            Some(Ok(status)) => (
                format!("{:.1}ms", status.latency.as_secs_f64() * 1000.0),
                dependency(status.database).to_owned(),
                dependency(status.cache).to_owned(),
            ),
            Some(Err(_)) => ("error".to_owned(), "-".to_owned(), "-".to_owned()),
            None => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
        };
        let row = Row::new(vec![
            Cell::from(node.id.clone()),
            Cell::from(node.address.clone()),
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
    let widths = [
        Constraint::Length(10),
        Constraint::Min(15),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(8),
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

fn draw_events(frame: &mut Frame, app: &App, area: Rect) {
    let title = if app.paused {
        format!("Events · PAUSED ({} held, space resumes)", app.held.len())
    } else {
        "Events (newest first)".to_owned()
    };
    let visible = usize::from(area.height.saturating_sub(3));
    let first = app.selected_event.saturating_sub(visible.saturating_sub(1));
    let rows = app
        .events
        .iter()
        .enumerate()
        .skip(first)
        .take(visible)
        .map(|(index, event)| {
            let (kind, style) = match event.kind {
                EventType::Put => ("PUT", Style::new().green()),
                EventType::Delete => ("DEL", Style::new().red()),
            };
            let row = Row::new(vec![
                Cell::from(event.at.format("%H:%M:%S%.3f").to_string()),
                Cell::from(kind).style(style),
                Cell::from(event.key.clone()),
                Cell::from(event.revision.to_string()),
                Cell::from(event.node.clone()),
            ]);
            if app.focus == Panel::Events && index == app.selected_event {
                row.style(Style::new().reversed())
            } else {
                row
            }
        });
    let table = Table::new(
        rows,
        [
            Constraint::Length(12),
            Constraint::Length(3),
            Constraint::Min(6),
            Constraint::Length(6),
            Constraint::Length(7),
        ],
    )
    .header(Row::new(["TIME", "OP", "KEY", "REV", "NODE"]).style(Style::new().bold()))
    .block(panel_block(&title, app.focus == Panel::Events));
    frame.render_widget(table, area);
}

fn draw_keys(frame: &mut Frame, app: &App, area: Rect) {
    let title = if app.prefix.is_empty() {
        format!("Keys ({})", app.keys.len())
    } else {
        format!("Keys {}* ({})", app.prefix, app.keys.len())
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
    let rows = app
        .keys
        .iter()
        .enumerate()
        .skip(first)
        .take(visible)
        .map(|(index, record)| {
            let row = Row::new(vec![
                Cell::from(record.key.clone()),
                Cell::from(record.version.to_string()),
                Cell::from(record.mod_revision.to_string()),
            ]);
            if app.focus == Panel::Keys && index == app.selected_key {
                row.style(Style::new().reversed())
            } else {
                row
            }
        });
    let table = Table::new(
        rows,
        [
            Constraint::Min(6),
            Constraint::Length(4),
            Constraint::Length(8),
        ],
    )
    .header(Row::new(["KEY", "VER", "REV"]).style(Style::new().bold()))
    .block(block);
    frame.render_widget(table, area);
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
    let sparkline = Sparkline::default()
        .block(Block::bordered().title(title))
        .data(&total)
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
            let box_area = centered(area, 76, 16);
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
        Mode::Value(view) => {
            let cache = match view.cache_hit {
                Some(true) => "hit",
                Some(false) => "miss",
                None => "-",
            };
            let text = vec![
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
                Line::raw(""),
                Line::raw(view.value.clone()),
            ];
            let box_area = centered(area, 70, 12);
            frame.render_widget(Clear, box_area);
            frame.render_widget(
                Paragraph::new(text)
                    .wrap(Wrap { trim: false })
                    .block(Block::bordered().title(" Value (any key closes) ")),
                box_area,
            );
        }
    }
}
