//! kg-server's integration tests: one binary, real nodes on free ports, real PostgreSQL and
//! SQLite. Tests that make sense on both backends are written once and instantiated for each.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

/// Instantiates `async fn name(backend: Backend)` tests once per backend.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(kg_testkit::Backend::Postgres).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(kg_testkit::Backend::Sqlite).await
                }
            )*
        }
    };
}

mod auth;
mod bad_input;
mod binary;
mod cache;
mod cas;
mod fence;
mod history;
mod idempotency;
mod leases;
mod listing;
mod model;
mod node;
mod outage;
mod persistence;
mod prefix_delete;
mod revisions;
mod seed;
mod sentinel;
mod shared;
mod snapshot;
mod store;
mod txn;
mod watch;
