//! The canonical encoding of what is framed, signed and hashed (here and in the consensus
//! crate): postcard, with its error made fatal.
//!
//! postcard fails only on a sequence of unknown length or a `Serialize` impl that reports an
//! error. Frames and signed bodies are derived impls over integers, arrays, strings, `Vec`s and
//! slices, so neither can happen; if a future type brought one in, carrying on would sign or send
//! a truncated body (an empty one, under the old `unwrap_or_default`). A failure is therefore a
//! bug in this crate and panics with the type's name, caught by the tests that encode every type.

use serde::Serialize;

/// `postcard(value)`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    encode_into(value, Vec::new())
}

/// `out` followed by `postcard(value)`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: Vec<u8>) -> Vec<u8> {
    infallible::<T, _>(postcard::to_extend(value, out))
}

/// BLAKE3 `derive_key(context, postcard(value))`, streamed into the hasher.
pub fn digest<T: Serialize + ?Sized>(context: &str, value: &T) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(context);
    infallible::<T, _>(postcard::to_io(value, &mut hasher));
    *hasher.finalize().as_bytes()
}

fn infallible<T: ?Sized, R>(result: postcard::Result<R>) -> R {
    match result {
        Ok(r) => r,
        Err(e) => panic!(
            "postcard cannot encode a {}: {e} (a bug in veribench-protocol: framed and signed \
             types must have infallible encodings)",
            std::any::type_name::<T>()
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde::Serializer;

    use super::*;

    /// A value whose encoding fails, as a sequence of unknown length would.
    struct Unencodable;

    impl Serialize for Unencodable {
        fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("refused"))
        }
    }

    #[test]
    #[should_panic(expected = "postcard cannot encode")]
    fn a_failing_signed_body_is_fatal_not_an_empty_signature() {
        digest("veribench test context", &Unencodable);
    }

    #[test]
    #[should_panic(expected = "postcard cannot encode")]
    fn a_failing_frame_is_fatal_not_an_empty_frame() {
        encode_into(&Unencodable, b"VB".to_vec());
    }

    #[test]
    fn the_digest_is_the_hash_of_the_encoding() {
        let value = (7u32, "row", [1u8; 4]);
        let bytes = postcard::to_stdvec(&value).expect("encodes");
        let expected = *blake3::Hasher::new_derive_key("ctx").update(&bytes).finalize().as_bytes();
        assert_eq!(digest("ctx", &value), expected);
        assert_eq!(encode_into(&value, vec![9]), [&[9u8][..], &bytes].concat());
    }
}
