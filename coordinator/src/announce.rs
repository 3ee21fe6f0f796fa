//! What a coordinator announces on chain so that workers can find it and trust it: its public
//! `wss://` URL, the fingerprint of the certificate it serves and the wire version it speaks,
//! encoded by [`veribench_chain::Endpoint`] into one `Commitments.set_commitment` raw field
//! signed by its hotkey.
//!
//! `veribench-coordinator announce --dry-run` prints what would be written; without
//! `--dry-run` it writes it once. (Refreshing the announcement from `run` before it expires is
//! the next step of this work.)

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use veribench_chain::{
    CertFingerprint, Chain, ChainError, Endpoint, EndpointError, FingerprintParseError, NetUid,
    TxReceipt, UrlError, WssUrl,
};
use veribench_protocol::wire::PROTOCOL_VERSION;
use veribench_wallet::Keypair;

/// `[announce]`: the endpoint this coordinator publishes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnnounceConfig {
    /// The address workers connect to from the internet, `wss://host[:port][/path]`: the
    /// WebSocket listener, or the TLS proxy in front of it. Unset: nothing is announced.
    pub url: Option<String>,
    /// Which certificate a worker must see there ([`FingerprintSetting`]).
    pub fingerprint: FingerprintSetting,
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
        let with = |fingerprint| AnnounceConfig { url: url.clone(), fingerprint };

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
        };
        let endpoint = endpoint(&announce, None).expect("endpoint");
        publish(&chain, &signer, netuid, &endpoint).await.expect("published");
        let stored = chain.commitment(netuid, &hotkey).await.expect("read").expect("committed");
        assert_eq!(Endpoint::decode(&stored.data).expect("an endpoint"), endpoint);
    }
}
