//! Performing a hook (placeholder while the runner is written in a branch).

use std::path::PathBuf;

use super::{Event, HookSpec};

/// The running hook of one account.
pub struct Hook {
    _spec: HookSpec,
}

impl Hook {
    /// Spawns the hook task of `account` on the current runtime.
    pub fn spawn(_account: &str, _outputs: Vec<PathBuf>, spec: HookSpec) -> Hook {
        Hook { _spec: spec }
    }

    /// The account's files changed.
    pub fn notify(&self, _event: Event) {}
}
