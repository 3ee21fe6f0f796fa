//! Reads the test vectors at the end of `SPEC.md` and checks each one against the implementation,
//! so the document and the code cannot drift apart.

use std::collections::HashMap;

use veribench_protocol::{
    Commitment, DeviceKey, Generator, Matrix, Mode, Root, Seed, Shape,
    challenge::derive_device_seed, leaf_hash,
};

const SPEC: &str = include_str!("../SPEC.md");

/// The `key = value` lines of the ```vectors block.
fn vectors() -> Vec<(String, String)> {
    let block = SPEC.split("```vectors\n").nth(1).and_then(|rest| rest.split("```").next());
    let block = block.expect("SPEC.md has a ```vectors block");
    block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.split_once(" = ").expect("every vector line is `key = value`");
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}

/// Row `r` of C for the `3x5x4` challenge, computed from single elements in f64 (exact here).
fn product_row(g: &Generator, shape: Shape, r: u32) -> Vec<f64> {
    (0..shape.n)
        .map(|j| {
            (0..shape.k).map(|t| g.element(Matrix::A, r, t) * g.element(Matrix::B, t, j)).sum()
        })
        .collect()
}

fn canonical_bytes(row: &[f64], mode: Mode) -> Vec<u8> {
    row.iter()
        .flat_map(|&v| match mode {
            Mode::Int8 => (v as i32).to_le_bytes(),
            _ => (v as f32).to_le_bytes(),
        })
        .collect()
}

#[test]
fn spec_test_vectors_match_the_implementation() {
    let lines = vectors();
    let get: HashMap<_, _> = lines.iter().cloned().collect();
    let seed = Seed::from_hex(&get["seed"]).expect("seed is 64 hex digits");
    let device = DeviceKey::new(get["device"].clone()).expect("device key");
    let device_seed = derive_device_seed(&seed, &device);
    assert_eq!(device_seed.to_string(), get["device_seed"], "device seed");

    let shape = Shape { m: 3, k: 5, n: 4 };
    let mut checked = 0;
    for (key, value) in &lines {
        let words: Vec<&str> = key.split(' ').collect();
        let Some(mode) = words.first().and_then(|w| w.parse::<Mode>().ok()) else { continue };
        let g = Generator::new(&device_seed, mode);
        match words[1..] {
            [matrix @ ("A" | "B"), row] => {
                let matrix = if matrix == "A" { Matrix::A } else { Matrix::B };
                let want: Vec<f32> = value.split(' ').map(|v| v.parse().expect("number")).collect();
                let mut got = vec![0f32; want.len()];
                g.fill_f32(matrix, row.parse().expect("row"), 0, &mut got);
                assert_eq!(got, want, "{key}");
            }
            ["3x5x4", "C", r] => {
                let want: Vec<f64> = value.split(' ').map(|v| v.parse().expect("int")).collect();
                assert_eq!(product_row(&g, shape, r.parse().expect("row")), want, "{key}");
            }
            ["3x5x4", "leaf", r] => {
                let r: u32 = r.parse().expect("row");
                let bytes = canonical_bytes(&product_row(&g, shape, r), mode);
                assert_eq!(leaf_hash(&device_seed, r, &bytes).to_string(), *value, "{key}");
            }
            ["3x5x4", "root"] => {
                let leaves: Vec<_> = (0..shape.m)
                    .map(|r| {
                        leaf_hash(
                            &device_seed,
                            r,
                            &canonical_bytes(&product_row(&g, shape, r), mode),
                        )
                    })
                    .collect();
                let tree = Commitment::from_leaves(&leaves).expect("three leaves");
                assert_eq!(Some(tree.root()), Root::from_hex(value), "{key}");
                // §10: the proof for row 1 is leaf 0 then the promoted leaf 2.
                let proof = tree.prove(&[1]).expect("row 1");
                assert_eq!(proof.0, vec![leaves[0].0, leaves[2].0], "{key} proof of row 1");
            }
            _ => panic!("unrecognised vector line {key:?}"),
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} vectors were checked");
}
