//! kg, the KeyGrid command-line client. `main.rs` parses [`Cli`] and calls [`run`]; tests do
//! the same in-process with `Cli::try_parse_from`, capturing what would go to stdout.

pub mod cli;
pub mod drill;
mod output;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use clap::CommandFactory;
use kg_api::{ClientOptions, DependencyState, Endpoints, Precondition};
use serde_json::json;

pub use cli::{Cli, Command, Output};
pub use output::print_drill as print_drill_report;
use output::{print_table, write_value};

/// What a command can fail with; each maps to one documented exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The key does not exist: exit 1.
    #[error("{0}")]
    NotFound(String),
    /// Bad arguments, or input the server rejected: exit 2.
    #[error("{0}")]
    Usage(String),
    /// A precondition (--if-revision, --create-only) did not hold: exit 3.
    #[error("{0}")]
    Precondition(String),
    /// No node answered, or it could not serve: exit 4.
    #[error("{0}")]
    Unavailable(String),
    /// Writing the output failed (other than a closed pipe, which counts as success).
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::NotFound(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Precondition(_) => 3,
            CliError::Unavailable(_) | CliError::Output(_) => 4,
        }
    }
}

impl From<kg_api::Error> for CliError {
    fn from(err: kg_api::Error) -> Self {
        use kg_api::Error as E;
        match err {
            E::NotFound { detail } => CliError::NotFound(detail),
            E::PreconditionFailed { detail } => CliError::Precondition(detail),
            E::Api { status, detail } if status.is_client_error() => {
                CliError::Usage(format!("{detail} ({status})"))
            }
            E::InvalidEndpoint { .. } => CliError::Usage(err.to_string()),
            other => CliError::Unavailable(other.to_string()),
        }
    }
}

/// Exit code of a command that ran but found something wrong (`health` with a sick node).
pub const EXIT_UNHEALTHY: u8 = 1;

/// Runs one command, writing results to `out` and reading `-` values from `input`; returns
/// the exit code of a command that ran (0, or 1 for an unhealthy `health`).
pub async fn run(cli: Cli, out: &mut dyn Write, input: &mut dyn Read) -> Result<u8, CliError> {
    let options = ClientOptions {
        timeout: cli.global.timeout,
        token: cli.global.token.clone(),
    };
    let endpoints = Endpoints::new(&cli.global.endpoint, &options)?;
    let format = cli.global.output;
    match cli.command {
        Command::Put(args) => {
            let value = if args.value == "-" {
                let mut value = String::new();
                input.read_to_string(&mut value).map_err(|err| {
                    CliError::Usage(format!("cannot read the value from stdin: {err}"))
                })?;
                value
            } else {
                args.value
            };
            let precondition = match (args.if_revision, args.create_only) {
                (Some(revision), _) => Precondition::IfRevision(revision),
                (None, true) => Precondition::CreateOnly,
                (None, false) => Precondition::None,
            };
            let key = args.key;
            let written = endpoints
                .call(|client| {
                    let (key, value) = (key.clone(), value.clone());
                    async move { client.put(&key, &value, precondition).await }
                })
                .await?;
            match format {
                Output::Text => writeln!(out, "OK revision {}", written.revision)?,
                Output::Raw => writeln!(out, "{}", written.revision)?,
                Output::Json => write_value(
                    out,
                    &json!({
                        "key": key,
                        "revision": written.revision,
                        "create_revision": written.create_revision,
                        "version": written.version,
                        "node": written.meta.node,
                    }),
                )?,
            }
        }
        Command::Get(args) => {
            let key = args.key;
            let read = endpoints
                .call(|client| {
                    let key = key.clone();
                    async move { client.get(&key).await }
                })
                .await?;
            match format {
                Output::Text => writeln!(out, "{}", read.value)?,
                Output::Raw => out.write_all(read.value.as_bytes())?,
                Output::Json => write_value(
                    out,
                    &json!({
                        "key": key,
                        "value": read.value,
                        "revision": read.mod_revision,
                        "create_revision": read.create_revision,
                        "version": read.version,
                        "node": read.meta.node,
                        "cache": read.meta.cache_hit.map(|hit| if hit { "hit" } else { "miss" }),
                    }),
                )?,
            }
        }
        Command::Delete(args) => {
            let precondition = args
                .if_revision
                .map_or(Precondition::None, Precondition::IfRevision);
            let key = args.key;
            let deleted = endpoints
                .call(|client| {
                    let key = key.clone();
                    async move { client.delete(&key, precondition).await }
                })
                .await?;
            match format {
                Output::Text => writeln!(out, "OK revision {}", deleted.revision)?,
                Output::Raw => writeln!(out, "{}", deleted.revision)?,
                Output::Json => write_value(
                    out,
                    &json!({"key": key, "revision": deleted.revision, "node": deleted.meta.node}),
                )?,
            }
        }
        Command::List(args) => {
            if args.count {
                let prefix = args.prefix.clone();
                let count = endpoints
                    .call(|client| {
                        let prefix = prefix.clone();
                        async move { client.count(Some(&prefix)).await }
                    })
                    .await?;
                match format {
                    Output::Json => write_value(
                        out,
                        &serde_json::to_value(kg_api::KeyCountResponse { count })
                            .unwrap_or_default(),
                    )?,
                    Output::Text | Output::Raw => writeln!(out, "{count}")?,
                }
                return Ok(0);
            }
            let mut records = Vec::new();
            let mut after: Option<String> = None;
            let wanted = args.limit.unwrap_or(usize::MAX);
            let keys_only = args.keys_only;
            while records.len() < wanted {
                let page_size = (wanted - records.len()).min(kg_api::MAX_PAGE_SIZE as usize) as u32;
                let prefix = args.prefix.clone();
                let cursor = after.clone();
                let page = endpoints
                    .call(|client| {
                        let (prefix, cursor) = (prefix.clone(), cursor.clone());
                        async move {
                            if keys_only {
                                client
                                    .list_keys_only(
                                        Some(&prefix),
                                        Some(page_size),
                                        cursor.as_deref(),
                                    )
                                    .await
                            } else {
                                client
                                    .list(Some(&prefix), Some(page_size), cursor.as_deref())
                                    .await
                            }
                        }
                    })
                    .await?;
                records.extend(page.keys);
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            records.truncate(wanted);
            match (format, args.keys_only) {
                (Output::Json, _) => {
                    write_value(out, &serde_json::to_value(&records).unwrap_or_default())?
                }
                (_, true) => {
                    for record in &records {
                        writeln!(out, "{}", record.key)?;
                    }
                }
                (Output::Raw, false) => {
                    for record in &records {
                        let value = record.value.as_deref().unwrap_or_default();
                        writeln!(out, "{}\t{value}", record.key)?;
                    }
                }
                (Output::Text, false) => {
                    let rows: Vec<Vec<String>> = records
                        .iter()
                        .map(|record| {
                            vec![
                                record.key.clone(),
                                record.version.to_string(),
                                record.mod_revision.to_string(),
                                record.value.as_ref().map_or(0, String::len).to_string(),
                            ]
                        })
                        .collect();
                    print_table(out, &["KEY", "VERSION", "MOD_REVISION", "SIZE"], &rows)?;
                }
            }
        }
        Command::Watch(args) => return watch(&endpoints, args, format, out).await,
        Command::Health => return health(&endpoints, &options, format, out).await,
        Command::Status => {
            let status = endpoints
                .call(|client| async move { client.status().await })
                .await?;
            match format {
                Output::Json | Output::Raw => {
                    write_value(out, &serde_json::to_value(&status).unwrap_or_default())?
                }
                Output::Text => {
                    let rows = vec![
                        vec!["node".to_owned(), status.node],
                        vec!["listen".to_owned(), status.listen],
                        vec!["version".to_owned(), status.version],
                        vec!["uptime".to_owned(), format!("{}s", status.uptime_seconds)],
                        vec![
                            "database".to_owned(),
                            format!(
                                "{} ({})",
                                status.database.kind,
                                state_name(status.database.state)
                            ),
                        ],
                        vec!["cache".to_owned(), state_name(status.cache).to_owned()],
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
                    print_table(out, &[], &rows)?;
                }
            }
        }
        Command::Completions(args) => {
            // Into a buffer first: clap_complete panics when its writer fails, and a closed
            // pipe (`kg completions fish | head`) must end the command quietly.
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "kg", &mut script);
            out.write_all(&script)?;
        }
        Command::FailoverDrill(args) => {
            let entry = cli.global.endpoint.first().map_or("", String::as_str);
            let client = kg_api::Client::with_options(entry, &options)?;
            return failover_drill(&client, &options, args, format, out).await;
        }
    }
    Ok(0)
}

/// Runs the seed's drill; the exit code is 0 on PASS and 1 on FAIL.
async fn failover_drill(
    client: &kg_api::Client,
    client_options: &ClientOptions,
    args: cli::DrillArgs,
    format: Output,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    use cli::RuntimeKind;
    let (runtime, default_nodes) = match args.runtime {
        RuntimeKind::Local => {
            if !args.node_script.is_file() {
                return Err(CliError::Usage(format!(
                    "{} not found: run from the KeyGrid checkout or pass --node-script",
                    args.node_script.display()
                )));
            }
            (
                drill::Runtime::Local {
                    script: args.node_script,
                },
                ["n1", "n2", "n3"],
            )
        }
        RuntimeKind::Compose => (
            drill::Runtime::Compose,
            ["backend1", "backend2", "backend3"],
        ),
        RuntimeKind::Command => (
            drill::Runtime::Command {
                stop: args.stop_cmd.unwrap_or_default(),
                start: args.start_cmd.unwrap_or_default(),
            },
            ["n1", "n2", "n3"],
        ),
    };
    let nodes: Vec<String> = if args.nodes.is_empty() {
        default_nodes
            .iter()
            .map(|node| (*node).to_owned())
            .collect()
    } else {
        args.nodes
    };
    let options = drill::DrillOptions {
        phase_duration: args.phase_duration,
        rate: args.rate,
        write_ratio: args.write_ratio,
        max_recovery: args.max_recovery,
        concurrency: args.concurrency as usize,
        timeout: client_options.timeout,
        token: client_options.token.clone(),
    };
    let phases = drill::seed_phases(&nodes);
    let progress = format == Output::Text && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let report = drill::run_drill(client, &runtime, &phases, &options, progress)
        .await
        .map_err(CliError::Unavailable)?;
    match format {
        Output::Json | Output::Raw => {
            write_value(out, &serde_json::to_value(&report).unwrap_or_default())?
        }
        Output::Text => output::print_drill(out, &report)?,
    }
    Ok(if report.passed { 0 } else { EXIT_UNHEALTHY })
}

/// Follows `/api/watch`, reconnecting with the last revision seen until `--count` events.
async fn watch(
    endpoints: &Endpoints,
    args: cli::WatchArgs,
    format: Output,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    let mut last = args.from_revision;
    let mut seen = 0_usize;
    let mut failures = 0_u32;
    loop {
        let prefix = args.prefix.clone();
        let stream = endpoints
            .call(|client| {
                let prefix = prefix.clone();
                async move { client.watch(prefix.as_deref(), last).await }
            })
            .await;
        let mut stream = match stream {
            Ok(stream) => {
                failures = 0;
                stream
            }
            // A node that is down or restarting: keep trying, as `kg watch` is meant to outlive it.
            Err(err)
                if failures < 30
                    && (err.is_connect() || matches!(err, kg_api::Error::Unavailable { .. })) =>
            {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        while let Some(event) = stream.next().await {
            let Ok(event) = event else { break };
            last = Some(event.revision);
            match format {
                Output::Json => {
                    write_value(out, &serde_json::to_value(&event).unwrap_or_default())?
                }
                Output::Text | Output::Raw => {
                    let kind = match event.kind {
                        kg_api::EventType::Put => "PUT",
                        kg_api::EventType::Delete => "DELETE",
                    };
                    // One line per event: control characters in the value are escaped. A value
                    // too large for an event is named by its size, not silently missing.
                    let value = match (&event.value, event.value_bytes) {
                        (Some(value), _) => format!(" = {}", value.escape_debug()),
                        (None, Some(bytes)) => format!(" = <{bytes} bytes, not in the event>"),
                        (None, None) => String::new(),
                    };
                    writeln!(
                        out,
                        "{} {:<6} {}{}  (rev {}, node {})",
                        event.at.format("%H:%M:%S%.3f"),
                        kind,
                        event.key,
                        value,
                        event.revision,
                        event.node
                    )?;
                }
            }
            out.flush()?;
            seen += 1;
            if args.count.is_some_and(|count| seen >= count) {
                return Ok(0);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks every endpoint, then every peer those nodes know of from Redis heartbeats (cluster
/// mode); exit 1 when any is degraded or down.
async fn health(
    endpoints: &Endpoints,
    options: &ClientOptions,
    format: Output,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    let mut healthy = true;
    let mut rows = Vec::new();
    let mut reports = Vec::new();
    let mut queue: std::collections::VecDeque<kg_api::Client> =
        endpoints.clients().iter().cloned().collect();
    let mut checked_urls = std::collections::HashSet::new();
    let mut seen_nodes = std::collections::HashSet::new();
    while let Some(client) = queue.pop_front() {
        let endpoint = client.endpoint().as_str().trim_end_matches('/').to_owned();
        if !checked_urls.insert(endpoint.clone()) {
            continue;
        }
        let started = Instant::now();
        let result = client.status().await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (node, state, database, cache, revision) = match &result {
            Ok(status) => {
                if !seen_nodes.insert(status.node.clone()) {
                    continue; // the same node behind another address (e.g. the load balancer)
                }
                for peer in &status.peers {
                    if !seen_nodes.contains(&peer.node) {
                        let url = peer_url(&endpoint, &peer.listen);
                        if let Ok(peer_client) = kg_api::Client::with_options(&url, options) {
                            queue.push_back(peer_client);
                        }
                    }
                }
                let state = if status.database.state != DependencyState::Ok {
                    "down"
                } else if status.cache == DependencyState::Degraded {
                    "degraded"
                } else {
                    "ok"
                };
                (
                    status.node.clone(),
                    state,
                    state_name(status.database.state).to_owned(),
                    state_name(status.cache).to_owned(),
                    status.revision,
                )
            }
            Err(_) => ("-".to_owned(), "down", "-".to_owned(), "-".to_owned(), None),
        };
        healthy &= state == "ok";
        rows.push(vec![
            endpoint.clone(),
            node.clone(),
            state.to_owned(),
            format!("{latency_ms:.1}ms"),
            database.clone(),
            cache.clone(),
            revision.map_or("-".to_owned(), |revision| revision.to_string()),
        ]);
        reports.push(HealthReport {
            endpoint,
            node,
            status: state,
            latency_ms: (latency_ms * 10.0).round() / 10.0,
            database,
            cache,
            revision,
            error: result.as_ref().err().map(ToString::to_string),
        });
    }
    match format {
        Output::Json | Output::Raw => {
            write_value(out, &serde_json::to_value(&reports).unwrap_or_default())?
        }
        Output::Text => print_table(
            out,
            &[
                "ENDPOINT", "NODE", "STATUS", "LATENCY", "DATABASE", "CACHE", "REVISION",
            ],
            &rows,
        )?,
    }
    Ok(if healthy { 0 } else { EXIT_UNHEALTHY })
}

/// One endpoint's line of `kg health -o json`.
#[derive(Debug, serde::Serialize)]
struct HealthReport {
    endpoint: String,
    node: String,
    status: &'static str,
    latency_ms: f64,
    database: String,
    cache: String,
    /// The node's last revision, a number like every revision `kg` prints; null when unknown.
    revision: Option<i64>,
    error: Option<String>,
}

/// The URL of a peer from its heartbeat's listen address. A wildcard address (0.0.0.0, [::])
/// is reached through the host of the endpoint that reported it.
fn peer_url(reporting_endpoint: &str, listen: &str) -> String {
    let port = listen.rsplit(':').next().unwrap_or_default();
    let host = listen.strip_suffix(&format!(":{port}")).unwrap_or(listen);
    let host = if matches!(host, "0.0.0.0" | "[::]" | "::") {
        reporting_endpoint
            .split("://")
            .nth(1)
            .and_then(|rest| rest.rsplit_once(':').map(|(host, _)| host.to_owned()))
            .unwrap_or_else(|| "127.0.0.1".to_owned())
    } else {
        host.to_owned()
    };
    format!("http://{host}:{port}")
}

fn state_name(state: DependencyState) -> &'static str {
    match state {
        DependencyState::Ok => "ok",
        DependencyState::Degraded => "degraded",
        DependencyState::Unavailable => "unavailable",
        DependencyState::Disabled => "disabled",
    }
}

#[cfg(test)]
mod tests {
    use super::peer_url;

    #[test]
    fn peer_urls_resolve_wildcard_listen_addresses_through_the_reporter() {
        assert_eq!(
            peer_url("http://10.0.0.5:8001", "127.0.0.1:8002"),
            "http://127.0.0.1:8002"
        );
        assert_eq!(
            peer_url("http://kg.example:8000", "0.0.0.0:8003"),
            "http://kg.example:8003"
        );
        assert_eq!(
            peer_url("http://127.0.0.1:8000", "[::]:8003"),
            "http://127.0.0.1:8003"
        );
    }
}
