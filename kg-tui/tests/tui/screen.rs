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

fn check_truncate(text: &str, width: usize, expected: &str) {
    assert_eq!(
        kg_tui::ui::truncate_middle(text, width),
        expected,
        "{text:?} in {width}"
    );
}

#[test]
fn long_keys_are_cut_in_the_middle_with_an_ellipsis() {
    check_truncate("user/1", 10, "user/1");
    check_truncate("drill/652396e3/000", 12, "drill/…3/000");
    check_truncate("drill/652396e3/000", 18, "drill/652396e3/000");
    check_truncate("abcdef", 1, "…");
    check_truncate("abcdef", 0, "");
    // Wide characters count two columns.
    check_truncate("日本語のキー/値", 7, "日…/値");
}
