//! Reads the test vectors of `SPEC.md` §10 and checks each one against the implementation, so
//! the document and the code cannot drift apart: the product vectors of §10.1,
//! every annotated frame of §10.2, byte for byte, with its signatures and digests, and the
//! prover market batches of §10.4.

#[path = "frames/mod.rs"]
mod frames;

use std::collections::HashMap;

use veribench_protocol::wire::{self, Limits};
use veribench_protocol::{
    Commitment, DeviceKey, Generator, Matrix, Message, Mode, PublicKey, Root, Seed, Shape,
    Signature, challenge::derive_device_seed, leaf_hash, verify_openings,
};

const SPEC: &str = include_str!("../SPEC.md");

/// The `key = value` lines of each ```vectors block, in document order.
fn vector_blocks() -> Vec<Vec<(String, String)>> {
    let blocks: Vec<&str> = SPEC
        .split("```vectors\n")
        .skip(1)
        .map(|rest| rest.split("```").next().expect("a closing fence"))
        .collect();
    assert_eq!(blocks.len(), 3, "SPEC.md §10.1, §10.2 and §10.4 each have a ```vectors block");
    blocks
        .iter()
        .map(|block| {
            block
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    let (k, v) = l.split_once(" = ").expect("every vector line is `key = value`");
                    (k.trim().to_owned(), v.trim().to_owned())
                })
                .collect()
        })
        .collect()
}

/// The `key = value` lines of the product and frame vectors (§10.1, §10.2).
fn vectors() -> Vec<(String, String)> {
    vector_blocks().into_iter().take(2).flatten().collect()
}

/// RFC 4648 base64, standard alphabet, padded: written out here so the §10.4 vectors are checked
/// against an encoding independent of any crate.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let word =
            chunk.iter().enumerate().fold(0u32, |w, (i, &b)| w | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            let c = if i <= chunk.len() {
                ALPHABET[(word >> (18 - 6 * i) & 63) as usize]
            } else {
                b'='
            };
            out.push(c as char);
        }
    }
    out
}

/// SPEC §7.4 and its §10.4 vectors: each descriptor parses and writes back identically, its
/// product (computed here element by element, and by the crate) has the stated bytes, length,
/// base64 and BLAKE3 hash, the check accepts it and refuses it with any one bit flipped.
#[test]
fn batch_vectors_match_the_market() {
    use veribench_protocol::{MatmulBatch, ProofRefusal, check_product};
    let block = vector_blocks().pop().expect("the §10.4 block");
    let get: HashMap<_, _> = block.iter().cloned().collect();
    let names: Vec<&str> = block.iter().filter_map(|(k, _)| k.strip_suffix(" json")).collect();
    assert_eq!(names.len(), 3, "§10.4 has an int8, an fp16 and a bf16 batch");
    let mut rng = rand::rng();
    for name in names {
        let field = |f: &str| get[&format!("{name} {f}")].as_str();
        let json = field("json");
        let batch = MatmulBatch::parse(json.as_bytes()).expect("a valid descriptor");
        assert_eq!(batch.to_json(), json, "{name}: written back identically");
        // The key names the batch: `batch <mode> <m>x<k>x<n>`.
        let words: Vec<&str> = name.split(' ').collect();
        assert_eq!(words[1].parse::<Mode>().ok(), Some(batch.mode), "{name}");
        assert_eq!(parse_shape(words[2]), Some(batch.shape()), "{name}");

        let proof = hex::decode(field("proof")).expect("hex");
        let len: usize = field("proof_len").parse().expect("a length");
        assert_eq!((proof.len(), batch.proof_len()), (len, len), "{name}");
        let seed = derive_device_seed(&batch.seed, &batch.device_key);
        let g = Generator::new(&seed, batch.mode);
        let independent: Vec<u8> = (0..batch.m)
            .flat_map(|r| {
                frames::canonical_bytes(&frames::product_row(&g, batch.shape(), r), batch.mode)
            })
            .collect();
        assert_eq!(independent, proof, "{name}: the rows of C = A·B, row 0 first");
        assert_eq!(batch.reference_product(), proof, "{name}");
        assert_eq!(blake3::hash(&proof).to_hex().as_str(), field("proof_blake3"), "{name}");
        assert_eq!(base64(&proof), field("proof_data"), "{name}");
        assert_eq!(field("proof_data").len(), batch.max_proof_base64_len(), "{name}");

        assert_eq!(check_product(&batch, &proof, &mut rng), Ok(()), "{name}");
        for bit in 0..proof.len() * 8 {
            let mut bad = proof.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let row = (bit / 8 / (batch.n as usize * 4)) as u32;
            assert_eq!(
                check_product(&batch, &bad, &mut rng),
                Err(ProofRefusal::Row { row }),
                "{name}: bit {bit} flipped"
            );
        }
        assert!(matches!(
            check_product(&batch, &proof[4..], &mut rng),
            Err(ProofRefusal::WrongLength { .. })
        ));
    }
}

/// The ```frame NAME blocks: name and listing.
fn frame_blocks() -> HashMap<String, String> {
    SPEC.split("```frame ")
        .skip(1)
        .map(|rest| {
            let (name, body) = rest.split_once('\n').expect("a name line");
            let body = body.split("```").next().expect("a closing fence");
            (name.trim().to_owned(), body.to_owned())
        })
        .collect()
}

/// The bytes of a listing: the hex pairs of every line, before any `|`.
fn listing_bytes(listing: &str) -> Vec<u8> {
    listing
        .lines()
        .flat_map(|l| l.split('|').next().unwrap_or("").split_whitespace())
        .map(|pair| u8::from_str_radix(pair, 16).expect("a hex byte"))
        .collect()
}

fn normalise(listing: &str) -> Vec<String> {
    listing.lines().map(|l| l.trim_end().to_owned()).filter(|l| !l.is_empty()).collect()
}

fn parse_shape(word: &str) -> Option<Shape> {
    let dims: Vec<u32> = word.split('x').map(|d| d.parse().ok()).collect::<Option<_>>()?;
    match dims[..] {
        [m, k, n] => Some(Shape { m, k, n }),
        _ => None,
    }
}

fn hex32(value: &str) -> [u8; 32] {
    hex::decode(value).expect("hex").try_into().expect("32 bytes")
}

fn signature(value: &str) -> Signature {
    Signature(hex::decode(value).expect("hex").try_into().expect("64 bytes"))
}

#[test]
fn product_vectors_match_the_implementation() {
    let lines = vectors();
    let get: HashMap<_, _> = lines.iter().cloned().collect();
    let seed = Seed::from_hex(&get["seed"]).expect("seed is 64 hex digits");
    let device = DeviceKey::new(get["device"].clone()).expect("device key");
    let device_seed = derive_device_seed(&seed, &device);
    assert_eq!(device_seed.to_string(), get["device_seed"], "device seed");

    let mut checked = 0;
    for (key, value) in &lines {
        let words: Vec<&str> = key.split(' ').collect();
        // Key, digest and signature lines belong to the frame vectors.
        let Some(mode) = words.first().and_then(|w| w.parse::<Mode>().ok()) else { continue };
        let g = Generator::new(&device_seed, mode);
        if let [matrix @ ("A" | "B"), row] = words[1..] {
            let matrix = if matrix == "A" { Matrix::A } else { Matrix::B };
            let want: Vec<f32> = value.split(' ').map(|v| v.parse().expect("number")).collect();
            let mut got = vec![0f32; want.len()];
            g.fill_f32(matrix, row.parse().expect("row"), 0, &mut got);
            assert_eq!(got, want, "{key}");
            checked += 1;
            continue;
        }
        let shape = parse_shape(words[1]).unwrap_or_else(|| panic!("a shape in {key:?}"));
        if words.get(2) == Some(&"freivalds") {
            continue; // `freivalds_vectors_match_the_check`
        }
        let row_of = |r: &str| frames::product_row(&g, shape, r.parse().expect("row"));
        match words[2..] {
            ["C", r] => {
                let want: Vec<f64> = value.split(' ').map(|v| v.parse().expect("value")).collect();
                assert_eq!(row_of(r), want, "{key}");
            }
            ["C", r, "bytes"] => {
                let row = row_of(r);
                assert_eq!(hex::encode(frames::canonical_bytes(&row, mode)), *value, "{key}");
                // The vector exists for its −0 products: IEEE arithmetic gives −0 here.
                let r: u32 = r.parse().expect("row");
                let ieee: Vec<f32> = (0..shape.n)
                    .map(|j| {
                        let a = g.element(Matrix::A, r, 0) as f32;
                        (1..shape.k).fold(a * g.element(Matrix::B, 0, j) as f32, |acc, t| {
                            acc + g.element(Matrix::A, r, t) as f32
                                * g.element(Matrix::B, t, j) as f32
                        })
                    })
                    .collect();
                assert!(ieee.iter().any(|v| v.to_bits() == 0x8000_0000), "{key}: no −0 product");
            }
            ["leaf", r] => {
                let r: u32 = r.parse().expect("row");
                let bytes = frames::canonical_bytes(&frames::product_row(&g, shape, r), mode);
                assert_eq!(leaf_hash(&device_seed, r, &bytes).to_string(), *value, "{key}");
            }
            ["root"] => {
                let leaves = frames::leaves(&device_seed, mode, shape);
                let tree = Commitment::from_leaves(&leaves).expect("leaves");
                assert_eq!(Some(tree.root()), Root::from_hex(value), "{key}");
                if shape == (Shape { m: 3, k: 5, n: 4 }) {
                    // §10.1: the proof for row 1 is leaf 0 then the promoted leaf 2.
                    let proof = tree.prove(&[1]).expect("row 1");
                    assert_eq!(proof.0, vec![leaves[0].0, leaves[2].0], "{key} proof of row 1");
                }
            }
            _ => panic!("unrecognised vector line {key:?}"),
        }
        checked += 1;
    }
    assert!(checked >= 50, "only {checked} vectors were checked");
}

/// SPEC §7.2 and its §10.1 vectors: `B·x mod p` for two fixed vectors, and `C_r·x ≡ A_r·(B·x)`
/// for every row of the int8 3x5x4 product.
#[test]
fn freivalds_vectors_match_the_check() {
    use veribench_protocol::freivalds::{Check, PRIME};
    let get: HashMap<_, _> = vectors().into_iter().collect();
    let ints = |key: &str| -> Vec<i64> {
        get[key].split(' ').map(|v| v.parse().expect("an integer")).collect()
    };
    let seed = derive_device_seed(&Seed::from_hex(&get["seed"]).expect("seed"), &frames::device());
    let shape = Shape { m: 3, k: 5, n: 4 };
    let g = Generator::new(&seed, Mode::Int8);
    let x = [1, 2].map(|v| ints(&format!("int8 3x5x4 freivalds x{v}")));
    let x = x.map(|v| v.into_iter().map(|e| e as i32).collect::<Vec<_>>());
    assert_eq!(x, frames::freivalds_vectors());
    let check = Check::with_vectors(&g, shape, x.clone()).expect("an exact shape");
    for (v, y) in check.b_x().iter().enumerate() {
        let want = ints(&format!("int8 3x5x4 freivalds Bx{}", v + 1));
        assert_eq!(y.iter().map(|&e| i64::from(e)).collect::<Vec<_>>(), want, "Bx{}", v + 1);
    }
    for r in 0..shape.m {
        let want = ints(&format!("int8 3x5x4 freivalds C {r} x"));
        let row = frames::product_row(&g, shape, r);
        let cx = frames::row_dot_mod_p(&row, &x);
        assert_eq!(cx.iter().map(|&e| i64::from(e)).collect::<Vec<_>>(), want, "C {r} x");
        // A_r·(B·x), from the SPEC's own Bx lines: the two sides of the check agree.
        for (v, y) in check.b_x().iter().enumerate() {
            let ay: i128 = (0..shape.k)
                .map(|t| g.element(Matrix::A, r, t) as i128 * i128::from(y[t as usize]))
                .sum();
            assert_eq!(ay.rem_euclid(i128::from(PRIME)) as i64, want[v], "A {r} Bx{}", v + 1);
        }
        let mut bytes = frames::canonical_bytes(&row, Mode::Int8);
        assert!(check.row_passes(&g, r, &bytes), "row {r}");
        bytes[0] ^= 1;
        assert!(!check.row_passes(&g, r, &bytes), "row {r} with one entry off by one");
    }
}

#[test]
fn frame_vectors_match_the_wire_byte_for_byte() {
    let get: HashMap<_, _> = vectors().into_iter().collect();
    let keys = frames::Keys {
        coordinator: PublicKey(hex32(&get["coordinator key"])),
        miner: PublicKey(hex32(&get["miner key"])),
        worker: PublicKey(hex32(&get["worker key"])),
        challenge_signature: signature(&get["challenge signature"]),
        delegation_signature: signature(&get["delegation signature"]),
        register_signature: signature(&get["register signature"]),
    };
    // The keys are the stated mini secrets' (§10.2).
    use veribench_wallet::{Keypair, verify};
    assert_eq!(Keypair::from_seed(&frames::COORDINATOR_SECRET).public(), keys.coordinator);
    assert_eq!(Keypair::from_seed(&frames::MINER_SECRET).public(), keys.miner);
    assert_eq!(Keypair::from_seed(&frames::WORKER_SECRET).public(), keys.worker);

    let blocks = frame_blocks();
    let built = frames::frames(&keys);
    assert_eq!(blocks.len(), built.len(), "one SPEC block per vector frame");
    let limits = Limits::default();
    for (name, msg, annotated) in &built {
        let block = blocks.get(*name).unwrap_or_else(|| panic!("SPEC has no frame {name}"));
        assert_eq!(normalise(block), normalise(&annotated.listing()), "frame {name}");
        let bytes = listing_bytes(block);
        assert_eq!(bytes, wire::encode(msg), "frame {name}");
        assert_eq!(wire::decode(&bytes, &limits).as_ref(), Ok(msg), "frame {name}");
    }

    let message = |name: &str| built.iter().find(|(n, ..)| *n == name).map(|(_, m, _)| m.clone());
    let Some(Message::Challenge(challenge)) = message("challenge") else { panic!("challenge") };
    assert_eq!(hex::encode(challenge.challenge.signing_payload()), get["challenge payload"]);
    assert_eq!(hex::encode(challenge.signed_bytes()), get["challenge digest"]);
    assert!(verify(&keys.coordinator, &challenge.signed_bytes(), &challenge.signature));

    let Some(Message::Register(register)) = message("register") else { panic!("register") };
    let delegation = &register.delegation;
    assert_eq!(hex::encode(delegation.signing_payload()), get["delegation digest"]);
    assert!(verify(&keys.miner, &delegation.signing_payload(), &delegation.signature));
    assert_eq!(hex::encode(register.signing_payload()), get["register digest"]);
    assert!(verify(&keys.worker, &register.signing_payload(), &register.signature));
    // §8: the Register digest covers the frame from after the variant up to the signature.
    let frame = wire::encode(&Message::Register(register.clone()));
    let body = &frame[wire::HEADER_LEN + 1..frame.len() - 65];
    let digest = blake3::derive_key(wire::REGISTER_SIGNING_CONTEXT, body);
    assert_eq!(digest, register.signing_payload());

    // The openings open the commitment's rows and are right.
    let Some(Message::Commitment(commitment)) = message("commitment") else { panic!("commit") };
    let Some(Message::OpenRequest(request)) = message("open_request") else { panic!("request") };
    let Some(Message::Openings(openings)) = message("openings") else { panic!("openings") };
    let c = &challenge.challenge;
    let seed = c.device_seed(&challenge.device);
    let verdict = verify_openings(
        c.mode,
        c.shape,
        &seed,
        &commitment.root,
        &request.rows,
        &openings.openings,
    );
    assert!(verdict.is_accepted(), "{verdict:?}");
}

/// The pass-probability table of §6: every cell recomputed from the column's `m = …, s = …` and
/// the row's fraction, to the two significant digits the table prints.
#[test]
fn sampling_table_matches_pass_probability() {
    let section = SPEC.split("## 6. Sampling and soundness").nth(1).expect("§6");
    let section = section.split("\n## 7.").next().expect("§6 ends");
    let mut lines = section.lines().skip_while(|l| !l.starts_with("| fraction of rows wrong"));
    let header = lines.next().expect("the table's header");
    let number = |text: &str, key: &str| -> u32 {
        let at = text.find(key).unwrap_or_else(|| panic!("{key} in {text}")) + key.len();
        let digits: String = text[at..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse().expect("a number")
    };
    let columns: Vec<(u32, u32)> = header
        .split('|')
        .skip(2)
        .filter(|c| !c.trim().is_empty())
        .map(|c| (number(c, "m = "), number(c, "s = ")))
        .collect();
    assert_eq!(columns.len(), 3, "{header}");
    let rows: Vec<&str> = lines.skip(1).take_while(|l| l.starts_with('|')).collect();
    assert!(rows.len() >= 5, "the table has its rows");
    for row in rows {
        let cells: Vec<&str> = row.split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
        let percent: f64 = cells[0].trim_end_matches('%').parse().expect("a percentage");
        for (&(m, s), cell) in columns.iter().zip(&cells[1..]) {
            let bad = (percent / 100.0 * f64::from(m)).ceil() as u32;
            let want = veribench_protocol::sampling::pass_probability(m, bad, s);
            let printed: f64 = cell.parse().expect("a number");
            assert!(
                (printed - want).abs() <= 0.05 * want,
                "§6: {percent}% wrong, m = {m}, s = {s}: the SPEC says {printed}, the code {want:.3e}"
            );
        }
    }
}
