//! Bearer tokens: with `--auth-tokens-file`, every /api/* route but /api/health needs a
//! token; none or an unknown one is 401, a read token on a write is 403 and changes nothing.

use kg_api::{Client, ClientOptions, Precondition};
use reqwest::StatusCode;
use serde_json::Value;

use kg_testkit::{spawn_app_with, AppOptions, Backend, TestApp};

const READER: &str = "r-3f9c2a";
const WRITER: &str = "w-81be07";

async fn node_with_tokens() -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(
        &file,
        format!("# test tokens\n{READER} read\n{WRITER} write # the writer\n"),
    )
    .unwrap();
    let options = AppOptions {
        extra_args: vec![format!("--auth-tokens-file={}", file.display())],
        ..AppOptions::default()
    };
    (spawn_app_with(Backend::Sqlite, options).await, dir)
}

/// Status, detail and WWW-Authenticate of one request.
async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    authorization: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, Option<String>, Option<String>) {
    let mut request = app.http.request(method, app.url(path));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let detail = response
        .json::<Value>()
        .await
        .ok()
        .and_then(|body| body["detail"].as_str().map(str::to_owned));
    (status, detail, challenge)
}

const PUT_A: &str = r#"{"data":{"key":"a","value":"1"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_the_api_by_role() {
    let (app, _dir) = node_with_tokens().await;
    let read = format!("Bearer {READER}");
    let write = format!("Bearer {WRITER}");
    use reqwest::Method as M;

    // Open: health, metrics, and nothing else under /api.
    assert_eq!(
        call(&app, M::GET, "/api/health", None, None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, M::GET, "/metrics", None, None).await.0,
        StatusCode::OK
    );
    for path in [
        "/api/key?key=a",
        "/api/keys",
        "/api/status",
        "/api/ready",
        "/api/openapi.json",
        "/api/nope",
    ] {
        let (status, detail, challenge) = call(&app, M::GET, path, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            detail.as_deref(),
            Some("authentication required: send Authorization: Bearer <token>"),
            "{path}"
        );
        assert_eq!(
            challenge.as_deref(),
            Some("Bearer realm=\"keygrid\""),
            "{path}"
        );
    }
    for bad in [
        "Bearer nope",
        &format!("Basic {READER}"),
        "Bearer",
        &format!("Bearer {READER}x"),
    ] {
        let (status, _, _) = call(&app, M::GET, "/api/status", Some(bad), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
    }
    let (status, detail, _) = call(&app, M::GET, "/api/status", Some("Bearer nope"), None).await;
    assert_eq!(
        (status, detail.as_deref()),
        (StatusCode::UNAUTHORIZED, Some("unknown token"))
    );

    // A read token reads but cannot write, and its refused write changes nothing.
    for path in [
        "/api/status",
        "/api/ready",
        "/api/openapi.json",
        "/api/keys",
    ] {
        assert_eq!(
            call(&app, M::GET, path, Some(&read), None).await.0,
            StatusCode::OK,
            "{path}"
        );
    }
    let (status, detail, _) = call(&app, M::PUT, "/api/key", Some(&read), Some(PUT_A)).await;
    assert_eq!(
        (status, detail.as_deref()),
        (StatusCode::FORBIDDEN, Some("this token may only read"))
    );
    let (status, _, _) = call(&app, M::GET, "/api/key?key=a", Some(&read), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Without a token, a write is refused before its body is read: a declared 20 MiB body,
    // none of it sent, gets the 401 (not the 413 the size alone would get).
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(app.address).await.unwrap();
        let head = format!(
            "PUT /api/key HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            20 * 1024 * 1024
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0; 512];
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut answer))
                .await
                .unwrap()
                .unwrap();
        let answer = String::from_utf8_lossy(&answer[..read]);
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }

    // A write token writes, and reads too; a read token cannot delete.
    let (status, _, _) = call(&app, M::PUT, "/api/key", Some(&write), Some(PUT_A)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(&app, M::GET, "/api/key?key=a", Some(&write), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(&app, M::DELETE, "/api/key?key=a", Some(&read), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = call(&app, M::DELETE, "/api/key?key=a", Some(&write), None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typed_client_sends_its_token() {
    let (app, _dir) = node_with_tokens().await;
    let client = |token: Option<&str>| {
        let options = ClientOptions {
            token: token.map(str::to_owned),
            ..ClientOptions::default()
        };
        Client::with_options(&app.base, &options).unwrap()
    };
    let writer = client(Some(WRITER));
    writer.put("k", "v", Precondition::None).await.unwrap();
    assert_eq!(client(Some(READER)).get("k").await.unwrap().value, "v");
    let refused = client(Some(READER))
        .put("k", "w", Precondition::None)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, kg_api::Error::Api { status, detail }
            if *status == StatusCode::FORBIDDEN && detail == "this token may only read"),
        "{refused:?}"
    );
    let anonymous = client(None).get("k").await.unwrap_err();
    assert!(
        matches!(&anonymous, kg_api::Error::Api { status, .. } if *status == StatusCode::UNAUTHORIZED),
        "{anonymous:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_tokens_file_stops_the_node_naming_the_line_not_the_token() {
    use clap::Parser as _;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "fine-token read\nsecret-token admin\n").unwrap();
    let config = kg_server::Config::try_parse_from([
        "kg-server".to_owned(),
        format!(
            "--database-url=sqlite://{}",
            dir.path().join("kg.db").display()
        ),
        format!("--auth-tokens-file={}", file.display()),
    ])
    .unwrap();
    let err = kg_server::AppState::build(&config).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("line 2: role must be read or write"),
        "{message}"
    );
    assert!(!message.contains("secret-token"), "{message}");

    let missing = kg_server::Config::try_parse_from([
        "kg-server".to_owned(),
        format!(
            "--database-url=sqlite://{}",
            dir.path().join("kg.db").display()
        ),
        "--auth-tokens-file=/nonexistent/tokens".to_owned(),
    ])
    .unwrap();
    let err = kg_server::AppState::build(&missing).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("cannot read the tokens file"),
        "{err:#}"
    );
}
