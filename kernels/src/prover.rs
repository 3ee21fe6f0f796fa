//! From a backend's execution to a commitment and its openings: the same for every backend.

use std::time::{Duration, Instant};

use veribench_protocol::{
    Challenge, Commitment, DeviceKey, DeviceSeed, Openings, Root, RowOpening,
};

use crate::backend::{Backend, BackendError, Execution, Job};

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

/// Executes `challenge` on `device` and commits to the product. The shape is checked and the
/// device's seed derived here, once; the backend receives both as a [`Job`].
pub fn run_challenge(
    backend: &dyn Backend,
    device: &DeviceKey,
    challenge: &Challenge,
) -> Result<CommittedRun, BackendError> {
    let job = Job::for_device(challenge, device)?;
    let execution = backend.execute_job(device, &job)?;
    let started = Instant::now();
    let commitment = Commitment::from_leaves(&execution.leaves)?;
    Ok(CommittedRun {
        challenge: challenge.clone(),
        device: device.clone(),
        seed: *job.seed(),
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use veribench_protocol::{ChallengeId, Mode, Seed, Shape, UnixMillis};

    use super::*;
    use crate::backend::{BackendKind, DeviceInfo};
    use crate::cpu::CpuBackend;

    /// The CPU backend, recording every job it is handed.
    struct Recording {
        inner: CpuBackend,
        jobs: Mutex<Vec<Job>>,
    }

    impl Backend for Recording {
        fn kind(&self) -> BackendKind {
            self.inner.kind()
        }

        fn devices(&self) -> &[DeviceInfo] {
            self.inner.devices()
        }

        fn execute_job(&self, device: &DeviceKey, job: &Job) -> Result<Execution, BackendError> {
            self.jobs.lock().expect("lock").push(*job);
            self.inner.execute_job(device, job)
        }
    }

    fn challenge(shape: Shape) -> Challenge {
        Challenge {
            id: ChallengeId(1),
            seed: Seed([3; 32]),
            mode: Mode::Int8,
            shape,
            issued_at: UnixMillis(0),
            deadline: UnixMillis(u64::MAX),
        }
    }

    #[test]
    fn the_shape_is_checked_and_the_seed_derived_before_the_backend_runs() {
        let device = DeviceKey::new("cpu:test").expect("key");
        let backend = Recording {
            inner: CpuBackend::with_device_key(device.clone()),
            jobs: Mutex::new(Vec::new()),
        };
        let bad = challenge(Shape { m: 0, k: 4, n: 4 });
        assert!(matches!(run_challenge(&backend, &device, &bad), Err(BackendError::Shape(_))));
        assert!(backend.jobs.lock().expect("lock").is_empty(), "a bad shape never reaches it");

        let good = challenge(Shape { m: 3, k: 5, n: 2 });
        let run = run_challenge(&backend, &device, &good).expect("runs");
        let jobs = backend.jobs.lock().expect("lock").clone();
        assert_eq!(jobs, [Job::for_device(&good, &device).expect("valid")]);
        assert_eq!(*jobs[0].seed(), good.device_seed(&device));
        assert_eq!(run.seed, good.device_seed(&device));
        assert_eq!((jobs[0].shape(), jobs[0].mode()), (good.shape, good.mode));
        assert_eq!(run.execution().leaves.len(), 3);
    }
}
