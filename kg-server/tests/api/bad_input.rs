//! Every class of bad input gets its documented 4xx and a `{"detail": ...}` that says why;
//! none causes a 5xx, and none loses data.

use kg_api::Precondition;

use kg_testkit::hostile as hostile_cases;
use kg_testkit::{spawn_app, Backend};

on_both_backends!(bad_input_gets_documented_4xx_with_detail);

async fn bad_input_gets_documented_4xx_with_detail(backend: Backend) {
    let app = spawn_app(backend).await;
    app.client
        .put("keep", "safe", Precondition::None)
        .await
        .unwrap();
    for case in hostile_cases::cases() {
        hostile_cases::check(&app.http, &app.base, case).await;
    }
    hostile_cases::check_huge_body_is_refused_before_it_is_read(app.address).await;

    // A value at exactly the limit, with every character needing escapes, is accepted.
    let largest = "\u{1}".repeat(1024 * 1024);
    app.client
        .put("largest", &largest, Precondition::None)
        .await
        .unwrap();
    assert_eq!(
        app.client.get("largest").await.unwrap().value.len(),
        1024 * 1024
    );
    // Values may hold anything UTF-8, including NUL.
    app.client
        .put("nul", "a\u{0}b", Precondition::None)
        .await
        .unwrap();
    assert_eq!(app.client.get("nul").await.unwrap().value, "a\u{0}b");

    // Nothing was lost, and no request above was answered with a 5xx.
    assert_eq!(app.client.get("keep").await.unwrap().value, "safe");
    let status = app.client.status().await.unwrap();
    assert_eq!(status.requests.server_error, 0);
}
