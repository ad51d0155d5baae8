//! KeyGrid's test kit, used by every crate's tests (dev-only): real nodes on free ports over
//! fresh databases, throwaway PostgreSQL and Redis servers, and the table of hostile requests
//! that the node's own tests and the cluster tests both send.

#![allow(clippy::unwrap_used)] // a test helper that fails fails its test, with the location

pub mod hostile;
pub mod node;
pub mod servers;

pub use node::*;
pub use servers::*;
