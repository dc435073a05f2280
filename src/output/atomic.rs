//! The atomic, no-follow publish of one file in an output directory.
//!
//! Invariants:
//! - A reader never sees a partial file: contents go to a fresh temp file in the same directory,
//!   which is fsynced and then renamed over the target in one `renameat(2)`, so a reader that opens
//!   the path gets the whole old file or the whole new one. The one exception is
//!   [`OutputDir::overwrite`], for the signed state files only (never for an output).
//! - A symlink is never followed when writing: every operation is relative to a directory fd that
//!   was opened with `O_NOFOLLOW`, temp files are created with `O_CREAT|O_EXCL|O_NOFOLLOW`, and the
//!   rename replaces a symlink at the target instead of writing through it.
//! - Bytes written never reach a log line or an error: errors carry paths and OS error codes only,
//!   and the old file read for comparison is zeroized when dropped.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Uid};
use rustix::io::Errno;
use zeroize::Zeroizing;

use super::OutputSpec;

#[cfg(test)]
mod tests;

/// How many random temp names [`OutputDir::publish`] tries before giving up, so that another user
/// who squats on names in a shared directory cannot keep us looping forever.
const TEMP_TRIES: usize = 16;

/// Hex digits in the random part of a temp name (64 random bits).
const TEMP_RANDOM_DIGITS: usize = 16;

/// Every temp name ends with this, after the random part.
const TEMP_END: &[u8] = b".tmp";

/// The longest file name Linux file systems accept (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// Bytes a temp name adds around the target's name: the leading dot, the dot before the random
/// part, the random part and `.tmp`.
const TEMP_OVERHEAD: usize = 2 + TEMP_RANDOM_DIGITS + TEMP_END.len();

/// The stem of the file created and removed by [`OutputDir::write_check`]. Its temp name matches
/// our pattern, so a crash between create and remove leaves a file that
/// [`OutputDir::remove_stale_temps`] cleans up.
const WRITE_CHECK_STEM: &str = "tokenkeeper-write-check";

/// Permission bits an output file may have. Set-id and sticky bits make no sense on a token file.
const PERMISSION_BITS: u32 = 0o777;

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// The file was replaced with the new contents.
    Written,
    /// The file already held exactly these bytes with these permissions and ids; nothing was
    /// touched, so directory watchers see no event.
    Unchanged,
}

/// Why an output operation failed. Every message names the path involved; none carries file
/// contents (the OS errors inside are codes, never data).
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot open output directory {path}: {source}")]
    OpenDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "output directory {path} is a symlink, which is refused so that writes cannot be redirected; give the real directory"
    )]
    DirIsSymlink { path: PathBuf },
    #[error("output directory {path} is not trusted: {reason}")]
    UntrustedDir { path: PathBuf, reason: String },
    #[error("invalid output file name {path}: {reason}")]
    InvalidName { path: PathBuf, reason: &'static str },
    #[error("invalid mode {mode:#o} for {path}: only permission bits (0777) are allowed")]
    InvalidMode { path: PathBuf, mode: u32 },
    #[error("invalid owner or group id {id} for {path}")]
    InvalidId { path: PathBuf, id: u32 },
    #[error("cannot create a temp file for {path}: {tries} random names were all taken")]
    TempNamesTaken { path: PathBuf, tries: usize },
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done, as a verb phrase that reads before the path.
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error(action: &'static str, path: &Path, source: impl Into<io::Error>) -> OutputError {
    OutputError::Io {
        action,
        path: path.to_path_buf(),
        source: source.into(),
    }
}

/// A directory opened once, in which token files are published relative to its fd.
///
/// Holding the fd pins the directory: if the path is later renamed or replaced by a symlink,
/// writes still land in the directory that was opened. The directory should be
/// written by one daemon only, since [`OutputDir::remove_stale_temps`] removes every temp file of
/// ours that it finds.
#[derive(Debug)]
pub struct OutputDir {
    fd: OwnedFd,
    /// The path the directory was opened by, for messages only; never used to reach files.
    path: PathBuf,
    /// Whether a publish is made durable (file and directory fsync'd). Only the state directory
    /// turns it off: see [`OutputDir::unsynced`].
    sync: bool,
}

impl OutputDir {
    /// Opens `path` as an output directory.
    ///
    /// Intermediate symlinks in the path are followed (e.g. `/var/run`), but the directory itself
    /// must not be one.
    ///
    /// # Errors
    /// [`OutputError::DirIsSymlink`] when `path` is a symlink; [`OutputError::OpenDir`] when it is
    /// missing, not a directory or not accessible.
    pub fn open(path: &Path) -> Result<OutputDir, OutputError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::open(path, flags, Mode::empty()) {
            Ok(fd) => Ok(OutputDir {
                fd,
                path: path.to_path_buf(),
                sync: true,
            }),
            // A symlink fails with ENOTDIR (O_DIRECTORY is checked first) or ELOOP; look again
            // to tell the operator that the link itself is the problem.
            Err(Errno::NOTDIR | Errno::LOOP)
                if path.symlink_metadata().is_ok_and(|meta| meta.is_symlink()) =>
            {
                Err(OutputError::DirIsSymlink {
                    path: path.to_path_buf(),
                })
            }
            Err(errno) => Err(OutputError::OpenDir {
                path: path.to_path_buf(),
                source: errno.into(),
            }),
        }
    }

    /// Wraps a directory already opened (and checked) by the caller; `path` is for messages.
    pub fn from_fd(fd: OwnedFd, path: PathBuf) -> OutputDir {
        OutputDir {
            fd,
            path,
            sync: true,
        }
    }

    /// This directory with publishes that are atomic but not durable: no fsync of the file or
    /// the directory, so a power loss may leave the old file, or an empty or missing one. For
    /// files whose loss costs nothing but work, never for outputs: the state files, which a
    /// start checks against the outputs before trusting (ARCHITECTURE.md, "State files are a cache").
    pub fn unsynced(self) -> OutputDir {
        OutputDir {
            sync: false,
            ..self
        }
    }

    /// The path the directory was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory's descriptor, for reads relative to it.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }

    /// Refuses a directory that others could plant files in or swap files out of: one writable
    /// by its group or by everyone without the sticky bit, or one owned by neither this process's
    /// user nor root.
    /// A shared Kubernetes `emptyDir` (mode 0777) fails this check; the caller decides whether
    /// such a directory is allowed (and should then publish into its own subdirectory).
    ///
    /// # Errors
    /// [`OutputError::UntrustedDir`] with the reason, or [`OutputError::Io`] if `fstat` fails.
    pub fn check_trusted(&self) -> Result<(), OutputError> {
        let stat = rustix::fs::fstat(&self.fd)
            .map_err(|errno| io_error("inspect output directory", &self.path, errno))?;
        let mode = stat.st_mode;
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            let who = if mode & 0o002 != 0 {
                "everyone"
            } else {
                "the directory's group"
            };
            return Err(OutputError::UntrustedDir {
                path: self.path.clone(),
                reason: format!(
                    "mode {:#o} lets {who} replace files (writable without the sticky bit)",
                    mode & 0o7777
                ),
            });
        }
        let ours = rustix::process::geteuid().as_raw();
        if stat.st_uid != ours && stat.st_uid != 0 {
            return Err(OutputError::UntrustedDir {
                path: self.path.clone(),
                reason: format!(
                    "it is owned by uid {}, neither this process's uid {ours} nor root",
                    stat.st_uid
                ),
            });
        }
        Ok(())
    }

    /// Atomically replaces `file_name` (a single path component) in this directory with
    /// `contents`, with exactly the permission bits `mode` (independent of the umask) and, when
    /// given, the owner and group.
    ///
    /// Returns [`Publish::Unchanged`] without writing anything (the directory is synced) when the
    /// target is already a regular file with these bytes, these permission bits and (where
    /// given) these ids. A
    /// symlink, FIFO or other non-regular file at the target is replaced, never written through.
    ///
    /// # Errors
    /// An invalid name, mode or id; all temp names taken; or any failing system call. On error
    /// the old target is untouched and the temp file is removed, except when only the final
    /// directory fsync fails ([`OutputError::Io`] "sync the directory of"): the new file is then
    /// already in place but may not survive a crash.
    pub fn publish(
        &self,
        file_name: &OsStr,
        contents: &[u8],
        mode: u32,
        owner: Option<u32>,
        group: Option<u32>,
    ) -> Result<Publish, OutputError> {
        self.publish_with(
            file_name,
            contents,
            mode,
            owner,
            group,
            &mut rand::random::<u64>,
        )
    }

    /// [`OutputDir::publish`] with the source of temp-name randomness as an argument, so tests
    /// can plant files at the names it will try.
    fn publish_with(
        &self,
        file_name: &OsStr,
        contents: &[u8],
        mode: u32,
        owner: Option<u32>,
        group: Option<u32>,
        next_random: &mut dyn FnMut() -> u64,
    ) -> Result<Publish, OutputError> {
        let target = self.target_path(file_name)?;
        if mode & !PERMISSION_BITS != 0 {
            return Err(OutputError::InvalidMode { path: target, mode });
        }
        // u32::MAX is the "leave unchanged" value of chown(2), not an id.
        for id in [owner, group].into_iter().flatten() {
            if id == u32::MAX {
                return Err(OutputError::InvalidId { path: target, id });
            }
        }

        if self.holds_already(file_name, contents, mode, owner, group) {
            // The file may be one an earlier publish renamed into place before its directory
            // sync failed: sync now, so "unchanged" also means durable (cheap when clean).
            if self.sync {
                rustix::fs::fsync(&self.fd)
                    .map_err(|errno| io_error("sync the directory of", &target, errno))?;
            }
            return Ok(Publish::Unchanged);
        }

        let (temp_name, file) = self.create_temp(file_name, &target, next_random)?;
        let filled = fill_temp(file, contents, mode, owner, group, self.sync, &target);
        let renamed = filled.and_then(|()| {
            rustix::fs::renameat(&self.fd, &temp_name, &self.fd, file_name)
                .map_err(|errno| io_error("rename a temp file over", &target, errno))
        });
        if let Err(error) = renamed {
            // The first error is the one worth reporting; a temp file that cannot be removed
            // either is cleaned up by remove_stale_temps at the next start.
            let _ = rustix::fs::unlinkat(&self.fd, &temp_name, AtFlags::empty());
            return Err(error);
        }
        // Without this the rename itself may be lost in a crash, leaving the old token.
        if self.sync {
            rustix::fs::fsync(&self.fd)
                .map_err(|errno| io_error("sync the directory of", &target, errno))?;
        }
        Ok(Publish::Written)
    }

    /// Rewrites `file_name` in place when it is this process's own regular file with mode
    /// `mode` and one link: `pwrite` from the start, then truncate to the new length. Much
    /// cheaper than a publish (no new inode, no rename, no directory change), but not atomic: a
    /// reader or a crash may see a mix of old and new bytes. Only for files that carry their
    /// own integrity check and whose loss costs nothing but work (the signed state files).
    /// Anything else there (nothing, a symlink, a FIFO, another owner's file, a hard link) is
    /// replaced by a [`OutputDir::publish`] instead.
    ///
    /// # Errors
    /// As [`OutputDir::publish`]; or writing or truncating the file failed (it is then torn, and
    /// its check fails when it is read).
    pub fn overwrite(
        &self,
        file_name: &OsStr,
        contents: &[u8],
        mode: u32,
    ) -> Result<Publish, OutputError> {
        let target = self.target_path(file_name)?;
        let flags = OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let own_file = rustix::fs::openat(&self.fd, file_name, flags, Mode::empty())
            .ok()
            .filter(|fd| {
                rustix::fs::fstat(fd).is_ok_and(|stat| {
                    FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile
                        && stat.st_mode & 0o7777 == mode
                        && stat.st_uid == rustix::process::geteuid().as_raw()
                        && stat.st_nlink == 1
                })
            });
        let Some(fd) = own_file else {
            return self.publish(file_name, contents, mode, None, None);
        };
        let mut written = 0;
        while written < contents.len() {
            match rustix::io::pwrite(&fd, &contents[written..], written as u64) {
                Ok(0) => return Err(io_error("write", &target, Errno::NOSPC)),
                Ok(count) => written += count,
                Err(Errno::INTR) => {}
                Err(errno) => return Err(io_error("write", &target, errno)),
            }
        }
        rustix::fs::ftruncate(&fd, contents.len() as u64)
            .map_err(|errno| io_error("truncate", &target, errno))?;
        if self.sync {
            rustix::fs::fsync(&fd).map_err(|errno| io_error("sync", &target, errno))?;
        }
        Ok(Publish::Written)
    }

    /// Whether the target already is a regular file with exactly these bytes and attributes.
    /// Any doubt (missing, a symlink, unreadable) answers false, and the publish then writes.
    fn holds_already(
        &self,
        file_name: &OsStr,
        contents: &[u8],
        mode: u32,
        owner: Option<u32>,
        group: Option<u32>,
    ) -> bool {
        // O_NOFOLLOW makes a symlink fail with ELOOP instead of comparing its target; O_NONBLOCK
        // keeps a FIFO planted at the target from blocking the open.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let Ok(fd) = rustix::fs::openat(&self.fd, file_name, flags, Mode::empty()) else {
            return false;
        };
        let Ok(stat) = rustix::fs::fstat(&fd) else {
            return false;
        };
        let same_attributes = FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile
            && stat.st_mode & 0o7777 == mode
            && owner.is_none_or(|uid| stat.st_uid == uid)
            && group.is_none_or(|gid| stat.st_gid == gid)
            && usize::try_from(stat.st_size).is_ok_and(|size| size == contents.len());
        same_attributes && same_bytes(File::from(fd), contents)
    }

    /// What `file_name` holds, compared with `contents`: `None` when nothing is there, else
    /// whether it is a regular file with exactly these bytes. Opened without following a
    /// symlink and without blocking on a FIFO.
    ///
    /// # Errors
    /// Looking at the file failed for another reason than its absence.
    pub fn holds(&self, file_name: &OsStr, contents: &[u8]) -> Result<Option<bool>, OutputError> {
        let target = self.target_path(file_name)?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = match rustix::fs::openat(&self.fd, file_name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            // A symlink (ELOOP) or another non-regular thing is not these bytes.
            Err(Errno::LOOP | Errno::NXIO) => return Ok(Some(false)),
            Err(errno) => return Err(io_error("read", &target, errno)),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|errno| io_error("inspect", &target, errno))?;
        let regular_of_size = FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile
            && usize::try_from(stat.st_size).is_ok_and(|size| size == contents.len());
        Ok(Some(
            regular_of_size && same_bytes(File::from(fd), contents),
        ))
    }

    /// Creates a fresh temp file for `file_name` with mode 0600 (before the explicit fchmod),
    /// trying up to [`TEMP_TRIES`] random names. `O_EXCL` never opens an existing file or
    /// follows a symlink, so a name planted by someone else is skipped, never written through.
    fn create_temp(
        &self,
        file_name: &OsStr,
        target: &Path,
        next_random: &mut dyn FnMut() -> u64,
    ) -> Result<(OsString, File), OutputError> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        for _ in 0..TEMP_TRIES {
            let temp_name = temp_name(file_name, next_random());
            match rustix::fs::openat(&self.fd, &temp_name, flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => return Ok((temp_name, File::from(fd))),
                Err(Errno::EXIST) => continue,
                Err(errno) => return Err(io_error("create a temp file for", target, errno)),
            }
        }
        Err(OutputError::TempNamesTaken {
            path: target.to_path_buf(),
            tries: TEMP_TRIES,
        })
    }

    /// Removes `file_name` from this directory (a symlink there is removed, not its target).
    ///
    /// Returns whether it existed.
    ///
    /// # Errors
    /// An invalid name, or a failing `unlinkat` other than "not found" (e.g. a directory there).
    pub fn remove(&self, file_name: &OsStr) -> Result<bool, OutputError> {
        let target = self.target_path(file_name)?;
        match rustix::fs::unlinkat(&self.fd, file_name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(errno) => Err(io_error("remove", &target, errno)),
        }
    }

    /// Removes temp files left behind by a crash: regular files whose name matches our temp
    /// pattern (`.<name>.<16 hex>.tmp`) and whose owner is this process's uid. Other files,
    /// other owners' files and anything that is not a regular file are left alone.
    ///
    /// Returns how many files were removed. Meant for start-up, before any publish.
    ///
    /// # Errors
    /// Reading the directory, or inspecting or removing a matching entry, failed.
    pub fn remove_stale_temps(&self) -> Result<usize, OutputError> {
        let mut entries = rustix::fs::Dir::read_from(&self.fd)
            .map_err(|errno| io_error("list output directory", &self.path, errno))?;
        let ours = rustix::process::geteuid().as_raw();
        let mut removed = 0;
        while let Some(entry) = entries.read() {
            let entry =
                entry.map_err(|errno| io_error("list output directory", &self.path, errno))?;
            let name = entry.file_name();
            if !is_temp_name(name.to_bytes()) {
                continue;
            }
            let path = self.path.join(OsStr::from_bytes(name.to_bytes()));
            let stat = match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                // Gone between listing and looking: nothing left to clean.
                Err(Errno::NOENT) => continue,
                Err(errno) => return Err(io_error("inspect stale temp file", &path, errno)),
            };
            if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile || stat.st_uid != ours
            {
                continue;
            }
            match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
                Ok(()) => removed += 1,
                Err(Errno::NOENT) => {}
                Err(errno) => return Err(io_error("remove stale temp file", &path, errno)),
            }
        }
        Ok(removed)
    }

    /// Proves the directory is writable, as Vault's file sink does at start: creates a temp file,
    /// writes a few bytes to it and removes it. Nothing is left behind on success.
    ///
    /// # Errors
    /// Creating, writing or removing the file failed (read-only file system, no permission,
    /// no space); the error names the directory.
    pub fn write_check(&self) -> Result<(), OutputError> {
        let (temp_name, mut file) = self.create_temp(
            OsStr::new(WRITE_CHECK_STEM),
            &self.path,
            &mut rand::random::<u64>,
        )?;
        let written = file
            .write_all(b"tokenkeeper write check\n")
            .map_err(|error| io_error("write a test file in", &self.path, error));
        drop(file);
        let removed = rustix::fs::unlinkat(&self.fd, &temp_name, AtFlags::empty())
            .map_err(|errno| io_error("remove the test file from", &self.path, errno));
        written.and(removed)
    }

    /// The full path of `file_name` for messages, after checking that it is one plain path
    /// component that cannot be mistaken for one of our temp files.
    fn target_path(&self, file_name: &OsStr) -> Result<PathBuf, OutputError> {
        let path = self.path.join(file_name);
        let bytes = file_name.as_bytes();
        let reason = if bytes.is_empty() {
            "the name is empty"
        } else if bytes == b"." || bytes == b".." {
            "`.` and `..` are not file names"
        } else if bytes.contains(&b'/') {
            "the name must be a single path component"
        } else if bytes.contains(&0) {
            "the name contains a NUL byte"
        } else if bytes.len() > NAME_MAX {
            "the name is longer than 255 bytes"
        } else if is_temp_name(bytes) {
            "the name looks like one of tokenkeeper's temp files, which are removed at start"
        } else {
            return Ok(path);
        };
        Err(OutputError::InvalidName { path, reason })
    }
}

/// Fills a fresh temp file: ids and permission bits first, so the data is never readable by
/// anyone the final file would refuse, then the data, then fsync so that the rename never
/// publishes a file whose data is still only in memory. The file is closed on return.
fn fill_temp(
    mut file: File,
    contents: &[u8],
    mode: u32,
    owner: Option<u32>,
    group: Option<u32>,
    sync: bool,
    target: &Path,
) -> Result<(), OutputError> {
    if owner.is_some() || group.is_some() {
        rustix::fs::fchown(&file, owner.map(Uid::from_raw), group.map(Gid::from_raw))
            .map_err(|errno| io_error("set the owner of a temp file for", target, errno))?;
    }
    // After fchown, which clears set-id bits, and regardless of the umask applied at creation.
    rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
        .map_err(|errno| io_error("set the mode of a temp file for", target, errno))?;
    file.write_all(contents)
        .map_err(|error| io_error("write a temp file for", target, error))?;
    if sync {
        file.sync_all()
            .map_err(|error| io_error("sync a temp file for", target, error))?;
    }
    // Dropping closes the fd; a close error after a successful fsync does not lose data.
    Ok(())
}

/// Whether `file` (a regular file, already checked to be of the right size) holds exactly
/// `contents`. Reads one byte more than expected to notice a file that grew since its `fstat`.
/// The buffer is filled in place (never reallocated) and zeroized on drop, since it holds a token.
fn same_bytes(mut file: File, contents: &[u8]) -> bool {
    let mut old = Zeroizing::new(vec![0u8; contents.len() + 1]);
    let mut filled = 0;
    while filled < old.len() {
        match file.read(&mut old[filled..]) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    filled == contents.len() && old[..filled] == *contents
}

/// `.<file_name>.<16 hex>.tmp`, with the name cut short if needed so that the temp name fits in
/// `NAME_MAX`.
fn temp_name(file_name: &OsStr, random: u64) -> OsString {
    let stem = file_name.as_bytes();
    let stem = &stem[..stem.len().min(NAME_MAX - TEMP_OVERHEAD)];
    let mut name = Vec::with_capacity(stem.len() + TEMP_OVERHEAD);
    name.push(b'.');
    name.extend_from_slice(stem);
    name.extend_from_slice(format!(".{random:016x}").as_bytes());
    name.extend_from_slice(TEMP_END);
    OsString::from_vec(name)
}

/// Whether `name` has the shape of our temp names: a dot, a non-empty stem, a dot, 16 lowercase
/// hex digits and `.tmp`.
fn is_temp_name(name: &[u8]) -> bool {
    let Some(rest) = name.strip_prefix(b".") else {
        return false;
    };
    let Some(rest) = rest.strip_suffix(TEMP_END) else {
        return false;
    };
    let Some(split) = rest.len().checked_sub(TEMP_RANDOM_DIGITS + 1) else {
        return false;
    };
    let (stem_and_dot, random) = rest.split_at(split + 1);
    split > 0
        && stem_and_dot.ends_with(b".")
        && random
            .iter()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

/// One-shot publish: opens the parent directory of `spec.path` and publishes `contents` (the
/// output of [`super::render`]) there with the spec's mode and ids. `once` and the daemon both write
/// through it: the directory is opened afresh, with `O_NOFOLLOW`, for every write, so a directory
/// swapped for a symlink while the daemon runs is refused rather than followed.
///
/// # Errors
/// A path without a parent or file name, and everything [`OutputDir::open`] and
/// [`OutputDir::publish`] return.
pub fn publish(spec: &OutputSpec, contents: &[u8]) -> Result<Publish, OutputError> {
    let (Some(parent), Some(file_name)) = (spec.path.parent(), spec.path.file_name()) else {
        return Err(OutputError::InvalidName {
            path: spec.path.clone(),
            reason: "the path has no directory and file name",
        });
    };
    OutputDir::open(parent)?.publish(file_name, contents, spec.mode, spec.owner, spec.group)
}
