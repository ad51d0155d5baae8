//! Several endpoints of one cluster, tried in order: the next one is used only when the
//! previous could not be reached at all, so a request is never sent twice to live nodes.

use std::future::Future;

use crate::client::{Client, ClientOptions, Error, Result};

/// Clients for each endpoint given, in the order given.
#[derive(Debug, Clone)]
pub struct Endpoints {
    clients: Vec<Client>,
}

impl Endpoints {
    /// Builds a client per endpoint. Each entry may itself be a comma-separated list.
    pub fn new<S: AsRef<str>>(endpoints: &[S], options: &ClientOptions) -> Result<Self> {
        let clients = endpoints
            .iter()
            .flat_map(|entry| entry.as_ref().split(','))
            .map(str::trim)
            .filter(|endpoint| !endpoint.is_empty())
            .map(|endpoint| Client::with_options(endpoint, options))
            .collect::<Result<Vec<_>>>()?;
        if clients.is_empty() {
            return Err(Error::InvalidEndpoint {
                endpoint: String::new(),
                reason: "no endpoint given".to_owned(),
            });
        }
        Ok(Self { clients })
    }

    pub fn clients(&self) -> &[Client] {
        &self.clients
    }

    /// Runs `call` against the first endpoint, moving to the next only on a connection failure
    /// (the request cannot have reached that node). Returns the last error if all fail.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut last_error = None;
        for client in &self.clients {
            match call(client.clone()).await {
                Err(err) if err.is_connect() => last_error = Some(err),
                other => return other,
            }
        }
        Err(last_error.unwrap_or_else(|| Error::InvalidEndpoint {
            endpoint: String::new(),
            reason: "no endpoint given".to_owned(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_comma_separated_lists_and_keeps_order() {
        let endpoints = Endpoints::new(
            &["http://a:1,http://b:2", " http://c:3 ", "d:4,127.0.0.1:5"],
            &ClientOptions::default(),
        )
        .unwrap();
        let urls: Vec<_> = endpoints
            .clients()
            .iter()
            .map(|client| client.endpoint().to_string())
            .collect();
        assert_eq!(
            urls,
            [
                "http://a:1/",
                "http://b:2/",
                "http://c:3/",
                "http://d:4/",
                "http://127.0.0.1:5/"
            ],
            "a bare HOST:PORT is http"
        );
    }

    #[test]
    fn rejects_an_empty_list_and_bad_urls() {
        assert!(Endpoints::new::<&str>(&[], &ClientOptions::default()).is_err());
        assert!(Endpoints::new(&[","], &ClientOptions::default()).is_err());
        assert!(Endpoints::new(&["ftp://x"], &ClientOptions::default()).is_err());
    }
}
