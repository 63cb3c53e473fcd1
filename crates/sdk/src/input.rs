//! A zero-copy view over the byte slices a socket delivered.
//!
//! The datapath hands a parser its input as several slices (what it kept from earlier reads plus
//! what just arrived). This view lets a parser search, peek and copy out across slice boundaries
//! without ever joining the slices; it owns no bytes and never allocates on its own.

use std::ops::Range;

/// Input handed to a parser: a read-only view over one or more byte slices, starting at a frame
/// boundary.
#[derive(Clone, Copy)]
pub struct Input<'a> {
    /// The slices, the first of which may be partly consumed (see `offset`).
    slices: &'a [&'a [u8]],
    /// Bytes of `slices[0]` that are not part of this view.
    offset: usize,
    /// Total bytes in the view.
    len: usize,
}

impl<'a> Input<'a> {
    /// A view over all bytes of `slices`, in order.
    #[inline]
    pub fn new(slices: &'a [&'a [u8]]) -> Self {
        let len = slices.iter().map(|s| s.len()).sum();
        Input {
            slices,
            offset: 0,
            len,
        }
    }

    /// Bytes in the view.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the view holds no bytes.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The view without its first `n` bytes (all of it when `n >= len`).
    #[inline]
    pub fn skip(&self, n: usize) -> Input<'a> {
        let mut n = n.min(self.len);
        let len = self.len - n;
        let mut slices = self.slices;
        let mut offset = self.offset;
        while let Some((first, rest)) = slices.split_first() {
            let avail = first.len() - offset;
            if n < avail {
                offset += n;
                break;
            }
            n -= avail;
            slices = rest;
            offset = 0;
        }
        Input {
            slices,
            offset,
            len,
        }
    }

    /// The non-empty chunks of the view, in order.
    #[inline]
    pub fn chunks(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let offset = self.offset;
        self.slices
            .iter()
            .enumerate()
            .map(move |(i, s)| if i == 0 { &s[offset..] } else { *s })
            .filter(|s| !s.is_empty())
    }

    /// The first contiguous chunk (empty when the view is empty).
    #[inline]
    pub fn first_chunk(&self) -> &'a [u8] {
        self.chunks().next().unwrap_or(&[])
    }

    /// The byte at `at`, if the view is that long.
    #[inline]
    pub fn byte(&self, at: usize) -> Option<u8> {
        // Most input is one slice: answer from it without iterating.
        if let Some(first) = self.slices.first() {
            if let Some(&b) = first.get(self.offset + at) {
                return Some(b);
            }
        }
        let mut at = at;
        for chunk in self.chunks() {
            if at < chunk.len() {
                return Some(chunk[at]);
            }
            at -= chunk.len();
        }
        None
    }

    /// Copies `out.len()` bytes starting at `at` into `out`; false when the view is too short.
    #[inline]
    pub fn copy_to(&self, at: usize, out: &mut [u8]) -> bool {
        let Some(end) = at.checked_add(out.len()).filter(|&end| end <= self.len) else {
            return false;
        };
        // Most input is one slice: copy straight from it.
        if let Some(bytes) = self
            .slices
            .first()
            .and_then(|first| first.get(self.offset + at..self.offset + end))
        {
            out.copy_from_slice(bytes);
            return true;
        }
        let mut skip = at;
        let mut filled = 0;
        for chunk in self.chunks() {
            if filled == out.len() {
                break;
            }
            if skip >= chunk.len() {
                skip -= chunk.len();
                continue;
            }
            let take = (chunk.len() - skip).min(out.len() - filled);
            out[filled..filled + take].copy_from_slice(&chunk[skip..skip + take]);
            filled += take;
            skip = 0;
        }
        true
    }

    /// A fixed-size header at `at`, copied out even when it straddles slices.
    #[inline]
    pub fn peek<const N: usize>(&self, at: usize) -> Option<[u8; N]> {
        let mut out = [0u8; N];
        self.copy_to(at, &mut out).then_some(out)
    }

    /// Position of the first `needle` byte at or after `from`.
    #[inline]
    pub fn find_byte(&self, needle: u8, from: usize) -> Option<usize> {
        if let [only] = self.slices {
            let chunk = only.get(self.offset + from..)?;
            return memchr::memchr(needle, chunk).map(|i| from + i);
        }
        let mut base = 0;
        for chunk in self.chunks() {
            let end = base + chunk.len();
            if from < end {
                let start = from.saturating_sub(base);
                if let Some(i) = memchr::memchr(needle, &chunk[start..]) {
                    return Some(base + start + i);
                }
            }
            base = end;
        }
        None
    }

    /// Position of the first occurrence of `needle` at or after `from`, also across slices.
    #[inline]
    pub fn find(&self, needle: &[u8], from: usize) -> Option<usize> {
        let (&first, rest) = needle.split_first()?;
        let mut at = from;
        loop {
            let start = self.find_byte(first, at)?;
            if start + needle.len() > self.len {
                return None;
            }
            if rest
                .iter()
                .enumerate()
                .all(|(i, &b)| self.byte(start + 1 + i) == Some(b))
            {
                return Some(start);
            }
            at = start + 1;
        }
    }

    /// Position of the next `\r\n` at or after `from` (the position of its `\r`).
    #[inline]
    pub fn find_crlf(&self, from: usize) -> Option<usize> {
        let mut at = from + 1;
        loop {
            let lf = self.find_byte(b'\n', at)?;
            if self.byte(lf - 1) == Some(b'\r') {
                return Some(lf - 1);
            }
            at = lf + 1;
        }
    }

    /// True when the view starts with `prefix`.
    #[inline]
    pub fn starts_with(&self, prefix: &[u8]) -> bool {
        prefix.len() <= self.len
            && prefix
                .iter()
                .enumerate()
                .all(|(i, &b)| self.byte(i) == Some(b))
    }

    /// The bytes in `range` as one slice: borrowed when they lie in one chunk, otherwise copied
    /// into `scratch` (which keeps its capacity, so steady-state parsing does not allocate).
    /// `None` when the range reaches past the view.
    #[inline]
    pub fn contiguous<'s>(&self, range: Range<usize>, scratch: &'s mut Vec<u8>) -> Option<&'s [u8]>
    where
        'a: 's,
    {
        if range.start > range.end || range.end > self.len {
            return None;
        }
        let mut base = 0;
        for chunk in self.chunks() {
            let end = base + chunk.len();
            if range.start >= base && range.end <= end {
                return Some(&chunk[range.start - base..range.end - base]);
            }
            if range.start < end {
                break;
            }
            base = end;
        }
        scratch.clear();
        scratch.resize(range.len(), 0);
        self.copy_to(range.start, scratch);
        Some(scratch)
    }
}

impl std::fmt::Debug for Input<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input").field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axoneme_testkit::split_at_points;
    use proptest::prelude::*;

    #[test]
    fn crlf_straddling_two_slices_is_found() {
        let slices: [&[u8]; 2] = [b"READ /a\r", b"\nHALT\r\n"];
        let input = Input::new(&slices);
        assert_eq!(input.find_crlf(0), Some(7));
        assert_eq!(input.find_crlf(8), Some(13));
        let mut scratch = Vec::new();
        assert_eq!(input.contiguous(0..7, &mut scratch), Some(&b"READ /a"[..]));
    }

    #[test]
    fn contiguous_borrows_when_it_can_and_copies_when_it_must() {
        let slices: [&[u8]; 3] = [b"ab", b"cdef", b"gh"];
        let input = Input::new(&slices);
        let mut scratch = Vec::new();
        let inside = input.contiguous(2..5, &mut scratch).unwrap();
        assert_eq!(inside, b"cde");
        assert_eq!(inside.as_ptr(), slices[1].as_ptr());
        assert_eq!(input.contiguous(1..7, &mut scratch), Some(&b"bcdefg"[..]));
        assert_eq!(input.contiguous(7..9, &mut scratch), None);
    }

    #[test]
    fn skip_drops_whole_and_partial_slices() {
        let slices: [&[u8]; 3] = [b"abc", b"", b"def"];
        let input = Input::new(&slices).skip(4);
        assert_eq!(input.len(), 2);
        assert_eq!(input.chunks().collect::<Vec<_>>(), vec![&b"ef"[..]]);
        assert!(Input::new(&slices).skip(100).is_empty());
    }

    #[test]
    fn peek_copies_a_header_across_slices() {
        let slices: [&[u8]; 3] = [b"\x80\x01", b"\x00", b"\x05rest"];
        let input = Input::new(&slices);
        assert_eq!(input.peek::<4>(0), Some([0x80, 1, 0, 5]));
        assert_eq!(input.peek::<4>(6), None);
    }

    proptest! {
        #[test]
        fn any_split_reads_like_the_joined_bytes(
            data in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), any::<u8>()], 0..64),
            points in proptest::collection::vec(0usize..64, 0..6),
            from in 0usize..64,
            skip in 0usize..64,
        ) {
            let slices = split_at_points(&data, points);
            let input = Input::new(&slices).skip(skip);
            let joined = &data[skip.min(data.len())..];
            prop_assert_eq!(input.len(), joined.len());
            prop_assert_eq!(input.chunks().flatten().copied().collect::<Vec<_>>(), joined.to_vec());
            let expect_crlf = joined.windows(2).enumerate().skip(from).find(|(_, w)| w == b"\r\n").map(|(i, _)| i);
            prop_assert_eq!(input.find_crlf(from), expect_crlf);
            let expect_find = joined.windows(3).enumerate().skip(from).find(|(_, w)| w == b"\n\r\n").map(|(i, _)| i);
            prop_assert_eq!(input.find(b"\n\r\n", from), expect_find);
            let mut scratch = Vec::new();
            let end = joined.len().min(from + 5);
            if from <= end {
                prop_assert_eq!(input.contiguous(from..end, &mut scratch), Some(&joined[from..end]));
            }
        }
    }
}
