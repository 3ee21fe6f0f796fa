//! The crate's one error type.

use thiserror::Error;

use crate::error_code::ErrorCode;

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
    /// Rows are indexed by `u32`: a product with more rows cannot be committed to.
    #[error("cannot commit to {leaves} rows: at most 2^32 - 1")]
    TooManyLeaves {
        /// Leaves given.
        leaves: usize,
    },
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
    /// A text or list longer than its bound (SPEC §8.4).
    #[error("{what} has {len} items or bytes, limit {max}")]
    OverLimit {
        /// Which field.
        what: Bounded,
        /// Its length.
        len: usize,
        /// The bound.
        max: u32,
    },
    /// An open request or openings listing no row.
    #[error("{0} is empty")]
    NoRows(Bounded),
    /// Row indices that are not strictly increasing (unordered or repeated).
    #[error("{what}: row {row} is out of order or repeated")]
    RowsNotIncreasing {
        /// Which list.
        what: Bounded,
        /// The first offending index.
        row: u32,
    },
    /// A `Register` naming the same device twice.
    #[error("device {key} is listed twice (again at position {index})")]
    RepeatedDevice {
        /// The repeated key.
        key: String,
        /// Its second position.
        index: usize,
    },
    /// A challenge whose deadline is before its issue time.
    #[error("challenge deadline before issue")]
    DeadlineBeforeIssue,
}

/// Every bounded text and list of the wire (SPEC §8.4), named in [`ProtocolError::OverLimit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bounded {
    /// `Register.name`.
    WorkerName,
    /// `HardwareInfo.cpu_model`.
    CpuModel,
    /// `GpuInfo.uuid`.
    GpuUuid,
    /// `GpuInfo.name`.
    GpuName,
    /// `ErrorMsg.message`.
    ErrorMessage,
    /// `HardwareInfo.gpus`.
    GpuList,
    /// `Register.devices`.
    DeviceList,
    /// `OpenRequest.rows`.
    RequestedRows,
    /// `Openings.rows`.
    OpenedRows,
    /// `RowOpening.bytes`.
    OpenedRow,
    /// `MultiProof` hashes.
    ProofHashes,
}

impl std::fmt::Display for Bounded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bounded::WorkerName => "worker name",
            Bounded::CpuModel => "cpu model",
            Bounded::GpuUuid => "gpu uuid",
            Bounded::GpuName => "gpu name",
            Bounded::ErrorMessage => "error message",
            Bounded::GpuList => "gpu list",
            Bounded::DeviceList => "device list",
            Bounded::RequestedRows => "open request",
            Bounded::OpenedRows => "openings",
            Bounded::OpenedRow => "opened row",
            Bounded::ProofHashes => "multiproof",
        })
    }
}

impl ProtocolError {
    /// The error code a peer is told when one of its frames fails with this (SPEC §8.5).
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::Malformed(_) => ErrorCode::Malformed,
            ProtocolError::FrameTooLarge { .. } => ErrorCode::TooLarge,
            ProtocolError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            ProtocolError::BadShape { .. }
            | ProtocolError::OverLimit { .. }
            | ProtocolError::NoRows(_)
            | ProtocolError::RowsNotIncreasing { .. }
            | ProtocolError::RepeatedDevice { .. }
            | ProtocolError::DeadlineBeforeIssue => ErrorCode::Invalid,
            ProtocolError::BadRowIndex { .. } => ErrorCode::RowsOutOfRange,
            ProtocolError::UnknownMode(_)
            | ProtocolError::NotIntegerMode(_)
            | ProtocolError::NoLeaves
            | ProtocolError::TooManyLeaves { .. } => ErrorCode::Internal,
        }
    }
}
