//! STUB until the real module lands.
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Raw,
    Header,
    Json,
    Env,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    pub path: PathBuf,
    pub format: Format,
    pub mode: u32,
    pub owner: Option<u32>,
    pub group: Option<u32>,
    pub env_name: String,
}
pub fn render(
    _spec: &OutputSpec,
    _account: &str,
    token: &crate::token::Token,
    _scheme: Option<&str>,
) -> zeroize::Zeroizing<Vec<u8>> {
    zeroize::Zeroizing::new(token.expose().as_bytes().to_vec())
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    Written,
    Unchanged,
}
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("x {0}")]
    X(String),
}
pub struct OutputDir;
impl OutputDir {
    pub fn open(_path: &Path) -> Result<OutputDir, SinkError> {
        Ok(OutputDir)
    }
    pub fn path(&self) -> &Path {
        Path::new("/")
    }
    pub fn publish(
        &self,
        _f: &OsStr,
        _c: &[u8],
        _m: u32,
        _o: Option<u32>,
        _g: Option<u32>,
    ) -> Result<Publish, SinkError> {
        Ok(Publish::Written)
    }
    pub fn remove(&self, _f: &OsStr) -> Result<bool, SinkError> {
        Ok(false)
    }
    pub fn remove_stale_temps(&self) -> Result<usize, SinkError> {
        Ok(0)
    }
    pub fn write_check(&self) -> Result<(), SinkError> {
        Ok(())
    }
}
pub fn publish(spec: &OutputSpec, contents: &[u8]) -> Result<Publish, SinkError> {
    std::fs::write(&spec.path, contents).map_err(|e| SinkError::X(e.to_string()))?;
    Ok(Publish::Written)
}
