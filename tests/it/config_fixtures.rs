//! Config fixtures: every file in `valid/` loads; every file in `invalid/` fails with an error
//! that names each key its `# expect:` lines list, with a line number.

use std::path::{Path, PathBuf};

use tokenkeeper::config::{self, SecretCheck};

use crate::support::tokenkeeper;

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "toml")
        })
        .collect();
    files.sort();
    files
}

#[test]
fn valid_fixtures_load() {
    let files = fixtures("valid");
    assert!(
        files.len() >= 3,
        "found only {} valid fixtures",
        files.len()
    );
    for path in &files {
        let config = config::load(path, SecretCheck::Skip)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        assert!(!config.accounts.is_empty(), "{}", path.display());
        for account in config.accounts.values() {
            assert!(!account.outputs.is_empty());
        }
    }
}

#[test]
fn invalid_fixtures_name_the_offending_key_and_line() {
    let files = fixtures("invalid");
    assert!(
        files.len() >= 25,
        "found only {} invalid fixtures",
        files.len()
    );
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expected.is_empty(),
            "{} has no `# expect:` line",
            path.display()
        );
        let error = match config::load(path, SecretCheck::Resolve) {
            Ok(_) => panic!("{} loaded but must fail", path.display()),
            Err(error) => error,
        };
        let message = error.to_string();
        for key in &expected {
            assert!(
                error.problems.iter().any(|problem| {
                    let shown = problem.to_string();
                    shown.contains(key) && problem.line.is_some()
                }),
                "{}: no located problem names {key:?}:\n{message}",
                path.display()
            );
        }
        assert!(
            error.problems.len() >= expected.len(),
            "{}: {message}",
            path.display()
        );
    }
}

#[test]
fn examples_are_valid_configs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "toml")
        })
        .collect();
    assert!(
        files.len() >= 6,
        "expected an example per preset, found {}",
        files.len()
    );
    for path in &files {
        config::load(path, SecretCheck::Skip)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_lists_every_problem_and_exits_3() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid/many_problems.toml");
    let run = tokenkeeper(&["check", "--config", path.to_str().unwrap()], &[]).await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stdout.is_empty(), "no plan for an invalid config");
    for key in [
        "accounts.a.base_url",
        "accounts.a.outputs[0].mode",
        "accounts.b.preset",
        "accounts.c.outputs[0].path",
        "defaults.max_lifetime",
    ] {
        assert!(
            run.stderr.contains(key),
            "{key} missing from:\n{}",
            run.stderr
        );
    }
    assert!(
        run.stderr.contains("line 12: accounts.a.base_url"),
        "{}",
        run.stderr
    );
}
