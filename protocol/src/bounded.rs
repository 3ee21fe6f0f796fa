//! Length-capped `Vec` decoding for lists that arrive from the network.
//!
//! A decoder must not let a peer make it allocate much more than the frame it sent: a list of
//! small wire items (a 2-byte row opening, a 3-byte GPU entry) is several times larger in
//! memory. Every such list is decoded through [`vec`], which refuses more than `MAX` items
//! before storing them; [`crate::wire::Message::validate`] then applies the configured limits.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};

/// Most items in any list of opened rows or requested rows.
pub const MAX_ROWS: usize = 4096;
/// Most devices or GPUs one worker may declare.
pub const MAX_DEVICES: usize = 256;
/// Most sibling hashes in one multiproof (32 sampled rows need ≤ 32 · 16).
pub const MAX_PROOF_HASHES: usize = 1 << 16;

/// Deserializes a sequence of at most `MAX` items (`#[serde(deserialize_with = ...)]`).
pub fn vec<'de, D, T, const MAX: usize>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    deserializer.deserialize_seq(Bounded::<T, MAX>(PhantomData))
}

struct Bounded<T, const MAX: usize>(PhantomData<T>);

impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for Bounded<T, MAX> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of at most {MAX} items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let hint = seq.size_hint().unwrap_or(0);
        if hint > MAX {
            return Err(A::Error::invalid_length(hint, &self));
        }
        let mut out = Vec::with_capacity(hint);
        while let Some(item) = seq.next_element()? {
            if out.len() == MAX {
                return Err(A::Error::invalid_length(MAX + 1, &self));
            }
            out.push(item);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Capped(#[serde(deserialize_with = "super::vec::<_, _, 3>")] Vec<u8>);

    #[test]
    fn lists_over_the_cap_are_refused_before_they_are_stored() {
        let ok: Capped = postcard::from_bytes(&[3, 1, 2, 3]).expect("3 items");
        assert_eq!(ok.0, vec![1, 2, 3]);
        assert!(postcard::from_bytes::<Capped>(&[4, 1, 2, 3, 4]).is_err());
        // A claimed length of 2^60 in a few bytes fails without allocating.
        assert!(
            postcard::from_bytes::<Capped>(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10])
                .is_err()
        );
    }
}
