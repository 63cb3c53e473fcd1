//! Standard base64 decoding (RFC 4648, with padding) into a caller's buffer, for meta keys sent
//! with the `b` flag. Decoding only, without allocating.

fn value(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some(u32::from(c - b'A')),
        b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decodes `text` into the start of `out` and returns the decoded length; `None` when `text` is
/// not valid padded base64 or `out` is too small.
pub(crate) fn decode(text: &[u8], out: &mut [u8]) -> Option<usize> {
    if text.is_empty() || !text.len().is_multiple_of(4) {
        return None;
    }
    let padding = text.iter().rev().take_while(|&&c| c == b'=').count();
    if padding > 2 {
        return None;
    }
    let len = text.len() / 4 * 3 - padding;
    if len > out.len() {
        return None;
    }
    let mut written = 0;
    for (i, quad) in text.chunks_exact(4).enumerate() {
        let last = i == text.len() / 4 - 1;
        let mut bits = 0u32;
        for (j, &c) in quad.iter().enumerate() {
            let v = match value(c) {
                Some(v) => v,
                None if c == b'=' && last && j >= 4 - padding => 0,
                None => return None,
            };
            bits = bits << 6 | v;
        }
        for byte in bits.to_be_bytes()[1..].iter().take(len - written) {
            out[written] = *byte;
            written += 1;
        }
    }
    Some(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(text: &str) -> Option<Vec<u8>> {
        let mut out = [0u8; 64];
        decode(text.as_bytes(), &mut out).map(|n| out[..n].to_vec())
    }

    #[test]
    fn decodes_padded_base64() {
        assert_eq!(decoded("Zm9v").as_deref(), Some(&b"foo"[..]));
        assert_eq!(decoded("Zm9vYg==").as_deref(), Some(&b"foob"[..]));
        assert_eq!(decoded("Zm9vYmE=").as_deref(), Some(&b"fooba"[..]));
        assert_eq!(
            decoded("YWxsaWFuY2UvZmxlZXQveA==").as_deref(),
            Some(&b"alliance/fleet/x"[..])
        );
        assert_eq!(decoded("AP8="), Some(vec![0x00, 0xff]));
    }

    #[test]
    fn rejects_what_is_not_base64() {
        for bad in ["", "Zm9", "Zm9v!", "Z=9v", "Zm===", "Zm9v====", "Zm 9"] {
            assert_eq!(decoded(bad), None, "{bad}");
        }
        assert_eq!(decode(b"Zm9v", &mut [0u8; 2]), None);
    }
}
