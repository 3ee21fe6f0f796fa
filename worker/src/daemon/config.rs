//! The daemon's settings: [`WorkerConfig`], read from a TOML file, then overridden by
//! `VERIBENCH_…` environment variables, then by command-line flags.
//!
//! Two modes, exactly one of which must be configured:
//!
//! - one coordinator: `coordinator` and its pinned key `coordinator_hotkey`;
//! - following a subnet: `[discovery]` `network` and `netuid`; the worker serves every validator
//!   that announces a coordinator on chain and passes [`TrustPolicy`](super::discovery::TrustPolicy).
//!
//! ```toml
//! coordinator = "wss://validator.example:8443/ws"
//! coordinator_hotkey = "5F…"          # ss58 or 64 hex digits; required with `coordinator`
//! name = "rig-7"
//! heartbeat_secs = 30                 # unset: the coordinator's interval, else 30 s
//! tls_ca = "/etc/veribench/test-ca.pem"
//! backend = "auto"                    # auto, cpu, cuda, wgpu
//!
//! [wallet]                            # the worker's own key, btcli layout
//! name = "miner"
//! hotkey = "rig-7"
//! path = "~/.bittensor/wallets"
//!
//! [backoff]
//! base_ms = 1000
//! factor = 2.0
//! max_ms = 60000
//!
//! [discovery]                         # instead of `coordinator`
//! network = "finney"                  # finney, test, local, ws(s)://node, file:PATH
//! netuid = 7
//! min_validator_stake = 1000000000000 # rao (1000 TAO)
//! refresh_blocks = 5                  # re-read the metagraph after this many blocks
//! poll_secs = 12.0                    # how often the best block is read
//! state_file = "/var/lib/veribench/coordinators.json"  # default ~/.veribench/worker/…
//! allow_private_endpoints = false     # true: serve loopback/private hosts (a private network)
//! ```
//!
//! Every key is optional. The `run` flags override the file, each also read from its
//! `VERIBENCH_…` environment variable (clap's `env`, see `veribench-worker run --help`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use veribench_chain::{NetUid, Network};
use veribench_protocol::PublicKey;
pub use veribench_wallet::WalletConfig;

use super::backoff::BackoffConfig;
use super::clock::Clock;
use super::guard::{DEFAULT_MAX_FUTURE_SKEW_MS, DEFAULT_RECENT_CAPACITY, GuardPolicy};

/// Heartbeat interval when neither the configuration nor the coordinator names one.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);

/// Default [`DiscoveryConfig::min_validator_stake`]: 1000 TAO in rao, the validator threshold
/// of the usual subnet templates.
pub const DEFAULT_MIN_VALIDATOR_STAKE: u64 = 1_000_000_000_000;

/// Why a configuration could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for a [`WorkerConfig`].
    #[error("config file {}: {source}", path.display())]
    Parse {
        /// The file (`<string>` when parsed from a string).
        path: PathBuf,
        /// The parse error, with its position.
        source: Box<toml::de::Error>,
    },
    /// A setting has a value that cannot be used.
    #[error("invalid {setting} {value:?}: {reason}")]
    Invalid {
        /// The setting.
        setting: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A key setting is neither 64 hex digits nor an SS58 address.
    #[error("invalid {setting}: {source}")]
    Key {
        /// The setting.
        setting: &'static str,
        /// Why the wallet's parser refused it.
        source: veribench_wallet::WalletError,
    },
    /// Neither mode is configured.
    #[error(
        "no coordinator to serve: set --coordinator with --coordinator.hotkey for one \
         coordinator, or --subtensor.network and --netuid to serve the subnet's validators"
    )]
    NoMode,
    /// Both modes are configured.
    #[error(
        "--coordinator and discovery (--subtensor.network / --netuid) are exclusive: serve one \
         pinned coordinator, or follow the subnet's validators"
    )]
    BothModes,
    /// A single coordinator without a pinned key.
    #[error(
        "--coordinator needs --coordinator.hotkey (ss58 or hex): the coordinator's key must be \
         pinned, otherwise a man in the middle could issue challenges"
    )]
    UnpinnedCoordinator,
    /// Discovery with only one of network and netuid.
    #[error("discovery needs both --subtensor.network and --netuid; {missing} is missing")]
    IncompleteDiscovery {
        /// The missing setting.
        missing: &'static str,
    },
    /// No state file given and no home directory to put the default one in.
    #[error("HOME is not set: give discovery a state file (--state-file)")]
    NoStateFile,
}

/// Which coordinators the daemon serves, from [`WorkerConfig::mode`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerMode {
    /// One coordinator at `url`, whose key must be `pinned`.
    Single {
        /// `ws://…` or `wss://…`.
        url: String,
        /// The coordinator's key.
        pinned: PublicKey,
    },
    /// Every trusted validator announcing a coordinator on subnet `netuid` of `network`.
    Discovery {
        /// The chain.
        network: Network,
        /// The subnet.
        netuid: NetUid,
        /// Where trust decisions are written.
        state_file: PathBuf,
    },
}

/// Following a subnet's validators ([`WorkerMode::Discovery`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// The chain, as `--subtensor.network` (finney, test, local, a node URL, `file:PATH`).
    pub network: Option<String>,
    /// The subnet whose validators are served.
    pub netuid: Option<u16>,
    /// The least stake (rao) of a validator hotkey whose coordinator is served.
    pub min_validator_stake: u64,
    /// Re-read the metagraph and commitments once the best block advanced this much.
    pub refresh_blocks: u64,
    /// How often the best block is read, in seconds (> 0).
    pub poll_secs: f64,
    /// Where trust decisions are written (JSON); default
    /// `$HOME/.veribench/worker/coordinators.json`.
    pub state_file: Option<PathBuf>,
    /// Serve coordinators announced on loopback, private or link-local addresses or
    /// `localhost` (a devnet, a private test network). Off: a validator cannot point workers at
    /// hosts inside their own networks.
    pub allow_private_endpoints: bool,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            network: None,
            netuid: None,
            min_validator_stake: DEFAULT_MIN_VALIDATOR_STAKE,
            refresh_blocks: 5,
            poll_secs: 12.0,
            state_file: None,
            allow_private_endpoints: false,
        }
    }
}

impl DiscoveryConfig {
    /// Whether any part of discovery is set.
    fn is_set(&self) -> bool {
        self.network.is_some() || self.netuid.is_some()
    }

    /// The state file: the configured one, else under `home`.
    pub fn state_path(&self, home: Option<&Path>) -> Result<PathBuf, ConfigError> {
        match (&self.state_file, home) {
            (Some(path), _) => Ok(path.clone()),
            (None, Some(home)) => Ok(home.join(".veribench/worker/coordinators.json")),
            (None, None) => Err(ConfigError::NoStateFile),
        }
    }

    /// The poll interval.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs_f64(self.poll_secs)
    }
}

/// Everything `veribench-worker run` needs besides its key and its backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// The coordinator's WebSocket URL, `ws://…` or `wss://…`; empty: unset (discovery).
    pub coordinator: String,
    /// The coordinator key to trust (ss58 or hex); required with `coordinator`.
    pub coordinator_hotkey: Option<String>,
    /// This worker's name in the coordinator's logs and dashboards.
    pub name: String,
    /// Heartbeat interval; unset, the coordinator's, else [`DEFAULT_HEARTBEAT`].
    pub heartbeat_secs: Option<u64>,
    /// Extra PEM CA certificates trusted for `wss://`, besides the webpki roots.
    pub tls_ca: Option<PathBuf>,
    /// Compute backend: `auto`, `cpu`, `cuda` or `wgpu` (used by the binary to open one).
    pub backend: String,
    /// The worker's key.
    pub wallet: WalletConfig,
    /// Reconnection delays.
    pub backoff: BackoffConfig,
    /// Longest TCP + TLS + WebSocket handshake, in seconds.
    pub connect_timeout_secs: u64,
    /// Longest wait for the Welcome after the Register, in seconds.
    pub welcome_timeout_secs: u64,
    /// Largest accepted clock skew of a challenge's issue time into the future, in seconds.
    pub max_future_skew_secs: u64,
    /// How many challenge ids are remembered against replays.
    pub replay_window: usize,
    /// Lifetime of a self-delegation (a key with no delegation file), in hours.
    pub self_delegation_hours: u64,
    /// Following a subnet's validators instead of one coordinator.
    pub discovery: DiscoveryConfig,
    /// The wall clock for protocol times; never read from a file, the environment or flags. It
    /// exists for tests that simulate a machine whose clock is off ([`Clock::offset_by`]).
    #[serde(skip)]
    pub clock: Clock,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            coordinator: String::new(),
            coordinator_hotkey: None,
            name: default_name(),
            heartbeat_secs: None,
            tls_ca: None,
            backend: "auto".into(),
            wallet: WalletConfig::default(),
            backoff: BackoffConfig::default(),
            connect_timeout_secs: 10,
            welcome_timeout_secs: 10,
            max_future_skew_secs: DEFAULT_MAX_FUTURE_SKEW_MS / 1000,
            replay_window: DEFAULT_RECENT_CAPACITY,
            self_delegation_hours: 24,
            discovery: DiscoveryConfig::default(),
            clock: Clock::system(),
        }
    }
}

/// The host name, or `worker`.
fn default_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(64).collect())
        .unwrap_or_else(|| "worker".into())
}

/// Command-line (or programmatic) overrides; `None` leaves a setting as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigOverrides {
    /// See [`WorkerConfig::coordinator`].
    pub coordinator: Option<String>,
    /// See [`WorkerConfig::coordinator_hotkey`].
    pub coordinator_hotkey: Option<String>,
    /// See [`WorkerConfig::name`].
    pub name: Option<String>,
    /// See [`WorkerConfig::heartbeat_secs`].
    pub heartbeat_secs: Option<u64>,
    /// See [`WorkerConfig::tls_ca`].
    pub tls_ca: Option<PathBuf>,
    /// See [`WorkerConfig::backend`].
    pub backend: Option<String>,
    /// See [`WalletConfig::name`].
    pub wallet_name: Option<String>,
    /// See [`WalletConfig::hotkey`].
    pub wallet_hotkey: Option<String>,
    /// See [`WalletConfig::path`].
    pub wallet_path: Option<PathBuf>,
    /// See [`DiscoveryConfig::network`].
    pub network: Option<String>,
    /// See [`DiscoveryConfig::netuid`].
    pub netuid: Option<u16>,
    /// See [`DiscoveryConfig::min_validator_stake`].
    pub min_validator_stake: Option<u64>,
    /// See [`DiscoveryConfig::refresh_blocks`].
    pub refresh_blocks: Option<u64>,
    /// See [`DiscoveryConfig::state_file`].
    pub state_file: Option<PathBuf>,
    /// See [`DiscoveryConfig::allow_private_endpoints`] (`Some(true)` to allow).
    pub allow_private_endpoints: Option<bool>,
}

impl WorkerConfig {
    /// Parses a TOML configuration; missing keys keep their defaults, unknown keys are errors.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: "<string>".into(), source: Box::new(e) })
    }

    /// Reads a TOML configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.into(), source: Box::new(e) })
    }

    /// Applies every override that is set.
    pub fn apply(&mut self, o: ConfigOverrides) {
        fn set<T>(slot: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *slot = v;
            }
        }
        set(&mut self.coordinator, o.coordinator);
        set(&mut self.coordinator_hotkey, o.coordinator_hotkey.map(Some));
        set(&mut self.name, o.name);
        set(&mut self.heartbeat_secs, o.heartbeat_secs.map(Some));
        set(&mut self.tls_ca, o.tls_ca.map(Some));
        set(&mut self.backend, o.backend);
        set(&mut self.wallet.name, o.wallet_name);
        set(&mut self.wallet.hotkey, o.wallet_hotkey);
        set(&mut self.wallet.path, o.wallet_path.map(Some));
        set(&mut self.discovery.network, o.network.map(Some));
        set(&mut self.discovery.netuid, o.netuid.map(Some));
        set(&mut self.discovery.min_validator_stake, o.min_validator_stake);
        set(&mut self.discovery.refresh_blocks, o.refresh_blocks);
        set(&mut self.discovery.state_file, o.state_file.map(Some));
        set(&mut self.discovery.allow_private_endpoints, o.allow_private_endpoints);
    }

    /// Checks the settings the daemon cannot start without: one mode, the URL's scheme and the
    /// pinned key, or the network, subnet and state file.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.mode()?;
        if self.name.is_empty() || self.name.len() > 256 {
            return Err(ConfigError::Invalid {
                setting: "name",
                value: self.name.clone(),
                reason: "must be 1 to 256 bytes".into(),
            });
        }
        Ok(())
    }

    /// The mode the settings select, with `$HOME` for the default state file.
    pub fn mode(&self) -> Result<WorkerMode, ConfigError> {
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
        self.mode_with_home(home.as_deref())
    }

    /// [`WorkerConfig::mode`] with an explicit home directory (`None`: unset).
    pub fn mode_with_home(&self, home: Option<&Path>) -> Result<WorkerMode, ConfigError> {
        let d = &self.discovery;
        match (self.coordinator.is_empty(), d.is_set()) {
            (false, true) => Err(ConfigError::BothModes),
            (true, false) => Err(ConfigError::NoMode),
            (false, false) => {
                self.is_tls()?;
                let pinned = self.pinned_coordinator()?.ok_or(ConfigError::UnpinnedCoordinator)?;
                Ok(WorkerMode::Single { url: self.coordinator.clone(), pinned })
            }
            (true, true) => {
                let network = d
                    .network
                    .as_deref()
                    .ok_or(ConfigError::IncompleteDiscovery { missing: "--subtensor.network" })?;
                let netuid =
                    d.netuid.ok_or(ConfigError::IncompleteDiscovery { missing: "--netuid" })?;
                let network = network.parse::<Network>().map_err(|e| ConfigError::Invalid {
                    setting: "discovery.network",
                    value: veribench_support::redact_url(network),
                    reason: e.to_string(),
                })?;
                if !(d.poll_secs.is_finite() && d.poll_secs > 0.0 && d.poll_secs < 1e9) {
                    return Err(ConfigError::Invalid {
                        setting: "discovery.poll_secs",
                        value: d.poll_secs.to_string(),
                        reason: "must be a positive number of seconds".into(),
                    });
                }
                let state_file = d.state_path(home)?;
                Ok(WorkerMode::Discovery { network, netuid: NetUid(netuid), state_file })
            }
        }
    }

    /// Whether the coordinator URL is `wss://` (true) or `ws://` (false).
    pub fn is_tls(&self) -> Result<bool, ConfigError> {
        let lower = self.coordinator.to_ascii_lowercase();
        if lower.starts_with("wss://") {
            Ok(true)
        } else if lower.starts_with("ws://") {
            Ok(false)
        } else {
            Err(ConfigError::Invalid {
                setting: "coordinator",
                value: veribench_support::redact_url(&self.coordinator),
                reason: "must start with ws:// or wss://".into(),
            })
        }
    }

    /// The pinned coordinator key, if one is configured.
    pub fn pinned_coordinator(&self) -> Result<Option<PublicKey>, ConfigError> {
        self.coordinator_hotkey
            .as_deref()
            .map(|text| {
                veribench_wallet::parse_public_key(text)
                    .map_err(|source| ConfigError::Key { setting: "coordinator_hotkey", source })
            })
            .transpose()
    }

    /// The heartbeat interval: the configured one, else the coordinator's (`welcome_ms`, 0 for
    /// none), else [`DEFAULT_HEARTBEAT`]; never below 100 ms.
    pub fn heartbeat_interval(&self, welcome_ms: u64) -> Duration {
        let chosen = match (self.heartbeat_secs, welcome_ms) {
            (Some(secs), _) => Duration::from_secs(secs),
            (None, 0) => DEFAULT_HEARTBEAT,
            (None, ms) => Duration::from_millis(ms),
        };
        chosen.max(Duration::from_millis(100))
    }

    /// The guard's tunables.
    pub fn guard_policy(&self) -> GuardPolicy {
        GuardPolicy {
            max_future_skew_ms: self.max_future_skew_secs.saturating_mul(1000),
            recent_capacity: self.replay_window.max(1),
        }
    }

    /// A copy fit for logs: credentials and query of the URLs are masked.
    pub fn redacted(&self) -> Self {
        let redact = redact_if_url;
        let mut discovery = self.discovery.clone();
        discovery.network = discovery.network.as_deref().map(redact);
        Self { coordinator: redact(&self.coordinator), discovery, ..self.clone() }
    }
}

/// `text` fit for logs: URLs through [`veribench_support::redact_url`]; other values (`finney`,
/// `file:PATH`, an unset coordinator) carry no secret and are shown as they are.
pub(crate) fn redact_if_url(text: &str) -> String {
    if text.contains("://") { veribench_support::redact_url(text) } else { text.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_overrides() {
        let mut config = WorkerConfig::from_toml_str(
            r#"
            coordinator = "ws://file:1"
            name = "from-file"
            heartbeat_secs = 5
            [wallet]
            name = "w"
            hotkey = "h"
            [backoff]
            max_ms = 9
            "#,
        )
        .expect("parses");
        assert_eq!(config.wallet.name, "w");
        assert_eq!(config.backoff.max_ms, 9);
        assert_eq!(config.backoff.base_ms, 1000, "defaults fill the rest");
        config.apply(ConfigOverrides {
            coordinator: Some("wss://env:2".into()),
            ..Default::default()
        });
        assert_eq!(config.coordinator, "wss://env:2");
        assert_eq!(config.name, "from-file", "unset overrides keep the file's value");
        config.apply(ConfigOverrides {
            wallet_hotkey: Some("flag-hot".into()),
            ..Default::default()
        });
        assert_eq!(config.wallet.hotkey, "flag-hot");
        assert_eq!(config.coordinator, "wss://env:2");
        assert!(config.is_tls().expect("scheme"));
        assert_eq!(config.heartbeat_interval(1234), Duration::from_secs(5));
        config.heartbeat_secs = None;
        assert_eq!(config.heartbeat_interval(1234), Duration::from_millis(1234));
        assert_eq!(config.heartbeat_interval(0), DEFAULT_HEARTBEAT);
    }

    #[test]
    fn bad_settings_are_named() {
        assert!(WorkerConfig::from_toml_str("bogus = 1").is_err());
        assert!(WorkerConfig::from_toml_str("clock = 1").is_err(), "the clock is not a setting");
        let config = WorkerConfig { coordinator: "http://x".into(), ..Default::default() };
        assert!(config.validate().is_err());
        let config = WorkerConfig {
            coordinator: "ws://x:1".into(),
            coordinator_hotkey: Some("not-a-key".into()),
            ..Default::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Key { setting: "coordinator_hotkey", .. })
        ));
        let hex = "ab".repeat(32);
        let config =
            WorkerConfig { coordinator_hotkey: Some(format!("0x{hex}")), ..Default::default() };
        assert_eq!(config.pinned_coordinator().expect("hex"), Some(PublicKey([0xab; 32])));
    }

    fn pinned() -> Option<String> {
        Some("ab".repeat(32))
    }

    #[test]
    fn one_coordinator_needs_its_key_pinned() {
        let unpinned =
            WorkerConfig { coordinator: "wss://v.example:8443".into(), ..Default::default() };
        assert!(matches!(unpinned.validate(), Err(ConfigError::UnpinnedCoordinator)));
        assert!(
            unpinned.validate().expect_err("unpinned").to_string().contains("--coordinator.hotkey")
        );
        let config = WorkerConfig { coordinator_hotkey: pinned(), ..unpinned };
        assert_eq!(
            config.mode_with_home(None).expect("single"),
            WorkerMode::Single {
                url: "wss://v.example:8443".into(),
                pinned: PublicKey([0xab; 32])
            }
        );
        // The scheme is checked before the key, so a bad URL is named first.
        let bad = WorkerConfig { coordinator: "http://x".into(), ..Default::default() };
        assert!(matches!(bad.validate(), Err(ConfigError::Invalid { setting: "coordinator", .. })));
    }

    #[test]
    fn exactly_one_mode_is_configured() {
        let neither = WorkerConfig::default();
        assert_eq!(neither.coordinator, "", "no coordinator by default");
        assert!(matches!(neither.validate(), Err(ConfigError::NoMode)));

        let mut config = WorkerConfig::default();
        config.apply(ConfigOverrides {
            network: Some("file:/tmp/chain.json".into()),
            netuid: Some(7),
            ..Default::default()
        });
        let home = Path::new("/home/op");
        assert_eq!(
            config.mode_with_home(Some(home)).expect("discovery"),
            WorkerMode::Discovery {
                network: Network::File("/tmp/chain.json".into()),
                netuid: NetUid(7),
                state_file: home.join(".veribench/worker/coordinators.json"),
            }
        );
        assert!(matches!(config.mode_with_home(None), Err(ConfigError::NoStateFile)));
        assert!(!config.discovery.allow_private_endpoints, "off by default");
        config.apply(ConfigOverrides {
            state_file: Some("/var/lib/w.json".into()),
            min_validator_stake: Some(5),
            refresh_blocks: Some(2),
            allow_private_endpoints: Some(true),
            ..Default::default()
        });
        assert!(matches!(
            config.mode_with_home(None),
            Ok(WorkerMode::Discovery { state_file, .. }) if state_file == Path::new("/var/lib/w.json")
        ));
        assert_eq!((config.discovery.min_validator_stake, config.discovery.refresh_blocks), (5, 2));
        assert!(config.discovery.allow_private_endpoints, "on when asked for");

        let both = WorkerConfig {
            coordinator: "ws://x:1".into(),
            coordinator_hotkey: pinned(),
            ..config.clone()
        };
        assert!(matches!(both.validate(), Err(ConfigError::BothModes)));

        let mut half = config.clone();
        half.discovery.netuid = None;
        assert!(matches!(
            half.validate(),
            Err(ConfigError::IncompleteDiscovery { missing: "--netuid" })
        ));
        let mut half = config.clone();
        half.discovery.network = None;
        assert!(matches!(
            half.validate(),
            Err(ConfigError::IncompleteDiscovery { missing: "--subtensor.network" })
        ));

        let mut stalled = config.clone();
        stalled.discovery.poll_secs = 0.0;
        assert!(matches!(
            stalled.validate(),
            Err(ConfigError::Invalid { setting: "discovery.poll_secs", .. })
        ));
        let mut unknown = config;
        unknown.discovery.network = Some("mainnet".into());
        assert!(matches!(
            unknown.validate(),
            Err(ConfigError::Invalid { setting: "discovery.network", .. })
        ));
    }

    #[test]
    fn discovery_reads_from_toml_with_defaults() {
        let config = WorkerConfig::from_toml_str(
            r#"
            [discovery]
            network = "finney"
            netuid = 12
            poll_secs = 0.5
            "#,
        )
        .expect("parses");
        assert_eq!(config.discovery.netuid, Some(12));
        assert_eq!(config.discovery.min_validator_stake, DEFAULT_MIN_VALIDATOR_STAKE);
        assert_eq!(config.discovery.refresh_blocks, 5);
        assert_eq!(config.discovery.poll_interval(), Duration::from_millis(500));
        assert!(WorkerConfig::from_toml_str("[discovery]\nnetwrk = \"finney\"").is_err());
        assert!(WorkerConfig::from_toml_str("[discovery]\nnetuid = 70000").is_err());
    }

    #[test]
    fn the_coordinator_url_is_redacted() {
        let config = WorkerConfig {
            coordinator: "wss://u:Pw1@Tail@host:1/ws?token=s3cret".into(),
            ..Default::default()
        };
        let shown = config.redacted().coordinator;
        assert_eq!(shown, "wss://u:***@host:1/ws?***");
        let config =
            WorkerConfig { coordinator: "http://u:Pw1@Tail@x".into(), ..Default::default() };
        let refused = config.validate().expect_err("not ws").to_string();
        assert!(!refused.contains("Pw1") && !refused.contains("Tail"), "{refused}");

        let mut config = WorkerConfig::default();
        config.discovery.network = Some("wss://u:Pw1@node:9944".into());
        assert_eq!(config.redacted().discovery.network.as_deref(), Some("wss://u:***@node:9944/"));
        config.discovery.network = Some("finney".into());
        assert_eq!(config.redacted().discovery.network.as_deref(), Some("finney"));
        assert_eq!(config.redacted().coordinator, "", "an unset coordinator stays unset");
    }
}
