//! KeyGrid's test kit, used by every crate's tests (dev-only): real nodes on free ports over
//! fresh databases, throwaway PostgreSQL and Redis servers, and the table of hostile requests
//! that the node's own tests and the cluster tests both send.

#![allow(clippy::unwrap_used)] // a test helper that fails fails its test, with the location

pub mod hostile;
pub mod locks;
pub mod node;
pub mod servers;

pub use locks::*;
pub use node::*;
pub use servers::*;

/// The words of a command line, split on whitespace: tests write a command's arguments as one
/// line, as a user types them, instead of an array of one word a line.
pub fn argv(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}
