//! Locating and reporting config problems: every problem found, each with its line and dotted
//! key, sorted by line.
//!
//! Invariant: pure; locating a byte offset is a binary search, so reporting on a file of any size
//! stays linear.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with a config, located by line and dotted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// A config that could not be loaded: every problem found, in file order.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        write!(
            f,
            "invalid config {}: {count} problem{}",
            self.path.display(),
            if count == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Where each line of a text starts, so that the line of any byte offset is a binary search:
/// locating 10,000 accounts stays linear in the size of the file.
pub(super) struct LineIndex {
    /// Byte offsets of the first byte of each line; the first is 0.
    starts: Vec<usize>,
}

impl LineIndex {
    pub(super) fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, byte)| *byte == b'\n')
                .map(|(index, _)| index + 1),
        );
        LineIndex { starts }
    }

    /// 1-based line of a byte offset (offsets past the end count as the last line).
    pub(super) fn line_of(&self, offset: usize) -> usize {
        self.starts.partition_point(|start| *start <= offset)
    }
}

/// The dotted key at a byte offset, for errors that toml reports by position only: the nearest
/// table header above it joined with the key on its own line (`accounts.idp.client_secret`).
pub(super) fn key_at(text: &str, offset: usize) -> String {
    let end = offset.min(text.len());
    let line_start = text[..end].rfind('\n').map_or(0, |index| index + 1);
    let line_end = text[end..]
        .find('\n')
        .map_or(text.len(), |index| end + index);
    let line = text[line_start..line_end].trim();
    let header = |line: &str| -> Option<String> {
        let inner = line.strip_prefix('[')?.trim_start_matches('[');
        let inner = inner.split(']').next()?;
        Some(inner.trim().to_string())
    };
    if let Some(table) = header(line) {
        return table;
    }
    let own_key = line
        .split_once('=')
        .map(|(key, _)| key.trim().trim_matches('"').to_string())
        .filter(|key| !key.is_empty());
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.starts_with('['))
        .and_then(header);
    match (table, own_key) {
        (Some(table), Some(key)) => format!("{table}.{key}"),
        (Some(table), None) => table,
        (None, Some(key)) => key,
        (None, None) => "syntax".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_at_offsets() {
        let text = "[defaults]\ntimeout = 5\n\n[accounts.idp]\nclient_secret = { a = 1 }\n[[accounts.idp.outputs]]\npath = 3\n";
        let at = |needle: &str| key_at(text, text.find(needle).unwrap());
        assert_eq!(at("timeout"), "defaults.timeout");
        assert_eq!(at("a = 1"), "accounts.idp.client_secret");
        assert_eq!(at("path"), "accounts.idp.outputs.path");
        assert_eq!(at("[accounts.idp]"), "accounts.idp");
        assert_eq!(key_at("x = 1", 0), "x");
    }

    #[test]
    fn line_numbers() {
        let index = LineIndex::new("a\nb\nc");
        // (offset, line): the newline itself belongs to the line it ends.
        for (offset, line) in [(0, 1), (1, 1), (2, 2), (3, 2), (4, 3), (99, 3)] {
            assert_eq!(index.line_of(offset), line, "offset {offset}");
        }
        assert_eq!(LineIndex::new("").line_of(0), 1);
        assert_eq!(LineIndex::new("\n\n").line_of(2), 3);
    }
}
