//! CQL native protocol v5 segments: the framing that carries envelopes (the 9-byte-header
//! messages of earlier versions) once STARTUP has been answered.
//!
//! A segment is a little-endian header protected by a CRC24, a payload of at most 128 KiB - 1,
//! and a CRC32 of the payload as sent. With LZ4 negotiated the header is 5 bytes (compressed
//! length, uncompressed length, self-contained flag) and the payload an LZ4 block, or the plain
//! payload when the uncompressed length is 0; without compression it is 3 bytes (length,
//! self-contained flag). A self-contained segment holds whole envelopes; a larger envelope is
//! spread over a run of segments that are not.
//!
//! Decoding and composing only, over bytes at hand: what to do with the envelopes is the
//! parser's business.

/// Largest payload a segment carries.
pub const MAX_PAYLOAD: usize = 128 * 1024 - 1;

/// Length of the payload CRC32 trailer.
pub const TRAILER_LEN: usize = 4;

/// Length of the header CRC24.
const CRC24_LEN: usize = 3;

/// How segments are framed on a connection, fixed by the compression STARTUP agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// 3-byte header, payload as is.
    Plain,
    /// 5-byte header with both lengths, payload an LZ4 block (or as is when it would not shrink).
    Lz4,
}

impl Format {
    /// Length of a segment header, its CRC24 included.
    pub const fn header_len(self) -> usize {
        self.fields_len() + CRC24_LEN
    }

    /// Length of the header's fields, without the CRC24.
    const fn fields_len(self) -> usize {
        match self {
            Format::Plain => 3,
            Format::Lz4 => 5,
        }
    }
}

/// A segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub format: Format,
    /// Length of the payload as sent.
    pub payload_len: usize,
    /// Length of the payload once decompressed; 0 when it was sent as is.
    pub uncompressed_len: usize,
    /// Whether the payload holds whole envelopes only.
    pub self_contained: bool,
}

impl SegmentHeader {
    /// Length of the whole segment: header, payload and trailer.
    pub fn segment_len(&self) -> usize {
        self.format.header_len() + self.payload_len + TRAILER_LEN
    }

    /// Length of the payload once decoded.
    pub fn decoded_len(&self) -> usize {
        match self.uncompressed_len {
            0 => self.payload_len,
            n => n,
        }
    }
}

/// A segment that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("segment header CRC24 mismatch: received {received:06x}, computed {computed:06x}")]
    HeaderCrc { received: u32, computed: u32 },
    #[error("segment payload CRC32 mismatch: received {received:08x}, computed {computed:08x}")]
    PayloadCrc { received: u32, computed: u32 },
    #[error("segment shorter than its header announces")]
    Truncated,
    #[error("segment payload does not decompress: {0}")]
    Decompress(String),
}

/// Reads a segment header from the first [`Format::header_len`] bytes of `bytes`, checking its
/// CRC24; `None` when fewer bytes are at hand.
pub fn parse_header(format: Format, bytes: &[u8]) -> Option<Result<SegmentHeader, SegmentError>> {
    let fields = format.fields_len();
    let header = bytes.get(..format.header_len())?;
    let value = read_le(&header[..fields]);
    let received = read_le(&header[fields..]) as u32;
    let computed = crc24(value, fields);
    if received != computed {
        return Some(Err(SegmentError::HeaderCrc { received, computed }));
    }
    let payload_len = (value & MAX_PAYLOAD as u64) as usize;
    let (uncompressed_len, flag_bit) = match format {
        Format::Plain => (0, 17),
        Format::Lz4 => (((value >> 17) & MAX_PAYLOAD as u64) as usize, 34),
    };
    Some(Ok(SegmentHeader {
        format,
        payload_len,
        uncompressed_len,
        self_contained: value >> flag_bit & 1 == 1,
    }))
}

/// The payload of the whole segment `segment` (which starts with `header`) as sent, its CRC32
/// checked.
pub fn checked_payload<'s>(
    header: &SegmentHeader,
    segment: &'s [u8],
) -> Result<&'s [u8], SegmentError> {
    let start = header.format.header_len();
    let (Some(payload), Some(trailer)) = (
        segment.get(start..start + header.payload_len),
        segment.get(start + header.payload_len..header.segment_len()),
    ) else {
        return Err(SegmentError::Truncated);
    };
    let received = read_le(trailer) as u32;
    let computed = crc32(payload);
    if received != computed {
        return Err(SegmentError::PayloadCrc { received, computed });
    }
    Ok(payload)
}

/// The payload of the whole segment `segment` (which starts with `header`), its CRC32 checked:
/// borrowed when sent as is, else decompressed into `scratch`.
pub fn decode_payload<'s>(
    header: &SegmentHeader,
    segment: &'s [u8],
    scratch: &'s mut Vec<u8>,
) -> Result<&'s [u8], SegmentError> {
    let payload = checked_payload(header, segment)?;
    if header.uncompressed_len == 0 {
        return Ok(payload);
    }
    scratch.clear();
    scratch.resize(header.uncompressed_len, 0);
    match lz4_flex::block::decompress_into(payload, scratch) {
        Ok(n) if n == header.uncompressed_len => Ok(scratch),
        Ok(n) => Err(SegmentError::Decompress(format!(
            "{n} bytes where the header announced {}",
            header.uncompressed_len
        ))),
        Err(e) => Err(SegmentError::Decompress(e.to_string())),
    }
}

/// Appends to `out` the segments carrying `payload`: one self-contained segment when it fits,
/// else a run of segments that are not. With LZ4 a payload is compressed when the result fits.
pub fn encode(format: Format, payload: &[u8], out: &mut Vec<u8>) {
    let self_contained = payload.len() <= MAX_PAYLOAD;
    if payload.is_empty() {
        encode_one(format, payload, true, out);
    }
    for part in payload.chunks(MAX_PAYLOAD) {
        encode_one(format, part, self_contained, out);
    }
}

/// Appends one segment carrying `payload` (at most [`MAX_PAYLOAD`] bytes).
///
/// With LZ4 the payload is compressed even when that does not shrink it, as long as the result
/// fits in a segment: the spec lets a payload go as is (uncompressed length 0), but drivers
/// miscount the length of such a segment (the Python driver 3.30 takes it for a 3-byte header),
/// which breaks when a read ends inside its last two bytes.
fn encode_one(format: Format, payload: &[u8], self_contained: bool, out: &mut Vec<u8>) {
    let compressed = match format {
        Format::Lz4 => Some(lz4_flex::block::compress(payload))
            .filter(|c| c.len() <= MAX_PAYLOAD && !payload.is_empty()),
        Format::Plain => None,
    };
    let (sent, uncompressed_len) = match &compressed {
        Some(c) => (c.as_slice(), payload.len()),
        None => (payload, 0),
    };
    let mut value = sent.len() as u64;
    let flag_bit = match format {
        Format::Plain => 17,
        Format::Lz4 => {
            value |= (uncompressed_len as u64) << 17;
            34
        }
    };
    value |= u64::from(self_contained) << flag_bit;
    let fields = format.fields_len();
    out.extend_from_slice(&value.to_le_bytes()[..fields]);
    out.extend_from_slice(&crc24(value, fields).to_le_bytes()[..CRC24_LEN]);
    out.extend_from_slice(sent);
    out.extend_from_slice(&crc32(sent).to_le_bytes());
}

/// A little-endian unsigned integer of up to 8 bytes.
fn read_le(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0, |value, &byte| value << 8 | u64::from(byte))
}

/// The protocol's CRC24 of the `len` low bytes of `value`, least significant first
/// (initial value 0x875060, polynomial 0x1974F0B).
fn crc24(mut value: u64, len: usize) -> u32 {
    let mut crc: u32 = 0x87_5060;
    for _ in 0..len {
        crc ^= ((value & 0xff) as u32) << 16;
        value >>= 8;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x100_0000 != 0 {
                crc ^= 0x197_4F0B;
            }
        }
    }
    crc
}

/// The protocol's CRC32 of a payload: the standard CRC32 over four fixed bytes, then the payload.
fn crc32(payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[0xfa, 0x2d, 0x55, 0xca]);
    hasher.update(payload);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(format: Format, mut wire: &[u8]) -> Vec<(bool, Vec<u8>)> {
        let mut segments = Vec::new();
        while !wire.is_empty() {
            let header = parse_header(format, wire).unwrap().unwrap();
            let mut scratch = Vec::new();
            let payload = decode_payload(&header, wire, &mut scratch).unwrap();
            segments.push((header.self_contained, payload.to_vec()));
            wire = &wire[header.segment_len()..];
        }
        segments
    }

    /// Segments as the Python cassandra-driver 3.30 composes them (its `SegmentCodec`).
    #[test]
    fn reads_the_drivers_segments() {
        let plain = [3, 0, 2, 66, 150, 124, b'a', b'b', b'c', 8, 122, 54, 197];
        assert_eq!(
            decode_all(Format::Plain, &plain),
            vec![(true, b"abc".to_vec())]
        );
        let mut ours = Vec::new();
        encode(Format::Plain, b"abc", &mut ours);
        assert_eq!(ours, plain);
        let lz4 = [
            50, 0, 56, 1, 4, 164, 187, 19, 255, 24, 83, 69, 76, 69, 67, 84, 32, 42, 32, 70, 82, 79,
            77, 32, 97, 116, 116, 101, 110, 100, 97, 110, 99, 101, 46, 100, 97, 105, 108, 121, 95,
            114, 101, 99, 111, 114, 100, 115, 32, 39, 0, 93, 80, 111, 114, 100, 115, 32, 86, 207,
            50, 197,
        ];
        let query = b"SELECT * FROM attendance.daily_records ".repeat(4);
        assert_eq!(decode_all(Format::Lz4, &lz4), vec![(true, query)]);
    }

    #[test]
    fn round_trips_both_formats_and_splits_large_payloads() {
        let small = b"SELECT * FROM attendance.daily_records".repeat(10);
        let large: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for format in [Format::Plain, Format::Lz4] {
            let mut wire = Vec::new();
            encode(format, &small, &mut wire);
            assert_eq!(decode_all(format, &wire), vec![(true, small.clone())]);
            let mut wire = Vec::new();
            encode(format, &large, &mut wire);
            let parts = decode_all(format, &wire);
            assert_eq!(parts.len(), 3, "{format:?}");
            assert!(parts.iter().all(|(self_contained, _)| !self_contained));
            let joined: Vec<u8> = parts.iter().flat_map(|(_, p)| p.clone()).collect();
            assert_eq!(joined, large);
        }
        let mut wire = Vec::new();
        encode(Format::Lz4, &small, &mut wire);
        let header = parse_header(Format::Lz4, &wire).unwrap().unwrap();
        assert!(header.uncompressed_len == small.len() && header.payload_len < small.len());
        // Compressed even when it grows, unless it would not fit.
        let mut wire = Vec::new();
        encode(Format::Lz4, b"xy", &mut wire);
        let header = parse_header(Format::Lz4, &wire).unwrap().unwrap();
        assert_eq!((header.payload_len, header.uncompressed_len), (3, 2));
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let noise: Vec<u8> = (0..MAX_PAYLOAD)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let mut wire = Vec::new();
        encode(Format::Lz4, &noise, &mut wire);
        let header = parse_header(Format::Lz4, &wire).unwrap().unwrap();
        assert_eq!(
            (header.payload_len, header.uncompressed_len),
            (MAX_PAYLOAD, 0)
        );
        assert_eq!(decode_all(Format::Lz4, &wire), vec![(true, noise)]);
    }

    #[test]
    fn refuses_corruption() {
        for format in [Format::Plain, Format::Lz4] {
            let mut wire = Vec::new();
            encode(
                format,
                &b"INSERT INTO t (k) VALUES (1)".repeat(4),
                &mut wire,
            );
            assert!(parse_header(format, &wire[..format.header_len() - 1]).is_none());
            let mut bad_header = wire.clone();
            bad_header[1] ^= 0x01;
            assert!(matches!(
                parse_header(format, &bad_header),
                Some(Err(SegmentError::HeaderCrc { .. }))
            ));
            let mut bad_payload = wire.clone();
            let at = format.header_len() + 2;
            bad_payload[at] ^= 0x40;
            let header = parse_header(format, &bad_payload).unwrap().unwrap();
            assert!(matches!(
                decode_payload(&header, &bad_payload, &mut Vec::new()),
                Err(SegmentError::PayloadCrc { .. })
            ));
        }
    }
}
