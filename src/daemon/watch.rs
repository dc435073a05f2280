//! Watching the config, secret and CA files for changes, through their directories.
//!
//! A file is never watched by itself: editors replace files by rename and Kubernetes swaps a
//! `..data` symlink, both of which a watch on the file's inode misses. So the directories are
//! watched, and an event counts only when it names one of the watched files, the target of one
//! that is a symlink, or a `..data` entry beside one (the Kubernetes swap). Everything else in
//! those directories (a log file, an editor's swap file, other programs' files) is ignored, so a
//! busy neighbour cannot make the daemon reload, and the daemon's own log written there cannot
//! feed back into it.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc::UnboundedSender;

/// The name Kubernetes gives the symlink it swaps atomically in Secret and ConfigMap volumes.
const KUBERNETES_DATA: &str = "..data";

/// Which entries of which directories matter. Pure, so that it is table-tested.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Interest {
    /// (directory, entry name) pairs whose changes matter.
    entries: BTreeSet<(PathBuf, OsString)>,
}

impl Interest {
    /// The entries to react to for `files`: each file, every symlink met on the way to what it
    /// names (a link to it, a link in a chain, a directory link on its path), resolved now and
    /// again at every reload; plus `..data` beside each file. Relative paths are made absolute,
    /// as the watcher reports events with absolute paths.
    fn of(files: &[PathBuf]) -> Interest {
        let mut interest = Interest::default();
        for file in files {
            let Ok(file) = std::path::absolute(file) else {
                continue;
            };
            if let Some(dir) = directory_of(&file) {
                interest
                    .entries
                    .insert((dir, OsString::from(KUBERNETES_DATA)));
            }
            for path in resolution(&file) {
                interest.add(&path);
            }
        }
        interest
    }

    fn add(&mut self, file: &Path) {
        if let (Some(dir), Some(name)) = (directory_of(file), file.file_name()) {
            self.entries.insert((dir, name.to_os_string()));
        }
    }

    /// Whether an event on `path` matters.
    fn matches(&self, path: &Path) -> bool {
        match (directory_of(path), path.file_name()) {
            (Some(dir), Some(name)) => self.entries.contains(&(dir, name.to_os_string())),
            _ => false,
        }
    }

    /// The directories to watch.
    fn dirs(&self) -> BTreeSet<PathBuf> {
        self.entries.iter().map(|(dir, _)| dir.clone()).collect()
    }
}

/// Watches the directories holding a set of files.
pub struct FileWatcher {
    watcher: RecommendedWatcher,
    dirs: BTreeSet<PathBuf>,
    /// Shared with the watcher's callback, which runs on notify's thread.
    interest: Arc<Mutex<Interest>>,
}

impl FileWatcher {
    /// Starts watching `files`; every event that concerns one of them sends `()` on `events`.
    /// A directory that cannot be watched is logged and the others are watched (see
    /// [`FileWatcher::set_files`]).
    ///
    /// # Errors
    /// The watcher could not be created (inotify limits, for example).
    pub fn new(files: &[PathBuf], events: UnboundedSender<()>) -> notify::Result<FileWatcher> {
        let interest = Arc::new(Mutex::new(Interest::default()));
        let seen = Arc::clone(&interest);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else {
                // An overflowed queue may have hidden a change: look again.
                let _ = events.send(());
                return;
            };
            // Access events (reads) are ours and the readers'; they change nothing.
            if matches!(event.kind, notify::EventKind::Access(_)) {
                return;
            }
            let interest = seen.lock().unwrap_or_else(|poison| poison.into_inner());
            if event.need_rescan() || event.paths.iter().any(|path| interest.matches(path)) {
                let _ = events.send(());
            }
        })?;
        let mut watcher = FileWatcher {
            watcher,
            dirs: BTreeSet::new(),
            interest,
        };
        watcher.set_files(files);
        Ok(watcher)
    }

    /// Watches exactly `files` from now on. A directory that cannot be watched (missing, say)
    /// is logged and tried again on the next call; the others are watched.
    pub fn set_files(&mut self, files: &[PathBuf]) {
        let interest = Interest::of(files);
        let wanted = interest.dirs();
        *self
            .interest
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = interest;
        for dir in self.dirs.difference(&wanted) {
            let _ = self.watcher.unwatch(dir);
        }
        let mut watching = BTreeSet::new();
        for dir in &wanted {
            if self.dirs.contains(dir) {
                watching.insert(dir.clone());
                continue;
            }
            match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watching.insert(dir.clone());
                }
                Err(error) => tracing::warn!(dir = %dir.display(), "cannot watch: {error}"),
            }
        }
        self.dirs = watching;
    }

    /// The directories being watched.
    #[cfg(test)]
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(PathBuf::as_path)
    }
}

/// Every path whose change changes what `file` names: each symlink met while resolving it
/// (whether a component of the path or a hop of a chain), and the path it finally names. Stops
/// after 40 links (the kernel's own limit) or at the first path that cannot be read.
fn resolution(file: &Path) -> Vec<PathBuf> {
    const MAX_LINKS: usize = 40;
    let mut found = Vec::new();
    let mut current = file.to_path_buf();
    'resolve: for _ in 0..MAX_LINKS {
        let mut prefix = PathBuf::new();
        let mut components = current.components();
        while let Some(component) = components.next() {
            match component {
                // Every link before this point was resolved already, so `..` can be taken
                // lexically: it names the real parent.
                std::path::Component::ParentDir => {
                    prefix.pop();
                    continue;
                }
                std::path::Component::CurDir => continue,
                _ => prefix.push(component),
            }
            let is_link = prefix
                .symlink_metadata()
                .is_ok_and(|meta| meta.file_type().is_symlink());
            if !is_link {
                continue;
            }
            let Ok(target) = std::fs::read_link(&prefix) else {
                break;
            };
            found.push(prefix.clone());
            // A relative target is relative to the link's directory; the rest of the path
            // follows the target.
            let mut next = match prefix.parent() {
                Some(parent) => parent.join(target),
                None => target,
            };
            next.extend(components);
            current = next;
            continue 'resolve;
        }
        current = prefix;
        break;
    }
    found.push(current);
    found
}

fn directory_of(file: &Path) -> Option<PathBuf> {
    let parent = file.parent()?;
    if parent.as_os_str().is_empty() {
        Some(PathBuf::from("."))
    } else {
        Some(parent.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn interest_table() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf");
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("real.toml"), "").unwrap();
        std::os::unix::fs::symlink(elsewhere.join("real.toml"), conf.join("config.toml")).unwrap();
        let interest = Interest::of(&[conf.join("config.toml"), PathBuf::from("/vol/password")]);
        let elsewhere = std::fs::canonicalize(&elsewhere).unwrap();
        // (event path, matters?)
        let cases = [
            (conf.join("config.toml"), true),
            (conf.join("..data"), true),
            (conf.join("daemon.log"), false),
            (conf.join(".config.toml.swp"), false),
            (conf.join("config.toml~"), false),
            (elsewhere.join("real.toml"), true),
            (elsewhere.join("other.toml"), false),
            (PathBuf::from("/vol/password"), true),
            (PathBuf::from("/vol/..data"), true),
            (PathBuf::from("/vol/..2026_01_01/password"), false),
            (PathBuf::from("/vol/..data_tmp"), false),
            (PathBuf::from("/"), false),
        ];
        for (path, expected) in cases {
            assert_eq!(interest.matches(&path), expected, "{}", path.display());
        }
        let mut dirs = interest.dirs().into_iter().collect::<Vec<_>>();
        dirs.sort();
        assert_eq!(dirs.len(), 3, "{dirs:?}");
    }

    #[test]
    fn every_link_on_the_way_is_watched() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        // secrets/db -> db-v2 (a directory link, as a deployment tool swaps), db-v2/password ->
        // ../../alternatives/password (a chain, as update-alternatives makes) ->
        // ../store/password.
        for sub in ["secrets/db-v2", "alternatives", "store"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::write(root.join("store/password"), "x").unwrap();
        std::os::unix::fs::symlink("db-v2", root.join("secrets/db")).unwrap();
        std::os::unix::fs::symlink(
            "../../alternatives/password",
            root.join("secrets/db-v2/password"),
        )
        .unwrap();
        std::os::unix::fs::symlink("../store/password", root.join("alternatives/password"))
            .unwrap();
        let interest = Interest::of(&[root.join("secrets/db/password")]);
        for (path, expected) in [
            (root.join("secrets/db"), true),
            (root.join("secrets/db/password"), false),
            (root.join("secrets/db-v2/password"), true),
            (root.join("alternatives/password"), true),
            (root.join("store/password"), true),
            (root.join("store/other"), false),
        ] {
            assert_eq!(interest.matches(&path), expected, "{}", path.display());
        }
        // A loop of links ends without hanging.
        std::os::unix::fs::symlink("loop-b", root.join("loop-a")).unwrap();
        std::os::unix::fs::symlink("loop-a", root.join("loop-b")).unwrap();
        let looping = Interest::of(&[root.join("loop-a")]);
        assert!(looping.matches(&root.join("loop-a")) && looping.matches(&root.join("loop-b")));
    }

    #[test]
    fn relative_paths_match_the_absolute_paths_events_carry() {
        let cwd = std::env::current_dir().unwrap();
        let interest = Interest::of(&[PathBuf::from("config.toml")]);
        assert!(interest.matches(&cwd.join("config.toml")));
        let dotted = Interest::of(&[PathBuf::from("./config.toml")]);
        assert!(dotted.matches(&cwd.join("config.toml")));
    }

    #[tokio::test]
    async fn a_symlink_swap_in_a_watched_directory_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("..2026_1");
        let second = dir.path().join("..2026_2");
        std::fs::create_dir(&first).unwrap();
        std::fs::create_dir(&second).unwrap();
        std::fs::write(first.join("password"), "one").unwrap();
        std::fs::write(second.join("password"), "two").unwrap();
        std::os::unix::fs::symlink("..2026_1", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/password", dir.path().join("password")).unwrap();

        let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
        let watcher = FileWatcher::new(&[dir.path().join("password")], sender).unwrap();
        assert!(watcher.dirs().any(|watched| watched == dir.path()));
        // Kubernetes swaps the `..data` link atomically by renaming a new link over it.
        std::os::unix::fs::symlink("..2026_2", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
        assert!(matches!(seen, Ok(Some(()))), "no event for the swap");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("password")).unwrap(),
            "two"
        );
    }

    #[tokio::test]
    async fn other_files_in_a_watched_directory_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "one").unwrap();
        let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
        let _watcher = FileWatcher::new(std::slice::from_ref(&config), sender).unwrap();
        // A log file written line by line beside the config: no event gets through.
        let log = dir.path().join("daemon.log");
        for line in 0..200 {
            use std::io::Write as _;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            writeln!(file, "line {line}").unwrap();
        }
        // Then the config itself changes; the first event to arrive must be for it, and the
        // queue must then be empty (the log's 200 writes left nothing behind).
        std::fs::write(&config, "two").unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
        assert!(matches!(seen, Ok(Some(()))), "no event for the config");
        // Let the writes' events drain through notify's thread before counting.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut extra = 0;
        while events.try_recv().is_ok() {
            extra += 1;
        }
        // Writing the config is one open, one write and one close: at most a few events.
        assert!(extra <= 3, "{extra} more events after the config write");
    }

    /// A secret whose directory does not exist yet (a volume not mounted at start) must not
    /// switch off the watching of the config and the other files.
    #[tokio::test]
    async fn a_directory_that_cannot_be_watched_leaves_the_others_watched() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "one").unwrap();
        let missing = dir.path().join("not-mounted").join("password");
        let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = FileWatcher::new(&[config.clone(), missing.clone()], sender).unwrap();
        assert!(watcher.dirs().all(|watched| watched == dir.path()));
        std::fs::write(&config, "two").unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
        assert!(matches!(seen, Ok(Some(()))), "no event for the config");
        // Once the directory appears, the next call watches it too.
        std::fs::create_dir(dir.path().join("not-mounted")).unwrap();
        watcher.set_files(&[config, missing]);
        assert!(
            watcher
                .dirs()
                .any(|watched| watched == dir.path().join("not-mounted"))
        );
    }
}
