//! From a backend's execution to a commitment and its openings: the same for every backend.

use std::time::{Duration, Instant};

use veribench_protocol::{
    Challenge, Commitment, DeviceKey, DeviceSeed, Openings, Root, RowOpening,
};

use crate::backend::{Backend, BackendError, Execution};

/// A challenge computed and committed on one device, kept until its rows have been opened.
#[derive(Debug)]
pub struct CommittedRun {
    /// The challenge answered.
    pub challenge: Challenge,
    /// The device that computed it.
    pub device: DeviceKey,
    /// The device's seed for this challenge.
    pub seed: DeviceSeed,
    /// Building the Merkle tree.
    pub merkle_time: Duration,
    execution: Execution,
    commitment: Commitment,
}

/// Executes `challenge` on `device` and commits to the product.
pub fn run_challenge(
    backend: &dyn Backend,
    device: &DeviceKey,
    challenge: &Challenge,
) -> Result<CommittedRun, BackendError> {
    let execution = backend.execute(device, challenge)?;
    let started = Instant::now();
    let commitment = Commitment::from_leaves(&execution.leaves)?;
    Ok(CommittedRun {
        challenge: challenge.clone(),
        device: device.clone(),
        seed: challenge.device_seed(device),
        merkle_time: started.elapsed(),
        execution,
        commitment,
    })
}

impl CommittedRun {
    /// The root to send as the commitment.
    pub fn root(&self) -> Root {
        self.commitment.root()
    }

    /// The backend's per-phase times.
    pub fn execution(&self) -> &Execution {
        &self.execution
    }

    /// Opens `rows` (strictly increasing): their bytes and one multiproof. A row outside the
    /// product is [`BackendError::RowOutOfRange`] (the first such row), checked before the
    /// proof is built, so a worker can refuse it as the peer's mistake rather than its own.
    pub fn open(&self, rows: &[u32]) -> Result<Openings, BackendError> {
        let total = self.commitment.rows();
        if let Some(&row) = rows.iter().find(|&&row| row >= total) {
            return Err(BackendError::RowOutOfRange { row, rows: total });
        }
        let proof = self.commitment.prove(rows)?;
        let rows = rows
            .iter()
            .map(|&row| Ok(RowOpening { row, bytes: self.execution.product.row_bytes(row)? }))
            .collect::<Result<Vec<_>, BackendError>>()?;
        Ok(Openings { rows, proof })
    }
}
