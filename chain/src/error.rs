//! Why a chain call failed, and whether trying again can help.

/// A failed chain read or extrinsic.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The node cannot be reached or the connection dropped (transient).
    #[error("chain node unreachable: {0}")]
    Unreachable(String),
    /// A rate limit of the chain (weights, a reveal's epoch, commitments): `blocks_left` more
    /// blocks must pass (transient).
    #[error("rate limited by the chain: {blocks_left} more blocks must pass")]
    RateLimited {
        /// Blocks until the next update is allowed.
        blocks_left: u64,
    },
    /// The signer's hotkey is not registered on the subnet (final).
    #[error("hotkey {0} is not registered on subnet {1}")]
    NotRegistered(String, u16),
    /// The signer has no validator permit on the subnet (final).
    #[error(
        "hotkey {0} has no validator permit on subnet {1}: it cannot set weights \
         (stake more or wait for the next epoch's permits)"
    )]
    NoValidatorPermit(String, u16),
    /// The subnet does not exist.
    #[error("subnet {0} does not exist")]
    NoSuchSubnet(u16),
    /// The chain refused the extrinsic (final), e.g. a module error or a bad argument.
    #[error("extrinsic rejected: {0}")]
    Rejected(String),
    /// A value read from the chain could not be decoded or is inconsistent (final: the node or
    /// the runtime sends something this build does not understand).
    #[error("cannot decode chain state: {0}")]
    Decode(String),
    /// The local chain's state file does not parse (transient): a process writing it without
    /// the lock may be halfway through, or someone is repairing it; the file is left as it is,
    /// and a later call reads it again.
    #[error("local chain state {path} does not parse: {reason}")]
    CorruptState {
        /// The state file.
        path: String,
        /// What the JSON parser said.
        reason: String,
    },
    /// The local chain's state file could not be read or written.
    #[error("local chain state {path}: {source}")]
    Io {
        /// The state file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl ChainError {
    /// Whether the same call may succeed later without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unreachable(_)
                | Self::RateLimited { .. }
                | Self::Io { .. }
                | Self::CorruptState { .. }
        )
    }
}

impl veribench_support::Transient for ChainError {
    fn is_transient(&self) -> bool {
        ChainError::is_transient(self)
    }
}
