//! Bearer-token authentication. `--auth-tokens-file` names a file of `TOKEN ROLE` lines
//! (`read` or `write`, which implies read; `#` starts a comment). When it is given, every
//! `/api/*` route but `/api/health` needs `Authorization: Bearer <token>`: none or an unknown
//! one gets 401, a read token on a write gets 403. Tokens are kept only as SHA-256 digests,
//! compared in constant time, and never logged.

use std::fmt;
use std::path::Path;

use anyhow::Context as _;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kg_api::ErrorBody;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::startup::AppState;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Write,
}

/// The tokens a node accepts, as digests.
#[derive(Clone)]
pub struct Tokens {
    entries: Vec<([u8; 32], Role)>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} configured)", self.entries.len())
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// Reads and parses a tokens file; errors name the line, never the token.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the tokens file {}", path.display()))?;
        Self::parse(&text).map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut entries: Vec<([u8; 32], Role)> = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(token), Some(role), None) = (words.next(), words.next(), words.next()) else {
                return Err(format!(
                    "line {}: expected `TOKEN ROLE` (ROLE is read or write)",
                    number + 1
                ));
            };
            let role = match role {
                "read" => Role::Read,
                "write" => Role::Write,
                other => {
                    return Err(format!(
                        "line {}: role must be read or write, not {other:?}",
                        number + 1
                    ))
                }
            };
            if HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
                return Err(format!(
                    "line {}: the token is not a valid header value",
                    number + 1
                ));
            }
            let digest = digest(token);
            if entries.iter().any(|(known, _)| *known == digest) {
                return Err(format!("line {}: this token appears twice", number + 1));
            }
            entries.push((digest, role));
        }
        if entries.is_empty() {
            return Err("no tokens: every request would be refused".to_owned());
        }
        Ok(Self { entries })
    }

    /// The role of `token`, if it is one of ours. Every configured digest is compared, in
    /// constant time, whatever matches: neither the time nor the order tells which one did.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        let presented = digest(token);
        let mut found = None;
        for (known, role) in &self.entries {
            if bool::from(known.ct_eq(&presented)) {
                found = Some(*role);
            }
        }
        found
    }
}

/// Whether a request to `path` with `method` needs a token, and which role.
fn required_role(method: &Method, path: &str) -> Option<Role> {
    let under_api = path == "/api" || path.starts_with("/api/");
    if !under_api || path == "/api/health" {
        return None;
    }
    Some(match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => Role::Read,
        _ => Role::Write,
    })
}

fn refuse(status: StatusCode, detail: &str) -> Response {
    let body = Json(ErrorBody {
        detail: detail.to_owned(),
    });
    let mut response = (status, body).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"keygrid\""),
        );
    }
    response
}

/// The middleware: lets a request through when no tokens are configured, the route is open,
/// or the token's role covers the method.
pub async fn require(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(tokens) = &state.auth else {
        return next.run(request).await;
    };
    let Some(needed) = required_role(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let Some(token) = presented else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "authentication required: send Authorization: Bearer <token>",
        );
    };
    match tokens.role_of(token) {
        None => refuse(StatusCode::UNAUTHORIZED, "unknown token"),
        Some(role) if role < needed => refuse(StatusCode::FORBIDDEN, "this token may only read"),
        Some(_) => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokens_file_has_roles_comments_and_blank_lines() {
        let tokens =
            Tokens::parse("# ops team\nreader-1 read\n\n  writer-1   write  # the deploy bot\n")
                .unwrap();
        assert_eq!(tokens.role_of("reader-1"), Some(Role::Read));
        assert_eq!(tokens.role_of("writer-1"), Some(Role::Write));
        assert_eq!(tokens.role_of("writer-"), None);
        assert_eq!(tokens.role_of(""), None);
        assert_eq!(format!("{tokens:?}"), "Tokens(2 configured)");
    }

    #[test]
    fn bad_files_are_refused_by_line_without_echoing_the_token() {
        for (text, want) in [
            (
                "secret admin\n",
                "line 1: role must be read or write, not \"admin\"",
            ),
            ("a read\nsecret\n", "line 2: expected `TOKEN ROLE`"),
            ("a read\nb read extra\n", "line 2: expected `TOKEN ROLE`"),
            ("a read\na write\n", "line 2: this token appears twice"),
            ("# nothing\n", "no tokens"),
        ] {
            let err = Tokens::parse(text).unwrap_err();
            assert!(err.starts_with(want), "{text:?}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn only_api_routes_but_health_need_a_token_and_writes_need_write() {
        assert_eq!(required_role(&Method::GET, "/api/health"), None);
        assert_eq!(required_role(&Method::GET, "/metrics"), None);
        assert_eq!(required_role(&Method::GET, "/index.html"), None);
        assert_eq!(required_role(&Method::GET, "/api/key"), Some(Role::Read));
        assert_eq!(required_role(&Method::GET, "/api/ready"), Some(Role::Read));
        assert_eq!(required_role(&Method::GET, "/api/docs/"), Some(Role::Read));
        assert_eq!(required_role(&Method::PUT, "/api/key"), Some(Role::Write));
        assert_eq!(
            required_role(&Method::DELETE, "/api/key"),
            Some(Role::Write)
        );
        assert_eq!(required_role(&Method::POST, "/api/nope"), Some(Role::Write));
        assert_eq!(required_role(&Method::GET, "/apix"), None);
    }
}
