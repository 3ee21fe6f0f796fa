//! Row leaves and the Merkle commitment over them.
//!
//! A leaf binds a row's bytes to its index and to the device seed, so a row cannot be moved to
//! another position or reused by another challenge. Internal nodes use their own BLAKE3
//! context, so a leaf can never be passed off as a node. The tree is `rs_merkle`'s; proofs carry
//! only sibling hashes and the verifier derives every left/right direction from the row indices.

use rs_merkle::{MerkleProof, MerkleTree};
use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;
use crate::ids::{DeviceSeed, Leaf, Root};

/// BLAKE3 `derive_key` context of row leaves.
pub const LEAF_CONTEXT: &str = "veribench 2026-11 row leaf v1";
/// BLAKE3 `derive_key` context of internal Merkle nodes.
pub const NODE_CONTEXT: &str = "veribench 2026-11 merkle node v1";

/// The leaf of row `row`: BLAKE3 `derive_key(LEAF_CONTEXT, row bytes ‖ device seed ‖ u32_le(row))`.
///
/// The row comes first so it starts on a BLAKE3 chunk boundary and is hashed with full SIMD
/// width (a 36-byte prefix would misalign every chunk and more than halve the speed); the
/// suffix has a fixed length, so the encoding stays unambiguous.
pub fn leaf_hash(seed: &DeviceSeed, row: u32, row_bytes: &[u8]) -> Leaf {
    let mut hasher = blake3::Hasher::new_derive_key(LEAF_CONTEXT);
    hasher.update(row_bytes);
    hasher.update(seed.as_bytes());
    hasher.update(&row.to_le_bytes());
    Leaf(*hasher.finalize().as_bytes())
}

/// The `rs_merkle` hasher: parent = `derive_key(NODE_CONTEXT, left ‖ right)`; a node without a
/// right sibling is promoted unchanged (rs_merkle's rule for odd layers).
#[derive(Clone, Copy, Debug)]
pub struct NodeHasher;

impl rs_merkle::Hasher for NodeHasher {
    type Hash = [u8; 32];

    fn hash(data: &[u8]) -> [u8; 32] {
        *blake3::Hasher::new_derive_key(NODE_CONTEXT).update(data).finalize().as_bytes()
    }

    fn concat_and_hash(left: &[u8; 32], right: Option<&[u8; 32]>) -> [u8; 32] {
        match right {
            Some(right) => *blake3::Hasher::new_derive_key(NODE_CONTEXT)
                .update(left)
                .update(right)
                .finalize()
                .as_bytes(),
            None => *left,
        }
    }
}

/// The sibling hashes that connect a set of opened rows to the root, in `rs_merkle`'s order
/// (layer by layer from the leaves, left to right).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiProof(
    #[serde(
        deserialize_with = "crate::bounded::vec::<_, _, { crate::bounded::MAX_PROOF_HASHES }>"
    )]
    pub Vec<[u8; 32]>,
);

/// A built tree, kept by the worker until the coordinator has asked for its openings.
pub struct Commitment {
    tree: MerkleTree<NodeHasher>,
    rows: u32,
}

impl std::fmt::Debug for Commitment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commitment").field("rows", &self.rows).field("root", &self.root()).finish()
    }
}

/// The number of rows of a commitment to `leaves` leaves: at least one, at most `u32::MAX`.
fn row_count(leaves: usize) -> Result<u32, ProtocolError> {
    match u32::try_from(leaves) {
        Ok(0) => Err(ProtocolError::NoLeaves),
        Ok(rows) => Ok(rows),
        Err(_) => Err(ProtocolError::TooManyLeaves { leaves }),
    }
}

impl Commitment {
    /// Builds the tree over one leaf per row of the product.
    pub fn from_leaves(leaves: &[Leaf]) -> Result<Self, ProtocolError> {
        let rows = row_count(leaves.len())?;
        let raw: Vec<[u8; 32]> = leaves.iter().map(|l| l.0).collect();
        Ok(Self { tree: MerkleTree::from_leaves(&raw), rows })
    }

    /// The root the worker commits to.
    pub fn root(&self) -> Root {
        // A tree with at least one leaf always has a root.
        Root(self.tree.root().unwrap_or_default())
    }

    /// Number of leaves (rows of the product).
    pub fn rows(&self) -> u32 {
        self.rows
    }

    /// The proof for `rows`, which must be strictly increasing and in range.
    pub fn prove(&self, rows: &[u32]) -> Result<MultiProof, ProtocolError> {
        check_rows(rows, self.rows)?;
        let indices: Vec<usize> = rows.iter().map(|&r| r as usize).collect();
        Ok(MultiProof(self.tree.proof(&indices).proof_hashes().to_vec()))
    }
}

/// Rows to open must be strictly increasing (so distinct) and below `total`.
fn check_rows(rows: &[u32], total: u32) -> Result<(), ProtocolError> {
    let mut previous = None;
    for &row in rows {
        if row >= total || previous.is_some_and(|p| p >= row) {
            return Err(ProtocolError::BadRowIndex { row, rows: total });
        }
        previous = Some(row);
    }
    Ok(())
}

/// Whether `proof` connects `leaves` at `rows` (strictly increasing) to `root` in a tree of
/// `total` leaves. Hostile input yields `false`, never a panic: the proof length is checked
/// against the count the indices imply before `rs_merkle` sees it.
pub fn verify_multiproof(
    root: &Root,
    total: u32,
    rows: &[u32],
    leaves: &[Leaf],
    proof: &MultiProof,
) -> bool {
    if rows.is_empty() || rows.len() != leaves.len() || check_rows(rows, total).is_err() {
        return false;
    }
    let indices: Vec<usize> = rows.iter().map(|&r| r as usize).collect();
    let expected: usize =
        rs_merkle::utils::indices::proof_indices_by_layers(&indices, total as usize)
            .iter()
            .map(Vec::len)
            .sum();
    if proof.0.len() != expected {
        return false;
    }
    let leaves: Vec<[u8; 32]> = leaves.iter().map(|l| l.0).collect();
    MerkleProof::<NodeHasher>::new(proof.0.clone()).verify(
        root.0,
        &indices,
        &leaves,
        total as usize,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: u32) -> Vec<Leaf> {
        (0..n).map(|r| leaf_hash(&DeviceSeed([1; 32]), r, &r.to_le_bytes())).collect()
    }

    #[test]
    fn row_counts_name_what_is_wrong() {
        assert_eq!(row_count(0), Err(ProtocolError::NoLeaves));
        assert_eq!(Commitment::from_leaves(&[]).err(), Some(ProtocolError::NoLeaves));
        assert_eq!(row_count(1), Ok(1));
        assert_eq!(row_count(u32::MAX as usize), Ok(u32::MAX));
        // Not NoLeaves: too many rows is its own error (a slice this long cannot be allocated
        // here, so the count is checked on its own).
        let over = u32::MAX as usize + 1;
        assert_eq!(row_count(over), Err(ProtocolError::TooManyLeaves { leaves: over }));
    }

    #[test]
    fn honest_proofs_verify_for_every_tree_size() {
        for total in 1..40u32 {
            let leaves = leaves(total);
            let tree = Commitment::from_leaves(&leaves).expect("tree");
            for rows in [vec![0], vec![total - 1], (0..total).step_by(3).collect::<Vec<_>>()] {
                let proof = tree.prove(&rows).expect("proof");
                let opened: Vec<Leaf> = rows.iter().map(|&r| leaves[r as usize]).collect();
                assert!(verify_multiproof(&tree.root(), total, &rows, &opened, &proof), "{total}");
            }
        }
    }

    #[test]
    fn leaf_binds_index_seed_and_bytes() {
        let seed = DeviceSeed([1; 32]);
        let base = leaf_hash(&seed, 3, b"row");
        assert_ne!(base, leaf_hash(&seed, 4, b"row"));
        assert_ne!(base, leaf_hash(&DeviceSeed([2; 32]), 3, b"row"));
        assert_ne!(base, leaf_hash(&seed, 3, b"rox"));
    }

    #[test]
    fn unsorted_repeated_or_out_of_range_rows_are_refused() {
        let tree = Commitment::from_leaves(&leaves(8)).expect("tree");
        assert!(tree.prove(&[3, 1]).is_err());
        assert!(tree.prove(&[1, 1]).is_err());
        assert!(tree.prove(&[8]).is_err());
        assert!(Commitment::from_leaves(&[]).is_err());
    }

    proptest! {
        /// Garbage proofs, indices and counts never panic and never verify.
        #[test]
        fn hostile_proofs_are_rejected_without_panicking(
            total in 1u32..300,
            rows in proptest::collection::vec(0u32..400, 0..12),
            hashes in proptest::collection::vec(any::<[u8; 32]>(), 0..40),
            leaf_bytes in any::<[u8; 32]>(),
        ) {
            let root = Commitment::from_leaves(&leaves(total)).expect("tree").root();
            let opened = vec![Leaf(leaf_bytes); rows.len()];
            prop_assert!(!verify_multiproof(&root, total, &rows, &opened, &MultiProof(hashes)));
        }

        /// Each honest proof fails for any other row set or any flipped hash.
        #[test]
        fn proofs_bind_their_indices(total in 2u32..200, pick in 0u32..200, flip in 0usize..64) {
            let leaves = leaves(total);
            let tree = Commitment::from_leaves(&leaves).expect("tree");
            let row = pick % total;
            let proof = tree.prove(&[row]).expect("proof");
            let other = (row + 1) % total;
            prop_assert!(!verify_multiproof(&tree.root(), total, &[other], &[leaves[row as usize]], &proof));
            if !proof.0.is_empty() {
                let mut bad = proof.clone();
                let i = flip % bad.0.len();
                bad.0[i][0] ^= 1;
                prop_assert!(!verify_multiproof(&tree.root(), total, &[row], &[leaves[row as usize]], &bad));
            }
        }
    }
}
