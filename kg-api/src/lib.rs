//! KeyGrid's shared crate: the wire types every component speaks, and (behind the default
//! `client` feature) a typed async client over reqwest with rustls.
//!
//! The server, CLI, dashboard, bench and tests all depend on this crate so that a URL or a
//! JSON shape is written exactly once.

#[cfg(feature = "cli")]
pub mod cli;
pub mod duration;
pub mod txn;
pub mod types;
pub use duration::parse_duration;
pub use txn::*;
pub use types::*;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "client")]
pub mod endpoints;
#[cfg(feature = "client")]
pub use client::{
    Attach, Client, ClientOptions, Error, GetResult, Precondition, ResponseMeta, SnapshotStream,
    WatchItem, WatchStream, WriteResult,
};
#[cfg(feature = "client")]
pub use endpoints::Endpoints;
