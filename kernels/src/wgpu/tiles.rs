//! Tile shapes of the WGSL GEMMs: what a configuration is, which ones a device can run, and the
//! shader source specialised for one.
//!
//! Why these parameters: a workgroup of `wg_x × wg_y` invocations computes a
//! `(wg_y·tm) × (wg_x·tn)` tile of C, each invocation a `tm × tn` block held in registers, walking
//! K `tile_k` elements at a time through workgroup memory. Larger register blocks give more
//! multiply-adds per workgroup-memory read (the bound on most GPUs) but cost registers and
//! occupancy; larger `tile_k` halves barrier count per doubling but costs workgroup memory. The
//! best point differs per GPU, hence [`super::WgpuBackend::tune`].
//!
//! The defaults (16 × 16 invocations, 4 × 4 blocks, a 64 × 64 C tile) are the common portable
//! choice: 256 invocations is the WebGPU default limit, 16 accumulators fit any GPU's register
//! file without spilling, and the staged tiles take ~8 KiB of the 16 KiB WebGPU guarantees, which
//! leaves room for two resident workgroups per compute unit. `tile_k` is 16 for f32; int8 packs
//! four K elements per word, so 64 K elements stage the same 16 words.

use std::fmt;

use veribench_protocol::Mode;

use crate::backend::BackendError;

/// Which GEMM shader a mode runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmKernel {
    /// `gemm_f32.wgsl`: fp32, and fp16/bf16 (small integers, exact in f32).
    F32,
    /// `gemm_int8.wgsl`: packed int8 with `dot4I8Packed`, i32 accumulation.
    Int8,
}

impl GemmKernel {
    /// The kernel that computes `mode`.
    pub fn for_mode(mode: Mode) -> Self {
        if mode == Mode::Int8 { GemmKernel::Int8 } else { GemmKernel::F32 }
    }

    /// The WGSL source, before tile specialisation: the prelude both kernels share (tiling
    /// parameters, uniform block), then the kernel's own text.
    fn source(self) -> &'static str {
        match self {
            GemmKernel::F32 => concat!(
                include_str!("../../../shaders/gemm_prelude.wgsl"),
                include_str!("../../../shaders/gemm_f32.wgsl")
            ),
            GemmKernel::Int8 => concat!(
                include_str!("../../../shaders/gemm_prelude.wgsl"),
                include_str!("../../../shaders/gemm_int8.wgsl")
            ),
        }
    }

    /// Bytes of one staged element (both kernels stage 4-byte words).
    const WORD: u32 = 4;
}

/// One tiling of a GEMM shader. See the module documentation for what each field trades.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TileConfig {
    /// Invocations per workgroup along N (columns of C).
    pub wg_x: u32,
    /// Invocations per workgroup along M (rows of C).
    pub wg_y: u32,
    /// Rows of C per invocation (register block height), 1..=8.
    pub tm: u32,
    /// Columns of C per invocation (register block width), 1..=8.
    pub tn: u32,
    /// K elements staged per step; a multiple of 4 for int8 (four K elements per packed word).
    pub tile_k: u32,
}

impl fmt::Display for TileConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wg {}x{}, block {}x{}, tile {}x{}x{}",
            self.wg_x,
            self.wg_y,
            self.tm,
            self.tn,
            self.block_m(),
            self.block_n(),
            self.tile_k
        )
    }
}

/// Largest register block side: 8 × 8 = 64 accumulators is already more than most GPUs keep
/// without spilling.
const MAX_BLOCK: u32 = 8;

impl TileConfig {
    /// The default tiling of `kernel` (see the module documentation).
    pub const fn default_for(kernel: GemmKernel) -> Self {
        let tile_k = match kernel {
            GemmKernel::F32 => 16,
            GemmKernel::Int8 => 64,
        };
        Self { wg_x: 16, wg_y: 16, tm: 4, tn: 4, tile_k }
    }

    /// A spread of tilings worth timing on an unknown GPU: small and large workgroups, register
    /// blocks from 2 × 2 to 8 × 8, shallow and deep K tiles. Every one fits WebGPU's default
    /// limits (256 invocations, 16 KiB of workgroup memory).
    pub fn candidates(kernel: GemmKernel) -> Vec<Self> {
        let k = |f32_k: u32| match kernel {
            GemmKernel::F32 => f32_k,
            GemmKernel::Int8 => 4 * f32_k,
        };
        let t = |wg_x, wg_y, tm, tn, tile_k| Self { wg_x, wg_y, tm, tn, tile_k };
        vec![
            Self::default_for(kernel),
            t(16, 16, 2, 2, k(16)),
            t(8, 8, 4, 4, k(16)),
            t(8, 8, 4, 4, k(32)),
            t(16, 16, 4, 4, k(8)),
            t(16, 8, 4, 4, k(16)),
            t(8, 8, 8, 8, k(8)),
            t(16, 16, 8, 4, k(8)),
            t(32, 8, 2, 4, k(16)),
            t(8, 16, 8, 4, k(16)),
        ]
    }

    /// Rows of C per workgroup.
    pub const fn block_m(&self) -> u32 {
        self.wg_y * self.tm
    }

    /// Columns of C per workgroup.
    pub const fn block_n(&self) -> u32 {
        self.wg_x * self.tn
    }

    /// Invocations per workgroup.
    pub const fn invocations(&self) -> u32 {
        self.wg_x * self.wg_y
    }

    /// Workgroup memory the shader declares, in bytes (mirrors the WGSL array sizes).
    pub fn workgroup_bytes(&self, kernel: GemmKernel) -> u64 {
        let words_k = u64::from(match kernel {
            GemmKernel::F32 => self.tile_k,
            GemmKernel::Int8 => self.tile_k / 4,
        });
        let a = words_k * (u64::from(self.block_m()) + 1);
        let b = words_k * u64::from(self.block_n());
        (a + b) * u64::from(GemmKernel::WORD)
    }

    /// Checks the tiling is well-formed for `kernel` and fits `limits`.
    pub fn validate(
        &self,
        kernel: GemmKernel,
        limits: &::wgpu::Limits,
    ) -> Result<(), BackendError> {
        let bad = |why: String| Err(BackendError::Device(format!("tile config {self}: {why}")));
        if self.wg_x == 0 || self.wg_y == 0 || self.tile_k == 0 {
            return bad("every size must be at least 1".into());
        }
        if !(1..=MAX_BLOCK).contains(&self.tm) || !(1..=MAX_BLOCK).contains(&self.tn) {
            return bad(format!("register block sides must be in 1..={MAX_BLOCK}"));
        }
        if kernel == GemmKernel::Int8 && !self.tile_k.is_multiple_of(4) {
            return bad("int8 tile_k must be a multiple of 4 (packed words)".into());
        }
        if self.wg_x > limits.max_compute_workgroup_size_x
            || self.wg_y > limits.max_compute_workgroup_size_y
            || u64::from(self.wg_x) * u64::from(self.wg_y)
                > u64::from(limits.max_compute_invocations_per_workgroup)
        {
            return bad(format!(
                "workgroup exceeds the device's limits ({} x {}, {} invocations)",
                limits.max_compute_workgroup_size_x,
                limits.max_compute_workgroup_size_y,
                limits.max_compute_invocations_per_workgroup
            ));
        }
        let shared = self.workgroup_bytes(kernel);
        if shared > u64::from(limits.max_compute_workgroup_storage_size) {
            return bad(format!(
                "needs {shared} bytes of workgroup memory, the device has {}",
                limits.max_compute_workgroup_storage_size
            ));
        }
        Ok(())
    }

    /// The kernel's WGSL with this tiling's register block substituted; the other sizes are
    /// pipeline-overridable constants, see [`Self::overrides`].
    pub(crate) fn shader_source(&self, kernel: GemmKernel) -> Result<String, BackendError> {
        let mut source = kernel.source().to_owned();
        for (name, value) in [("TM", self.tm), ("TN", self.tn)] {
            let marked = format!("const {name}: u32 = 4u; // @tile {name}");
            if !source.contains(&marked) {
                return Err(BackendError::Device(format!(
                    "shader template lacks the line {marked:?}"
                )));
            }
            source = source.replace(&marked, &format!("const {name}: u32 = {value}u;"));
        }
        Ok(source)
    }

    /// Values of the shader's `override` constants.
    pub(crate) fn overrides(&self) -> [(&'static str, f64); 3] {
        [
            ("WG_X", f64::from(self.wg_x)),
            ("WG_Y", f64::from(self.wg_y)),
            ("TILE_K", f64::from(self.tile_k)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_candidates_fit_webgpu_default_limits() {
        let limits = ::wgpu::Limits::default();
        for kernel in [GemmKernel::F32, GemmKernel::Int8] {
            for tiles in TileConfig::candidates(kernel) {
                assert!(tiles.validate(kernel, &limits).is_ok(), "{kernel:?} {tiles}");
                assert!(tiles.shader_source(kernel).is_ok());
            }
        }
        let odd = TileConfig { tile_k: 6, ..TileConfig::default_for(GemmKernel::Int8) };
        assert!(odd.validate(GemmKernel::Int8, &limits).is_err());
    }
}
