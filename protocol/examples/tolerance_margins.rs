//! Measures how close honest fp32 products come to the verifier's bound and how far TF32-rounded
//! ones land beyond it (the table in SPEC.md §7.1). Run with
//! `cargo run --release -p veribench-protocol --example tolerance_margins`.

use veribench_protocol::{DeviceSeed, Generator, Matrix, Mode, fp32_tolerance};

/// Rounds to `bits` significand bits, to nearest even (TF32: 11).
fn round_significand(x: f32, bits: u32) -> f32 {
    let drop = 24 - bits;
    let b = x.to_bits();
    let odd = (b >> drop) & 1;
    f32::from_bits((b + (1 << (drop - 1)) - 1 + odd) & !((1u32 << drop) - 1))
}

fn main() {
    const ROWS: u32 = 8;
    for k in [1u32, 8, 64, 512, 4096, 16384, 65536] {
        let g = Generator::new(&DeviceSeed([k as u8; 32]), Mode::Fp32);
        let n = if k >= 16384 { 64 } else { 256 };
        let bound = fp32_tolerance(k);
        let b: Vec<Vec<f32>> = (0..k)
            .map(|t| {
                let mut row = vec![0f32; n];
                g.fill_f32(Matrix::B, t, 0, &mut row);
                row
            })
            .collect();
        let mut honest_max = 0f64;
        let mut tf32 = Vec::new();
        for i in 0..ROWS {
            let mut a = vec![0f32; k as usize];
            g.fill_f32(Matrix::A, i, 0, &mut a);
            for j in 0..n {
                let exact: f64 =
                    a.iter().zip(&b).map(|(&x, row)| f64::from(x) * f64::from(row[j])).sum();
                let (mut seq, mut rounded) = (0f32, 0f32);
                for (&x, row) in a.iter().zip(&b) {
                    seq += x * row[j];
                    rounded += round_significand(x, 11) * round_significand(row[j], 11);
                }
                honest_max = honest_max.max((f64::from(seq) - exact).abs() / bound);
                tf32.push((f64::from(rounded) - exact).abs() / bound);
            }
        }
        tf32.sort_by(f64::total_cmp);
        let over = tf32.iter().filter(|&&r| r > 1.0).count();
        println!(
            "k={k:6} bound={bound:.3e} honest_seq_max/bound={honest_max:.3} tf32_median/bound={:.1} tf32_over={:.1}%",
            tf32[tf32.len() / 2],
            100.0 * over as f64 / tf32.len() as f64
        );
    }
}
