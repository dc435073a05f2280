//! `tokenkeeper credential` driven by the real clients that call it, never by hand-written
//! requests: the token a login wrote to the account's json output reaches `git credential fill`
//! and an HTTPS API server through `kubectl`, and when there is no usable token the client fails
//! with the helper's one-line message (naming the account and the file) and not the token.
//!
//! git runs with the helper as its only `credential.helper` and no system, global or terminal
//! input (`GIT_CONFIG_NOSYSTEM`, `GIT_CONFIG_GLOBAL=/dev/null`, `GIT_TERMINAL_PROMPT=0`, a fresh
//! `HOME`): `fill` shows what `get` answered; `approve` and `reject` call `store` and `erase`
//! through a wrapper that records each call's exit code and output. kubectl calls
//! `tests/credential/apiserver.py` (Python's `ssl` and `http.server`, with a leaf certificate for
//! 127.0.0.1 from a private CA made by `openssl`, `support/pki.rs`), which answers `/version` only
//! to the token in the json output at that moment, while `tokenkeeper run` rotates four-second
//! tokens; the exec plugin is the helper, in client.authentication.k8s.io v1 and v1beta1.
//!
//! Every client process gets a cleared environment (PATH and what the test sets), so no proxy,
//! config or credential of the machine takes part. The tests skip with a loud warning when git,
//! kubectl, openssl or python3 is missing, except under CI, where they fail instead.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rustix::process::Signal;
use tokenkeeper::demo::endpoint::{Credentials, EndpointOptions, Route, TokenEndpoint};

use crate::support::pki::Pki;
use crate::support::{
    Daemon, Run, apinizer_config, apinizer_setup, eventually, tokenkeeper, write_config,
    write_secret,
};

/// The binary under test, as git and kubectl are told to run it.
const BIN: &str = env!("CARGO_BIN_EXE_tokenkeeper");
/// The account every config here names.
const ACCOUNT: &str = "apinizer";
/// The request `git credential fill` gets on stdin: an HTTPS remote, no user name.
const GIT_REQUEST: &str = "protocol=https\nhost=git.example.com\n\n";
/// A token planted in hand-made json outputs the helper must refuse: it must never be printed.
const CANARY: &str = "CANARY-credential-token-5e0f";
/// How long a client may run before the test gives up on it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the API server may take to print its `LISTENING` line.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Timings under which four-second tokens are replaced every two seconds or so.
const FAST: &str = r#"
[daemon]
refresh_at = 0.5
refresh_margin = "500ms"
min_refresh_interval = "300ms"
retry_base = "200ms"
retry_cap = "1s"
startup_spread = "100ms"
shutdown_grace = "3s"
"#;

/// Whether every `(program, argument)` runs and succeeds. When one does not: a loud skip on a
/// developer machine, a failure under CI, which must never skip `test` silently.
fn prerequisites_present(test: &str, tools: &[(&str, &[&str])]) -> bool {
    for (program, args) in tools {
        let runs = Command::new(program)
            .args(*args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !runs {
            assert!(
                std::env::var_os("CI").is_none(),
                "`{program}` is needed by the {test} test and CI must run it (.ci/run installs it)"
            );
            eprintln!(
                "\n*** SKIPPED {test}: `{program} {}` does not run; install {program} to test \
                 `tokenkeeper credential` with it ***\n",
                args.join(" ")
            );
            return false;
        }
    }
    true
}

/// Runs `program` with `args`, `stdin` as its whole input and a cleared environment holding only
/// this process's PATH and `env`; waits for it (at most [`CLIENT_TIMEOUT`]).
async fn client(program: &str, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Run {
    use tokio::io::AsyncWriteExt;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    let mut input = child.stdin.take().expect("stdin was piped");
    // A client that exits without reading its input is judged by its output, not by EPIPE here.
    let _ = input.write_all(stdin.as_bytes()).await;
    drop(input);
    let output = tokio::time::timeout(CLIENT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not finish within {CLIENT_TIMEOUT:?}"))
        .unwrap_or_else(|error| panic!("cannot wait for {program}: {error}"));
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The token and `expires_at` of a json output, as the daemon wrote them.
fn read_output(path: &Path) -> (String, jiff::Timestamp) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("read the json output {}: {error}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("the json output is not JSON ({error}): {text:?}"));
    assert_eq!(json["account"], ACCOUNT, "{text}");
    let token = json["token"].as_str().expect("a token in the json output");
    let expires_at = json["expires_at"]
        .as_str()
        .expect("an expires_at in the json output")
        .parse()
        .expect("expires_at is an RFC 3339 timestamp");
    (token.to_owned(), expires_at)
}

/// Writes a json output for `account` by hand, as the daemon would have.
fn plant_output(path: &Path, account: &str, token: &str, expires_at: jiff::Timestamp) {
    let json = serde_json::json!({
        "account": account,
        "token": token,
        "type": "Bearer",
        "expires_at": format!("{expires_at:.0}"),
    });
    std::fs::write(path, format!("{json}\n")).expect("plant a json output");
}

/// The helper's message in a client's `stderr`: the line naming `file`, which must also name the
/// account and say `why`; panics when there is no such line. A client may run the helper more
/// than once for one command (kubectl retries a failed exec plugin in some versions), so the
/// line may repeat, but every such line must be the same message.
fn assert_helper_message(stderr: &str, file: &Path, why: &str) {
    let file = file.display().to_string();
    let lines: Vec<&str> = stderr.lines().filter(|line| line.contains(&file)).collect();
    assert!(
        !lines.is_empty(),
        "no line naming {file} in the client's stderr:\n{stderr}"
    );
    assert!(
        lines.iter().all(|line| *line == lines[0]),
        "different messages naming {file}:\n{stderr}"
    );
    assert!(lines[0].contains(ACCOUNT), "no account in {:?}", lines[0]);
    assert!(lines[0].contains(why), "no {why:?} in {:?}", lines[0]);
}

/// [`assert_helper_message`] for a client that runs the helper once (git): the line is there
/// exactly once.
fn assert_helper_message_once(stderr: &str, file: &Path, why: &str) {
    assert_helper_message(stderr, file, why);
    let file = file.display().to_string();
    assert_eq!(
        stderr.lines().filter(|line| line.contains(&file)).count(),
        1,
        "the message naming {file} repeats:\n{stderr}"
    );
}

/// The `key=value` lines of a git credential description, in order.
fn git_fields(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .collect()
}

/// Panics if `text` holds a character a double-quoted `sh` word would not keep as written.
fn assert_shell_safe(text: &str) {
    assert!(
        !text.contains(['"', '\\', '$', '`']),
        "{text:?} cannot be quoted in a credential.helper line"
    );
}

/// The real `git`, with a fresh `HOME` and nothing configured but what each call passes.
struct Git {
    home: PathBuf,
}

impl Git {
    fn new(dir: &Path) -> Git {
        let home = dir.join("git-home");
        std::fs::create_dir_all(&home).expect("create git's HOME");
        Git { home }
    }

    /// `git credential OPERATION` with `helper` (a `credential.helper` value) as the only helper.
    async fn credential(&self, helper: &str, operation: &str, request: &str) -> Run {
        let helper = format!("credential.helper={helper}");
        let home = self.home.display().to_string();
        client(
            "git",
            // The empty value clears any helper a config file named before ours.
            &[
                "-c",
                "credential.helper=",
                "-c",
                &helper,
                "credential",
                operation,
            ],
            &[
                ("HOME", &home),
                ("GIT_TERMINAL_PROMPT", "0"),
                ("GIT_CONFIG_NOSYSTEM", "1"),
                ("GIT_CONFIG_GLOBAL", "/dev/null"),
            ],
            request,
        )
        .await
    }

    /// `git credential fill`; panics unless it succeeded. Its answer's fields, sorted (their
    /// order is git's own business).
    async fn fill(&self, helper: &str, request: &str) -> Vec<(String, String)> {
        let run = self.credential(helper, "fill", request).await;
        assert_eq!(run.code, 0, "git credential fill with {helper:?}: {run:?}");
        let mut fields: Vec<(String, String)> = git_fields(&run.stdout)
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect();
        fields.sort();
        fields
    }
}

/// A `credential.helper` value running the helper with `args` (after `credential git`).
fn git_helper(args: &[&str]) -> String {
    assert_shell_safe(BIN);
    let mut line = format!("!\"{BIN}\" credential git");
    for arg in args {
        assert_shell_safe(arg);
        line += &format!(" \"{arg}\"");
    }
    line
}

/// Every field `git credential fill` must print for a token, git's own `protocol` and `host`
/// included, sorted as [`Git::fill`] returns them.
fn filled(username: &str, token: &str, expires_at: jiff::Timestamp) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = [
        ("protocol", "https".to_owned()),
        ("host", "git.example.com".to_owned()),
        ("username", username.to_owned()),
        ("password", token.to_owned()),
        ("password_expiry_utc", expires_at.as_second().to_string()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect();
    fields.sort();
    fields
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_credential_fill_answers_with_the_token_of_the_json_output() {
    if !prerequisites_present("git credential", &[("git", &["--version"])]) {
        return;
    }
    let setup = apinizer_setup("token.json", "format = \"json\"\n").await;
    let root = setup.scratch.path();
    let run = tokenkeeper(&["once", "-c", &setup.config], &[]).await;
    assert_eq!(
        run.code, 0,
        "the login that writes the json output: {run:?}"
    );
    let (token, expires_at) = read_output(&setup.output);
    assert!(
        setup.endpoint.is_live(&token),
        "{token} is not a live token"
    );
    let git = Git::new(root);
    let output = setup.output.display().to_string();

    // The account's json output found through the config; git's request names no user.
    let by_config = git_helper(&[ACCOUNT, "-c", &setup.config]);
    assert_eq!(
        git.fill(&by_config, GIT_REQUEST).await,
        filled("oauth2", &token, expires_at)
    );
    // The user name in git's request (from the remote URL) is answered back.
    let request = "protocol=https\nhost=git.example.com\nusername=alice\n\n";
    assert_eq!(
        git.fill(&by_config, request).await,
        filled("alice", &token, expires_at)
    );

    // `--file` names the output; the config is then not read at all, so one that does not exist
    // is no error. `--username` wins over the request's.
    let missing_config = root.join("no-such-config.toml").display().to_string();
    let by_file = git_helper(&[
        ACCOUNT,
        "--file",
        &output,
        "--username",
        "x-access-token",
        "-c",
        &missing_config,
    ]);
    assert_eq!(
        git.fill(&by_file, request).await,
        filled("x-access-token", &token, expires_at)
    );

    // approve and reject call `store` and `erase`: accepted, silent, and the file is untouched.
    // The wrapper records each call's operation and exit code, and keeps its stdout, which git
    // itself discards for these two.
    let (calls, printed) = (root.join("calls"), root.join("printed"));
    for path in [&calls, &printed] {
        assert_shell_safe(&path.display().to_string());
    }
    let recording = format!(
        "!f() {{ \"{BIN}\" credential git {ACCOUNT} -c \"{config}\" \"$@\" >>\"{printed}\"; \
         s=$?; echo \"$1 $s\" >>\"{calls}\"; return $s; }}; f",
        config = setup.config,
        printed = printed.display(),
        calls = calls.display(),
    );
    let before = std::fs::read(&setup.output).expect("read the json output");
    let modified = || {
        std::fs::metadata(&setup.output)
            .and_then(|metadata| metadata.modified())
            .expect("stat the json output")
    };
    let modified_before = modified();
    let description =
        format!("protocol=https\nhost=git.example.com\nusername=oauth2\npassword={token}\n\n");
    for operation in ["approve", "reject"] {
        let run = git.credential(&recording, operation, &description).await;
        assert_eq!(run.code, 0, "git credential {operation}: {run:?}");
        assert_eq!(run.stderr, "", "git credential {operation} complained");
    }
    assert_eq!(
        std::fs::read_to_string(&calls).expect("read the recorded calls"),
        "store 0\nerase 0\n",
        "approve and reject must call store and erase, which succeed"
    );
    assert_eq!(
        std::fs::read_to_string(&printed).expect("read what store and erase printed"),
        "",
        "store and erase must print nothing"
    );
    assert_eq!(
        std::fs::read(&setup.output).expect("read the json output"),
        before,
        "store or erase changed the json output"
    );
    assert_eq!(
        modified(),
        modified_before,
        "store or erase rewrote the file"
    );

    // Files the helper must refuse, each through `--file`: git then has no credential and no
    // terminal to ask, so fill fails, with the helper's message and never the token.
    let planted = root.join("planted");
    std::fs::create_dir(&planted).expect("create the planted directory");
    let past = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60);
    let future = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600);
    let expired = planted.join("expired.json");
    plant_output(&expired, ACCOUNT, CANARY, past);
    let foreign = planted.join("foreign.json");
    plant_output(&foreign, "panaya", CANARY, future);
    let raw = planted.join("raw.token");
    std::fs::write(&raw, format!("{CANARY}\n")).expect("plant a raw token file");
    // Only an expiry has a word of its own in the contract; each message names account and file.
    for (file, why) in [(&expired, "expired"), (&foreign, ""), (&raw, "")] {
        let helper = git_helper(&[ACCOUNT, "--file", &file.display().to_string()]);
        let run = git.credential(&helper, "fill", GIT_REQUEST).await;
        assert_ne!(
            run.code,
            0,
            "git credential fill with {}: {run:?}",
            file.display()
        );
        assert_helper_message_once(&run.stderr, file, why);
        assert!(
            !run.all_output().contains(CANARY),
            "the token leaked: {run:?}"
        );
    }

    // Once the json output is gone, the config's account has no token.
    std::fs::remove_file(&setup.output).expect("remove the json output");
    let run = git.credential(&by_config, "fill", GIT_REQUEST).await;
    assert_ne!(run.code, 0, "git credential fill without the file: {run:?}");
    assert_helper_message_once(&run.stderr, &setup.output, "no token");
    assert!(
        !run.all_output().contains(&token),
        "the token leaked: {run:?}"
    );
}

/// `tests/credential/apiserver.py` on 127.0.0.1; killed and reaped on drop.
struct ApiServer {
    child: Child,
    /// Held open: the server exits on stdin EOF, so it dies with this process even if `Drop`
    /// never runs.
    _stdin: Option<ChildStdin>,
    port: u16,
    log: PathBuf,
}

impl ApiServer {
    /// Starts the server with `pki`'s leaf, accepting the token in `token_file`; logs in `dir`.
    fn start(pki: &Pki, token_file: &Path, dir: &Path) -> ApiServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/credential/apiserver.py");
        let log = dir.join("apiserver.log");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg("--cert")
            .arg(&pki.leaf_pem)
            .arg("--key")
            .arg(&pki.leaf_key)
            .arg("--token-file")
            .arg(token_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("create the server log"))
            .spawn()
            .expect("start python3 tests/credential/apiserver.py");
        let stdout = child.stdout.take().expect("stdout was piped");
        let (sender, receiver) = mpsc::channel();
        // A thread, so that a server that hangs before printing cannot hang the test.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("LISTENING ") {
                    let _ = sender.send(port.trim().parse::<u16>());
                    return;
                }
            }
        });
        let mut server = ApiServer {
            _stdin: child.stdin.take(),
            child,
            port: 0,
            log,
        };
        match receiver.recv_timeout(START_TIMEOUT) {
            Ok(Ok(port)) => server.port = port,
            other => panic!(
                "apiserver.py did not print `LISTENING <port>` within {START_TIMEOUT:?} \
                 ({other:?}); its stderr:\n{}",
                server.log()
            ),
        }
        server
    }

    /// Everything the server reported so far: one line per answered request.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many requests the server answered so far, authorized or not.
    fn answered(&self) -> usize {
        self.log()
            .lines()
            .filter(|line| line.starts_with("AUTHORIZED ") || line.starts_with("UNAUTHORIZED "))
            .count()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real `kubectl` against one kubeconfig, with a fresh `HOME` and discovery cache.
struct Kubectl {
    kubeconfig: String,
    cache: String,
    home: String,
}

impl Kubectl {
    /// Writes a kubeconfig in `dir` for the API server at `port` trusting `ca`, with a context
    /// per user: `v1` and `v1beta1` run the helper (through `config`, and through `--file
    /// output`), `wrong-token` sends a static token the server must refuse.
    fn new(dir: &Path, port: u16, ca: &Path, config: &str, output: &Path) -> Kubectl {
        let exec = |api_version: &str, source: &[&str]| {
            let mut args = vec!["credential", "kubectl", ACCOUNT];
            args.extend_from_slice(source);
            serde_json::json!({ "exec": {
                "apiVersion": format!("client.authentication.k8s.io/{api_version}"),
                "command": BIN,
                "args": args,
                "interactiveMode": "Never",
            }})
        };
        let output = output.display().to_string();
        let users = [
            ("v1", exec("v1", &["-c", config])),
            ("v1beta1", exec("v1beta1", &["--file", &output])),
            (
                "wrong-token",
                serde_json::json!({ "token": "not-the-token" }),
            ),
        ];
        // JSON is YAML: kubectl reads it as written, with no quoting to get wrong.
        let kubeconfig = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": "loopback", "cluster": {
                "server": format!("https://127.0.0.1:{port}"),
                "certificate-authority": ca,
            }}],
            "users": users.iter().map(|(name, user)| serde_json::json!({
                "name": name, "user": user,
            })).collect::<Vec<_>>(),
            "contexts": users.iter().map(|(name, _)| serde_json::json!({
                "name": name, "context": { "cluster": "loopback", "user": name },
            })).collect::<Vec<_>>(),
            "current-context": "v1",
        });
        let path = dir.join("kubeconfig");
        std::fs::write(&path, kubeconfig.to_string()).expect("write the kubeconfig");
        let (home, cache) = (dir.join("kube-home"), dir.join("kube-cache"));
        std::fs::create_dir_all(&home).expect("create kubectl's HOME");
        Kubectl {
            kubeconfig: path.display().to_string(),
            cache: cache.display().to_string(),
            home: home.display().to_string(),
        }
    }

    /// `kubectl get --raw /version` as `context`'s user.
    async fn version(&self, context: &str) -> Run {
        client(
            "kubectl",
            &[
                "--kubeconfig",
                &self.kubeconfig,
                "--cache-dir",
                &self.cache,
                "--context",
                context,
                "--request-timeout",
                "20s",
                "get",
                "--raw",
                "/version",
            ],
            &[("HOME", &self.home), ("KUBECACHEDIR", &self.cache)],
            "",
        )
        .await
    }
}

/// Runs `call` until one run saw the same token in `output` before and after it: the daemon may
/// replace the token while a client holds it, and the server then rightly refuses the one the
/// client was given. That run, and the token and expiry it was given.
async fn with_a_steady_token<F, R>(output: &Path, mut call: F) -> (Run, String, jiff::Timestamp)
where
    F: FnMut() -> R,
    R: Future<Output = Run>,
{
    for _ in 0..10 {
        let (before, expires_at) = read_output(output);
        let run = call().await;
        if read_output(output).0 == before {
            return (run, before, expires_at);
        }
    }
    panic!("the token changed during each of ten calls");
}

/// Panics unless `run` printed the API server's version body.
fn assert_version(run: &Run, server: &ApiServer) {
    assert_eq!(
        run.code,
        0,
        "kubectl get --raw /version: {run:?}\nserver log:\n{}",
        server.log()
    );
    let body: serde_json::Value = serde_json::from_str(&run.stdout).expect("a JSON body");
    assert_eq!(body["gitVersion"], "v1.30.0", "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reaches_an_https_api_server_with_the_daemons_rotating_token() {
    let tools: &[(&str, &[&str])] = &[
        ("kubectl", &["version", "--client"]),
        ("openssl", &["version"]),
        ("python3", &["--version"]),
    ];
    if !prerequisites_present("kubectl credential", tools) {
        return;
    }
    let endpoint = TokenEndpoint::start(EndpointOptions {
        lifetime: Duration::from_secs(4),
        ..EndpointOptions::default()
    })
    .await
    .expect("start the endpoint");
    let scratch = tempfile::tempdir().expect("tempdir");
    let root = scratch.path();
    let secret = write_secret(root, "secret", &Credentials::demo().apinizer_client_secret);
    let output = root.join("apinizer.json");
    let text = FAST.to_owned()
        + &apinizer_config(&endpoint.base_url(), &secret, &output)
        + "format = \"json\"\n";
    let config = write_config(root, &text);
    let pki = Pki::generate(&root.join("pki"));
    let server = ApiServer::start(&pki, &output, root);
    let kubectl = Kubectl::new(root, server.port, &pki.ca_pem, &config, &output);

    let mut daemon = Daemon::start(&config, root, &[]);
    assert!(
        eventually(Duration::from_secs(20), || output.exists()).await,
        "no json output: {}",
        daemon.log()
    );

    // The helper's ExecCredential, as the plugin protocol v1 asks for it: the file's token and
    // expiry.
    let exec_info = r#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{"interactive":false}}"#;
    let file = output.display().to_string();
    let args = ["credential", "kubectl", ACCOUNT, "--file", &file];
    let env = [("KUBERNETES_EXEC_INFO", exec_info)];
    let (run, token, expires_at) = with_a_steady_token(&output, || tokenkeeper(&args, &env)).await;
    assert_eq!(run.code, 0, "the helper: {run:?}");
    let credential: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(
        credential["apiVersion"], "client.authentication.k8s.io/v1",
        "{credential}"
    );
    assert_eq!(credential["kind"], "ExecCredential", "{credential}");
    assert_eq!(
        credential["status"]["token"],
        token.as_str(),
        "{credential}"
    );
    let stamp = credential["status"]["expirationTimestamp"]
        .as_str()
        .expect("an expirationTimestamp");
    assert!(stamp.ends_with('Z'), "{stamp}");
    let stamp: jiff::Timestamp = stamp.parse().expect("an RFC 3339 expirationTimestamp");
    assert_eq!(stamp, expires_at, "not the file's expiry");

    // The server refuses a token that is not the file's, so a success below is the helper's.
    let run = kubectl.version("wrong-token").await;
    assert_ne!(run.code, 0, "a wrong token got through: {run:?}");
    assert!(
        server
            .log()
            .contains("UNAUTHORIZED /version not the token in the file"),
        "{run:?}\nserver log:\n{}",
        server.log()
    );

    // Both plugin API versions: kubectl rejects an ExecCredential of the wrong one.
    for context in ["v1", "v1beta1"] {
        let (run, ..) = with_a_steady_token(&output, || kubectl.version(context)).await;
        assert_version(&run, &server);
    }
    let (first, _) = read_output(&output);

    // The daemon replaces the token; kubectl's next run presents the new one.
    assert!(
        eventually(Duration::from_secs(30), || read_output(&output).0 != first).await,
        "the token was never replaced: {}",
        daemon.log()
    );
    let (run, used, _) = with_a_steady_token(&output, || kubectl.version("v1")).await;
    assert_version(&run, &server);
    assert_ne!(used, first, "kubectl ran before the token changed");
    assert!(endpoint.issued(Route::Apinizer) >= 2, "one login only");

    // The daemon stops; its last token expires on disk, and kubectl, given no credential, fails
    // with the helper's message before it sends any request.
    daemon.signal(Signal::TERM);
    assert_eq!(
        daemon.wait(Duration::from_secs(15)).await,
        Some(0),
        "{}",
        daemon.log()
    );
    assert!(output.exists(), "the daemon removed its output on stop");
    let (last, expires_at) = read_output(&output);
    assert!(
        eventually(Duration::from_secs(10), || jiff::Timestamp::now()
            > expires_at)
        .await,
        "the last token never expired"
    );
    let answered = server.answered();
    let run = kubectl.version("v1").await;
    assert_ne!(run.code, 0, "kubectl with an expired token: {run:?}");
    assert_helper_message(&run.stderr, &output, "expired");
    assert!(
        !run.all_output().contains(&last),
        "the token leaked: {run:?}"
    );
    assert_eq!(server.answered(), answered, "kubectl sent a request anyway");

    // With the file gone, there is no token at all.
    std::fs::remove_file(&output).expect("remove the json output");
    for context in ["v1", "v1beta1"] {
        let run = kubectl.version(context).await;
        assert_ne!(run.code, 0, "kubectl without the file: {run:?}");
        assert_helper_message(&run.stderr, &output, "no token");
        assert!(
            !run.all_output().contains(&last),
            "the token leaked: {run:?}"
        );
    }
    assert_eq!(server.answered(), answered, "kubectl sent a request anyway");
}
