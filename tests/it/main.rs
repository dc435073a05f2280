//! The integration tests: one binary driving the real `tokenkeeper` binary and the library's entry
//! points against loopback token servers and real files.

mod support;

mod bad_replies;
mod canary;
mod cli;
mod config_fixtures;
mod container;
mod credential;
mod daemon;
mod fleet_mode;
mod hooks;
mod hostile;
mod http;
mod kubernetes;
mod notify;
mod oauth2_keyless;
mod oauth2_mtls;
mod oauth2_real;
mod observe;
mod presets;
mod refresh;
mod systemd;
mod tls;
mod trust;
