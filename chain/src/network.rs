//! btcli's `--subtensor.network`, plus `file:PATH` for the embedded local chain.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Which chain to talk to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Network {
    /// Bittensor mainnet.
    Finney,
    /// Bittensor testnet.
    Test,
    /// A subtensor node on this machine (`ws://127.0.0.1:9944`), as btcli's `local`.
    Local,
    /// Any node endpoint, `ws://…` or `wss://…`.
    Url(String),
    /// The file-backed [`LocalChain`](crate::LocalChain) at this path: no node at all.
    File(PathBuf),
}

/// A `--subtensor.network` value that is none of the accepted forms.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown network {0:?}: expected finney, test, local, a ws:// or wss:// URL, \
     or file:PATH for the embedded local chain"
)]
pub struct NetworkParseError(pub String);

impl Network {
    /// The WebSocket endpoint of a node, or `None` for [`Network::File`].
    pub fn endpoint(&self) -> Option<&str> {
        match self {
            Self::Finney => Some("wss://entrypoint-finney.opentensor.ai:443"),
            Self::Test => Some("wss://test.finney.opentensor.ai:443"),
            Self::Local => Some("ws://127.0.0.1:9944"),
            Self::Url(url) => Some(url),
            Self::File(_) => None,
        }
    }
}

impl FromStr for Network {
    type Err = NetworkParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s {
            "finney" => Ok(Self::Finney),
            "test" => Ok(Self::Test),
            "local" => Ok(Self::Local),
            _ if s.starts_with("ws://") || s.starts_with("wss://") => Ok(Self::Url(s.to_owned())),
            _ => match s.strip_prefix("file:") {
                Some(path) if !path.is_empty() => Ok(Self::File(PathBuf::from(path))),
                _ => Err(NetworkParseError(s.to_owned())),
            },
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Finney => f.write_str("finney"),
            Self::Test => f.write_str("test"),
            Self::Local => f.write_str("local"),
            Self::Url(url) => f.write_str(url),
            Self::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btcli_names_urls_and_files_parse() {
        assert_eq!("finney".parse(), Ok(Network::Finney));
        assert_eq!("test".parse(), Ok(Network::Test));
        assert_eq!(
            "local".parse::<Network>().map(|n| n.endpoint().map(str::to_owned)),
            Ok(Some("ws://127.0.0.1:9944".to_owned()))
        );
        assert_eq!("wss://node:443".parse(), Ok(Network::Url("wss://node:443".into())));
        assert_eq!("file:/tmp/c.json".parse(), Ok(Network::File("/tmp/c.json".into())));
        for bad in ["", "mainnet", "http://node", "file:"] {
            assert!(bad.parse::<Network>().is_err(), "{bad:?} must be refused");
        }
        let file: Network = "file:x.json".parse().expect("parses");
        assert_eq!(file.to_string(), "file:x.json");
        assert_eq!(file.endpoint(), None);
    }
}
