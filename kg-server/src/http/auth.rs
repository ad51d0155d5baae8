//! Bearer-token authentication, as middleware. When the node has tokens (`crate::tokens`),
//! every `/api/*` route but `/api/health` needs `Authorization: Bearer <token>`: none or an
//! unknown one gets 401, a read token on a write gets 403.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kg_api::ErrorBody;

use crate::startup::AppState;
use crate::tokens::Role;

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
