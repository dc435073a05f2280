//! The Kubernetes manifests of `packaging/kubernetes/`: valid against the newest schema
//! `kubernetes-validate --strict` ships, and right where a schema cannot tell: the sidecar's
//! restart policy and probes, read-only token mounts without `subPath`, the security contexts, the
//! volumes, and a config that loads and writes where the pod mounts its volumes.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Where the image puts the binary (its ENTRYPOINT).
const IMAGE_BINARY: &str = "/usr/bin/tokenkeeper";

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/kubernetes")
}

fn files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifests())
        .expect("packaging/kubernetes")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "yaml")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    files
}

/// A tool the tests need: found on PATH (or as `$NAME_BIN`), else skipped with a warning, except
/// under CI, where its absence fails.
fn tool(name: &str) -> Option<PathBuf> {
    let variable = format!("{}_BIN", name.to_uppercase().replace('-', "_"));
    if let Some(path) = std::env::var_os(&variable) {
        return Some(PathBuf::from(path));
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing ({variable} or PATH); .ci/run installs it"
        );
        eprintln!("WARNING: {name} is not installed: skipped");
    }
    found
}

/// Every document of a YAML file, as JSON (PyYAML, which kubernetes-validate brings along).
fn documents(python: &Path, file: &Path) -> Vec<Value> {
    let output = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(file)
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("json")
}

#[test]
fn the_probes_call_the_binary_where_the_image_puts_it() {
    let containerfile = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/Containerfile"),
    )
    .expect("Containerfile");
    assert!(
        containerfile
            .lines()
            .any(|line| line == format!("ENTRYPOINT [\"{IMAGE_BINARY}\"]")),
        "{containerfile}"
    );
}

#[test]
fn the_manifests_pass_kubernetes_validate_strict() {
    let Some(validate) = tool("kubernetes-validate") else {
        return;
    };
    for file in files() {
        let output = Command::new(&validate)
            .arg("--strict")
            .arg(&file)
            .output()
            .expect("kubernetes-validate");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{}: {said}", file.display());
        assert!(said.contains("passed"), "{}: {said}", file.display());
        assert!(!said.contains("ERROR"), "{}: {said}", file.display());
    }
}

/// The pod spec of a workload (Deployment or CronJob).
fn pod_spec(document: &Value) -> Option<&Value> {
    match document["kind"].as_str()? {
        "Deployment" => Some(&document["spec"]["template"]["spec"]),
        "CronJob" => Some(&document["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
        _ => None,
    }
}

fn containers(spec: &Value) -> Vec<&Value> {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|key| spec[*key].as_array())
        .flatten()
        .collect()
}

fn mount<'a>(container: &'a Value, volume: &str) -> Option<&'a Value> {
    container["volumeMounts"]
        .as_array()?
        .iter()
        .find(|mount| mount["name"] == volume)
}

fn probe_command(container: &Value, probe: &str) -> Vec<String> {
    container[probe]["exec"]["command"]
        .as_array()
        .map(|words| {
            words
                .iter()
                .filter_map(|word| word.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_manifests_hold_what_the_schema_cannot_check() {
    let Some(python) = tool("python3") else {
        return;
    };
    let mut config_text = None;
    let mut workloads = Vec::new();
    for file in files() {
        for document in documents(&python, &file) {
            if document["kind"] == "ConfigMap" {
                config_text = document["data"]["config.toml"].as_str().map(str::to_string);
            } else if pod_spec(&document).is_some() {
                workloads.push((file.clone(), document));
            }
        }
    }
    let config_text = config_text.expect("a ConfigMap with config.toml");
    let config = tokenkeeper::config::parse(
        &config_text,
        Path::new("config.toml"),
        tokenkeeper::config::SecretCheck::Skip,
        false,
    )
    .expect("the ConfigMap's config loads");
    let names: Vec<&str> = workloads
        .iter()
        .filter_map(|(_, document)| document["metadata"]["name"].as_str())
        .collect();
    assert!(workloads.len() >= 3, "{names:?}");
    let mut native = false;
    for (file, document) in &workloads {
        let at = file.display();
        let spec = pod_spec(document).expect("pod spec");
        let security = &spec["securityContext"];
        assert_eq!(security["runAsNonRoot"], true, "{at}");
        assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault", "{at}");
        let fs_group = security["fsGroup"].as_u64().expect("fsGroup");
        assert_eq!(spec["automountServiceAccountToken"], false, "{at}");
        for container in containers(spec) {
            let name = container["name"].as_str().unwrap_or("?");
            let own = &container["securityContext"];
            assert_eq!(own["allowPrivilegeEscalation"], false, "{at} {name}");
            assert_eq!(own["readOnlyRootFilesystem"], true, "{at} {name}");
            assert_eq!(
                own["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{at} {name}"
            );
            for mount in container["volumeMounts"].as_array().into_iter().flatten() {
                assert!(
                    mount.get("subPath").is_none(),
                    "{at} {name}: subPath never sees updates"
                );
            }
        }
        let sidecar = containers(spec)
            .into_iter()
            .find(|container| container["name"] == "tokenkeeper")
            .expect("a tokenkeeper container");
        let app_containers: Vec<&Value> = spec["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .filter(|container| container["name"] != "tokenkeeper")
            .collect();
        assert!(!app_containers.is_empty(), "{at}");
        // The volumes: tokens in memory with a size limit, read-only for the application;
        // state for the sidecar alone; config and credentials read-only.
        let volumes = spec["volumes"].as_array().expect("volumes");
        let volume = |name: &str| {
            volumes
                .iter()
                .find(|volume| volume["name"] == name)
                .unwrap_or_else(|| panic!("{at}: no volume {name}"))
        };
        assert_eq!(volume("tokens")["emptyDir"]["medium"], "Memory", "{at}");
        assert!(
            volume("tokens")["emptyDir"]["sizeLimit"].is_string(),
            "{at}"
        );
        assert!(volume("state")["emptyDir"].is_object(), "{at}");
        assert!(volume("config")["configMap"].is_object(), "{at}");
        assert!(volume("credentials")["secret"].is_object(), "{at}");
        let sidecar_uid = security["runAsUser"].as_u64();
        for app in &app_containers {
            // The application reads through the group, not as the files' owner.
            let app_uid = app["securityContext"]["runAsUser"].as_u64();
            assert!(
                app_uid.is_some() && app_uid != sidecar_uid,
                "{at}: the app should run as a uid of its own"
            );
            let tokens = mount(app, "tokens").expect("the app mounts the tokens");
            assert_eq!(tokens["readOnly"], true, "{at}: the app's token mount");
            assert!(
                mount(app, "state").is_none(),
                "{at}: the state is the sidecar's"
            );
            assert!(
                mount(app, "credentials").is_none(),
                "{at}: the secrets are the sidecar's"
            );
        }
        for readonly in ["config", "credentials"] {
            assert_eq!(
                mount(sidecar, readonly).expect("mounted")["readOnly"],
                true,
                "{at}: {readonly}"
            );
        }
        // The config writes where the pod mounts its volumes, readable through the fsGroup.
        let tokens_at = mount(sidecar, "tokens").expect("tokens")["mountPath"]
            .as_str()
            .expect("path")
            .to_string();
        let state_at = mount(sidecar, "state").expect("state")["mountPath"]
            .as_str()
            .expect("path")
            .to_string();
        assert!(
            config.daemon.state_dir.starts_with(&state_at)
                && config.daemon.state_dir != Path::new(&state_at),
            "{at}: state_dir {} must be a subdirectory of the state volume {state_at}",
            config.daemon.state_dir.display()
        );
        for account in config.accounts.values() {
            for output in &account.outputs {
                assert!(
                    output.path.starts_with(&tokens_at),
                    "{at}: {:?}",
                    output.path
                );
                assert_eq!(output.mode, 0o640, "{at}: {:?}", output.path);
                assert_eq!(
                    output.group,
                    Some(fs_group as u32),
                    "{at}: {:?}",
                    output.path
                );
            }
        }
        let config_at = mount(sidecar, "config").expect("config")["mountPath"]
            .as_str()
            .expect("path")
            .to_string();
        let env: Vec<&Value> = sidecar["env"].as_array().into_iter().flatten().collect();
        let config_env = env
            .iter()
            .find(|variable| variable["name"] == "TOKENKEEPER_CONFIG")
            .and_then(|variable| variable["value"].as_str())
            .expect("TOKENKEEPER_CONFIG");
        assert_eq!(config_env, format!("{config_at}/config.toml"), "{at}");
        let args = sidecar["args"].as_array().expect("args");
        if args == &[serde_json::json!("once")] {
            assert!(
                spec["initContainers"]
                    .as_array()
                    .is_some_and(|init| init.iter().any(|c| c["name"] == "tokenkeeper")),
                "{at}: `once` runs as an init container"
            );
            continue;
        }
        assert_eq!(args, &[serde_json::json!("run")], "{at}");
        // Probes that need no shell, no listener and no token endpoint, by the image's binary.
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            assert_eq!(
                probe_command(sidecar, probe).first().map(String::as_str),
                Some(IMAGE_BINARY),
                "{at}: {probe}"
            );
        }
        assert_eq!(
            probe_command(sidecar, "startupProbe")[1..],
            ["probe", "files"],
            "{at}"
        );
        assert_eq!(
            probe_command(sidecar, "livenessProbe")[1..],
            ["probe", "live"],
            "{at}"
        );
        assert_eq!(
            probe_command(sidecar, "readinessProbe")[1..],
            ["probe", "ready"],
            "{at}"
        );
        let in_init = spec["initContainers"]
            .as_array()
            .is_some_and(|init| init.iter().any(|c| c["name"] == "tokenkeeper"));
        if in_init {
            assert_eq!(sidecar["restartPolicy"], "Always", "{at}: a native sidecar");
            native = true;
        }
        assert!(
            sidecar["resources"]["requests"]["memory"].is_string(),
            "{at}"
        );
        assert!(sidecar["resources"]["limits"]["memory"].is_string(), "{at}");
    }
    assert!(native, "no native sidecar among {names:?}");
}
