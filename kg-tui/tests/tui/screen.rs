//! The full screen, snapshotted on a `TestBackend` at 80×24 and 120×40 from a fixed state.

use std::time::Instant;

use crossterm::event::KeyCode;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use crate::fixtures::{key, populated};

fn render(app: &kg_tui::app::App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| kg_tui::ui::draw(frame, app)).unwrap();
    terminal.backend().to_string()
}

#[test]
fn dashboard_at_80x24() {
    let app = populated(Instant::now());
    insta::assert_snapshot!("dashboard_80x24", render(&app, 80, 24));
}

#[test]
fn dashboard_at_120x40() {
    let app = populated(Instant::now());
    insta::assert_snapshot!("dashboard_120x40", render(&app, 120, 40));
}

#[test]
fn help_overlay_at_80x24() {
    let mut app = populated(Instant::now());
    app.update(key(KeyCode::Char('?')));
    insta::assert_snapshot!("help_80x24", render(&app, 80, 24));
}

#[test]
fn paused_with_redis_down_at_80x24() {
    let mut app = populated(Instant::now());
    app.update(key(KeyCode::Char(' ')));
    app.update(kg_tui::app::Msg::Feed(kg_tui::app::FeedState::Down(
        "redis".to_owned(),
        "connection refused".to_owned(),
    )));
    insta::assert_snapshot!("paused_redis_down_80x24", render(&app, 80, 24));
}
