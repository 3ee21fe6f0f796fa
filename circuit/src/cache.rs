//! The coordinator's content-addressed artifact cache: `<cache>/<sha256>/<file>`.
//!
//! Only verified artifacts enter it: downloads land in `<cache>/.tmp/` and the whole directory
//! is renamed into place (one atomic `rename` on one file system) after the hash checked out.
//! `<cache>/index.json` records, per hash, its size, files and last use (for LRU eviction by
//! total size) and, separately and never evicted, which hotkey claimed the hash: a copycat that
//! commits another miner's hash is refused. The claim goes to the hotkey whose chain commitment
//! is older, so a copycat that happens to be fetched first does not lock the original miner out.
//!
//! The index is replaced atomically (temp file, fsync, rename). One process owns a cache
//! directory at a time: [`Cache::open`] takes an exclusive lock on `<cache>/.lock` for the
//! cache's lifetime, which also makes it safe to clear `.tmp/` leftovers of a crashed run.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use veribench_protocol::{PublicKey, UnixMillis};

use crate::ArtifactHash;

/// A cache that cannot be opened or updated.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A file operation failed.
    #[error("artifact cache {path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Another process holds the cache.
    #[error("artifact cache {0} is in use by another process (one process per cache directory)")]
    Locked(String),
    /// The index file is corrupt.
    #[error("artifact cache index {0} is corrupt: {1}")]
    Corrupt(String, String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io { path: path.display().to_string(), source }
}

/// One cached artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The hotkey whose fetch brought it in.
    #[serde(with = "veribench_protocol::ids::hex32")]
    pub miner: PublicKey,
    /// `file → bytes`.
    pub files: BTreeMap<String, u64>,
    /// Total bytes.
    pub bytes: u64,
    /// When it entered the cache.
    pub added_at: UnixMillis,
    /// Last fetch or hit.
    pub last_used: UnixMillis,
}

/// Which hotkey owns a hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The claiming hotkey.
    #[serde(with = "veribench_protocol::ids::hex32")]
    pub miner: PublicKey,
    /// The block of its chain commitment.
    pub block: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Index {
    version: u32,
    entries: BTreeMap<ArtifactHash, CacheEntry>,
    claims: BTreeMap<ArtifactHash, Claim>,
}

/// The cache directory, its index and its size limit.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
    _lock: File,
}

/// What a claim check decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimCheck {
    /// Nobody else holds the hash (or this miner's commitment is older).
    Free,
    /// Another hotkey with an older (or equally old) commitment holds it.
    ClaimedBy(PublicKey),
}

impl Cache {
    /// Opens (creating) the cache at `dir`, locks it, loads the index and clears `.tmp/`.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, CacheError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock_path = dir.join(".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(CacheError::Locked(dir.display().to_string()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        let tmp = dir.join(".tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let index_path = dir.join("index.json");
        let index = match std::fs::read(&index_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                CacheError::Corrupt(index_path.display().to_string(), e.to_string())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Index { version: 1, ..Default::default() }
            }
            Err(e) => return Err(io(&index_path)(e)),
        };
        Ok(Self { dir: dir.to_owned(), max_bytes, index: Mutex::new(index), _lock: lock })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where downloads are staged (same file system as the cache, so moves are renames).
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join(".tmp")
    }

    /// The directory of a cached artifact.
    pub fn artifact_dir(&self, hash: &ArtifactHash) -> PathBuf {
        self.dir.join(hash.to_hex())
    }

    fn lock_index(&self) -> std::sync::MutexGuard<'_, Index> {
        // A panic while holding the lock leaves a consistent in-memory index (every update is
        // made on a clone and swapped in), so a poisoned lock is still usable.
        self.index.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn save(&self, index: &Index) -> Result<(), CacheError> {
        let path = self.dir.join("index.json");
        let tmp = self.dir.join("index.json.tmp");
        let json = serde_json::to_vec_pretty(index)
            .map_err(|e| CacheError::Corrupt(path.display().to_string(), e.to_string()))?;
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&json).and_then(|()| f.sync_all()).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// Whether `miner`, whose chain commitment of `hash` was set at `block`, may use `hash`.
    pub fn check_claim(&self, hash: &ArtifactHash, miner: &PublicKey, block: u64) -> ClaimCheck {
        match self.lock_index().claims.get(hash) {
            Some(c) if c.miner != *miner && c.block <= block => ClaimCheck::ClaimedBy(c.miner),
            _ => ClaimCheck::Free,
        }
    }

    /// The cached artifact of `hash`, if present with every file at its recorded size; marks it
    /// used and (re)claims it for `miner`. A damaged entry is dropped and reported absent.
    pub fn hit(
        &self,
        hash: &ArtifactHash,
        miner: &PublicKey,
        block: u64,
    ) -> Result<Option<CacheEntry>, CacheError> {
        let mut index = self.lock_index();
        let Some(entry) = index.entries.get(hash).cloned() else { return Ok(None) };
        let dir = self.artifact_dir(hash);
        let intact = entry.files.iter().all(|(name, len)| {
            std::fs::metadata(dir.join(name)).is_ok_and(|m| m.is_file() && m.len() == *len)
        });
        let mut next = index.clone();
        if intact {
            if let Some(e) = next.entries.get_mut(hash) {
                e.last_used = UnixMillis::now();
            }
            claim(&mut next, hash, miner, block);
        } else {
            tracing::warn!(%hash, "cached artifact is damaged; dropping it");
            next.entries.remove(hash);
            let _ = std::fs::remove_dir_all(&dir);
        }
        self.save(&next)?;
        *index = next;
        Ok(intact.then_some(entry))
    }

    /// Moves a verified download from `staged` (a directory under [`Cache::tmp_dir`]) into the
    /// cache, records it and evicts least recently used artifacts beyond the size limit.
    /// Returns the evicted hashes.
    pub fn insert(
        &self,
        hash: &ArtifactHash,
        staged: &Path,
        miner: &PublicKey,
        block: u64,
        files: BTreeMap<String, u64>,
    ) -> Result<Vec<ArtifactHash>, CacheError> {
        let target = self.artifact_dir(hash);
        let mut index = self.lock_index();
        if target.exists() {
            // A leftover without an index entry, or a concurrent fetch of the same hash: the
            // staged copy is verified, so it replaces whatever is there.
            std::fs::remove_dir_all(&target).map_err(io(&target))?;
        }
        std::fs::rename(staged, &target).map_err(io(&target))?;
        let now = UnixMillis::now();
        let bytes = files.values().sum();
        let mut next = index.clone();
        next.entries.insert(
            *hash,
            CacheEntry { miner: *miner, files, bytes, added_at: now, last_used: now },
        );
        claim(&mut next, hash, miner, block);
        let mut evicted = Vec::new();
        while next.entries.values().map(|e| e.bytes).sum::<u64>() > self.max_bytes {
            let Some(oldest) = next
                .entries
                .iter()
                .filter(|(h, _)| *h != hash)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(h, _)| *h)
            else {
                tracing::warn!(%hash, bytes, limit = self.max_bytes, "artifact alone exceeds the cache size limit");
                break;
            };
            next.entries.remove(&oldest);
            let dir = self.artifact_dir(&oldest);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(hash = %oldest, error = %e, "cannot remove evicted artifact");
            }
            evicted.push(oldest);
        }
        self.save(&next)?;
        *index = next;
        Ok(evicted)
    }

    /// Every cached artifact.
    pub fn entries(&self) -> BTreeMap<ArtifactHash, CacheEntry> {
        self.lock_index().entries.clone()
    }

    /// The claim on `hash`, if any.
    pub fn claim_of(&self, hash: &ArtifactHash) -> Option<Claim> {
        self.lock_index().claims.get(hash).copied()
    }

    /// Total bytes cached.
    pub fn total_bytes(&self) -> u64 {
        self.lock_index().entries.values().map(|e| e.bytes).sum()
    }
}

/// Gives the claim on `hash` to `miner` unless another hotkey holds it with an older commitment.
fn claim(index: &mut Index, hash: &ArtifactHash, miner: &PublicKey, block: u64) {
    let keep = index.claims.get(hash).is_some_and(|c| c.miner != *miner && c.block <= block);
    if !keep {
        index.claims.insert(*hash, Claim { miner: *miner, block });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PublicKey {
        PublicKey([n; 32])
    }

    fn stage(cache: &Cache, content: &[u8]) -> (ArtifactHash, PathBuf, BTreeMap<String, u64>) {
        let dir = tempfile::Builder::new().tempdir_in(cache.tmp_dir()).expect("stage").keep();
        std::fs::write(dir.join("vk.key"), content).expect("write");
        let files = BTreeMap::from([("vk.key".to_owned(), content.len() as u64)]);
        (ArtifactHash::of_bytes(content), dir, files)
    }

    #[test]
    fn lru_eviction_claims_and_reopen() {
        let root = tempfile::tempdir().expect("tmp");
        let cache = Cache::open(root.path(), 25).expect("open");
        assert!(matches!(Cache::open(root.path(), 25), Err(CacheError::Locked(_))));
        let (h1, s1, f1) = stage(&cache, &[1; 10]);
        let (h2, s2, f2) = stage(&cache, &[2; 10]);
        let (h3, s3, f3) = stage(&cache, &[3; 10]);
        assert!(cache.insert(&h1, &s1, &key(1), 10, f1).expect("insert").is_empty());
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(cache.insert(&h2, &s2, &key(2), 10, f2).expect("insert").is_empty());
        std::thread::sleep(std::time::Duration::from_millis(5));
        // Using h1 makes h2 the least recently used.
        assert!(cache.hit(&h1, &key(1), 10).expect("hit").is_some());
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(cache.insert(&h3, &s3, &key(3), 10, f3).expect("insert"), vec![h2]);
        assert!(!cache.artifact_dir(&h2).exists());
        assert_eq!(cache.total_bytes(), 20);

        // Claims survive eviction; an older commitment takes a claim over, a newer one is refused.
        assert_eq!(cache.check_claim(&h2, &key(9), 11), ClaimCheck::ClaimedBy(key(2)));
        assert_eq!(cache.check_claim(&h2, &key(9), 9), ClaimCheck::Free);
        assert_eq!(cache.check_claim(&h2, &key(2), 50), ClaimCheck::Free);

        drop(cache);
        let reopened = Cache::open(root.path(), 25).expect("reopen");
        assert_eq!(reopened.entries().len(), 2);
        assert_eq!(reopened.claim_of(&h2).map(|c| c.miner), Some(key(2)));
        // A damaged entry is dropped on hit.
        std::fs::write(reopened.artifact_dir(&h3).join("vk.key"), b"short").expect("damage");
        assert!(reopened.hit(&h3, &key(3), 10).expect("hit").is_none());
        assert_eq!(reopened.entries().len(), 1);
        assert_eq!(std::fs::read_dir(reopened.tmp_dir()).expect("tmp").count(), 0);
    }
}
