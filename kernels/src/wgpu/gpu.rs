//! One wgpu device with its pipelines, and the few GPU operations the backend needs: buffers,
//! generator and GEMM dispatches, synchronisation and read-back. The leaf shader's dispatches
//! are in [`super::leaves`].
//!
//! Why a layer of its own: every wgpu call can fail asynchronously (validation, out-of-memory,
//! device loss), and wgpu's default reaction to an uncaptured error is a panic. Everything here
//! runs inside error scopes ([`Gpu::scoped`]) and behind an uncaptured-error handler that only
//! records, so a failure surfaces as [`BackendError::Device`] and never takes the worker down.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use ::wgpu::util::DeviceExt;
use veribench_protocol::{DeviceSeed, Mode, Shape};

use super::leaves::LeafShader;
use super::tiles::{GemmKernel, TileConfig};
use crate::backend::{BackendError, LeafPath};

/// Invocations per generator workgroup (`WG` in generator.wgsl).
const GEN_WG: u32 = 64;
/// Threefry-4x32 block: 4 words, 16 bytes.
const BLOCK_WORDS: u32 = 4;
const BLOCK_BYTES: u32 = 16;
/// Key-schedule parity constant (SPEC §3.1).
const KS_PARITY: u32 = 0x1BD1_1BDA;

/// A compiled GEMM pipeline and the tiling it was specialised for.
#[derive(Debug)]
pub(crate) struct GemmPipeline {
    pub(crate) tiles: TileConfig,
    pipeline: ::wgpu::ComputePipeline,
}

/// Errors wgpu reported outside any scope, and device loss; read after every sync point.
#[derive(Debug, Default)]
struct Alarms {
    uncaptured: Mutex<Option<String>>,
    lost: Mutex<Option<String>>,
}

impl Alarms {
    /// A lost device stays lost (every later call fails); an uncaptured error is reported once.
    fn check(&self) -> Result<(), BackendError> {
        if let Some(message) = self.lost.lock().ok().and_then(|s| s.clone()) {
            return Err(BackendError::Device(format!("device lost: {message}")));
        }
        if let Some(message) = self.uncaptured.lock().ok().and_then(|mut s| s.take()) {
            return Err(BackendError::Device(format!("uncaptured error: {message}")));
        }
        Ok(())
    }
}

/// A device, its queue and its alarms: what a product left on the device needs to serve its
/// openings after the execution that computed it has returned. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Handle {
    pub(crate) device: ::wgpu::Device,
    queue: ::wgpu::Queue,
    alarms: Arc<Alarms>,
}

/// A device, its queue and the pipelines of every shader.
#[derive(Debug)]
pub(crate) struct Gpu {
    pub(crate) info: ::wgpu::AdapterInfo,
    pub(crate) limits: ::wgpu::Limits,
    pub(crate) handle: Handle,
    gen_layout: ::wgpu::BindGroupLayout,
    gen_f32: ::wgpu::ComputePipeline,
    gen_i8_rows: ::wgpu::ComputePipeline,
    gen_i8_cols: ::wgpu::ComputePipeline,
    gemm_layout: ::wgpu::PipelineLayout,
    gemm_bind_layout: ::wgpu::BindGroupLayout,
    pub(crate) gemm_f32: GemmPipeline,
    pub(crate) gemm_i8: GemmPipeline,
    pub(crate) leaves: LeafShader,
    /// Where rows are hashed; [`LeafPath::Host`] until the leaf shader passes its self-test.
    pub(crate) leaf_path: LeafPath,
}

/// A matrix on the device, with the layout the GEMM of its mode reads.
#[derive(Debug)]
pub(crate) struct DeviceMatrix {
    pub(crate) buffer: ::wgpu::Buffer,
}

/// Storage layouts of the generated matrices (see generator.wgsl).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Row-major f32.
    F32,
    /// int8 A: row-major, 4 K elements per word.
    PackedRows,
    /// int8 B: 4 K rows per word, `kw × n` words.
    PackedCols,
}

/// Bytes each buffer of a challenge needs on the device.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Footprint {
    pub(crate) a: u64,
    pub(crate) b: u64,
    pub(crate) c: u64,
}

impl Footprint {
    pub(crate) fn new(mode: Mode, shape: Shape) -> Self {
        let (m, k, n) = (u64::from(shape.m), u64::from(shape.k), u64::from(shape.n));
        let (a, b) = if mode == Mode::Int8 {
            let kw = k.div_ceil(4);
            (m * kw * 4, kw * n * 4)
        } else {
            (m * k * 4, k * n * 4)
        };
        Self { a, b, c: m * n * 4 }
    }

    pub(crate) fn total(&self) -> u64 {
        self.a + self.b + self.c
    }
}

/// `a / b` rounded up.
pub(crate) fn ceil_div(a: u32, b: u32) -> u32 {
    a.div_ceil(b)
}

impl Gpu {
    /// Opens `adapter` with its full limits and compiles every pipeline; the leaf shader hashes
    /// with `leaf_key` (see [`super::leaves::leaf_key`]).
    pub(crate) fn open(
        adapter: &::wgpu::Adapter,
        f32_tiles: TileConfig,
        i8_tiles: TileConfig,
        leaf_key: [u32; 8],
    ) -> Result<Self, BackendError> {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) =
            pollster::block_on(adapter.request_device(&::wgpu::DeviceDescriptor {
                label: Some("veribench"),
                required_features: ::wgpu::Features::empty(),
                required_limits: limits.clone(),
                experimental_features: ::wgpu::ExperimentalFeatures::disabled(),
                memory_hints: ::wgpu::MemoryHints::Performance,
                trace: ::wgpu::Trace::Off,
            }))
            .map_err(|e| BackendError::Device(format!("opening {}: {e}", info.name)))?;

        let alarms = Arc::new(Alarms::default());
        let sink = Arc::clone(&alarms);
        device.on_uncaptured_error(Arc::new(move |error: ::wgpu::Error| {
            tracing::error!(%error, "wgpu uncaptured error");
            if let Ok(mut slot) = sink.uncaptured.lock() {
                slot.get_or_insert_with(|| error.to_string());
            }
        }));
        let sink = Arc::clone(&alarms);
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut slot) = sink.lost.lock() {
                slot.get_or_insert_with(|| format!("{reason:?}: {message}"));
            }
        });

        let entry = |binding, ty| ::wgpu::BindGroupLayoutEntry {
            binding,
            visibility: ::wgpu::ShaderStages::COMPUTE,
            ty,
            count: None,
        };
        let uniform = ::wgpu::BindingType::Buffer {
            ty: ::wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: None,
        };
        let storage = |read_only| ::wgpu::BindingType::Buffer {
            ty: ::wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        };

        let scope = ErrorScopes::push(&device);
        let gen_layout = device.create_bind_group_layout(&::wgpu::BindGroupLayoutDescriptor {
            label: Some("generator"),
            entries: &[entry(0, uniform), entry(1, storage(false))],
        });
        let gen_pipeline_layout =
            device.create_pipeline_layout(&::wgpu::PipelineLayoutDescriptor {
                label: Some("generator"),
                bind_group_layouts: &[Some(&gen_layout)],
                immediate_size: 0,
            });
        let gen_module = device.create_shader_module(::wgpu::ShaderModuleDescriptor {
            label: Some("generator.wgsl"),
            source: ::wgpu::ShaderSource::Wgsl(
                include_str!("../../../shaders/generator.wgsl").into(),
            ),
        });
        let gen_pipeline = |entry_point| {
            device.create_compute_pipeline(&::wgpu::ComputePipelineDescriptor {
                label: Some(entry_point),
                layout: Some(&gen_pipeline_layout),
                module: &gen_module,
                entry_point: Some(entry_point),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let gen_f32 = gen_pipeline("gen_f32");
        let gen_i8_rows = gen_pipeline("gen_i8_rows");
        let gen_i8_cols = gen_pipeline("gen_i8_cols");
        let gemm_bind_layout =
            device.create_bind_group_layout(&::wgpu::BindGroupLayoutDescriptor {
                label: Some("gemm"),
                entries: &[
                    entry(0, uniform),
                    entry(1, storage(true)),
                    entry(2, storage(true)),
                    entry(3, storage(false)),
                ],
            });
        let gemm_layout = device.create_pipeline_layout(&::wgpu::PipelineLayoutDescriptor {
            label: Some("gemm"),
            bind_group_layouts: &[Some(&gemm_bind_layout)],
            immediate_size: 0,
        });
        scope.pop("compiling the generator")?;

        let gemm_f32 = compile_gemm(&device, &gemm_layout, &limits, GemmKernel::F32, f32_tiles)?;
        let gemm_i8 = compile_gemm(&device, &gemm_layout, &limits, GemmKernel::Int8, i8_tiles)?;
        let leaves = LeafShader::compile(&device, leaf_key)?;
        alarms.check()?;
        Ok(Self {
            info,
            limits,
            handle: Handle { device, queue, alarms },
            gen_layout,
            gen_f32,
            gen_i8_rows,
            gen_i8_cols,
            gemm_layout,
            gemm_bind_layout,
            gemm_f32,
            gemm_i8,
            leaves,
            leaf_path: LeafPath::Host,
        })
    }

    /// Compiles `kernel` with `tiles` on this device.
    pub(crate) fn compile(
        &self,
        kernel: GemmKernel,
        tiles: TileConfig,
    ) -> Result<GemmPipeline, BackendError> {
        compile_gemm(&self.handle.device, &self.gemm_layout, &self.limits, kernel, tiles)
    }

    /// The pipeline currently used for `mode`.
    pub(crate) fn pipeline_for(&self, mode: Mode) -> &GemmPipeline {
        match GemmKernel::for_mode(mode) {
            GemmKernel::F32 => &self.gemm_f32,
            GemmKernel::Int8 => &self.gemm_i8,
        }
    }

    /// The largest buffer a shader may bind on this device.
    pub(crate) fn max_binding(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
    }

    /// See [`Handle::scoped`].
    pub(crate) fn scoped<T>(
        &self,
        what: &str,
        f: impl FnOnce() -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        self.handle.scoped(what, f)
    }

    /// See [`Handle::submit_and_wait`].
    pub(crate) fn submit_and_wait(
        &self,
        encoder: ::wgpu::CommandEncoder,
    ) -> Result<(), BackendError> {
        self.handle.submit_and_wait(encoder)
    }

    pub(crate) fn encoder(&self, label: &str) -> ::wgpu::CommandEncoder {
        self.handle.encoder(label)
    }

    /// Records one generator dispatch of matrix `matrix_tag` (0 = A, 1 = B) filling `out`.
    #[allow(clippy::too_many_arguments)] // Plain operands; a struct would only rename them.
    fn record_generate(
        &self,
        encoder: &mut ::wgpu::CommandEncoder,
        seed: &DeviceSeed,
        mode: Mode,
        tag: u32,
        rows: u32,
        cols: u32,
        layout: Layout,
        out: &::wgpu::Buffer,
    ) {
        let w = |i: usize| {
            let b = &seed.as_bytes()[4 * i..4 * i + 4];
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        };
        let base = 4 * tag as usize;
        let key = [w(base), w(base + 1), w(base + 2), w(base + 3)];
        let parity = KS_PARITY ^ key[0] ^ key[1] ^ key[2] ^ key[3];
        let mode_code = match mode {
            Mode::Int8 => 0,
            Mode::Fp16 | Mode::Bf16 => 1,
            Mode::Fp32 => 2,
        };
        let (pipeline, items, blocks, stride) = match layout {
            Layout::F32 => {
                let per_block = if mode == Mode::Fp32 { BLOCK_WORDS } else { BLOCK_BYTES };
                let blocks = ceil_div(cols, per_block);
                (&self.gen_f32, rows * blocks, blocks, cols)
            }
            Layout::PackedRows => {
                let blocks = ceil_div(cols, BLOCK_BYTES);
                (&self.gen_i8_rows, rows * blocks, blocks, ceil_div(cols, 4))
            }
            Layout::PackedCols => {
                let blocks = ceil_div(cols, BLOCK_BYTES);
                (&self.gen_i8_cols, ceil_div(rows, 4) * blocks, blocks, cols)
            }
        };
        let params = self.handle.uniform(
            "generator params",
            &[
                key[0], key[1], key[2], key[3], parity, tag, rows, cols, mode_code, items, blocks,
                stride,
            ],
        );
        let bind = self.handle.device.create_bind_group(&::wgpu::BindGroupDescriptor {
            label: Some("generator"),
            layout: &self.gen_layout,
            entries: &[
                ::wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() },
                ::wgpu::BindGroupEntry { binding: 1, resource: out.as_entire_binding() },
            ],
        });
        let (gx, gy) = self.grid(ceil_div(items, GEN_WG));
        let mut pass = encoder.begin_compute_pass(&::wgpu::ComputePassDescriptor {
            label: Some("generate"),
            timestamp_writes: None,
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(gx, gy, 1);
    }

    /// A 2-D grid of at least `groups` workgroups within the per-dimension cap.
    pub(crate) fn grid(&self, groups: u32) -> (u32, u32) {
        let cap = self.limits.max_compute_workgroups_per_dimension.max(1);
        let x = groups.clamp(1, cap);
        (x, ceil_div(groups, x).max(1))
    }

    /// Generates A and B of a challenge on the device, in the layouts `mode`'s GEMM reads, and
    /// waits for them.
    pub(crate) fn generate(
        &self,
        seed: &DeviceSeed,
        mode: Mode,
        shape: Shape,
    ) -> Result<(DeviceMatrix, DeviceMatrix), BackendError> {
        let size = Footprint::new(mode, shape);
        let (a_layout, b_layout) = if mode == Mode::Int8 {
            (Layout::PackedRows, Layout::PackedCols)
        } else {
            (Layout::F32, Layout::F32)
        };
        let a = self.handle.storage_buffer("A", size.a);
        let b = self.handle.storage_buffer("B", size.b);
        let mut encoder = self.encoder("generate");
        self.record_generate(&mut encoder, seed, mode, 0, shape.m, shape.k, a_layout, &a);
        self.record_generate(&mut encoder, seed, mode, 1, shape.k, shape.n, b_layout, &b);
        self.submit_and_wait(encoder)?;
        Ok((DeviceMatrix { buffer: a }, DeviceMatrix { buffer: b }))
    }

    /// Allocates C for `shape` (4 bytes per entry).
    pub(crate) fn product_buffer(&self, shape: Shape) -> ::wgpu::Buffer {
        let bytes = u64::from(shape.m) * u64::from(shape.n) * 4;
        self.handle.storage_buffer("C", bytes)
    }

    /// Records C = A·B with `pipeline`; `fault` is the test-only corruption code (0 = none).
    #[allow(clippy::too_many_arguments)] // Plain operands; a struct would only rename them.
    pub(crate) fn record_gemm(
        &self,
        encoder: &mut ::wgpu::CommandEncoder,
        pipeline: &GemmPipeline,
        shape: Shape,
        fault: u32,
        a: &DeviceMatrix,
        b: &DeviceMatrix,
        c: &::wgpu::Buffer,
    ) {
        let params = self.handle.uniform("gemm params", &[shape.m, shape.k, shape.n, fault]);
        let bind = self.handle.device.create_bind_group(&::wgpu::BindGroupDescriptor {
            label: Some("gemm"),
            layout: &self.gemm_bind_layout,
            entries: &[
                ::wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() },
                ::wgpu::BindGroupEntry { binding: 1, resource: a.buffer.as_entire_binding() },
                ::wgpu::BindGroupEntry { binding: 2, resource: b.buffer.as_entire_binding() },
                ::wgpu::BindGroupEntry { binding: 3, resource: c.as_entire_binding() },
            ],
        });
        let tiles = pipeline.tiles;
        let mut pass = encoder.begin_compute_pass(&::wgpu::ComputePassDescriptor {
            label: Some("gemm"),
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipeline.pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(
            ceil_div(shape.n, tiles.block_n()),
            ceil_div(shape.m, tiles.block_m()),
            1,
        );
    }

    /// Checks the dispatch grid of `pipeline` over `shape` is within the device's limits.
    pub(crate) fn check_grid(
        &self,
        pipeline: &GemmPipeline,
        shape: Shape,
    ) -> Result<(), BackendError> {
        let cap = self.limits.max_compute_workgroups_per_dimension;
        let (x, y) = (
            ceil_div(shape.n, pipeline.tiles.block_n()),
            ceil_div(shape.m, pipeline.tiles.block_m()),
        );
        if x > cap || y > cap {
            return Err(BackendError::Device(format!(
                "shape {shape} needs a {x} x {y} workgroup grid with tiles {}; the device allows {cap} per dimension",
                pipeline.tiles
            )));
        }
        Ok(())
    }

    /// See [`Handle::read_words`].
    pub(crate) fn read_words(
        &self,
        buffer: &::wgpu::Buffer,
        bytes: u64,
        out: &mut [u32],
    ) -> Result<(), BackendError> {
        self.handle.read_words(buffer, 0, bytes, out)
    }
}

impl Handle {
    /// Runs `f` inside validation, out-of-memory and internal error scopes; any error they catch
    /// (or an uncaptured error, or device loss) becomes [`BackendError::Device`].
    pub(crate) fn scoped<T>(
        &self,
        what: &str,
        f: impl FnOnce() -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let scope = ErrorScopes::push(&self.device);
        let result = f();
        // A scope's error is the root cause of a failure seen inside (an invalid buffer makes
        // the later mapping fail), so it is reported first.
        scope.pop(what)?;
        self.alarms.check()?;
        result
    }

    /// A storage buffer of `bytes` (rounded up to 4) for a matrix; it can be copied out (the
    /// product for openings, A and B for the generator's diagnostics).
    pub(crate) fn storage_buffer(&self, label: &str, bytes: u64) -> ::wgpu::Buffer {
        let usage = ::wgpu::BufferUsages::STORAGE | ::wgpu::BufferUsages::COPY_SRC;
        self.device.create_buffer(&::wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.next_multiple_of(4).max(4),
            usage,
            mapped_at_creation: false,
        })
    }

    pub(crate) fn uniform(&self, label: &str, words: &[u32]) -> ::wgpu::Buffer {
        self.device.create_buffer_init(&::wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(words),
            usage: ::wgpu::BufferUsages::UNIFORM,
        })
    }

    /// Submits `encoder` and blocks until the device has finished it.
    pub(crate) fn submit_and_wait(
        &self,
        encoder: ::wgpu::CommandEncoder,
    ) -> Result<(), BackendError> {
        let index = self.queue.submit([encoder.finish()]);
        self.device
            .poll(::wgpu::PollType::Wait { submission_index: Some(index), timeout: None })
            .map_err(|e| BackendError::Device(format!("waiting for the GPU: {e}")))?;
        self.alarms.check()
    }

    pub(crate) fn encoder(&self, label: &str) -> ::wgpu::CommandEncoder {
        self.device.create_command_encoder(&::wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    /// Copies `bytes` (a multiple of 4) of `buffer` from `offset` (a multiple of 4) to the host
    /// as u32 words.
    pub(crate) fn read_words(
        &self,
        buffer: &::wgpu::Buffer,
        offset: u64,
        bytes: u64,
        out: &mut [u32],
    ) -> Result<(), BackendError> {
        debug_assert_eq!(out.len() as u64 * 4, bytes);
        self.read_with(buffer, offset, bytes, |view| {
            let bytes_out: &mut [u8] = bytemuck::cast_slice_mut(out);
            bytes_out.copy_from_slice(view);
            // Device buffers are little-endian on every wgpu target; words are kept as such.
            if cfg!(target_endian = "big") {
                for w in out.iter_mut() {
                    *w = u32::from_le(*w);
                }
            }
        })
    }

    /// Copies `bytes` (a multiple of 4) of `buffer` from `offset` (a multiple of 4) to the host
    /// as they are.
    pub(crate) fn read_bytes(
        &self,
        buffer: &::wgpu::Buffer,
        offset: u64,
        bytes: u64,
    ) -> Result<Vec<u8>, BackendError> {
        let len = usize::try_from(bytes).map_err(|_| BackendError::OutOfMemory { bytes })?;
        let mut out = crate::backend::try_zeroed::<u8>(len)?;
        self.read_with(buffer, offset, bytes, |view| out.copy_from_slice(view))?;
        Ok(out)
    }

    /// Copies the range to a staging buffer, maps it and hands the mapped bytes to `f`.
    fn read_with(
        &self,
        buffer: &::wgpu::Buffer,
        offset: u64,
        bytes: u64,
        f: impl FnOnce(&[u8]),
    ) -> Result<(), BackendError> {
        let staging = self.device.create_buffer(&::wgpu::BufferDescriptor {
            label: Some("read-back"),
            size: bytes.max(4),
            usage: ::wgpu::BufferUsages::MAP_READ | ::wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.encoder("read-back");
        encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, bytes);
        self.submit_and_wait(encoder)?;
        let (tx, rx) = mpsc::channel();
        staging.slice(..bytes).map_async(::wgpu::MapMode::Read, move |result| {
            let _ = tx.send(result);
        });
        self.device
            .poll(::wgpu::PollType::wait_indefinitely())
            .map_err(|e| BackendError::Device(format!("waiting for the read-back: {e}")))?;
        rx.recv()
            .map_err(|_| BackendError::Device("read-back callback never ran".into()))?
            .map_err(|e| BackendError::Device(format!("mapping the read-back buffer: {e}")))?;
        {
            let view = staging
                .slice(..bytes)
                .get_mapped_range()
                .map_err(|e| BackendError::Device(format!("reading the mapped buffer: {e}")))?;
            f(&view);
        }
        staging.unmap();
        self.alarms.check()
    }
}

/// Compiles one GEMM pipeline, with errors captured.
fn compile_gemm(
    device: &::wgpu::Device,
    layout: &::wgpu::PipelineLayout,
    limits: &::wgpu::Limits,
    kernel: GemmKernel,
    tiles: TileConfig,
) -> Result<GemmPipeline, BackendError> {
    tiles.validate(kernel, limits)?;
    let source = tiles.shader_source(kernel)?;
    let scope = ErrorScopes::push(device);
    let module = device.create_shader_module(::wgpu::ShaderModuleDescriptor {
        label: Some(match kernel {
            GemmKernel::F32 => "gemm_f32.wgsl",
            GemmKernel::Int8 => "gemm_int8.wgsl",
        }),
        source: ::wgpu::ShaderSource::Wgsl(source.into()),
    });
    let pipeline = device.create_compute_pipeline(&::wgpu::ComputePipelineDescriptor {
        label: Some("gemm"),
        layout: Some(layout),
        module: &module,
        entry_point: Some("main"),
        compilation_options: ::wgpu::PipelineCompilationOptions {
            constants: &tiles.overrides(),
            // Every workgroup array element is written before it is read.
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    });
    scope.pop(&format!("compiling the {kernel:?} GEMM with {tiles}"))?;
    Ok(GemmPipeline { tiles, pipeline })
}

/// The three error scopes every guarded section runs in, innermost first when popped.
pub(crate) struct ErrorScopes {
    scopes: [::wgpu::ErrorScopeGuard; 3],
}

impl ErrorScopes {
    pub(crate) fn push(device: &::wgpu::Device) -> Self {
        Self {
            scopes: [
                device.push_error_scope(::wgpu::ErrorFilter::Internal),
                device.push_error_scope(::wgpu::ErrorFilter::OutOfMemory),
                device.push_error_scope(::wgpu::ErrorFilter::Validation),
            ],
        }
    }

    /// Pops the scopes and reports the first error caught.
    pub(crate) fn pop(self, what: &str) -> Result<(), BackendError> {
        let mut first = None;
        for scope in self.scopes.into_iter().rev() {
            if let Some(error) = pollster::block_on(scope.pop()) {
                first.get_or_insert(error);
            }
        }
        match first {
            None => Ok(()),
            Some(::wgpu::Error::OutOfMemory { .. }) => {
                Err(BackendError::Device(format!("{what}: the device ran out of memory")))
            }
            Some(error) => Err(BackendError::Device(format!("{what}: {error}"))),
        }
    }
}
