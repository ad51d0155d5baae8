//! The `kg-server` binary: parse the config, start logging, run the node.

use std::process::ExitCode;

use clap::Parser;
use kg_server::{telemetry, Config};

// Under glibc's allocator, malloc and free were a large share of a cache-hit GET's CPU;
// mimalloc's thread-local free lists cut that (docs/performance.md, "Figures behind choices
// in the code").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = Config::parse();
    telemetry::init(config.log_format);
    let threads = config.worker_threads.map(usize::from);
    let cores = || std::thread::available_parallelism().map_or(1, usize::from);
    // One thread runs tokio's current-thread scheduler: the multi-thread one with a single
    // worker still pays for its run queues and for parking and waking that worker, and a
    // node on one thread spent less CPU per GET and served more GETs at saturation
    // (docs/performance.md has the figures). It is what scripts/start.sh gives nodes on
    // two cores.
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
