//! Shared set-up of the criterion benches: one CPU device, challenges, and sampling budgets
//! small enough that each bench file runs in a few minutes on two cores.

// Each bench file uses a subset of these helpers.
#![allow(dead_code)]

use std::time::Duration;

use criterion::BenchmarkGroup;
use criterion::measurement::WallTime;
use veribench_kernels::CpuBackend;
use veribench_protocol::{Challenge, ChallengeId, DeviceKey, Mode, Seed, Shape, UnixMillis};

/// The device key every bench computes and verifies under.
pub fn device() -> DeviceKey {
    DeviceKey::new("cpu:bench").expect("constant device key is valid")
}

/// The CPU backend serving [`device`].
pub fn cpu_backend() -> CpuBackend {
    CpuBackend::with_device_key(device())
}

/// A square `n × n × n` challenge in `mode` with a fixed seed and no deadline.
pub fn challenge(mode: Mode, n: u32) -> Challenge {
    Challenge {
        id: ChallengeId(u64::from(n)),
        seed: Seed([0x5a; 32]),
        mode,
        shape: Shape::square(n),
        issued_at: UnixMillis(0),
        deadline: UnixMillis(u64::MAX),
    }
}

/// Short warm-up and measurement; 10 samples for `heavy` inputs (≳ 50 ms per iteration), where
/// criterion's automatic sampling then switches to flat sampling (one pass per sample).
pub fn budget(group: &mut BenchmarkGroup<'_, WallTime>, heavy: bool) {
    group
        .sample_size(if heavy { 10 } else { 20 })
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
}
