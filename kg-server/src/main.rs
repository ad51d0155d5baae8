//! The `kg-server` binary: parse the config, start logging, run the node.

use std::process::ExitCode;

use clap::Parser;
use kg_server::{telemetry, Config};

// Profiling the cache-hit GET path showed ~16% of the node's CPU in glibc malloc/free;
// mimalloc's thread-local free lists cut that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = Config::parse();
    telemetry::init(config.log_format);
    let threads = config.worker_threads.map(usize::from);
    let cores = || std::thread::available_parallelism().map_or(1, usize::from);
    // One thread runs tokio's current-thread scheduler: the multi-thread one with a single
    // worker still pays for its run queues and for parking and waking that worker. A node
    // on one thread spent 6-11% less CPU per GET (52 against 59 us at 2,000/s) and served
    // 6% more GETs at saturation; it is what scripts/start.sh gives nodes on two cores.
    let mut runtime = if threads.unwrap_or_else(cores) == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut runtime = tokio::runtime::Builder::new_multi_thread();
        if let Some(threads) = threads {
            runtime.worker_threads(threads);
        }
        runtime
    };
    runtime.enable_all();
    let result = runtime
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(kg_server::run(config)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
