//! The write-ahead log of the height in progress (Malachite's `malachitebft-wal` file format):
//! every vote this validator signs is on disk before it is sent, so a validator that crashes
//! and restarts replays its own votes instead of signing different ones.

use std::path::{Path, PathBuf};

use malachitebft_wal::Log;

use crate::codec::{self, WalEntry};
use crate::context::Height;

/// A write-ahead log failure.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The file could not be opened, read or written.
    #[error("write-ahead log {path}: {source}")]
    Io {
        /// The log file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

/// The log: the entries of one height, the height being the log's sequence number.
#[derive(Debug)]
pub struct Wal {
    log: Log,
}

impl Wal {
    /// Opens (or creates) the log at `path`, creating its directory.
    pub fn open(path: &Path) -> Result<Self, WalError> {
        let io = |source| WalError::Io { path: path.to_owned(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        Ok(Self { log: Log::open(path).map_err(io)? })
    }

    fn io(&self, source: std::io::Error) -> WalError {
        WalError::Io { path: self.log.path().to_owned(), source }
    }

    /// The height the entries belong to.
    pub fn height(&self) -> Height {
        Height(self.log.sequence())
    }

    /// The entries logged at [`Self::height`], oldest first. A torn last entry (a crash during
    /// a write) ends the list; entries that do not decode are skipped with a warning.
    pub fn entries(&mut self) -> Result<Vec<WalEntry>, WalError> {
        if self.log.is_empty() {
            return Ok(Vec::new());
        }
        let mut entries = Vec::with_capacity(self.log.len());
        let path = self.log.path().to_owned();
        let iter = self.log.iter().map_err(|source| WalError::Io { path, source })?;
        for item in iter {
            match item {
                Ok(bytes) => match codec::decode::<WalEntry>("wal entry", &bytes) {
                    Ok(entry) => entries.push(entry),
                    Err(e) => tracing::warn!(error = %e, "skipping an undecodable WAL entry"),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "WAL ends in a damaged entry; replaying what precedes it");
                    break;
                }
            }
        }
        Ok(entries)
    }

    /// Empties the log for a new height.
    pub fn start_height(&mut self, height: Height) -> Result<(), WalError> {
        self.log.reset(height.0).map_err(|e| self.io(e))
    }

    /// Appends `entry` and syncs it to disk.
    pub fn append(&mut self, entry: &WalEntry) -> Result<(), WalError> {
        self.log.append(codec::encode(entry)).map_err(|e| self.io(e))?;
        self.log.flush().map_err(|e| self.io(e))
    }
}

#[cfg(test)]
mod tests {
    use malachitebft_core_types::{Round, Timeout};

    use super::*;

    #[test]
    fn entries_survive_reopening_and_reset_clears_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wal/consensus.wal");
        let mut wal = Wal::open(&path).expect("open");
        wal.start_height(Height(5)).expect("reset");
        let a = WalEntry::Timeout(Timeout::propose(Round::new(0)));
        let b = WalEntry::Timeout(Timeout::prevote(Round::new(1)));
        wal.append(&a).expect("append");
        wal.append(&b).expect("append");
        drop(wal);

        let mut wal = Wal::open(&path).expect("reopen");
        assert_eq!(wal.height(), Height(5));
        assert_eq!(wal.entries().expect("entries"), vec![a, b]);
        wal.start_height(Height(6)).expect("reset");
        assert_eq!(wal.height(), Height(6));
        assert!(wal.entries().expect("entries").is_empty());
    }
}
