//! kg-tui's tests: `App::update` (ageing, ordering, filter, pause, forms), full-screen
//! snapshots on a `TestBackend`, and an end-to-end run in tmux against a real node and Redis.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

mod e2e;
mod fixtures;
mod screen;
mod update;
