//! Start-up self-test of every GPU: the CUDA generator against the protocol's reference, the
//! device leaves against [`leaf_hash`] (which decides the GPU's [`LeafPath`]), and a whole small
//! challenge per mode through the real verifier.

use cudarc::driver::DevicePtr;
use veribench_protocol::generator::threefry4x32;
use veribench_protocol::{
    Challenge, ChallengeId, DeviceKey, DeviceSeed, Mode, Seed, Shape, UnixMillis, leaf_hash,
    verify_openings,
};

use super::{CudaBackend, Gpu, LeafBatch, LeafPath, dev, driver_error, key_words, launch};
use crate::backend::BackendError;
use crate::prover::run_challenge;

/// Random123's 13-round known answer for key 0, counter 0 (SPEC §3.1): row 0, block 0 of a
/// matrix with tag 0 under an all-zero key.
const KAT_ZERO: [u32; 4] = [0x531c_7e4f, 0x3949_1ee5, 0x2c85_5a92, 0x3d6a_bf9a];

/// A shape whose k and n are not multiples of the padding, so the padded layout is exercised.
const SHAPE: Shape = Shape { m: 33, k: 70, n: 45 };

/// Row lengths (entries) of the device-leaf check; the message is n + 9 words: one block (1),
/// a whole block (7) and one word more (8), a whole chunk (247) and one word more (248), five
/// chunks around 1024, and 257 chunks at MAX_DIM (a 256-chunk left subtree, a promoted tail).
const LEAF_LENGTHS: [u32; 9] = [1, 7, 8, 247, 248, 1023, 1024, 1025, 65_536];
/// Rows per length (consecutive indices, so the row word differs).
const LEAF_ROWS: u32 = 2;
/// Words between the crafted rows beyond their length: the padding is hashed if misread.
const LEAF_PAD: u32 = 3;

impl CudaBackend {
    /// Checks `device` end to end, in about a second:
    ///
    /// 0. on a GPU that hashes its own leaves ([`LeafPath::Device`]), `leaves.cu` still gives
    ///    [`leaf_hash`]'s leaves of crafted rows of every block and chunk edge (the check that
    ///    chose the path when the GPU was opened);
    /// 1. the GPU's Threefry stream equals Random123's known answer and the protocol's
    ///    `threefry4x32` word for word (a row and tag other than 0);
    /// 2. for every mode, a `33 × 70 × 45` challenge is executed, committed, every row opened and
    ///    checked by [`verify_openings`] — the coordinator's own check: generator, layout,
    ///    padding, cuBLAS types (exactness; TF32 would miss the fp32 bound) and leaves, on the
    ///    GPU's leaf path.
    ///
    /// [`CudaBackend::new`] runs it on every GPU; it is public so operators can rerun it.
    pub fn self_test(&self, device: &DeviceKey) -> Result<(), BackendError> {
        let gpu = self.gpu(device)?;
        let fail = |what: String| BackendError::Device(format!("self-test on {device}: {what}"));

        // The start-up choice of the device leaves still holds.
        if gpu.info.leaf_path == LeafPath::Device
            && let Some(mismatch) = gpu.device_leaf_mismatch()?
        {
            return Err(fail(format!("device leaves: {mismatch}")));
        }

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

impl Gpu {
    /// The GPU's [`LeafPath`]: [`LeafPath::Device`] when its leaves of the crafted rows equal
    /// [`leaf_hash`]; otherwise (or when the check cannot run) a warning and [`LeafPath::Host`].
    pub(super) fn choose_leaf_path(&self) -> LeafPath {
        let why = match self.device_leaf_mismatch() {
            Ok(None) => return LeafPath::Device,
            Ok(Some(mismatch)) => mismatch,
            Err(e) => format!("the check failed: {e}"),
        };
        tracing::warn!(
            gpu = %self.info.uuid,
            name = %self.info.name,
            "device leaves differ from leaf_hash ({why}); hashing C on the host instead"
        );
        LeafPath::Host
    }

    /// Hashes [`LEAF_ROWS`] pseudo-random rows of each of [`LEAF_LENGTHS`] on the GPU, through
    /// the launch path challenges use, with row indices at both ends of u32, and compares every
    /// leaf with [`leaf_hash`]. `Ok(Some(what))` describes the first mismatch.
    fn device_leaf_mismatch(&self) -> Result<Option<String>, BackendError> {
        let state = self.lock()?;
        let stream = &state.compute;
        let seed = DeviceSeed(std::array::from_fn(|i| (i as u8).wrapping_mul(0x9d) ^ 0x5c));
        let seed_words = key_words(&seed);
        for (i, &n) in (0u32..).zip(&LEAF_LENGTHS) {
            let stride = n + LEAF_PAD;
            let first_row = if i % 2 == 0 { u32::MAX - (LEAF_ROWS - 1) } else { i << 20 };
            // Threefry as a deterministic source of row words (contents are arbitrary).
            let words = (stride * LEAF_ROWS) as usize;
            let rows: Vec<u32> = (0..words as u32)
                .map(|t| threefry4x32([0x1eaf, n, 0, 0], [t / 4, i, 0, 0])[(t % 4) as usize])
                .collect();
            let c =
                stream.clone_htod(&rows).map_err(driver_error("cuMemAlloc", words as u64 * 4))?;
            let scratch_words = launch::leaf_scratch_words(LEAF_ROWS, n).max(1);
            // SAFETY: written by vb_leaf_chunks before vb_leaf_roots reads it (same stream).
            let scratch = unsafe { stream.alloc::<u32>(scratch_words) }
                .map_err(driver_error("cuMemAlloc", scratch_words as u64 * 4))?;
            let out = stream
                .alloc_zeros::<u32>(LEAF_ROWS as usize * launch::CV_WORDS)
                .map_err(dev("cuMemAlloc"))?;
            let batch = {
                let (c, _) = c.device_ptr(stream);
                let (scratch, _) = scratch.device_ptr(stream);
                let (out, _) = out.device_ptr(stream);
                LeafBatch {
                    c,
                    stride: u64::from(stride),
                    n,
                    rows: LEAF_ROWS,
                    first_row,
                    scratch,
                    out,
                }
            };
            super::launch_leaves(stream, &state.kernels, &batch, &seed_words)?;
            let got =
                super::leaves_from_words(&stream.clone_dtoh(&out).map_err(dev("cuMemcpyDtoH"))?);
            stream.synchronize().map_err(dev("cuStreamSynchronize"))?;
            for (r, leaf) in (0..LEAF_ROWS).zip(&got) {
                let at = (r * stride) as usize;
                let bytes: Vec<u8> =
                    rows[at..at + n as usize].iter().flat_map(|w| w.to_le_bytes()).collect();
                let expected = leaf_hash(&seed, first_row + r, &bytes);
                if *leaf != expected {
                    return Ok(Some(format!(
                        "row {} of {n} entries: leaf {leaf} != leaf_hash {expected}",
                        first_row + r
                    )));
                }
            }
        }
        Ok(None)
    }
}
