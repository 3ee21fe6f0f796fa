//! What a coordinator announces on chain so that workers can find it and trust it: its public
//! `wss://` URL, the fingerprint of the certificate it serves and the wire version it speaks,
//! encoded by [`veribench_chain::Endpoint`] into one `Commitments.set_commitment` raw field
//! signed by its hotkey.
//!
//! `veribench-coordinator announce --dry-run` prints what would be written; without
//! `--dry-run` it writes it once. `run` keeps it fresh ([`Announcer`]): a worker stops trusting
//! an announcement [`veribench_chain::ANNOUNCEMENT_TTL_BLOCKS`] old, so a running coordinator
//! writes it again when it is `refresh_blocks` old, when it changed (a new URL or
//! certificate), or when it is missing.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use veribench_chain::{
    ANNOUNCEMENT_REFRESH_BLOCKS, CertFingerprint, Chain, ChainError, Commitment, Endpoint,
    EndpointError, FingerprintParseError, NetUid, TxReceipt, UrlError, WssUrl,
};
use veribench_protocol::wire::PROTOCOL_VERSION;
use veribench_support::{RetryPolicy, retry};
use veribench_wallet::Keypair;

use crate::config::secs;
use crate::metrics::Metrics;

/// `[announce]`: the endpoint this coordinator publishes, and how `run` keeps it fresh.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnnounceConfig {
    /// The address workers connect to from the internet, `wss://host[:port][/path]`: the
    /// WebSocket listener, or the TLS proxy in front of it. Unset: nothing is announced.
    pub url: Option<String>,
    /// Which certificate a worker must see there ([`FingerprintSetting`]).
    pub fingerprint: FingerprintSetting,
    /// Seconds between two reads of the announcement on chain by `run`.
    pub check_secs: f64,
    /// Age in blocks at which `run` writes an unchanged announcement again, in
    /// `1..ANNOUNCEMENT_TTL_BLOCKS` (default: half the TTL, twelve hours of retries left).
    pub refresh_blocks: u64,
    /// Seconds per block, to wait out a chain rate limit of so many blocks.
    pub block_secs: f64,
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        Self {
            url: None,
            fingerprint: FingerprintSetting::default(),
            check_secs: 60.0,
            refresh_blocks: ANNOUNCEMENT_REFRESH_BLOCKS,
            block_secs: 12.0,
        }
    }
}

/// How the announced certificate is pinned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FingerprintSetting {
    /// `"auto"`: the SHA-256 of the first certificate of `tls_cert` when the coordinator
    /// terminates TLS itself; none when a proxy does (workers then check a WebPKI chain).
    #[default]
    Auto,
    /// `"none"`: workers check a WebPKI chain for the URL's host.
    None,
    /// 64 hex digits: pin this certificate (a proxy's self-signed certificate, say).
    Pinned(CertFingerprint),
}

impl FromStr for FingerprintSetting {
    type Err = FingerprintParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "auto" => Ok(Self::Auto),
            "none" => Ok(Self::None),
            hex => hex.parse().map(Self::Pinned),
        }
    }
}

impl fmt::Display for FingerprintSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::None => f.write_str("none"),
            Self::Pinned(fingerprint) => fmt::Display::fmt(fingerprint, f),
        }
    }
}

impl TryFrom<String> for FingerprintSetting {
    type Error = FingerprintParseError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<FingerprintSetting> for String {
    fn from(setting: FingerprintSetting) -> Self {
        setting.to_string()
    }
}

/// Why there is no announcement to make.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    /// `announce.url` is unset.
    #[error("announce.url is not set: give the public wss:// address workers connect to")]
    NoUrl,
    /// `announce.url` is not a `wss://` URL an endpoint can carry.
    #[error("announce.url: {0}")]
    Url(#[from] UrlError),
    /// The certificate to fingerprint cannot be read.
    #[error("cannot fingerprint the certificate {path}: {reason}")]
    Certificate {
        /// The `tls_cert` file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The announcement does not fit a commitment.
    #[error("the announcement cannot be encoded: {0}")]
    Encoding(#[from] EndpointError),
    /// Writing it to chain failed.
    #[error("set_commitment failed: {0}")]
    Chain(#[from] ChainError),
}

/// The SHA-256 of the first certificate (the leaf) of a PEM chain.
pub fn certificate_fingerprint(pem: &Path) -> Result<CertFingerprint, AnnounceError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let fail = |reason: String| AnnounceError::Certificate { path: pem.to_owned(), reason };
    let first = CertificateDer::pem_file_iter(pem)
        .map_err(|e| fail(e.to_string()))?
        .next()
        .ok_or_else(|| fail("no CERTIFICATE block".to_owned()))?
        .map_err(|e| fail(e.to_string()))?;
    Ok(CertFingerprint::of_der(first.as_ref()))
}

/// The endpoint `announce` describes: the URL, the fingerprint as configured (`tls_cert` is
/// the coordinator's own certificate, for [`FingerprintSetting::Auto`]) and this build's wire
/// version.
pub fn endpoint(
    announce: &AnnounceConfig,
    tls_cert: Option<&Path>,
) -> Result<Endpoint, AnnounceError> {
    let url: WssUrl = announce.url.as_deref().ok_or(AnnounceError::NoUrl)?.parse()?;
    let fingerprint = match (&announce.fingerprint, tls_cert) {
        (FingerprintSetting::Pinned(pinned), _) => Some(*pinned),
        (FingerprintSetting::Auto, Some(cert)) => Some(certificate_fingerprint(cert)?),
        (FingerprintSetting::Auto, None) | (FingerprintSetting::None, _) => None,
    };
    let endpoint = Endpoint { url, fingerprint, protocol_version: PROTOCOL_VERSION };
    // Refuse now what the chain would refuse or truncate.
    endpoint.encode()?;
    Ok(endpoint)
}

/// Writes `endpoint` as `signer`'s commitment on `netuid`.
pub async fn publish(
    chain: &dyn Chain,
    signer: &Keypair,
    netuid: NetUid,
    endpoint: &Endpoint,
) -> Result<TxReceipt, AnnounceError> {
    let bytes = endpoint.encode()?;
    Ok(chain.set_commitment(signer, netuid, &bytes).await?)
}

/// Why the announcement on chain must be written again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stale {
    /// The hotkey has no commitment.
    Missing,
    /// The commitment is not this endpoint (another URL, certificate or wire version, or not
    /// an announcement at all).
    Different,
    /// It is this endpoint, `refresh_blocks` old or older.
    Old,
}

impl Stale {
    /// For the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Stale::Missing => "missing",
            Stale::Different => "different",
            Stale::Old => "old",
        }
    }
}

/// Whether `current` (the hotkey's commitment at block `now`) must be replaced by `endpoint`.
pub fn staleness(
    current: Option<&Commitment>,
    endpoint: &Endpoint,
    now: u64,
    refresh_blocks: u64,
) -> Option<Stale> {
    let Some(current) = current else { return Some(Stale::Missing) };
    if Endpoint::decode(&current.data).ok().as_ref() != Some(endpoint) {
        return Some(Stale::Different);
    }
    (now.saturating_sub(current.block) >= refresh_blocks).then_some(Stale::Old)
}

/// What one check of the announcement did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checked {
    /// The announcement on chain is this endpoint, committed at `block`.
    Current {
        /// Its block.
        block: u64,
    },
    /// It was written.
    Announced {
        /// Why.
        why: Stale,
        /// Where it landed.
        receipt: TxReceipt,
    },
    /// The chain refused the write for `blocks_left` more blocks.
    RateLimited {
        /// Why it was due.
        why: Stale,
        /// Blocks to wait.
        blocks_left: u64,
    },
}

/// Keeps this coordinator's endpoint announced while `run` runs.
#[derive(Debug)]
pub struct Announcer {
    chain: Arc<dyn Chain>,
    signer: Keypair,
    netuid: NetUid,
    endpoint: Endpoint,
    config: AnnounceConfig,
    retry: RetryPolicy,
}

impl Announcer {
    /// Announces `endpoint` for `signer` on `netuid` as `config` says; transient chain failures
    /// are retried with `retry`.
    pub fn new(
        chain: Arc<dyn Chain>,
        signer: Keypair,
        netuid: NetUid,
        endpoint: Endpoint,
        config: AnnounceConfig,
        retry: RetryPolicy,
    ) -> Self {
        Self { chain, signer, netuid, endpoint, config, retry }
    }

    /// Reads the best block and the hotkey's commitment, and writes the endpoint if
    /// [`staleness`] says so. A rate limit is an outcome, not an error (and is not retried
    /// here: waiting it out is the caller's); other transient failures are retried with the
    /// policy; final ones (a hotkey not registered) are returned.
    pub async fn check(&self) -> Result<Checked, ChainError> {
        let hotkey = self.signer.public();
        let chain = self.chain.as_ref();
        let now = retry(&self.retry, "current_block", || chain.current_block()).await?;
        let current =
            retry(&self.retry, "commitment", || chain.commitment(self.netuid, &hotkey)).await?;
        let Some(why) =
            staleness(current.as_ref(), &self.endpoint, now, self.config.refresh_blocks)
        else {
            return Ok(Checked::Current { block: current.map_or(0, |c| c.block) });
        };
        let bytes = self.endpoint.encode().map_err(|e| ChainError::Rejected(e.to_string()))?;
        let written = retry(&self.retry, "set_commitment", || async {
            match chain.set_commitment(&self.signer, self.netuid, &bytes).await {
                Err(ChainError::RateLimited { blocks_left }) => Ok(Err(blocks_left)),
                other => other.map(Ok),
            }
        })
        .await?;
        Ok(match written {
            Ok(receipt) => Checked::Announced { why, receipt },
            Err(blocks_left) => Checked::RateLimited { why, blocks_left },
        })
    }

    /// Checks at once and every `check_secs` until `stop`; a rate-limited write is tried again
    /// after about the blocks the chain asked for, and a failed check at the next one.
    pub async fn run(self, metrics: &Metrics, stop: CancellationToken) {
        let period = secs(self.config.check_secs);
        let fingerprint = self.endpoint.fingerprint.map(|f| f.to_string());
        let url = self.endpoint.url.as_str();
        loop {
            let checked = tokio::select! {
                _ = stop.cancelled() => return,
                checked = self.check() => checked,
            };
            let wait = match checked {
                Ok(Checked::Current { block }) => {
                    metrics.announced_block.store(block, Ordering::Relaxed);
                    tracing::debug!(url, block, "the announcement on chain is current");
                    period
                }
                Ok(Checked::Announced { why, receipt }) => {
                    metrics.announced_block.store(receipt.block, Ordering::Relaxed);
                    metrics.announcements.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(url, fingerprint = fingerprint.as_deref().unwrap_or("none"), block = receipt.block, extrinsic = %receipt.hash, why = why.as_str(), "endpoint announced on chain");
                    period
                }
                Ok(Checked::RateLimited { why, blocks_left }) => {
                    metrics.announce_rate_limited.fetch_add(1, Ordering::Relaxed);
                    // At least one block: the chain's count is of whole blocks to come.
                    let wait = secs(self.config.block_secs * blocks_left.max(1) as f64);
                    tracing::warn!(
                        url,
                        why = why.as_str(),
                        blocks_left,
                        ?wait,
                        "announcement rate limited by the chain; trying again then"
                    );
                    wait
                }
                Err(e) => {
                    tracing::error!(url, error = %e, netuid = self.netuid.0, "cannot keep the endpoint announced; trying again at the next check");
                    period
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use veribench_chain::LocalChain;

    use super::*;

    /// A PEM chain of two CERTIFICATE blocks, `b"leaf certificate"` then `b"issuer"`, in
    /// base64 (the parser decodes blocks, it does not parse the DER).
    fn pem_chain(dir: &Path) -> PathBuf {
        let block =
            |b64: &str| format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n");
        let path = dir.join("cert.pem");
        let text = block("bGVhZiBjZXJ0aWZpY2F0ZQ==") + &block("aXNzdWVy");
        std::fs::write(&path, text).expect("write pem");
        path
    }

    #[test]
    fn the_fingerprint_follows_the_setting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = pem_chain(dir.path());
        let leaf = CertFingerprint::of_der(b"leaf certificate");
        let url = Some("wss://validator.example:7799".to_owned());
        let with =
            |fingerprint| AnnounceConfig { url: url.clone(), fingerprint, ..Default::default() };

        let auto = endpoint(&with(FingerprintSetting::Auto), Some(&cert)).expect("auto");
        assert_eq!(auto.fingerprint, Some(leaf));
        assert_eq!(auto.protocol_version, PROTOCOL_VERSION);
        assert_eq!(auto.url.as_str(), "wss://validator.example:7799");
        assert_eq!(
            endpoint(&with(FingerprintSetting::Auto), None).expect("proxy").fingerprint,
            None
        );
        assert_eq!(
            endpoint(&with(FingerprintSetting::None), Some(&cert)).expect("none").fingerprint,
            None
        );
        let pinned = CertFingerprint::of_der(b"the proxy's");
        let got = endpoint(&with(FingerprintSetting::Pinned(pinned)), Some(&cert)).expect("pinned");
        assert_eq!(got.fingerprint, Some(pinned));
    }

    #[test]
    fn what_cannot_be_announced_is_a_typed_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let none = AnnounceConfig::default();
        assert!(matches!(endpoint(&none, None), Err(AnnounceError::NoUrl)));
        let http = AnnounceConfig { url: Some("http://x.example".into()), ..Default::default() };
        assert!(matches!(endpoint(&http, None), Err(AnnounceError::Url(_))));
        let long = format!("wss://{}.example", "a".repeat(120));
        let long = AnnounceConfig { url: Some(long), ..Default::default() };
        assert!(matches!(endpoint(&long, None), Err(AnnounceError::Encoding(_))));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no pem here\n").expect("write");
        let auto = AnnounceConfig { url: Some("wss://v.example".into()), ..Default::default() };
        assert!(matches!(endpoint(&auto, Some(&empty)), Err(AnnounceError::Certificate { .. })));
        assert!(matches!(
            endpoint(&auto, Some(&dir.path().join("missing.pem"))),
            Err(AnnounceError::Certificate { .. })
        ));
    }

    #[test]
    fn settings_read_from_toml_as_written() {
        let hex = "ab".repeat(32);
        for text in ["auto", "none", hex.as_str()] {
            let setting: FingerprintSetting = text.parse().expect("valid");
            assert_eq!(setting.to_string(), text);
        }
        assert!("sha256:ab".parse::<FingerprintSetting>().is_err());
        let config: AnnounceConfig =
            toml::from_str("url = \"wss://v.example\"\nfingerprint = \"none\"\n").expect("toml");
        assert_eq!(config.fingerprint, FingerprintSetting::None);
        assert!(toml::from_str::<AnnounceConfig>("fingerprint = \"abc\"\n").is_err());
    }

    /// Published on the file-backed chain, the commitment reads back as the same endpoint.
    #[tokio::test]
    async fn a_published_announcement_reads_back_from_the_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let chain = LocalChain::open(dir.path().join("chain.json")).expect("local chain");
        let (signer, _phrase) = Keypair::generate();
        let netuid = NetUid(1);
        let hotkey = signer.public();
        chain.register(netuid, hotkey, hotkey, 1000, true).expect("register");
        let announce = AnnounceConfig {
            url: Some("wss://validator.example/vb".into()),
            fingerprint: FingerprintSetting::Pinned(CertFingerprint::of_der(b"cert")),
            ..Default::default()
        };
        let endpoint = endpoint(&announce, None).expect("endpoint");
        publish(&chain, &signer, netuid, &endpoint).await.expect("published");
        let stored = chain.commitment(netuid, &hotkey).await.expect("read").expect("committed");
        assert_eq!(Endpoint::decode(&stored.data).expect("an endpoint"), endpoint);
    }

    fn endpoint_at(url: &str) -> Endpoint {
        let config = AnnounceConfig { url: Some(url.into()), ..Default::default() };
        endpoint(&config, None).expect("endpoint")
    }

    #[test]
    fn an_announcement_is_stale_when_missing_different_or_old() {
        let ours = endpoint_at("wss://v.example");
        let at = |block, e: &Endpoint| Commitment { block, data: e.encode().expect("encodes") };
        assert_eq!(staleness(None, &ours, 10, 100), Some(Stale::Missing));
        let other = at(5, &endpoint_at("wss://w.example"));
        assert_eq!(staleness(Some(&other), &ours, 10, 100), Some(Stale::Different));
        let circuit = Commitment { block: 5, data: vec![7; 32] };
        assert_eq!(staleness(Some(&circuit), &ours, 10, 100), Some(Stale::Different));
        assert_eq!(staleness(Some(&at(5, &ours)), &ours, 104, 100), None);
        assert_eq!(staleness(Some(&at(5, &ours)), &ours, 105, 100), Some(Stale::Old));
        // A commitment from a later block than the one read (another node) is not old.
        assert_eq!(staleness(Some(&at(50, &ours)), &ours, 10, 1), None);
    }

    const FAST_RETRY: RetryPolicy =
        RetryPolicy { attempts: 3, initial_delay_ms: 1, max_delay_ms: 2 };

    fn local(dir: &Path) -> (LocalChain, Keypair) {
        let chain = LocalChain::open(dir.join("chain.json")).expect("local chain");
        let signer = Keypair::from_seed(&[3; 32]);
        chain.register(NetUid(1), signer.public(), signer.public(), 1000, true).expect("register");
        (chain, signer)
    }

    /// One check at a time: the first writes, the next finds it current, a changed endpoint
    /// meets the chain's rate limit, an old one is written again, an unregistered hotkey fails.
    #[tokio::test]
    async fn checks_write_only_what_is_stale_and_report_rate_limits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (chain, signer) = local(dir.path());
        let config = AnnounceConfig { refresh_blocks: 1000, ..Default::default() };
        let announcer = |url: &str, signer: &Keypair| {
            Announcer::new(
                Arc::new(chain.clone()),
                signer.clone(),
                NetUid(1),
                endpoint_at(url),
                config.clone(),
                FAST_RETRY,
            )
        };
        let ours = announcer("wss://v.example", &signer);
        let Checked::Announced { why: Stale::Missing, receipt } =
            ours.check().await.expect("check")
        else {
            panic!("the first check writes");
        };
        assert_eq!(ours.check().await.expect("check"), Checked::Current { block: receipt.block });

        let moved = announcer("wss://moved.example", &signer).check().await.expect("check");
        assert_eq!(moved, Checked::RateLimited { why: Stale::Different, blocks_left: 100 });
        chain.advance_blocks(1000).expect("advance");
        let Checked::Announced { why: Stale::Old, receipt: again } =
            ours.check().await.expect("check")
        else {
            panic!("an announcement refresh_blocks old is written again");
        };
        assert!(again.block >= receipt.block + 1000, "{receipt:?} then {again:?}");

        let stranger = announcer("wss://v.example", &Keypair::from_seed(&[9; 32])).check().await;
        assert!(matches!(stranger, Err(ChainError::NotRegistered(..))), "{stranger:?}");
    }

    /// A coordinator on loopback with its database in `dir`, driving `chain`.
    fn coordinator_config(dir: &Path, chain: &LocalChain) -> crate::CoordinatorConfig {
        let mut config = crate::CoordinatorConfig {
            ws_listen: ([127, 0, 0, 1], 0).into(),
            http_listen: ([127, 0, 0, 1], 0).into(),
            db: format!("sqlite://{}", dir.join("c.db").display()),
            ..Default::default()
        };
        config.chain.network = format!("file:{}", chain.path().display());
        config
    }

    /// A coordinator started with `announce.url` writes its endpoint; one whose first write is
    /// rate limited waits the blocks out (one refusal, not one per check) and writes it then;
    /// once it is `refresh_blocks` old it is written again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_running_coordinator_keeps_its_endpoint_announced() {
        const BLOCK_MS: u64 = 50;
        let dir = tempfile::tempdir().expect("tempdir");
        let (chain, signer) = local(dir.path());
        chain.set_block_ms(BLOCK_MS).expect("fast blocks");
        chain.configure_subnet(NetUid(1), |s| s.commitment_rate_limit_blocks = 30).expect("limit");
        // An earlier announcement of another URL, just written: the first write must wait
        // 30 blocks (1.5 s).
        let old = endpoint_at("wss://old.example").encode().expect("encodes");
        let first = chain.set_commitment(&signer, NetUid(1), &old).await.expect("old endpoint");

        let mut config = coordinator_config(dir.path(), &chain);
        config.announce = AnnounceConfig {
            url: Some("wss://v.example/vb".into()),
            fingerprint: FingerprintSetting::None,
            check_secs: 0.1,
            refresh_blocks: 2000,
            block_secs: BLOCK_MS as f64 / 1000.0,
        };
        let running = crate::start(config, signer.clone(), Arc::new(chain.clone()))
            .await
            .expect("the coordinator starts");
        let ours = endpoint_at("wss://v.example/vb");
        let hotkey = signer.public();
        let announced = |at_least: u64| {
            let chain = chain.clone();
            let ours = ours.clone();
            async move {
                for _ in 0..100 {
                    let c = chain.commitment(NetUid(1), &hotkey).await.expect("read");
                    if let Some(c) = c.filter(|c| c.block >= at_least)
                        && Endpoint::decode(&c.data).ok() == Some(ours.clone())
                    {
                        return c;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                panic!("not announced within 5 s");
            }
        };
        let written = announced(0).await;
        assert!(written.block >= first.block + 30, "written within the rate limit: {written:?}");
        let metrics = running.coordinator.metrics();
        let refused = metrics.announce_rate_limited.load(Ordering::Relaxed);
        assert!((1..=2).contains(&refused), "rate-limited writes: {refused}");

        chain.advance_blocks(2000).expect("advance past refresh_blocks");
        let refreshed = announced(written.block + 2000).await;
        assert!(metrics.announcements.load(Ordering::Relaxed) >= 2);
        let shown = metrics.announced_block.load(Ordering::Relaxed);
        assert!(shown >= refreshed.block, "gauge {shown}, announcement {refreshed:?}");
        running.shutdown().await;
    }

    #[tokio::test]
    async fn an_endpoint_that_cannot_be_announced_stops_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (chain, signer) = local(dir.path());
        let mut config = coordinator_config(dir.path(), &chain);
        config.announce.url = Some(format!("wss://{}.example", "a".repeat(120)));
        let err = crate::start(config, signer, Arc::new(chain)).await.expect_err("refused");
        assert!(err.to_string().contains("announce"), "{err}");
    }
}
