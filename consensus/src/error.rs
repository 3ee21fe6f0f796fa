//! The crate's error type.

use crate::codec::CodecError;
use crate::transport::TransportError;
use crate::wal::WalError;

/// Why consensus could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// No permitted validator has stake: nobody could vote.
    #[error("no validator with a permit has stake")]
    NoValidators,
    /// More validators than any subnet has: hostile or corrupt chain data.
    #[error("{0} validators: more than a validator set can hold")]
    TooManyValidators(usize),
    /// The write-ahead log failed.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// Bytes that do not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The gRPC transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The listening socket failed.
    #[error("consensus listener: {0}")]
    Listener(#[source] std::io::Error),
    /// The node has stopped.
    #[error("the consensus node has stopped")]
    Stopped,
}
