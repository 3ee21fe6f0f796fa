//! A coordinator's endpoint announcement: where validators and workers reach it, as one raw
//! field of a `Commitments.set_commitment`.
//!
//! The encoding (version 1) is
//!
//! ```text
//! b"VBEP" ‖ u8 encoding version (1) ‖ u8 flags ‖ u16_le protocol version
//!         ‖ [32-byte certificate fingerprint, if FLAG_FINGERPRINT]
//!         ‖ [one zero byte, if FLAG_PAD]
//!         ‖ URL bytes (the rest)
//! ```
//!
//! - The magic and the encoding version come first, so a commitment that is something else (a
//!   miner's circuit hash, a later layout) is refused with a typed reason rather than misread.
//! - The Commitments pallet stores at most [`MAX_COMMITMENT_BYTES`] in a raw field, so
//!   [`Endpoint::encode`] refuses a longer announcement instead of letting the chain truncate it.
//! - A miner commits its circuit as exactly 32 raw bytes (`ArtifactHash::from_commitment` in
//!   `veribench-circuit`), and a reader must never take one for the other. An endpoint is
//!   therefore never exactly 32 bytes long: the one announcement that would be (no fingerprint
//!   and a 24-byte URL) carries [`FLAG_PAD`] and one zero byte, so it is 33. [`Endpoint::decode`]
//!   refuses every 32-byte input, and accepts the pad only where it is needed, so each endpoint
//!   has exactly one encoding.
//! - The URL takes the rest of the field and is validated as a [`WssUrl`] on decode, so trailing
//!   garbage is not silently part of an address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// The most bytes the Commitments pallet keeps in one raw field.
pub const MAX_COMMITMENT_BYTES: usize = 128;
/// The four bytes every endpoint announcement starts with.
pub const ENDPOINT_MAGIC: [u8; 4] = *b"VBEP";
/// The layout [`Endpoint::encode`] writes and [`Endpoint::decode`] reads.
pub const ENDPOINT_ENCODING_VERSION: u8 = 1;
/// Flags bit: a 32-byte [`CertFingerprint`] follows the header.
pub const FLAG_FINGERPRINT: u8 = 1 << 0;
/// Flags bit: one zero byte precedes the URL, because without it the announcement would be
/// exactly 32 bytes, the length of a circuit commitment.
pub const FLAG_PAD: u8 = 1 << 1;
/// Blocks an announcement stays valid after the block it was committed at (24 hours of 12 s
/// blocks). A worker stops trusting an endpoint older than this, so a validator that stopped
/// running its coordinator (or lost its keys' operator) drops out without anyone acting; a
/// running coordinator re-announces well before ([`ANNOUNCEMENT_REFRESH_BLOCKS`]).
pub const ANNOUNCEMENT_TTL_BLOCKS: u64 = 7_200;
/// The age at which a running coordinator re-announces an unchanged endpoint: half the TTL,
/// leaving twelve hours of retries against rate limits and outages before it expires.
pub const ANNOUNCEMENT_REFRESH_BLOCKS: u64 = ANNOUNCEMENT_TTL_BLOCKS / 2;
/// The length of a miner's circuit commitment, which an announcement must never have.
const CIRCUIT_COMMITMENT_BYTES: usize = 32;
/// Magic, encoding version, flags, protocol version.
const HEADER_LEN: usize = 8;
/// The URL scheme every endpoint uses (TLS only).
const SCHEME: &str = "wss://";

/// Where a coordinator listens, what certificate it presents and which wire protocol it speaks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The WebSocket URL to connect to.
    pub url: WssUrl,
    /// The SHA-256 of the certificate to pin, for a self-signed one; `None` trusts the usual
    /// certificate authorities.
    pub fingerprint: Option<CertFingerprint>,
    /// The `veribench-protocol` wire version the coordinator speaks.
    pub protocol_version: u16,
}

/// Why an announcement cannot be encoded or a commitment is not an announcement.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Longer than the pallet's raw field.
    #[error(
        "endpoint announcement of {len} bytes, at most {MAX_COMMITMENT_BYTES} fit a commitment"
    )]
    TooLong {
        /// The length of the (would-be) encoding.
        len: usize,
    },
    /// Shorter than its header, fingerprint or pad.
    #[error("endpoint announcement of {len} bytes is truncated")]
    TooShort {
        /// The length of the input.
        len: usize,
    },
    /// Exactly 32 bytes: a circuit commitment, never an endpoint.
    #[error("a 32-byte commitment is a circuit hash, not an endpoint announcement")]
    CircuitCommitmentLength,
    /// Does not start with [`ENDPOINT_MAGIC`].
    #[error("not an endpoint announcement (no VBEP magic)")]
    BadMagic,
    /// An encoding version this build does not read.
    #[error("endpoint announcement encoding version {0} is not supported (this build reads 1)")]
    UnknownVersion(u8),
    /// Flag bits this version does not define.
    #[error("endpoint announcement has unknown flag bits {0:#04x}")]
    UnknownFlags(u8),
    /// [`FLAG_PAD`] where no pad is needed, or a pad byte that is not zero.
    #[error("endpoint announcement has a pad where none belongs, or a non-zero pad byte")]
    BadPadding,
    /// The URL is not a valid [`WssUrl`].
    #[error("endpoint URL: {0}")]
    BadUrl(#[from] UrlError),
}

impl EndpointError {
    /// The reason's stable name, as SPEC §10.3 lists it.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLong { .. } => "too_long",
            Self::TooShort { .. } => "too_short",
            Self::CircuitCommitmentLength => "circuit_commitment_length",
            Self::BadMagic => "bad_magic",
            Self::UnknownVersion(_) => "unknown_version",
            Self::UnknownFlags(_) => "unknown_flags",
            Self::BadPadding => "bad_padding",
            Self::BadUrl(_) => "bad_url",
        }
    }
}

impl Endpoint {
    /// The announcement's bytes, for `Chain::set_commitment`. Never exactly 32 bytes long.
    pub fn encode(&self) -> Result<Vec<u8>, EndpointError> {
        let fingerprint_len = if self.fingerprint.is_some() { 32 } else { 0 };
        let unpadded = HEADER_LEN + fingerprint_len + self.url.as_str().len();
        let pad = unpadded == CIRCUIT_COMMITMENT_BYTES;
        let len = unpadded + usize::from(pad);
        if len > MAX_COMMITMENT_BYTES {
            return Err(EndpointError::TooLong { len });
        }
        let mut flags = 0;
        if self.fingerprint.is_some() {
            flags |= FLAG_FINGERPRINT;
        }
        if pad {
            flags |= FLAG_PAD;
        }
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&ENDPOINT_MAGIC);
        out.push(ENDPOINT_ENCODING_VERSION);
        out.push(flags);
        out.extend_from_slice(&self.protocol_version.to_le_bytes());
        if let Some(fingerprint) = &self.fingerprint {
            out.extend_from_slice(&fingerprint.0);
        }
        if pad {
            out.push(0);
        }
        out.extend_from_slice(self.url.as_str().as_bytes());
        debug_assert_eq!(out.len(), len);
        Ok(out)
    }

    /// Reads an announcement from a commitment's raw field; refuses anything else, of any
    /// length, with a typed reason.
    pub fn decode(data: &[u8]) -> Result<Self, EndpointError> {
        let len = data.len();
        if len > MAX_COMMITMENT_BYTES {
            return Err(EndpointError::TooLong { len });
        }
        if len == CIRCUIT_COMMITMENT_BYTES {
            return Err(EndpointError::CircuitCommitmentLength);
        }
        let (header, mut rest) =
            data.split_first_chunk::<HEADER_LEN>().ok_or(EndpointError::TooShort { len })?;
        let [m0, m1, m2, m3, version, flags, v0, v1] = *header;
        if [m0, m1, m2, m3] != ENDPOINT_MAGIC {
            return Err(EndpointError::BadMagic);
        }
        if version != ENDPOINT_ENCODING_VERSION {
            return Err(EndpointError::UnknownVersion(version));
        }
        let unknown = flags & !(FLAG_FINGERPRINT | FLAG_PAD);
        if unknown != 0 {
            return Err(EndpointError::UnknownFlags(unknown));
        }
        let protocol_version = u16::from_le_bytes([v0, v1]);
        let fingerprint = if flags & FLAG_FINGERPRINT != 0 {
            let (fingerprint, tail) =
                rest.split_first_chunk::<32>().ok_or(EndpointError::TooShort { len })?;
            rest = tail;
            Some(CertFingerprint(*fingerprint))
        } else {
            None
        };
        if flags & FLAG_PAD != 0 {
            // The pad exists only to lift a 32-byte announcement to 33.
            if len != CIRCUIT_COMMITMENT_BYTES + 1 {
                return Err(EndpointError::BadPadding);
            }
            match rest.split_first() {
                Some((0, tail)) => rest = tail,
                _ => return Err(EndpointError::BadPadding),
            }
        }
        let url = std::str::from_utf8(rest).map_err(|_| UrlError::NonAscii)?;
        Ok(Self { url: WssUrl::new(url)?, fingerprint, protocol_version })
    }
}

/// Whether an announcement committed at block `committed_at` has expired at block `now`: it is
/// valid for [`ANNOUNCEMENT_TTL_BLOCKS`] blocks after its own, inclusive.
pub fn announcement_expired(committed_at: u64, now: u64) -> bool {
    now.saturating_sub(committed_at) > ANNOUNCEMENT_TTL_BLOCKS
}

/// A `wss://host[:port][/path]` URL, checked once so that every holder can rely on it.
///
/// Strict on purpose, since it is read from the chain and dialled by every validator: lowercase
/// `wss` scheme only (no plain-text `ws`), printable ASCII only (no whitespace, control or
/// non-ASCII characters, so what a log shows is what is dialled), no userinfo, query or
/// fragment, a non-empty host (a DNS name, an IPv4 address or a bracketed IPv6 address), a port
/// in 1..=65535 if given, and well-formed `%` escapes in the path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WssUrl(String);

/// Why a string is not a [`WssUrl`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Does not start with `wss://` (e.g. `ws://`, `http://`, `WSS://`).
    #[error("must start with wss://")]
    NotWss,
    /// Contains a byte outside ASCII (or, on decode, is not UTF-8).
    #[error("must be ASCII (punycode for international names)")]
    NonAscii,
    /// Contains a space or a control character at byte `at`.
    #[error("whitespace or control character at byte {at}")]
    ControlOrSpace {
        /// The byte offset of the first offending character.
        at: usize,
    },
    /// Has `user[:password]@` before the host.
    #[error("must not carry userinfo (user@)")]
    Userinfo,
    /// Has a `?query`.
    #[error("must not have a query (?)")]
    Query,
    /// Has a `#fragment`.
    #[error("must not have a fragment (#)")]
    Fragment,
    /// No host between `wss://` and the port or path.
    #[error("host is empty")]
    EmptyHost,
    /// A host with characters a DNS name, IPv4 or bracketed IPv6 address does not have.
    #[error("host is not a DNS name or IP address")]
    BadHost,
    /// A port that is empty, not decimal, or outside 1..=65535.
    #[error("port is not a number in 1..=65535")]
    BadPort,
    /// A path with a backslash or a `%` not followed by two hex digits.
    #[error("path has a backslash or a malformed % escape")]
    BadPath,
}

impl WssUrl {
    /// Checks `url` and wraps it unchanged.
    pub fn new(url: impl Into<String>) -> Result<Self, UrlError> {
        let url = url.into();
        parse_url(&url)?;
        Ok(Self(url))
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host, a name or an IP address (validation made the two unambiguous).
    pub fn host(&self) -> UrlHost<'_> {
        self.parts().0
    }

    /// The port: the one written, else 443.
    pub fn port(&self) -> u16 {
        self.parts().1
    }

    /// Host and port, read by the parser that validated the URL. It cannot fail on a
    /// `WssUrl`; were it to, an empty name (which no resolver dials) stands in.
    fn parts(&self) -> (UrlHost<'_>, u16) {
        parse_url(&self.0).unwrap_or((UrlHost::Name(""), 443))
    }
}

/// The host of a [`WssUrl`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UrlHost<'a> {
    /// A DNS name, as written.
    Name(&'a str),
    /// An IPv4 (dotted quad) or bracketed IPv6 address.
    Ip(IpAddr),
}

impl UrlHost<'_> {
    /// Whether the host is not on the public internet: `localhost` (and `*.localhost`), or a
    /// loopback, private, shared (100.64/10), link-local, unique-local, unspecified, broadcast
    /// or documentation address, including IPv4 mapped into IPv6. A name that resolves to such
    /// an address is not caught here.
    pub fn is_non_public(&self) -> bool {
        match self {
            UrlHost::Name(name) => {
                let name = name.to_ascii_lowercase();
                name == "localhost" || name.ends_with(".localhost")
            }
            UrlHost::Ip(IpAddr::V4(ip)) => non_public_v4(*ip),
            UrlHost::Ip(IpAddr::V6(ip)) => match ip.to_ipv4_mapped() {
                Some(v4) => non_public_v4(v4),
                None => {
                    let first = ip.segments()[0];
                    ip.is_loopback()
                        || ip.is_unspecified()
                        || first & 0xfe00 == 0xfc00 // unique local fc00::/7
                        || first & 0xffc0 == 0xfe80 // link local fe80::/10
                        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
                }
            },
        }
    }
}

impl fmt::Display for UrlHost<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlHost::Name(name) => f.write_str(name),
            UrlHost::Ip(ip) => ip.fmt(f),
        }
    }
}

fn non_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || (a == 100 && (64..128).contains(&b)) // shared address space 100.64/10
        || a == 0
}

impl FromStr for WssUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for WssUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks `url` against the rules of [`WssUrl`] and returns its host and port (443 when none is
/// written).
fn parse_url(url: &str) -> Result<(UrlHost<'_>, u16), UrlError> {
    if !url.is_ascii() {
        return Err(UrlError::NonAscii);
    }
    if let Some(at) = url.bytes().position(|b| b <= b' ' || b == 0x7f) {
        return Err(UrlError::ControlOrSpace { at });
    }
    let rest = url.strip_prefix(SCHEME).ok_or(UrlError::NotWss)?;
    if rest.contains('#') {
        return Err(UrlError::Fragment);
    }
    if rest.contains('?') {
        return Err(UrlError::Query);
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.contains('@') {
        return Err(UrlError::Userinfo);
    }
    let (parsed, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, tail) = bracketed.split_once(']').ok_or(UrlError::BadHost)?;
        if host.is_empty() {
            return Err(UrlError::EmptyHost);
        }
        let ip = host.parse::<Ipv6Addr>().map_err(|_| UrlError::BadHost)?;
        let port = match tail {
            "" => None,
            tail => Some(tail.strip_prefix(':').ok_or(UrlError::BadHost)?),
        };
        (UrlHost::Ip(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if host.is_empty() {
            return Err(UrlError::EmptyHost);
        }
        let dns = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
        if !host.chars().all(dns) {
            return Err(UrlError::BadHost);
        }
        // Resolvers read a name whose last label is a number as an IPv4 address in any
        // notation (`127.1`, `2130706433`, `0x7f.0.0.1`): only the dotted quad is accepted, so
        // that what is checked is what is dialled.
        let last = host.rsplit('.').next().unwrap_or(host);
        let hex = last.strip_prefix("0x").or_else(|| last.strip_prefix("0X"));
        let numeric = last.bytes().all(|b| b.is_ascii_digit())
            || hex.is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
        let parsed = match host.parse::<Ipv4Addr>() {
            Ok(ip) => UrlHost::Ip(IpAddr::V4(ip)),
            Err(_) if numeric => return Err(UrlError::BadHost),
            Err(_) => UrlHost::Name(host),
        };
        (parsed, port)
    };
    let port = match port {
        None => 443,
        Some(port) => {
            let decimal =
                !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
            match port.parse::<u16>() {
                Ok(port) if decimal && port != 0 => port,
                _ => return Err(UrlError::BadPort),
            }
        }
    };
    let path = path.as_bytes();
    for (i, &b) in path.iter().enumerate() {
        let escape_ok =
            || path.get(i + 1..i + 3).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit));
        if b == b'\\' || (b == b'%' && !escape_ok()) {
            return Err(UrlError::BadPath);
        }
    }
    Ok((parsed, port))
}

/// The SHA-256 of a DER-encoded TLS certificate, pinned by validators that dial the endpoint.
/// Hex in text (64 digits, printed lowercase).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertFingerprint(pub [u8; 32]);

/// A string that is not 64 hex digits.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("certificate fingerprint must be 64 hex digits: {0}")]
pub struct FingerprintParseError(#[from] hex::FromHexError);

impl CertFingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of_der(der: &[u8]) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(Sha256::digest(der).as_slice());
        Self(out)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl FromStr for CertFingerprint {
    type Err = FingerprintParseError;

    /// Exactly 64 hex digits, either case; a `0x` prefix is accepted.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.strip_prefix("0x").unwrap_or(s);
        let mut out = [0u8; 32];
        hex::decode_to_slice(digits, &mut out)?;
        Ok(Self(out))
    }
}

impl fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertFingerprint({self})")
    }
}

#[cfg(test)]
mod tests {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    /// Every line of SPEC §10.3 decodes as it says, and every accepted endpoint encodes back
    /// to the same bytes (one encoding per endpoint).
    #[test]
    fn spec_vectors_read_back() {
        const SPEC: &str = include_str!("../../protocol/SPEC.md");
        let block = SPEC
            .split("```endpoints\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("SPEC.md §10.3 has an ```endpoints block");
        let (mut accepted, mut refused) = (0, 0);
        for line in block.lines().filter(|l| !l.trim().is_empty()) {
            let (head, expected) = line.split_once(" = ").expect("`kind hex = …`");
            let (kind, hex) = head.split_once(' ').expect("`kind hex`");
            let bytes = hex::decode(hex).expect("hex");
            match kind {
                "accept" => {
                    let fields: Vec<&str> = expected.split(' ').collect();
                    let [url, fingerprint, version] = fields[..] else {
                        panic!("`url fingerprint version`: {line}")
                    };
                    let endpoint = Endpoint::decode(&bytes).expect(line);
                    assert_eq!(endpoint.url.as_str(), url, "{line}");
                    let fingerprint = (fingerprint != "-")
                        .then(|| fingerprint.parse::<CertFingerprint>().expect("hex"));
                    assert_eq!(endpoint.fingerprint, fingerprint, "{line}");
                    assert_eq!(endpoint.protocol_version.to_string(), version, "{line}");
                    assert_eq!(endpoint.encode().expect("encodes"), bytes, "{line}");
                    accepted += 1;
                }
                "refuse" => {
                    let error = Endpoint::decode(&bytes).expect_err(line);
                    assert_eq!(error.code(), expected, "{line}: {error}");
                    refused += 1;
                }
                other => panic!("unknown vector kind {other}"),
            }
        }
        assert!(accepted >= 4 && refused >= 8, "{accepted} accepted, {refused} refused");
        let certificate = CertFingerprint::of_der(b"veribench test certificate");
        assert!(block.contains(&certificate.to_string()), "the documented fingerprint");
    }

    #[test]
    fn hosts_are_unambiguous_and_classified() {
        for bad in [
            "wss://127.1",
            "wss://2130706433:443",
            "wss://0x7f.0.0.1",
            "wss://a.b.300",
            "wss://a.0xff",
            "wss://example.org.",
        ] {
            assert_eq!(WssUrl::new(bad), Err(UrlError::BadHost), "{bad}");
        }
        assert!(WssUrl::new("wss://0xbox.example/ws").is_ok(), "a name may start with 0x");
        assert_eq!(WssUrl::new("wss://[::ffff:zz]"), Err(UrlError::BadHost));
        let host = |u: &str| {
            let url = url(u);
            (url.host().is_non_public(), url.host().to_string())
        };
        assert_eq!(host("wss://validator.example:7799/ws"), (false, "validator.example".into()));
        assert_eq!(url("wss://validator.example:7799/ws").port(), 7799);
        assert_eq!(url("wss://validator.example/a:1").port(), 443);
        assert_eq!(url("wss://[::1]:8443").port(), 8443);
        assert_eq!(url("wss://[::1]").port(), 443);
        assert_eq!(host("wss://203.0.114.7:7799"), (false, "203.0.114.7".into()));
        assert_eq!(host("wss://[2600:1f18::1]:443"), (false, "2600:1f18::1".into()));
        for private in [
            "wss://localhost:1",
            "wss://Api.LocalHost",
            "wss://127.0.0.1",
            "wss://10.1.2.3/x",
            "wss://172.16.0.1",
            "wss://192.168.1.1:8443",
            "wss://169.254.169.254",
            "wss://100.64.0.1",
            "wss://0.0.0.0",
            "wss://[::1]:7799",
            "wss://[fd00::1]",
            "wss://[fe80::1]",
            "wss://[::ffff:10.0.0.1]",
            "wss://[2001:db8::7]:443",
        ] {
            assert!(url(private).host().is_non_public(), "{private}");
        }
    }

    fn url(s: &str) -> WssUrl {
        WssUrl::new(s).expect("valid url")
    }

    /// A valid URL of exactly `len` bytes (`len >= 7`).
    fn url_of_len(len: usize) -> WssUrl {
        url(&format!("{SCHEME}{}", "a".repeat(len - SCHEME.len())))
    }

    /// The header as the module doc lays it out, built by hand.
    fn header(flags: u8, protocol_version: u16) -> Vec<u8> {
        let mut out = b"VBEP".to_vec();
        out.push(1);
        out.push(flags);
        out.extend_from_slice(&protocol_version.to_le_bytes());
        out
    }

    #[test]
    fn round_trip_without_fingerprint_matches_the_documented_layout() {
        let endpoint = Endpoint {
            url: url("wss://coord.example.org:8443/ws"),
            fingerprint: None,
            protocol_version: 0x0102,
        };
        let bytes = endpoint.encode().expect("encode");
        let mut expected = header(0, 0x0102);
        expected.extend_from_slice(b"wss://coord.example.org:8443/ws");
        assert_eq!(bytes, expected);
        assert_eq!(Endpoint::decode(&bytes), Ok(endpoint));
    }

    #[test]
    fn round_trip_with_fingerprint_matches_the_documented_layout() {
        let fingerprint = CertFingerprint(std::array::from_fn(|i| i as u8 + 0xa0));
        let endpoint = Endpoint {
            url: url("wss://[2001:db8::1]:443"),
            fingerprint: Some(fingerprint),
            protocol_version: 2,
        };
        let bytes = endpoint.encode().expect("encode");
        let mut expected = header(FLAG_FINGERPRINT, 2);
        expected.extend_from_slice(&fingerprint.0);
        expected.extend_from_slice(b"wss://[2001:db8::1]:443");
        assert_eq!(bytes, expected);
        assert_eq!(Endpoint::decode(&bytes), Ok(endpoint));
    }

    #[test]
    fn exactly_128_bytes_encode_and_129_are_refused() {
        for (fingerprint, fixed) in [(None, 8), (Some(CertFingerprint([7; 32])), 40)] {
            let fits = Endpoint {
                url: url_of_len(MAX_COMMITMENT_BYTES - fixed),
                fingerprint,
                protocol_version: 2,
            };
            let bytes = fits.encode().expect("128 bytes fit");
            assert_eq!(bytes.len(), MAX_COMMITMENT_BYTES);
            assert_eq!(Endpoint::decode(&bytes), Ok(fits));

            let over = Endpoint {
                url: url_of_len(MAX_COMMITMENT_BYTES - fixed + 1),
                fingerprint,
                protocol_version: 2,
            };
            assert_eq!(over.encode(), Err(EndpointError::TooLong { len: 129 }));
        }
        assert_eq!(Endpoint::decode(&[0; 129]), Err(EndpointError::TooLong { len: 129 }));
    }

    #[test]
    fn the_one_32_byte_announcement_is_padded_to_33() {
        let endpoint = Endpoint {
            url: url("wss://vb.example.org:443"),
            fingerprint: None,
            protocol_version: 2,
        };
        assert_eq!(endpoint.url.as_str().len(), 24);
        let bytes = endpoint.encode().expect("encode");
        let mut expected = header(FLAG_PAD, 2);
        expected.push(0);
        expected.extend_from_slice(b"wss://vb.example.org:443");
        assert_eq!(bytes, expected);
        assert_eq!(Endpoint::decode(&bytes), Ok(endpoint));

        // The same without the pad would be a circuit commitment's length.
        let mut unpadded = header(0, 2);
        unpadded.extend_from_slice(b"wss://vb.example.org:443");
        assert_eq!(unpadded.len(), 32);
        assert_eq!(Endpoint::decode(&unpadded), Err(EndpointError::CircuitCommitmentLength));

        // A pad where none is needed, or a non-zero pad byte, is not canonical.
        let mut needless = header(FLAG_PAD, 2);
        needless.push(0);
        needless.extend_from_slice(b"wss://vb.example.org:4430");
        assert_eq!(Endpoint::decode(&needless), Err(EndpointError::BadPadding));
        let mut nonzero = expected.clone();
        nonzero[HEADER_LEN] = 1;
        assert_eq!(Endpoint::decode(&nonzero), Err(EndpointError::BadPadding));
    }

    #[test]
    fn malformed_headers_are_refused_with_their_reason() {
        let mut valid = header(0, 2);
        valid.extend_from_slice(b"wss://a");
        assert!(Endpoint::decode(&valid).is_ok());

        let mut magic = valid.clone();
        magic[0] = b'X';
        assert_eq!(Endpoint::decode(&magic), Err(EndpointError::BadMagic));
        let mut version = valid.clone();
        version[4] = 2;
        assert_eq!(Endpoint::decode(&version), Err(EndpointError::UnknownVersion(2)));
        let mut flags = valid.clone();
        flags[5] = 0x81;
        assert_eq!(Endpoint::decode(&flags), Err(EndpointError::UnknownFlags(0x80)));
        assert_eq!(Endpoint::decode(&valid[..7]), Err(EndpointError::TooShort { len: 7 }));
        let mut short_fingerprint = header(FLAG_FINGERPRINT, 2);
        short_fingerprint.extend_from_slice(&[0; 31]);
        assert_eq!(Endpoint::decode(&short_fingerprint), Err(EndpointError::TooShort { len: 39 }));
        let mut garbage = valid.clone();
        garbage.extend_from_slice(b" \0");
        assert_eq!(
            Endpoint::decode(&garbage),
            Err(EndpointError::BadUrl(UrlError::ControlOrSpace { at: 7 }))
        );
        let mut not_utf8 = valid;
        not_utf8.push(0xff);
        assert_eq!(Endpoint::decode(&not_utf8), Err(EndpointError::BadUrl(UrlError::NonAscii)));
    }

    #[test]
    fn bad_urls_are_refused_with_their_reason() {
        let cases = [
            ("http://example.org", UrlError::NotWss),
            ("ws://example.org", UrlError::NotWss),
            ("WSS://example.org", UrlError::NotWss),
            ("example.org", UrlError::NotWss),
            ("", UrlError::NotWss),
            ("wss://user@example.org", UrlError::Userinfo),
            ("wss://user:pw@example.org/ws", UrlError::Userinfo),
            ("wss://example.org/ws?token=1", UrlError::Query),
            ("wss://example.org?x", UrlError::Query),
            ("wss://example.org/ws#frag", UrlError::Fragment),
            ("wss://exa mple.org", UrlError::ControlOrSpace { at: 9 }),
            ("wss://example.org/ws ", UrlError::ControlOrSpace { at: 20 }),
            (" wss://example.org", UrlError::ControlOrSpace { at: 0 }),
            ("wss://example.org\n", UrlError::ControlOrSpace { at: 17 }),
            ("wss://example.org\t/x", UrlError::ControlOrSpace { at: 17 }),
            ("wss://exämple.org", UrlError::NonAscii),
            ("wss://", UrlError::EmptyHost),
            ("wss://:443", UrlError::EmptyHost),
            ("wss:///ws", UrlError::EmptyHost),
            ("wss://[]:443", UrlError::EmptyHost),
            ("wss://exa!mple.org", UrlError::BadHost),
            ("wss://[::1", UrlError::BadHost),
            ("wss://[example.org]", UrlError::BadHost),
            ("wss://[::1]443", UrlError::BadHost),
            ("wss://example.org:", UrlError::BadPort),
            ("wss://example.org:0", UrlError::BadPort),
            ("wss://example.org:65536", UrlError::BadPort),
            ("wss://example.org:+443", UrlError::BadPort),
            ("wss://example.org:000443", UrlError::BadPort),
            ("wss://::1:443", UrlError::EmptyHost),
            ("wss://a:1:2", UrlError::BadPort),
            ("wss://example.org/a%zz", UrlError::BadPath),
            ("wss://example.org/a%4", UrlError::BadPath),
            ("wss://example.org/a\\b", UrlError::BadPath),
        ];
        for (text, reason) in cases {
            assert_eq!(WssUrl::new(text), Err(reason), "{text:?}");
        }
        for text in [
            "wss://a",
            "wss://example.org",
            "wss://example.org:65535/",
            "wss://10.0.0.1:1/ws/v2",
            "wss://[::1]",
            "wss://[2001:db8::ffff:10.0.0.1]:8443/path%20x",
            "wss://my_host-1.internal/a/b.c~d",
        ] {
            assert_eq!(url(text).as_str(), text);
        }
    }

    #[test]
    fn fingerprint_is_the_sha256_of_the_der_and_round_trips_as_hex() {
        // FIPS 180-2, appendix B.1: SHA-256("abc").
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let fingerprint = CertFingerprint::of_der(b"abc");
        assert_eq!(fingerprint.to_string(), abc);
        assert_eq!(abc.parse::<CertFingerprint>(), Ok(fingerprint));
        assert_eq!(format!("0x{}", abc.to_uppercase()).parse::<CertFingerprint>(), Ok(fingerprint));
        assert!(abc[..62].parse::<CertFingerprint>().is_err());
        assert!(format!("{abc}00").parse::<CertFingerprint>().is_err());
        assert!(abc.replace('a', "g").parse::<CertFingerprint>().is_err());
    }

    /// Lengths 0..=200 of pseudo-random bytes, with and without a valid header in front.
    #[test]
    fn every_length_decodes_or_is_refused_without_panicking() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        };
        for len in 0..=200usize {
            for prefixed in [false, true] {
                let mut bytes: Vec<u8> = (0..len).map(|_| next()).collect();
                if prefixed {
                    let head = header(next() & 3, 2);
                    let n = head.len().min(len);
                    bytes[..n].copy_from_slice(&head[..n]);
                }
                if let Ok(endpoint) = Endpoint::decode(&bytes) {
                    assert_eq!(endpoint.encode(), Ok(bytes));
                }
            }
        }
    }

    fn host() -> impl Strategy<Value = String> {
        prop_oneof![
            // A name never ends in a number (that would be an IPv4 address in some notation).
            "[a-z0-9_.-]{0,39}[g-z]",
            (any::<[u8; 4]>()).prop_map(|ip| std::net::Ipv4Addr::from(ip).to_string()),
            (any::<[u16; 8]>()).prop_map(|ip| format!("[{}]", std::net::Ipv6Addr::from(ip))),
        ]
    }

    fn wss_url() -> impl Strategy<Value = WssUrl> {
        (
            host(),
            proptest::option::of(1u16..),
            proptest::option::of("(/[a-zA-Z0-9._~!$&'()*+,;=:@-]{0,12}){1,4}"),
        )
            .prop_map(|(host, port, path)| {
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                url(&format!("wss://{host}{port}{}", path.unwrap_or_default()))
            })
    }

    fn endpoint() -> impl Strategy<Value = Endpoint> {
        (wss_url(), proptest::option::of(any::<[u8; 32]>()), any::<u16>()).prop_map(
            |(url, fingerprint, protocol_version)| Endpoint {
                url,
                fingerprint: fingerprint.map(CertFingerprint),
                protocol_version,
            },
        )
    }

    proptest! {
        /// Arbitrary bytes never panic; whatever decodes is canonical and never 32 bytes.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..=200)) {
            if let Ok(endpoint) = Endpoint::decode(&bytes) {
                prop_assert_ne!(bytes.len(), 32);
                prop_assert_eq!(endpoint.encode(), Ok(bytes));
            }
        }

        /// Valid announcements cut short, extended or with one byte changed never panic, and
        /// whatever still decodes is canonical and never 32 bytes.
        #[test]
        fn mutated_announcements_never_panic(
            endpoint in endpoint(),
            cut in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            extra in vec(any::<u8>(), 0..4),
        ) {
            let Ok(bytes) = endpoint.encode() else { return Ok(()) };
            let mut changed = bytes.clone();
            let i = at.index(changed.len());
            changed[i] = byte;
            let mut extended = bytes.clone();
            extended.extend_from_slice(&extra);
            for input in [&bytes[..cut.index(bytes.len())], &changed[..], &extended[..]] {
                if let Ok(decoded) = Endpoint::decode(input) {
                    prop_assert_ne!(input.len(), 32);
                    prop_assert_eq!(decoded.encode(), Ok(input.to_vec()));
                }
            }
        }

        /// No 32-byte input is an endpoint, even one with a valid header and URL.
        #[test]
        fn every_32_byte_input_is_refused(
            bytes in any::<[u8; 32]>(),
            protocol_version in any::<u16>(),
            tail in "[a-z0-9.]{18}",
            valid_header in any::<bool>(),
        ) {
            let bytes = if valid_header {
                let mut framed = header(0, protocol_version);
                framed.extend_from_slice(format!("wss://{tail}").as_bytes());
                framed
            } else {
                bytes.to_vec()
            };
            prop_assert_eq!(bytes.len(), 32);
            prop_assert_eq!(
                Endpoint::decode(&bytes),
                Err(EndpointError::CircuitCommitmentLength)
            );
        }

        /// Every valid endpoint encodes to at most 128 bytes, never 32, and decodes back; or is
        /// refused as too long, by its exact length.
        #[test]
        fn every_endpoint_round_trips_and_is_never_32_bytes(endpoint in endpoint()) {
            let fixed = if endpoint.fingerprint.is_some() { 40 } else { 8 };
            let natural = fixed + endpoint.url.as_str().len();
            match endpoint.encode() {
                Ok(bytes) => {
                    prop_assert_ne!(bytes.len(), 32);
                    prop_assert!(bytes.len() <= MAX_COMMITMENT_BYTES);
                    prop_assert_eq!(bytes.len(), natural + usize::from(natural == 32));
                    prop_assert_eq!(Endpoint::decode(&bytes), Ok(endpoint));
                }
                Err(error) => {
                    prop_assert!(natural > MAX_COMMITMENT_BYTES);
                    prop_assert_eq!(error, EndpointError::TooLong { len: natural });
                }
            }
        }
    }
}
