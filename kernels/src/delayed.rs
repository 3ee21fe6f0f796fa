//! [`Delayed`]: a backend that holds its device longer than the one it wraps, a stand-in for a
//! slower device where only the time matters (tests of devices shared between coordinators,
//! timeouts, demos). It computes the same product, so every answer still verifies.

use std::time::Duration;

use veribench_protocol::DeviceKey;

use crate::backend::{Backend, BackendError, BackendKind, DeviceInfo, Execution, Job};

/// `inner`, holding the device `delay` longer per challenge.
#[derive(Debug)]
pub struct Delayed<B> {
    inner: B,
    delay: Duration,
}

impl<B: Backend> Delayed<B> {
    /// Wraps `inner`, adding `delay` to every execution.
    pub fn new(inner: B, delay: Duration) -> Self {
        Self { inner, delay }
    }
}

impl<B: Backend> Backend for Delayed<B> {
    fn kind(&self) -> BackendKind {
        self.inner.kind()
    }

    fn devices(&self) -> &[DeviceInfo] {
        self.inner.devices()
    }

    fn execute_job(&self, device: &DeviceKey, job: &Job) -> Result<Execution, BackendError> {
        let run = self.inner.execute_job(device, job)?;
        std::thread::sleep(self.delay);
        Ok(run)
    }
}
