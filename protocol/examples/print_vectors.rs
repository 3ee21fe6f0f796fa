//! Prints the SPEC.md §10 test vectors from the implementation: the product vectors of the
//! ```vectors block, the keys and signatures, and every annotated frame of §10.2. Used to write
//! them; `tests/spec_vectors.rs` checks them thereafter. sr25519 signing is randomised, so each
//! run prints other, equally valid, signatures.
//!
//! `cargo run -p veribench-protocol --example print_vectors`

#[path = "../tests/frames/mod.rs"]
mod frames;

use veribench_protocol::challenge::derive_device_seed;
use veribench_protocol::freivalds::Check;
use veribench_protocol::{Commitment, Generator, Matrix, Mode, Shape};
use veribench_wallet::Keypair;

fn main() {
    let seed = frames::seed();
    let device = frames::device();
    let ds = derive_device_seed(&seed, &device);
    println!("seed = {seed}\ndevice = {device}\ndevice_seed = {ds}");
    for mode in Mode::ALL {
        let g = Generator::new(&ds, mode);
        for (m, name) in [(Matrix::A, "A"), (Matrix::B, "B")] {
            for row in [0u32, 1] {
                let mut v = vec![0f32; 8];
                g.fill_f32(m, row, 0, &mut v);
                let s: Vec<String> = v.iter().map(|x| format!("{x}")).collect();
                println!("{mode} {name} {row} = {}", s.join(" "));
            }
        }
    }
    let shapes = [
        (Mode::Int8, Shape { m: 3, k: 5, n: 4 }),
        (Mode::Fp16, Shape { m: 3, k: 5, n: 4 }),
        (Mode::Bf16, Shape { m: 3, k: 5, n: 4 }),
        (Mode::Fp32, Shape { m: 3, k: 5, n: 4 }),
        (Mode::Int8, Shape { m: 2, k: 2, n: 300 }),
        (Mode::Fp16, Shape { m: 129, k: 1, n: 3 }),
    ];
    for (mode, shape) in shapes {
        let g = Generator::new(&ds, mode);
        let leaves = frames::leaves(&ds, mode, shape);
        for r in 0..shape.m.min(3) {
            let row = frames::product_row(&g, shape, r);
            if shape.n <= 8 {
                let s: Vec<String> = row.iter().map(|x| format!("{x}")).collect();
                println!("{mode} {shape} C {r} = {}", s.join(" "));
            }
            println!("{mode} {shape} leaf {r} = {}", leaves[r as usize]);
        }
        let root = Commitment::from_leaves(&leaves).expect("leaves").root();
        println!("{mode} {shape} root = {root}");
    }
    // SPEC §7.2: Freivalds' check of the int8 3x5x4 product with two fixed vectors.
    let shape = Shape { m: 3, k: 5, n: 4 };
    let g = Generator::new(&ds, Mode::Int8);
    let x = frames::freivalds_vectors();
    let check = Check::with_vectors(&g, shape, x.clone()).expect("an exact shape");
    let list = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(" ");
    for (i, v) in x.iter().enumerate() {
        println!("int8 {shape} freivalds x{} = {}", i + 1, list(v));
    }
    for (i, y) in check.b_x().iter().enumerate() {
        println!("int8 {shape} freivalds Bx{} = {}", i + 1, list(y));
    }
    for r in 0..shape.m {
        let row = frames::product_row(&g, shape, r);
        let cx = frames::row_dot_mod_p(&row, &x);
        println!("int8 {shape} freivalds C {r} x = {}", list(&cx));
    }
    let zero = frames::opened_rows()[0];
    let g = Generator::new(&ds, Mode::Fp16);
    let shape = Shape { m: 129, k: 1, n: 3 };
    let row = frames::product_row(&g, shape, zero);
    let bytes = frames::canonical_bytes(&row, Mode::Fp16);
    println!("fp16 {shape} C {zero} bytes = {}", hex::encode(bytes));

    let coordinator = Keypair::from_seed(&frames::COORDINATOR_SECRET);
    let miner = Keypair::from_seed(&frames::MINER_SECRET);
    let worker = Keypair::from_seed(&frames::WORKER_SECRET);
    let unsigned = veribench_protocol::Signature([0; 64]);
    let mut keys = frames::Keys {
        coordinator: coordinator.public(),
        miner: miner.public(),
        worker: worker.public(),
        challenge_signature: unsigned,
        delegation_signature: unsigned,
        register_signature: unsigned,
    };
    keys.challenge_signature = coordinator.sign(&frames::signed_challenge(&keys).signed_bytes());
    let delegation = frames::register(&keys).delegation;
    keys.delegation_signature = miner.sign(&delegation.signing_payload());
    keys.register_signature = worker.sign(&frames::register(&keys).signing_payload());
    println!("coordinator key = {}", keys.coordinator);
    println!("miner key = {}", keys.miner);
    println!("worker key = {}", keys.worker);
    let challenge = frames::signed_challenge(&keys);
    println!("challenge payload = {}", hex::encode(challenge.challenge.signing_payload()));
    println!("challenge digest = {}", hex::encode(challenge.signed_bytes()));
    println!("challenge signature = {}", challenge.signature);
    let register = frames::register(&keys);
    println!("delegation digest = {}", hex::encode(register.delegation.signing_payload()));
    println!("delegation signature = {}", register.delegation.signature);
    println!("register digest = {}", hex::encode(register.signing_payload()));
    println!("register signature = {}", register.signature);
    for (name, _, annotated) in frames::frames(&keys) {
        println!("\n```frame {name}\n{}```", annotated.listing());
    }
}
