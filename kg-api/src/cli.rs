//! Command-line options the KeyGrid tools share (the `cli` feature), so that `-e`,
//! `KG_ENDPOINT` and the default node mean the same in kg, kg-bench and kg-tui.

/// Where a tool looks when no endpoint is named: the cluster's nginx under `scripts/start.sh`,
/// and a lone `kg-server` by default, both listen there.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8000";

/// The Redis Sentinels of a replicated Redis and the name they know its master by.
#[derive(Debug, Clone, clap::Args)]
pub struct SentinelArgs {
    /// Redis Sentinels (HOST:PORT,...) that name the master of --redis-master, instead of a
    /// fixed --redis-url: kg-server follows a failover to the promoted replica, kg-tui shows
    /// the master and its replicas.
    #[arg(
        long,
        env = "KG_REDIS_SENTINEL",
        value_delimiter = ',',
        value_name = "HOST:PORT,..."
    )]
    pub redis_sentinel: Vec<String>,

    /// The master's name in the Sentinels' configuration.
    #[arg(long, env = "KG_REDIS_MASTER", default_value = "keygrid")]
    pub redis_master: String,
}

/// Parses the command line as `P::parse` does, except that a usage error's usage line leaves
/// out the options given by their environment variables (`KG_ENDPOINT`, `KG_TOKEN`): clap
/// counts a value from the environment as one typed, and showed `kg put --endpoint <ENDPOINT>
/// --token <TOKEN> <KEY> <VALUE>` as if both were required. The error is made again by a
/// parse that reads no environment, whose usage line is the command's own.
pub fn parse<P: clap::Parser>() -> P {
    match P::try_parse() {
        Ok(parsed) => parsed,
        Err(err) if !err.use_stderr() => err.exit(),
        Err(err) => {
            let without_env = without_env(P::command()).try_get_matches();
            match without_env {
                Err(again) if again.kind() == err.kind() => again.exit(),
                _ => err.exit(),
            }
        }
    }
}

/// `command` with no option read from the environment, in every subcommand.
fn without_env(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| arg.env(None))
        .mut_subcommands(without_env)
}

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
