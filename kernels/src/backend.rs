//! The contract every compute backend fulfils.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;
use veribench_protocol::{
    Challenge, DeviceKey, DeviceSeed, Leaf, MAX_DIM, Mode, ProtocolError, Shape,
};

/// Where a GPU backend hashes the rows of C to their leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafPath {
    /// BLAKE3 on the device (`kernels/cuda/leaves.cu`, `shaders/leaves.wgsl`): only the leaves
    /// cross the bus and C stays on the device for openings. Chosen when the device's leaves of
    /// crafted rows of every edge length equal [`veribench_protocol::leaf_hash`] at start-up.
    Device,
    /// C copied to the host and hashed there with [`veribench_protocol::leaf_hash`]: the
    /// fallback for a device whose start-up check failed, which costs only speed.
    Host,
}

/// Device families a worker can compute on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Host CPU cores (rayon).
    Cpu,
    /// NVIDIA GPUs through the CUDA driver, cuBLAS and NVRTC.
    Cuda,
    /// Any Vulkan/Metal/DX12 GPU through wgpu.
    Wgpu,
}

impl BackendKind {
    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
            BackendKind::Wgpu => "wgpu",
        }
    }

    /// Whether this build has the family's backend: the CPU always, CUDA and wgpu with their
    /// cargo features.
    pub fn is_compiled(self) -> bool {
        match self {
            BackendKind::Cpu => true,
            BackendKind::Cuda => cfg!(feature = "cuda"),
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [BackendKind::Cpu, BackendKind::Cuda, BackendKind::Wgpu]
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| BackendError::Unavailable(format!("unknown backend {s:?}")))
    }
}

/// Everything a backend can fail with. None of these is a panic: a worker reports them and
/// carries on.
#[derive(Debug, Error)]
pub enum BackendError {
    /// The backend cannot run on this machine (no driver, no device).
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// This build was made without the backend's cargo feature.
    #[error("the {0} backend is not compiled into this build (enable the cargo feature `{0}`)")]
    NotCompiled(BackendKind),
    /// The challenge names a device this backend does not own.
    #[error("device {0} is not served by this backend")]
    UnknownDevice(DeviceKey),
    /// The challenge's shape is outside the protocol's limits.
    #[error("challenge refused: {0}")]
    Shape(#[from] ProtocolError),
    /// The matrices do not fit in memory.
    #[error("challenge needs {bytes} bytes of memory, which could not be allocated")]
    OutOfMemory {
        /// Bytes requested.
        bytes: u64,
    },
    /// A row outside the product was asked for.
    #[error("row {row} is outside a product of {rows} rows")]
    RowOutOfRange {
        /// The row asked for.
        row: u32,
        /// Rows in the product.
        rows: u32,
    },
    /// A device or driver call failed.
    #[error("device error: {0}")]
    Device(String),
}

/// A device a backend can compute on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Stable identity, mixed into the device's seed.
    pub key: DeviceKey,
    /// Human-readable model name.
    pub name: String,
    /// Memory available to challenges, in bytes.
    pub memory_bytes: u64,
    /// The family it belongs to.
    pub kind: BackendKind,
}

/// Wall time of each phase of one execution, measured by the backend for its operator. The
/// coordinator never trusts these: it measures the whole round trip itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhaseTimings {
    /// Generating A and B from the seed.
    pub generate: Duration,
    /// The matrix multiply.
    pub gemm: Duration,
    /// Hashing every row of C to its leaf.
    pub hash: Duration,
}

/// Rows of a computed product, kept until the coordinator has asked for its openings.
pub trait RowSource: Send + Sync {
    /// The canonical little-endian bytes of one row (what its leaf hashed).
    fn row_bytes(&self, row: u32) -> Result<Vec<u8>, BackendError>;
}

/// What [`Backend::execute`] hands back.
pub struct Execution {
    /// One leaf per row of C, in row order.
    pub leaves: Vec<Leaf>,
    /// Per-phase wall times.
    pub timings: PhaseTimings,
    /// The product, for openings.
    pub product: Box<dyn RowSource>,
}

impl fmt::Debug for Execution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Execution")
            .field("rows", &self.leaves.len())
            .field("timings", &self.timings)
            .finish_non_exhaustive()
    }
}

/// A challenge as a backend runs it: its shape checked against the protocol's limits and the
/// seed of its matrices derived, once, before any backend sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Job {
    mode: Mode,
    shape: Shape,
    seed: DeviceSeed,
}

impl Job {
    /// `challenge` computed from the matrices of `seed`, refused if its shape is outside the
    /// protocol's limits.
    pub fn new(challenge: &Challenge, seed: DeviceSeed) -> Result<Self, BackendError> {
        challenge.shape.validate(MAX_DIM)?;
        Ok(Self { mode: challenge.mode, shape: challenge.shape, seed })
    }

    /// `challenge` on `device`, from the device's own seed.
    pub fn for_device(challenge: &Challenge, device: &DeviceKey) -> Result<Self, BackendError> {
        Self::new(challenge, challenge.device_seed(device))
    }

    /// The arithmetic mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The product's shape, within the protocol's limits.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The seed A and B are generated from, and the leaves are keyed with.
    pub fn seed(&self) -> &DeviceSeed {
        &self.seed
    }
}

/// A compute backend: generate, multiply, hash, keep.
pub trait Backend: Send + Sync {
    /// The device family.
    fn kind(&self) -> BackendKind;

    /// The devices this backend computes on; a challenge names one of them.
    fn devices(&self) -> &[DeviceInfo];

    /// Runs `job` on `device`: generates A and B from the job's seed, multiplies them in its
    /// mode and hashes every row of the product to its leaf. The one method a backend
    /// implements; the shape is already checked and the seed derived.
    fn execute_job(&self, device: &DeviceKey, job: &Job) -> Result<Execution, BackendError>;

    /// Runs `challenge` on `device`, from the device's seed.
    fn execute(
        &self,
        device: &DeviceKey,
        challenge: &Challenge,
    ) -> Result<Execution, BackendError> {
        self.execute_job(device, &Job::for_device(challenge, device)?)
    }

    /// [`Backend::execute`] with the matrices of `seed` rather than of the device's own key: a
    /// prover-market batch names its own device key (SPEC §7.4), which no device here has.
    fn execute_seeded(
        &self,
        device: &DeviceKey,
        challenge: &Challenge,
        seed: DeviceSeed,
    ) -> Result<Execution, BackendError> {
        self.execute_job(device, &Job::new(challenge, seed)?)
    }
}

/// Allocates a zeroed vector of plain numbers, or reports how much memory was missing instead of
/// aborting. It uses the allocator's zeroed path, so large buffers come from fresh zero pages
/// and are not written twice.
pub(crate) fn try_zeroed<T: bytemuck::Zeroable + Copy>(len: usize) -> Result<Vec<T>, BackendError> {
    let bytes = (len as u64).saturating_mul(std::mem::size_of::<T>() as u64);
    let oom = || BackendError::OutOfMemory { bytes };
    if len == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<T>(len).map_err(|_| oom())?;
    // SAFETY: the layout is non-zero-sized (len > 0 and T is a number type); alloc_zeroed returns
    // memory for `len` Ts whose all-zero bit pattern is valid (T: Zeroable), or null, handled
    // below. Vec::from_raw_parts takes ownership with the same layout the global allocator used.
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout).cast::<T>();
        if ptr.is_null() {
            return Err(oom());
        }
        advise_huge_pages(ptr.cast(), bytes as usize);
        Ok(Vec::from_raw_parts(ptr, len, len))
    }
}

/// Asks Linux to back a large buffer with transparent huge pages: first-touch page faults
/// otherwise cost ~1 µs per 4 KiB page, a quarter of the generate phase at n = 4096. Advice only:
/// failure changes nothing but speed.
#[cfg(target_os = "linux")]
fn advise_huge_pages(ptr: *mut u8, len: usize) {
    const HUGE: usize = 2 << 20;
    if len < 2 * HUGE {
        return;
    }
    let start = (ptr as usize).next_multiple_of(HUGE);
    let end = (ptr as usize + len) / HUGE * HUGE;
    if end > start {
        // SAFETY: [start, end) lies inside the allocation just made; madvise with MADV_HUGEPAGE
        // does not change the contents or validity of the mapping.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_ptr: *mut u8, _len: usize) {}
