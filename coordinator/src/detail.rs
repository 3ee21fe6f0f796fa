//! Bounded text for anything a peer can influence that is stored or logged: refusal and failure
//! details are cut to [`MAX_DETAIL_BYTES`] once, before they are stored and logged. Text told
//! to a peer is cut by `ErrorMsg::new` to the wire's limit instead: one cutter per destination.

/// Bytes of a detail kept; with the note of how much was cut, a bounded detail stays within the
/// wire's 256-byte text limit (`Limits::max_text_bytes`), so a stored detail can be told as is.
pub const MAX_DETAIL_BYTES: usize = 200;

/// `text` cut to at most [`MAX_DETAIL_BYTES`] bytes on a character boundary, with the number of
/// bytes dropped appended, so an operator sees that it was cut. The result is at most 240 bytes.
pub fn bounded(text: &str) -> String {
    if text.len() <= MAX_DETAIL_BYTES {
        return text.to_owned();
    }
    let cut = (0..=MAX_DETAIL_BYTES).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    format!("{}… ({} more bytes)", &text[..cut], text.len() - cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_and_long_text_is_cut_on_a_character_boundary() {
        assert_eq!(bounded("short"), "short");
        assert_eq!(bounded(&"x".repeat(MAX_DETAIL_BYTES)), "x".repeat(MAX_DETAIL_BYTES));
        // Two-byte characters: 100 fit, the rest is counted.
        let long = "é".repeat(MAX_DETAIL_BYTES);
        let cut = bounded(&long);
        assert!(cut.starts_with(&"é".repeat(MAX_DETAIL_BYTES / 2)), "{cut}");
        assert!(cut.ends_with(&format!("… ({} more bytes)", MAX_DETAIL_BYTES)), "{cut}");
        // Whatever the input, the result fits the wire's 256-byte text limit.
        for text in ["€".repeat(10_000), "a".repeat(1 << 20), "😀".repeat(77)] {
            assert!(bounded(&text).len() <= 240, "{}", bounded(&text).len());
        }
    }
}
