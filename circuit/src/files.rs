//! [`RequiredFiles`]: which files make up an artifact, and which one is pinned on chain.
//!
//! The list is the only source of file names the fetcher ever writes: a name in an offer that is
//! not on it is refused, so a miner cannot make a validator create `../../etc/x` or a 10 000-file
//! directory. Names are therefore restricted to one plain path component.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The default artifact: verification key, proving key, settings and compiled model.
pub const DEFAULT_FILES: [&str; 4] = ["vk.key", "pk.key", "settings.json", "model.compiled"];
/// The default committed file: its SHA-256 is the on-chain commitment.
pub const DEFAULT_COMMITTED: &str = "vk.key";
/// The settings file validated against the schema (see [`crate::settings`]) when it is listed.
pub const SETTINGS_FILE: &str = "settings.json";
/// Longest accepted file name.
pub const MAX_NAME_LEN: usize = 100;
/// Most files an artifact may have.
pub const MAX_FILES: usize = 32;

/// A file list that is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilesError {
    /// A name is not one plain path component of `[A-Za-z0-9._-]`.
    #[error(
        "invalid artifact file name {0:?}: use 1-{MAX_NAME_LEN} characters of A-Z a-z 0-9 . _ -, \
         not starting with a dot"
    )]
    InvalidName(String),
    /// A name is listed twice.
    #[error("artifact file {0:?} is listed twice")]
    Duplicate(String),
    /// The list is empty or longer than [`MAX_FILES`].
    #[error("an artifact has 1 to {MAX_FILES} files, not {0}")]
    Count(usize),
    /// The committed file is not in the list.
    #[error("the committed file {0:?} is not one of the required files")]
    CommittedNotListed(String),
}

/// The required file names of an artifact and the one whose hash is committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawFiles", into = "RawFiles")]
pub struct RequiredFiles {
    files: Vec<String>,
    committed: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFiles {
    #[serde(default = "default_files")]
    files: Vec<String>,
    #[serde(default = "default_committed")]
    committed: String,
}

fn default_files() -> Vec<String> {
    DEFAULT_FILES.iter().map(|s| (*s).to_owned()).collect()
}

fn default_committed() -> String {
    DEFAULT_COMMITTED.to_owned()
}

impl TryFrom<RawFiles> for RequiredFiles {
    type Error = FilesError;
    fn try_from(raw: RawFiles) -> Result<Self, FilesError> {
        Self::new(raw.files, raw.committed)
    }
}

impl From<RequiredFiles> for RawFiles {
    fn from(f: RequiredFiles) -> Self {
        Self { files: f.files, committed: f.committed }
    }
}

impl Default for RequiredFiles {
    fn default() -> Self {
        Self { files: default_files(), committed: default_committed() }
    }
}

/// Whether `name` is one plain path component the fetcher may create.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl RequiredFiles {
    /// A list of names (each valid and distinct) with `committed` among them.
    pub fn new(
        files: impl IntoIterator<Item = impl Into<String>>,
        committed: impl Into<String>,
    ) -> Result<Self, FilesError> {
        let files: Vec<String> = files.into_iter().map(Into::into).collect();
        let committed = committed.into();
        if files.is_empty() || files.len() > MAX_FILES {
            return Err(FilesError::Count(files.len()));
        }
        let mut seen = BTreeSet::new();
        for name in &files {
            if !valid_file_name(name) {
                return Err(FilesError::InvalidName(name.clone()));
            }
            if !seen.insert(name.as_str()) {
                return Err(FilesError::Duplicate(name.clone()));
            }
        }
        if !seen.contains(committed.as_str()) {
            return Err(FilesError::CommittedNotListed(committed));
        }
        Ok(Self { files, committed })
    }

    /// The names, in configuration order.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// The file whose SHA-256 is the chain commitment.
    pub fn committed(&self) -> &str {
        &self.committed
    }

    /// Whether `name` is required.
    pub fn contains(&self, name: &str) -> bool {
        self.files.iter().any(|f| f == name)
    }

    /// Whether the settings file is listed (and so validated).
    pub fn has_settings(&self) -> bool {
        self.contains(SETTINGS_FILE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_list_and_validation() {
        let d = RequiredFiles::default();
        assert_eq!(d.files(), DEFAULT_FILES);
        assert_eq!(d.committed(), "vk.key");
        assert!(d.has_settings());
        for bad in ["", ".hidden", "a/b", "..", "a\\b", "é.key", "a b", &"x".repeat(101)] {
            assert_eq!(
                RequiredFiles::new([bad], bad),
                Err(FilesError::InvalidName(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert!(matches!(RequiredFiles::new(["a", "a"], "a"), Err(FilesError::Duplicate(_))));
        assert!(matches!(RequiredFiles::new(["a"], "b"), Err(FilesError::CommittedNotListed(_))));
        assert!(matches!(RequiredFiles::new(Vec::<String>::new(), "a"), Err(FilesError::Count(0))));
    }

    #[test]
    fn serde_defaults_and_checks() {
        let d: RequiredFiles = serde_json::from_str("{}").expect("defaults");
        assert_eq!(d, RequiredFiles::default());
        let custom: RequiredFiles =
            serde_json::from_str(r#"{"files":["a.bin","vk.key"]}"#).expect("custom");
        assert_eq!(custom.committed(), "vk.key");
        assert!(serde_json::from_str::<RequiredFiles>(r#"{"files":["../x"]}"#).is_err());
    }
}
