//! The part of the Kafka protocol the load generator speaks, written from the protocol's
//! message definitions and independent of the proxy's parser: it encodes CreateTopics v4,
//! Produce v8 (acks=1, one v2 record batch) and Fetch v11 requests, cuts the response stream
//! into frames ([`cut`]) and reads the fields of their bodies the load checks.
//!
//! These versions are the newest without flexible encoding (compact strings, tagged fields):
//! Kafka 4 brokers and tansu accept them, and they name topics rather than topic ids. Every
//! frame is a 4-byte big-endian length and the message; requests have header v1 (api key,
//! version, correlation id, client id), responses header v0 (correlation id). A STRING is an
//! INT16 length and UTF-8, nullable with length -1; BYTES and arrays an INT32 length or count.

use std::fmt;

const PRODUCE: i16 = 0;
const FETCH: i16 = 1;
const CREATE_TOPICS: i16 = 19;
pub(super) const PRODUCE_VERSION: i16 = 8;
pub(super) const FETCH_VERSION: i16 = 11;
pub(super) const CREATE_TOPICS_VERSION: i16 = 4;

/// Error codes the load treats specially.
pub(super) const NONE: i16 = 0;
pub(super) const TOPIC_ALREADY_EXISTS: i16 = 36;

/// A response larger than this is not a broker answering this load generator.
const MAX_FRAME: usize = 64 * 1024 * 1024;
/// Where the correlation id stands in a request frame: after the length, api key and version.
const CORRELATION_AT: usize = 8;

/// The load generator names itself so in every request.
const CLIENT_ID: &str = "axoneme-loadgen";

/// A response that is not what its request's API and version make it.
#[derive(Debug, PartialEq)]
pub(super) struct WireError(String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed response: {}", self.0)
    }
}

impl std::error::Error for WireError {}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), which a v2 record batch carries.
pub(super) fn crc32c(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut n = 0;
        while n < 256 {
            let mut crc = n as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            table[n] = crc;
            n += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |crc, &byte| {
        TABLE[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8)
    })
}

/// Appends `value` as a zigzag varint, as record fields are written.
fn put_varint(out: &mut Vec<u8>, value: i32) {
    let mut zigzag = ((value << 1) ^ (value >> 31)) as u32;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

fn put_string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as i16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// A record batch (magic 2) of one record without key or headers, holding `value`, stamped
/// `timestamp_ms`, not transactional, without producer id and uncompressed.
pub(super) fn record_batch(value: &[u8], timestamp_ms: i64) -> Vec<u8> {
    let mut record = Vec::with_capacity(value.len() + 16);
    record.push(0); // attributes
    put_varint(&mut record, 0); // timestamp delta
    put_varint(&mut record, 0); // offset delta
    put_varint(&mut record, -1); // no key
    put_varint(&mut record, value.len() as i32);
    record.extend_from_slice(value);
    put_varint(&mut record, 0); // no headers

    // What the CRC covers: from the attributes to the end.
    let mut checked = Vec::with_capacity(record.len() + 48);
    checked.extend_from_slice(&0i16.to_be_bytes()); // attributes
    checked.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    checked.extend_from_slice(&timestamp_ms.to_be_bytes()); // base timestamp
    checked.extend_from_slice(&timestamp_ms.to_be_bytes()); // max timestamp
    checked.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    checked.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    checked.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    checked.extend_from_slice(&1i32.to_be_bytes()); // records
    put_varint(&mut checked, record.len() as i32);
    checked.extend_from_slice(&record);

    let mut batch = Vec::with_capacity(checked.len() + 21);
    batch.extend_from_slice(&0i64.to_be_bytes()); // base offset
                                                  // The batch length counts from the partition leader epoch on: 4 + 1 + 4 bytes before
                                                  // what the CRC covers.
    batch.extend_from_slice(&((checked.len() + 9) as i32).to_be_bytes());
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend_from_slice(&crc32c(&checked).to_be_bytes());
    batch.extend_from_slice(&checked);
    batch
}

/// Starts a request frame of `api_key` at `version`: a length to fill in and header v1.
fn begin(out: &mut Vec<u8>, api_key: i16, version: i16, correlation_id: i32) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&api_key.to_be_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&correlation_id.to_be_bytes());
    put_string(out, CLIENT_ID);
    start
}

/// Writes the length of the frame begun at `start`.
fn end(out: &mut [u8], start: usize) {
    let len = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Sets the correlation id of the request frame `frame`.
pub(super) fn set_correlation_id(frame: &mut [u8], correlation_id: i32) {
    frame[CORRELATION_AT..CORRELATION_AT + 4].copy_from_slice(&correlation_id.to_be_bytes());
}

/// Appends CreateTopics v4 of `topic`, one partition, one replica, waiting up to 10 s.
pub(super) fn encode_create_topic(out: &mut Vec<u8>, correlation_id: i32, topic: &str) {
    let start = begin(out, CREATE_TOPICS, CREATE_TOPICS_VERSION, correlation_id);
    out.extend_from_slice(&1i32.to_be_bytes()); // topics
    put_string(out, topic);
    out.extend_from_slice(&1i32.to_be_bytes()); // partitions
    out.extend_from_slice(&1i16.to_be_bytes()); // replication factor
    out.extend_from_slice(&0i32.to_be_bytes()); // no assignments
    out.extend_from_slice(&0i32.to_be_bytes()); // no configs
    out.extend_from_slice(&10_000i32.to_be_bytes()); // timeout
    out.push(0); // not validate-only
    end(out, start);
}

/// Appends Produce v8 of `batch` to partition 0 of `topic`, acks=1 (the leader's), waiting up
/// to 10 s.
pub(super) fn encode_produce(out: &mut Vec<u8>, correlation_id: i32, topic: &str, batch: &[u8]) {
    let start = begin(out, PRODUCE, PRODUCE_VERSION, correlation_id);
    out.extend_from_slice(&(-1i16).to_be_bytes()); // no transactional id
    out.extend_from_slice(&1i16.to_be_bytes()); // acks
    out.extend_from_slice(&10_000i32.to_be_bytes()); // timeout
    out.extend_from_slice(&1i32.to_be_bytes()); // topics
    put_string(out, topic);
    out.extend_from_slice(&1i32.to_be_bytes()); // partitions
    out.extend_from_slice(&0i32.to_be_bytes()); // partition 0
    out.extend_from_slice(&(batch.len() as i32).to_be_bytes());
    out.extend_from_slice(batch);
    end(out, start);
}

/// Appends Fetch v11 of partition 0 of `topic` from `offset`, at most `max_bytes` bytes,
/// answered as soon as there is a byte or after 500 ms; read-uncommitted, no fetch session.
pub(super) fn encode_fetch(
    out: &mut Vec<u8>,
    correlation_id: i32,
    topic: &str,
    offset: i64,
    max_bytes: i32,
) {
    let start = begin(out, FETCH, FETCH_VERSION, correlation_id);
    out.extend_from_slice(&(-1i32).to_be_bytes()); // replica id: a consumer
    out.extend_from_slice(&500i32.to_be_bytes()); // max wait
    out.extend_from_slice(&1i32.to_be_bytes()); // min bytes
    out.extend_from_slice(&max_bytes.to_be_bytes());
    out.push(0); // isolation level: read uncommitted
    out.extend_from_slice(&0i32.to_be_bytes()); // session id
    out.extend_from_slice(&(-1i32).to_be_bytes()); // session epoch: no session
    out.extend_from_slice(&1i32.to_be_bytes()); // topics
    put_string(out, topic);
    out.extend_from_slice(&1i32.to_be_bytes()); // partitions
    out.extend_from_slice(&0i32.to_be_bytes()); // partition 0
    out.extend_from_slice(&(-1i32).to_be_bytes()); // current leader epoch: unknown
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&(-1i64).to_be_bytes()); // log start offset: a consumer's
    out.extend_from_slice(&max_bytes.to_be_bytes()); // partition max bytes
    out.extend_from_slice(&0i32.to_be_bytes()); // no forgotten topics
    put_string(out, ""); // rack id
    end(out, start);
}

/// A response frame: its correlation id and the body after the header.
pub(super) struct Frame<'a> {
    pub correlation_id: i32,
    pub body: &'a [u8],
}

/// Cuts the first whole response frame off `buf`: the frame and its length with the length
/// prefix, or `None` when it is not all there yet.
pub(super) fn cut(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, WireError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let len = i32::from_be_bytes(prefix.try_into().expect("4 bytes"));
    let len = usize::try_from(len)
        .ok()
        .filter(|&len| (4..=MAX_FRAME).contains(&len))
        .ok_or_else(|| WireError(format!("a frame length of {len}")))?;
    let Some(message) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    let frame = Frame {
        correlation_id: i32::from_be_bytes(message[..4].try_into().expect("4 bytes")),
        body: &message[4..],
    };
    Ok(Some((frame, 4 + len)))
}

/// Reads a response body's fields in order.
struct Body<'a> {
    bytes: &'a [u8],
    at: usize,
    /// The message being read, for errors.
    what: &'static str,
}

impl<'a> Body<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Body { bytes, at: 0, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let taken = self
            .bytes
            .get(self.at..self.at.saturating_add(n))
            .ok_or_else(|| {
                WireError(format!(
                    "{} of {} bytes ends at byte {} where {n} more were expected",
                    self.what,
                    self.bytes.len(),
                    self.at
                ))
            })?;
        self.at += n;
        Ok(taken)
    }

    fn int16(&mut self) -> Result<i16, WireError> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }

    fn int32(&mut self) -> Result<i32, WireError> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn int64(&mut self) -> Result<i64, WireError> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }

    /// A STRING or nullable STRING, None when null.
    fn string(&mut self) -> Result<Option<&'a [u8]>, WireError> {
        let len = self.int16()?;
        if len < 0 {
            return Ok(None);
        }
        self.take(len as usize).map(Some)
    }

    /// A nullable BYTES, None when null.
    fn bytes(&mut self) -> Result<Option<&'a [u8]>, WireError> {
        let len = self.int32()?;
        if len < 0 {
            return Ok(None);
        }
        self.take(len as usize).map(Some)
    }

    /// An array's count, which must be `expected`: the load names one topic and one partition.
    fn count(&mut self, expected: i32, of: &str) -> Result<(), WireError> {
        match self.int32()? {
            count if count == expected => Ok(()),
            count => Err(WireError(format!(
                "{} with {count} {of} where the request named {expected}",
                self.what
            ))),
        }
    }

    /// The topic name of the one topic the request named, which must be `topic`.
    fn topic(&mut self, topic: &str) -> Result<(), WireError> {
        match self.string()? {
            Some(name) if name == topic.as_bytes() => Ok(()),
            name => Err(WireError(format!(
                "{} for topic {:?} where the request named {topic:?}",
                self.what,
                name.map(String::from_utf8_lossy)
            ))),
        }
    }

    fn partition(&mut self) -> Result<(), WireError> {
        match self.int32()? {
            0 => Ok(()),
            other => Err(WireError(format!(
                "{} for partition {other} where the request named 0",
                self.what
            ))),
        }
    }
}

/// A CreateTopics v4 response to the request of one topic: its error code.
pub(super) fn create_topic_error(body: &[u8], topic: &str) -> Result<i16, WireError> {
    let mut body = Body::new(body, "a CreateTopics response");
    body.int32()?; // throttle time
    body.count(1, "topics")?;
    body.topic(topic)?;
    body.int16()
}

/// What a Produce v8 response says of the one partition produced to.
#[derive(Debug, PartialEq)]
pub(super) struct Produced {
    pub error_code: i16,
    pub base_offset: i64,
}

pub(super) fn produced(body: &[u8], topic: &str) -> Result<Produced, WireError> {
    let mut body = Body::new(body, "a Produce response");
    body.count(1, "topics")?;
    body.topic(topic)?;
    body.count(1, "partitions")?;
    body.partition()?;
    let error_code = body.int16()?;
    let base_offset = body.int64()?;
    Ok(Produced {
        error_code,
        base_offset,
    })
}

/// What a Fetch v11 response says of the one partition fetched.
#[derive(Debug, PartialEq)]
pub(super) struct Fetched {
    /// The response's own error code, then the partition's.
    pub error_code: i16,
    pub partition_error_code: i16,
    pub high_watermark: i64,
    /// The base offset of the first record batch, and the last offset of the last whole one;
    /// None when the records are empty.
    pub offsets: Option<(i64, i64)>,
}

pub(super) fn fetched(body: &[u8], topic: &str) -> Result<Fetched, WireError> {
    let mut body = Body::new(body, "a Fetch response");
    body.int32()?; // throttle time
    let error_code = body.int16()?;
    body.int32()?; // session id
    body.count(1, "topics")?;
    body.topic(topic)?;
    body.count(1, "partitions")?;
    body.partition()?;
    let partition_error_code = body.int16()?;
    let high_watermark = body.int64()?;
    body.int64()?; // last stable offset
    body.int64()?; // log start offset
    let aborted = body.int32()?;
    if aborted > 0 {
        body.take(aborted as usize * 16)?; // producer id and first offset of each
    }
    body.int32()?; // preferred read replica
    let records = body.bytes()?.unwrap_or_default();
    Ok(Fetched {
        error_code,
        partition_error_code,
        high_watermark,
        offsets: batch_offsets(records),
    })
}

/// The base offset of the first record batch in `records` and the last offset of the last
/// whole one (a broker may end the records with part of a batch); None without a whole batch.
fn batch_offsets(records: &[u8]) -> Option<(i64, i64)> {
    // A batch header: base offset (8), batch length (4), leader epoch (4), magic (1), CRC (4),
    // attributes (2), last offset delta (4), ...
    let mut at = 0;
    let mut found: Option<(i64, i64)> = None;
    while let Some(header) = records.get(at..at + 27) {
        let base = i64::from_be_bytes(header[..8].try_into().expect("8"));
        let len = i32::from_be_bytes(header[8..12].try_into().expect("4"));
        let end = at + 12 + usize::try_from(len).ok()?;
        if end > records.len() {
            break;
        }
        let last_delta = i32::from_be_bytes(header[23..27].try_into().expect("4"));
        let last = base + i64::from(last_delta);
        found = Some((found.map_or(base, |(first, _)| first), last));
        at = end;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hexadecimal text to bytes, spaces ignored.
    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    #[test]
    fn crc32c_matches_the_check_values() {
        // The CRC catalogue's check value of CRC-32/ISCSI, and RFC 3720's B.4 vectors.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xff; 32]), 0x62A8_AB43);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn varints_are_zigzag() {
        for (value, expected) in [
            (0, &[0x00][..]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (63, &[0x7e]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (1024, &[0x80, 0x10]),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out, expected, "{value}");
        }
    }

    // The references below are kafka-python 3.0.12's encodings of the same messages (its
    // DefaultRecordBatchBuilder, and its ProduceRequest, FetchRequest and CreateTopicsRequest at
    // these versions with header v1, framed; its ProduceResponse v8 and FetchResponse v11
    // bodies), captured once.

    #[test]
    fn record_batch_is_the_reference_encoding() {
        // One record appended at offset 0, timestamp 1700000000000, no key, value b"hello", no
        // headers; magic 2, uncompressed, not transactional, producer id, epoch and base
        // sequence -1. kafka-python writes 0 as the partition leader epoch, which the CRC does
        // not cover; Kafka's producer writes -1 (no epoch), as the load does, so the reference
        // has -1 there.
        let reference = hex(
            "0000000000000000 0000003d ffffffff 02 e641a44b 0000 00000000
             0000018bcfe56800 0000018bcfe56800 ffffffffffffffff ffff ffffffff 00000001
             16 00 00 00 01 0a 68656c6c6f 00",
        );
        assert_eq!(record_batch(b"hello", 1_700_000_000_000), reference);
    }

    #[test]
    fn a_kib_value_batch_has_two_byte_varint_lengths() {
        let batch = record_batch(&[b'x'; 1024], 0);
        // 61 bytes of batch header, then the record: length (2), attributes, timestamp and
        // offset deltas, key length, value length (2), value, header count.
        assert_eq!(batch.len(), 61 + 2 + 4 + 2 + 1024 + 1);
        let len = i32::from_be_bytes(batch[8..12].try_into().unwrap());
        assert_eq!(len as usize, batch.len() - 12);
        let crc = u32::from_be_bytes(batch[17..21].try_into().unwrap());
        assert_eq!(crc, crc32c(&batch[21..]));
    }

    #[test]
    fn produce_request_is_the_reference_encoding() {
        let mut out = Vec::new();
        encode_produce(&mut out, 7, "t", b"BATCH");
        let reference = hex(
            "00000039 0000 0008 00000007 000f 61786f6e656d652d6c6f616467656e
             ffff 0001 00002710 00000001 0001 74 00000001 00000000 00000005 4241544348",
        );
        assert_eq!(out, reference);
        set_correlation_id(&mut out, 0x0102_0304);
        assert_eq!(out[8..12], [1, 2, 3, 4]);
    }

    #[test]
    fn fetch_request_is_the_reference_encoding() {
        let mut out = Vec::new();
        encode_fetch(&mut out, 9, "t", 300, 65536);
        let reference = hex(
            "0000005f 0001 000b 00000009 000f 61786f6e656d652d6c6f616467656e
             ffffffff 000001f4 00000001 00010000 00 00000000 ffffffff
             00000001 0001 74 00000001 00000000 ffffffff 000000000000012c ffffffffffffffff
             00010000 00000000 0000",
        );
        assert_eq!(out, reference);
    }

    #[test]
    fn create_topics_request_is_the_reference_encoding() {
        let mut out = Vec::new();
        encode_create_topic(&mut out, 1, "t");
        let reference = hex(
            "00000033 0013 0004 00000001 000f 61786f6e656d652d6c6f616467656e
             00000001 0001 74 00000001 0001 00000000 00000000 00002710 00",
        );
        assert_eq!(out, reference);
    }

    #[test]
    fn cuts_frames_that_arrive_in_pieces() {
        let frame = hex("0000000a 0000002a 0102 0304 0506");
        for end in 0..frame.len() {
            assert!(cut(&frame[..end]).unwrap().is_none(), "{end}");
        }
        let (cut_frame, len) = cut(&frame).unwrap().unwrap();
        assert_eq!((cut_frame.correlation_id, len), (42, 14));
        assert_eq!(cut_frame.body, [1, 2, 3, 4, 5, 6]);
        assert!(cut(&hex("ffffffff")).is_err());
        assert!(cut(&hex("00000002 0000")).is_err());
    }

    #[test]
    fn reads_a_produce_response() {
        // kafka-python's ProduceResponse v8 body: base offset 42, no append time, log start 0.
        let body = hex(
            "00000001 0001 74 00000001 00000000 0000 000000000000002a ffffffffffffffff
             0000000000000000 00000000 ffff 00000000",
        );
        assert_eq!(
            produced(&body, "t").unwrap(),
            Produced {
                error_code: 0,
                base_offset: 42
            }
        );
        assert!(produced(&body, "u").is_err());
        assert!(produced(&body[..20], "t").is_err());
    }

    #[test]
    fn reads_a_fetch_response_with_two_batches_and_a_partial_third() {
        let one = record_batch(b"a", 0);
        let mut records = Vec::new();
        for base in [5i64, 6, 7] {
            let mut batch = one.clone();
            batch[..8].copy_from_slice(&base.to_be_bytes());
            records.extend_from_slice(&batch);
        }
        records.truncate(records.len() - 3);
        let mut body = hex(
            "00000000 0000 00000000 00000001 0001 74 00000001 00000000 0000
             0000000000000064 0000000000000064 0000000000000000 ffffffff ffffffff",
        );
        body.extend_from_slice(&(records.len() as i32).to_be_bytes());
        body.extend_from_slice(&records);
        assert_eq!(
            fetched(&body, "t").unwrap(),
            Fetched {
                error_code: 0,
                partition_error_code: 0,
                high_watermark: 100,
                offsets: Some((5, 6)),
            }
        );
    }

    #[test]
    fn reads_a_fetch_error_without_records() {
        // kafka-python's FetchResponse v11 body: UNKNOWN_TOPIC_OR_PARTITION (3), null aborted
        // transactions and records.
        let body = hex(
            "00000000 0000 00000000 00000001 0001 74 00000001 00000000 0003
             ffffffffffffffff ffffffffffffffff ffffffffffffffff ffffffff ffffffff ffffffff",
        );
        let fetched = fetched(&body, "t").unwrap();
        assert_eq!((fetched.partition_error_code, fetched.offsets), (3, None));
    }
}
