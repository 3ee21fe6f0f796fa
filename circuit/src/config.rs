//! The configuration files of the `circuit` commands: the miner's ([`MinerCircuitConfig`]) and
//! the validator's ([`FetchConfig`], defined with the fetcher). They are read by the binaries'
//! `circuit` subcommands (`--circuit-config`), never by the coordinator service, which does not
//! fetch artifacts itself.

use std::path::Path;

use serde::Deserialize;
use veribench_support::retry::RetryPolicy;

use crate::error::Error;
use crate::fetch::FetchConfig;
use crate::files::RequiredFiles;
use crate::storage::StorageConfig;
use crate::transfer::TransferConfig;

/// The miner's circuit configuration file (all keys optional except the bucket, which may also
/// come from the environment).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MinerCircuitConfig {
    /// `[artifact]`: required files and the committed one.
    pub artifact: RequiredFiles,
    /// `[storage]`: the bucket.
    pub storage: StorageConfig,
    /// Validity of the GET URLs handed to validators, seconds (default 3600).
    pub url_expiry_secs: Option<u64>,
    /// `[transfer]`: upload timeouts and retries.
    pub transfer: TransferConfig,
    /// `[chain_retry]`: retries of the chain calls.
    pub chain_retry: RetryPolicy,
}

/// Reads a TOML file, or the defaults without one.
fn read_toml<T: for<'de> Deserialize<'de> + Default>(path: Option<&Path>) -> Result<T, Error> {
    let Some(path) = path else { return Ok(T::default()) };
    let text = std::fs::read_to_string(path)
        .map_err(|source| Error::Io { path: path.display().to_string(), source })?;
    toml::from_str(&text)
        .map_err(|e| Error::ConfigFile { path: path.display().to_string(), message: e.to_string() })
}

impl MinerCircuitConfig {
    /// Reads `path` (or the defaults) and applies the `VERIBENCH_STORAGE_*` environment.
    pub fn load(path: Option<&Path>) -> Result<Self, Error> {
        let mut cfg: Self = read_toml(path)?;
        cfg.storage.apply_env(|k| std::env::var(k).ok())?;
        Ok(cfg)
    }
}

impl FetchConfig {
    /// Reads `path`, or the defaults without one.
    pub fn load(path: Option<&Path>) -> Result<Self, Error> {
        read_toml(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The TOML examples of the README parse, and their values are the defaults they claim.
    #[test]
    fn readme_configuration_examples_parse() {
        let readme = include_str!("../README.md");
        let blocks: Vec<&str> =
            readme.split("```toml\n").skip(1).filter_map(|b| b.split("```").next()).collect();
        assert_eq!(blocks.len(), 2, "the README has a miner and a fetch example");
        let miner: MinerCircuitConfig = toml::from_str(blocks[0]).expect("miner example");
        assert_eq!(miner.artifact, RequiredFiles::default());
        assert_eq!(miner.transfer, TransferConfig::default());
        assert_eq!(miner.storage.provider, crate::Provider::R2);
        let fetch: FetchConfig = toml::from_str(blocks[1]).expect("fetch example");
        assert_eq!(fetch, FetchConfig::default(), "the README shows the defaults");
    }

    #[test]
    fn missing_and_malformed_files_are_typed_errors() {
        let tmp = tempfile::tempdir().expect("tmp");
        let missing = tmp.path().join("absent.toml");
        assert!(matches!(FetchConfig::load(Some(&missing)), Err(Error::Io { .. })));
        let bad = tmp.path().join("bad.toml");
        std::fs::write(&bad, "cache_dri = 1\n").expect("write");
        let err = FetchConfig::load(Some(&bad)).expect_err("unknown key");
        assert!(matches!(err, Error::ConfigFile { .. }), "{err}");
        assert!(err.to_string().contains("cache_dri"), "{err}");
        assert_eq!(FetchConfig::load(None).expect("defaults"), FetchConfig::default());
    }
}
