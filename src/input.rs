//! Reading the files tokenkeeper takes input from: the config, secret files, CA bundles and state
//! files.
//!
//! Invariant: no read can block or exhaust memory. Every file is opened with `O_NONBLOCK` (a FIFO
//! opens at once instead of waiting for a writer) and `O_NOCTTY`, checked with `fstat` to be a
//! regular file before a byte is read, and read with a size cap. A FIFO, a device, a socket or a
//! directory at an input path is refused with an error that names the path and what is there, so
//! `-c /dev/zero` fails at once instead of growing without bound, and a FIFO planted where a
//! secret was expected cannot freeze a runtime thread. Bytes read are zeroized when dropped, since
//! most inputs hold secrets.

use std::fs::File;
use std::io::{self, Read as _};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;
use zeroize::Zeroizing;

/// Runs file I/O that a hung file system (NFS, FUSE, a stalled disk) could block, without
/// freezing the rest of the process: on a multi-thread runtime the worker first hands its other
/// tasks, and the I/O and timer drivers it may be running, to another thread
/// (`block_in_place`), so other accounts, timers and signals go on while this call waits. Still
/// synchronous for the caller: no await point, so a task cancelled around it never sees half of
/// it. Elsewhere (a current-thread runtime, no runtime) it simply runs `work`.
pub fn may_block<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// The SHA-256 of an input's bytes: how the daemon tells that a config or CA bundle changed
/// without keeping its contents.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Whether the last component of an input path may be a symlink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Symlinks {
    /// Followed: Kubernetes Secret and ConfigMap volumes are `..data` symlinks, and `/etc` files
    /// are often links into a configuration-management tree.
    Follow,
    /// Refused: the daemon's own files (state) are never links, and one found there was planted.
    Refuse,
}

/// A file's contents with the facts about it that callers check.
pub struct InputFile {
    /// At most the cap the caller gave; zeroized on drop.
    pub bytes: Zeroizing<Vec<u8>>,
    /// Permission bits (`st_mode & 0o7777`) of the file that was read (the target of a link).
    pub mode: u32,
    /// Owner of the file that was read.
    pub uid: u32,
}

/// Why an input file could not be read. Names the path; never carries contents.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is a symlink, which is refused here")]
    Symlink { path: PathBuf },
    #[error("{path} is a {kind}, not a regular file")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path} is larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: usize },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl InputError {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            InputError::Open { path, .. }
            | InputError::Symlink { path }
            | InputError::NotRegular { path, .. }
            | InputError::TooLarge { path, .. }
            | InputError::Read { path, .. } => path,
        }
    }

    /// Whether the file simply does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, InputError::Open { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Reads at most `limit` bytes of the regular file at `path`.
///
/// # Errors
/// The file is missing or unreadable, is not a regular file (FIFO, device, socket, directory), is
/// a symlink when `symlinks` is [`Symlinks::Refuse`], or is larger than `limit`.
pub fn read_file(path: &Path, limit: usize, symlinks: Symlinks) -> Result<InputFile, InputError> {
    let fd = rustix::fs::open(path, open_flags(symlinks), Mode::empty())
        .map_err(|errno| open_error(path, errno, symlinks))?;
    read_opened(fd, path, limit)
}

/// Reads at most `limit` bytes of the regular file `name` in the directory `dir`, relative to its
/// descriptor (so a directory renamed or swapped for a symlink meanwhile is not followed).
/// `path` is only used in messages.
///
/// # Errors
/// As [`read_file`].
pub fn read_file_at(
    dir: impl AsFd,
    name: &std::ffi::OsStr,
    path: &Path,
    limit: usize,
    symlinks: Symlinks,
) -> Result<InputFile, InputError> {
    let fd = rustix::fs::openat(dir, name, open_flags(symlinks), Mode::empty())
        .map_err(|errno| open_error(path, errno, symlinks))?;
    read_opened(fd, path, limit)
}

fn open_flags(symlinks: Symlinks) -> OFlags {
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    match symlinks {
        Symlinks::Follow => flags,
        Symlinks::Refuse => flags | OFlags::NOFOLLOW,
    }
}

fn open_error(path: &Path, errno: Errno, symlinks: Symlinks) -> InputError {
    // With O_NOFOLLOW a symlink as the last component fails with ELOOP.
    if errno == Errno::LOOP && symlinks == Symlinks::Refuse {
        return InputError::Symlink {
            path: path.to_path_buf(),
        };
    }
    InputError::Open {
        path: path.to_path_buf(),
        source: errno.into(),
    }
}

fn read_opened(fd: OwnedFd, path: &Path, limit: usize) -> Result<InputFile, InputError> {
    let read_error = |source: io::Error| InputError::Read {
        path: path.to_path_buf(),
        source,
    };
    let stat = rustix::fs::fstat(&fd).map_err(|errno| read_error(errno.into()))?;
    let kind = FileType::from_raw_mode(stat.st_mode);
    if kind != FileType::RegularFile {
        return Err(InputError::NotRegular {
            path: path.to_path_buf(),
            kind: describe(kind),
        });
    }
    let too_large = || InputError::TooLarge {
        path: path.to_path_buf(),
        limit,
    };
    if u64::try_from(stat.st_size).unwrap_or(u64::MAX) > limit as u64 {
        return Err(too_large());
    }
    // The file may grow between fstat and read: read one byte past the cap to notice, into a
    // buffer sized up front so that no reallocation leaves an unzeroized copy behind.
    let size = usize::try_from(stat.st_size).unwrap_or(0);
    let mut bytes = Zeroizing::new(Vec::with_capacity(size.saturating_add(1).min(limit + 1)));
    File::from(fd)
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() > limit {
        return Err(too_large());
    }
    Ok(InputFile {
        bytes,
        mode: stat.st_mode & 0o7777,
        uid: stat.st_uid,
    })
}

/// A file type as an operator would say it.
fn describe(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "special file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn reads_a_regular_file_with_its_mode_and_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "hello").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let read = read_file(&path, 5, Symlinks::Refuse).unwrap();
        assert_eq!(&read.bytes[..], b"hello");
        assert_eq!(read.mode, 0o640);
        assert_eq!(read.uid, rustix::process::geteuid().as_raw());
    }

    #[test]
    fn refuses_what_is_not_a_regular_file_at_once_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, Mode::from_raw_mode(0o600)).unwrap();
        let started = Instant::now();
        let cases: [(&Path, &str); 3] = [
            (&fifo, "is a FIFO"),
            (Path::new("/dev/zero"), "is a character device"),
            (dir.path(), "is a directory"),
        ];
        for (path, expected) in cases {
            for symlinks in [Symlinks::Follow, Symlinks::Refuse] {
                let error = read_file(path, 1 << 20, symlinks).err().unwrap();
                let message = error.to_string();
                assert!(message.contains(expected), "{message}");
                assert!(message.contains(&path.display().to_string()), "{message}");
            }
        }
        // Opening a FIFO without a writer must not wait for one.
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn caps_the_size_and_handles_links_as_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![b'x'; 101]).unwrap();
        let error = read_file(&path, 100, Symlinks::Follow).err().unwrap();
        assert!(matches!(error, InputError::TooLarge { limit: 100, .. }));
        assert_eq!(
            read_file(&path, 101, Symlinks::Follow).unwrap().bytes.len(),
            101
        );

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(read_file(&link, 200, Symlinks::Follow).is_ok());
        let error = read_file(&link, 200, Symlinks::Refuse).err().unwrap();
        assert!(matches!(error, InputError::Symlink { .. }), "{error}");

        let missing = read_file(&dir.path().join("nope"), 10, Symlinks::Follow)
            .err()
            .unwrap();
        assert!(missing.is_not_found());
        assert_eq!(missing.path(), dir.path().join("nope"));

        let opened = rustix::fs::open(
            dir.path(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        let at = read_file_at(
            &opened,
            std::ffi::OsStr::new("big"),
            &path,
            200,
            Symlinks::Refuse,
        )
        .unwrap();
        assert_eq!(at.bytes.len(), 101);
    }
}
