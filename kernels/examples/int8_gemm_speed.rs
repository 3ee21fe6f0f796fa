//! Throughput of `gemm_i8` at a few square sizes (median of several runs).
//!
//! `cargo run --release -p veribench-kernels --example int8_gemm_speed [sizes...]`

use std::time::Instant;
use veribench_kernels::cpu::int8::{gemm_i8, gemm_i8_kernel_name};

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|s| s.parse().ok()).collect();
    let sizes = if args.is_empty() { vec![512, 1024, 2048, 4096] } else { args };
    println!("kernel: {}, threads: {}", gemm_i8_kernel_name(), rayon::current_num_threads());
    for &s in &sizes {
        let (m, k, n) = (s, s, s);
        // Cheap deterministic pseudo-random fill.
        let mut x: u32 = 0x9E37_79B9;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as i8
        };
        let a: Vec<i8> = (0..m * k).map(|_| next()).collect();
        let b: Vec<i8> = (0..k * n).map(|_| next()).collect();
        let mut c = vec![0i32; m * n];
        gemm_i8(m, k, n, &a, &b, &mut c, false); // warm-up
        let runs = if s >= 4096 {
            5
        } else if s >= 2048 {
            9
        } else {
            21
        };
        let mut times: Vec<f64> = (0..runs)
            .map(|_| {
                let t = Instant::now();
                gemm_i8(m, k, n, &a, &b, &mut c, false);
                t.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let med = times[runs / 2];
        let best = times[0];
        let ops = 2.0 * (m * n * k) as f64;
        println!(
            "n={s:5}: median {:8.3} ms  {:7.1} GOP/s  (best {:7.1} GOP/s)",
            med * 1e3,
            ops / med / 1e9,
            ops / best / 1e9
        );
        std::hint::black_box(&c);
    }
}
