//! The typed reason of every `Error` frame (SPEC §8.5).
//!
//! One code per refusal, so a peer's program acts on the code and never reads the text: a worker
//! told `clock_skew` knows its clock is wrong, a coordinator told `busy` knows the device is
//! computing another validator's challenge. On the wire a code is its index as a varint, exactly
//! as postcard encodes an enum variant; an index this build does not know decodes to
//! [`ErrorCode::Unknown`] instead of failing the frame, so a newer peer's refusal still arrives.

use std::fmt;

use serde::de::{Deserialize, Deserializer};
use serde::ser::{Serialize, Serializer};

macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident = $index:literal => $name:literal, $class:ident;)*) => {
        /// Why a peer refused a frame, a registration or a challenge.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
            /// An index this build does not know (sent by a newer peer); treated as
            /// [`ErrorClass::Fault`].
            Unknown(u32),
        }

        impl ErrorCode {
            /// Every known code, in wire order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The wire index.
            pub fn index(self) -> u32 {
                match self {
                    $(ErrorCode::$variant => $index,)*
                    ErrorCode::Unknown(index) => index,
                }
            }

            /// The code with wire index `index`.
            pub fn from_index(index: u32) -> Self {
                match index {
                    $($index => ErrorCode::$variant,)*
                    other => ErrorCode::Unknown(other),
                }
            }

            /// The stable snake_case name, as the SPEC, logs and stored details spell it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                    ErrorCode::Unknown(_) => "unknown",
                }
            }

            /// What the receiver should do about it.
            pub fn class(self) -> ErrorClass {
                match self {
                    $(ErrorCode::$variant => ErrorClass::$class,)*
                    ErrorCode::Unknown(_) => ErrorClass::Fault,
                }
            }
        }
    };
}

codes! {
    /// The frame does not decode: bad magic, truncated, invalid postcard, trailing bytes.
    Malformed = 0 => "malformed", Fault;
    /// The frame exceeds the receiver's size limit, or a connection's pre-registration budget.
    TooLarge = 1 => "too_large", Fault;
    /// The frame's version is not one the receiver speaks.
    UnsupportedVersion = 2 => "unsupported_version", Fault;
    /// The message decoded but breaks a bound of SPEC §8.4 (a text, a list, row order, a shape).
    Invalid = 3 => "invalid", Fault;
    /// A message the receiver does not accept from this peer or in this state.
    Unexpected = 4 => "unexpected", Fault;
    /// Frames or connections over the receiver's rate; slow down.
    RateLimited = 5 => "rate_limited", Retry;
    /// The peer took too long (handshake, registration, idle connection).
    Timeout = 6 => "timeout", Retry;
    /// The sender's own failure.
    Internal = 7 => "internal", Fault;
    /// The sender cannot serve now (its database or chain is unavailable, it is shutting down).
    Unavailable = 8 => "unavailable", Retry;
    /// A `Register` timestamp too far from the coordinator's clock.
    StaleRegistration = 9 => "stale_registration", Refused;
    /// A `Register` nonce already used.
    ReplayedRegistration = 10 => "replayed_registration", Refused;
    /// A signature that does not verify (a `Register`'s or a challenge's).
    BadSignature = 11 => "bad_signature", Refused;
    /// A delegation that is invalid, expired or not signed by its miner hotkey.
    BadDelegation = 12 => "bad_delegation", Refused;
    /// A miner hotkey not registered on the subnet.
    UnknownHotkey = 13 => "unknown_hotkey", Refused;
    /// A `Register` offering no device.
    NoDevices = 14 => "no_devices", Refused;
    /// A device key another worker identity holds (SPEC §2.1).
    DeviceConflict = 15 => "device_conflict", Refused;
    /// The worker's clock is further ahead than half a challenge deadline (SPEC §8.2).
    ClockSkew = 16 => "clock_skew", Refused;
    /// A challenge issued by another key than the one the worker trusts.
    Foreign = 17 => "foreign", Refused;
    /// A challenge id already received from this coordinator.
    Replayed = 18 => "replayed", Refused;
    /// A challenge whose deadline is at or before the worker's clock.
    Expired = 19 => "expired", Refused;
    /// A challenge issued more than the allowed skew after the worker's clock.
    FromTheFuture = 20 => "from_the_future", Refused;
    /// A challenge for a device the worker does not have.
    UnknownDevice = 21 => "unknown_device", Refused;
    /// The device is computing another challenge; offer it again later.
    Busy = 22 => "busy", Retry;
    /// The device failed while computing the challenge.
    ComputeFailed = 23 => "compute_failed", Fault;
    /// A challenge id the receiver does not await (an open request for a challenge not
    /// committed, a commitment for a challenge not sent).
    UnknownChallenge = 24 => "unknown_challenge", Refused;
    /// An open request naming a row outside the product.
    RowsOutOfRange = 25 => "rows_out_of_range", Refused;
    /// An open request whose openings would not fit in one frame (SPEC §8.4).
    OpeningsTooLarge = 26 => "openings_too_large", Refused;
    /// The worker could not open rows it committed.
    OpenFailed = 27 => "open_failed", Fault;
    /// No commitment arrived before the challenge's deadline.
    DeadlineMissed = 28 => "deadline_missed", Refused;
    /// No openings arrived within the open timeout.
    OpenTimeout = 29 => "open_timeout", Refused;
    /// The coordinator stopped while the challenge was in flight; it does not count.
    CoordinatorShutdown = 30 => "coordinator_shutdown", Retry;
}

/// How a receiver treats a code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Something broke: a bug or a misconfiguration on one side.
    Fault,
    /// Transient: the same request may succeed later.
    Retry,
    /// A decision about this request: repeating it unchanged gets the same answer.
    Refused,
}

impl ErrorCode {
    /// Whether the same request may succeed later.
    pub fn is_transient(self) -> bool {
        self.class() == ErrorClass::Retry
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::Unknown(index) => write!(f, "unknown ({index})"),
            known => f.write_str(known.as_str()),
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(self.index())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        u32::deserialize(deserializer).map(ErrorCode::from_index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_names_unique_and_snake_case() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.index() as usize, i, "{code:?}");
            assert_eq!(ErrorCode::from_index(code.index()), *code);
            assert!(code.as_str().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn codes_encode_as_postcard_enum_indices_and_unknown_ones_survive() {
        assert_eq!(postcard::to_stdvec(&ErrorCode::Busy).expect("encode"), vec![22]);
        let future: ErrorCode = postcard::from_bytes(&[0xc8, 0x01]).expect("decode 200");
        assert_eq!(future, ErrorCode::Unknown(200));
        assert_eq!(future.class(), ErrorClass::Fault);
        assert_eq!(postcard::to_stdvec(&future).expect("encode"), vec![0xc8, 0x01]);
    }
}
