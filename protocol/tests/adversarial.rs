//! Every cheat a worker could try at the protocol level, each caught by `verify_openings`, and
//! honest workers never rejected.

mod common;

use common::*;
use half::{bf16, f16};
use rand::Rng;
use veribench_protocol::{
    Mode, MultiProof, Openings, RejectReason, Shape, Verdict, sample_rows, verify_openings,
};

const SAMPLES: u32 = 32;

/// Runs the coordinator's side: sample after the commitment, verify the openings.
fn coordinator_verdict(
    challenge: &veribench_protocol::Challenge,
    committed: &Committed,
    open: impl Fn(&Committed, &[u32]) -> Openings,
) -> Verdict {
    let sampled = sample_rows(&mut rand::rng(), challenge.shape.m, SAMPLES);
    let openings = open(committed, &sampled);
    verify_openings(
        challenge.mode,
        challenge.shape,
        &challenge.device_seed(&device()),
        &committed.tree.root(),
        &sampled,
        &openings,
    )
}

fn rejected_with(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Accepted => "accepted",
        Verdict::Rejected(reason) => reason.code(),
    }
}

/// Commits to `rows` computed by `kernel` and returns the coordinator's verdict on honest openings.
fn verdict_for_kernel(mode: Mode, shape: Shape, seed: u64, kernel: &RowKernel) -> Verdict {
    let c = challenge(&mut rng(seed), mode, shape);
    let rows = product_rows(&c, &device(), kernel);
    let committed = commit(c.device_seed(&device()), rows);
    coordinator_verdict(&c, &committed, Committed::open)
}

#[test]
fn honest_worker_is_never_rejected_across_1000_small_challenges_per_mode() {
    for mode in Mode::ALL {
        let mut r = rng(0x5eed ^ mode as u64);
        for i in 0..1000 {
            let shape = Shape {
                m: r.random_range(1..24),
                k: r.random_range(1..48),
                n: r.random_range(1..24),
            };
            let c = challenge(&mut r, mode, shape);
            let committed =
                commit(c.device_seed(&device()), product_rows(&c, &device(), honest_kernel(mode)));
            let verdict = coordinator_verdict(&c, &committed, Committed::open);
            assert_eq!(verdict, Verdict::Accepted, "{mode} challenge {i} {shape}");
        }
    }
}

#[test]
fn honest_fp32_is_accepted_at_large_k_in_sequential_order() {
    // The widest honest error: long sequential f32 sums.
    for k in [1024, 4096] {
        let v = verdict_for_kernel(Mode::Fp32, Shape { m: 40, k, n: 48 }, k as u64, &f32_row);
        assert_eq!(v, Verdict::Accepted, "k = {k}");
    }
}

#[test]
fn lazy_worker_skipping_rows_with_zeros_is_rejected() {
    for mode in Mode::ALL {
        let c = challenge(&mut rng(1), mode, Shape { m: 64, k: 16, n: 16 });
        let mut rows = product_rows(&c, &device(), honest_kernel(mode));
        // Computes only the first half of the rows.
        for row in rows.iter_mut().skip(32) {
            row.fill(0);
        }
        let committed = commit(c.device_seed(&device()), rows);
        let v = coordinator_verdict(&c, &committed, Committed::open);
        assert!(
            matches!(
                v,
                Verdict::Rejected(
                    RejectReason::Mismatch { .. } | RejectReason::OutOfTolerance { .. }
                )
            ),
            "{mode}: {v:?}"
        );
    }
}

#[test]
fn lazy_worker_skipping_rows_with_garbage_is_rejected() {
    for mode in Mode::ALL {
        let c = challenge(&mut rng(2), mode, Shape { m: 64, k: 16, n: 16 });
        let mut rows = product_rows(&c, &device(), honest_kernel(mode));
        let mut r = rng(3);
        for row in rows.iter_mut().skip(16) {
            r.fill(&mut row[..]);
        }
        let committed = commit(c.device_seed(&device()), rows);
        let v = coordinator_verdict(&c, &committed, Committed::open);
        assert!(
            matches!(
                v,
                Verdict::Rejected(
                    RejectReason::Mismatch { .. } | RejectReason::OutOfTolerance { .. }
                )
            ),
            "{mode}: {v:?}"
        );
    }
}

/// Rounds an f32 to `bits` significand bits (implicit bit included), to nearest even: what a
/// tensor core does to its inputs in TF32 (11) or bf16 (8) mode.
fn round_significand(x: f32, bits: u32) -> f32 {
    let drop = 24 - bits;
    let b = x.to_bits();
    let half = 1u32 << (drop - 1);
    let odd = (b >> drop) & 1;
    f32::from_bits((b + half - 1 + odd) & !((1u32 << drop) - 1))
}

#[test]
fn fp32_computed_with_tf32_inputs_is_rejected() {
    for k in [1, 7, 64, 512, 4096] {
        let tf32 = |a: &[f32], b: &[Vec<f32>]| f32_row_with(a, b, |v| round_significand(v, 11));
        let v = verdict_for_kernel(Mode::Fp32, Shape { m: 40, k, n: 32 }, 7 + k as u64, &tf32);
        assert_eq!(rejected_with(&v), "out_of_tolerance", "k = {k}: {v:?}");
    }
}

#[test]
fn fp32_computed_with_bf16_inputs_is_rejected() {
    for k in [1, 33, 4096] {
        let bf = |a: &[f32], b: &[Vec<f32>]| f32_row_with(a, b, |v| bf16::from_f32(v).to_f32());
        let v = verdict_for_kernel(Mode::Fp32, Shape { m: 40, k, n: 32 }, 9 + k as u64, &bf);
        assert_eq!(rejected_with(&v), "out_of_tolerance", "k = {k}: {v:?}");
    }
}

#[test]
fn fp32_computed_with_fp16_inputs_is_rejected() {
    let fp = |a: &[f32], b: &[Vec<f32>]| f32_row_with(a, b, |v| f16::from_f32(v).to_f32());
    let v = verdict_for_kernel(Mode::Fp32, Shape { m: 40, k: 256, n: 32 }, 10, &fp);
    assert_eq!(rejected_with(&v), "out_of_tolerance", "{v:?}");
}

/// Accumulates in a narrow float type, as a worker that ignores "f32 accumulation" would.
fn narrow_accumulation_row<T: Copy>(
    a: &[f32],
    b: &[Vec<f32>],
    from: impl Fn(f32) -> T,
    to: impl Fn(T) -> f32,
) -> Vec<u8> {
    let n = b.first().map_or(0, Vec::len);
    (0..n)
        .flat_map(|j| {
            let mut s = from(0.0);
            for (&x, row) in a.iter().zip(b) {
                s = from(to(s) + x * row[j]);
            }
            to(s).to_le_bytes()
        })
        .collect()
}

#[test]
fn fp16_asked_but_accumulated_in_fp16_is_rejected() {
    // Partial sums pass 2048 (fp16's last exact integer) after a few hundred terms.
    let k = |a: &[f32], b: &[Vec<f32>]| narrow_accumulation_row(a, b, f16::from_f32, f16::to_f32);
    let v = verdict_for_kernel(Mode::Fp16, Shape { m: 40, k: 2048, n: 32 }, 11, &k);
    assert_eq!(rejected_with(&v), "value_mismatch", "{v:?}");
}

#[test]
fn bf16_asked_but_accumulated_in_bf16_is_rejected() {
    let k = |a: &[f32], b: &[Vec<f32>]| narrow_accumulation_row(a, b, bf16::from_f32, bf16::to_f32);
    let v = verdict_for_kernel(Mode::Bf16, Shape { m: 40, k: 512, n: 32 }, 12, &k);
    assert_eq!(rejected_with(&v), "value_mismatch", "{v:?}");
}

#[test]
fn int8_with_a_single_wrong_entry_is_rejected() {
    let c = challenge(&mut rng(13), Mode::Int8, Shape { m: 8, k: 64, n: 64 });
    let mut rows = product_rows(&c, &device(), &int_row);
    for row in &mut rows {
        row[40] ^= 1; // entry 10 off by one
    }
    let committed = commit(c.device_seed(&device()), rows);
    let v = coordinator_verdict(&c, &committed, Committed::open);
    assert!(matches!(v, Verdict::Rejected(RejectReason::Mismatch { col: 10, .. })), "{v:?}");
}

#[test]
fn root_committed_then_different_row_bytes_opened_is_rejected() {
    for mode in Mode::ALL {
        let c = challenge(&mut rng(14), mode, Shape { m: 50, k: 9, n: 20 });
        let committed =
            commit(c.device_seed(&device()), product_rows(&c, &device(), honest_kernel(mode)));
        let v = coordinator_verdict(&c, &committed, |w, sampled| {
            let mut o = w.open(sampled);
            o.rows[0].bytes[3] ^= 0x40;
            o
        });
        assert_eq!(rejected_with(&v), "bad_proof", "{mode}");
    }
}

#[test]
fn proof_for_another_index_is_rejected() {
    let c = challenge(&mut rng(15), Mode::Int8, Shape { m: 64, k: 9, n: 20 });
    let committed = commit(c.device_seed(&device()), product_rows(&c, &device(), &int_row));
    let v = coordinator_verdict(&c, &committed, |w, sampled| {
        // Opens the neighbours of the sampled rows, labelled as the sampled rows.
        let shifted: Vec<u32> = sampled.iter().map(|&r| (r + 1) % 64).collect();
        let mut sorted = shifted.clone();
        sorted.sort_unstable();
        sorted.dedup();
        let honest = w.open(&sorted);
        let mut o = w.open(sampled);
        o.proof = honest.proof;
        for (opened, r) in o.rows.iter_mut().zip(sampled) {
            opened.bytes = w.rows[((r + 1) % 64) as usize].clone();
        }
        o
    });
    assert_eq!(rejected_with(&v), "bad_proof");
}

#[test]
fn opening_rows_other_than_the_sampled_ones_is_rejected() {
    let c = challenge(&mut rng(16), Mode::Int8, Shape { m: 64, k: 9, n: 20 });
    let committed = commit(c.device_seed(&device()), product_rows(&c, &device(), &int_row));
    let v = coordinator_verdict(&c, &committed, |w, sampled| {
        // A worker that only computed rows 0..32 opens those instead.
        let own: Vec<u32> = (0..sampled.len() as u32).collect();
        w.open(&own)
    });
    assert_eq!(rejected_with(&v), "wrong_rows");
}

#[test]
fn proof_with_swapped_directions_is_rejected() {
    let c = challenge(&mut rng(17), Mode::Int8, Shape { m: 64, k: 9, n: 20 });
    let committed = commit(c.device_seed(&device()), product_rows(&c, &device(), &int_row));
    let seed = c.device_seed(&device());
    let root = committed.tree.root();
    for row in [0u32, 5, 62] {
        // The proof of the mirror leaf: it holds the same siblings above the first level but
        // claims the opened leaf sits on the other side of each pair.
        let mirror = row ^ 1;
        let mut o = committed.open(&[row]);
        o.proof = committed.tree.prove(&[mirror]).expect("rows");
        o.proof.0[0] =
            veribench_protocol::leaf_hash(&seed, mirror, &committed.rows[mirror as usize]).0;
        let v = verify_openings(c.mode, c.shape, &seed, &root, &[row], &o);
        assert_eq!(
            rejected_with(&v),
            "accepted",
            "sanity: the mirror's sibling is our row's sibling"
        );
        // Reversing the order of the sibling hashes swaps which level each applies to.
        let mut reversed = committed.open(&[row]);
        reversed.proof.0.reverse();
        let v = verify_openings(c.mode, c.shape, &seed, &root, &[row], &reversed);
        assert_eq!(rejected_with(&v), "bad_proof", "row {row}");
        // Hashing our leaf on the wrong side of its sibling gives another root.
        let mut swapped = committed.open(&[row]);
        swapped.proof = MultiProof(vec![
            veribench_protocol::leaf_hash(&seed, row, &committed.rows[row as usize]).0,
        ]);
        swapped.rows[0].bytes = committed.rows[mirror as usize].clone();
        let v = verify_openings(c.mode, c.shape, &seed, &root, &[row], &swapped);
        assert_eq!(rejected_with(&v), "bad_proof", "row {row}");
    }
}

#[test]
fn old_commitment_reused_for_a_new_seed_is_rejected() {
    for mode in Mode::ALL {
        let mut r = rng(18);
        let shape = Shape { m: 48, k: 12, n: 12 };
        let old = challenge(&mut r, mode, shape);
        let new = challenge(&mut r, mode, shape);
        let old_rows = product_rows(&old, &device(), honest_kernel(mode));
        // Replays the old root and openings verbatim.
        let replayed = commit(old.device_seed(&device()), old_rows.clone());
        let v = coordinator_verdict(&new, &replayed, Committed::open);
        assert_eq!(rejected_with(&v), "bad_proof", "{mode}");
        // Re-hashes the old product under the new seed: the commitment is consistent, the values are not.
        let rehashed = commit(new.device_seed(&device()), old_rows);
        let v = coordinator_verdict(&new, &rehashed, Committed::open);
        assert!(
            matches!(rejected_with(&v), "value_mismatch" | "out_of_tolerance"),
            "{mode}: {v:?}"
        );
    }
}

#[test]
fn another_devices_product_is_rejected() {
    let c = challenge(&mut rng(19), Mode::Int8, Shape { m: 48, k: 12, n: 12 });
    let other = veribench_protocol::DeviceKey::new("GPU-other").expect("key");
    // The product computed for another device, committed under this device's seed.
    let committed = commit(c.device_seed(&device()), product_rows(&c, &other, &int_row));
    let v = coordinator_verdict(&c, &committed, Committed::open);
    assert_eq!(rejected_with(&v), "value_mismatch");
}

#[test]
fn rows_of_the_wrong_length_are_rejected() {
    let c = challenge(&mut rng(20), Mode::Fp32, Shape { m: 8, k: 4, n: 4 });
    let committed = commit(c.device_seed(&device()), product_rows(&c, &device(), &f32_row));
    let v = coordinator_verdict(&c, &committed, |w, sampled| {
        let mut o = w.open(sampled);
        o.rows[0].bytes.pop();
        o
    });
    assert_eq!(rejected_with(&v), "row_length");
}

#[test]
fn non_finite_fp32_entries_are_rejected() {
    let c = challenge(&mut rng(21), Mode::Fp32, Shape { m: 4, k: 4, n: 4 });
    let nan_rows = vec![f32::NAN.to_le_bytes().repeat(4); 4];
    let committed = commit(c.device_seed(&device()), nan_rows);
    let v = coordinator_verdict(&c, &committed, Committed::open);
    assert_eq!(rejected_with(&v), "out_of_tolerance");
}
