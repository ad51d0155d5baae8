//! `kg status`: etcdctl's `endpoint status`, a row per endpoint given, each from the node's own
//! `/api/status`.

use std::io::{self, Write};

use kg_api::{DependencyState, Endpoints, NodeStatus};
use serde::Serialize;

use super::health::cause;
use crate::output::{print_table, Render};
use crate::CliError;

/// One endpoint: its node's whole status, or why it could not be read.
#[derive(Debug, Serialize)]
pub struct EndpointStatus {
    pub endpoint: String,
    /// `null` when the endpoint did not answer.
    pub status: Option<NodeStatus>,
    /// Why it did not, in a few words (as `kg health` says it), and the whole error.
    pub cause: Option<&'static str>,
    pub error: Option<String>,
}

/// Every endpoint's status: JSON (and raw) an array, text a table.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Status(pub Vec<EndpointStatus>);

impl Status {
    /// Whether every endpoint answered.
    pub fn all_answered(&self) -> bool {
        self.0.iter().all(|endpoint| endpoint.status.is_some())
    }
}

impl Render for Status {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        let rows: Vec<Vec<String>> = self
            .0
            .iter()
            .map(|endpoint| {
                let Some(status) = &endpoint.status else {
                    let mut row = vec![
                        endpoint.endpoint.clone(),
                        format!("down ({})", endpoint.cause.unwrap_or("unreachable")),
                    ];
                    row.resize(8, "-".to_owned());
                    return row;
                };
                vec![
                    endpoint.endpoint.clone(),
                    status.node.clone(),
                    status.version.clone(),
                    status
                        .revision
                        .map_or("-".to_owned(), |revision| revision.to_string()),
                    format!(
                        "{} {}",
                        status.database.kind,
                        state_name(status.database.state)
                    ),
                    match status.database.primary {
                        Some(true) => "yes",
                        Some(false) => "NO",
                        None => "-",
                    }
                    .to_owned(),
                    state_name(status.cache).to_owned(),
                    uptime(status.uptime_seconds),
                ]
            })
            .collect();
        print_table(
            out,
            &[
                "ENDPOINT",
                "NODE",
                "VERSION",
                "REVISION",
                "DATABASE",
                "DB_LEADER",
                "CACHE",
                "UPTIME",
            ],
            &rows,
        )
    }
}

/// Asks every endpoint at once, each for itself (no failing over: each row is its endpoint).
pub async fn status(endpoints: &Endpoints) -> Result<Status, CliError> {
    let asked = endpoints.clients().iter().map(|client| async move {
        let endpoint = client.endpoint().as_str().trim_end_matches('/').to_owned();
        match client.status().await {
            Ok(status) => EndpointStatus {
                endpoint,
                status: Some(status),
                cause: None,
                error: None,
            },
            Err(err) => EndpointStatus {
                endpoint,
                status: None,
                cause: Some(cause(&err)),
                error: Some(err.to_string()),
            },
        }
    });
    Ok(Status(futures::future::join_all(asked).await))
}

/// Seconds as the largest two units: `45s`, `12m05s`, `3h07m`, `2d04h`.
fn uptime(seconds: u64) -> String {
    let (minutes, hours, days) = (seconds / 60, seconds / 3600, seconds / 86_400);
    if days > 0 {
        format!("{days}d{:02}h", hours % 24)
    } else if hours > 0 {
        format!("{hours}h{:02}m", minutes % 60)
    } else if minutes > 0 {
        format!("{minutes}m{:02}s", seconds % 60)
    } else {
        format!("{seconds}s")
    }
}

/// A dependency's state as `kg` prints it.
pub fn state_name(state: DependencyState) -> &'static str {
    match state {
        DependencyState::Ok => "ok",
        DependencyState::Degraded => "degraded",
        DependencyState::Unavailable => "unavailable",
        DependencyState::Disabled => "disabled",
    }
}

#[cfg(test)]
mod tests {
    use super::uptime;

    #[test]
    fn uptime_reads_in_its_two_largest_units() {
        assert_eq!(uptime(45), "45s");
        assert_eq!(uptime(725), "12m05s");
        assert_eq!(uptime(3 * 3600 + 7 * 60 + 9), "3h07m");
        assert_eq!(uptime(2 * 86_400 + 4 * 3600), "2d04h");
    }
}
