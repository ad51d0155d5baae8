//! KeyGrid's test kit, used by every crate's tests (dev-only): real nodes on free ports over
//! fresh databases, throwaway PostgreSQL and Redis servers, the table of hostile requests
//! that the node's own tests and the cluster tests both send, and a real terminal (tmux).

#![allow(clippy::unwrap_used)] // a test helper that fails fails its test, with the location

pub mod hostile;
pub mod locks;
pub mod node;
pub mod servers;
pub mod tmux;

pub use locks::*;
pub use node::*;
pub use servers::*;
pub use tmux::Tmux;

/// How long a test waits for what must happen sooner or later (a node back after an outage,
/// an event, a lease's expiry, a screen that shows it) before it calls it never. A bound
/// against hanging, not a measure of speed: tests assert no durations (those belong in
/// benchmarks), so it is generous enough for a slow machine busy with other work.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// The words of a command line, split on whitespace: tests write a command's arguments as one
/// line, as a user types them, instead of an array of one word a line.
pub fn argv(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}
