//! Watching the config and secret files for changes, through their directories.
//!
//! A file is never watched by itself: editors replace files by rename and Kubernetes swaps a
//! `..data` symlink, both of which a watch on the file's inode misses. Any event in a watched
//! directory becomes one message; the daemon debounces and compares contents.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc::UnboundedSender;

/// Watches the directories holding a set of files.
pub struct FileWatcher {
    watcher: RecommendedWatcher,
    dirs: BTreeSet<PathBuf>,
}

impl FileWatcher {
    /// Starts watching the directories of `files`; every event sends `()` on `events`.
    ///
    /// # Errors
    /// The watcher could not be created (inotify limits, for example).
    pub fn new(files: &[PathBuf], events: UnboundedSender<()>) -> notify::Result<FileWatcher> {
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Access events (reads) are ours and the readers'; they change nothing.
            if let Ok(event) = event
                && !matches!(event.kind, notify::EventKind::Access(_))
            {
                let _ = events.send(());
            }
        })?;
        let mut watcher = FileWatcher {
            watcher,
            dirs: BTreeSet::new(),
        };
        watcher.set_files(files)?;
        Ok(watcher)
    }

    /// Watches exactly the directories of `files` from now on.
    ///
    /// # Errors
    /// A directory that cannot be watched; the others are still watched.
    pub fn set_files(&mut self, files: &[PathBuf]) -> notify::Result<()> {
        let wanted: BTreeSet<PathBuf> =
            files.iter().filter_map(|file| directory_of(file)).collect();
        for dir in self.dirs.difference(&wanted) {
            let _ = self.watcher.unwatch(dir);
        }
        let mut first_error = None;
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
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), "cannot watch: {error}");
                    first_error.get_or_insert(error);
                }
            }
        }
        self.dirs = watching;
        first_error.map_or(Ok(()), Err)
    }

    /// The directories being watched.
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(PathBuf::as_path)
    }
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
        assert_eq!(watcher.dirs().collect::<Vec<_>>(), vec![dir.path()]);
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
}
