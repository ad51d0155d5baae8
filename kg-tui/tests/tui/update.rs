//! `App::update`: heartbeat ageing, event ordering and limits, pause, the filter, the put and
//! delete forms, read-only mode and quitting.

use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use kg_api::{DependencyState, EventType, NodeHealth};
use kg_tui::app::{
    App, Command, EventPlace, FeedState, KeysPage, Mode, Msg, NodeState, Panel, ValueView,
    KEY_PAGE, KEY_PAGE_STEP, MAX_EVENTS,
};

use crate::fixtures::{
    event, fetch_generation, first_page, heartbeat, key, populated, record, status, typed,
};

fn empty(base: Instant, read_only: bool) -> App {
    App::new(
        vec!["http://127.0.0.1:8000".to_owned()],
        read_only,
        FeedState::Connecting("redis".to_owned()),
        base,
    )
}

#[test]
fn heartbeats_age_into_stale_then_down() {
    let base = Instant::now();
    let mut app = empty(base, false);
    app.update(Msg::Heartbeat(
        heartbeat("n1", 8001, NodeHealth::Ok, 1),
        base,
    ));
    let state_at = |app: &mut App, seconds: u64| {
        app.update(Msg::Tick(base + Duration::from_millis(seconds)));
        app.nodes["n1"].state(app.now)
    };
    assert_eq!(state_at(&mut app, 2_900), NodeState::Ok);
    assert_eq!(state_at(&mut app, 3_100), NodeState::Stale);
    assert_eq!(state_at(&mut app, 9_900), NodeState::Stale);
    assert_eq!(state_at(&mut app, 10_100), NodeState::Down);

    // A fresh heartbeat brings it back; a degraded one says so.
    app.update(Msg::Heartbeat(
        heartbeat("n1", 8001, NodeHealth::Degraded, 2),
        base + Duration::from_secs(11),
    ));
    assert_eq!(state_at(&mut app, 11_500), NodeState::Degraded);
    assert_eq!(app.nodes["n1"].revision(), Some(2));
}

#[test]
fn polls_name_nodes_and_a_failed_poll_marks_the_node_down() {
    let base = Instant::now();
    let mut app = empty(base, false);
    let endpoint = "http://127.0.0.1:8001/".to_owned();
    app.update(Msg::Polled {
        endpoint: endpoint.clone(),
        result: Err("connection refused".to_owned()),
    });
    // Unknown so far: shown under its endpoint.
    assert_eq!(app.nodes[&endpoint].state(base), NodeState::Down);

    app.update(Msg::Polled {
        endpoint: endpoint.clone(),
        result: Ok((
            status("n1", 8001, DependencyState::Ok, 7),
            Duration::from_millis(1),
        )),
    });
    assert!(!app.nodes.contains_key(&endpoint), "renamed to its node id");
    assert_eq!(app.nodes["n1"].state(base), NodeState::Ok);

    app.update(Msg::Polled {
        endpoint,
        result: Err("timed out".to_owned()),
    });
    assert_eq!(app.nodes["n1"].state(base), NodeState::Down);
    assert_eq!(app.nodes.len(), 1);
}

#[test]
fn events_are_newest_first_by_revision_without_duplicates_and_bounded() {
    let base = Instant::now();
    let mut app = empty(base, false);
    for revision in [3, 1, 2, 5, 4, 5] {
        app.update(Msg::Change(
            event(EventType::Put, "k", revision, "n1"),
            base,
        ));
    }
    let revisions: Vec<i64> = app.events.iter().map(|e| e.revision).collect();
    assert_eq!(revisions, [5, 4, 3, 2, 1]);

    for revision in 6..=(MAX_EVENTS as i64 + 10) {
        app.update(Msg::Change(
            event(EventType::Put, "k", revision, "n1"),
            base,
        ));
    }
    assert_eq!(app.events.len(), MAX_EVENTS);
    assert_eq!(app.events[0].revision, MAX_EVENTS as i64 + 10);
}

#[test]
fn the_events_of_one_revision_stay_together_in_key_order() {
    let base = Instant::now();
    let mut app = empty(base, false);
    // A transaction at revision 7 that wrote three keys, its events arriving out of order and
    // one of them twice (a replay after a reconnect), around single writes.
    for (key, revision) in [("z", 6), ("b", 7), ("c", 7), ("a", 7), ("b", 7), ("y", 8)] {
        app.update(Msg::Change(
            event(EventType::Put, key, revision, "n1"),
            base,
        ));
    }
    let seen: Vec<(i64, &str)> = app
        .events
        .iter()
        .map(|e| (e.revision, e.key.as_str()))
        .collect();
    assert_eq!(seen, [(8, "y"), (7, "a"), (7, "b"), (7, "c"), (6, "z")]);
    let places: Vec<EventPlace> = (0..app.events.len()).map(|i| app.event_place(i)).collect();
    assert_eq!(
        places,
        [
            EventPlace::Alone,
            EventPlace::First,
            EventPlace::Inside,
            EventPlace::Last,
            EventPlace::Alone
        ]
    );
}

#[test]
fn pause_holds_events_and_resume_shows_them_in_order() {
    let base = Instant::now();
    let mut app = empty(base, false);
    app.update(Msg::Change(event(EventType::Put, "a", 1, "n1"), base));
    app.update(key(KeyCode::Char(' ')));
    assert!(app.paused);
    app.update(Msg::Change(event(EventType::Put, "b", 3, "n1"), base));
    app.update(Msg::Change(event(EventType::Delete, "a", 2, "n2"), base));
    assert_eq!(app.events.len(), 1, "nothing moves while paused");
    assert_eq!(app.held.len(), 2);
    // Throughput still counts them.
    app.update(Msg::Tick(base + Duration::from_millis(900)));
    assert_eq!(app.throughput.last_second(), 3);

    app.update(key(KeyCode::Char(' ')));
    assert!(!app.paused);
    let revisions: Vec<i64> = app.events.iter().map(|e| e.revision).collect();
    assert_eq!(revisions, [3, 2, 1]);
    assert!(app.held.is_empty());
}

/// The recent history fetched at start fills the event list, in revision order among the live
/// events, and is not counted as throughput: it did not happen now.
#[test]
fn recent_history_fills_the_event_list_without_counting_as_throughput() {
    let base = Instant::now();
    let mut app = empty(base, false);
    app.update(Msg::Tick(base));
    app.update(Msg::Change(event(EventType::Put, "live", 5, "n1"), base));
    for revision in [2, 3, 4] {
        app.update(Msg::Recent(event(EventType::Put, "old", revision, "n1")));
    }
    // The same revision again, from the live feed: not listed twice.
    app.update(Msg::Recent(event(EventType::Put, "live", 5, "n1")));
    let revisions: Vec<i64> = app.events.iter().map(|e| e.revision).collect();
    assert_eq!(revisions, [5, 4, 3, 2]);
    app.update(Msg::Tick(base + Duration::from_millis(900)));
    assert_eq!(app.throughput.last_second(), 1, "only the live event");
}

#[test]
fn throughput_keeps_a_minute_per_second_overall_and_per_node() {
    let base = Instant::now();
    let mut app = empty(base, false);
    app.update(Msg::Tick(base));
    for i in 0..5 {
        app.update(Msg::Change(
            event(EventType::Put, "k", i + 1, if i < 3 { "n1" } else { "n2" }),
            base + Duration::from_millis(100),
        ));
    }
    app.update(Msg::Tick(base + Duration::from_millis(1_050)));
    assert_eq!(app.throughput.last_second(), 5);
    assert_eq!(app.throughput.per_node["n1"].iter().sum::<u64>(), 3);
    assert_eq!(app.throughput.per_node["n2"].iter().sum::<u64>(), 2);
    assert_eq!(app.throughput.total.len(), 60);
    // A minute later the burst has left the window.
    app.update(Msg::Tick(base + Duration::from_secs(62)));
    assert_eq!(app.throughput.total.iter().sum::<u64>(), 0);
}

#[test]
fn the_filter_sets_the_prefix_and_fetches_keys() {
    let base = Instant::now();
    let mut app = populated(base);
    app.update(key(KeyCode::Char('/')));
    typed(&mut app, "usr");
    app.update(key(KeyCode::Backspace));
    app.update(key(KeyCode::Backspace));
    typed(&mut app, "ser/");
    assert_eq!(app.mode, Mode::Filter("user/".to_owned()));
    let commands = app.update(key(KeyCode::Enter));
    assert!(
        matches!(&commands[..], [Command::FetchKeys { prefix, after: None, .. }] if prefix == "user/"),
        "{commands:?}"
    );
    assert_eq!(app.prefix, "user/");
    assert_eq!(app.focus, Panel::Keys);
    assert_eq!(app.mode, Mode::Normal);

    // Esc leaves the prefix as it was.
    app.update(key(KeyCode::Char('/')));
    typed(&mut app, "x");
    assert!(app.update(key(KeyCode::Esc)).is_empty());
    assert_eq!(app.prefix, "user/");
}

#[test]
fn changes_under_the_prefix_refresh_the_key_browser_at_most_once_a_second() {
    let base = Instant::now();
    let mut app = empty(base, false);
    app.update(Msg::Tick(base));
    app.update(Msg::Change(event(EventType::Put, "k", 1, "n1"), base));
    let first = app.update(Msg::Tick(base + Duration::from_millis(250)));
    assert!(
        matches!(&first[..], [Command::FetchKeys { prefix, after: None, .. }] if prefix.is_empty()),
        "{first:?}"
    );
    app.update(Msg::Change(event(EventType::Put, "k", 2, "n1"), base));
    assert!(app
        .update(Msg::Tick(base + Duration::from_millis(500)))
        .is_empty());
    assert!(matches!(
        &app.update(Msg::Tick(base + Duration::from_millis(1_300)))[..],
        [Command::FetchKeys { after: None, .. }]
    ));
    assert!(app
        .update(Msg::Tick(base + Duration::from_millis(2_600)))
        .is_empty());
}

#[test]
fn enter_views_the_selected_key_and_put_and_delete_go_through_forms() {
    let base = Instant::now();
    let mut app = populated(base);
    app.update(key(KeyCode::Tab)); // events -> keys
    assert_eq!(app.focus, Panel::Keys);
    app.update(key(KeyCode::Down));
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        [Command::FetchValue {
            key: "user/1".to_owned()
        }]
    );

    // p on a selected key prefills it and starts in the value field.
    app.update(key(KeyCode::Char('p')));
    typed(&mut app, "new");
    assert_eq!(
        app.update(key(KeyCode::Enter)),
        [Command::Put {
            key: "user/1".to_owned(),
            value: "new".to_owned()
        }]
    );

    // An empty key is refused in the form.
    app.focus = Panel::Nodes;
    app.update(key(KeyCode::Char('p')));
    app.update(key(KeyCode::Tab));
    typed(&mut app, "v");
    assert!(app.update(key(KeyCode::Enter)).is_empty());
    assert!(matches!(app.message, Some(Err(_))));
    assert!(matches!(app.mode, Mode::Put { .. }));
    app.update(key(KeyCode::Esc));

    // d asks first: n keeps the key, y deletes it.
    app.focus = Panel::Keys;
    app.update(key(KeyCode::Char('d')));
    assert_eq!(app.mode, Mode::ConfirmDelete("user/1".to_owned()));
    assert!(app.update(key(KeyCode::Char('n'))).is_empty());
    app.update(key(KeyCode::Char('d')));
    assert_eq!(
        app.update(key(KeyCode::Char('y'))),
        [Command::Delete {
            key: "user/1".to_owned()
        }]
    );

    // The outcome shows on the status line, refreshes the browser, and clears after 5 s.
    let commands = app.update(Msg::Done(Ok("deleted user/1 at revision 7".to_owned())));
    assert!(matches!(commands[..], [Command::FetchKeys { .. }]));
    app.update(Msg::Keys(Ok(first_page(
        fetch_generation(&commands),
        vec![record("user/3", 5)],
    ))));
    assert_eq!(app.selected_key, 0, "the selection stays inside the list");
    app.update(Msg::Tick(base + Duration::from_secs(18)));
    assert_eq!(app.message, None);
}

#[test]
fn read_only_disables_put_and_delete() {
    let base = Instant::now();
    let mut app = empty(base, true);
    app.update(Msg::Keys(Ok(first_page(0, vec![record("k", 1)]))));
    app.focus = Panel::Keys;
    assert!(app.update(key(KeyCode::Char('p'))).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    assert!(app.update(key(KeyCode::Char('d'))).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    assert!(matches!(&app.message, Some(Err(m)) if m.contains("read-only")));
}

#[test]
fn help_opens_and_any_key_closes_it_and_q_or_ctrl_c_quits() {
    let base = Instant::now();
    let mut app = empty(base, false);
    app.update(key(KeyCode::Char('?')));
    assert_eq!(app.mode, Mode::Help);
    assert!(
        app.update(key(KeyCode::Char('q'))).is_empty(),
        "closes help only"
    );
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(app.update(key(KeyCode::Char('q'))), [Command::Quit]);
    let ctrl_c = Msg::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    app.update(key(KeyCode::Char('/')));
    assert_eq!(app.update(ctrl_c), [Command::Quit], "even while typing");
}

/// `count` keys named `k/00000`, `k/00001`, ... from `from`.
fn keys_from(from: usize, count: usize) -> Vec<kg_api::KeyRecord> {
    (from..from + count)
        .map(|i| record(&format!("k/{i:05}"), i64::try_from(i).unwrap() + 1))
        .collect()
}

/// Answers the key fetch among `commands` with the next page of a listing of `total` keys.
fn answer(app: &mut App, commands: &[Command], total: usize) -> Vec<Command> {
    let Some(Command::FetchKeys {
        after, generation, ..
    }) = commands
        .iter()
        .find(|c| matches!(c, Command::FetchKeys { .. }))
    else {
        panic!("no key fetch in {commands:?}")
    };
    let from = after
        .as_deref()
        .map_or(0, |key| key[2..].parse::<usize>().unwrap() + 1);
    let page = KEY_PAGE as usize;
    let keys = keys_from(from, page.min(total - from));
    let next = (from + page < total).then(|| keys.last().unwrap().key.clone());
    app.update(Msg::Keys(Ok(KeysPage {
        generation: *generation,
        after: after.clone(),
        keys,
        next,
        total: after.is_none().then_some(total as u64),
    })))
}

#[test]
fn the_key_browser_pages_through_every_key_as_the_cursor_moves() {
    let base = Instant::now();
    let mut app = empty(base, false);
    app.focus = Panel::Keys;
    let total = 1_234;
    let first = app.start();
    assert!(
        answer(&mut app, &first, total).is_empty(),
        "one page is enough for now"
    );
    assert_eq!((app.keys.len(), app.keys_total), (500, Some(1_234)));

    // Near the end of what is loaded, the next page is asked for, and only once.
    for _ in 0..490 {
        let commands = app.update(key(KeyCode::PageDown));
        if !commands.is_empty() {
            assert!(
                matches!(&commands[..], [Command::FetchKeys { after: Some(after), .. }] if after == "k/00499"),
                "{commands:?}"
            );
            assert!(
                app.update(key(KeyCode::PageDown)).is_empty(),
                "one fetch in flight"
            );
            answer(&mut app, &commands, total);
            break;
        }
    }
    assert_eq!(app.keys.len(), 1_000);
    assert!(app.selected_key >= 500 - KEY_PAGE_STEP);

    // End fetches what is left and lands on the very last key; Home goes back.
    let mut commands = app.update(key(KeyCode::End));
    while !commands.is_empty() {
        commands = answer(&mut app, &commands, total);
    }
    assert_eq!(app.keys.len(), total);
    assert_eq!(app.selected_key, total - 1);
    assert_eq!(app.keys[app.selected_key].key, "k/01233");
    assert!(app.update(key(KeyCode::Home)).is_empty());
    assert_eq!(app.selected_key, 0);
    app.update(key(KeyCode::PageDown));
    assert_eq!(app.selected_key, KEY_PAGE_STEP);
    app.update(key(KeyCode::PageUp));
    assert_eq!(app.selected_key, 0);
}

#[test]
fn a_page_of_an_older_listing_is_dropped() {
    let base = Instant::now();
    let mut app = empty(base, false);
    let old = app.start();
    let new = app.update(Msg::Done(Ok("put k".to_owned())));
    assert_ne!(fetch_generation(&old), fetch_generation(&new));
    app.update(Msg::Keys(Ok(first_page(
        fetch_generation(&old),
        vec![record("old", 1)],
    ))));
    assert!(app.keys.is_empty(), "the older listing's page is not shown");
    app.update(Msg::Keys(Ok(first_page(
        fetch_generation(&new),
        vec![record("new", 2)],
    ))));
    assert_eq!(app.keys[0].key, "new");
}

#[test]
fn the_value_view_scrolls_a_long_value_and_other_keys_close_it() {
    let base = Instant::now();
    let mut app = empty(base, false);
    let value = (1..=40)
        .map(|i| format!("line {i}"))
        .collect::<Vec<_>>()
        .join("\n");
    app.update(Msg::Value(Ok(ValueView {
        key: "k".to_owned(),
        value,
        mod_revision: 3,
        create_revision: 1,
        version: 2,
        node: None,
        cache_hit: None,
    })));
    app.update(key(KeyCode::Down));
    app.update(key(KeyCode::PageDown));
    assert!(
        matches!(app.mode, Mode::Value { scroll: 11, .. }),
        "{:?}",
        app.mode
    );
    for _ in 0..10 {
        app.update(key(KeyCode::PageDown));
    }
    assert!(
        matches!(app.mode, Mode::Value { scroll: 39, .. }),
        "stops at the last line"
    );
    app.update(key(KeyCode::Home));
    assert!(matches!(app.mode, Mode::Value { scroll: 0, .. }));
    app.update(key(KeyCode::Char('x')));
    assert_eq!(app.mode, Mode::Normal);
}

#[test]
fn now_counts_the_events_of_the_last_second_not_the_last_bucket() {
    let base = Instant::now();
    let mut app = empty(base, false);
    app.update(Msg::Tick(base));
    // 30 writes just before a bucket boundary: half a second later "now" still shows them.
    for revision in 1..=30 {
        let at = base + Duration::from_millis(900 + revision);
        app.update(Msg::Change(
            event(EventType::Put, "k", i64::try_from(revision).unwrap(), "n1"),
            at,
        ));
    }
    app.update(Msg::Tick(base + Duration::from_millis(1_400)));
    assert_eq!(app.throughput.last_second(), 30);
    app.update(Msg::Tick(base + Duration::from_millis(2_000)));
    assert_eq!(app.throughput.last_second(), 0);
}
