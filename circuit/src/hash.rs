//! [`ArtifactHash`]: the SHA-256 that a miner commits on chain and a validator checks.
//!
//! A newtype rather than `[u8; 32]` or a hex `String`, so a hash read from the chain, a hash
//! computed from a downloaded file and a hash claimed in an offer all have one type, one parser
//! (exactly 64 hex digits, case-insensitive, printed lowercase) and one comparison.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// The SHA-256 of an artifact file (32 bytes; hex in text and JSON).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArtifactHash(pub [u8; 32]);

/// A string or a commitment that is not a SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a SHA-256: {0}")]
pub struct HashParseError(String);

impl ArtifactHash {
    /// The raw bytes, as committed on chain.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, the object-key prefix and the cache directory name.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The hash committed on chain: exactly 32 raw bytes.
    pub fn from_commitment(data: &[u8]) -> Result<Self, HashParseError> {
        <[u8; 32]>::try_from(data)
            .map(Self)
            .map_err(|_| HashParseError(format!("commitment of {} bytes, expected 32", data.len())))
    }

    /// The SHA-256 of everything `reader` yields.
    pub fn of_reader(mut reader: impl Read) -> std::io::Result<Self> {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(Self::from_hasher(hasher))
    }

    /// The SHA-256 of a file, read in 256 KiB blocks.
    pub fn of_file(path: &Path) -> std::io::Result<Self> {
        Self::of_reader(std::fs::File::open(path)?)
    }

    /// The SHA-256 of a byte slice.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// Finishes a running hasher.
    pub(crate) fn from_hasher(hasher: Sha256) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(hasher.finalize().as_slice());
        Self(out)
    }
}

impl FromStr for ArtifactHash {
    type Err = HashParseError;

    /// Exactly 64 hex digits, either case; a `0x` prefix is accepted.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.strip_prefix("0x").unwrap_or(s);
        if digits.len() != 64 {
            return Err(HashParseError(format!("{} hex digits, expected 64", digits.len())));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(digits, &mut out)
            .map_err(|e| HashParseError(format!("invalid hex ({e})")))?;
        Ok(Self(out))
    }
}

impl fmt::Display for ArtifactHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ArtifactHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArtifactHash({})", self.to_hex())
    }
}

impl Serialize for ArtifactHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ArtifactHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_and_round_trips() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let h = ArtifactHash::of_bytes(b"abc");
        assert_eq!(h.to_string(), abc);
        assert_eq!(ArtifactHash::of_reader(&b"abc"[..]).expect("read"), h);
        assert_eq!(abc.to_uppercase().parse::<ArtifactHash>(), Ok(h));
        assert_eq!(format!("0x{abc}").parse::<ArtifactHash>(), Ok(h));
        assert_eq!(ArtifactHash::from_commitment(h.as_bytes()), Ok(h));
        let json = serde_json::to_string(&h).expect("json");
        assert_eq!(json, format!("\"{abc}\""));
        assert_eq!(serde_json::from_str::<ArtifactHash>(&json).expect("parse"), h);
    }

    #[test]
    fn rejects_wrong_lengths_and_digits() {
        assert!("abcd".parse::<ArtifactHash>().is_err());
        assert!("zz".repeat(32).parse::<ArtifactHash>().is_err());
        assert!("é".repeat(32).parse::<ArtifactHash>().is_err());
        assert!(ArtifactHash::from_commitment(&[0; 31]).is_err());
        assert!(ArtifactHash::from_commitment(&[0; 64]).is_err());
        assert!(serde_json::from_str::<ArtifactHash>("\"00\"").is_err());
    }
}
