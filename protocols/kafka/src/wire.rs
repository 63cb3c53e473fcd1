//! Kafka's primitive types on the wire: reading them from a message body, writing them into a
//! response.
//!
//! A [`Reader`] walks a borrowed body and hands out slices of it (strings are never copied);
//! every read checks the length against what is left, so no input can index out of bounds. A
//! [`Writer`] appends to a caller's buffer. Both know whether the message version is flexible
//! (KIP-482: compact strings and arrays with unsigned-varint lengths, tagged fields), so the
//! message modules write each field once for every version. This module knows no message.

/// A 16-byte UUID (topic ids).
pub type Uuid = [u8; 16];

/// A body that does not hold what its message definition says it must.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The body ends inside a field.
    #[error("the body ends inside {0}")]
    Truncated(&'static str),
    /// A length is negative where only null (-1) or a length may stand.
    #[error("{0} has a negative length")]
    NegativeLength(&'static str),
    /// A field that may not be null is null.
    #[error("{0} is null")]
    Null(&'static str),
    /// An unsigned varint longer than 5 bytes or above 32 bits.
    #[error("{0} has an overlong varint")]
    Varint(&'static str),
    /// Fields that brokers read differently, so that judging one reading would let a client
    /// reach what the other names.
    #[error("{0} is read differently by different brokers")]
    Ambiguous(&'static str),
}

/// A cursor over a message body, reading the encoding of one message version.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    flexible: bool,
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `bytes`; `flexible` when the message version is flexible.
    pub fn new(bytes: &'a [u8], flexible: bool) -> Self {
        Reader { bytes, flexible }
    }

    /// Whether the message version is flexible.
    pub fn flexible(&self) -> bool {
        self.flexible
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// The next `n` bytes.
    #[inline(always)]
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if n > self.bytes.len() {
            return Err(WireError::Truncated(what));
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(taken)
    }

    /// The next `n` bytes, skipped: fixed-size fields nobody reads, checked at once.
    #[inline(always)]
    pub fn skip(&mut self, n: usize, what: &'static str) -> Result<(), WireError> {
        self.take(n, what).map(|_| ())
    }

    #[inline(always)]
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// An `int8`.
    #[inline(always)]
    pub fn i8(&mut self, what: &'static str) -> Result<i8, WireError> {
        Ok(i8::from_be_bytes(self.array(what)?))
    }

    /// A `bool` (any non-zero byte is true, as Kafka reads it).
    #[inline(always)]
    pub fn bool(&mut self, what: &'static str) -> Result<bool, WireError> {
        Ok(self.array::<1>(what)?[0] != 0)
    }

    /// An `int16`.
    #[inline(always)]
    pub fn i16(&mut self, what: &'static str) -> Result<i16, WireError> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    /// An `int32`.
    #[inline(always)]
    pub fn i32(&mut self, what: &'static str) -> Result<i32, WireError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    /// An `int64`.
    #[inline(always)]
    pub fn i64(&mut self, what: &'static str) -> Result<i64, WireError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    /// A `uuid`.
    #[inline(always)]
    pub fn uuid(&mut self, what: &'static str) -> Result<Uuid, WireError> {
        self.array(what)
    }

    /// An unsigned varint of at most 32 bits.
    #[inline(always)]
    pub fn uvarint(&mut self, what: &'static str) -> Result<u32, WireError> {
        // Most varints (lengths of names, counts, the empty tagged fields) are one byte; the
        // lengths of record batches up to 16 KiB are two.
        match *self.bytes {
            [byte, ref rest @ ..] if byte & 0x80 == 0 => {
                self.bytes = rest;
                Ok(u32::from(byte))
            }
            [low, high, ref rest @ ..] if high & 0x80 == 0 => {
                self.bytes = rest;
                Ok(u32::from(low & 0x7f) | u32::from(high) << 7)
            }
            _ => self.uvarint_long(what),
        }
    }

    #[cold]
    #[inline(never)]
    fn uvarint_long(&mut self, what: &'static str) -> Result<u32, WireError> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let byte = self.array::<1>(what)?[0];
            let bits = u32::from(byte & 0x7f);
            if i == 4 && bits > 0x0f {
                return Err(WireError::Varint(what));
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(WireError::Varint(what))
    }

    /// A length: `int16` (strings) or `int32` (bytes, arrays) in classic versions, an unsigned
    /// varint holding length + 1 in flexible ones. `None` is null.
    #[inline(always)]
    fn length(&mut self, wide: bool, what: &'static str) -> Result<Option<usize>, WireError> {
        if self.flexible {
            return Ok(self.uvarint(what)?.checked_sub(1).map(|n| n as usize));
        }
        let n = match wide {
            true => self.i32(what)?,
            false => i32::from(self.i16(what)?),
        };
        match n {
            -1 => Ok(None),
            n if n < 0 => Err(WireError::NegativeLength(what)),
            n => Ok(Some(n as usize)),
        }
    }

    /// A `string` that may be null.
    #[inline(always)]
    pub fn nullable_string(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, WireError> {
        match self.length(false, what)? {
            Some(n) => self.take(n, what).map(Some),
            None => Ok(None),
        }
    }

    /// A `string` that may not be null.
    #[inline(always)]
    pub fn string(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        self.nullable_string(what)?.ok_or(WireError::Null(what))
    }

    /// A `bytes` or `records` field that may be null, skipped without being looked at.
    #[inline(always)]
    pub fn skip_bytes(&mut self, what: &'static str) -> Result<(), WireError> {
        if let Some(n) = self.length(true, what)? {
            self.take(n, what)?;
        }
        Ok(())
    }

    /// The element count of an array that may be null.
    #[inline(always)]
    pub fn nullable_array(&mut self, what: &'static str) -> Result<Option<usize>, WireError> {
        self.length(true, what)
    }

    /// The element count of an array that may not be null.
    #[inline(always)]
    pub fn array_len(&mut self, what: &'static str) -> Result<usize, WireError> {
        self.nullable_array(what)?.ok_or(WireError::Null(what))
    }

    /// An array of fixed-size elements (`[]int32`: 4), skipped.
    #[inline(always)]
    pub fn skip_array(&mut self, element: usize, what: &'static str) -> Result<(), WireError> {
        if let Some(n) = self.nullable_array(what)? {
            let len = n.checked_mul(element).ok_or(WireError::Truncated(what))?;
            self.take(len, what)?;
        }
        Ok(())
    }

    /// An array of strings, skipped.
    pub fn skip_string_array(&mut self, what: &'static str) -> Result<(), WireError> {
        for _ in 0..self.nullable_array(what)?.unwrap_or(0) {
            self.nullable_string(what)?;
        }
        Ok(())
    }

    /// The tagged fields that end a structure in flexible versions (nothing in classic ones),
    /// skipped: none of them names a topic.
    #[inline(always)]
    pub fn tagged_fields(&mut self) -> Result<(), WireError> {
        if !self.flexible {
            return Ok(());
        }
        // Nearly always none: a single zero byte.
        if let Some((0, rest)) = self.bytes.split_first() {
            self.bytes = rest;
            return Ok(());
        }
        self.skip_tagged_fields()
    }

    #[cold]
    #[inline(never)]
    fn skip_tagged_fields(&mut self) -> Result<(), WireError> {
        let count = self.uvarint("tagged fields")?;
        for _ in 0..count {
            self.uvarint("a field tag")?;
            let size = self.uvarint("a tagged field's size")?;
            self.take(size as usize, "a tagged field")?;
        }
        Ok(())
    }
}

/// Appends one message version's encoding to a buffer.
#[derive(Debug)]
pub struct Writer<'b> {
    out: &'b mut Vec<u8>,
    flexible: bool,
}

impl<'b> Writer<'b> {
    /// A writer appending to `out`; `flexible` when the message version is flexible.
    #[inline(always)]
    pub fn new(out: &'b mut Vec<u8>, flexible: bool) -> Self {
        Writer { out, flexible }
    }

    /// An `int8`.
    #[inline(always)]
    pub fn i8(&mut self, value: i8) {
        self.out.extend_from_slice(&value.to_be_bytes());
    }

    /// A `bool`.
    #[inline(always)]
    pub fn bool(&mut self, value: bool) {
        self.out.push(u8::from(value));
    }

    /// An `int16`.
    #[inline(always)]
    pub fn i16(&mut self, value: i16) {
        self.out.extend_from_slice(&value.to_be_bytes());
    }

    /// An `int32`.
    #[inline(always)]
    pub fn i32(&mut self, value: i32) {
        self.out.extend_from_slice(&value.to_be_bytes());
    }

    /// An `int64`.
    #[inline(always)]
    pub fn i64(&mut self, value: i64) {
        self.out.extend_from_slice(&value.to_be_bytes());
    }

    /// A `uuid`.
    #[inline(always)]
    pub fn uuid(&mut self, value: &Uuid) {
        self.out.extend_from_slice(value);
    }

    /// An unsigned varint.
    #[inline(always)]
    pub fn uvarint(&mut self, mut value: u32) {
        while value >= 0x80 {
            self.out.push((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        self.out.push(value as u8);
    }

    /// A length (see [`Reader`]); `None` is null.
    #[inline(always)]
    fn length(&mut self, wide: bool, n: Option<usize>) {
        match (self.flexible, n) {
            (true, n) => self.uvarint(n.map_or(0, |n| n as u32 + 1)),
            (false, None) if wide => self.i32(-1),
            (false, None) => self.i16(-1),
            (false, Some(n)) if wide => self.i32(n as i32),
            (false, Some(n)) => self.i16(n as i16),
        }
    }

    /// A `string`, or null.
    #[inline(always)]
    pub fn nullable_string(&mut self, value: Option<&[u8]>) {
        self.length(false, value.map(<[u8]>::len));
        if let Some(value) = value {
            self.out.extend_from_slice(value);
        }
    }

    /// A `string` that is not null.
    #[inline(always)]
    pub fn string(&mut self, value: &[u8]) {
        self.nullable_string(Some(value));
    }

    /// A `bytes` field.
    #[inline(always)]
    pub fn bytes(&mut self, value: &[u8]) {
        self.length(true, Some(value.len()));
        self.out.extend_from_slice(value);
    }

    /// A null `bytes` or `records` field.
    #[inline(always)]
    pub fn null_bytes(&mut self) {
        self.length(true, None);
    }

    /// The element count of an array (`None`: a null array); the elements follow.
    #[inline(always)]
    pub fn array_len(&mut self, n: Option<usize>) {
        self.length(true, n);
    }

    /// No tagged fields (nothing in classic versions).
    #[inline(always)]
    pub fn tagged_fields(&mut self) {
        if self.flexible {
            self.uvarint(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn classic_and_compact_strings() {
        let mut r = Reader::new(b"\x00\x03abc\xff\xff", false);
        assert_eq!(r.string("s"), Ok(&b"abc"[..]));
        assert_eq!(r.nullable_string("s"), Ok(None));
        assert_eq!(r.remaining(), 0);
        let mut r = Reader::new(b"\x04abc\x00\x01", true);
        assert_eq!(r.string("s"), Ok(&b"abc"[..]));
        assert_eq!(r.string("s"), Err(WireError::Null("s")));
        assert_eq!(r.string("s"), Ok(&b""[..]));
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert_eq!(
            Reader::new(b"\xff\xfe", false).nullable_string("s"),
            Err(WireError::NegativeLength("s"))
        );
        assert_eq!(
            Reader::new(b"\x00\x05ab", false).string("s"),
            Err(WireError::Truncated("s"))
        );
        assert_eq!(
            Reader::new(b"\x7f\xff\xff\xff", false).skip_array(8, "a"),
            Err(WireError::Truncated("a"))
        );
        assert_eq!(
            Reader::new(b"\xff\xff\xff\xff\x1f", true).uvarint("v"),
            Err(WireError::Varint("v"))
        );
        assert_eq!(
            Reader::new(b"\x80\x80\x80\x80\x80\x01", true).uvarint("v"),
            Err(WireError::Varint("v"))
        );
    }

    #[test]
    fn tagged_fields_are_skipped() {
        let mut r = Reader::new(b"\x02\x00\x01a\x05\x02bcZ", true);
        assert_eq!(r.tagged_fields(), Ok(()));
        assert_eq!(r.remaining(), 1);
        assert_eq!(
            Reader::new(b"\x01\x00\x05ab", true).tagged_fields(),
            Err(WireError::Truncated("a tagged field"))
        );
    }

    proptest! {
        #[test]
        fn varints_round_trip(value in any::<u32>()) {
            let mut out = Vec::new();
            Writer::new(&mut out, true).uvarint(value);
            let mut r = Reader::new(&out, true);
            prop_assert_eq!(r.uvarint("v"), Ok(value));
            prop_assert_eq!(r.remaining(), 0);
        }

        #[test]
        fn strings_and_arrays_round_trip(
            flexible in any::<bool>(),
            value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
            count in proptest::option::of(0usize..200),
        ) {
            let mut out = Vec::new();
            let mut w = Writer::new(&mut out, flexible);
            w.nullable_string(value.as_deref());
            w.array_len(count);
            let mut r = Reader::new(&out, flexible);
            prop_assert_eq!(r.nullable_string("s"), Ok(value.as_deref()));
            prop_assert_eq!(r.nullable_array("a"), Ok(count));
            prop_assert_eq!(r.remaining(), 0);
        }

        #[test]
        fn no_input_makes_a_read_panic(bytes in proptest::collection::vec(any::<u8>(), 0..24), flexible in any::<bool>()) {
            let mut r = Reader::new(&bytes, flexible);
            let _ = r.tagged_fields();
            let _ = r.skip_array(4, "a");
            let _ = r.skip_string_array("a");
            let _ = r.skip_bytes("b");
            let _ = r.nullable_string("s");
        }
    }
}
