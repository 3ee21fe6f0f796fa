//! The CPU backend: rayon across cores, AVX-512 where the CPU has it.
//!
//! - int8: our VNNI GEMM ([`int8`]), i32 product.
//! - fp32: the `gemm` crate (AVX-512 "x86-v4" kernels), f32 product.
//! - fp16/bf16: the elements are integers in [-16, 15] (SPEC §3.3), so A and B are generated as
//!   i8 and multiplied by the int8 GEMM, an exact algorithm (SPEC §9) at integer speed: every
//!   i32 sum is exact (|sum| ≤ 65536·16·16 = 2²⁴) and so is its conversion to f32 (|v| ≤ 2²⁴),
//!   giving the one right answer the f32 accumulation of fp16/bf16 inputs gives. The i32 → f32
//!   conversion is fused into the parallel hash pass (`Entries::IntsAsFloat`); i32 0 becomes
//!   +0, so no -0 can arise on this path. [`HalfGemm::F32`] keeps the former fp32-GEMM path
//!   reachable, for comparison.
//! - fp32 (and fp16/bf16 on [`HalfGemm::F32`]): -0 entries are rewritten to +0 as the rows are
//!   hashed (SPEC's bytes are unique), fused into the parallel hash pass so it costs no extra
//!   pass over C.
//!
//! Memory is A, B and C plus the GEMMs' bounded packing buffers.

pub mod int8;

use std::time::Instant;

use rayon::prelude::*;
use veribench_protocol::{DeviceKey, Generator, MAX_DIM, Matrix, Mode};

use crate::backend::{
    Backend, BackendError, BackendKind, DeviceInfo, Execution, Job, PhaseTimings, try_zeroed,
};
use crate::host::{Entries, HostProduct};

/// The host's CPU as one device.
#[derive(Debug)]
pub struct CpuBackend {
    devices: Vec<DeviceInfo>,
    /// A and B of the last challenge, reused by the next: first-touch page faults on fresh
    /// buffers cost as much as generating them (~20 ms for fp32 n = 4096).
    scratch_i8: Scratch<i8>,
    scratch_f32: Scratch<f32>,
    half_gemm: HalfGemm,
}

// The int8 path for fp16/bf16 is exact only while |sum| ≤ k·16·16 stays within 2²⁴, where i32
// sums convert to f32 exactly: true for every k the protocol allows.
const _: () = assert!(MAX_DIM as u64 * 16 * 16 <= 1 << 24);

/// How the CPU backend multiplies fp16 and bf16 challenges. Both are exact and give identical
/// products; they differ only in speed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HalfGemm {
    /// The int8 GEMM on i8 elements, i32 sums converted to f32 (the fast path).
    #[default]
    Int8,
    /// The fp32 `gemm` crate on f32 elements (the former path, kept for comparison).
    F32,
}

/// A small pool of operand buffers.
#[derive(Debug)]
struct Scratch<T>(std::sync::Mutex<Vec<Vec<T>>>);

impl<T> Default for Scratch<T> {
    fn default() -> Self {
        Self(std::sync::Mutex::new(Vec::new()))
    }
}

impl<T: bytemuck::Zeroable + Copy + Default> Scratch<T> {
    /// Buffers kept: A and B of one challenge.
    const KEEP: usize = 2;

    /// A buffer of `len` elements (contents unspecified: the generator overwrites all of it).
    fn take(&self, len: usize) -> Result<Vec<T>, BackendError> {
        let reused = self.0.lock().ok().and_then(|mut pool| {
            let at = pool.iter().position(|v| v.capacity() >= len)?;
            Some(pool.swap_remove(at))
        });
        match reused {
            Some(mut v) => {
                v.resize(len, T::default());
                Ok(v)
            }
            None => try_zeroed(len),
        }
    }

    /// Returns buffers for the next challenge.
    fn give(&self, buffers: [Vec<T>; 2]) {
        if let Ok(mut pool) = self.0.lock() {
            pool.extend(buffers);
            pool.sort_by_key(|v| std::cmp::Reverse(v.capacity()));
            pool.truncate(Self::KEEP);
        }
    }
}

impl CpuBackend {
    /// The CPU of this machine, keyed `cpu:<machine id>` so two hosts never share a seed.
    pub fn new() -> Self {
        let id = std::fs::read_to_string("/etc/machine-id")
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".to_owned());
        let key = DeviceKey::new(format!("cpu:{}", truncate_at_char(&id, MAX_MACHINE_ID_BYTES)))
            .unwrap_or_else(|| DeviceKey::new("cpu:localhost").expect("constant key is valid"));
        Self::with_device_key(key)
    }

    /// A CPU device with an explicit key (several simulated workers on one host, tests).
    pub fn with_device_key(key: DeviceKey) -> Self {
        let device = DeviceInfo {
            key,
            name: format!(
                "{} ({} threads, int8 kernel {})",
                cpu_model(),
                rayon::current_num_threads(),
                int8::gemm_i8_kernel_name()
            ),
            memory_bytes: total_memory_bytes(),
            kind: BackendKind::Cpu,
        };
        Self {
            devices: vec![device],
            scratch_i8: Scratch::default(),
            scratch_f32: Scratch::default(),
            half_gemm: HalfGemm::default(),
        }
    }

    /// This backend with fp16/bf16 multiplied by `half_gemm` (benchmarks and tests compare the
    /// paths; the default is the fastest).
    pub fn with_half_gemm(mut self, half_gemm: HalfGemm) -> Self {
        self.half_gemm = half_gemm;
        self
    }
}

/// Bytes of the machine id kept in the CPU's device key.
const MAX_MACHINE_ID_BYTES: usize = 64;

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary: a
/// hostname may hold multibyte characters, where a plain byte cut would panic.
fn truncate_at_char(s: &str, max: usize) -> &str {
    let end = (0..=max.min(s.len())).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    &s[..end]
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

/// The CPU model from `/proc/cpuinfo`, or the architecture name.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned())
}

/// A `/proc/meminfo` field in bytes (`MemTotal`, `MemAvailable`), `None` when unknown.
fn meminfo_bytes(field: &str) -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb.saturating_mul(1024))
}

/// Total memory, 0 when unknown.
pub fn total_memory_bytes() -> u64 {
    meminfo_bytes("MemTotal").unwrap_or(0)
}

/// Refuses a challenge whose buffers exceed the memory the kernel says is available. Linux
/// overcommits: without this check a too-large challenge allocates fine and is then killed by
/// the OOM killer while it generates.
fn check_memory(bytes: u64) -> Result<(), BackendError> {
    match meminfo_bytes("MemAvailable") {
        Some(available) if bytes > available => Err(BackendError::OutOfMemory { bytes }),
        _ => Ok(()),
    }
}

/// Fills a row-major `rows × cols` matrix from the generator, rows in parallel.
fn generate<T: Send>(out: &mut [T], cols: usize, fill: impl Fn(u32, &mut [T]) + Sync) {
    out.par_chunks_mut(cols).enumerate().for_each(|(row, dst)| fill(row as u32, dst));
}

/// C = A·B in f32 through the `gemm` crate, all row-major.
fn gemm_f32(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(a.len() == m * k && b.len() == k * n && c.len() == m * n, "operand sizes");
    // SAFETY: the pointers cover m×k, k×n and m×n row-major elements (checked above); strides
    // are in elements and C does not alias A or B (distinct borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
}

impl Backend for CpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn devices(&self) -> &[DeviceInfo] {
        &self.devices
    }

    fn execute_job(&self, device: &DeviceKey, job: &Job) -> Result<Execution, BackendError> {
        if !self.devices.iter().any(|d| &d.key == device) {
            return Err(BackendError::UnknownDevice(device.clone()));
        }
        let (shape, seed) = (job.shape(), job.seed());
        let (m, k, n) = (shape.m as usize, shape.k as usize, shape.n as usize);
        let generator = Generator::new(seed, job.mode());
        let mut timings = PhaseTimings::default();

        // fp16/bf16 elements are integers in [-16, 15]: i8 holds them, and k ≤ MAX_DIM = 2¹⁶
        // keeps every i32 sum within ±2²⁴, where the conversion to f32 is exact.
        let integer_gemm = match job.mode() {
            Mode::Int8 => Some(Entries::Canonical),
            Mode::Fp16 | Mode::Bf16 if self.half_gemm == HalfGemm::Int8 => {
                Some(Entries::IntsAsFloat)
            }
            _ => None,
        };
        let input_bytes = if integer_gemm.is_some() { 1 } else { 4 };
        let (m64, k64, n64) = (m as u64, k as u64, n as u64);
        check_memory((m64 * k64 + k64 * n64) * input_bytes + m64 * n64 * 4)?;

        let started = Instant::now();
        if let Some(entries) = integer_gemm {
            let mut a = self.scratch_i8.take(m * k)?;
            let mut b = self.scratch_i8.take(k * n)?;
            let mut c = try_zeroed::<i32>(m * n)?;
            let generator = &generator;
            let fill = |matrix| {
                move |row, dst: &mut [i8]| {
                    // Int8, fp16 and bf16 are exact modes: they always have integer elements.
                    let _ = generator.fill_i8(matrix, row, 0, dst);
                }
            };
            generate(&mut a, k, fill(Matrix::A));
            generate(&mut b, n, fill(Matrix::B));
            timings.generate = started.elapsed();
            let t = Instant::now();
            int8::gemm_i8(m, k, n, &a, &b, &mut c, false);
            timings.gemm = t.elapsed();
            self.scratch_i8.give([a, b]);
            // Int8 rows are the i32 sums; fp16/bf16 rows are their f32 values, converted as the
            // rows are hashed.
            Ok(HostProduct::new(c, n, shape.m, entries).into_execution(seed, timings))
        } else {
            let mut a = self.scratch_f32.take(m * k)?;
            let mut b = self.scratch_f32.take(k * n)?;
            let mut c = try_zeroed::<f32>(m * n)?;
            generate(&mut a, k, |row, dst| generator.fill_f32(Matrix::A, row, 0, dst));
            generate(&mut b, n, |row, dst| generator.fill_f32(Matrix::B, row, 0, dst));
            timings.generate = started.elapsed();
            let t = Instant::now();
            gemm_f32(m, k, n, &a, &b, &mut c);
            timings.gemm = t.elapsed();
            self.scratch_f32.give([a, b]);
            // The `gemm` crate writes beta·(A·B) without a +0 accumulator start, so an entry
            // whose products are all -0 comes out -0: the hash pass rewrites it to +0.
            Ok(HostProduct::new(c, n, shape.m, Entries::FloatBits).into_execution(seed, timings))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::truncate_at_char;

    #[test]
    fn machine_ids_are_cut_at_a_character_boundary() {
        // 63 ASCII bytes, then 'é' (2 bytes) straddles byte 64: it is dropped, not split.
        let host = format!("{}é-rest", "a".repeat(63));
        assert_eq!(truncate_at_char(&host, 64), "a".repeat(63));
        // A cut that lands on a boundary keeps exactly 64 bytes.
        let kana = "ホ".repeat(30); // 3 bytes each: boundaries at multiples of 3
        assert_eq!(truncate_at_char(&kana, 64), "ホ".repeat(21));
        assert_eq!(truncate_at_char(&kana, 63).len(), 63);
        assert_eq!(truncate_at_char("short", 64), "short");
        assert_eq!(truncate_at_char("", 64), "");
    }
}
