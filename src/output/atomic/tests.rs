//! Tests of the atomic publish: readers racing writers, planted symlinks and FIFOs, squatted
//! temp names, umask independence, and errors that never carry contents.

use super::*;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::output::test_support::{spec, token};
use crate::output::{Format, render};

const CANARY: &str = "canary-token-7c41e9";

/// Serializes every test that creates files: the umask test changes a process-wide setting.
static FILES: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    FILES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn name(text: &str) -> &OsStr {
    OsStr::new(text)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn mode_of(path: &Path) -> u32 {
    path.symlink_metadata().unwrap().mode() & 0o7777
}

/// Restores the umask even when an assertion fails.
struct UmaskGuard(Mode);
impl Drop for UmaskGuard {
    fn drop(&mut self) {
        rustix::process::umask(self.0);
    }
}

#[test]
fn publish_writes_then_skips_identical_and_rewrites_on_change() {
    let _lock = lock();
    let temp = tempfile::tempdir().unwrap();
    let dir = OutputDir::open(temp.path()).unwrap();
    let target = temp.path().join("acct.token");

    let publish =
        |contents: &[u8], mode| dir.publish(name("acct.token"), contents, mode, None, None);
    assert_eq!(publish(b"first", 0o640).unwrap(), Publish::Written);
    assert_eq!(std::fs::read(&target).unwrap(), b"first");
    assert_eq!(mode_of(&target), 0o640);
    let inode = target.metadata().unwrap().ino();

    assert_eq!(publish(b"first", 0o640).unwrap(), Publish::Unchanged);
    assert_eq!(target.metadata().unwrap().ino(), inode);

    assert_eq!(publish(b"first", 0o600).unwrap(), Publish::Written);
    assert_eq!(mode_of(&target), 0o600);
    let inode_after_mode = target.metadata().unwrap().ino();
    assert_ne!(inode_after_mode, inode);

    // Same length, different bytes: the size shortcut alone must not decide.
    assert_eq!(publish(b"fir5t", 0o600).unwrap(), Publish::Written);
    assert_eq!(std::fs::read(&target).unwrap(), b"fir5t");
    assert_ne!(target.metadata().unwrap().ino(), inode_after_mode);

    assert_eq!(publish(b"", 0o600).unwrap(), Publish::Written);
    assert_eq!(std::fs::read(&target).unwrap(), b"");
    assert_eq!(publish(b"", 0o600).unwrap(), Publish::Unchanged);
    assert_eq!(entries(temp.path()), ["acct.token"]);
}

#[test]
fn publish_sets_and_compares_owner_and_group() {
    let _lock = lock();
    let temp = tempfile::tempdir().unwrap();
    let dir = OutputDir::open(temp.path()).unwrap();
    let target = temp.path().join("t");
    if !rustix::process::geteuid().is_root() {
        // Without CAP_CHOWN giving a file away fails, and must fail cleanly.
        let error = dir
            .publish(name("t"), b"x", 0o600, Some(4242), None)
            .unwrap_err();
        assert!(error.to_string().contains(&target.display().to_string()));
        assert_eq!(entries(temp.path()), Vec::<String>::new());
        return;
    }
    let publish = |owner, group| dir.publish(name("t"), b"x", 0o640, owner, group);
    assert_eq!(publish(Some(4242), Some(4343)).unwrap(), Publish::Written);
    let meta = target.metadata().unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4242, 4343));
    assert_eq!(mode_of(&target), 0o640);
    assert_eq!(publish(Some(4242), Some(4343)).unwrap(), Publish::Unchanged);
    // Ids not asked for are not compared.
    assert_eq!(publish(None, None).unwrap(), Publish::Unchanged);
    assert_eq!(publish(None, Some(4344)).unwrap(), Publish::Written);
    assert_eq!(target.metadata().unwrap().gid(), 4344);
    assert_eq!(publish(Some(4243), None).unwrap(), Publish::Written);
    assert_eq!(target.metadata().unwrap().uid(), 4243);
}

#[test]
fn mode_is_independent_of_umask() {
    let _lock = lock();
    let temp = tempfile::tempdir().unwrap();
    let dir = OutputDir::open(temp.path()).unwrap();
    let _restore = UmaskGuard(rustix::process::umask(Mode::from_raw_mode(0o022)));
    let cases = [
        (0o000, 0o640),
        (0o077, 0o644),
        (0o777, 0o600),
        (0o000, 0o400),
    ];
    for (index, (umask, mode)) in cases.into_iter().enumerate() {
        rustix::process::umask(Mode::from_raw_mode(umask));
        let file = format!("f{index}");
        assert_eq!(
            dir.publish(name(&file), b"x", mode, None, None).unwrap(),
            Publish::Written
        );
        assert_eq!(mode_of(&temp.path().join(&file)), mode, "umask {umask:o}");
        // Rewriting an existing file under the same umask keeps the mode too.
        dir.publish(name(&file), b"y", mode, None, None).unwrap();
        assert_eq!(mode_of(&temp.path().join(&file)), mode, "umask {umask:o}");
    }
    // The umask really was in force.
    assert_eq!(
        rustix::process::umask(Mode::from_raw_mode(0o022)),
        Mode::from_raw_mode(0o000)
    );
}

#[test]
fn readers_never_see_a_partial_file_on_the_temp_file_system() {
    let _lock = lock();
    // Fewer rounds than on tmpfs: each publish costs a real fsync (about 10 ms on ext4).
    reader_loop(tempfile::tempdir().unwrap(), 300);
}

#[test]
fn readers_never_see_a_partial_file_on_tmpfs() {
    let _lock = lock();
    // Token files usually live on tmpfs (/run, a Memory emptyDir), which /dev/shm is.
    let shm = Path::new("/dev/shm");
    let temp = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    reader_loop(temp, 3000);
}

/// Two threads read the file by path while it is rewritten `rounds` times with contents of
/// two different lengths; every read must be one of the two whole contents.
fn reader_loop(temp: tempfile::TempDir, rounds: usize) {
    let dir = OutputDir::open(temp.path()).unwrap();
    let short = b"short-token".to_vec();
    let long = vec![b'L'; 6000];
    dir.publish(name("t"), &short, 0o600, None, None).unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (done, reads, bad) = (done.clone(), reads.clone(), bad.clone());
            let (path, short, long) = (temp.path().join("t"), short.clone(), long.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    match std::fs::read(&path) {
                        Ok(bytes) if bytes == short || bytes == long => {}
                        _ => {
                            bad.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for round in 0..rounds {
        let contents = if round % 2 == 0 { &long } else { &short };
        assert_eq!(
            dir.publish(name("t"), contents, 0o600, None, None).unwrap(),
            Publish::Written
        );
    }
    done.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().unwrap();
    }
    assert_eq!(bad.load(Ordering::Relaxed), 0);
    let reads = reads.load(Ordering::Relaxed);
    assert!(reads >= 1000, "only {reads} reads overlapped the writes");
    assert_eq!(entries(temp.path()), ["t"]);
}

#[test]
fn symlink_at_target_is_replaced_not_followed() {
    let _lock = lock();
    let outside = tempfile::tempdir().unwrap();
    let temp = tempfile::tempdir().unwrap();
    let dir = OutputDir::open(temp.path()).unwrap();
    let target = temp.path().join("t");
    let victim = outside.path().join("victim");

    // The victim already holds exactly what we publish, with the same mode: a comparison
    // that followed the link would answer Unchanged and leave the link in place.
    std::fs::write(&victim, b"new").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&victim, &target).unwrap();
    assert_eq!(
        dir.publish(name("t"), b"new", 0o600, None, None).unwrap(),
        Publish::Written
    );
    assert!(target.symlink_metadata().unwrap().file_type().is_file());
    assert_eq!(std::fs::read(&target).unwrap(), b"new");

    // A victim with other contents must not be overwritten either.
    std::fs::write(&victim, b"precious").unwrap();
    let victim_inode = victim.metadata().unwrap().ino();
    std::fs::remove_file(&target).unwrap();
    std::os::unix::fs::symlink(&victim, &target).unwrap();
    dir.publish(name("t"), b"secret", 0o644, None, None)
        .unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(mode_of(&victim), 0o600);
    assert_eq!(victim.metadata().unwrap().ino(), victim_inode);
    assert_eq!(std::fs::read(&target).unwrap(), b"secret");
}

#[test]
fn symlink_at_temp_name_is_skipped_not_followed() {
    let _lock = lock();
    let outside = tempfile::tempdir().unwrap();
    let temp = tempfile::tempdir().unwrap();
    let dir = OutputDir::open(temp.path()).unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();

    let planted = temp.path().join(temp_name(name("t"), 1));
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    let mut sequence = [1u64, 2].into_iter();
    let mut next = || sequence.next().unwrap();
    assert_eq!(
        dir.publish_with(name("t"), b"secret", 0o600, None, None, &mut next)
            .unwrap(),
        Publish::Written
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(planted.symlink_metadata().unwrap().is_symlink());
    assert_eq!(std::fs::read(temp.path().join("t")).unwrap(), b"secret");
    let mut expected = vec![
        "t".to_string(),
        planted.file_name().unwrap().to_string_lossy().into_owned(),
    ];
    expected.sort();
    assert_eq!(entries(temp.path()), expected);
}

#[test]
fn squatted_temp_names_give_up_and_keep_the_old_file() {
    let _lock = lock();
    let temp = tempfile::tempdir().unwrap();
    let dir = OutputDir::open(temp.path()).unwrap();
    dir.publish(name("t"), b"old", 0o600, None, None).unwrap();
    let squatted = temp.path().join(temp_name(name("t"), 7));
    std::fs::write(&squatted, b"someone else's").unwrap();

    let mut calls = 0;
    let mut always_seven = || {
        calls += 1;
        7
    };
    let error = dir
        .publish_with(
            name("t"),
            CANARY.as_bytes(),
            0o600,
            None,
            None,
            &mut always_seven,
        )
        .unwrap_err();
    assert!(matches!(
        error,
        OutputError::TempNamesTaken {
            tries: TEMP_TRIES,
            ..
        }
    ));
    assert_eq!(calls, TEMP_TRIES);
    let message = error.to_string();
    assert!(
        message.contains(&temp.path().join("t").display().to_string()),
        "{message}"
    );
    assert!(!message.contains(CANARY));
    assert_eq!(std::fs::read(temp.path().join("t")).unwrap(), b"old");
    assert_eq!(std::fs::read(&squatted).unwrap(), b"someone else's");
}

#[test]
fn failed_rename_keeps_the_target_and_removes_the_temp() {
    let _lock = lock();
    let temp = tempfile::tempdir().unwrap();
    let dir = OutputDir::open(temp.path()).unwrap();
    // Root bypasses permission checks, but nobody can rename a file over a non-empty
    // directory: the failure comes after the temp file was created, filled and synced.
    let target = temp.path().join("t");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"kept").unwrap();

    let error = dir
        .publish(name("t"), CANARY.as_bytes(), 0o600, None, None)
        .unwrap_err();
    assert!(
        matches!(
            error,
            OutputError::Io {
                action: "rename a temp file over",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains(&target.display().to_string()));
    assert_eq!(entries(temp.path()), ["t"]);
    assert_eq!(entries(&target), ["keep"]);
    assert_eq!(std::fs::read(target.join("keep")).unwrap(), b"kept");
}

#[test]
fn fifo_at_target_is_replaced_without_blocking() {
    let _lock = lock();
    let temp = tempfile::tempdir().unwrap();
    let dir = OutputDir::open(temp.path()).unwrap();
    rustix::fs::mkfifoat(&dir.fd, "t", Mode::from_raw_mode(0o600)).unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = dir.publish(name("t"), b"x", 0o600, None, None);
        let _ = sender.send(result.map_err(|error| error.to_string()));
    });
    // Fail instead of hanging the suite if the comparison blocks on the FIFO.
    let result = receiver
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("publish blocked on a FIFO");
    assert_eq!(result.unwrap(), Publish::Written);
    assert!(temp.path().join("t").symlink_metadata().unwrap().is_file());
}

#[test]
fn directory_is_pinned_by_its_fd() {
    let _lock = lock();
    let temp = tempfile::tempdir().unwrap();
    let original = temp.path().join("out");
    std::fs::create_dir(&original).unwrap();
    let dir = OutputDir::open(&original).unwrap();
    let moved = temp.path().join("out.old");
    let elsewhere = temp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::rename(&original, &moved).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &original).unwrap();

    dir.publish(name("t"), b"x", 0o600, None, None).unwrap();
    assert_eq!(std::fs::read(moved.join("t")).unwrap(), b"x");
    assert_eq!(entries(&elsewhere), Vec::<String>::new());
}

#[test]
fn remove_reports_whether_the_file_existed() {
    let _lock = lock();
    let outside = tempfile::tempdir().unwrap();
    let temp = tempfile::tempdir().unwrap();
    let dir = OutputDir::open(temp.path()).unwrap();
    dir.publish(name("t"), b"x", 0o600, None, None).unwrap();
    assert!(dir.remove(name("t")).unwrap());
    assert!(!dir.remove(name("t")).unwrap());
    assert_eq!(entries(temp.path()), Vec::<String>::new());

    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, temp.path().join("link")).unwrap();
    assert!(dir.remove(name("link")).unwrap());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");

    std::fs::create_dir(temp.path().join("sub")).unwrap();
    let error = dir.remove(name("sub")).unwrap_err();
    assert!(
        error
            .to_string()
            .contains(&temp.path().join("sub").display().to_string())
    );
    assert!(matches!(
        dir.remove(name("../x")),
        Err(OutputError::InvalidName { .. })
    ));
}

#[test]
fn remove_stale_temps_removes_only_ours() {
    let _lock = lock();
    let temp = tempfile::tempdir().unwrap();
    let dir = OutputDir::open(temp.path()).unwrap();
    let ours = [
        ".acct.token.0123456789abcdef.tmp",
        ".x.ffffffffffffffff.tmp",
        ".a.b.0000000000000000.tmp",
    ];
    let unrelated = [
        ".bashrc",
        "acct.token",
        ".acct.token.0123456789abcdeg.tmp",
        ".acct.token.0123456789ABCDEF.tmp",
        ".acct.token.0123.tmp",
        "..0123456789abcdef.tmp",
        ".acct.token.0123456789abcdef.tmp.bak",
        "x.0123456789abcdef.tmp",
    ];
    for file in ours.iter().chain(&unrelated) {
        std::fs::write(temp.path().join(file), b"x").unwrap();
    }
    // Matching names that are not our regular files stay.
    let foreign = ".foreign.1111111111111111.tmp";
    let directory = ".dir.2222222222222222.tmp";
    let link = ".link.3333333333333333.tmp";
    std::fs::write(temp.path().join(foreign), b"x").unwrap();
    let owner_changed = rustix::process::geteuid().is_root();
    if owner_changed {
        std::os::unix::fs::chown(temp.path().join(foreign), Some(4242), None).unwrap();
    }
    std::fs::create_dir(temp.path().join(directory)).unwrap();
    std::os::unix::fs::symlink("acct.token", temp.path().join(link)).unwrap();

    assert_eq!(
        dir.remove_stale_temps().unwrap(),
        ours.len() + usize::from(!owner_changed)
    );
    let mut expected: Vec<String> = unrelated.iter().map(|file| file.to_string()).collect();
    expected.extend([directory.to_string(), link.to_string()]);
    if owner_changed {
        expected.push(foreign.to_string());
    }
    expected.sort();
    assert_eq!(entries(temp.path()), expected);
    assert_eq!(dir.remove_stale_temps().unwrap(), 0);
}

#[test]
fn write_check_leaves_nothing_behind() {
    let _lock = lock();
    let temp = tempfile::tempdir().unwrap();
    std::fs::write(temp.path().join("existing"), b"x").unwrap();
    let dir = OutputDir::open(temp.path()).unwrap();
    dir.write_check().unwrap();
    dir.write_check().unwrap();
    assert_eq!(entries(temp.path()), ["existing"]);
    assert!(is_temp_name(
        temp_name(name(WRITE_CHECK_STEM), 0).as_bytes()
    ));
}

#[test]
fn open_refuses_symlinks_and_names_the_path() {
    let _lock = lock();
    let temp = tempfile::tempdir().unwrap();
    let real = temp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = temp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let file = temp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let dangling = temp.path().join("dangling");
    std::os::unix::fs::symlink(temp.path().join("nowhere"), &dangling).unwrap();

    let error = OutputDir::open(&link).unwrap_err();
    assert!(
        matches!(error, OutputError::DirIsSymlink { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains(&link.display().to_string()));
    assert!(matches!(
        OutputDir::open(&dangling),
        Err(OutputError::DirIsSymlink { .. })
    ));
    for path in [file, temp.path().join("missing")] {
        let error = OutputDir::open(&path).unwrap_err();
        assert!(matches!(error, OutputError::OpenDir { .. }), "{error:?}");
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
    }
    // A symlink higher up the path is followed; only the last component is refused.
    let opened = OutputDir::open(&link.join(".")).unwrap();
    assert_eq!(opened.path(), link.join("."));
}

#[test]
fn invalid_names_modes_and_ids_are_refused() {
    let _lock = lock();
    let temp = tempfile::tempdir().unwrap();
    let dir = OutputDir::open(temp.path()).unwrap();
    let long = "n".repeat(NAME_MAX + 1);
    let bad_names: [&OsStr; 7] = [
        name(""),
        name("."),
        name(".."),
        name("a/b"),
        OsStr::from_bytes(b"a\0b"),
        name(&long),
        name(".t.0123456789abcdef.tmp"),
    ];
    for bad in bad_names {
        let error = dir.publish(bad, b"x", 0o600, None, None).unwrap_err();
        assert!(
            matches!(error, OutputError::InvalidName { .. }),
            "{bad:?}: {error:?}"
        );
        assert!(
            error
                .to_string()
                .contains(&temp.path().display().to_string())
        );
    }
    for mode in [0o1600, 0o4755, 0o10600] {
        let error = dir.publish(name("t"), b"x", mode, None, None).unwrap_err();
        assert!(matches!(error, OutputError::InvalidMode { .. }), "{mode:o}");
        assert!(error.to_string().contains("t"));
    }
    assert!(matches!(
        dir.publish(name("t"), b"x", 0o600, Some(u32::MAX), None),
        Err(OutputError::InvalidId { .. })
    ));
    assert!(matches!(
        dir.publish(name("t"), b"x", 0o600, None, Some(u32::MAX)),
        Err(OutputError::InvalidId { .. })
    ));
    assert_eq!(entries(temp.path()), Vec::<String>::new());
}

#[test]
fn longest_name_gets_a_shortened_temp_name() {
    let _lock = lock();
    let temp = tempfile::tempdir().unwrap();
    let dir = OutputDir::open(temp.path()).unwrap();
    let long = "n".repeat(NAME_MAX);
    assert_eq!(
        dir.publish(name(&long), b"x", 0o600, None, None).unwrap(),
        Publish::Written
    );
    assert_eq!(entries(temp.path()), [long.as_str()]);
    let temp = temp_name(name(&long), u64::MAX);
    assert_eq!(temp.len(), NAME_MAX);
    assert!(is_temp_name(temp.as_bytes()));
}

#[test]
fn temp_names_have_our_shape() {
    let made = temp_name(name("acct.token"), 0xab);
    assert_eq!(made, ".acct.token.00000000000000ab.tmp");
    assert!(is_temp_name(made.as_bytes()));
    let cases: &[(&str, bool)] = &[
        (".a.0123456789abcdef.tmp", true),
        (".a.b.0123456789abcdef.tmp", true),
        ("a.0123456789abcdef.tmp", false),
        ("..0123456789abcdef.tmp", false),
        (".a0123456789abcdef.tmp", false),
        (".a.0123456789abcdef", false),
        (".a.0123456789abcde.tmp", false),
        (".a.0123456789abcdeF.tmp", false),
        (".tmp", false),
        ("", false),
    ];
    for (candidate, expected) in cases {
        assert_eq!(is_temp_name(candidate.as_bytes()), *expected, "{candidate}");
    }
}

#[test]
fn module_publish_uses_the_parent_directory() {
    let _lock = lock();
    let temp = tempfile::tempdir().unwrap();
    let mut output = spec(Format::Header);
    output.path = temp.path().join("demo.header");
    output.mode = 0o640;
    let contents = render(&output, "demo", &token("tok"), Some("Bearer"));
    assert_eq!(publish(&output, &contents).unwrap(), Publish::Written);
    assert_eq!(
        std::fs::read(&output.path).unwrap(),
        b"Authorization: Bearer tok\n"
    );
    assert_eq!(mode_of(&output.path), 0o640);
    assert_eq!(publish(&output, &contents).unwrap(), Publish::Unchanged);

    output.path = PathBuf::from("/");
    assert!(matches!(
        publish(&output, b"x"),
        Err(OutputError::InvalidName { .. })
    ));
    output.path = temp.path().join("missing").join("t");
    let error = publish(&output, b"x").unwrap_err();
    assert!(
        error
            .to_string()
            .contains(&temp.path().join("missing").display().to_string())
    );
}

#[test]
fn check_trusted_refuses_shared_or_foreign_directories() {
    let _lock = lock();
    let temp = tempfile::tempdir().unwrap();
    let set_mode = |mode| {
        std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let dir = OutputDir::open(temp.path()).unwrap();
    set_mode(0o750);
    dir.check_trusted().unwrap();
    set_mode(0o1777);
    dir.check_trusted().unwrap();
    set_mode(0o777);
    let error = dir.check_trusted().unwrap_err();
    assert!(matches!(error, OutputError::UntrustedDir { .. }));
    assert!(
        error
            .to_string()
            .contains(&temp.path().display().to_string())
    );
    set_mode(0o770);
    let error = dir.check_trusted().unwrap_err();
    assert!(error.to_string().contains("group"), "{error}");
    set_mode(0o3770);
    dir.check_trusted().unwrap();
    set_mode(0o700);
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(temp.path(), Some(4242), None).unwrap();
        assert!(matches!(
            dir.check_trusted(),
            Err(OutputError::UntrustedDir { .. })
        ));
        std::os::unix::fs::chown(temp.path(), Some(0), None).unwrap();
        dir.check_trusted().unwrap();
    }
}

#[test]
fn errors_never_contain_the_contents() {
    let _lock = lock();
    let temp = tempfile::tempdir().unwrap();
    let dir = OutputDir::open(temp.path()).unwrap();
    std::fs::create_dir_all(temp.path().join("busy").join("x")).unwrap();
    let contents = render(&spec(Format::Json), "demo", &token(CANARY), Some("Bearer"));
    let errors = [
        dir.publish(name("busy"), &contents, 0o600, None, None)
            .unwrap_err(),
        dir.publish(name("a/b"), &contents, 0o600, None, None)
            .unwrap_err(),
        dir.publish(name("t"), &contents, 0o7777, None, None)
            .unwrap_err(),
        dir.publish_with(name("t"), &contents, 0o600, None, None, &mut || {
            std::fs::write(temp.path().join(temp_name(name("t"), 5)), CANARY).unwrap();
            5
        })
        .unwrap_err(),
    ];
    for error in errors {
        let mut texts = vec![error.to_string(), format!("{error:?}")];
        let mut source = std::error::Error::source(&error);
        while let Some(inner) = source {
            texts.push(inner.to_string());
            source = inner.source();
        }
        for text in texts {
            assert!(!text.contains(CANARY), "{text}");
        }
        assert!(
            error
                .to_string()
                .contains(&temp.path().display().to_string())
        );
        let first = error.to_string().chars().next().unwrap();
        assert!(first.is_lowercase(), "{error}");
        assert!(!error.to_string().ends_with('.'), "{error}");
    }
}

#[test]
fn holds_tells_missing_same_other_and_non_regular_files_apart() {
    let _lock = lock();
    let temp = tempfile::tempdir().unwrap();
    let dir = OutputDir::open(temp.path()).unwrap();
    assert_eq!(dir.holds(name("t"), b"abc").unwrap(), None);
    std::fs::write(temp.path().join("t"), b"abc").unwrap();
    assert_eq!(dir.holds(name("t"), b"abc").unwrap(), Some(true));
    assert_eq!(dir.holds(name("t"), b"abd").unwrap(), Some(false));
    assert_eq!(dir.holds(name("t"), b"abcd").unwrap(), Some(false));
    assert_eq!(dir.holds(name("t"), b"ab").unwrap(), Some(false));
    // A symlink to a file with the same bytes is not the file: never followed.
    std::fs::write(temp.path().join("real"), b"abc").unwrap();
    std::os::unix::fs::symlink(temp.path().join("real"), temp.path().join("link")).unwrap();
    assert_eq!(dir.holds(name("link"), b"abc").unwrap(), Some(false));
    // A FIFO neither blocks nor agrees.
    rustix::fs::mknodat(
        &dir.fd,
        "fifo",
        rustix::fs::FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    assert_eq!(dir.holds(name("fifo"), b"").unwrap(), Some(false));
    assert!(dir.holds(name("../escape"), b"abc").is_err());
}

#[test]
fn an_unsynced_directory_still_publishes_atomically_with_the_mode() {
    let _lock = lock();
    let temp = tempfile::tempdir().unwrap();
    let dir = OutputDir::open(temp.path()).unwrap().unsynced();
    assert_eq!(
        dir.publish(name("s"), b"one", 0o600, None, None).unwrap(),
        Publish::Written
    );
    assert_eq!(
        dir.publish(name("s"), b"one", 0o600, None, None).unwrap(),
        Publish::Unchanged
    );
    assert_eq!(
        dir.publish(name("s"), b"two", 0o600, None, None).unwrap(),
        Publish::Written
    );
    assert_eq!(std::fs::read(temp.path().join("s")).unwrap(), b"two");
    assert_eq!(mode_of(&temp.path().join("s")), 0o600);
    assert_eq!(entries(temp.path()), vec!["s".to_string()]);
}

#[test]
fn overwrite_rewrites_its_own_file_in_place_and_replaces_anything_else() {
    use std::os::unix::fs::MetadataExt as _;
    let _lock = lock();
    let temp = tempfile::tempdir().unwrap();
    let dir = OutputDir::open(temp.path()).unwrap().unsynced();
    let path = temp.path().join("s");
    // Nothing there: created like a publish, with the mode.
    dir.overwrite(name("s"), b"a longer first version", 0o600)
        .unwrap();
    assert_eq!(mode_of(&path), 0o600);
    let inode = path.metadata().unwrap().ino();
    // Its own file: the same inode, shorter contents cut to length.
    dir.overwrite(name("s"), b"short", 0o600).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"short");
    assert_eq!(
        path.metadata().unwrap().ino(),
        inode,
        "not rewritten in place"
    );
    // A hard link to another file is replaced, never written through.
    std::fs::remove_file(&path).unwrap();
    let outside = temp.path().join("outside");
    std::fs::write(&outside, b"keep me").unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::hard_link(&outside, &path).unwrap();
    dir.overwrite(name("s"), b"new", 0o600).unwrap();
    assert_eq!(std::fs::read(&outside).unwrap(), b"keep me");
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
    // A symlink is replaced, its target untouched.
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&outside, &path).unwrap();
    dir.overwrite(name("s"), b"newer", 0o600).unwrap();
    assert_eq!(std::fs::read(&outside).unwrap(), b"keep me");
    assert!(!path.symlink_metadata().unwrap().file_type().is_symlink());
    // A file of another mode is replaced with the right one.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    dir.overwrite(name("s"), b"newest", 0o600).unwrap();
    assert_eq!(mode_of(&path), 0o600);
    assert_eq!(std::fs::read(&path).unwrap(), b"newest");
    // A FIFO neither blocks nor is written into.
    std::fs::remove_file(&path).unwrap();
    rustix::fs::mknodat(
        &dir.fd,
        "s",
        rustix::fs::FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    dir.overwrite(name("s"), b"after fifo", 0o600).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"after fifo");
}
