//! The daemon in virtual time: `daemon::run` with a [`TestClock`] and a scripted login, real
//! config files and real output files, under tokio's paused clock. Hours pass in milliseconds.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

use super::account::{Authenticator, LoginFuture};
use super::clock::{Clock, TestClock};
use super::{AuthFactory, Controller, run};
use crate::login::{ErrorClass, LoginError, LoginOutcome};
use crate::secret::Secret;
use crate::token::Token;

mod failures;
mod load;
mod outputs;
mod reload;
mod restarts;
mod timing;

/// What the scripted server answers next.
#[derive(Clone, Debug)]
enum Answer {
    /// A token valid this long.
    Token(Duration),
    /// A token expiring at this absolute wall time (for absurd values).
    TokenUntil(Timestamp),
    /// A token with this value, valid this long.
    Named(&'static str, Duration),
    Fail(ErrorClass, Option<Duration>),
    /// A bug in a login: the task panics.
    Panic,
}

/// A login that answers from a script (then `fallback` forever) and records when it was called.
struct Scripted {
    clock: Arc<TestClock>,
    script: Mutex<VecDeque<Answer>>,
    fallback: Answer,
    /// Timer-clock instants of every call, and the token it returned.
    calls: Mutex<Vec<(Duration, Option<String>)>>,
}

impl Scripted {
    fn new(clock: &Arc<TestClock>, script: Vec<Answer>, fallback: Answer) -> Arc<Scripted> {
        Arc::new(Scripted {
            clock: Arc::clone(clock),
            script: Mutex::new(script.into()),
            fallback,
            calls: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> Vec<Duration> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(at, _)| *at)
            .collect()
    }

    fn last_token(&self) -> Option<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|(_, token)| token.clone())
    }

    fn set_fallback_script(&self, answers: Vec<Answer>) {
        self.script.lock().unwrap().extend(answers);
    }
}

impl Authenticator for Scripted {
    fn login<'a>(&'a self, _refresh_token: Option<&'a Secret>) -> LoginFuture<'a> {
        let answer = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.fallback.clone());
        let now = self.clock.wall();
        let number = self.calls.lock().unwrap().len();
        let mut value = format!("token-{number}");
        let result = match answer {
            Answer::Token(lifetime) => Ok(now + lifetime),
            Answer::Named(name, lifetime) => {
                value = name.to_string();
                Ok(now + lifetime)
            }
            Answer::TokenUntil(until) => Ok(until),
            Answer::Panic => {
                self.calls.lock().unwrap().push((self.clock.timer(), None));
                panic!("scripted panic in a login");
            }
            Answer::Fail(class, retry_after) => Err(LoginError {
                account: "a".to_string(),
                class,
                status: Some(503),
                retry_after,
                message: "scripted failure".to_string(),
            }),
        };
        let outcome = result.map(|expires_at| LoginOutcome {
            token: Token::new(Secret::new(value), now, expires_at).unwrap(),
            refresh_token: None,
            expiry_source: crate::expiry::Source::ExpiresIn,
            clamped: false,
            refreshed: false,
            latency: Duration::ZERO,
        });
        let token = outcome
            .as_ref()
            .ok()
            .map(|outcome| outcome.token.expose().to_string());
        self.calls.lock().unwrap().push((self.clock.timer(), token));
        Box::pin(async move { outcome })
    }
}

/// A test clock at a fixed wall-clock origin.
fn test_clock() -> Arc<TestClock> {
    Arc::new(TestClock::new(
        Timestamp::from_second(1_800_000_000).unwrap(),
    ))
}

/// A login whose first token (`first-token`, five minutes) every format takes, and whose refresh
/// the env format refuses (`second$token`: a shell would expand `$`).
fn unwritable_refresh(clock: &Arc<TestClock>) -> Arc<Scripted> {
    Scripted::new(
        clock,
        vec![Answer::Named("first-token", Duration::from_secs(300))],
        Answer::Named("second$token", Duration::from_secs(3600)),
    )
}

/// A factory that hands every account the same login.
fn same_login(login: Arc<dyn Authenticator>) -> AuthFactory {
    Arc::new(move |_account: &crate::config::Account| Arc::clone(&login))
}

/// Starts `run` on the config at `path`; the controller that steers it and its task.
fn spawn_run(
    path: PathBuf,
    clock: &Arc<TestClock>,
    factory: AuthFactory,
) -> (Controller, tokio::task::JoinHandle<u8>) {
    let control = Controller::new();
    let steering = control.clone();
    let task_clock: Arc<dyn Clock> = Arc::clone(clock) as Arc<dyn Clock>;
    // The exit code the binary would give, so that tests read like the binary's.
    let daemon = tokio::spawn(async move {
        match run(&path, task_clock, factory, steering).await {
            Ok(()) => crate::EXIT_OK,
            Err(error) => error.exit_code(),
        }
    });
    (control, daemon)
}

struct Harness {
    clock: Arc<TestClock>,
    scripted: Arc<Scripted>,
    control: Controller,
    daemon: tokio::task::JoinHandle<u8>,
    dir: tempfile::TempDir,
}

impl Harness {
    /// Starts `run` on a one-account config (plus `daemon_table` lines under `[daemon]`).
    async fn start(script: Vec<Answer>, fallback: Answer, daemon_table: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let clock = test_clock();
        let scripted = Scripted::new(&clock, script, fallback);
        Harness::start_in(dir, clock, scripted, daemon_table).await
    }

    async fn start_in(
        dir: tempfile::TempDir,
        clock: Arc<TestClock>,
        scripted: Arc<Scripted>,
        daemon_table: &str,
    ) -> Harness {
        Harness::start_with_output(dir, clock, scripted, daemon_table, "").await
    }

    /// Like [`Harness::start_in`], with extra keys in the output table.
    async fn start_with_output(
        dir: tempfile::TempDir,
        clock: Arc<TestClock>,
        scripted: Arc<Scripted>,
        daemon_table: &str,
        output_keys: &str,
    ) -> Harness {
        let factory = same_login(Arc::clone(&scripted) as Arc<dyn Authenticator>);
        Harness::start_with_factory(dir, clock, scripted, daemon_table, output_keys, factory).await
    }

    /// Like [`Harness::start_with_output`], building logins with `factory` (which should hand
    /// out `scripted`).
    async fn start_with_factory(
        dir: tempfile::TempDir,
        clock: Arc<TestClock>,
        scripted: Arc<Scripted>,
        daemon_table: &str,
        output_keys: &str,
        factory: AuthFactory,
    ) -> Harness {
        std::fs::create_dir_all(dir.path().join("out")).unwrap();
        let secret = dir.path().join("secret");
        if !secret.exists() {
            std::fs::write(&secret, "first-secret\n").unwrap();
        }
        let config = format!(
            r#"
[daemon]
watch = false
state_dir = "{state}"
{daemon_table}

[accounts.a]
preset = "oauth2"
token_url = "https://idp.example/token"
client_id = "id"
client_secret = {{ file = "{secret}" }}
[[accounts.a.outputs]]
path = "{out}/a.token"
{output_keys}
"#,
            secret = secret.display(),
            out = dir.path().join("out").display(),
            state = dir.path().join("state").display(),
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let (control, daemon) = spawn_run(dir.path().join("config.toml"), &clock, factory);
        Harness {
            clock,
            scripted,
            control,
            daemon,
            dir,
        }
    }

    fn output(&self) -> PathBuf {
        self.dir.path().join("out/a.token")
    }

    fn read(&self) -> Option<String> {
        std::fs::read_to_string(self.output()).ok()
    }

    async fn stop(self) -> (u8, tempfile::TempDir, Arc<Scripted>, Arc<TestClock>) {
        self.control.stop();
        let code = self.daemon.await.unwrap();
        (code, self.dir, self.scripted, self.clock)
    }
}

/// `count` accounts `a0`, `a1` … each with its own scripted login, started together by `run`.
struct Fleet {
    logins: std::collections::BTreeMap<String, Arc<Scripted>>,
    control: Controller,
    daemon: tokio::task::JoinHandle<u8>,
    dir: tempfile::TempDir,
    count: usize,
}

impl Fleet {
    /// Every account answers `script`, then `fallback`; `daemon_table` goes under `[daemon]`.
    async fn start(
        count: usize,
        script: Vec<Answer>,
        fallback: Answer,
        daemon_table: &str,
    ) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        std::fs::write(
            dir.path().join("config.toml"),
            Fleet::config(dir.path(), count, daemon_table),
        )
        .unwrap();
        let clock = test_clock();
        let logins: std::collections::BTreeMap<String, Arc<Scripted>> = (0..count)
            .map(|index| {
                (
                    format!("a{index}"),
                    Scripted::new(&clock, script.clone(), fallback.clone()),
                )
            })
            .collect();
        let factory: AuthFactory = {
            let logins = logins.clone();
            Arc::new(move |account: &crate::config::Account| {
                Arc::clone(&logins[&account.name]) as Arc<dyn Authenticator>
            })
        };
        let (control, daemon) = spawn_run(dir.path().join("config.toml"), &clock, factory);
        Fleet {
            logins,
            control,
            daemon,
            dir,
            count,
        }
    }

    fn config(dir: &Path, count: usize, daemon_table: &str) -> String {
        let mut text = format!(
            "[daemon]\nwatch = false\nstate_dir = \"{}\"\n{daemon_table}\n[defaults]\nmax_lifetime = \"8d\"\n",
            dir.join("state").display()
        );
        for index in 0..count {
            text += &format!(
                "[accounts.a{index}]\npreset = \"oauth2\"\ntoken_url = \"https://idp.example/t\"\nclient_id = \"i\"\nclient_secret = {{ env = \"HOME\" }}\n[[accounts.a{index}.outputs]]\npath = \"{}/a{index}.token\"\n",
                dir.join("out").display()
            );
        }
        text
    }

    /// Rewrites the config with another `[daemon]` table and asks for a reload.
    fn reconfigure(&self, daemon_table: &str) {
        std::fs::write(
            self.dir.path().join("config.toml"),
            Fleet::config(self.dir.path(), self.count, daemon_table),
        )
        .unwrap();
        self.control.reload();
    }

    async fn stop(self) {
        self.control.stop();
        assert_eq!(self.daemon.await.unwrap(), 0);
    }
}

async fn pass(duration: Duration) {
    tokio::time::sleep(duration).await;
}

fn gaps(calls: &[Duration]) -> Vec<Duration> {
    calls.windows(2).map(|pair| pair[1] - pair[0]).collect()
}
