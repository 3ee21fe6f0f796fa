//! Row leaves on the device: `shaders/leaves.wgsl` hashes C where the GEMM left it, so only
//! m × 32 bytes of leaves cross the bus instead of m × n × 4 bytes of product, and C stays on
//! the device to serve openings ([`DeviceProduct`]).
//!
//! Why a self-test: a shader compiler that miscompiled the hash would make every commitment of
//! the device wrong, and the verifier would reject all of its work. At start-up the shader hashes
//! crafted rows of every edge length of BLAKE3's chunking and has to agree with
//! [`leaf_hash`] bit for bit; if it does not (or fails to run), the backend keeps hashing on the
//! host ([`LeafPath::Host`]), which only costs speed.

use veribench_protocol::commitment::LEAF_CONTEXT;
use veribench_protocol::{DeviceSeed, Leaf, leaf_hash};

use super::Fault;
use super::gpu::{ErrorScopes, Gpu, Handle, ceil_div};
use crate::backend::{BackendError, LeafPath, RowSource};

/// Invocations per workgroup (`WG` in leaves.wgsl).
const WG: u32 = 64;
/// u32 words per BLAKE3 chunk (1 KiB).
const CHUNK_WORDS: u64 = 256;
/// Message words after a row's entries: the device seed (8) and the row index (1).
const SUFFIX_WORDS: u64 = 9;
/// Bytes of one chaining value or leaf.
const CV_BYTES: u64 = 32;

/// Row lengths of the self-test, in entries: a message of exactly one block (7) and one word
/// more (8), of exactly one chunk (247) and one word more (248), around four chunks
/// (1023, 1024, 1025: non-power-of-two trees) and the largest rows (65536: 257 chunks).
pub(crate) const SELF_TEST_LENGTHS: [u32; 9] = [1, 7, 8, 247, 248, 1023, 1024, 1025, 65536];

/// The key the leaf shader hashes with: BLAKE3's derive_key context key of [`LEAF_CONTEXT`], as
/// little-endian words. [`Fault::BrokenLeafShader`] flips one bit of it.
pub(crate) fn leaf_key(fault: Fault) -> [u32; 8] {
    let key = blake3::hazmat::hash_derive_key_context(LEAF_CONTEXT);
    let mut words = [0u32; 8];
    for (word, bytes) in words.iter_mut().zip(key.chunks_exact(4)) {
        *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    if fault == Fault::BrokenLeafShader {
        words[0] ^= 1;
    }
    words
}

/// BLAKE3 chunks in the message of a row of `n` entries.
fn chunks_per_row(n: u32) -> u64 {
    (u64::from(n) + SUFFIX_WORDS).div_ceil(CHUNK_WORDS)
}

/// Device bytes the leaf passes need besides C: the chunk chaining values (none when a row is a
/// single chunk), and the leaves.
pub(crate) fn scratch_bytes(rows: u32, n: u32) -> (u64, u64) {
    let chunks = chunks_per_row(n);
    let cvs = if chunks > 1 { u64::from(rows) * chunks * CV_BYTES } else { 0 };
    (cvs, u64::from(rows) * CV_BYTES)
}

/// The two passes of `leaves.wgsl` and the key they hash with.
#[derive(Debug)]
pub(crate) struct LeafShader {
    layout: ::wgpu::BindGroupLayout,
    chunks: ::wgpu::ComputePipeline,
    merge: ::wgpu::ComputePipeline,
    key: [u32; 8],
}

impl LeafShader {
    /// Compiles both passes, with errors captured.
    pub(crate) fn compile(device: &::wgpu::Device, key: [u32; 8]) -> Result<Self, BackendError> {
        let entry = |binding, ty| ::wgpu::BindGroupLayoutEntry {
            binding,
            visibility: ::wgpu::ShaderStages::COMPUTE,
            ty,
            count: None,
        };
        let buffer = |ty| ::wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: false,
            min_binding_size: None,
        };
        let storage = |read_only| buffer(::wgpu::BufferBindingType::Storage { read_only });
        let scope = ErrorScopes::push(device);
        let layout = device.create_bind_group_layout(&::wgpu::BindGroupLayoutDescriptor {
            label: Some("leaves"),
            entries: &[
                entry(0, buffer(::wgpu::BufferBindingType::Uniform)),
                entry(1, storage(true)),
                entry(2, storage(false)),
                entry(3, storage(false)),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&::wgpu::PipelineLayoutDescriptor {
            label: Some("leaves"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let module = device.create_shader_module(::wgpu::ShaderModuleDescriptor {
            label: Some("leaves.wgsl"),
            source: ::wgpu::ShaderSource::Wgsl(include_str!("../../../shaders/leaves.wgsl").into()),
        });
        let pipeline = |entry_point| {
            device.create_compute_pipeline(&::wgpu::ComputePipelineDescriptor {
                label: Some(entry_point),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(entry_point),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let chunks = pipeline("leaf_chunks");
        let merge = pipeline("leaf_merge");
        scope.pop("compiling the leaf shader")?;
        Ok(Self { layout, chunks, merge, key })
    }
}

impl Gpu {
    /// Hashes `rows` rows of `n` entries of `c` (row-major u32 words, already canonical) to their
    /// leaves, row `r` with index `first_row + r` (wrapping), and reads back only the leaves.
    /// Callers run it inside [`Gpu::scoped`].
    pub(crate) fn hash_rows(
        &self,
        c: &::wgpu::Buffer,
        seed: &DeviceSeed,
        n: u32,
        rows: u32,
        first_row: u32,
    ) -> Result<Vec<Leaf>, BackendError> {
        let chunks = chunks_per_row(n);
        let (cv_bytes, leaf_bytes) = scratch_bytes(rows, n);
        for bytes in [cv_bytes, leaf_bytes] {
            if bytes > self.max_binding() {
                return Err(BackendError::OutOfMemory { bytes });
            }
        }
        let items = u32::try_from(u64::from(rows) * chunks)
            .map_err(|_| BackendError::OutOfMemory { bytes: cv_bytes })?;
        let shader = &self.leaves;
        let handle = &self.handle;
        let cvs = handle.storage_buffer("chunk chaining values", cv_bytes);
        let leaves = handle.storage_buffer("leaves", leaf_bytes);

        let mut params = Vec::with_capacity(20);
        params.extend_from_slice(&shader.key);
        params.extend(
            seed.as_bytes().chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        params.extend_from_slice(&[n, rows, first_row, chunks as u32]);
        let params = handle.uniform("leaf params", &params);
        let bind = handle.device.create_bind_group(&::wgpu::BindGroupDescriptor {
            label: Some("leaves"),
            layout: &shader.layout,
            entries: &[
                ::wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() },
                ::wgpu::BindGroupEntry { binding: 1, resource: c.as_entire_binding() },
                ::wgpu::BindGroupEntry { binding: 2, resource: cvs.as_entire_binding() },
                ::wgpu::BindGroupEntry { binding: 3, resource: leaves.as_entire_binding() },
            ],
        });
        let mut encoder = handle.encoder("leaves");
        let mut passes = vec![(&shader.chunks, items)];
        if chunks > 1 {
            passes.push((&shader.merge, rows));
        }
        // Separate passes: the merge reads what every chunk invocation wrote.
        for (pipeline, work) in passes {
            let (gx, gy) = self.grid(ceil_div(work, WG));
            let mut pass = encoder.begin_compute_pass(&::wgpu::ComputePassDescriptor {
                label: Some("leaves"),
                timestamp_writes: None,
            });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(gx, gy, 1);
        }
        handle.submit_and_wait(encoder)?;
        let bytes = handle.read_bytes(&leaves, 0, leaf_bytes)?;
        Ok(bytes
            .chunks_exact(CV_BYTES as usize)
            .map(|leaf| {
                let mut out = [0u8; 32];
                out.copy_from_slice(leaf);
                Leaf(out)
            })
            .collect())
    }

    /// Uploads `words` (rows of `n` entries) and hashes them with the leaf shader, whatever
    /// [`LeafPath`] the device uses. Callers run it inside [`Gpu::scoped`].
    pub(crate) fn leaves_of(
        &self,
        seed: &DeviceSeed,
        first_row: u32,
        n: u32,
        words: &[u32],
    ) -> Result<Vec<Leaf>, BackendError> {
        let bytes = words.len() as u64 * 4;
        if n == 0 || words.is_empty() || !words.len().is_multiple_of(n as usize) {
            return Err(BackendError::Device(format!(
                "{} words are no whole number of rows of {n} entries",
                words.len()
            )));
        }
        if bytes > self.max_binding() {
            return Err(BackendError::OutOfMemory { bytes });
        }
        let rows = u32::try_from(words.len() / n as usize)
            .map_err(|_| BackendError::OutOfMemory { bytes })?;
        let le: Vec<u32> = words.iter().map(|w| w.to_le()).collect();
        let c = ::wgpu::util::DeviceExt::create_buffer_init(
            &self.handle.device,
            &::wgpu::util::BufferInitDescriptor {
                label: Some("rows"),
                contents: bytemuck::cast_slice(&le),
                usage: ::wgpu::BufferUsages::STORAGE,
            },
        );
        self.hash_rows(&c, seed, n, rows, first_row)
    }
}

/// SplitMix64: the self-test's row contents, arbitrary but fixed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Hashes two rows of random words of every [`SELF_TEST_LENGTHS`] length on the device, at row
/// indices near 0 and near `u32::MAX`, and compares them with [`leaf_hash`].
fn self_test(gpu: &Gpu) -> Result<(), BackendError> {
    let mut rng = SplitMix(0x7665_7269_6265_6e63);
    for (i, n) in SELF_TEST_LENGTHS.into_iter().enumerate() {
        const ROWS: u32 = 2;
        let first_row = if i % 2 == 0 { i as u32 } else { u32::MAX - ROWS + 1 };
        let mut seed = [0u8; 32];
        seed.iter_mut().for_each(|b| *b = rng.next() as u8);
        let seed = DeviceSeed(seed);
        let words: Vec<u32> = (0..n * ROWS).map(|_| rng.next() as u32).collect();
        let got = gpu.leaves_of(&seed, first_row, n, &words)?;
        for (r, (row, leaf)) in words.chunks_exact(n as usize).zip(&got).enumerate() {
            let bytes: Vec<u8> = row.iter().flat_map(|w| w.to_le_bytes()).collect();
            if *leaf != leaf_hash(&seed, first_row + r as u32, &bytes) {
                return Err(BackendError::Device(format!(
                    "the leaf shader disagrees with leaf_hash on a row of {n} entries"
                )));
            }
        }
    }
    Ok(())
}

/// Runs the self-test on `gpu` and picks its [`LeafPath`], warning when it falls back to the
/// host.
pub(crate) fn select_path(gpu: &Gpu) -> LeafPath {
    match gpu.scoped("self-testing the leaf shader", || self_test(gpu)) {
        Ok(()) => {
            tracing::debug!(adapter = %gpu.info.name, "product rows are hashed on the device");
            LeafPath::Device
        }
        Err(error) => {
            tracing::warn!(
                adapter = %gpu.info.name, %error,
                "the leaf shader failed its self-test; product rows are hashed on the host"
            );
            LeafPath::Host
        }
    }
}

/// A product left in its device buffer: an opening copies its row to a small staging buffer and
/// maps that.
pub(crate) struct DeviceProduct {
    handle: Handle,
    c: ::wgpu::Buffer,
    n: u32,
    rows: u32,
}

impl DeviceProduct {
    /// `c` holds `rows` rows of `n` canonical entries, row-major.
    pub(crate) fn new(handle: Handle, c: ::wgpu::Buffer, n: u32, rows: u32) -> Self {
        Self { handle, c, n, rows }
    }
}

impl RowSource for DeviceProduct {
    fn row_bytes(&self, row: u32) -> Result<Vec<u8>, BackendError> {
        if row >= self.rows {
            return Err(BackendError::RowOutOfRange { row, rows: self.rows });
        }
        let bytes = u64::from(self.n) * 4;
        // Entries are stored as little-endian words: the canonical bytes as they are.
        self.handle.scoped("opening a product row", || {
            self.handle.read_bytes(&self.c, u64::from(row) * bytes, bytes)
        })
    }
}
