//! SS58 addresses, the form in which substrate chains (Bittensor among them) print public keys.
//!
//! Only the one-byte prefix form is supported (prefixes 0 to 63, which includes Bittensor's 42):
//! `base58(prefix ‖ public key ‖ blake2b-512("SS58PRE" ‖ prefix ‖ public key)[..2])`.

use blake2::{Blake2b512, Digest};
use veribench_protocol::PublicKey;

use crate::error::{Result, WalletError};

/// The SS58 prefix of Bittensor addresses (substrate's generic prefix, "5…" addresses).
pub const BITTENSOR_SS58_PREFIX: u16 = 42;

/// Prefixes from this value on take two bytes, which this crate does not support.
const ONE_BYTE_PREFIX_LIMIT: u16 = 64;
/// Bytes of checksum appended to a 32-byte public key.
const CHECKSUM_LEN: usize = 2;
/// Decoded length: prefix, key, checksum.
const DECODED_LEN: usize = 1 + 32 + CHECKSUM_LEN;

/// The checksum of `prefix ‖ public key`.
fn checksum(body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let hash = Blake2b512::new().chain_update(b"SS58PRE").chain_update(body).finalize();
    [hash[0], hash[1]]
}

/// Encodes with a prefix already known to be below 64.
pub(crate) fn ss58_encode_one_byte(public: &PublicKey, prefix: u16) -> String {
    debug_assert!(prefix < ONE_BYTE_PREFIX_LIMIT);
    let mut data = Vec::with_capacity(DECODED_LEN);
    data.push(prefix.to_le_bytes()[0]);
    data.extend_from_slice(public.as_bytes());
    let sum = checksum(&data);
    data.extend_from_slice(&sum);
    bs58::encode(data).into_string()
}

/// `public` as an SS58 address with `prefix` ([`BITTENSOR_SS58_PREFIX`] for Bittensor).
///
/// Fails for prefixes of 64 and above, whose two-byte form is not supported.
pub fn ss58_encode(public: &PublicKey, prefix: u16) -> Result<String> {
    if prefix >= ONE_BYTE_PREFIX_LIMIT {
        return Err(WalletError::InvalidSs58 {
            address: format!("<prefix {prefix}>"),
            reason: format!(
                "prefix {prefix} needs the two-byte SS58 form, which is not supported (only \
                 prefixes below 64; Bittensor uses {BITTENSOR_SS58_PREFIX})"
            ),
        });
    }
    Ok(ss58_encode_one_byte(public, prefix))
}

/// A public key written as 64 hex digits (optionally `0x`-prefixed, either case) or as an SS58
/// address: the two forms operators paste into configuration files and flags.
pub fn parse_public_key(text: &str) -> Result<PublicKey> {
    let text = text.trim();
    let hex = text.strip_prefix("0x").unwrap_or(text);
    if let Some(key) = PublicKey::from_hex(&hex.to_ascii_lowercase()) {
        return Ok(key);
    }
    ss58_decode(text).map(|(key, _prefix)| key).map_err(|e| WalletError::InvalidSs58 {
        address: text.to_owned(),
        reason: format!("neither 64 hex digits nor an SS58 address ({e})"),
    })
}

/// The public key and prefix of an SS58 address. Rejects anything but a one-byte-prefix address
/// of a 32-byte key with a correct checksum.
pub fn ss58_decode(address: &str) -> Result<(PublicKey, u16)> {
    let invalid = |reason: String| WalletError::InvalidSs58 { address: address.into(), reason };
    let data = bs58::decode(address).into_vec().map_err(|e| invalid(format!("not base58: {e}")))?;
    if let Some(&first) = data.first()
        && u16::from(first) >= ONE_BYTE_PREFIX_LIMIT
    {
        return Err(invalid(format!(
            "prefix byte {first:#04x} is not a one-byte SS58 prefix (two-byte prefixes are not \
             supported)"
        )));
    }
    if data.len() != DECODED_LEN {
        return Err(invalid(format!(
            "decodes to {} bytes, not the {DECODED_LEN} of a 32-byte public key address",
            data.len()
        )));
    }
    let (body, sum) = data.split_at(1 + 32);
    if checksum(body) != sum {
        return Err(invalid("bad checksum (a mistyped or truncated address?)".into()));
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&body[1..]);
    Ok((PublicKey(key), u16::from(body[0])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys_parse_from_hex_or_ss58() {
        let key = PublicKey([0xab; 32]);
        let address = ss58_encode(&key, BITTENSOR_SS58_PREFIX).expect("encodes");
        for text in [key.to_string(), format!("0x{key}"), key.to_string().to_uppercase(), address] {
            assert_eq!(parse_public_key(&format!(" {text} ")).expect("parses"), key, "{text}");
        }
        assert!(parse_public_key("not a key").is_err());
        assert!(parse_public_key(&"ab".repeat(31)).is_err());
    }

    const PUBLIC: &str = "46ebddef8cd9bb167dc30878d7113b7e168e6f0646beffd77d69d39bad76b47a";
    const SS58: &str = "5DfhGyQdFobKM8NsWvEeAKk5EQQgYe9AydgJ7rMB6E1EqRzV";

    fn public() -> PublicKey {
        PublicKey::from_hex(PUBLIC).expect("hex")
    }

    #[test]
    fn known_address() {
        assert_eq!(ss58_encode(&public(), BITTENSOR_SS58_PREFIX).expect("prefix 42"), SS58);
        assert_eq!(ss58_decode(SS58).expect("valid"), (public(), BITTENSOR_SS58_PREFIX));
    }

    #[test]
    fn round_trips_every_one_byte_prefix() {
        for prefix in 0..ONE_BYTE_PREFIX_LIMIT {
            for key in [[0u8; 32], [0xff; 32], public().0] {
                let address = ss58_encode(&PublicKey(key), prefix).expect("one-byte prefix");
                assert_eq!(ss58_decode(&address).expect("own output"), (PublicKey(key), prefix));
            }
        }
    }

    #[test]
    fn two_byte_prefixes_are_refused() {
        assert!(ss58_encode(&public(), 64).is_err());
        assert!(ss58_encode(&public(), u16::MAX).is_err());
        let mut data = vec![0x40, 0x00];
        data.extend_from_slice(&public().0);
        data.extend_from_slice(&[0, 0]);
        let err = ss58_decode(&bs58::encode(data).into_string()).expect_err("two-byte prefix");
        assert!(err.to_string().contains("two-byte"), "{err}");
    }

    #[test]
    fn bad_checksums_and_lengths_are_rejected() {
        // Change one character to another base58 digit: checksum fails.
        let mut chars: Vec<char> = SS58.chars().collect();
        chars[10] = if chars[10] == 'a' { 'b' } else { 'a' };
        let mistyped: String = chars.into_iter().collect();
        let err = ss58_decode(&mistyped).expect_err("bad checksum");
        assert!(err.to_string().contains("checksum"), "{err}");

        let mut data = bs58::decode(SS58).into_vec().expect("base58");
        data[34] ^= 1;
        assert!(ss58_decode(&bs58::encode(&data).into_string()).is_err());
        data.pop();
        assert!(ss58_decode(&bs58::encode(&data).into_string()).is_err(), "short");
        data.extend_from_slice(&[0, 0]);
        assert!(ss58_decode(&bs58::encode(&data).into_string()).is_err(), "long");

        for garbage in
            ["", "0OIl", "5DfhGyQdFobKM8NsWvEeAKk5EQQgYe9AydgJ7rMB6E1EqRz", "not an address"]
        {
            assert!(ss58_decode(garbage).is_err(), "{garbage:?}");
        }
    }
}
