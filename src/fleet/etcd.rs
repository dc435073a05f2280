//! An etcd v3 client over etcd's own JSON gateway (`/v3/…` on every client URL, on by default
//! since etcd 3.4): the few calls fleet mode needs: leases, the election service, a fenced
//! transaction, a range and a watch. Every request carries `hasleader`, so a member cut off from
//! its cluster's quorum refuses at once instead of answering stale or hanging.
//!
//! Why not a gRPC client crate: `etcd-client` brings tonic, prost and some 65 crates, and needs
//! `protoc` to build; the gateway speaks the same API as JSON over the HTTP client already in the
//! tree (with its TLS, CA bundle and client certificate handling), and the calls are few.
//!
//! Invariants: a request goes to one endpoint at a time; one that fails (refused, timed out,
//! no leader) moves later requests to the next endpoint; errors carry etcd's message or the
//! transport's, never a value or a credential; replies are read up to a cap.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::secret::Secret;

/// How long a single unary call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a campaign waits before it is asked again (asking again with the same lease is
/// idempotent: it finds the key it made).
const CAMPAIGN_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a watch stream is kept before it is opened again (it resumes from a revision).
const WATCH_TIMEOUT: Duration = Duration::from_secs(600);

/// The largest reply or watch message read.
const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// A call that failed: etcd's reason or the transport's. Never a key's value or a credential.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{endpoint}: {message}")]
pub struct StoreError {
    pub endpoint: String,
    pub message: String,
    /// etcd refused the authentication token (expired, or auth was reset): log in again.
    auth: bool,
    /// No reply within the call's time limit.
    timed_out: bool,
}

/// How to reach the cluster.
pub struct ClientSettings {
    pub endpoints: Vec<url::Url>,
    pub http: reqwest::Client,
    /// etcd's own users (`etcdctl user add`), when the cluster has authentication on.
    pub credentials: Option<(String, Secret)>,
}

/// An etcd client: endpoints tried in turn, one HTTP client.
pub struct Client {
    endpoints: Vec<String>,
    current: AtomicUsize,
    http: reqwest::Client,
    credentials: Option<(String, Secret)>,
    /// The token etcd gave for `credentials`, sent as `Authorization` (a credential itself).
    auth_token: Mutex<Option<Secret>>,
    /// How many tokens etcd gave: a call refused for its token drops only the one it sent.
    auth_generation: AtomicU64,
    /// One login to etcd at a time: calls that find the token gone wait for it instead of each
    /// making etcd check the password (bcrypt, slow on purpose).
    auth_login: tokio::sync::Mutex<()>,
}

/// An election key this member holds: the key (`<name>/<lease in hex>`) and its create revision,
/// which is the leader's term and fences every publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderKey {
    pub key: Vec<u8>,
    pub rev: i64,
    pub lease: i64,
}

impl LeaderKey {
    /// The election key `kv` as a leadership: its key, create revision and lease.
    pub fn of(kv: &KeyValue) -> LeaderKey {
        LeaderKey {
            key: kv.key.clone(),
            rev: kv.create_revision,
            lease: kv.lease,
        }
    }

    /// Whether `kv`, as read now, is still this leadership's key (not deleted and made again).
    pub fn is_held_in(&self, kv: &KeyValue) -> bool {
        kv.key == self.key && kv.create_revision == self.rev && kv.lease == self.lease
    }
}

/// A key and its value as etcd holds them.
#[derive(Clone)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub lease: i64,
}

impl std::fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("value_bytes", &self.value.len())
            .field("mod_revision", &self.mod_revision)
            .finish_non_exhaustive()
    }
}

/// One change a watch reported.
#[derive(Debug, Clone)]
pub enum Event {
    Put(KeyValue),
    Delete { key: Vec<u8>, mod_revision: i64 },
}

/// What a watch stream delivered next.
#[derive(Debug)]
pub enum WatchMessage {
    /// Changes, and the store's revision after them.
    Events { events: Vec<Event>, revision: i64 },
    /// The watch was cancelled by the server (no leader, say): open it again, from now (a
    /// fresh read covers what came between).
    Cancelled(String),
    /// The store compacted its history past the watch's start: open it again from now.
    Compacted,
}

/// An open watch: newline-separated JSON messages on one response.
pub struct Watch {
    endpoint: String,
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Client {
    pub fn new(settings: ClientSettings) -> Client {
        Client {
            endpoints: settings
                .endpoints
                .iter()
                .map(|url| url.as_str().trim_end_matches('/').to_string())
                .collect(),
            current: AtomicUsize::new(0),
            http: settings.http,
            credentials: settings.credentials,
            auth_token: Mutex::new(None),
            auth_generation: AtomicU64::new(0),
            auth_login: tokio::sync::Mutex::new(()),
        }
    }

    /// The endpoint requests go to now.
    fn endpoint(&self) -> (usize, &str) {
        let index = self.current.load(Ordering::Relaxed) % self.endpoints.len().max(1);
        (index, self.endpoints.get(index).map_or("", String::as_str))
    }

    /// Moves later requests to the next endpoint, unless another request did already.
    fn fail_over(&self, from: usize) {
        let next = (from + 1) % self.endpoints.len().max(1);
        let _ = self
            .current
            .compare_exchange(from, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn error(endpoint: &str, message: impl Into<String>) -> StoreError {
        StoreError {
            endpoint: endpoint.to_string(),
            message: message.into(),
            auth: false,
            timed_out: false,
        }
    }

    fn transport_error(endpoint: &str, error: reqwest::Error) -> StoreError {
        StoreError {
            timed_out: error.is_timeout(),
            ..Client::error(
                endpoint,
                crate::login::http::error_chain(&error.without_url()),
            )
        }
    }

    /// Sends one request to the current endpoint; on a failure, the next request goes to the
    /// next endpoint. An expired authentication token is renewed once.
    async fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
        timeout: Duration,
    ) -> Result<T, StoreError> {
        for attempt in 0..2 {
            let (index, endpoint) = self.endpoint();
            let generation = self.auth_generation.load(Ordering::Acquire);
            let result = self.call_at(endpoint, path, &body, timeout).await;
            match result {
                Ok(reply) => return Ok(reply),
                Err(error) if error.auth && attempt == 0 => {
                    let mut token = self.lock_token();
                    // Unless another call has logged in again meanwhile.
                    if self.auth_generation.load(Ordering::Acquire) == generation {
                        *token = None;
                    }
                }
                Err(error) => {
                    self.fail_over(index);
                    return Err(error);
                }
            }
        }
        let (_, endpoint) = self.endpoint();
        Err(Client::error(endpoint, "authentication failed"))
    }

    async fn call_at<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        path: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<T, StoreError> {
        let response = self.send(endpoint, path, body, timeout).await?;
        let status = response.status();
        let bytes = read_capped(endpoint, response).await?;
        if !status.is_success() {
            return Err(gateway_error(endpoint, status.as_u16(), &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|error| {
            Client::error(endpoint, format!("unexpected reply to {path}: {error}"))
        })
    }

    async fn send(
        &self,
        endpoint: &str,
        path: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<reqwest::Response, StoreError> {
        let token = self.auth_token(timeout).await?;
        let mut request = self
            .http
            .post(format!("{endpoint}{path}"))
            .timeout(timeout)
            // etcd's gateway passes Grpc-Metadata-* on as gRPC metadata: refuse without a leader.
            .header("Grpc-Metadata-hasleader", "true")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(token) = &token {
            let mut value = reqwest::header::HeaderValue::from_str(token.expose())
                .map_err(|_| Client::error(endpoint, "etcd gave an unusable auth token"))?;
            value.set_sensitive(true);
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        request
            .send()
            .await
            .map_err(|error| Client::transport_error(endpoint, error))
    }

    fn lock_token(&self) -> std::sync::MutexGuard<'_, Option<Secret>> {
        self.auth_token
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The authentication token, logging in to etcd first when there is none (at the endpoint
    /// current then, within `timeout` and the usual call limit).
    async fn auth_token(&self, timeout: Duration) -> Result<Option<Secret>, StoreError> {
        let Some((name, password)) = &self.credentials else {
            return Ok(None);
        };
        if let Some(token) = self.lock_token().clone() {
            return Ok(Some(token));
        }
        let _login = self.auth_login.lock().await;
        if let Some(token) = self.lock_token().clone() {
            return Ok(Some(token));
        }
        // Read now: a login before this one may have failed over from a member that hangs.
        let (index, endpoint) = self.endpoint();
        #[derive(Deserialize)]
        struct Reply {
            #[serde(default)]
            token: String,
        }
        let body = serde_json::json!({ "name": name, "password": password.expose() });
        let response = self
            .http
            .post(format!("{endpoint}/v3/auth/authenticate"))
            .timeout(timeout.min(CALL_TIMEOUT))
            .header("Grpc-Metadata-hasleader", "true")
            .body(body.to_string())
            .send()
            .await
            .map_err(|error| {
                self.fail_over(index);
                Client::transport_error(endpoint, error)
            })?;
        let status = response.status();
        let bytes = zeroize::Zeroizing::new(read_capped(endpoint, response).await?);
        if !status.is_success() {
            let mut error = gateway_error(endpoint, status.as_u16(), &bytes);
            error.auth = false;
            error.message = format!("cannot log in to etcd as {name}: {}", error.message);
            return Err(error);
        }
        let reply: Reply = serde_json::from_slice(&bytes)
            .map_err(|_| Client::error(endpoint, "unexpected reply to the etcd login"))?;
        if reply.token.is_empty() {
            return Err(Client::error(
                endpoint,
                "etcd authentication is off, but a user name is configured",
            ));
        }
        let token = Secret::new(reply.token);
        let mut held = self.lock_token();
        *held = Some(token.clone());
        self.auth_generation.fetch_add(1, Ordering::AcqRel);
        drop(held);
        Ok(Some(token))
    }

    /// Grants a lease of `ttl`: its id and the TTL etcd granted.
    pub async fn grant(&self, ttl: Duration) -> Result<(i64, Duration), StoreError> {
        #[derive(Deserialize)]
        struct Reply {
            #[serde(rename = "ID", default, deserialize_with = "int")]
            id: i64,
            #[serde(rename = "TTL", default, deserialize_with = "int")]
            ttl: i64,
        }
        let reply: Reply = self
            .call(
                "/v3/lease/grant",
                serde_json::json!({ "TTL": ttl.as_secs().to_string() }),
                CALL_TIMEOUT,
            )
            .await?;
        Ok((
            reply.id,
            Duration::from_secs(reply.ttl.max(0).unsigned_abs()),
        ))
    }

    /// Renews a lease once, within `within` (at most the usual call limit): the TTL it has
    /// again, or `None` when it no longer exists.
    pub async fn keep_alive(
        &self,
        lease: i64,
        within: Duration,
    ) -> Result<Option<Duration>, StoreError> {
        #[derive(Deserialize)]
        struct Renewed {
            #[serde(rename = "TTL", default, deserialize_with = "int")]
            ttl: i64,
        }
        #[derive(Deserialize)]
        struct Reply {
            result: Option<Renewed>,
            error: Option<StreamError>,
        }
        let (index, endpoint) = self.endpoint();
        let endpoint = endpoint.to_string();
        // A streaming call: one request, one reply, then the stream ends.
        let reply: Result<Reply, StoreError> = self
            .call(
                "/v3/lease/keepalive",
                serde_json::json!({ "ID": lease.to_string() }),
                within.min(CALL_TIMEOUT),
            )
            .await;
        let reply = reply?;
        if let Some(error) = reply.error {
            self.fail_over(index);
            return Err(Client::error(&endpoint, error.message));
        }
        let ttl = reply.result.map_or(0, |renewed| renewed.ttl);
        Ok((ttl > 0).then(|| Duration::from_secs(ttl.unsigned_abs())))
    }

    /// Revokes a lease: every key bound to it (this member's election keys) goes at once.
    pub async fn revoke(&self, lease: i64) -> Result<(), StoreError> {
        let _: serde_json::Value = self
            .call(
                "/v3/lease/revoke",
                serde_json::json!({ "ID": lease.to_string() }),
                CALL_TIMEOUT,
            )
            .await?;
        Ok(())
    }

    /// Campaigns in the election `name` with `value` (the member's name) on `lease`: returns once
    /// this member is the leader, or after a while without (`Ok(None)`: ask again).
    pub async fn campaign(
        &self,
        name: &[u8],
        value: &[u8],
        lease: i64,
    ) -> Result<Option<LeaderKey>, StoreError> {
        #[derive(Deserialize)]
        struct Leader {
            #[serde(default, deserialize_with = "bytes")]
            key: Vec<u8>,
            #[serde(default, deserialize_with = "int")]
            rev: i64,
            #[serde(default, deserialize_with = "int")]
            lease: i64,
        }
        #[derive(Deserialize)]
        struct Reply {
            leader: Option<Leader>,
        }
        let body = serde_json::json!({
            "name": STANDARD.encode(name),
            "value": STANDARD.encode(value),
            "lease": lease.to_string(),
        });
        let (index, endpoint) = self.endpoint();
        let endpoint = endpoint.to_string();
        match self
            .call_at::<Reply>(&endpoint, "/v3/election/campaign", &body, CAMPAIGN_TIMEOUT)
            .await
        {
            Ok(Reply {
                leader: Some(leader),
            }) if !leader.key.is_empty() => Ok(Some(LeaderKey {
                key: leader.key,
                rev: leader.rev,
                lease: leader.lease,
            })),
            Ok(_) => Err(Client::error(&endpoint, "the campaign reply names no key")),
            Err(error) if error.timed_out => Ok(None),
            Err(error) => {
                if error.auth {
                    *self.lock_token() = None;
                }
                self.fail_over(index);
                Err(error)
            }
        }
    }

    /// The election's leader now: its key and value (a member name), if any.
    pub async fn leader(&self, name: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        #[derive(Deserialize)]
        struct Reply {
            kv: Option<RawKeyValue>,
        }
        let reply: Result<Reply, StoreError> = self
            .call(
                "/v3/election/leader",
                serde_json::json!({ "name": STANDARD.encode(name) }),
                CALL_TIMEOUT,
            )
            .await;
        match reply {
            Ok(reply) => Ok(reply.kv.map(RawKeyValue::into_key_value)),
            // "election: no leader" is an answer, not a failure.
            Err(error)
                if error.message.contains("no leader") && !error.message.contains("etcdserver") =>
            {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// Gives up leadership (deletes the election key), so that another member takes over now.
    pub async fn resign(&self, leader: &LeaderKey, name: &[u8]) -> Result<(), StoreError> {
        let _: serde_json::Value = self
            .call(
                "/v3/election/resign",
                serde_json::json!({ "leader": {
                    "name": STANDARD.encode(name),
                    "key": STANDARD.encode(&leader.key),
                    "rev": leader.rev.to_string(),
                    "lease": leader.lease.to_string(),
                }}),
                CALL_TIMEOUT,
            )
            .await?;
        Ok(())
    }

    /// Puts `value` at `key` only while `leader` still holds its election key (same create
    /// revision): `Ok(false)` when it does not, so a deposed leader can never publish.
    pub async fn fenced_put(
        &self,
        leader: &LeaderKey,
        key: &[u8],
        value: &[u8],
    ) -> Result<bool, StoreError> {
        #[derive(Deserialize)]
        struct Reply {
            #[serde(default)]
            succeeded: bool,
        }
        let body = serde_json::json!({
            "compare": [{
                "target": "CREATE",
                "key": STANDARD.encode(&leader.key),
                "create_revision": leader.rev.to_string(),
                "result": "EQUAL",
            }],
            "success": [{ "request_put": {
                "key": STANDARD.encode(key),
                "value": STANDARD.encode(value),
            }}],
        });
        let reply: Reply = self.call("/v3/kv/txn", body, CALL_TIMEOUT).await?;
        Ok(reply.succeeded)
    }

    /// Reads one key (linearizable): its value if any, and the store's revision.
    pub async fn get(&self, key: &[u8]) -> Result<(Option<KeyValue>, i64), StoreError> {
        #[derive(Deserialize)]
        struct Reply {
            header: Option<Header>,
            #[serde(default)]
            kvs: Vec<RawKeyValue>,
        }
        let reply: Reply = self
            .call(
                "/v3/kv/range",
                serde_json::json!({ "key": STANDARD.encode(key) }),
                CALL_TIMEOUT,
            )
            .await?;
        let revision = reply.header.map_or(0, |header| header.revision);
        let kv = reply
            .kvs
            .into_iter()
            .next()
            .map(RawKeyValue::into_key_value);
        Ok((kv, revision))
    }

    /// Watches `key` from `start_revision` on.
    pub async fn watch(&self, key: &[u8], start_revision: i64) -> Result<Watch, StoreError> {
        let body = serde_json::json!({ "create_request": {
            "key": STANDARD.encode(key),
            "start_revision": start_revision.to_string(),
        }});
        let (index, endpoint) = self.endpoint();
        let endpoint = endpoint.to_string();
        let opened = async {
            let response = self
                .send(&endpoint, "/v3/watch", &body, WATCH_TIMEOUT)
                .await?;
            let status = response.status();
            if !status.is_success() {
                let bytes = read_capped(&endpoint, response).await?;
                return Err(gateway_error(&endpoint, status.as_u16(), &bytes));
            }
            Ok(Watch {
                endpoint: endpoint.clone(),
                response,
                buffer: Vec::new(),
            })
        }
        .await;
        if opened.is_err() {
            self.fail_over(index);
        }
        opened
    }
}

impl Watch {
    /// The next message, waiting for it; `Ok(None)` when the stream ended.
    pub async fn next(&mut self) -> Result<Option<WatchMessage>, StoreError> {
        #[derive(Deserialize)]
        struct RawEvent {
            #[serde(rename = "type", default)]
            kind: String,
            kv: Option<RawKeyValue>,
        }
        #[derive(Deserialize)]
        struct Result_ {
            header: Option<Header>,
            #[serde(default)]
            events: Vec<RawEvent>,
            #[serde(default)]
            canceled: bool,
            #[serde(default)]
            cancel_reason: String,
            #[serde(default, deserialize_with = "int")]
            compact_revision: i64,
        }
        #[derive(Deserialize)]
        struct Message {
            result: Option<Result_>,
            error: Option<StreamError>,
        }
        loop {
            if let Some(end) = self.buffer.iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let message: Message = serde_json::from_slice(&line).map_err(|error| {
                    Client::error(&self.endpoint, format!("unexpected watch message: {error}"))
                })?;
                if let Some(error) = message.error {
                    return Ok(Some(WatchMessage::Cancelled(error.message)));
                }
                let Some(result) = message.result else {
                    continue;
                };
                if result.canceled {
                    if result.compact_revision > 0 {
                        return Ok(Some(WatchMessage::Compacted));
                    }
                    let reason = if result.cancel_reason.is_empty() {
                        "cancelled by the server".to_string()
                    } else {
                        result.cancel_reason
                    };
                    return Ok(Some(WatchMessage::Cancelled(reason)));
                }
                let revision = result.header.map_or(0, |header| header.revision);
                let events = result
                    .events
                    .into_iter()
                    .filter_map(|event| {
                        let kv = event.kv?.into_key_value();
                        Some(if event.kind == "DELETE" {
                            Event::Delete {
                                key: kv.key,
                                mod_revision: kv.mod_revision,
                            }
                        } else {
                            Event::Put(kv)
                        })
                    })
                    .collect();
                return Ok(Some(WatchMessage::Events { events, revision }));
            }
            if self.buffer.len() > MAX_REPLY_BYTES {
                return Err(Client::error(
                    &self.endpoint,
                    "a watch message is too large",
                ));
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) => return Ok(None),
                // A watch lives at most WATCH_TIMEOUT: then it is simply opened again.
                Err(error) if error.is_timeout() => return Ok(None),
                Err(error) => return Err(Client::transport_error(&self.endpoint, error)),
            }
        }
    }
}

#[derive(Deserialize)]
struct Header {
    #[serde(default, deserialize_with = "int")]
    revision: i64,
}

#[derive(Deserialize)]
struct StreamError {
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct RawKeyValue {
    #[serde(default, deserialize_with = "bytes")]
    key: Vec<u8>,
    #[serde(default, deserialize_with = "bytes")]
    value: Vec<u8>,
    #[serde(default, deserialize_with = "int")]
    create_revision: i64,
    #[serde(default, deserialize_with = "int")]
    mod_revision: i64,
    #[serde(default, deserialize_with = "int")]
    lease: i64,
}

impl RawKeyValue {
    fn into_key_value(self) -> KeyValue {
        KeyValue {
            key: self.key,
            value: self.value,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            lease: self.lease,
        }
    }
}

/// An int64 as the gateway writes it: a JSON string (or, from some versions, a number).
fn int<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Text(String),
        Number(i64),
    }
    match Int::deserialize(deserializer)? {
        Int::Number(number) => Ok(number),
        Int::Text(text) => text.parse().map_err(serde::de::Error::custom),
    }
}

/// Bytes as the gateway writes them: standard Base64.
fn bytes<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(deserializer)?;
    STANDARD.decode(text).map_err(serde::de::Error::custom)
}

/// Reads a reply body up to [`MAX_REPLY_BYTES`].
async fn read_capped(
    endpoint: &str,
    mut response: reqwest::Response,
) -> Result<Vec<u8>, StoreError> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_REPLY_BYTES {
                    return Err(Client::error(endpoint, "the reply is too large"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(error) => return Err(Client::transport_error(endpoint, error)),
        }
    }
}

/// A gateway error reply (`{"error": …, "code": …, "message": …}`) as a [`StoreError`]: etcd's
/// message, at most a line of it.
fn gateway_error(endpoint: &str, status: u16, body: &[u8]) -> StoreError {
    #[derive(Deserialize)]
    struct Reply {
        #[serde(default)]
        message: String,
        #[serde(default)]
        code: i64,
    }
    let (message, code) = match serde_json::from_slice::<Reply>(body) {
        Ok(reply) if !reply.message.is_empty() => (reply.message, reply.code),
        _ => (format!("HTTP {status}"), 0),
    };
    let message: String = message.chars().take(200).collect();
    // gRPC code 16 is UNAUTHENTICATED: an expired or revoked auth token.
    let auth = code == 16 || message.contains("invalid auth token");
    StoreError {
        endpoint: endpoint.to_string(),
        message,
        auth,
        timed_out: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_numbers_and_bytes_decode() {
        let kv: RawKeyValue = serde_json::from_str(
            r#"{"key":"L3RrL2E=","create_revision":"7","mod_revision":9,"value":"djE="}"#,
        )
        .unwrap();
        let kv = kv.into_key_value();
        assert_eq!(kv.key, b"/tk/a");
        assert_eq!(kv.value, b"v1");
        assert_eq!((kv.create_revision, kv.mod_revision, kv.lease), (7, 9, 0));
    }

    #[test]
    fn gateway_errors_keep_etcds_reason_and_spot_expired_auth() {
        let error = gateway_error(
            "http://e1",
            503,
            br#"{"error":"etcdserver: no leader","code":14,"message":"etcdserver: no leader"}"#,
        );
        assert_eq!(error.to_string(), "http://e1: etcdserver: no leader");
        assert!(!error.auth);
        let expired = gateway_error(
            "http://e1",
            401,
            br#"{"code":16,"message":"etcdserver: invalid auth token"}"#,
        );
        assert!(expired.auth);
        let opaque = gateway_error("http://e1", 502, b"<html>bad gateway</html>");
        assert_eq!(opaque.message, "HTTP 502");
    }

    #[test]
    fn a_key_value_debug_shows_no_value() {
        let kv = KeyValue {
            key: b"/tk/token/a".to_vec(),
            value: b"canary-value".to_vec(),
            create_revision: 1,
            mod_revision: 2,
            lease: 0,
        };
        let shown = format!("{kv:?}");
        assert!(shown.contains("/tk/token/a"));
        assert!(!shown.contains("canary"));
    }
}
