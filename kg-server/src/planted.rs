//! Planted bugs: named reverts of past fixes that a test switches on to prove a drill or the
//! model test still catches the bug it was written for.
//!
//! A node reads `KG_PLANTED_BUG` (a comma-separated list of names) once. Only debug builds
//! honour it: a release build answers `false` for every name, so no deployed node can be
//! talked into a known bug by its environment.

use std::collections::HashSet;
use std::sync::OnceLock;

/// Whether the planted bug `name` is switched on for this process.
pub fn active(name: &str) -> bool {
    if !cfg!(debug_assertions) {
        return false;
    }
    static PLANTED: OnceLock<HashSet<String>> = OnceLock::new();
    PLANTED
        .get_or_init(|| {
            let planted: HashSet<String> = std::env::var("KG_PLANTED_BUG")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect();
            if !planted.is_empty() {
                tracing::warn!(
                    ?planted,
                    "planted bugs are on: this node is wrong on purpose"
                );
            }
            planted
        })
        .contains(name)
}

/// A size the drills shrink to reach an edge sooner: `KG_TEST_<NAME>` in debug builds (a
/// watch replay of one key per page meets a compaction mid-replay, where one page of 1,000
/// keys is read before any compaction can land), `default` in release builds and when unset
/// or unreadable.
pub fn size(name: &str, default: u32) -> u32 {
    if !cfg!(debug_assertions) {
        return default;
    }
    std::env::var(format!("KG_TEST_{name}"))
        .ok()
        .and_then(|text| text.parse().ok())
        .filter(|size| *size > 0)
        .unwrap_or(default)
}
