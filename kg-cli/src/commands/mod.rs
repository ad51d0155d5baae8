//! One module per command group; each runs its commands and returns typed results that
//! `output::emit` prints in the format asked for.

pub mod failover;
pub mod health;
pub mod history;
pub mod keys;
pub mod leases;
pub mod list;
pub mod snapshot;
pub mod status;
pub mod txn;
pub mod txn_text;
pub mod watch;
