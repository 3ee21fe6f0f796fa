//! Measures the wgpu backend: GEMM throughput at a few sizes and the tuner's ranking.
//!
//! `cargo run --release -p veribench-kernels --example wgpu_tune -- [n ...]` (default 256 512).
//! Uses a real GPU when present, else a software adapter (lavapipe). The worker's
//! `bench --backend wgpu --tune` does the same through the public API; this is the quick way to
//! look at one machine without the worker.

use std::time::Instant;

use veribench_kernels::wgpu::GemmKernel;
use veribench_kernels::{Backend, TileConfig, WgpuBackend, WgpuOptions};
use veribench_protocol::{Challenge, ChallengeId, Mode, Seed, Shape, UnixMillis};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes: Vec<u32> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![256, 512] } else { sizes };
    let backend = WgpuBackend::new(WgpuOptions { allow_cpu_adapter: true, ..Default::default() })?;
    let device = backend.devices()[0].clone();
    println!("device: {} [{}]", device.name, device.key);
    if let Some(max) = backend.max_buffer_bytes(&device.key) {
        println!("largest matrix buffer: {max} bytes");
    }

    for &n in &sizes {
        for mode in [Mode::Int8, Mode::Fp32] {
            let challenge = Challenge {
                id: ChallengeId(u64::from(n)),
                seed: Seed([n as u8; 32]),
                mode,
                shape: Shape::square(n),
                issued_at: UnixMillis(0),
                deadline: UnixMillis(u64::MAX),
            };
            // One warm-up run (first dispatches finish pipeline compilation), then the measure.
            backend.execute(&device.key, &challenge)?;
            let started = Instant::now();
            let run = backend.execute(&device.key, &challenge)?;
            let total = started.elapsed();
            let t = run.timings;
            let ops = challenge.shape.ops();
            println!(
                "n={n:5} {mode:4}: gemm {:8.2} ms = {:7.2} GOP/s | generate {:7.2} ms, hash+readback \
                 {:7.2} ms, end to end {:7.2} GOP/s",
                t.gemm.as_secs_f64() * 1e3,
                ops / t.gemm.as_secs_f64() / 1e9,
                t.generate.as_secs_f64() * 1e3,
                t.hash.as_secs_f64() * 1e3,
                ops / total.as_secs_f64() / 1e9,
            );
        }
    }

    let n = *sizes.iter().max().unwrap_or(&512);
    for (mode, kernel) in [(Mode::Int8, GemmKernel::Int8), (Mode::Fp32, GemmKernel::F32)] {
        println!("tuning {mode} at n={n}:");
        for (tiles, gops) in backend.tune(mode, n, &TileConfig::candidates(kernel))? {
            println!("  {gops:8.2} GOP/s  {tiles}");
        }
    }
    Ok(())
}
