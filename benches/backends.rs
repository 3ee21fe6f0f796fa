//! One full challenge (generate, multiply, hash rows) per backend present on this machine, so
//! the same numbers can be compared across CPU, CUDA and wgpu on one box. A backend that cannot
//! start here (no driver, no adapter) is reported and skipped; on a CPU-only machine the wgpu
//! software adapter (lavapipe) stands in, at small sizes.
//!
//! Throughput is `Elements(2·n³)`: criterion's "elem/s" reads as FLOP/s (OP/s for int8).

mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use veribench_kernels::{Backend, CudaBackend, WgpuBackend, WgpuOptions};
use veribench_protocol::Mode;

/// Backends to measure, with the sizes each can do in a few seconds per iteration.
fn backends() -> Vec<(&'static str, Box<dyn Backend>, &'static [u32])> {
    let mut found: Vec<(&'static str, Box<dyn Backend>, &'static [u32])> =
        vec![("cpu", Box::new(common::cpu_backend()), &[512, 1024, 2048])];
    match CudaBackend::new() {
        Ok(cuda) => found.push(("cuda", Box::new(cuda), &[4096, 8192, 16384])),
        Err(e) => eprintln!("skipping cuda: {e}"),
    }
    match WgpuBackend::new(WgpuOptions { allow_cpu_adapter: true, ..WgpuOptions::default() }) {
        Ok(wgpu) => {
            let sizes: &'static [u32] =
                if wgpu.is_software() { &[128, 256] } else { &[2048, 4096, 8192] };
            found.push(("wgpu", Box::new(wgpu), sizes));
        }
        Err(e) => eprintln!("skipping wgpu: {e}"),
    }
    found
}

fn bench_backends(c: &mut Criterion) {
    for (name, backend, sizes) in backends() {
        let Some(device) = backend.devices().first().map(|d| d.key.clone()) else { continue };
        for mode in [Mode::Int8, Mode::Fp32] {
            let mut group = c.benchmark_group(format!("execute/{name}/{mode}"));
            common::budget(&mut group, true);
            for &n in sizes {
                let challenge = common::challenge(mode, n);
                group.throughput(Throughput::Elements(2 * u64::from(n).pow(3)));
                group.bench_function(BenchmarkId::from_parameter(n), |b| {
                    b.iter(|| backend.execute(&device, &challenge).expect("the backend computes"))
                });
            }
            group.finish();
        }
    }
}

criterion_group!(benches, bench_backends);
criterion_main!(benches);
