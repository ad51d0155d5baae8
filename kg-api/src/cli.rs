//! Command-line options the KeyGrid tools share (the `cli` feature), so that `-e`,
//! `KG_ENDPOINT` and the default node mean the same in kg, kg-bench and kg-tui.

/// Where a tool looks when no endpoint is named: the cluster's nginx under `scripts/start.sh`,
/// and a lone `kg-server` by default, both listen there.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8000";

/// `-e/--endpoint`, repeated or comma-separated.
#[derive(Debug, Clone, clap::Args)]
pub struct EndpointArgs {
    /// Node or load balancer URL; repeat it or give a comma-separated list.
    #[arg(
        long,
        short = 'e',
        env = "KG_ENDPOINT",
        default_value = DEFAULT_ENDPOINT,
        value_delimiter = ','
    )]
    pub endpoint: Vec<String>,
}
