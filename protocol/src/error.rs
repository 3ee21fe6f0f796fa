//! The crate's one error type.

use thiserror::Error;

/// Everything that can go wrong in the protocol crate. Verification outcomes are not errors:
/// they are [`crate::verify::Verdict`]s.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtocolError {
    /// A mode name that is not `int8`, `fp16`, `bf16` or `fp32`.
    #[error("unknown mode {0:?} (expected int8, fp16, bf16 or fp32)")]
    UnknownMode(String),
    /// A dimension of zero or above the cap.
    #[error("shape dimension {name} = {value} is outside 1..={max}")]
    BadShape {
        /// `m`, `k` or `n`.
        name: &'static str,
        /// The value given.
        value: u32,
        /// The largest allowed.
        max: u32,
    },
    /// Integer elements exist only for the exact modes.
    #[error("mode {0} has no integer elements")]
    NotIntegerMode(crate::challenge::Mode),
    /// A Merkle tree needs at least one leaf.
    #[error("cannot commit to an empty product")]
    NoLeaves,
    /// Rows to open must exist and be listed once each.
    #[error(
        "row {row} cannot be opened from a commitment of {rows} rows (out of range or repeated)"
    )]
    BadRowIndex {
        /// The offending index.
        row: u32,
        /// Rows in the commitment.
        rows: u32,
    },
    /// A wire frame that could not be decoded.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A frame above the configured size limit, refused before any allocation.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Length of the frame.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame from a protocol version this build does not speak.
    #[error("unsupported protocol version {got} (this build speaks {supported})")]
    UnsupportedVersion {
        /// Version in the frame.
        got: u16,
        /// Version of this build.
        supported: u16,
    },
    /// A well-formed frame whose message breaks a semantic bound (a text or list too long, rows
    /// out of order, a deadline before issue).
    #[error("invalid message: {0}")]
    Invalid(String),
}
