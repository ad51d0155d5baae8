//! `kg status`: one node's own view of itself.

use std::io::{self, Write};

use kg_api::{DependencyState, Endpoints, NodeStatus};
use serde::Serialize;

use crate::output::{print_table, Render};
use crate::CliError;

/// The node's status: JSON (and raw) as the node sent it, text as a key-value table.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct Status(pub NodeStatus);

impl Render for Status {
    fn text(&self, out: &mut dyn Write) -> io::Result<()> {
        let status = &self.0;
        let rows = vec![
            vec!["node".to_owned(), status.node.clone()],
            vec!["listen".to_owned(), status.listen.clone()],
            vec!["version".to_owned(), status.version.clone()],
            vec!["uptime".to_owned(), format!("{}s", status.uptime_seconds)],
            vec![
                "database".to_owned(),
                format!(
                    "{} ({}{}) at {}",
                    status.database.kind,
                    state_name(status.database.state),
                    match status.database.primary {
                        Some(true) => ", primary",
                        Some(false) => ", NOT a primary",
                        None => "",
                    },
                    status.database.endpoint
                ),
            ],
            vec![
                "cache".to_owned(),
                match &status.cache_endpoint {
                    Some(endpoint) => format!("{} at {endpoint}", state_name(status.cache)),
                    None => state_name(status.cache).to_owned(),
                },
            ],
            vec![
                "revision".to_owned(),
                status
                    .revision
                    .map_or("unknown".to_owned(), |revision| revision.to_string()),
            ],
            vec![
                "requests".to_owned(),
                format!(
                    "{} total, {} ok, {} client errors, {} server errors",
                    status.requests.total,
                    status.requests.success,
                    status.requests.client_error,
                    status.requests.server_error
                ),
            ],
        ];
        print_table(out, &[], &rows)
    }
}

pub async fn status(endpoints: &Endpoints) -> Result<Status, CliError> {
    let status = endpoints
        .call(|client| async move { client.status().await })
        .await?;
    Ok(Status(status))
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
