//! The coordinator's configuration: one struct, loaded from TOML, overridden by environment
//! variables and flags (in the binary), printed at start-up with secrets redacted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use veribench_protocol::{DEFAULT_SAMPLED_ROWS, MAX_DIM, Mode, PublicKey};
pub use veribench_wallet::WalletConfig;

/// Everything the coordinator can be told.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// WebSocket listener for workers.
    pub ws_listen: SocketAddr,
    /// HTTP API and metrics listener.
    pub http_listen: SocketAddr,
    /// `sqlite://path` (default, created if missing) or `postgres://…`.
    pub db: String,
    /// PEM certificate chain; with `tls_key`, workers connect over `wss://`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// The coordinator's own hotkey, which signs every challenge.
    pub wallet: WalletConfig,
    /// Miner hotkeys (SS58 or 64 hex digits) allowed to register workers.
    pub allowed_miners: Vec<String>,
    /// When and what to challenge.
    pub schedule: ScheduleConfig,
    /// Liveness and handshake timing.
    pub liveness: LivenessConfig,
    /// Per-connection input limits.
    pub limits: InputLimits,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            ws_listen: SocketAddr::from(([0, 0, 0, 0], 7799)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 7800)),
            db: "sqlite://data/coordinator.db".into(),
            tls_cert: None,
            tls_key: None,
            wallet: WalletConfig::default(),
            allowed_miners: Vec::new(),
            schedule: ScheduleConfig::default(),
            liveness: LivenessConfig::default(),
            limits: InputLimits::default(),
        }
    }
}

/// Challenge scheduling and sizing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Whether challenges are issued at all (off for load tests of the connection layer).
    pub enabled: bool,
    /// Seconds between two challenge rounds of one miner.
    pub interval_secs: f64,
    /// A round starts up to this many seconds early or late, so miners cannot predict it.
    pub jitter_secs: f64,
    /// Seconds from sending a challenge to the commitment deadline.
    pub deadline_secs: f64,
    /// Seconds a worker has to answer an open request.
    pub open_timeout_secs: f64,
    /// Arithmetic of every challenge.
    pub mode: Mode,
    /// Matrix size for CPU devices.
    pub cpu_n: u32,
    /// Matrix size for GPU devices (capped to fit their memory).
    pub gpu_n: u32,
    /// Rows sampled per challenge.
    pub sampled_rows: u32,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: 240.0,
            jitter_secs: 30.0,
            deadline_secs: 60.0,
            open_timeout_secs: 60.0,
            mode: Mode::Int8,
            cpu_n: 2048,
            gpu_n: 16384,
            sampled_rows: DEFAULT_SAMPLED_ROWS,
        }
    }
}

/// Heartbeats, pings and handshake timing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LivenessConfig {
    /// Interval workers are told to send heartbeats at.
    pub heartbeat_secs: f64,
    /// A worker not heard from for this long is offline and disconnected.
    pub offline_after_secs: f64,
    /// Interval of WebSocket pings that measure round-trip time.
    pub ping_secs: f64,
    /// Seconds a new connection has to complete the WebSocket upgrade and register.
    pub handshake_timeout_secs: f64,
    /// Largest accepted difference between a registration's timestamp and our clock.
    pub max_clock_skew_secs: f64,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        Self {
            heartbeat_secs: 30.0,
            offline_after_secs: 90.0,
            ping_secs: 10.0,
            handshake_timeout_secs: 10.0,
            max_clock_skew_secs: 300.0,
        }
    }
}

/// What one connection may send.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InputLimits {
    /// Largest frame, checked by the WebSocket layer before it buffers one.
    pub max_frame_bytes: usize,
    /// Largest matrix dimension handed out.
    pub max_dim: u32,
    /// Sustained frames per second per connection.
    pub frames_per_sec: f64,
    /// Burst of frames allowed above the sustained rate.
    pub frame_burst: f64,
    /// Malformed or refused frames after which a connection is closed.
    pub max_strikes: u32,
}

impl Default for InputLimits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 16 << 20,
            max_dim: MAX_DIM,
            frames_per_sec: 20.0,
            frame_burst: 60.0,
            max_strikes: 20,
        }
    }
}

/// Configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML file does not parse or has unknown keys.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// A value out of range or inconsistent with another.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Seconds as a duration (negative and NaN become zero).
pub fn secs(value: f64) -> Duration {
    Duration::try_from_secs_f64(value).unwrap_or(Duration::ZERO)
}

impl CoordinatorConfig {
    /// Reads a TOML file; missing keys keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text)
            .map_err(|source| ConfigError::Parse { path: path.into(), source: Box::new(source) })
    }

    /// The allowed miner hotkeys, parsed.
    pub fn allowed_miner_keys(&self) -> Result<Vec<PublicKey>, ConfigError> {
        self.allowed_miners.iter().map(|s| parse_public_key(s)).collect()
    }

    /// Checks ranges and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.schedule;
        let bad = |what: &str| Err(ConfigError::Invalid(what.to_owned()));
        // Written as "not positive" so NaN is refused too.
        let positive = |x: f64| x > 0.0;
        if !positive(s.interval_secs)
            || !positive(s.deadline_secs)
            || !positive(s.open_timeout_secs)
        {
            return bad("schedule intervals and timeouts must be positive");
        }
        if !(0.0..s.interval_secs).contains(&s.jitter_secs) {
            return bad("schedule.jitter_secs must be in [0, interval_secs)");
        }
        for n in [s.cpu_n, s.gpu_n] {
            if n == 0 || n > self.limits.max_dim.min(MAX_DIM) {
                return Err(ConfigError::Invalid(format!(
                    "challenge size {n} is outside 1..={}",
                    self.limits.max_dim.min(MAX_DIM)
                )));
            }
        }
        if s.sampled_rows == 0 {
            return bad("schedule.sampled_rows must be at least 1");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("tls_cert and tls_key must be given together");
        }
        let l = &self.liveness;
        if !positive(l.offline_after_secs - l.heartbeat_secs) || !positive(l.ping_secs) {
            return bad("liveness.offline_after_secs must exceed heartbeat_secs, ping_secs be > 0");
        }
        self.allowed_miner_keys()?;
        Ok(())
    }

    /// The configuration as TOML with secrets (a database password) redacted, for the log.
    pub fn redacted(&self) -> String {
        let mut shown = self.clone();
        shown.db = redact_url_password(&self.db);
        toml::to_string(&shown).unwrap_or_else(|e| format!("<unprintable config: {e}>"))
    }
}

/// Parses a public key given as SS58 or as 64 hex digits.
pub fn parse_public_key(s: &str) -> Result<PublicKey, ConfigError> {
    veribench_wallet::parse_public_key(s).map_err(|e| ConfigError::Invalid(e.to_string()))
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip_through_toml() {
        let config = CoordinatorConfig::default();
        config.validate().expect("defaults are valid");
        let text = toml::to_string(&config).expect("serialises");
        assert_eq!(toml::from_str::<CoordinatorConfig>(&text).expect("parses"), config);
    }

    #[test]
    fn partial_files_keep_defaults_and_unknown_keys_are_refused() {
        let c: CoordinatorConfig =
            toml::from_str("db = \"postgres://x\"\n[schedule]\ncpu_n = 64\nmode = \"fp32\"\n")
                .expect("parses");
        assert_eq!(
            (c.db.as_str(), c.schedule.cpu_n, c.schedule.mode),
            ("postgres://x", 64, Mode::Fp32)
        );
        assert_eq!(c.schedule.interval_secs, 240.0);
        assert!(toml::from_str::<CoordinatorConfig>("dbb = 1").is_err());
    }

    #[test]
    fn inconsistent_values_are_refused() {
        let mut c = CoordinatorConfig::default();
        c.schedule.cpu_n = 0;
        assert!(c.validate().is_err());
        let c = CoordinatorConfig { tls_cert: Some("cert.pem".into()), ..Default::default() };
        assert!(c.validate().is_err());
        let c =
            CoordinatorConfig { allowed_miners: vec!["not a key".into()], ..Default::default() };
        assert!(c.validate().is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url_password("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url_password("sqlite://data/c.db"), "sqlite://data/c.db");
    }
}
