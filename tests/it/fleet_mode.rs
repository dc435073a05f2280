//! Fleet mode end to end: several real daemons share one account through a real three-member
//! etcd cluster on loopback, against the loopback token endpoint, which counts logins and tells
//! live tokens from dead ones.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokenkeeper::demo::endpoint::{Credentials, EndpointOptions, Route, TokenEndpoint};

use crate::support::etcd_cluster::EtcdCluster;
use crate::support::{Daemon, eventually, tokenkeeper, write_secret};

/// One instance of the fleet: its config, output file and process.
struct Instance {
    member: String,
    /// The status listener's address.
    listen: String,
    config: String,
    output: PathBuf,
    daemon: Option<Daemon>,
}

struct Fleet {
    scratch: tempfile::TempDir,
    endpoint: Arc<TokenEndpoint>,
    instances: Vec<Instance>,
    prefix: String,
    key_hex: String,
}

/// What every member's config shares.
struct Common<'a> {
    cluster: &'a EtcdCluster,
    prefix: &'a str,
    key_file: &'a Path,
    base: &'a str,
    secret: &'a Path,
    extra_fleet: &'a str,
}

/// A config for member `member`: fast timings, a 2 s lease (unless `extra_fleet` sets one), the
/// account shared.
fn config_text(common: &Common<'_>, dir: &Path, member: &str, listen: &str) -> String {
    let Common {
        cluster,
        prefix,
        key_file,
        base,
        secret,
        extra_fleet,
    } = common;
    let credentials = Credentials::demo();
    format!(
        r#"
[daemon]
refresh_at = 0.4
refresh_margin = "500ms"
min_refresh_interval = "300ms"
retry_base = "200ms"
retry_cap = "1s"
startup_spread = "100ms"
shutdown_grace = "2s"
on_expiry = "keep"
state_dir = "{state}"
listen = "{listen}"

[fleet]
{endpoints}
prefix = "{prefix}"
member = "{member}"
key_file = "{key}"
{lease_ttl}
{extra_fleet}

[accounts.shared]
preset = "apinizer"
base_url = "{base}"
client_id = "{id}"
client_secret = {{ file = "{secret}" }}
fleet = true
[[accounts.shared.outputs]]
path = "{out}/shared.token"
"#,
        state = dir.join("state").display(),
        endpoints = cluster.endpoints_toml(),
        key = key_file.display(),
        // A test that sets its own lease TTL in `extra_fleet` gets it instead of the 2 s.
        lease_ttl = if extra_fleet.contains("lease_ttl") {
            ""
        } else {
            "lease_ttl = \"2s\""
        },
        id = credentials.apinizer_client_id,
        secret = secret.display(),
        out = dir.join("out").display(),
    )
}

impl Fleet {
    async fn start(cluster: &EtcdCluster, size: usize, lifetime: Duration, prefix: &str) -> Fleet {
        Fleet::start_with(cluster, size, lifetime, prefix, "").await
    }

    async fn start_with(
        cluster: &EtcdCluster,
        size: usize,
        lifetime: Duration,
        prefix: &str,
        extra_fleet: &str,
    ) -> Fleet {
        let endpoint = TokenEndpoint::start(EndpointOptions {
            lifetime,
            ..EndpointOptions::default()
        })
        .await
        .unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let key_run = tokenkeeper(&["fleet-key"], &[]).await;
        assert_eq!(key_run.code, 0, "{}", key_run.stderr);
        let key_file = scratch.path().join("fleet.key");
        std::fs::write(&key_file, key_run.stdout.trim()).unwrap();
        set_mode(&key_file, 0o600);
        let key_hex = hex_of_key(key_run.stdout.trim());
        let secret = write_secret(
            scratch.path(),
            "apinizer",
            &Credentials::demo().apinizer_client_secret,
        );
        let base = endpoint.base_url();
        let mut instances = Vec::new();
        for index in 0..size {
            let member = format!("node-{index}");
            let dir = scratch.path().join(&member);
            std::fs::create_dir_all(dir.join("out")).unwrap();
            let listen = format!(
                "127.0.0.1:{}",
                std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            );
            let common = Common {
                cluster,
                prefix,
                key_file: &key_file,
                base: &base,
                secret: &secret,
                extra_fleet,
            };
            let text = config_text(&common, &dir, &member, &listen);
            let config = dir.join("config.toml");
            std::fs::write(&config, text).unwrap();
            set_mode(&config, 0o600);
            instances.push(Instance {
                member,
                listen,
                config: config.display().to_string(),
                output: dir.join("out").join("shared.token"),
                daemon: None,
            });
        }
        let mut fleet = Fleet {
            scratch,
            endpoint: Arc::new(endpoint),
            instances,
            prefix: prefix.to_string(),
            key_hex,
        };
        for index in 0..size {
            // At trace level, so that the canaries cover every log line there is.
            fleet.launch(index, &[("RUST_LOG", "trace")]);
        }
        fleet
    }

    fn launch(&mut self, index: usize, env: &[(&str, &str)]) {
        let instance = &mut self.instances[index];
        instance.daemon = Some(Daemon::start(&instance.config, self.scratch.path(), env));
    }

    /// SIGKILLs an instance and waits for it (what dropping a `Daemon` does).
    fn kill(&mut self, index: usize) {
        self.instances[index].daemon = None;
    }

    /// The token of a sealed value, opened with the fleet's key.
    fn open(&self, sealed: &[u8]) -> String {
        let bytes: Vec<u8> = (0..self.key_hex.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&self.key_hex[at..at + 2], 16).unwrap())
            .collect();
        let key = tokenkeeper::fleet::seal::FleetKey::from_bytes(&bytes.try_into().unwrap());
        key.open(&self.prefix, "shared", sealed)
            .expect("the fleet's own value opens")
            .token
            .expose()
            .to_string()
    }

    fn logins(&self) -> usize {
        self.endpoint.issued(Route::Apinizer)
    }

    fn logs(&self) -> String {
        self.instances
            .iter()
            .filter_map(|instance| {
                let daemon = instance.daemon.as_ref()?;
                Some(format!("--- {}\n{}", instance.member, daemon.log()))
            })
            .collect()
    }

    /// The `fleet` object of the account in an instance's `status --json`.
    async fn status(&self, index: usize) -> Option<serde_json::Value> {
        let run = tokenkeeper(
            &[
                "status",
                "--json",
                "--config",
                &self.instances[index].config,
            ],
            &[],
        )
        .await;
        let document: serde_json::Value = serde_json::from_str(&run.stdout).ok()?;
        Some(document["accounts"][0].clone())
    }

    /// A status listener path of an instance: its status code and body.
    async fn get(&self, index: usize, path: &str) -> (u16, String) {
        let url = format!("http://{}{path}", self.instances[index].listen);
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        match client.get(url).send().await {
            Ok(reply) => (
                reply.status().as_u16(),
                reply.text().await.unwrap_or_default(),
            ),
            Err(_) => (0, String::new()),
        }
    }

    /// Polls every instance's status until `holds` is true of each, or `limit` passes; whether
    /// it held, and the statuses last read.
    async fn until_all(
        &self,
        limit: Duration,
        holds: impl Fn(&serde_json::Value) -> bool,
    ) -> (bool, Vec<serde_json::Value>) {
        let deadline = Instant::now() + limit;
        loop {
            let mut statuses = Vec::new();
            for index in 0..self.instances.len() {
                statuses.push(self.status(index).await.unwrap_or_default());
            }
            let all = statuses.iter().all(&holds);
            if all || Instant::now() >= deadline {
                return (all, statuses);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every running instance reports `leader` as leading (the leader itself
    /// `leader`, the others `follower` of it); the leader's index.
    async fn settled(&self, limit: Duration) -> Option<usize> {
        let deadline = Instant::now() + limit;
        loop {
            let mut roles = Vec::new();
            for (index, instance) in self.instances.iter().enumerate() {
                if instance.daemon.is_none() {
                    continue;
                }
                let account = self.status(index).await.unwrap_or_default();
                roles.push((
                    index,
                    account["fleet"]["role"].as_str().unwrap_or("").to_string(),
                    account["fleet"]["leader"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                ));
            }
            let leaders: Vec<usize> = roles
                .iter()
                .filter(|(_, role, _)| role == "leader")
                .map(|(index, _, _)| *index)
                .collect();
            if let [leader] = leaders[..] {
                let name = &self.instances[leader].member;
                if roles.iter().all(|(index, role, named)| {
                    *index == leader || (role == "follower" && named == name)
                }) {
                    return Some(leader);
                }
            }
            if Instant::now() >= deadline {
                eprintln!("roles: {roles:?}");
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits for one leader (as [`Fleet::settled`]) and for every running instance's file to
    /// hold one token; the leader's index and that token. Panics with the logs otherwise.
    async fn settled_on_one_token(&self) -> (usize, String) {
        let leader = self
            .settled(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("no single leader:\n{}", self.logs()));
        let one = eventually(Duration::from_secs(10), || {
            let tokens: Vec<Option<String>> = self
                .instances
                .iter()
                .filter(|instance| instance.daemon.is_some())
                .map(|instance| read(&instance.output))
                .collect();
            tokens[0].is_some() && tokens.iter().all(|token| *token == tokens[0])
        })
        .await;
        assert!(one, "the files do not hold one token:\n{}", self.logs());
        let token = read(&self.instances[leader].output).unwrap_or_default();
        (leader, token)
    }

    /// Waits (as [`Fleet::settled`]) for a leader other than `old`; its index. Panics with the
    /// logs otherwise.
    async fn next_leader(&self, old: usize, limit: Duration) -> usize {
        let next = self
            .settled(limit)
            .await
            .unwrap_or_else(|| panic!("no new leader:\n{}", self.logs()));
        assert_ne!(next, old, "the old leader still leads:\n{}", self.logs());
        next
    }

    /// Reads every running instance's file every 25 ms until stopped, checking each token it
    /// reads against the endpoint; a dead token (or a file gone after the first read) is
    /// recorded.
    fn reader(&self) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let outputs: Vec<PathBuf> = self.instances.iter().map(|i| i.output.clone()).collect();
        let endpoint = Arc::clone(&self.endpoint);
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut seen = vec![false; outputs.len()];
            let mut problems = Vec::new();
            let mut reads = 0usize;
            while !flag.load(Ordering::SeqCst) {
                for (index, path) in outputs.iter().enumerate() {
                    match std::fs::read_to_string(path) {
                        Ok(token) => {
                            reads += 1;
                            seen[index] = true;
                            if !endpoint.is_live(token.trim()) {
                                problems.push(format!("{}: a dead token", path.display()));
                            }
                        }
                        Err(_) if seen[index] => problems.push(format!("{}: gone", path.display())),
                        Err(_) => {}
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            (reads, problems)
        });
        Reader { stop, task }
    }
}

struct Reader {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl Reader {
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap()
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The key `fleet-key` printed (Base64), as hex, for canary searches.
fn hex_of_key(base64: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(base64)
        .expect("fleet-key prints Base64");
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_instances_log_in_once_per_lifetime_and_a_killed_leader_is_replaced() {
    let Some(cluster) = EtcdCluster::start(3).await else {
        return;
    };
    // Renewed with at least 3.3 s left: more than a takeover takes (the 2 s lease, etcd's
    // expiry check, a login), so that a leader killed just before it renews leaves no follower
    // with a dead token.
    let lifetime = Duration::from_secs(6);
    let mut fleet = Fleet::start(&cluster, 4, lifetime, "/fleet-a").await;
    // Every file holds the leader's token.
    let (leader, _) = fleet.settled_on_one_token().await;

    let reader = fleet.reader();
    let before = fleet.logins();
    let watched = Duration::from_secs(16);
    tokio::time::sleep(watched).await;
    let during = fleet.logins() - before;
    // Renewed at about 40 % of each lifetime: about 7 logins in all. Each instance logging in
    // for itself would make four times as many.
    let per_lifetime = watched.as_secs_f64() / (lifetime.as_secs_f64() * 0.4);
    assert!(
        (2..=(per_lifetime.ceil() as usize + 3)).contains(&during),
        "{during} logins in {watched:?} (about {per_lifetime:.1} expected):\n{}",
        fleet.logs()
    );
    // Only the leader logged in.
    let status = fleet.status(leader).await.unwrap();
    assert!(status["fleet"]["logins_as_leader"].as_u64().unwrap_or(0) >= during as u64 - 1);
    for index in (0..4).filter(|index| *index != leader) {
        let status = fleet.status(index).await.unwrap();
        assert_eq!(status["fleet"]["logins_as_leader"], 0, "{status}");
        assert_eq!(status["fleet"]["role"], "follower", "{status}");
    }

    let (_, metrics) = fleet.get(leader, "/metrics").await;
    assert!(
        metrics.contains("tokenkeeper_fleet_role{account=\"shared\",role=\"leader\"} 1")
            && metrics.contains("tokenkeeper_fleet_store_reachable{account=\"shared\"} 1"),
        "{metrics}"
    );
    let follower = (leader + 1) % 4;
    let (_, metrics) = fleet.get(follower, "/metrics").await;
    assert!(
        metrics.contains("tokenkeeper_fleet_role{account=\"shared\",role=\"follower\"} 1")
            && metrics
                .contains("tokenkeeper_fleet_logins_total{account=\"shared\",role=\"leader\"} 0"),
        "{metrics}"
    );

    // SIGKILL the leader: a survivor leads and logs in within the lease TTL and a login.
    let killed_at = Instant::now();
    let logins_at_kill = fleet.logins();
    fleet.kill(leader);
    let next = fleet.next_leader(leader, Duration::from_secs(15)).await;
    let took_over = eventually(Duration::from_secs(10), || fleet.logins() > logins_at_kill).await;
    assert!(
        took_over,
        "the new leader did not log in:\n{}",
        fleet.logs()
    );
    let takeover = killed_at.elapsed();
    assert!(
        takeover < Duration::from_secs(2 + 8),
        "takeover took {takeover:?}"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (reads, problems) = reader.finish().await;
    // The killed leader's file is no longer renewed: only the survivors count from the kill.
    let problems: Vec<&String> = problems
        .iter()
        .filter(|problem| !problem.contains(&format!("/node-{leader}/")))
        .collect();
    assert!(reads > 500, "only {reads} reads");
    assert!(problems.is_empty(), "{problems:?}\n{}", fleet.logs());
    eprintln!(
        "fleet figures: {during} logins in {watched:?} for 4 instances ({per_lifetime:.1} renewals \
         due); takeover after SIGKILL {takeover:?}; {reads} token reads, none dead"
    );

    // Canaries: neither a token nor the key is in etcd in clear, in any log or in status.
    let tokens: Vec<String> = fleet
        .instances
        .iter()
        .filter_map(|instance| read(&instance.output))
        .collect();
    let stored = cluster.dump(&fleet.prefix).await;
    assert!(!stored.is_empty());
    for (key, value) in &stored {
        let value = String::from_utf8_lossy(value);
        for token in &tokens {
            assert!(
                !value.contains(token.as_str()),
                "{key} holds a token in clear"
            );
        }
        assert!(!value.contains(&fleet.key_hex), "{key} holds the key");
        if key.contains("/token/") {
            assert!(value.starts_with("tkfleet1."), "{key}: {value}");
        }
    }
    let logs = fleet.logs();
    for token in &tokens {
        assert!(!logs.contains(token.as_str()), "a log holds a token");
    }
    assert!(!logs.contains(&fleet.key_hex));
    let status = tokenkeeper(
        &[
            "status",
            "--json",
            "--config",
            &fleet.instances[next].config,
        ],
        &[],
    )
    .await;
    for token in &tokens {
        assert!(!status.stdout.contains(token.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lost_etcd_member_changes_nothing_and_a_lost_quorum_serves_the_last_token() {
    let Some(mut cluster) = EtcdCluster::start(3).await else {
        return;
    };
    // Long enough that the token outlives the outage below.
    let lifetime = Duration::from_secs(40);
    let fleet = Fleet::start(&cluster, 3, lifetime, "/fleet-b").await;
    let (leader, token) = fleet.settled_on_one_token().await;
    let token_of = |index: usize| read(&fleet.instances[index].output);
    let logins = fleet.logins();

    // One member of three goes: the same leader, no login, the same token everywhere.
    cluster.stop(0);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        fleet.settled(Duration::from_secs(5)).await,
        Some(leader),
        "{}",
        fleet.logs()
    );
    assert_eq!(fleet.logins(), logins, "{}", fleet.logs());
    for index in 0..3 {
        assert_eq!(token_of(index).as_deref(), Some(token.as_str()));
        let status = fleet.status(index).await.unwrap();
        assert!(status["fleet"]["store_error"].is_null(), "{status}");
    }

    // A second one goes: no quorum. Every instance says so, none logs in, and every file keeps
    // the live token.
    cluster.stop(1);
    let (reported, statuses) = fleet
        .until_all(Duration::from_secs(20), |status| {
            status["fleet"]["store_error"].is_string()
                && status["fleet"]["role"] != "leader"
                && status["ready"] == true
        })
        .await;
    assert!(
        reported,
        "the outage is not reported: {statuses:?}\n{}",
        fleet.logs()
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        fleet.logins(),
        logins,
        "an instance logged in alone:\n{}",
        fleet.logs()
    );
    for index in 0..3 {
        assert_eq!(token_of(index).as_deref(), Some(token.as_str()));
        assert!(fleet.endpoint.is_live(&token));
    }
    let table = tokenkeeper(&["status", "--config", &fleet.instances[0].config], &[]).await;
    assert!(
        table.stdout.contains("store out of reach"),
        "{}",
        table.stdout
    );

    let (code, body) = fleet.get(2, "/readyz").await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.starts_with("ok\n")
            && body.contains("shared: serving the last token until it expires at"),
        "{body}"
    );
    let (_, metrics) = fleet.get(2, "/metrics").await;
    assert!(
        metrics.contains("tokenkeeper_fleet_store_reachable{account=\"shared\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tokenkeeper_fleet_role{account=\"shared\",role=\"leader\"} 0"),
        "{metrics}"
    );

    // Back to quorum: a leader again, and the outage is over.
    cluster.restart(0).await;
    cluster.restart(1).await;
    assert!(
        fleet.settled(Duration::from_secs(30)).await.is_some(),
        "no leader after the cluster recovered:\n{}",
        fleet.logs()
    );
    let (recovered, statuses) = fleet
        .until_all(Duration::from_secs(20), |status| {
            status["fleet"]["store_error"].is_null()
        })
        .await;
    assert!(recovered, "{statuses:?}\n{}", fleet.logs());
    // The new leader logged in once, and every instance follows it.
    assert!(
        eventually(Duration::from_secs(15), || {
            let now = token_of(0);
            now.is_some()
                && now.as_deref() != Some(token.as_str())
                && (1..3).all(|i| token_of(i) == now)
        })
        .await,
        "{}",
        fleet.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_etcd_member_holds_up_no_takeover() {
    let Some(cluster) = EtcdCluster::start(3).await else {
        return;
    };
    // A lease that outlives a call to a hung member (3 s), as in production: the members keep
    // their leases through the other endpoints while their campaigns wait on the hung one.
    let ttl = 6;
    let lifetime = Duration::from_secs(60);
    let mut fleet = Fleet::start_with(
        &cluster,
        3,
        lifetime,
        "/fleet-hung",
        &format!("lease_ttl = \"{ttl}s\""),
    )
    .await;
    let (leader, _) = fleet.settled_on_one_token().await;
    let outputs: Vec<PathBuf> = fleet.instances.iter().map(|i| i.output.clone()).collect();
    let token_of = |index: usize| read(&outputs[index]);
    let reader = fleet.reader();
    let logins = fleet.logins();

    // Every member's calls start at the first endpoint: the followers' campaigns wait there.
    // It hangs; then the leader dies.
    cluster.pause(0);
    let killed_at = Instant::now();
    fleet.kill(leader);
    // The dead leader's lease runs out, the store names a survivor's key, and that survivor
    // finds out although its campaign's reply never comes: a lease, a poll and a login.
    let next = fleet.next_leader(leader, Duration::from_secs(40)).await;
    let took_over = eventually(Duration::from_secs(10), || {
        fleet.logins() > logins
            && token_of(next).is_some_and(|token| fleet.endpoint.is_live(&token))
    })
    .await;
    let takeover = killed_at.elapsed();
    assert!(
        took_over,
        "the new leader did not log in:\n{}",
        fleet.logs()
    );
    assert!(
        eventually(Duration::from_secs(10), || (0..3)
            .filter(|i| *i != leader)
            .all(|i| token_of(i) == token_of(next)))
        .await,
        "the survivors do not follow the new leader:\n{}",
        fleet.logs()
    );
    cluster.resume(0);
    let (reads, problems) = reader.finish().await;
    let problems: Vec<&String> = problems
        .iter()
        .filter(|problem| !problem.contains(&format!("/node-{leader}/")))
        .collect();
    assert!(problems.is_empty(), "{problems:?}\n{}", fleet.logs());
    eprintln!(
        "fleet figures: takeover with a hung etcd member {takeover:?} (lease {ttl} s); {reads} \
         token reads, none dead"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_replayed_values_are_never_published() {
    let Some(cluster) = EtcdCluster::start(3).await else {
        return;
    };
    let lifetime = Duration::from_secs(6);
    let fleet = Fleet::start(&cluster, 2, lifetime, "/fleet-c").await;
    let leader = fleet
        .settled(Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("no single leader:\n{}", fleet.logs()));
    let follower = 1 - leader;
    let key = format!("{}/token/shared", fleet.prefix);
    let first = cluster.get(&key).await.expect("a publication");
    let first_token = fleet.open(&first);
    // Wait for the next publication, then replay the first one.
    assert!(
        eventually(Duration::from_secs(15), || {
            read(&fleet.instances[follower].output).is_some_and(|now| now != first_token)
        })
        .await,
        "{}",
        fleet.logs()
    );
    let second_token = read(&fleet.instances[follower].output).unwrap();
    cluster.put(&key, &first).await;

    // A value sealed with another key, claiming a later term.
    let other = tokenkeeper::fleet::seal::FleetKey::from_bytes(&[7; 32]);
    let forged_token = "forged-token-c0ffee";
    let now = jiff::Timestamp::now();
    let forged = other
        .seal(
            &fleet.prefix,
            "shared",
            &tokenkeeper::fleet::seal::Publication {
                term: i64::MAX,
                seq: u64::MAX,
                leader: "mallory".to_string(),
                token: tokenkeeper::token::Token::new(
                    tokenkeeper::secret::Secret::new(forged_token.to_string()),
                    now,
                    now + jiff::SignedDuration::from_secs(600),
                )
                .unwrap(),
            },
        )
        .unwrap();
    cluster.put(&key, forged.as_bytes()).await;
    cluster
        .put(&key, b"tkfleet1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .await;
    cluster.put(&key, b"not even the format").await;

    let refused = eventually(Duration::from_secs(10), || {
        fleet.instances[follower]
            .daemon
            .as_ref()
            .is_some_and(|daemon| daemon.log().matches("refused a fleet publication").count() >= 3)
    })
    .await;
    assert!(refused, "{}", fleet.logs());
    // The follower kept the newer token (or a still newer one), never the replayed or forged.
    let held = read(&fleet.instances[follower].output).unwrap();
    assert_ne!(held, first_token, "the replayed token was published");
    assert_ne!(held, forged_token);
    assert!(fleet.endpoint.is_live(&held) || held == second_token);
    // The leader's next publication is followed again.
    let logins = fleet.logins();
    assert!(
        eventually(Duration::from_secs(15), || fleet.logins() > logins
            && read(&fleet.instances[follower].output)
                == read(&fleet.instances[leader].output))
        .await,
        "{}",
        fleet.logs()
    );
    let logs = fleet.logs();
    assert!(!logs.contains(forged_token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_key_no_member_wrote_is_reported_and_never_shown_as_the_leader() {
    let Some(cluster) = EtcdCluster::start(3).await else {
        return;
    };
    // Someone with write access to the prefix holds the election with a key bound to no lease,
    // whose value is no member name (terminal escapes, say).
    let squatter = "/fleet-g/election/shared/0";
    cluster.put(squatter, b"\x1b]0;evil\x07mallory").await;
    let fleet = Fleet::start(&cluster, 1, Duration::from_secs(20), "/fleet-g").await;
    let warned = eventually(Duration::from_secs(15), || {
        fleet.instances[0].daemon.as_ref().is_some_and(|daemon| {
            daemon
                .log()
                .contains("the fleet's election is held by a key no member wrote")
        })
    })
    .await;
    assert!(warned, "{}", fleet.logs());
    let status = fleet.status(0).await.unwrap();
    assert_eq!(status["fleet"]["role"], "candidate", "{status}");
    assert!(status["fleet"]["leader"].is_null(), "{status}");
    assert_eq!(fleet.logins(), 0, "{}", fleet.logs());
    let table = tokenkeeper(&["status", "--config", &fleet.instances[0].config], &[]).await;
    assert!(!table.stdout.contains("mallory"), "{}", table.stdout);
    assert!(!fleet.logs().contains("mallory"), "{}", fleet.logs());
    // Deleted: the member leads and logs in.
    cluster.etcdctl(&["del", squatter]);
    let (leader, token) = fleet.settled_on_one_token().await;
    assert_eq!(leader, 0);
    assert!(fleet.endpoint.is_live(&token));
    assert_eq!(fleet.logins(), 1, "{}", fleet.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_login_alone_after_expiry_an_instance_logs_in_alone_once_its_token_expired() {
    let Some(mut cluster) = EtcdCluster::start(3).await else {
        return;
    };
    let lifetime = Duration::from_secs(5);
    let fleet = Fleet::start_with(
        &cluster,
        2,
        lifetime,
        "/fleet-d",
        "login_alone_after_expiry = true",
    )
    .await;
    fleet
        .settled(Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("no single leader:\n{}", fleet.logs()));
    // Starting without a token while etcd answers is no outage: nobody logged in alone.
    for index in 0..2 {
        let status = fleet.status(index).await.unwrap();
        assert_eq!(status["fleet"]["logins_alone"], 0, "{status}");
    }
    cluster.stop(0);
    cluster.stop(1);
    // Once the token held expires (at most a lifetime), each instance logs in for itself.
    let (alone, statuses) = fleet
        .until_all(lifetime * 3, |status| {
            status["fleet"]["role"] == "alone"
                && status["fleet"]["logins_alone"].as_u64().unwrap_or(0) >= 1
        })
        .await;
    assert!(
        alone,
        "no instance logged in alone: {statuses:?}\n{}",
        fleet.logs()
    );
    for instance in &fleet.instances {
        let token = read(&instance.output).unwrap();
        assert!(fleet.endpoint.is_live(&token), "{}", fleet.logs());
    }
    let (_, metrics) = fleet.get(0, "/metrics").await;
    assert!(
        metrics.contains("tokenkeeper_fleet_role{account=\"shared\",role=\"alone\"} 1"),
        "{metrics}"
    );
    // etcd back: a leader again, and both follow it.
    cluster.restart(0).await;
    cluster.restart(1).await;
    assert!(
        fleet.settled(Duration::from_secs(30)).await.is_some(),
        "{}",
        fleet.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_authenticate_as_an_etcd_user_limited_to_the_prefix() {
    let Some(cluster) = EtcdCluster::start(3).await else {
        return;
    };
    let root_password = "root-canary-pw-7f3a";
    let password = "tk-canary-pw-91c2";
    cluster.etcdctl(&[
        "user",
        "add",
        "root",
        &format!("--new-user-password={root_password}"),
    ]);
    cluster.etcdctl(&["user", "grant-role", "root", "root"]);
    let root = format!("--user=root:{root_password}");
    cluster.etcdctl(&[&root, "role", "add", "tk"]);
    cluster.etcdctl(&[
        &root,
        "role",
        "grant-permission",
        "tk",
        "readwrite",
        "--prefix=true",
        "/fleet-e/",
    ]);
    cluster.etcdctl(&[
        &root,
        "user",
        "add",
        "tk",
        &format!("--new-user-password={password}"),
    ]);
    cluster.etcdctl(&[&root, "user", "grant-role", "tk", "tk"]);
    cluster.etcdctl(&["auth", "enable", &root]);

    assert!(
        !cluster
            .readable_without_credentials("/fleet-e/token/shared")
            .await
    );
    let secrets = tempfile::tempdir().unwrap();
    let good = write_secret(secrets.path(), "etcd-password", password);
    let bad = write_secret(secrets.path(), "etcd-wrong", "not-the-password");
    let auth = |file: &Path| {
        format!(
            "username = \"tk\"\npassword = {{ file = \"{}\" }}",
            file.display()
        )
    };
    let fleet = Fleet::start_with(
        &cluster,
        2,
        Duration::from_secs(20),
        "/fleet-e",
        &auth(&good),
    )
    .await;
    fleet.settled_on_one_token().await;
    assert_eq!(fleet.logins(), 1, "{}", fleet.logs());

    // A member with the wrong password never leads, never logs in, and says why.
    let outsider = Fleet::start_with(
        &cluster,
        1,
        Duration::from_secs(20),
        "/fleet-e",
        &auth(&bad),
    )
    .await;
    let (_, statuses) = outsider
        .until_all(Duration::from_secs(15), |status| {
            status["fleet"]["store_error"]
                .as_str()
                .is_some_and(|error| error.contains("cannot log in to etcd as tk"))
        })
        .await;
    let refused = statuses[0]["fleet"]["store_error"].to_string();
    assert!(
        refused.contains("cannot log in to etcd as tk"),
        "{refused}\n{}",
        outsider.logs()
    );
    assert_eq!(outsider.logins(), 0);
    let everything = fleet.logs() + &outsider.logs() + &refused;
    for canary in [password, root_password, "not-the-password"] {
        assert!(!everything.contains(canary), "{canary} leaked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_reach_etcd_over_tls_with_a_client_certificate() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = crate::support::pki::Pki::generate(pki_dir.path());
    let client =
        crate::support::pki::client_cert(pki_dir.path(), "member", "tokenkeeper-member", 10);
    // etcd's gateway calls its own gRPC server with the server certificate as its client
    // certificate, so with client certificates required that one must be good for both.
    std::fs::write(
        pki_dir.path().join("etcd.cnf"),
        "[req]\ndistinguished_name = dn\n[dn]\n[etcd]\nbasicConstraints = critical, CA:FALSE\n\
         keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth, clientAuth\n\
         subjectAltName = IP:127.0.0.1\n",
    )
    .unwrap();
    crate::support::pki::openssl(
        pki_dir.path(),
        "req -new -config etcd.cnf -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
         -keyout etcd.key -out etcd.csr -subj /CN=127.0.0.1",
    );
    crate::support::pki::openssl(
        pki_dir.path(),
        "x509 -req -in etcd.csr -CA ca.pem -CAkey ca.key -set_serial 11 -days 2 \
         -extfile etcd.cnf -extensions etcd -out etcd.pem",
    );
    let tls = crate::support::etcd_cluster::EtcdTls {
        ca: pki.ca_pem.clone(),
        cert: pki_dir.path().join("etcd.pem"),
        key: pki_dir.path().join("etcd.key"),
        client: crate::support::pki::ClientCert {
            pem: client.pem.clone(),
            key: client.key.clone(),
        },
    };
    let Some(cluster) = EtcdCluster::start_tls(3, tls).await else {
        return;
    };
    let settings = format!(
        "ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"",
        pki.ca_pem.display(),
        client.pem.display(),
        client.key.display()
    );
    let fleet =
        Fleet::start_with(&cluster, 2, Duration::from_secs(20), "/fleet-f", &settings).await;
    fleet.settled_on_one_token().await;
    assert_eq!(fleet.logins(), 1, "{}", fleet.logs());

    // Without the client certificate, etcd refuses the connection: no lease, no login.
    let without = format!("ca_file = \"{}\"", pki.ca_pem.display());
    let outsider =
        Fleet::start_with(&cluster, 1, Duration::from_secs(20), "/fleet-f", &without).await;
    let (_, statuses) = outsider
        .until_all(Duration::from_secs(15), |status| {
            status["fleet"]["store_error"].is_string()
        })
        .await;
    let refused = &statuses[0];
    assert!(
        refused["fleet"]["store_error"].is_string(),
        "{refused}\n{}",
        outsider.logs()
    );
    assert_ne!(refused["fleet"]["role"], "leader");
    assert_eq!(outsider.logins(), 0);
}
