//! Turning untrusted request parts into validated values, each failure a precise 4xx.
//!
//! The query string is decoded by hand rather than with serde_urlencoded because that decoder
//! replaces invalid UTF-8 with U+FFFD: a key sent as `%FF` would silently become another key.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::FromRequestParts;
use axum::http::header::{IF_MATCH, IF_NONE_MATCH};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use percent_encoding::percent_decode;
use serde::de::DeserializeOwned;

use super::Error;
use crate::store::Expect;

pub use kg_api::{check_key, MAX_KEY_CHARS};

/// The OpenAPI pattern of a key: no control characters (Unicode Cc, what `char::is_control`
/// finds). Kept equal to the literal in the schema attributes by a test.
pub const KEY_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";

/// A strictly decoded query string.
#[derive(Debug, Default)]
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    /// Decodes `raw`, refusing what a route does not take: a parameter outside `accepted`
    /// (a misspelt `prefx` would otherwise list every key), one given twice, and a value
    /// with a control character. No parameter is key-like text that may hold one, and a NUL
    /// would reach PostgreSQL, which cannot store it.
    pub fn parse(raw: Option<&str>, accepted: &[&str]) -> Result<Self, Error> {
        let mut pairs = Vec::new();
        for part in raw
            .unwrap_or_default()
            .split('&')
            .filter(|part| !part.is_empty())
        {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let name = decode_component(name)?;
            if !accepted.contains(&name.as_str()) {
                return Err(Error::BadRequest(match accepted {
                    [] => format!("unknown query parameter {name:?}: this route takes none"),
                    _ => format!(
                        "unknown query parameter {name:?}: this route takes {}",
                        accepted.join(", ")
                    ),
                }));
            }
            let value = decode_component(value).map_err(|_| {
                Error::BadRequest(format!("query parameter {name:?} is not valid UTF-8"))
            })?;
            if let Some(bad) = value.chars().find(|c| c.is_control()) {
                return Err(Error::BadRequest(format!(
                    "query parameter {name:?} must not contain control characters (found U+{:04X})",
                    bad as u32
                )));
            }
            if pairs.iter().any(|(seen, _)| *seen == name) {
                return Err(Error::BadRequest(format!(
                    "query parameter {name:?} is given more than once"
                )));
            }
            pairs.push((name, value));
        }
        Ok(Self { pairs })
    }

    /// An optional part of a key (a prefix, or the key a page starts after): the key's
    /// rules, except that it may be empty.
    pub fn key_part(&self, name: &str) -> Result<Option<&str>, Error> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        let chars = text.chars().count();
        if chars > MAX_KEY_CHARS {
            return Err(Error::BadRequest(format!(
                "query parameter {name:?} is {chars} characters; the limit is {MAX_KEY_CHARS}"
            )));
        }
        Ok(Some(text))
    }

    /// An optional `true` or `false` flag; `false` when absent.
    pub fn flag(&self, name: &str) -> Result<bool, Error> {
        match self.get(name) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(Error::BadRequest(format!(
                "query parameter {name:?} must be true or false, got {other:?}"
            ))),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(seen, _)| seen == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn required(&self, name: &str) -> Result<&str, Error> {
        self.get(name)
            .ok_or_else(|| Error::BadRequest(format!("missing query parameter {name:?}")))
    }

    /// An optional integer parameter within `range`.
    pub fn integer<T>(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<Option<T>, Error>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        let out_of_range = || {
            Error::BadRequest(format!(
                "query parameter {name:?} must be an integer from {} to {}, got {text:?}",
                range.start(),
                range.end()
            ))
        };
        let value: T = text.parse().map_err(|_| out_of_range())?;
        if range.contains(&value) {
            Ok(Some(value))
        } else {
            Err(out_of_range())
        }
    }
}

fn decode_component(text: &str) -> Result<String, Error> {
    let bytes: Vec<u8> = percent_decode(text.replace('+', " ").as_bytes()).collect();
    String::from_utf8(bytes)
        .map_err(|_| Error::BadRequest("query string is not valid UTF-8".to_owned()))
}

/// Checks a lease TTL (seconds) against the documented range: a 422 outside it.
pub fn check_ttl(ttl: u64) -> Result<(), super::Error> {
    use kg_api::{MAX_LEASE_TTL_SECONDS, MIN_LEASE_TTL_SECONDS};
    if (MIN_LEASE_TTL_SECONDS..=MAX_LEASE_TTL_SECONDS).contains(&ttl) {
        Ok(())
    } else {
        Err(super::Error::Unprocessable(format!(
            "ttl must be {MIN_LEASE_TTL_SECONDS} to {MAX_LEASE_TTL_SECONDS} seconds, not {ttl}"
        )))
    }
}

/// The key of a query string, validated: a bad one is a 400.
/// The `?key=` of a single-key request (and nothing else in the query), validated, and
/// recorded on the request's span: an extractor, so each handler takes it as an argument.
#[derive(Debug)]
pub struct KeyParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for KeyParam {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        let key = query_key(&QueryParams::parse(parts.uri.query(), &["key"])?)?;
        tracing::Span::current().record("key", key.as_str());
        Ok(KeyParam(key))
    }
}

pub fn query_key(params: &QueryParams) -> Result<String, Error> {
    let key = params.required("key")?;
    check_key(key).map_err(Error::BadRequest)?;
    Ok(key.to_owned())
}

/// The 413 of a body over `limit` bytes, naming the limit: whether the body said its length
/// or was caught while it was read, the client learns what it may send.
pub fn body_too_large(limit: usize) -> Error {
    Error::PayloadTooLarge(format!(
        "request body is too large: a body is at most {limit} bytes"
    ))
}

/// A JSON body read under `limit` (`AppState::body_limit`), with every failure a 413 or a 422
/// with serde's explanation.
pub fn json_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<T, Error> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            body_too_large(limit)
        } else {
            Error::BadRequest(format!("failed to read request body: {rejection}"))
        }
    })?;
    if bytes.is_empty() {
        return Err(Error::Unprocessable(
            "request body is empty; expected JSON".to_owned(),
        ));
    }
    // JSON is UTF-8 by definition; say so plainly rather than as a tokenizer error.
    let text = std::str::from_utf8(&bytes).map_err(|err| {
        Error::Unprocessable(format!(
            "request body is not valid UTF-8 (at byte {})",
            err.valid_up_to()
        ))
    })?;
    // Every body this API takes is an object. Said first, and plainly: serde's derived structs
    // would also take an array of the fields' values in order.
    if !text.trim_start().starts_with('{') {
        return Err(Error::Unprocessable(
            "invalid request body: expected a JSON object".to_owned(),
        ));
    }
    serde_json::from_str(text).map_err(|err| {
        let what = match err.classify() {
            serde_json::error::Category::Data => "invalid request body",
            _ => "malformed JSON",
        };
        Error::Unprocessable(format!("{what}: {}", in_json_terms(&err.to_string())))
    })
}

/// serde's explanation in JSON's words: it names Rust types (`expected struct PutRequest`,
/// `sequence`, `map`) that mean nothing to a client.
fn in_json_terms(message: &str) -> String {
    // Only serde's own words: a field name or value the client sent is quoted earlier in the
    // message, so the last `expected struct` and the first `invalid type:` are serde's.
    let mut text = message.to_owned();
    if let Some(at) = text.rfind("expected struct ") {
        let name = at + "expected struct ".len();
        let end = text[name..]
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .map_or(text.len(), |len| name + len);
        text.replace_range(at..end, "expected a JSON object");
    }
    text.replacen("invalid type: sequence", "invalid type: array", 1)
        .replacen("invalid type: map", "invalid type: object", 1)
}

fn header_text<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h str>, Error> {
    headers
        .get(name)
        .map(|value| {
            value
                .to_str()
                .map(str::trim)
                .map_err(|_| Error::BadRequest(format!("{name} is not valid ASCII")))
        })
        .transpose()
}

/// `If-Match`, on any request: `*` (the key exists) or `"<revision>"`, quoted as RFC 9110's
/// entity tags are; anything else is a 400.
pub fn read_if_match(headers: &HeaderMap) -> Result<Option<Expect>, Error> {
    header_text(headers, &IF_MATCH)?
        .map(|tag| match tag {
            "*" => Ok(Expect::Exists),
            // The value is quoted in the detail as sent: its own quotes are not escaped, so
            // the JSON body does not carry them escaped twice.
            _ => parse_etag(tag).map(Expect::Revision).ok_or_else(|| {
                Error::BadRequest(format!(
                    "If-Match must be \"<revision>\" (with the quotes) or *, got `{tag}`"
                ))
            }),
        })
        .transpose()
}

/// The precondition of a write, from `If-Match` and (for puts) `If-None-Match`.
pub fn precondition(headers: &HeaderMap, allow_if_none_match: bool) -> Result<Expect, Error> {
    let if_match = read_if_match(headers)?;
    let if_none_match = header_text(headers, &IF_NONE_MATCH)?
        .map(|tag| match tag {
            "*" if allow_if_none_match => Ok(Expect::Absent),
            _ => Err(Error::BadRequest(format!(
                "If-None-Match on a write must be *, got `{tag}`"
            ))),
        })
        .transpose()?;
    match (if_match, if_none_match) {
        // RFC 9110 (13.2.2) evaluates both. A key that passes If-Match exists, so it fails
        // If-None-Match: *, the only form a write takes: no write can pass both.
        (Some(_), Some(_)) => Err(Error::PreconditionFailed(
            "precondition failed: If-Match needs the key to exist and If-None-Match: * needs \
             it not to"
                .to_owned(),
        )),
        (Some(expect), None) | (None, Some(expect)) => Ok(expect),
        (None, None) => Ok(Expect::Any),
    }
}

/// The longest Idempotency-Key accepted.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// The `Idempotency-Key` of a write: 1 to 255 visible ASCII characters, optionally quoted.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Error> {
    let Some(value) = headers.get(kg_api::HEADER_IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let invalid = || {
        Error::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} visible ASCII characters"
        ))
    };
    let text = value.to_str().map_err(|_| invalid())?.trim();
    let key = text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or(text);
    let visible = key.bytes().all(|byte| byte.is_ascii_graphic());
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES || !visible {
        return Err(invalid());
    }
    Ok(Some(key.to_owned()))
}

/// A strong entity tag `"<revision>"`. The quotes are part of the syntax (RFC 9110, 8.8.3):
/// a bare number is not an entity tag.
pub fn parse_etag(tag: &str) -> Option<i64> {
    let inner = tag.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    inner.parse().ok()
}

/// The entity tag of a revision.
pub fn etag(revision: i64) -> String {
    format!("\"{revision}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_query(raw: &str, name: &str, expected: Result<&str, ()>) {
        let got = QueryParams::parse(Some(raw), &["key", "other"])
            .and_then(|params| params.required(name).map(str::to_owned));
        assert_eq!(got.as_deref().map_err(|_| ()), expected, "query {raw:?}");
    }

    #[test]
    fn query_decoding_is_strict_utf8() {
        check_query("key=foo", "key", Ok("foo"));
        check_query("key=a%20b", "key", Ok("a b"));
        check_query("key=a+b", "key", Ok("a b"));
        check_query("key=%E2%82%AC", "key", Ok("€"));
        check_query("key=%2B", "key", Ok("+"));
        check_query("key=", "key", Ok(""));
        check_query("key=%FF", "key", Err(()));
        check_query("key=a&key=b", "key", Err(()));
        check_query("other=1", "key", Err(()));
        check_query("key=a%00b", "key", Err(()));
        check_query("key=a&unknown=1", "key", Err(()));
    }

    #[test]
    fn unknown_parameters_and_control_characters_are_named() {
        let detail = |raw: &str, accepted: &[&str]| match QueryParams::parse(Some(raw), accepted) {
            Err(Error::BadRequest(detail)) => detail,
            other => panic!("{raw:?}: expected a 400, got {other:?}"),
        };
        assert_eq!(
            detail("prefx=a", &["prefix", "limit"]),
            r#"unknown query parameter "prefx": this route takes prefix, limit"#
        );
        assert_eq!(
            detail("prefix=a%00b", &["prefix"]),
            r#"query parameter "prefix" must not contain control characters (found U+0000)"#
        );
    }

    fn check_key_case(key: &str, ok: bool) {
        assert_eq!(check_key(key).is_ok(), ok, "key {key:?}");
    }

    #[test]
    fn key_limits() {
        check_key_case("foo", true);
        check_key_case("user/1:é 日本", true);
        check_key_case(&"k".repeat(512), true);
        check_key_case(&"k".repeat(513), false);
        // Characters, not bytes: 512 four-byte characters fit (2 KiB, inside PostgreSQL's
        // ~2.7 KB B-tree entry limit), one more does not.
        check_key_case(&"🔑".repeat(512), true);
        check_key_case(&"🔑".repeat(513), false);
        check_key_case("", false);
        check_key_case("a\nb", false);
        check_key_case("a\u{0}b", false);
        check_key_case("a\u{7F}", false);
        check_key_case("a\u{85}", false);
    }

    #[test]
    fn body_errors_name_json_types_not_rust_ones() {
        let detail = |body: &str| match json_body::<kg_api::PutRequest>(
            Ok(Bytes::from(body.to_owned())),
            1024,
        ) {
            Err(Error::Unprocessable(detail)) => detail,
            other => panic!("{body}: expected a 422, got {other:?}"),
        };
        assert_eq!(detail("[]"), "invalid request body: expected a JSON object");
        assert_eq!(
            detail(r#"[{"key":"k","value":"v"}]"#),
            "invalid request body: expected a JSON object"
        );
        assert!(
            detail("5").contains("expected a JSON object"),
            "{}",
            detail("5")
        );
        assert!(
            detail(r#"{"data":{"key":"k","value":"v"},"tll":5}"#).contains("unknown field `tll`"),
            "{}",
            detail(r#"{"data":{"key":"k","value":"v"},"tll":5}"#)
        );
        // A field the client named keeps its name, whatever it says.
        assert!(
            detail(r#"{"data":{"key":"k","value":"v"},"struct Foo":1}"#)
                .contains("unknown field `struct Foo`"),
            "{}",
            detail(r#"{"data":{"key":"k","value":"v"},"struct Foo":1}"#)
        );
        assert!(
            detail(r#"{"data":5}"#).contains("invalid type: integer `5`, expected a JSON object"),
            "{}",
            detail(r#"{"data":5}"#)
        );
    }

    fn check_precondition(
        if_match: Option<&str>,
        if_none_match: Option<&str>,
        expected: Option<Expect>,
    ) {
        let mut headers = HeaderMap::new();
        if let Some(value) = if_match {
            headers.insert(IF_MATCH, value.parse().unwrap());
        }
        if let Some(value) = if_none_match {
            headers.insert(IF_NONE_MATCH, value.parse().unwrap());
        }
        assert_eq!(
            precondition(&headers, true).ok(),
            expected,
            "{if_match:?} {if_none_match:?}"
        );
    }

    #[test]
    fn preconditions_map_to_expectations() {
        check_precondition(None, None, Some(Expect::Any));
        check_precondition(Some("\"7\""), None, Some(Expect::Revision(7)));
        check_precondition(Some("7"), None, None);
        check_precondition(Some("\"+7\""), None, None);
        check_precondition(Some("*"), None, Some(Expect::Exists));
        check_precondition(None, Some("*"), Some(Expect::Absent));
        check_precondition(Some("W/\"7\""), None, None);
        check_precondition(Some("\"-1\""), None, None);
        check_precondition(Some("\"x\""), None, None);
        check_precondition(None, Some("\"7\""), None);
        check_precondition(Some("*"), Some("*"), None);
        // Both, well formed: no key can pass both (412). Malformed: the syntax error (400).
        let both = |if_match: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(IF_MATCH, if_match.parse().unwrap());
            headers.insert(IF_NONE_MATCH, "*".parse().unwrap());
            precondition(&headers, true).map_err(|err| err.status())
        };
        assert_eq!(both("\"7\""), Err(StatusCode::PRECONDITION_FAILED));
        assert_eq!(both("*"), Err(StatusCode::PRECONDITION_FAILED));
        assert_eq!(both("x"), Err(StatusCode::BAD_REQUEST));
    }
}
