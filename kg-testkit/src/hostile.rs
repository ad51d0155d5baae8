//! The table of hostile requests that both the node's own tests and the cluster tests (through
//! nginx) send, each with the 4xx and the detail it must get back, and the senders. One table
//! for both, so the two can never drift apart.

use std::net::SocketAddr;

use reqwest::{Method, StatusCode};

/// Sends one case to `base` and checks its status and `{"detail": ...}`.
pub async fn check(http: &reqwest::Client, base: &str, case: Case) {
    let Case {
        method,
        path,
        headers,
        body,
        status: expected,
        detail: detail_contains,
    } = case;
    let mut request = http.request(method.clone(), format!("{base}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|err| panic!("{method} {path} ({detail_contains}): {err:?}"));
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, expected, "{method} {path}: {text}");
    let body: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("{method} {path}: body is not JSON ({err}): {text}"));
    let detail = body["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("{method} {path}: no detail in {text}"));
    assert!(
        detail.contains(detail_contains),
        "{method} {path}: detail {detail:?} should mention {detail_contains:?}"
    );
}

/// A 20 MiB body is refused from its Content-Length, without being read, with the limit named
/// (the node's, or nginx's in front of it). The server may close the connection before a
/// client finishes uploading, so this speaks raw HTTP and reads the answer after sending only
/// the first MiB.
pub async fn check_huge_body_is_refused_before_it_is_read(address: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "PUT /api/key HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        20 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let _ = stream.write_all(&vec![b' '; 1024 * 1024]).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut response),
    )
    .await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response.contains(r#"{"detail":"request body is too large: "#)
            && response.contains(" at most "),
        "{response}"
    );
}

fn put_body(key: &str, value: &str) -> Option<Vec<u8>> {
    Some(
        serde_json::json!({"data": {"key": key, "value": value}})
            .to_string()
            .into_bytes(),
    )
}

/// One bad request and what it must get back.
#[derive(Debug)]
pub struct Case {
    pub method: Method,
    pub path: String,
    pub headers: &'static [(&'static str, &'static str)],
    pub body: Option<Vec<u8>>,
    pub status: StatusCode,
    pub detail: &'static str,
}

pub fn case(
    method: Method,
    path: impl Into<String>,
    headers: &'static [(&'static str, &'static str)],
    body: Option<Vec<u8>>,
    status: StatusCode,
    detail: &'static str,
) -> Case {
    Case {
        method,
        path: path.into(),
        headers,
        body,
        status,
        detail,
    }
}

fn raw(body: &[u8]) -> Option<Vec<u8>> {
    Some(body.to_vec())
}

/// Every class of bad input: malformed JSON, wrong types, invalid UTF-8, keys outside the
/// limits, an oversized value, bad preconditions, unknown routes and methods. The key `keep`
/// is never written by any of them.
pub fn cases() -> Vec<Case> {
    use Method as M;
    use StatusCode as S;
    let long_key = "k".repeat(513);
    let over_limit = "v".repeat(1024 * 1024 + 1);
    #[rustfmt::skip]
    let cases = vec![
        // Malformed JSON, wrong types, missing fields: 422.
        case(M::PUT, "/api/key", &[], raw(b"{not json"), S::UNPROCESSABLE_ENTITY, "malformed JSON"),
        case(M::PUT, "/api/key", &[], raw(b""), S::UNPROCESSABLE_ENTITY, "empty"),
        case(M::PUT, "/api/key", &[], raw(br#"{"data":{"key":"k"}}"#), S::UNPROCESSABLE_ENTITY, "missing field `value`"),
        case(M::PUT, "/api/key", &[], raw(br#"{"key":"k","value":"v"}"#), S::UNPROCESSABLE_ENTITY, "unknown field `key`, expected one of `data`, `lease`, `ttl`"),
        case(M::PUT, "/api/key", &[], raw(br#"{}"#), S::UNPROCESSABLE_ENTITY, "missing field `data`"),
        case(M::PUT, "/api/key", &[], raw(br#"{"data":{"key":"k","value":5}}"#), S::UNPROCESSABLE_ENTITY, "invalid type"),
        case(M::PUT, "/api/key", &[], raw(br#"{"data":{"key":7,"value":"v"}}"#), S::UNPROCESSABLE_ENTITY, "invalid type"),
        case(M::PUT, "/api/key", &[], raw(br#"[1,2]"#), S::UNPROCESSABLE_ENTITY, "invalid"),
        case(M::PUT, "/api/key", &[], raw(b"{\"data\":{\"key\":\"\xff\",\"value\":\"v\"}}"), S::UNPROCESSABLE_ENTITY, "UTF-8"),
        case(M::PUT, "/api/key", &[], raw(b"{\"data\":{\"key\":\"k\",\"value\":\"\xc3\x28\"}}"), S::UNPROCESSABLE_ENTITY, "UTF-8"),
        // Keys outside the limits: 422 in a body, 400 in a query string.
        case(M::PUT, "/api/key", &[], put_body("", "v"), S::UNPROCESSABLE_ENTITY, "must not be empty"),
        case(M::PUT, "/api/key", &[], put_body(&long_key, "v"), S::UNPROCESSABLE_ENTITY, "limit is 512"),
        case(M::PUT, "/api/key", &[], put_body("a\nb", "v"), S::UNPROCESSABLE_ENTITY, "control characters"),
        case(M::PUT, "/api/key", &[], put_body("a\u{0}b", "v"), S::UNPROCESSABLE_ENTITY, "control characters"),
        case(M::GET, "/api/key", &[], None, S::BAD_REQUEST, "missing query parameter"),
        case(M::GET, "/api/key?key=", &[], None, S::BAD_REQUEST, "must not be empty"),
        case(M::GET, "/api/key?key=%FF", &[], None, S::BAD_REQUEST, "UTF-8"),
        case(M::GET, "/api/key?key=a%0Ab", &[], None, S::BAD_REQUEST, "control characters"),
        case(M::GET, format!("/api/key?key={long_key}"), &[], None, S::BAD_REQUEST, "limit is 512"),
        case(M::DELETE, "/api/key?key=a&key=b", &[], None, S::BAD_REQUEST, "more than once"),
        case(M::GET, "/api/keys?prefix=%C3", &[], None, S::BAD_REQUEST, "UTF-8"),
        // A NUL in any parameter reached PostgreSQL once (a 500); unknown parameters were
        // ignored (a misspelt prefix listed everything).
        case(M::GET, "/api/keys?prefix=a%00b", &[], None, S::BAD_REQUEST, "control characters"),
        case(M::GET, "/api/keys?after=a%00b", &[], None, S::BAD_REQUEST, "control characters"),
        case(M::GET, "/api/watch?prefix=a%00b", &[], None, S::BAD_REQUEST, "control characters"),
        case(M::GET, "/api/keys?prefx=ux/", &[], None, S::BAD_REQUEST, "unknown query parameter \"prefx\""),
        case(M::DELETE, "/api/key?key=k&force=1", &[], None, S::BAD_REQUEST, "unknown query parameter"),
        // Unknown body fields and bodies that are not objects: 422, naming the field.
        case(M::PUT, "/api/key", &[], raw(br#"{"data":{"key":"k","value":"v"},"tll":5}"#), S::UNPROCESSABLE_ENTITY, "unknown field `tll`"),
        case(M::PUT, "/api/key", &[], raw(br#"{"data":{"key":"k","value":"v","lease":1}}"#), S::UNPROCESSABLE_ENTITY, "unknown field `lease`"),
        case(M::PUT, "/api/key", &[], raw(b"[]"), S::UNPROCESSABLE_ENTITY, "expected a JSON object"),
        // A value one byte over the limit: 413 (a body far over it: see below).
        case(M::PUT, "/api/key", &[], put_body("big", &over_limit), S::PAYLOAD_TOO_LARGE, "limit is 1048576"),
        // Preconditions that cannot be parsed: 400.
        case(M::PUT, "/api/key", &[("if-match", "W/\"1\"")], put_body("k", "v"), S::BAD_REQUEST, "If-Match"),
        case(M::PUT, "/api/key", &[("if-match", "5")], put_body("k", "v"), S::BAD_REQUEST, "with the quotes"),
        case(M::GET, "/api/key?key=keep", &[("if-match", "5")], None, S::BAD_REQUEST, "with the quotes"),
        case(M::PUT, "/api/key", &[("if-none-match", "\"3\"")], put_body("k", "v"), S::BAD_REQUEST, "If-None-Match"),
        case(M::PUT, "/api/key", &[("if-match", "*"), ("if-none-match", "*")], put_body("k", "v"), S::PRECONDITION_FAILED, "If-None-Match: * needs"),
        case(M::DELETE, "/api/key?key=keep", &[("if-none-match", "*")], None, S::BAD_REQUEST, "If-None-Match"),
        case(M::GET, "/api/watch?from_revision=x", &[], None, S::BAD_REQUEST, "from_revision"),
        case(M::GET, "/api/watch", &[("last-event-id", "nope")], None, S::BAD_REQUEST, "Last-Event-ID"),
        // Unknown routes and methods.
        case(M::GET, "/api/nope", &[], None, S::NOT_FOUND, "Not Found"),
        case(M::POST, "/api/key", &[], put_body("k", "v"), S::METHOD_NOT_ALLOWED, "Method Not Allowed"),
        case(M::PATCH, "/api/keys", &[], None, S::METHOD_NOT_ALLOWED, "Method Not Allowed"),
    ];
    cases
}
