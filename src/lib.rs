//! tokenkeeper keeps bearer tokens fresh on disk.
pub mod secret;
pub mod token;
