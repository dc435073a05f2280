//! The integration tests: one binary driving the real `tokenkeeper` binary and the library's entry
//! points against loopback token servers and real files.

mod support;

mod bad_replies;
mod canary;
mod cli;
mod config_fixtures;
mod daemon;
mod hostile;
mod http;
mod oauth2_real;
mod presets;
mod tls;
mod trust;
