//! Newtypes for every identifier and secret-ish value that crosses a boundary, so that a row index
//! cannot be passed where a challenge id is expected and a seed is never printed by accident.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Formats bytes as lowercase hex.
fn hex(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

/// Hex `Display` and `Name(hex)` `Debug` for a byte-array newtype.
macro_rules! hex_fmt {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                hex(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "("))?;
                hex(&self.0, f)?;
                write!(f, ")")
            }
        }
    };
}

/// Parses 64 hex digits into 32 bytes.
fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        *o = u8::try_from(hi << 4 | lo).ok()?;
    }
    Some(out)
}

macro_rules! bytes32_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Parses 64 hex digits (the form `Display` prints).
            pub fn from_hex(s: &str) -> Option<Self> {
                parse_hex32(s).map(Self)
            }
        }

        impl hex32::Hex32 for $name {
            fn from_hex(s: &str) -> Option<Self> {
                Self::from_hex(s)
            }
        }

        hex_fmt!($name);
    };
}

/// `#[serde(with = "veribench_protocol::ids::hex32")]`: a 32-byte id as its 64 hex digits, the
/// form for files people read and edit (JSON, TOML). The derived encoding is a byte array, which
/// is what the wire format (postcard) wants.
pub mod hex32 {
    use std::fmt::Display;

    use serde::{Deserialize, Deserializer, Serializer};

    /// A 32-byte id that prints and parses as 64 hex digits.
    pub trait Hex32: Display + Sized {
        /// Parses 64 hex digits.
        fn from_hex(s: &str) -> Option<Self>;
    }

    /// Writes the id's 64 hex digits.
    pub fn serialize<T: Hex32, S: Serializer>(id: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    /// Reads 64 hex digits; anything else is a serde error naming what was expected.
    pub fn deserialize<'de, T: Hex32, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        let text = String::deserialize(d)?;
        T::from_hex(&text).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

bytes32_newtype!(
    /// The 256-bit seed of a challenge, drawn from the coordinator's CSPRNG when the challenge is made.
    Seed
);
bytes32_newtype!(
    /// The seed of one device's matrices: `derive(Seed, DeviceKey)`, so one computation cannot
    /// answer the challenges of two devices.
    DeviceSeed
);
bytes32_newtype!(
    /// A Merkle leaf: the domain-separated BLAKE3 hash of one row of the product.
    Leaf
);
bytes32_newtype!(
    /// The Merkle root a worker commits to before it learns which rows will be sampled.
    Root
);

bytes32_newtype!(
    /// An sr25519 public key (a hotkey, a worker key or a coordinator key).
    PublicKey
);

/// An sr25519 signature. Encoded as a byte string whose length must be 64 (serde derives
/// nothing for `[u8; 64]`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "serde_bytes")] pub [u8; 64]);
hex_fmt!(Signature);

/// Identifies one challenge at its coordinator. Never reused by a coordinator.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChallengeId(pub u64);

impl fmt::Display for ChallengeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for ChallengeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChallengeId({})", self.0)
    }
}

/// A stable name for one compute device: a GPU's UUID (`GPU-…`), or `cpu:<machine id>` for a
/// CPU. It is mixed into the device seed, so it is part of what a worker proves.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceKey(String);

impl TryFrom<String> for DeviceKey {
    type Error = &'static str;

    fn try_from(key: String) -> Result<Self, Self::Error> {
        Self::new(key).ok_or("device key must be 1 to 128 bytes")
    }
}

impl From<DeviceKey> for String {
    fn from(key: DeviceKey) -> Self {
        key.0
    }
}

impl DeviceKey {
    /// Longest device key accepted, in bytes: real ones (GPU UUIDs) are ~40.
    pub const MAX_LEN: usize = 128;

    /// Makes a device key; `None` when it is empty or longer than [`Self::MAX_LEN`] bytes.
    pub fn new(key: impl Into<String>) -> Option<Self> {
        let key = key.into();
        (!key.is_empty() && key.len() <= Self::MAX_LEN).then_some(Self(key))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceKey({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex32_fields_are_64_hex_digits_in_json_and_refuse_anything_else() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Entry {
            #[serde(with = "hex32")]
            key: PublicKey,
        }
        let entry = Entry { key: PublicKey([0xc4; 32]) };
        let text = serde_json::to_string(&entry).expect("serialises");
        assert_eq!(text, format!(r#"{{"key":"{}"}}"#, "c4".repeat(32)));
        assert_eq!(serde_json::from_str::<Entry>(&text).expect("parses"), entry);
        for bad in
            [r#"{"key":"c4"}"#, r#"{"key":7}"#, &format!(r#"{{"key":"{}"}}"#, "zz".repeat(32))]
        {
            assert!(serde_json::from_str::<Entry>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hex_round_trips() {
        let root = Root([0xab; 32]);
        assert_eq!(Root::from_hex(&root.to_string()), Some(root));
        assert_eq!(Root::from_hex("zz"), None);
        assert_eq!(Root::from_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn device_keys_are_bounded() {
        assert!(DeviceKey::new("").is_none());
        assert!(DeviceKey::new("x".repeat(DeviceKey::MAX_LEN + 1)).is_none());
        assert_eq!(DeviceKey::new("GPU-1").map(|k| k.to_string()), Some("GPU-1".into()));
    }
}
