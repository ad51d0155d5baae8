//! kg-tui, a live dashboard of a KeyGrid cluster: nodes, the data tier, change events, throughput and a key
//! browser. One `tokio::select!` loop feeds [`app::App::update`] with key presses, ticks and
//! data from the tasks in [`sources`]; [`ui::draw`] renders the state.

pub mod app;
pub mod sources;
pub mod tier;
pub mod ui;

use std::time::{Duration, Instant};

use clap::Parser;
use crossterm::event::{Event, EventStream, KeyEventKind};
use futures::StreamExt;
use kg_api::{Client, ClientOptions, Endpoints};
use tokio::sync::mpsc;

use app::{App, Command, FeedState, Msg};

/// How often ages and the throughput window move on.
const TICK: Duration = Duration::from_millis(250);

/// kg-tui: a live dashboard of a KeyGrid cluster.
///
/// Nodes come from /api/status polls (every 2 s) and Redis heartbeats; events come from Redis
/// pub/sub, or from /api/watch when no Redis is given. Press ? for the keys.
#[derive(Debug, Parser)]
#[command(name = "kg-tui", version, about, long_about)]
pub struct Cli {
    /// The nodes (workers are spread over them in kg-bench; kg-tui polls each).
    #[command(flatten)]
    pub endpoints: kg_api::cli::EndpointArgs,

    /// Redis for change events and heartbeats; without it, events come from /api/watch.
    #[arg(long, env = "KG_REDIS_URL")]
    pub redis_url: Option<String>,

    /// The cluster's Redis key and channel prefix.
    #[arg(long, env = "KG_REDIS_PREFIX", default_value = kg_api::DEFAULT_REDIS_PREFIX)]
    pub redis_prefix: String,

    /// Patroni REST APIs of the replicated data tier (`scripts/start.sh --ha`:
    /// http://127.0.0.1:8008,http://127.0.0.1:8009,http://127.0.0.1:8010): the data-tier
    /// panel shows the PostgreSQL members, their roles and lag, and each change of leader.
    #[arg(
        long,
        env = "KG_PATRONI",
        value_delimiter = ',',
        value_name = "URL,..."
    )]
    pub patroni: Vec<String>,

    /// The data tier's Redis Sentinels: the panel shows its master and replicas.
    #[command(flatten)]
    pub sentinel: kg_api::cli::SentinelArgs,

    /// Disable put (p) and delete (d).
    #[arg(long)]
    pub read_only: bool,

    /// Per-request timeout, e.g. 500ms or 2s.
    #[arg(long, default_value = "2s", value_parser = kg_api::parse_duration)]
    pub timeout: Duration,

    /// Bearer token for nodes started with --auth-tokens-file (a read token keeps p and d
    /// from working: the node answers 403).
    #[arg(long, env = "KG_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Runs the dashboard until the user quits. The terminal is restored on every path out,
/// panics included (ratatui's `init` installs the hook).
pub async fn run(cli: Cli) -> Result<(), String> {
    let options = ClientOptions {
        timeout: cli.timeout,
        token: cli.token.clone(),
    };
    let endpoints =
        Endpoints::new(&cli.endpoints.endpoint, &options).map_err(|err| err.to_string())?;
    let pollers = cli
        .endpoints
        .endpoint
        .iter()
        .map(|endpoint| Client::with_options(endpoint, &options))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| err.to_string())?;

    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let feed = match &cli.redis_url {
        Some(url) => {
            tokio::spawn(sources::subscribe_redis(
                url.clone(),
                cli.redis_prefix.clone(),
                tx.clone(),
            ));
            tokio::spawn(sources::recent_history(endpoints.clone(), tx.clone()));
            FeedState::Connecting("redis".to_owned())
        }
        None => {
            tokio::spawn(sources::follow_watch(endpoints.clone(), tx.clone()));
            FeedState::Connecting("watch".to_owned())
        }
    };
    for client in pollers {
        tokio::spawn(sources::poll_status(client, tx.clone()));
    }
    let tier = tier::TierSources {
        patroni: cli.patroni.clone(),
        sentinels: cli.sentinel.redis_sentinel.clone(),
        master: cli.sentinel.redis_master.clone(),
    };
    if !tier.is_empty() {
        tokio::spawn(sources::poll_tier(tier, tx.clone()));
    }

    let mut app = App::new(
        cli.endpoints.endpoint.clone(),
        cli.read_only,
        feed,
        Instant::now(),
    );
    run_commands(app.start(), &endpoints, &tx);

    let mut terminal = ratatui::init();
    let result = event_loop(&mut terminal, &mut app, &mut rx, &endpoints, &tx).await;
    ratatui::restore();
    result
}

async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    app: &mut App,
    rx: &mut mpsc::UnboundedReceiver<Msg>,
    endpoints: &Endpoints,
    tx: &mpsc::UnboundedSender<Msg>,
) -> Result<(), String> {
    let mut keys = EventStream::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        terminal
            .draw(|frame| ui::draw(frame, app))
            .map_err(|err| format!("cannot draw: {err}"))?;
        let msg = tokio::select! {
            _ = ticker.tick() => Msg::Tick(Instant::now()),
            event = keys.next() => match event {
                // Only presses count: terminals that report releases would double every key.
                Some(Ok(Event::Key(key))) if key.kind == KeyEventKind::Press => Msg::Key(key),
                Some(Ok(_)) => continue,
                Some(Err(err)) => return Err(format!("cannot read the terminal: {err}")),
                None => return Ok(()),
            },
            Some(msg) = rx.recv() => msg,
        };
        let commands = app.update(msg);
        if commands.contains(&Command::Quit) {
            return Ok(());
        }
        run_commands(commands, endpoints, tx);
    }
}

fn run_commands(commands: Vec<Command>, endpoints: &Endpoints, tx: &mpsc::UnboundedSender<Msg>) {
    for command in commands {
        tokio::spawn(sources::execute(command, endpoints.clone(), tx.clone()));
    }
}
