//! The Prometheus metrics. Every per-account series (gauges, counters, the login-duration
//! histogram) is made at each scrape from a snapshot of the status board, where each account's
//! status keeps its [`Counts`]: the gauges are as fresh as the scrape, and the registry holds no
//! entry per account.
//!
//! Two formats: OpenMetrics text (what prometheus-client writes, and what Prometheus asks for), and
//! the classic text format 0.0.4 for every other client (`curl`, `promtool check metrics`), which
//! differs only in naming a counter's family with its `_total` suffix and having no `# EOF`.
//!
//! Invariants: the only label values are account names and fixed words (outcomes, the version),
//! never a secret, a token or an error text; an account taken off the board takes its series
//! with it, even when a scrape runs meanwhile; names follow Prometheus's conventions (`_total`,
//! `_seconds`, `_timestamp_seconds`), as `promtool check metrics` checks.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::status::{AccountView, Outcome, ReloadRecord};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Login durations, in seconds: a loopback login takes milliseconds, a slow vendor several
/// seconds, a timeout 30 s.
const LOGIN_BUCKETS: [f64; 11] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// One account's counters: logins by outcome, their durations, failed writes. Plain numbers in
/// the account's status (some 140 bytes), turned into series at each scrape: a
/// prometheus-client family entry per series cost about 1 KiB per account.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    /// By [`Outcome::ALL`]'s order.
    logins: [u64; Outcome::ALL.len()],
    /// Logins whose duration fell in each of [`LOGIN_BUCKETS`] (not cumulative), and past the
    /// last.
    durations: [u64; LOGIN_BUCKETS.len() + 1],
    duration_sum: f64,
    write_failures: u64,
}

impl Counts {
    pub fn login_finished(&mut self, outcome: Outcome, duration: Duration) {
        let index = Outcome::ALL
            .iter()
            .position(|known| *known == outcome)
            .unwrap_or(0);
        self.logins[index] = self.logins[index].saturating_add(1);
        let seconds = duration.as_secs_f64();
        let bucket = LOGIN_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LOGIN_BUCKETS.len());
        self.durations[bucket] = self.durations[bucket].saturating_add(1);
        self.duration_sum += seconds;
    }

    pub fn write_failed(&mut self) {
        self.write_failures = self.write_failures.saturating_add(1);
    }
}

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    accounts: Arc<AccountSeries>,
    reload_successful: Gauge,
    reload_success_time: FloatGauge,
    /// Scrapes fill `accounts` and then encode: one at a time. (The collector locks `accounts`
    /// itself while the registry is encoded, so this cannot be that lock.)
    scrape: Mutex<()>,
}

/// The per-account series, made at each scrape from the accounts on the board then: an account
/// taken off the board takes its series with it.
#[derive(Debug, Default)]
struct AccountSeries {
    /// The board as the scrape in progress saw it; empty between scrapes.
    accounts: Mutex<Vec<Sample>>,
}

impl Sample {
    /// The label of the account's series.
    fn account(&self) -> [(&'static str, &str); 1] {
        [("account", self.name.as_str())]
    }
}

/// One account at a scrape.
#[derive(Debug)]
struct Sample {
    name: String,
    expiry: f64,
    ready: bool,
    last_success: f64,
    next_refresh: f64,
    failures: u32,
    counts: Counts,
    fleet: Option<super::status::FleetView>,
}

/// A family of per-account series: its name, help, type, and how to encode one account's
/// series into it.
struct PerAccount {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    encode: fn(&Sample, &mut MetricEncoder<'_>) -> std::fmt::Result,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tokenkeeper");
        let accounts = Arc::new(AccountSeries::default());
        registry.register_collector(Box::new(Arc::clone(&accounts)));
        let reload_successful = Gauge::default();
        let reload_success_time = FloatGauge::default();
        registry.register(
            "config_last_reload_successful",
            "Whether the last attempt to load the config succeeded (1) or was rejected (0)",
            reload_successful.clone(),
        );
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "When the config in force was loaded, in seconds since the epoch",
            reload_success_time.clone(),
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
            accounts,
            reload_successful,
            reload_success_time,
            scrape: Mutex::new(()),
        }
    }

    /// Encodes everything as OpenMetrics text: the accounts `snapshot` gives, at `now`, and the
    /// outcome of the last reload.
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
        let seconds = |at: Option<Timestamp>| at.map_or(0.0, |at| at.as_millisecond() as f64 / 1e3);
        let samples = snapshot()
            .into_iter()
            .map(|view| {
                let status = &view.status;
                Sample {
                    expiry: seconds(status.expires_at),
                    ready: status.not_ready(now).is_none(),
                    last_success: seconds(status.last_success),
                    next_refresh: seconds(status.next_attempt),
                    failures: status.consecutive_failures,
                    counts: status.counts,
                    fleet: status.fleet.clone(),
                    name: view.name,
                }
            })
            .collect();
        *self.accounts.lock() = samples;
        self.reload_successful.set(i64::from(reload.successful));
        self.reload_success_time
            .set(seconds(Some(reload.last_success)));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        self.accounts.lock().clear();
        text
    }
}

impl AccountSeries {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Sample>> {
        self.accounts
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    const FAMILIES: [PerAccount; 11] = [
        PerAccount {
            name: "token_expiry_timestamp_seconds",
            help: "When the token held expires, in seconds since the epoch (0: no token yet)",
            kind: MetricType::Gauge,
            encode: |sample, family| gauge(family, sample, &sample.expiry),
        },
        PerAccount {
            name: "token_ready",
            help: "1 when every output holds a token that has not expired, else 0",
            kind: MetricType::Gauge,
            encode: |sample, family| gauge(family, sample, &i64::from(sample.ready)),
        },
        PerAccount {
            name: "last_success_timestamp_seconds",
            help: "When the last login succeeded, in seconds since the epoch (0: none since start)",
            kind: MetricType::Gauge,
            encode: |sample, family| gauge(family, sample, &sample.last_success),
        },
        PerAccount {
            name: "next_refresh_timestamp_seconds",
            help: "When the next login is planned, in seconds since the epoch (0: none planned)",
            kind: MetricType::Gauge,
            encode: |sample, family| gauge(family, sample, &sample.next_refresh),
        },
        PerAccount {
            name: "consecutive_failures",
            help: "Failed logins in a row",
            kind: MetricType::Gauge,
            encode: |sample, family| gauge(family, sample, &i64::from(sample.failures)),
        },
        PerAccount {
            name: "logins",
            help: "Logins attempted, by outcome: ok, transient, rejected (credentials), protocol (an unusable reply)",
            kind: MetricType::Counter,
            encode: |sample, family| {
                for (outcome, count) in Outcome::ALL.iter().zip(sample.counts.logins) {
                    let labels = [
                        ("account", sample.name.as_str()),
                        ("outcome", outcome.name()),
                    ];
                    family
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
                }
                Ok(())
            },
        },
        PerAccount {
            name: "login_duration_seconds",
            help: "How long logins took, from sending the request to a validated token or an error",
            kind: MetricType::Histogram,
            encode: |sample, family| {
                let counts = &sample.counts;
                let buckets: Vec<(f64, u64)> = LOGIN_BUCKETS
                    .iter()
                    .copied()
                    .chain([f64::INFINITY])
                    .zip(counts.durations)
                    .collect();
                let count = counts.durations.iter().sum();
                family
                    .encode_family(&sample.account())?
                    .encode_histogram::<NoLabelSet>(counts.duration_sum, count, &buckets, None)
            },
        },
        PerAccount {
            name: "write_failures",
            help: "Failed attempts to write a token to an account's outputs",
            kind: MetricType::Counter,
            encode: |sample, family| {
                family
                    .encode_family(&sample.account())?
                    .encode_counter::<NoLabelSet, _, u64>(&sample.counts.write_failures, None)
            },
        },
        PerAccount {
            name: "fleet_role",
            help: "A fleet account's role on this member: 1 for the role it has (leader, follower, candidate, alone), 0 for the others",
            kind: MetricType::Gauge,
            encode: |sample, family| {
                let Some(fleet) = &sample.fleet else {
                    return Ok(());
                };
                for role in crate::fleet::Role::ALL {
                    let labels = [("account", sample.name.as_str()), ("role", role.name())];
                    family
                        .encode_family(&labels)?
                        .encode_gauge(&i64::from(fleet.role == role))?;
                }
                Ok(())
            },
        },
        PerAccount {
            name: "fleet_logins",
            help: "Logins this member made for a fleet account, by role: as the leader, or alone with the store out of reach",
            kind: MetricType::Counter,
            encode: |sample, family| {
                let Some(fleet) = &sample.fleet else {
                    return Ok(());
                };
                for (role, count) in [
                    ("leader", fleet.logins_as_leader),
                    ("alone", fleet.logins_alone),
                ] {
                    let labels = [("account", sample.name.as_str()), ("role", role)];
                    family
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
                }
                Ok(())
            },
        },
        PerAccount {
            name: "fleet_store_reachable",
            help: "1 while this member reaches the fleet's store (etcd) for the account, else 0",
            kind: MetricType::Gauge,
            encode: |sample, family| {
                let Some(fleet) = &sample.fleet else {
                    return Ok(());
                };
                gauge(family, sample, &i64::from(fleet.store_error.is_none()))
            },
        },
    ];
}

/// Encodes `value` as `sample`'s account's series of the gauge `family`.
fn gauge(
    family: &mut MetricEncoder<'_>,
    sample: &Sample,
    value: &impl prometheus_client::encoding::EncodeGaugeValue,
) -> std::fmt::Result {
    family.encode_family(&sample.account())?.encode_gauge(value)
}

impl Collector for AccountSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let samples = self.lock();
        if samples.is_empty() {
            return Ok(());
        }
        for family in &Self::FAMILIES {
            let mut encoder =
                encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
            for sample in samples.iter() {
                (family.encode)(sample, &mut encoder)?;
            }
        }
        Ok(())
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
    fn fleet_accounts_have_role_login_and_store_series_and_others_none() {
        let metrics = Metrics::new();
        let now = Timestamp::from_second(1_900_000_000).expect("in range");
        let fleet = crate::daemon::status::FleetView {
            role: crate::fleet::Role::Follower,
            leader: Some("node-b".to_string()),
            term: Some(42),
            store_error: Some("etcdserver: no leader".to_string()),
            logins_as_leader: 3,
            logins_alone: 1,
        };
        let views = [
            AccountView {
                name: "shared".to_string(),
                outputs: Vec::new(),
                status: AccountStatus {
                    fleet: Some(fleet),
                    ..AccountStatus::default()
                },
            },
            AccountView {
                name: "own".to_string(),
                outputs: Vec::new(),
                status: AccountStatus::default(),
            },
        ];
        let reload = ReloadRecord {
            successful: true,
            last_success: now,
        };
        let text = classic_text(&metrics.encode(|| views.to_vec(), reload, now));
        for line in [
            "tokenkeeper_fleet_role{account=\"shared\",role=\"follower\"} 1",
            "tokenkeeper_fleet_role{account=\"shared\",role=\"leader\"} 0",
            "tokenkeeper_fleet_role{account=\"shared\",role=\"candidate\"} 0",
            "tokenkeeper_fleet_role{account=\"shared\",role=\"alone\"} 0",
            "tokenkeeper_fleet_logins_total{account=\"shared\",role=\"leader\"} 3",
            "tokenkeeper_fleet_logins_total{account=\"shared\",role=\"alone\"} 1",
            "tokenkeeper_fleet_store_reachable{account=\"shared\"} 0",
            "# TYPE tokenkeeper_fleet_logins_total counter",
        ] {
            assert!(
                text.lines().any(|have| have == line),
                "{line} missing in\n{text}"
            );
        }
        assert!(!text.contains("fleet_role{account=\"own\""), "{text}");
        // No error text and no member name becomes a label.
        assert!(
            !text.contains("no leader") && !text.contains("node-b"),
            "{text}"
        );
    }

    #[test]
    fn every_series_is_there_with_its_value_and_removed_accounts_go() {
        let metrics = Metrics::new();
        let mut counts = Counts::default();
        counts.login_finished(Outcome::Ok, Duration::from_millis(30));
        counts.login_finished(Outcome::Transient, Duration::from_millis(2));
        counts.write_failed();
        let expires = Timestamp::from_second(1_900_000_060).expect("in range");
        let now = Timestamp::from_second(1_900_000_000).expect("in range");
        let status = AccountStatus {
            health: Health::Healthy,
            expires_at: Some(expires),
            written: true,
            attempted: true,
            counts,
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
            "tokenkeeper_login_duration_seconds_sum{account=\"alpha\"} 0.032",
            "tokenkeeper_login_duration_seconds_bucket{le=\"0.01\",account=\"alpha\"} 1",
            "tokenkeeper_login_duration_seconds_bucket{le=\"0.025\",account=\"alpha\"} 1",
            "tokenkeeper_login_duration_seconds_bucket{le=\"0.05\",account=\"alpha\"} 2",
            "tokenkeeper_login_duration_seconds_bucket{le=\"+Inf\",account=\"alpha\"} 2",
            "tokenkeeper_login_duration_seconds_count{account=\"beta\"} 0",
            "tokenkeeper_write_failures_total{account=\"beta\"} 0",
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
        // An account gone from the board is gone from the metrics.
        let text = metrics.encode(|| views[1..].to_vec(), reload, now);
        assert!(!text.contains("alpha"), "{text}");
        assert!(text.contains("beta"), "{text}");
    }
}
