//! `http::Error`: every way a request can fail, each mapped to one status code and a
//! `{"detail": "..."}` body, as the seed's FastAPI service answers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kg_api::{
    ErrorBody, DETAIL_DATABASE_UNAVAILABLE, DETAIL_KEY_NOT_FOUND, DETAIL_ROUTE_NOT_FOUND,
};

use crate::startup::CallError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The seed's 404 for a missing key.
    #[error("{DETAIL_KEY_NOT_FOUND}")]
    KeyNotFound,
    /// No route matches the path.
    #[error("{DETAIL_ROUTE_NOT_FOUND}")]
    RouteNotFound,
    #[error("Method Not Allowed")]
    MethodNotAllowed,
    /// A bad query string or header.
    #[error("{0}")]
    BadRequest(String),
    /// A body that is not the documented JSON: malformed, wrong types, missing fields, bad key.
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A lease that does not exist, has expired or was revoked.
    #[error("lease {0} not found: it does not exist, has expired or was revoked")]
    LeaseNotFound(i64),
    /// A watch asked to resume below the compact revision.
    #[error("{0}")]
    Gone(String),
    /// A limit on concurrent work was reached; the request may be retried later.
    #[error("{0}")]
    TooManyRequests(String),
    /// An `If-Match` / `If-None-Match` condition did not hold.
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{DETAIL_DATABASE_UNAVAILABLE}")]
    DatabaseUnavailable,
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// A bug or an unexpected database error; logged with its cause, never shown to clients.
    #[error("internal server error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::KeyNotFound | Error::RouteNotFound | Error::LeaseNotFound(_) => {
                StatusCode::NOT_FOUND
            }
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Error::Gone(_) => StatusCode::GONE,
            Error::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::DatabaseUnavailable | Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The cause of a 500, carried on the response to `track`, which logs it with the request's
/// id; the client sees only "internal server error".
#[derive(Debug, Clone)]
pub struct FailureCause(pub String);

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            detail: self.to_string(),
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let Error::Internal(err) = self {
            response
                .extensions_mut()
                .insert(FailureCause(format!("{err:#}")));
        }
        response
    }
}

impl From<CallError> for Error {
    fn from(err: CallError) -> Self {
        match err {
            CallError::DatabaseUnavailable => Error::DatabaseUnavailable,
            CallError::ShuttingDown => Error::ShuttingDown,
            CallError::Internal(cause) => Error::Internal(cause),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_500_tells_the_client_nothing_and_carries_its_cause_to_the_log() {
        let response = Error::Internal(anyhow::anyhow!("pool closed")).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let cause = response.extensions().get::<FailureCause>().unwrap();
        assert_eq!(cause.0, "pool closed");
        let response = Error::DatabaseUnavailable.into_response();
        assert!(response.extensions().get::<FailureCause>().is_none());
    }
}
