//! The Prometheus metrics: counters and the login-duration histogram kept as logins happen, and
//! gauges read off the status board at each scrape, so that they are as fresh as the scrape.
//!
//! Two formats: OpenMetrics text (what prometheus-client writes, and what Prometheus asks for), and
//! the classic text format 0.0.4 for every other client (`curl`, `promtool check metrics`), which
//! differs only in naming a counter's family with its `_total` suffix and having no `# EOF`.
//!
//! Invariants: the only label values are account names and fixed words (outcomes, the version),
//! never a secret, a token or an error text; an account taken off the board takes its series
//! with it, even when a scrape runs meanwhile; names follow Prometheus's conventions (`_total`,
//! `_seconds`, `_timestamp_seconds`), as `promtool check metrics` checks.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::status::{AccountView, Outcome, ReloadRecord};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccountLabel {
    account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabels {
    account: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type HistogramMaker = fn() -> Histogram;

/// Login durations, in seconds: a loopback login takes milliseconds, a slow vendor several
/// seconds, a timeout 30 s.
const LOGIN_BUCKETS: [f64; 11] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

fn login_histogram() -> Histogram {
    Histogram::new(LOGIN_BUCKETS)
}

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    expiry: Family<AccountLabel, FloatGauge>,
    ready: Family<AccountLabel, Gauge>,
    last_success: Family<AccountLabel, FloatGauge>,
    next_refresh: Family<AccountLabel, FloatGauge>,
    failures: Family<AccountLabel, Gauge>,
    logins: Family<LoginLabels, Counter>,
    login_duration: Family<AccountLabel, Histogram, HistogramMaker>,
    write_failures: Family<AccountLabel, Counter>,
    reload_successful: Gauge,
    reload_success_time: FloatGauge,
    /// Scrapes set the gauges and then encode: one at a time.
    scrape: Mutex<()>,
}

/// The counters of one account, kept by its task.
pub struct AccountMetrics {
    logins: [Counter; 4],
    login_duration: Histogram,
    write_failures: Counter,
}

impl AccountMetrics {
    pub fn login_finished(&self, outcome: Outcome, duration: Duration) {
        let index = Outcome::ALL
            .iter()
            .position(|known| *known == outcome)
            .unwrap_or(0);
        self.logins[index].inc();
        self.login_duration.observe(duration.as_secs_f64());
    }

    pub fn write_failed(&self) {
        self.write_failures.inc();
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tokenkeeper");
        let metrics = Metrics {
            registry: Registry::default(),
            expiry: Family::default(),
            ready: Family::default(),
            last_success: Family::default(),
            next_refresh: Family::default(),
            failures: Family::default(),
            logins: Family::default(),
            login_duration: Family::new_with_constructor(login_histogram),
            write_failures: Family::default(),
            reload_successful: Gauge::default(),
            reload_success_time: FloatGauge::default(),
            scrape: Mutex::new(()),
        };
        registry.register(
            "token_expiry_timestamp_seconds",
            "When the token held expires, in seconds since the epoch (0: no token yet)",
            metrics.expiry.clone(),
        );
        registry.register(
            "token_ready",
            "1 when every output holds a token that has not expired, else 0",
            metrics.ready.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "When the last login succeeded, in seconds since the epoch (0: none since start)",
            metrics.last_success.clone(),
        );
        registry.register(
            "next_refresh_timestamp_seconds",
            "When the next login is planned, in seconds since the epoch (0: none planned)",
            metrics.next_refresh.clone(),
        );
        registry.register(
            "consecutive_failures",
            "Failed logins in a row",
            metrics.failures.clone(),
        );
        registry.register(
            "logins",
            "Logins attempted, by outcome: ok, transient, rejected (credentials), protocol (an unusable reply)",
            metrics.logins.clone(),
        );
        registry.register(
            "login_duration_seconds",
            "How long logins took, from sending the request to a validated token or an error",
            metrics.login_duration.clone(),
        );
        registry.register(
            "write_failures",
            "Failed attempts to write a token to an account's outputs",
            metrics.write_failures.clone(),
        );
        registry.register(
            "config_last_reload_successful",
            "Whether the last attempt to load the config succeeded (1) or was rejected (0)",
            metrics.reload_successful.clone(),
        );
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "When the config in force was loaded, in seconds since the epoch",
            metrics.reload_success_time.clone(),
        );
        let build: Family<VersionLabel, Gauge> = Family::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The running version; always 1", build);
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The counters of an account (created at zero for every outcome, so that rates exist from
    /// the first scrape).
    pub fn account(&self, name: &str) -> AccountMetrics {
        let label = AccountLabel {
            account: name.to_string(),
        };
        let logins = Outcome::ALL.map(|outcome| {
            self.logins.get_or_create_owned(&LoginLabels {
                account: name.to_string(),
                outcome: outcome.name(),
            })
        });
        AccountMetrics {
            logins,
            login_duration: self.login_duration.get_or_create_owned(&label),
            write_failures: self.write_failures.get_or_create_owned(&label),
        }
    }

    /// Drops every series of an account that left the config. Waits for a scrape in progress,
    /// which could otherwise set the account's gauges again after they were dropped.
    pub fn forget(&self, name: &str) {
        let _one_at_a_time = self
            .scrape
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let label = AccountLabel {
            account: name.to_string(),
        };
        for family in [&self.expiry, &self.last_success, &self.next_refresh] {
            family.remove(&label);
        }
        for family in [&self.ready, &self.failures] {
            family.remove(&label);
        }
        self.login_duration.remove(&label);
        self.write_failures.remove(&label);
        for outcome in Outcome::ALL {
            self.logins.remove(&LoginLabels {
                account: name.to_string(),
                outcome: outcome.name(),
            });
        }
    }

    /// Sets the gauges from the accounts `snapshot` gives (taken under the scrape lock, so an
    /// account removed meanwhile is either in it and then forgotten, or not in it) at `now`, and
    /// encodes everything as OpenMetrics text.
    pub fn encode(
        &self,
        snapshot: impl FnOnce() -> Vec<AccountView>,
        reload: ReloadRecord,
        now: Timestamp,
    ) -> String {
        let _one_at_a_time = self
            .scrape
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let accounts = snapshot();
        let seconds = |at: Option<Timestamp>| at.map_or(0.0, |at| at.as_millisecond() as f64 / 1e3);
        for view in &accounts {
            let label = AccountLabel {
                account: view.name.clone(),
            };
            let status = &view.status;
            self.expiry
                .get_or_create(&label)
                .set(seconds(status.expires_at));
            self.ready
                .get_or_create(&label)
                .set(i64::from(status.not_ready(now).is_none()));
            self.last_success
                .get_or_create(&label)
                .set(seconds(status.last_success));
            self.next_refresh
                .get_or_create(&label)
                .set(seconds(status.next_attempt));
            self.failures
                .get_or_create(&label)
                .set(i64::from(status.consecutive_failures));
        }
        self.reload_successful.set(i64::from(reload.successful));
        self.reload_success_time
            .set(seconds(Some(reload.last_success)));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The OpenMetrics text `open` in the classic text format 0.0.4: a counter family is named with
/// its `_total` suffix, and `# EOF` and `# UNIT` lines go. Samples are the same in both.
pub fn classic_text(open: &str) -> String {
    let counters: std::collections::HashSet<&str> = open
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(open.len() + 16 * counters.len());
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => text.push_str(&line),
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::status::{AccountStatus, Health};

    #[test]
    fn the_classic_format_names_counter_families_with_their_suffix() {
        let open = "# HELP x_logins Logins.\n# TYPE x_logins counter\nx_logins_total{a=\"b\"} 1\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n# EOF\n";
        assert_eq!(
            classic_text(open),
            "# HELP x_logins_total Logins.\n# TYPE x_logins_total counter\nx_logins_total{a=\"b\"} 1\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n"
        );
    }

    #[test]
    fn every_series_is_there_with_its_value_and_removed_accounts_go() {
        let metrics = Metrics::new();
        let counters = metrics.account("alpha");
        counters.login_finished(Outcome::Ok, Duration::from_millis(30));
        counters.login_finished(Outcome::Transient, Duration::from_millis(2));
        counters.write_failed();
        let _beta = metrics.account("beta");
        let expires = Timestamp::from_second(1_900_000_060).expect("in range");
        let now = Timestamp::from_second(1_900_000_000).expect("in range");
        let status = AccountStatus {
            health: Health::Healthy,
            expires_at: Some(expires),
            written: true,
            attempted: true,
            ..AccountStatus::default()
        };
        let views = [
            AccountView {
                name: "alpha".to_string(),
                outputs: Vec::new(),
                status,
            },
            AccountView {
                name: "beta".to_string(),
                outputs: Vec::new(),
                status: AccountStatus::default(),
            },
        ];
        let reload = ReloadRecord {
            successful: false,
            last_success: now,
        };
        let text = metrics.encode(|| views.to_vec(), reload, now);
        for line in [
            "tokenkeeper_token_expiry_timestamp_seconds{account=\"alpha\"} 1900000060.0",
            "tokenkeeper_token_ready{account=\"alpha\"} 1",
            "tokenkeeper_token_ready{account=\"beta\"} 0",
            "tokenkeeper_logins_total{account=\"alpha\",outcome=\"ok\"} 1",
            "tokenkeeper_logins_total{account=\"alpha\",outcome=\"transient\"} 1",
            "tokenkeeper_logins_total{account=\"beta\",outcome=\"rejected\"} 0",
            "tokenkeeper_login_duration_seconds_count{account=\"alpha\"} 2",
            "tokenkeeper_write_failures_total{account=\"alpha\"} 1",
            "tokenkeeper_config_last_reload_successful 0",
            "tokenkeeper_config_last_reload_success_timestamp_seconds 1900000000.0",
            "tokenkeeper_consecutive_failures{account=\"beta\"} 0",
        ] {
            assert!(
                text.lines().any(|have| have == line),
                "{line} missing in\n{text}"
            );
        }
        assert!(text.contains("tokenkeeper_build_info{version=\""), "{text}");
        metrics.forget("alpha");
        let text = metrics.encode(|| views[1..].to_vec(), reload, now);
        assert!(!text.contains("alpha"), "{text}");
        assert!(text.contains("beta"), "{text}");
    }
}
