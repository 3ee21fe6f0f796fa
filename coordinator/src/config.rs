//! The coordinator's configuration: one struct, loaded from TOML, overridden by environment
//! variables and flags (in the binary), printed at start-up with secrets redacted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use veribench_chain::Network;
use veribench_protocol::wire::{self, Limits};
use veribench_protocol::{
    DEFAULT_CPU_SHAPE, DEFAULT_FP32_SAMPLED_ROWS, DEFAULT_GPU_SHAPE, DEFAULT_SAMPLED_ROWS, MAX_DIM,
    Mode, PublicKey, Shape,
};
use veribench_support::RetryPolicy;
/// The one URL redaction (database URLs here), shared with the worker.
pub use veribench_support::redact_url;
pub use veribench_wallet::WalletConfig;

use crate::scoring::ScoringConfig;
use crate::timing::TimingConfig;

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
    /// How the coordinator waits on its database, and how long shutdown waits for it.
    pub storage: StorageConfig,
    /// PEM certificate chain; with `tls_key`, workers connect over `wss://`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// The coordinator's own hotkey, which signs every challenge.
    pub wallet: WalletConfig,
    /// The chain: where it is, which subnet; only hotkeys registered there may register workers.
    pub chain: ChainConfig,
    /// When and what to challenge.
    pub schedule: ScheduleConfig,
    /// How long a worker identity keeps its devices while away (SPEC §2.1).
    pub claims: ClaimsConfig,
    /// Liveness and handshake timing.
    pub liveness: LivenessConfig,
    /// Per-connection input limits.
    pub limits: InputLimits,
    /// Constants of the scoring model.
    pub scoring: ScoringConfig,
    /// How compute time is measured and which rates are believed (SPEC §8.1).
    pub timing: TimingConfig,
    /// When scores become weights and weights go on chain.
    pub weights: WeightsConfig,
    /// Who may report leases.
    pub leases: LeaseConfig,
    /// How long refused peer inputs are kept, and how many.
    pub refusals: RefusalsConfig,
    /// The endpoint published on chain for workers to find (`announce`).
    pub announce: crate::announce::AnnounceConfig,
    /// Agreement on each epoch's weights with the other validators (off by default).
    pub consensus: crate::consensus::ConsensusConfig,
    /// The prover-market job API (off by default).
    pub market: crate::market::MarketConfig,
    /// The HTTP listener's status pages.
    pub http: HttpConfig,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            ws_listen: SocketAddr::from(([0, 0, 0, 0], 7799)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 7800)),
            db: "sqlite://data/coordinator.db".into(),
            storage: StorageConfig::default(),
            tls_cert: None,
            tls_key: None,
            wallet: WalletConfig::default(),
            chain: ChainConfig::default(),
            schedule: ScheduleConfig::default(),
            claims: ClaimsConfig::default(),
            liveness: LivenessConfig::default(),
            limits: InputLimits::default(),
            scoring: ScoringConfig::default(),
            timing: TimingConfig::default(),
            weights: WeightsConfig::default(),
            leases: LeaseConfig::default(),
            refusals: RefusalsConfig::default(),
            announce: crate::announce::AnnounceConfig::default(),
            consensus: crate::consensus::ConsensusConfig::default(),
            market: crate::market::MarketConfig::default(),
            http: HttpConfig::default(),
        }
    }
}

/// The status pages served at `/` by the HTTP listener.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// When set, the status pages require `Authorization: Bearer <token>` (read-only access;
    /// the JSON API is unaffected); redacted in logs.
    pub status_token: Option<String>,
}

/// The chain the coordinator reads its metagraph from and sets weights on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChainConfig {
    /// btcli's `--subtensor.network`: `finney`, `test`, `local`, a `ws://`/`wss://` URL, or
    /// `file:PATH` for the embedded file-backed chain (the default).
    pub network: String,
    /// The subnet (`--netuid`).
    pub netuid: u16,
    /// Seconds between two metagraph reads (who may register workers, uids for weights).
    pub metagraph_refresh_secs: f64,
    /// Backoff of chain calls that fail transiently.
    pub retry: RetryPolicy,
}

impl Default for ChainConfig {
    fn default() -> Self {
        Self {
            network: "file:data/chain.json".into(),
            netuid: 1,
            metagraph_refresh_secs: 60.0,
            retry: RetryPolicy::default(),
        }
    }
}

impl ChainConfig {
    /// The parsed network.
    pub fn network(&self) -> Result<Network, ConfigError> {
        self.network.parse().map_err(|e: veribench_chain::NetworkParseError| {
            ConfigError::Invalid(format!("chain.network: {e}"))
        })
    }
}

/// Weight computation and submission.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WeightsConfig {
    /// Seconds between two score computations (each yields a weight vector).
    pub interval_secs: f64,
    /// Blocks that must pass since this validator's last weights update before the next
    /// submission (the chain's own `WeightsSetRateLimit` applies too, whichever is larger).
    pub min_blocks_between_updates: u64,
    /// Version key sent with the weights; unset: the subnet's `WeightsVersionKey`.
    pub version_key: Option<u64>,
    /// Whether weights are submitted at all (scores and vectors are computed and stored anyway).
    pub submit: bool,
}

impl Default for WeightsConfig {
    fn default() -> Self {
        Self {
            interval_secs: 420.0,
            min_blocks_between_updates: 105,
            version_key: None,
            submit: true,
        }
    }
}

/// Who may report leases through `POST /api/v1/leases`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeaseConfig {
    /// Bearer tokens accepted (`Authorization: Bearer …`); redacted in logs.
    pub tokens: Vec<String>,
    /// Hotkeys (SS58 or hex) whose sr25519 signature over the request body is accepted.
    pub trusted_signers: Vec<String>,
    /// Largest accepted difference between a request's `issued_at` and our clock, in seconds.
    pub max_skew_secs: f64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self { tokens: Vec::new(), trusted_signers: Vec::new(), max_skew_secs: 300.0 }
    }
}

/// Waiting on the database: every wait is bounded, so a stopped or full database makes calls
/// fail fast (and `/healthz` say so) instead of hanging the coordinator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Longest wait for a pooled connection, in seconds.
    pub acquire_timeout_secs: f64,
    /// Longest wait for the once-a-second write probe before the store counts as failing.
    pub probe_timeout_secs: f64,
    /// At shutdown, how long the outcomes of challenges in flight may take to be written.
    pub shutdown_grace_secs: f64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { acquire_timeout_secs: 3.0, probe_timeout_secs: 1.0, shutdown_grace_secs: 10.0 }
    }
}

impl StorageConfig {
    /// The store's options.
    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions { acquire_timeout: secs(self.acquire_timeout_secs) }
    }
}

/// Refused peer inputs are counted per (address, kind, registered worker) in the `rejections`
/// table, not stored one row each: whoever can reach the ports must not be able to grow the
/// database without bound. These bound it by age and by size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RefusalsConfig {
    /// Days a row is kept after its last refusal.
    pub retention_days: f64,
    /// Most rows kept; the least recently refused go first. The table can exceed it by at most
    /// a minute of writes (`max_buffered` rows a second) between two prunings.
    pub max_rows: u64,
    /// Distinct (address, kind, worker) groups held in memory between two writes (one a
    /// second); refusals of new groups beyond it are counted in one overflow row per kind.
    pub max_buffered: usize,
}

impl Default for RefusalsConfig {
    fn default() -> Self {
        Self { retention_days: 7.0, max_rows: 100_000, max_buffered: 1024 }
    }
}

/// Challenge scheduling and sizing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Whether challenges are issued at all (off for load tests of the connection layer).
    pub enabled: bool,
    /// One round for every miner at once instead of one round timer per miner: every idle,
    /// unleased device of every connected worker is challenged within the same short window, so
    /// a device answering for two worker identities (of one miner or of two) computes two
    /// challenges at the same time and is slower for both (SPEC §2.1).
    pub synchronized: bool,
    /// Seconds between two challenge rounds (of one miner, or of everyone when `synchronized`).
    pub interval_secs: f64,
    /// A round starts up to this many seconds early or late, so miners cannot predict it.
    pub jitter_secs: f64,
    /// Seconds from sending a challenge to the commitment deadline.
    pub deadline_secs: f64,
    /// Seconds a worker has to answer an open request.
    pub open_timeout_secs: f64,
    /// Arithmetic of every challenge.
    pub mode: Mode,
    /// Rows and columns of C (`m = n`) for CPU devices.
    pub cpu_n: u32,
    /// Inner dimension `k` for CPU devices. Hashing C costs `O(m·n)` and generating A and B
    /// `O(k·(m + n))` against the GEMM's `O(m·n·k)`: a larger `k` shrinks the hash's share, a
    /// larger `n` the generator's. The default `4096 × 8192 × 4096` keeps the worker's proof
    /// overhead below 5% (README, "Benchmarking a machine").
    pub cpu_k: u32,
    /// Rows and columns of C for GPU devices (capped to fit their memory).
    pub gpu_n: u32,
    /// Inner dimension for GPU devices (capped like `gpu_n`). The verifier regenerates all of B
    /// (`k × n`), so its cost grows with `k`; GPUs hash on the device, so `k = n` suffices.
    pub gpu_k: u32,
    /// Rows sampled per challenge in the exact modes (int8, fp16, bf16), in `1..=1024` (the
    /// wire's `max_open_rows`). The default, 460, lets a worker that skipped 1% of the rows pass
    /// with probability ≤ 1% (SPEC §6); Freivalds' check keeps it cheap. Fewer are asked when
    /// the openings could exceed a frame (SPEC §8.4): 254 at n = 16384, 63 at n = 65536.
    pub sampled_rows: u32,
    /// Rows sampled per fp32 challenge, in `1..=1024`: each costs the verifier a full
    /// recomputation (`2·k·n` operations), so the default is 32 (SPEC §6).
    pub fp32_sampled_rows: u32,
    /// Seconds (times a random factor in [0.5, 1.5)) after a worker refused a challenge as
    /// `busy` (its device serves another validator) before its device is challenged again,
    /// alone; the miner's round timer is left as it is.
    pub busy_retry_secs: f64,
    /// How many times a round's challenge refused `busy` is retried (each after
    /// `busy_retry_secs` × a factor in [0.5, 1.5)) before the device waits for its next round.
    /// It bounds what a worker answering `busy` to everything costs: `1 + busy_retries`
    /// challenges a round per device.
    pub busy_retries: u32,
}

impl ScheduleConfig {
    /// The configured sample for challenges in `mode`.
    pub fn sampled_rows_for(&self, mode: Mode) -> u32 {
        match mode {
            Mode::Fp32 => self.fp32_sampled_rows,
            Mode::Int8 | Mode::Fp16 | Mode::Bf16 => self.sampled_rows,
        }
    }
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            synchronized: false,
            interval_secs: 240.0,
            jitter_secs: 30.0,
            deadline_secs: 60.0,
            open_timeout_secs: 60.0,
            mode: Mode::Int8,
            cpu_n: DEFAULT_CPU_SHAPE.n,
            cpu_k: DEFAULT_CPU_SHAPE.k,
            gpu_n: DEFAULT_GPU_SHAPE.n,
            gpu_k: DEFAULT_GPU_SHAPE.k,
            sampled_rows: DEFAULT_SAMPLED_ROWS,
            fp32_sampled_rows: DEFAULT_FP32_SAMPLED_ROWS,
            busy_retry_secs: 5.0,
            busy_retries: 3,
        }
    }
}

/// Device claims: the first worker identity to register a device key holds it while it is active.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClaimsConfig {
    /// Seconds a claim stays active after its worker was last connected (or last registered with
    /// the device). While it is active, another identity registering the device is refused
    /// `device_conflict`; once it lapses, the next identity to register the device takes it.
    ///
    /// Too short, and an attacker who copies a device key from `GET /api/v1/workers` takes the
    /// device during an honest operator's reboot or driver upgrade, locking the operator out for
    /// as long as the attacker stays connected. Too long, and an operator who re-keys a worker
    /// (a new worker key on the same hardware) waits that long before the new identity is
    /// accepted. The default, one hour, covers routine maintenance and costs a re-keyed worker at
    /// most a third of the 3-hour scoring window.
    pub expiry_secs: f64,
}

impl Default for ClaimsConfig {
    fn default() -> Self {
        Self { expiry_secs: 3600.0 }
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
    /// Frames (data or control) dropped over the rate limit after which a connection is closed:
    /// tungstenite answers every ping it reads, so a ping flood is only stopped by closing.
    pub max_dropped_frames: u32,
    /// Bytes a connection may send before its `Register` is accepted: the WebSocket upgrade
    /// request and the first frame (a `Register` is a few KiB) must fit.
    pub max_register_bytes: u64,
    /// Connections that have not registered yet, in total.
    pub max_unregistered: usize,
    /// Connections that have not registered yet, from one IPv4 address or IPv6 /64.
    pub max_unregistered_per_address: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 16 << 20,
            max_dim: MAX_DIM,
            frames_per_sec: 20.0,
            frame_burst: 60.0,
            max_strikes: 20,
            max_dropped_frames: 200,
            max_register_bytes: 64 << 10,
            max_unregistered: 1024,
            max_unregistered_per_address: 16,
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
    /// A number that must be positive is 0, negative or not finite (the key, e.g.
    /// `scoring.top_workers`).
    #[error("{0} must be a positive number")]
    NotPositive(&'static str),
    /// A factor outside `[0, 1]` (or not finite).
    #[error("{0} must be within [0, 1], got {1}")]
    OutOfRange(&'static str, f64),
    /// `scoring.lease_weight + scoring.challenge_weight` is not 1.
    #[error("scoring.lease_weight + scoring.challenge_weight must be 1, got {0}")]
    WeightSum(f64),
    /// A list names a value twice (a typo for another one, most likely): (key, value).
    #[error("{0} lists {1} twice")]
    Duplicate(&'static str, &'static str),
    /// An entry of a list needs a non-empty name (`timing.gpus`: one would match every GPU).
    #[error("{0} entries need a non-empty name")]
    EmptyName(&'static str),
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

    /// The hotkeys trusted to sign lease reports, parsed.
    pub fn lease_signer_keys(&self) -> Result<Vec<PublicKey>, ConfigError> {
        self.leases.trusted_signers.iter().map(|s| parse_public_key(s)).collect()
    }

    /// Checks ranges and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.consensus.validate()?;
        self.market.validate()?;
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
        for n in [s.cpu_n, s.cpu_k, s.gpu_n, s.gpu_k] {
            if n == 0 || n > self.limits.max_dim.min(MAX_DIM) {
                return Err(ConfigError::Invalid(format!(
                    "challenge size {n} is outside 1..={}",
                    self.limits.max_dim.min(MAX_DIM)
                )));
            }
        }
        let limits = self.wire_limits();
        for (key, rows) in
            [("sampled_rows", s.sampled_rows), ("fp32_sampled_rows", s.fp32_sampled_rows)]
        {
            if !(1..=limits.max_open_rows).contains(&rows) {
                return Err(ConfigError::Invalid(format!(
                    "schedule.{key} = {rows} is outside 1..={}: an open request lists at most {} \
                     rows (SPEC §8.4)",
                    limits.max_open_rows, limits.max_open_rows
                )));
            }
        }
        // Every challenge size must open at least one row within our own frame limit.
        for n in [s.cpu_n, s.gpu_n] {
            if wire::max_open_rows(Shape::square(n), &limits) == 0 {
                return Err(ConfigError::Invalid(format!(
                    "limits.max_frame_bytes = {} cannot hold the opening of one row of a \
                     challenge of size {n} ({} bytes)",
                    limits.max_frame_bytes,
                    wire::openings_frame_bound(Shape::square(n), 1)
                )));
            }
        }
        if let Some(url) = &self.announce.url {
            url.parse::<veribench_chain::WssUrl>()
                .map_err(|e| ConfigError::Invalid(format!("announce.url: {e}")))?;
        }
        let a = &self.announce;
        if !positive(a.check_secs) || !positive(a.block_secs) {
            return bad("announce.check_secs and announce.block_secs must be positive");
        }
        let ttl = veribench_chain::ANNOUNCEMENT_TTL_BLOCKS;
        if !(1..ttl).contains(&a.refresh_blocks) {
            return Err(ConfigError::Invalid(format!(
                "announce.refresh_blocks = {} is outside 1..{ttl}: workers stop trusting an \
                 announcement {ttl} blocks old",
                a.refresh_blocks
            )));
        }
        if !positive(s.busy_retry_secs) {
            return bad("schedule.busy_retry_secs must be positive");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("tls_cert and tls_key must be given together");
        }
        let l = &self.liveness;
        if !positive(l.offline_after_secs - l.heartbeat_secs) || !positive(l.ping_secs) {
            return bad("liveness.offline_after_secs must exceed heartbeat_secs, ping_secs be > 0");
        }
        self.lease_signer_keys()?;
        self.chain.network()?;
        if !positive(self.chain.metagraph_refresh_secs) || !positive(self.weights.interval_secs) {
            return bad("chain.metagraph_refresh_secs and weights.interval_secs must be positive");
        }
        let st = &self.storage;
        if !positive(st.acquire_timeout_secs)
            || !positive(st.probe_timeout_secs)
            || !positive(st.shutdown_grace_secs)
        {
            return bad("storage timeouts must be positive");
        }
        if !positive(self.claims.expiry_secs) {
            return bad("claims.expiry_secs must be positive");
        }
        if !positive(self.leases.max_skew_secs) {
            return bad("leases.max_skew_secs must be positive");
        }
        let r = &self.refusals;
        if !positive(r.retention_days) || r.max_rows == 0 || r.max_buffered == 0 {
            return bad("refusals.retention_days, max_rows and max_buffered must be positive");
        }
        self.scoring.validate()?;
        self.timing.validate()?;
        let l = &self.limits;
        if l.max_register_bytes < 4096
            || l.max_unregistered == 0
            || l.max_unregistered_per_address == 0
        {
            return bad(
                "limits.max_register_bytes must be at least 4096 and the unregistered caps at least 1",
            );
        }
        Ok(())
    }

    /// The wire limits this coordinator decodes frames with: the configured frame size and
    /// matrix dimension, the protocol's defaults otherwise.
    pub fn wire_limits(&self) -> Limits {
        let l = &self.limits;
        Limits { max_frame_bytes: l.max_frame_bytes, max_dim: l.max_dim, ..Limits::default() }
    }

    /// The configuration as TOML with secrets (a database password) redacted, for the log.
    pub fn redacted(&self) -> String {
        let mut shown = self.clone();
        shown.db = redact_url(&self.db);
        shown.leases.tokens = self.leases.tokens.iter().map(|_| "***".to_owned()).collect();
        shown.http.status_token = self.http.status_token.as_ref().map(|_| "***".to_owned());
        toml::to_string(&shown).unwrap_or_else(|e| format!("<unprintable config: {e}>"))
    }
}

/// Parses a public key given as SS58 or as 64 hex digits.
pub fn parse_public_key(s: &str) -> Result<PublicKey, ConfigError> {
    veribench_wallet::parse_public_key(s).map_err(|e| ConfigError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's example configuration is a real one: every key it shows exists and parses.
    #[test]
    fn the_readme_example_configuration_parses() {
        let readme = include_str!("../../README.md");
        let start = readme.find("```toml\nws_listen").expect("the README's coordinator example");
        let body = &readme[start + "```toml\n".len()..];
        let example = &body[..body.find("```").expect("the example's end")];
        let parsed: CoordinatorConfig = toml::from_str(example).expect("the README example parses");
        assert_eq!(parsed.timing.max_rtt_credit_ms, TimingConfig::default().max_rtt_credit_ms);
        assert_eq!(parsed.limits.max_register_bytes, InputLimits::default().max_register_bytes);
    }

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
        let mut c = CoordinatorConfig::default();
        c.leases.trusted_signers = vec!["not a key".into()];
        assert!(c.validate().is_err());
        let mut c = CoordinatorConfig::default();
        c.chain.network = "mainnet".into();
        assert!(c.validate().is_err());
        let mut c = CoordinatorConfig::default();
        c.scoring.lease_weight = 0.5;
        assert!(c.validate().is_err(), "lease + challenge weights must sum to 1");
    }

    #[test]
    fn sampled_rows_must_fit_one_open_request() {
        let with_rows = |rows| {
            let mut c = CoordinatorConfig::default();
            c.schedule.sampled_rows = rows;
            c.validate()
        };
        with_rows(1).expect("one row");
        with_rows(1024).expect("the wire's most");
        for rows in [0, 1025, u32::MAX] {
            let err = with_rows(rows).expect_err("out of range").to_string();
            assert!(err.contains("schedule.sampled_rows") && err.contains("1..=1024"), "{err}");
        }
        let mut c = CoordinatorConfig::default();
        c.schedule.fp32_sampled_rows = 0;
        let err = c.validate().expect_err("out of range").to_string();
        assert!(err.contains("schedule.fp32_sampled_rows"), "{err}");
        assert_eq!(c.schedule.sampled_rows_for(Mode::Int8), 460);
        assert_eq!(c.schedule.sampled_rows_for(Mode::Fp32), 0);
        // A frame limit too small for one row of the configured challenges is refused too.
        let mut c = CoordinatorConfig::default();
        c.limits.max_frame_bytes = 1024;
        let err = c.validate().expect_err("no row fits").to_string();
        assert!(err.contains("limits.max_frame_bytes"), "{err}");
    }

    #[test]
    fn announcement_and_busy_retry_timings_are_checked() {
        let ttl = veribench_chain::ANNOUNCEMENT_TTL_BLOCKS;
        let with = |f: &dyn Fn(&mut CoordinatorConfig)| {
            let mut c = CoordinatorConfig::default();
            f(&mut c);
            c.validate()
        };
        with(&|c| c.announce.refresh_blocks = 1).expect("one block");
        with(&|c| c.announce.refresh_blocks = ttl - 1).expect("just under the TTL");
        for blocks in [0, ttl, u64::MAX] {
            let err = with(&|c| c.announce.refresh_blocks = blocks).expect_err("out of range");
            assert!(err.to_string().contains("announce.refresh_blocks"), "{err}");
        }
        assert!(with(&|c| c.announce.check_secs = 0.0).is_err());
        assert!(with(&|c| c.announce.block_secs = f64::NAN).is_err());
        assert!(with(&|c| c.schedule.busy_retry_secs = -1.0).is_err());
        let c: CoordinatorConfig =
            toml::from_str("[announce]\ncheck_secs = 5.0\n").expect("a partial table parses");
        assert_eq!(c.announce.refresh_blocks, veribench_chain::ANNOUNCEMENT_REFRESH_BLOCKS);
        assert_eq!((c.announce.check_secs, c.announce.block_secs), (5.0, 12.0));
        assert_eq!(c.schedule.busy_retry_secs, 5.0);
        assert_eq!(c.schedule.busy_retries, 3);
    }

    #[test]
    fn lease_tokens_are_redacted() {
        let mut c = CoordinatorConfig::default();
        c.leases.tokens = vec!["s3cret-token".into()];
        c.http.status_token = Some("st4tus-token".into());
        let shown = c.redacted();
        assert!(!shown.contains("s3cret") && !shown.contains("st4tus"), "{shown}");
        assert!(shown.contains("***"));
    }

    #[test]
    fn database_passwords_are_redacted_even_with_an_at_sign() {
        let c = CoordinatorConfig {
            db: "postgres://postgres:Pw1@LeakedTail99@127.0.0.1:5432/db".into(),
            ..Default::default()
        };
        let shown = c.redacted();
        assert!(!shown.contains("Pw1") && !shown.contains("LeakedTail99"), "{shown}");
        assert!(shown.contains("postgres://postgres:***@127.0.0.1:5432/db"), "{shown}");
        let c = CoordinatorConfig { db: "sqlite://data/c.db".into(), ..Default::default() };
        assert!(c.redacted().contains("\"sqlite://data/c.db\""));
    }
}
