//! Token-file output: the output formats and the atomic publish of a file in an output directory.
//! This is the only module that writes token files.
//!
//! Invariants:
//! - A reader never sees a partial file: contents go to a fresh temp file in the same directory,
//!   which is fsynced and then renamed over the target in one `renameat(2)`, so a reader that opens
//!   the path gets the whole old file or the whole new one.
//! - A symlink is never followed when writing: every operation is relative to a directory fd that
//!   was opened with `O_NOFOLLOW`, temp files are created with `O_CREAT|O_EXCL|O_NOFOLLOW`, and the
//!   rename replaces a symlink at the target instead of writing through it.
//! - Token bytes never reach a log line or an error: errors carry paths and OS error codes only,
//!   and buffers that held token bytes (rendered output, the old file read for comparison) are
//!   zeroized when dropped.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Uid};
use rustix::io::Errno;
use zeroize::Zeroizing;

use crate::token::Token;

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

/// What an output file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The token bytes alone, without a trailing newline.
    Raw,
    /// One `Authorization:` header line, usable as `curl -H @file`.
    Header,
    /// One JSON object with the account, token, scheme and expiry, then a newline.
    Json,
    /// One `NAME=token` line.
    Env,
}

/// One configured output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// Absolute path of the file, already validated by the config loader.
    pub path: PathBuf,
    /// What the file holds.
    pub format: Format,
    /// Permission bits, e.g. `0o600`; set explicitly so that they do not depend on the umask.
    pub mode: u32,
    /// The uid to give the file, if not the daemon's own.
    pub owner: Option<u32>,
    /// The gid to give the file, e.g. the readers' group.
    pub group: Option<u32>,
    /// The variable name written by [`Format::Env`]; unused by the other formats.
    pub env_name: String,
}

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
pub enum SinkError {
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

fn io_error(action: &'static str, path: &Path, source: impl Into<io::Error>) -> SinkError {
    SinkError::Io {
        action,
        path: path.to_path_buf(),
        source: source.into(),
    }
}

/// Whether a token can go unquoted into an `env` file that a shell may `source`: only characters
/// no shell interprets. Tokens are already visible ASCII; this also refuses `$`, `` ` ``, `;`,
/// quotes, `&`, `|`, `<`, `>`, `(`, `)`, `\\`, `*`, `?`, `!`, `#`, `[`, `]`, `{`, `}` and `'`.
pub fn env_safe(value: &str) -> bool {
    value
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || b"-._~+/=:@%,^".contains(&byte))
}

/// Renders the contents of an output file.
///
/// `scheme` is `Some("Bearer")` normally and `None` for a bare token (ONLYOFFICE expects
/// `Authorization: <token>`); it only affects the header and JSON formats. The scheme and
/// `spec.env_name` must already be validated (no whitespace or control characters): they are
/// written as they are.
///
/// Every buffer is allocated once with room for the whole output, so no reallocation leaves an
/// unzeroized copy of the token behind.
pub fn render(
    spec: &OutputSpec,
    account: &str,
    token: &Token,
    scheme: Option<&str>,
) -> Zeroizing<Vec<u8>> {
    let value = token.expose().as_bytes();
    match (spec.format, scheme) {
        (Format::Raw, _) => concat(&[value]),
        (Format::Header, Some(scheme)) => {
            concat(&[b"Authorization: ", scheme.as_bytes(), b" ", value, b"\n"])
        }
        (Format::Header, None) => concat(&[b"Authorization: ", value, b"\n"]),
        (Format::Json, _) => render_json(account, token, scheme),
        (Format::Env, _) => concat(&[spec.env_name.as_bytes(), b"=", value, b"\n"]),
    }
}

fn concat(parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(
        parts.iter().map(|part| part.len()).sum(),
    ));
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// The JSON output document; borrows the token so that no intermediate `String` holds it.
#[derive(serde::Serialize)]
struct JsonDocument<'a> {
    account: &'a str,
    token: &'a str,
    #[serde(rename = "type")]
    scheme: Option<&'a str>,
    expires_at: &'a str,
}

fn render_json(account: &str, token: &Token, scheme: Option<&str>) -> Zeroizing<Vec<u8>> {
    // Whole seconds, truncated: an expiry shown early errs on the safe side, and readers parse
    // `2026-11-22T16:00:00Z` more easily than nanoseconds.
    let expires_at = format!("{:.0}", token.expires_at);
    let document = JsonDocument {
        account,
        token: token.expose(),
        scheme,
        expires_at: &expires_at,
    };
    let mut out = Zeroizing::new(Vec::with_capacity(json_capacity(
        account,
        token.expose(),
        scheme,
        &expires_at,
    )));
    // Cannot fail: writing to a Vec never returns an I/O error, and a struct of strings has no
    // map keys that JSON could refuse.
    serde_json::to_writer(&mut *out, &document).expect("serializing strings into a Vec");
    out.push(b'\n');
    out
}

/// An upper bound on the rendered JSON length. serde_json escapes a byte into at most six bytes
/// (`\u001f`), and the keys, quotes, `null` and the newline fit in the fixed part.
fn json_capacity(account: &str, token: &str, scheme: Option<&str>, expires_at: &str) -> usize {
    const FIXED: usize = 80;
    let escaped = account.len() + token.len() + scheme.map_or(0, str::len) + expires_at.len();
    FIXED + 6 * escaped
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
}

impl OutputDir {
    /// Opens `path` as an output directory.
    ///
    /// Intermediate symlinks in the path are followed (e.g. `/var/run`), but the directory itself
    /// must not be one.
    ///
    /// # Errors
    /// [`SinkError::DirIsSymlink`] when `path` is a symlink; [`SinkError::OpenDir`] when it is
    /// missing, not a directory or not accessible.
    pub fn open(path: &Path) -> Result<OutputDir, SinkError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::open(path, flags, Mode::empty()) {
            Ok(fd) => Ok(OutputDir {
                fd,
                path: path.to_path_buf(),
            }),
            // A symlink fails with ENOTDIR (O_DIRECTORY is checked first) or ELOOP; look again
            // to tell the operator that the link itself is the problem.
            Err(Errno::NOTDIR | Errno::LOOP)
                if path.symlink_metadata().is_ok_and(|meta| meta.is_symlink()) =>
            {
                Err(SinkError::DirIsSymlink {
                    path: path.to_path_buf(),
                })
            }
            Err(errno) => Err(SinkError::OpenDir {
                path: path.to_path_buf(),
                source: errno.into(),
            }),
        }
    }

    /// Wraps a directory already opened (and checked) by the caller; `path` is for messages.
    pub fn from_fd(fd: OwnedFd, path: PathBuf) -> OutputDir {
        OutputDir { fd, path }
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
    /// [`SinkError::UntrustedDir`] with the reason, or [`SinkError::Io`] if `fstat` fails.
    pub fn check_trusted(&self) -> Result<(), SinkError> {
        let stat = rustix::fs::fstat(&self.fd)
            .map_err(|errno| io_error("inspect output directory", &self.path, errno))?;
        let mode = stat.st_mode;
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            let who = if mode & 0o002 != 0 {
                "everyone"
            } else {
                "the directory's group"
            };
            return Err(SinkError::UntrustedDir {
                path: self.path.clone(),
                reason: format!(
                    "mode {:#o} lets {who} replace files (writable without the sticky bit)",
                    mode & 0o7777
                ),
            });
        }
        let ours = rustix::process::geteuid().as_raw();
        if stat.st_uid != ours && stat.st_uid != 0 {
            return Err(SinkError::UntrustedDir {
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
    /// Returns [`Publish::Unchanged`] without touching anything when the target is already a
    /// regular file with these bytes, these permission bits and (where given) these ids. A
    /// symlink, FIFO or other non-regular file at the target is replaced, never written through.
    ///
    /// # Errors
    /// An invalid name, mode or id; all temp names taken; or any failing system call. On error
    /// the old target is untouched and the temp file is removed, except when only the final
    /// directory fsync fails ([`SinkError::Io`] "sync the directory of"): the new file is then
    /// already in place but may not survive a crash.
    pub fn publish(
        &self,
        file_name: &OsStr,
        contents: &[u8],
        mode: u32,
        owner: Option<u32>,
        group: Option<u32>,
    ) -> Result<Publish, SinkError> {
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
    ) -> Result<Publish, SinkError> {
        let target = self.target_path(file_name)?;
        if mode & !PERMISSION_BITS != 0 {
            return Err(SinkError::InvalidMode { path: target, mode });
        }
        // u32::MAX is the "leave unchanged" value of chown(2), not an id.
        for id in [owner, group].into_iter().flatten() {
            if id == u32::MAX {
                return Err(SinkError::InvalidId { path: target, id });
            }
        }

        if self.holds_already(file_name, contents, mode, owner, group) {
            return Ok(Publish::Unchanged);
        }

        let (temp_name, file) = self.create_temp(file_name, &target, next_random)?;
        let filled = fill_temp(file, contents, mode, owner, group, &target);
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
        rustix::fs::fsync(&self.fd)
            .map_err(|errno| io_error("sync the directory of", &target, errno))?;
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
        if !same_attributes {
            return false;
        }
        // Read one byte more than expected to notice a file that grew since the fstat. The
        // buffer is filled in place (never reallocated) and zeroized on drop, since it holds
        // the old token.
        let mut old = Zeroizing::new(vec![0u8; contents.len() + 1]);
        let mut file = File::from(fd);
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

    /// Creates a fresh temp file for `file_name` with mode 0600 (before the explicit fchmod),
    /// trying up to [`TEMP_TRIES`] random names. `O_EXCL` never opens an existing file or
    /// follows a symlink, so a name planted by someone else is skipped, never written through.
    fn create_temp(
        &self,
        file_name: &OsStr,
        target: &Path,
        next_random: &mut dyn FnMut() -> u64,
    ) -> Result<(OsString, File), SinkError> {
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
        Err(SinkError::TempNamesTaken {
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
    pub fn remove(&self, file_name: &OsStr) -> Result<bool, SinkError> {
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
    pub fn remove_stale_temps(&self) -> Result<usize, SinkError> {
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
    pub fn write_check(&self) -> Result<(), SinkError> {
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
    fn target_path(&self, file_name: &OsStr) -> Result<PathBuf, SinkError> {
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
        Err(SinkError::InvalidName { path, reason })
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
    target: &Path,
) -> Result<(), SinkError> {
    if owner.is_some() || group.is_some() {
        rustix::fs::fchown(&file, owner.map(Uid::from_raw), group.map(Gid::from_raw))
            .map_err(|errno| io_error("set the owner of a temp file for", target, errno))?;
    }
    // After fchown, which clears set-id bits, and regardless of the umask applied at creation.
    rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
        .map_err(|errno| io_error("set the mode of a temp file for", target, errno))?;
    file.write_all(contents)
        .map_err(|error| io_error("write a temp file for", target, error))?;
    file.sync_all()
        .map_err(|error| io_error("sync a temp file for", target, error))?;
    // Dropping closes the fd; a close error after a successful fsync does not lose data.
    Ok(())
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
/// output of [`render`]) there with the spec's mode and ids. `once` and the daemon both write
/// through it: the directory is opened afresh, with `O_NOFOLLOW`, for every write, so a directory
/// swapped for a symlink while the daemon runs is refused rather than followed.
///
/// # Errors
/// A path without a parent or file name, and everything [`OutputDir::open`] and
/// [`OutputDir::publish`] return.
pub fn publish(spec: &OutputSpec, contents: &[u8]) -> Result<Publish, SinkError> {
    let (Some(parent), Some(file_name)) = (spec.path.parent(), spec.path.file_name()) else {
        return Err(SinkError::InvalidName {
            path: spec.path.clone(),
            reason: "the path has no directory and file name",
        });
    };
    OutputDir::open(parent)?.publish(file_name, contents, spec.mode, spec.owner, spec.group)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, MutexGuard};

    use jiff::Timestamp;

    use crate::secret::Secret;

    const CANARY: &str = "canary-token-7c41e9";

    /// Serializes every test that creates files: the umask test changes a process-wide setting.
    static FILES: Mutex<()> = Mutex::new(());

    fn lock() -> MutexGuard<'static, ()> {
        FILES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn token(value: &str) -> Token {
        let obtained = Timestamp::from_second(1_795_363_200 - 3_600).unwrap();
        // 2026-11-22T16:00:00.75Z: the fraction must not reach the JSON.
        let expires = Timestamp::new(1_795_363_200, 750_000_000).unwrap();
        Token::new(Secret::new(value.to_string()), obtained, expires).unwrap()
    }

    fn spec(format: Format) -> OutputSpec {
        OutputSpec {
            path: PathBuf::from("/run/tokenkeeper/demo.token"),
            format,
            mode: 0o600,
            owner: None,
            group: None,
            env_name: "DEMO_TOKEN".to_string(),
        }
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
    fn env_safety() {
        for safe in [
            "abc.DEF-1~",
            "eyJ0eXAi.eyJpYXQi.gLmL4am5_x-y",
            "a+b/c==",
            "x:y@z%2C,^",
        ] {
            assert!(env_safe(safe), "{safe}");
        }
        for unsafe_value in [
            "a$b", "a`b`", "a;b", "a'b", "a\"b", "a&b", "a|b", "a(b)", "a\\b", "a*", "a!b", "a#b",
            "{a}",
        ] {
            assert!(!env_safe(unsafe_value), "{unsafe_value}");
        }
    }

    #[test]
    fn render_table() {
        let token = token("abc.DEF-1~");
        let cases: &[(Format, Option<&str>, &str)] = &[
            (Format::Raw, Some("Bearer"), "abc.DEF-1~"),
            (Format::Raw, None, "abc.DEF-1~"),
            (
                Format::Header,
                Some("Bearer"),
                "Authorization: Bearer abc.DEF-1~\n",
            ),
            (Format::Header, None, "Authorization: abc.DEF-1~\n"),
            (Format::Env, Some("Bearer"), "DEMO_TOKEN=abc.DEF-1~\n"),
            (Format::Env, None, "DEMO_TOKEN=abc.DEF-1~\n"),
        ];
        for (format, scheme, expected) in cases {
            let out = render(&spec(*format), "demo", &token, *scheme);
            assert_eq!(
                String::from_utf8(out.to_vec()).unwrap(),
                *expected,
                "{format:?} {scheme:?}"
            );
        }

        for (scheme, kind) in [
            (Some("Bearer"), serde_json::json!("Bearer")),
            (None, serde_json::Value::Null),
        ] {
            let out = render(&spec(Format::Json), "demo", &token, scheme);
            let text = std::str::from_utf8(&out).unwrap();
            assert!(text.ends_with("}\n"), "{text}");
            assert_eq!(text.matches('\n').count(), 1, "{text}");
            let parsed: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(
                parsed,
                serde_json::json!({
                    "account": "demo",
                    "token": "abc.DEF-1~",
                    "type": kind,
                    "expires_at": "2026-11-22T16:00:00Z",
                })
            );
        }
    }

    #[test]
    fn json_escapes_and_fits_its_single_allocation() {
        let value = "\"\\\"\\".repeat(1000);
        let token = token(&value);
        let account = "a\"c\u{1}\u{1f}é\\\n".repeat(50);
        let out = render(&spec(Format::Json), &account, &token, Some("Bearer"));
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed["token"], serde_json::json!(value));
        assert_eq!(parsed["account"], serde_json::json!(account));
        // The buffer was allocated with this bound; staying within it means it never grew, so
        // no copy of the token was left in a freed allocation.
        let bound = json_capacity(&account, &value, Some("Bearer"), "2026-11-22T16:00:00Z");
        assert!(out.len() <= bound, "{} > {bound}", out.len());
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
            SinkError::TempNamesTaken {
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
                SinkError::Io {
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
            Err(SinkError::InvalidName { .. })
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
        assert!(matches!(error, SinkError::DirIsSymlink { .. }), "{error:?}");
        assert!(error.to_string().contains(&link.display().to_string()));
        assert!(matches!(
            OutputDir::open(&dangling),
            Err(SinkError::DirIsSymlink { .. })
        ));
        for path in [file, temp.path().join("missing")] {
            let error = OutputDir::open(&path).unwrap_err();
            assert!(matches!(error, SinkError::OpenDir { .. }), "{error:?}");
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
                matches!(error, SinkError::InvalidName { .. }),
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
            assert!(matches!(error, SinkError::InvalidMode { .. }), "{mode:o}");
            assert!(error.to_string().contains("t"));
        }
        assert!(matches!(
            dir.publish(name("t"), b"x", 0o600, Some(u32::MAX), None),
            Err(SinkError::InvalidId { .. })
        ));
        assert!(matches!(
            dir.publish(name("t"), b"x", 0o600, None, Some(u32::MAX)),
            Err(SinkError::InvalidId { .. })
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
            Err(SinkError::InvalidName { .. })
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
        assert!(matches!(error, SinkError::UntrustedDir { .. }));
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
                Err(SinkError::UntrustedDir { .. })
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
}
