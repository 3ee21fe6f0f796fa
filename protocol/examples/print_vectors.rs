//! Prints the SPEC.md §10 test vectors from the implementation (used once to write them; the
//! test `spec_vectors` checks them thereafter).

use veribench_protocol::{
    Commitment, DeviceKey, Generator, Matrix, Mode, Seed, Shape, challenge, leaf_hash,
};
fn main() {
    let seed = Seed(std::array::from_fn(|i| i as u8));
    let device = DeviceKey::new("GPU-00000000-test-vector").expect("k");
    let ds = challenge::derive_device_seed(&seed, &device);
    println!("seed = {seed}\ndevice = {device}\ndevice_seed = {ds}");
    for mode in Mode::ALL {
        let g = Generator::new(&ds, mode);
        for (m, name) in [(Matrix::A, "A"), (Matrix::B, "B")] {
            for row in [0u32, 1] {
                let mut v = vec![0f32; 8];
                g.fill_f32(m, row, 0, &mut v);
                let s: Vec<String> = v.iter().map(|x| format!("{x}")).collect();
                println!("{mode} {name}[{row}][0..8] = {}", s.join(" "));
            }
        }
    }
    for mode in [Mode::Int8, Mode::Fp16] {
        let shape = Shape { m: 3, k: 5, n: 4 };
        let g = Generator::new(&ds, mode);
        let mut leaves = vec![];
        for i in 0..3u32 {
            let mut a = vec![0f32; 5];
            g.fill_f32(Matrix::A, i, 0, &mut a);
            let mut row = vec![];
            let mut vals = vec![];
            for j in 0..4u32 {
                let mut s = 0f64;
                for kk in 0..5u32 {
                    let mut b = [0f32];
                    g.fill_f32(Matrix::B, kk, j, &mut b);
                    s += a[kk as usize] as f64 * b[0] as f64;
                }
                vals.push(s);
                if mode == Mode::Int8 {
                    row.extend((s as i32).to_le_bytes());
                } else {
                    row.extend((s as f32).to_le_bytes());
                }
            }
            let leaf = leaf_hash(&ds, i, &row);
            println!("{mode} {shape} C[{i}] = {:?} leaf = {leaf}", vals);
            leaves.push(leaf);
        }
        println!("{mode} {shape} root = {}", Commitment::from_leaves(&leaves).expect("x").root());
    }
}
