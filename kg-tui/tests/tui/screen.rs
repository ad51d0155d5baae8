//! The full screen, snapshotted on a `TestBackend` at 80×24 and 120×40 from a fixed state.

use std::time::{Duration, Instant};

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

/// The data-tier panel, fed three polls: pg1 leads, nobody does (the failover), pg2 leads.
/// Each change of leader is logged as it happens, and the panel shows the newest.
#[test]
fn a_postgres_failover_shows_in_the_data_tier_panel_at_120x40() {
    use chrono::TimeZone as _;
    use kg_tui::app::Msg;
    use kg_tui::tier::{parse_patroni_cluster, parse_sentinel, TierSnapshot};

    let cluster = |leader: Option<&str>| {
        let members: Vec<String> = ["pg1", "pg2", "pg3"]
            .iter()
            .map(|name| {
                let role = if Some(*name) == leader {
                    "leader"
                } else {
                    "replica"
                };
                format!(r#"{{"name": "{name}", "role": "{role}", "state": "running", "lag": 0}}"#)
            })
            .collect();
        format!(r#"{{"members": [{}]}}"#, members.join(", "))
    };
    let strings = |fields: &[&str]| fields.iter().map(|f| (*f).to_owned()).collect::<Vec<_>>();
    let redis = parse_sentinel(
        &strings(&["ip", "127.0.0.1", "port", "6389", "flags", "master"]),
        &[strings(&[
            "ip",
            "127.0.0.1",
            "port",
            "6390",
            "flags",
            "slave",
        ])],
    );
    let snapshot = |leader| TierSnapshot {
        members: parse_patroni_cluster(&cluster(leader))
            .unwrap()
            .into_iter()
            .chain(redis.clone())
            .collect(),
        errors: Vec::new(),
    };
    let at = |second| {
        chrono::Local
            .with_ymd_and_hms(2026, 12, 1, 4, 33, second)
            .unwrap()
    };

    let mut app = populated(Instant::now());
    app.update(Msg::Tier(snapshot(Some("pg1")), at(40)));
    assert!(app.tier_changes.is_empty(), "a first leader is no failover");
    app.update(Msg::Tier(snapshot(None), at(42)));
    app.update(Msg::Tier(snapshot(Some("pg2")), at(50)));
    let changes: Vec<&str> = app.tier_changes.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(
        changes,
        [
            "PostgreSQL leader pg1 → pg2",
            "PostgreSQL: no leader (was pg1)"
        ]
    );
    insta::assert_snapshot!("data_tier_failover_120x40", render(&app, 120, 40));
}

/// The row of `key` in the key browser, as drawn.
fn key_row(screen: &str, key: &str) -> String {
    screen
        .lines()
        .find_map(|line| line.split("││").nth(1).filter(|keys| keys.contains(key)))
        .unwrap_or_else(|| panic!("{key} not on screen:\n{screen}"))
        .to_owned()
}

#[test]
fn a_leased_key_counts_down_between_fetches_and_then_says_expired() {
    let base = Instant::now();
    let mut app = populated(base);
    assert!(key_row(&render(&app, 120, 40), "user/4").contains(" 30s "));
    app.update(kg_tui::app::Msg::Tick(base + Duration::from_millis(36_500)));
    assert!(key_row(&render(&app, 120, 40), "user/4").contains(" 5.5s "));
    app.update(kg_tui::app::Msg::Tick(base + Duration::from_secs(43)));
    let row = key_row(&render(&app, 120, 40), "user/4");
    assert!(row.contains(" expired"), "{row}");
    assert!(key_row(&render(&app, 120, 40), "user/1").contains(" - "));
}

#[test]
fn a_transaction_is_drawn_as_one_revision_with_its_keys() {
    use kg_api::EventType;
    let base = Instant::now();
    let mut app = populated(base);
    for (kind, key) in [
        (EventType::Put, "acct/b"),
        (EventType::Put, "acct/a"),
        (EventType::Delete, "old/1"),
    ] {
        app.update(kg_tui::app::Msg::Change(
            crate::fixtures::event(kind, key, 90, "n3"),
            base,
        ));
    }
    let screen = render(&app, 120, 40);
    let row = |key: &str| {
        screen
            .lines()
            .find(|line| line.contains(key))
            .unwrap_or_else(|| panic!("{key} not on screen:\n{screen}"))
            .to_owned()
    };
    let (first, inside, last) = (row("┌ acct/a"), row("│ acct/b"), row("└ old/1"));
    assert!(first.contains(" 90 ") && first.contains("n3"), "{first}");
    for other in [&inside, &last] {
        assert!(!other.contains(" 90 ") && !other.contains("n3"), "{other}");
    }
    assert!(last.contains("DEL"), "{last}");
    assert_eq!(
        screen.matches("12:00:22.500").count(),
        1,
        "the revision's time is drawn once:\n{screen}"
    );
}

/// At 80×24 the address column is 14 wide: long addresses are cut in the middle, so that each
/// keeps its port and the nodes stay apart (a cut at the end left three `keygrid-backen`).
/// An endpoint shown for a node that never answered drops its `http://` and slash first.
#[test]
fn node_addresses_keep_their_ports_at_80x24() {
    let base = Instant::now();
    let mut app = kg_tui::app::App::new(
        vec!["http://127.0.0.1:8000".to_owned()],
        false,
        kg_tui::app::FeedState::Connected("watch".to_owned()),
        base,
    );
    for (node, port) in [("n1", 8001), ("n2", 8002)] {
        let mut status = crate::fixtures::status(node, port, kg_api::DependencyState::Ok, 6);
        status.listen = format!("keygrid-backend-{port}.cluster.internal:{port}");
        app.update(kg_tui::app::Msg::Polled {
            endpoint: format!("http://keygrid-backend-{port}.cluster.internal:{port}/"),
            result: Ok((status, Duration::from_millis(1))),
        });
    }
    app.update(kg_tui::app::Msg::Polled {
        endpoint: "http://127.0.0.1:8003/".to_owned(),
        result: Err("connection refused".to_owned()),
    });
    let screen = render(&app, 80, 24);
    let row = |name: &str| {
        screen
            .lines()
            .find(|line| line.starts_with(&format!("\"│{name}")))
            .unwrap_or_else(|| panic!("no row {name}:\n{screen}"))
            .to_owned()
    };
    assert!(row("n1 ").contains(" keygrid…l:8001 "), "{screen}");
    assert!(row("n2 ").contains(" keygrid…l:8002 "), "{screen}");
    // Known only by its endpoint, as its name too: the port shows in both columns.
    assert!(row("127.…8003 ").contains(" 127.0.0.1:8003 "), "{screen}");
}
