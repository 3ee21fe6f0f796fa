//! Independent references shared by the backend tests: what a conforming backend must produce,
//! computed from the protocol's generator alone.

#![allow(dead_code)]

use veribench_protocol::{Challenge, DeviceKey, Generator, Matrix, Shape};

/// The leaves of a challenge computed independently of every backend: elements from the
/// protocol's generator, exact f64 sums (exact for fp16/bf16, and for fp32 when k = 1), each
/// entry converted to f32 with zero encoded as +0 (SPEC's canonical float bytes).
pub fn reference_leaves(c: &Challenge, key: &DeviceKey) -> Vec<veribench_protocol::Leaf> {
    let seed = c.device_seed(key);
    let g = Generator::new(&seed, c.mode);
    let Shape { m, k, n } = c.shape;
    (0..m)
        .map(|i| {
            let bytes: Vec<u8> = (0..n)
                .flat_map(|j| {
                    let sum: f64 = (0..k)
                        .map(|t| g.element(Matrix::A, i, t) * g.element(Matrix::B, t, j))
                        .sum();
                    let v = sum as f32;
                    let v = if v == 0.0 { 0.0f32 } else { v };
                    v.to_le_bytes()
                })
                .collect();
            veribench_protocol::leaf_hash(&seed, i, &bytes)
        })
        .collect()
}

/// Whether some entry of the reference product is a sum of -0 terms only (zero times a
/// negative element): IEEE arithmetic gives -0 for it unless the sum starts at +0.
pub fn has_negative_zero_entries(c: &Challenge, key: &DeviceKey) -> bool {
    let g = Generator::new(&c.device_seed(key), c.mode);
    let Shape { m, k, n } = c.shape;
    (0..m).any(|i| {
        (0..n).any(|j| {
            (0..k).all(|t| {
                let p = g.element(Matrix::A, i, t) * g.element(Matrix::B, t, j);
                p == 0.0 && p.is_sign_negative()
            })
        })
    })
}
