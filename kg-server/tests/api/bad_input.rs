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

/// A body over the limit is refused with the limit named, whatever its size: one byte over
/// (from its Content-Length, before it is read), far over, or sent without a length (caught
/// while it is read). Here values may be 1,000 bytes, so bodies 6,000 + 64 KiB. The app is
/// driven without a socket: a node that answers before it has read a whole upload closes the
/// connection under the client, which then may see a reset instead of the answer, and which
/// of the two a client sees is a race, not this test's subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_names_the_limit_whatever_its_size() {
    use axum::body::Body;
    use clap::Parser as _;
    use tower::ServiceExt as _;
    let dir = tempfile::tempdir().unwrap();
    let config = kg_server::Config::try_parse_from([
        "kg-server".to_owned(),
        format!(
            "--database-url=sqlite://{}",
            dir.path().join("kg.db").display()
        ),
        "--max-value-bytes=1000".to_owned(),
    ])
    .unwrap();
    let app = kg_server::http::app(kg_server::AppState::build(&config).await.unwrap());
    let limit = 1000 * 6 + 64 * 1024;
    let wanted =
        format!(r#"{{"detail":"request body is too large: a body is at most {limit} bytes"}}"#);
    let padded = |size: usize| {
        let mut body = br#"{"data":{"key":"k","value":"v"}}"#.to_vec();
        body.resize(size, b' ');
        body
    };
    let put = |body: Body, length: Option<usize>| {
        let mut request =
            axum::http::Request::put("/api/key").header("content-type", "application/json");
        if let Some(length) = length {
            request = request.header("content-length", length);
        }
        request.body(body).unwrap()
    };
    let answer = |request: axum::http::Request<Body>| {
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    for size in [limit + 1, 20 * limit] {
        assert_eq!(
            answer(put(Body::from(padded(size)), Some(size))).await,
            (413, wanted.clone()),
            "{size} bytes, declared"
        );
    }
    // No Content-Length: the body streams in chunks, and the limit trips while it is read.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = padded(limit + 4096)
        .chunks(1024)
        .map(|chunk| Ok(chunk.to_vec()))
        .collect();
    let streamed = Body::from_stream(futures::stream::iter(chunks));
    assert_eq!(answer(put(streamed, None)).await, (413, wanted));
}
