//! Start-up self-test of every GPU: the CUDA generator against the protocol's reference, and a
//! whole small challenge per mode through the real verifier.

use veribench_protocol::generator::threefry4x32;
use veribench_protocol::{
    Challenge, ChallengeId, DeviceKey, Mode, Seed, Shape, UnixMillis, verify_openings,
};

use super::CudaBackend;
use crate::backend::BackendError;
use crate::prover::run_challenge;

/// Random123's 13-round known answer for key 0, counter 0 (SPEC §3.1): row 0, block 0 of a
/// matrix with tag 0 under an all-zero key.
const KAT_ZERO: [u32; 4] = [0x531c_7e4f, 0x3949_1ee5, 0x2c85_5a92, 0x3d6a_bf9a];

/// A shape whose k and n are not multiples of the padding, so the padded layout is exercised.
const SHAPE: Shape = Shape { m: 33, k: 70, n: 45 };

impl CudaBackend {
    /// Checks `device` end to end, in about a second:
    ///
    /// 1. the GPU's Threefry stream equals Random123's known answer and the protocol's
    ///    `threefry4x32` word for word (a row and tag other than 0);
    /// 2. for every mode, a `33 × 70 × 45` challenge is executed, committed, every row opened and
    ///    checked by [`verify_openings`] — the coordinator's own check: generator, layout,
    ///    padding, cuBLAS types (exactness; TF32 would miss the fp32 bound) and leaves.
    ///
    /// [`CudaBackend::new`] runs it on every GPU; it is public so operators can rerun it.
    pub fn self_test(&self, device: &DeviceKey) -> Result<(), BackendError> {
        let gpu = self.gpu(device)?;
        let fail = |what: String| BackendError::Device(format!("self-test on {device}: {what}"));

        let words = gpu.stream_words([0; 4], 0, 0, 4)?;
        if words != KAT_ZERO {
            return Err(fail(format!("Threefry known answer {words:08x?} != {KAT_ZERO:08x?}")));
        }
        let key = [0x0123_4567, 0x89ab_cdef, 0xdead_beef, 0x0bad_f00d];
        let (tag, row, count) = (1, 77, 64);
        let words = gpu.stream_words(key, tag, row, count)?;
        for (t, &w) in (0u32..).zip(&words) {
            let expected = threefry4x32(key, [row, t / 4, tag, 0])[(t % 4) as usize];
            if w != expected {
                return Err(fail(format!(
                    "stream word {t} of row {row}: {w:08x} != {expected:08x}"
                )));
            }
        }

        for mode in Mode::ALL {
            let challenge = Challenge {
                id: ChallengeId(0),
                seed: Seed([0xa5; 32]),
                mode,
                shape: SHAPE,
                issued_at: UnixMillis(0),
                deadline: UnixMillis(u64::MAX),
            };
            let run = run_challenge(self, device, &challenge)?;
            let rows: Vec<u32> = (0..SHAPE.m).collect();
            let openings = run.open(&rows)?;
            let verdict = verify_openings(mode, SHAPE, &run.seed, &run.root(), &rows, &openings);
            if !verdict.is_accepted() {
                return Err(fail(format!("{mode} {SHAPE} challenge rejected: {verdict:?}")));
            }
        }
        Ok(())
    }
}
