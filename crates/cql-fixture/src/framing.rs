//! How envelopes (a 9-byte header and a body) travel on a connection: back to back, as in
//! protocol v4 and before a v5 STARTUP is answered, or inside v5 segments afterwards.
//!
//! [`Inbound`] splits the bytes a client sends into envelopes and [`write`] wraps the
//! envelopes the fixture answers. Segments are decoded and composed by
//! `axoneme_cassandra::segment`; this module only decides which segments carry which
//! envelopes. It never reads an envelope's body and does no I/O.

use std::collections::VecDeque;

use axoneme_cassandra::frame::{Header, HEADER_LEN};
use axoneme_cassandra::segment::{self, Format, SegmentError};

/// The longest envelope body the protocol allows (256 MiB).
pub const MAX_BODY: usize = 256 << 20;

/// How envelopes are carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Framing {
    /// Envelopes back to back.
    #[default]
    Unframed,
    /// Envelopes inside v5 segments of this format.
    Segments(Format),
}

/// A request as it arrived: its header and its body (still compressed when a v4 header says
/// so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub header: Header,
    pub body: Vec<u8>,
}

/// Bytes that cannot be split into envelopes: the connection cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error("an envelope body of {0} bytes, more than the protocol allows")]
    TooLong(usize),
    #[error("a self-contained segment ends inside an envelope")]
    PartialEnvelope,
    #[error(
        "a self-contained segment arrived while an envelope split over segments was incomplete"
    )]
    Interleaved,
    #[error("segments that are not self-contained carry more than one envelope")]
    Overrun,
}

/// Splits what a client sends into envelopes, with the framing in force when each arrives.
#[derive(Debug, Default)]
pub struct Inbound {
    framing: Framing,
    /// Bytes received; those before `start` are consumed.
    received: Vec<u8>,
    start: usize,
    /// Envelopes of a self-contained segment not taken yet.
    decoded: VecDeque<Envelope>,
    /// The beginning of an envelope split over segments that are not self-contained.
    split: Vec<u8>,
    /// Where a compressed segment's payload is decompressed.
    scratch: Vec<u8>,
}

impl Inbound {
    /// The framing the next bytes are read with.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Reads the bytes that follow with `framing`; a v5 connection switches to segments once
    /// STARTUP is answered.
    pub fn set_framing(&mut self, framing: Framing) {
        self.framing = framing;
    }

    /// Adds bytes received from the client.
    pub fn push(&mut self, bytes: &[u8]) {
        self.received.drain(..self.start);
        self.start = 0;
        self.received.extend_from_slice(bytes);
    }

    /// Whether some received bytes wait for more to make an envelope.
    pub fn is_partial(&self) -> bool {
        self.start < self.received.len() || !self.split.is_empty()
    }

    /// The next whole envelope, or `None` until more bytes arrive.
    pub fn next_envelope(&mut self) -> Result<Option<Envelope>, FramingError> {
        match self.framing {
            Framing::Unframed => self.next_unframed(),
            Framing::Segments(format) => self.next_in_segments(format),
        }
    }

    fn next_unframed(&mut self) -> Result<Option<Envelope>, FramingError> {
        let rest = &self.received[self.start..];
        let Some(envelope) = split_envelope(rest)? else {
            return Ok(None);
        };
        self.start += HEADER_LEN + envelope.body.len();
        Ok(Some(envelope))
    }

    /// Decodes segments until one completes an envelope or the bytes at hand run out.
    fn next_in_segments(&mut self, format: Format) -> Result<Option<Envelope>, FramingError> {
        loop {
            if let Some(envelope) = self.decoded.pop_front() {
                return Ok(Some(envelope));
            }
            let rest = &self.received[self.start..];
            let header = match segment::parse_header(format, rest) {
                None => return Ok(None),
                Some(header) => header?,
            };
            let Some(whole) = rest.get(..header.segment_len()) else {
                return Ok(None);
            };
            let payload = segment::decode_payload(&header, whole, &mut self.scratch)?;
            self.start += header.segment_len();
            match header.self_contained {
                true => whole_envelopes(payload, &self.split, &mut self.decoded)?,
                false => part_of_envelope(payload, &mut self.split, &mut self.decoded)?,
            }
        }
    }
}

/// The envelope at the start of `bytes`, if they hold all of it.
fn split_envelope(bytes: &[u8]) -> Result<Option<Envelope>, FramingError> {
    let Some(header) = bytes.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let header = Header::parse(header);
    let length = header.length as usize;
    if length > MAX_BODY {
        return Err(FramingError::TooLong(length));
    }
    Ok(bytes
        .get(HEADER_LEN..HEADER_LEN + length)
        .map(|body| Envelope {
            header,
            body: body.to_vec(),
        }))
}

/// Queues the envelopes of a self-contained segment's payload, which must hold whole ones.
fn whole_envelopes(
    mut payload: &[u8],
    split: &[u8],
    decoded: &mut VecDeque<Envelope>,
) -> Result<(), FramingError> {
    if !split.is_empty() {
        return Err(FramingError::Interleaved);
    }
    while !payload.is_empty() {
        let envelope = split_envelope(payload)?.ok_or(FramingError::PartialEnvelope)?;
        payload = &payload[HEADER_LEN + envelope.body.len()..];
        decoded.push_back(envelope);
    }
    Ok(())
}

/// Adds the payload of a segment that is not self-contained to the envelope it carries part
/// of, and queues that envelope once it is whole.
fn part_of_envelope(
    payload: &[u8],
    split: &mut Vec<u8>,
    decoded: &mut VecDeque<Envelope>,
) -> Result<(), FramingError> {
    split.extend_from_slice(payload);
    let Some(envelope) = split_envelope(split)? else {
        return Ok(());
    };
    if HEADER_LEN + envelope.body.len() != split.len() {
        return Err(FramingError::Overrun);
    }
    split.clear();
    decoded.push_back(envelope);
    Ok(())
}

/// Appends `envelope` to `out` as `framing` carries it: as is, or in its own segments (one
/// self-contained segment, or a run of segments that are not when it is larger than one).
pub fn write(framing: Framing, envelope: &[u8], out: &mut Vec<u8>) {
    match framing {
        Framing::Unframed => out.extend_from_slice(envelope),
        Framing::Segments(format) => segment::encode(format, envelope, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(stream: i16, body: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0x05, 0];
        bytes.extend_from_slice(&stream.to_be_bytes());
        bytes.push(0x07);
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    fn all(inbound: &mut Inbound) -> Vec<(i16, usize)> {
        std::iter::from_fn(|| inbound.next_envelope().unwrap())
            .map(|e| (e.header.stream, e.body.len()))
            .collect()
    }

    #[test]
    fn reads_unframed_envelopes_byte_by_byte() {
        let wire = [envelope(1, b"abc"), envelope(2, b"")].concat();
        let mut inbound = Inbound::default();
        let mut seen = Vec::new();
        for byte in &wire {
            inbound.push(std::slice::from_ref(byte));
            seen.extend(all(&mut inbound));
        }
        assert_eq!(seen, [(1, 3), (2, 0)]);
        assert!(!inbound.is_partial());
    }

    #[test]
    fn reads_several_envelopes_in_one_segment_and_one_envelope_over_several() {
        let large: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        for format in [Format::Plain, Format::Lz4] {
            let mut wire = Vec::new();
            let pair = [envelope(1, b"first"), envelope(2, b"second")].concat();
            segment::encode(format, &pair, &mut wire);
            write(Framing::Segments(format), &envelope(3, &large), &mut wire);
            let mut inbound = Inbound::default();
            inbound.set_framing(Framing::Segments(format));
            let mut seen = Vec::new();
            for chunk in wire.chunks(7_000) {
                inbound.push(chunk);
                seen.extend(all(&mut inbound));
            }
            assert_eq!(seen, [(1, 5), (2, 6), (3, large.len())], "{format:?}");
            assert!(!inbound.is_partial());
        }
    }

    #[test]
    fn refuses_segments_that_break_envelopes() {
        let format = Format::Plain;
        let mut inbound = Inbound::default();
        inbound.set_framing(Framing::Segments(format));
        let mut wire = Vec::new();
        segment::encode(format, &envelope(1, b"abc")[..10], &mut wire);
        inbound.push(&wire);
        assert_eq!(inbound.next_envelope(), Err(FramingError::PartialEnvelope));

        let large = envelope(1, &vec![7; 200_000]);
        let mut wire = Vec::new();
        segment::encode(format, &large, &mut wire);
        let first = segment::parse_header(format, &wire).unwrap().unwrap();
        wire.truncate(first.segment_len());
        segment::encode(format, &envelope(2, b""), &mut wire);
        let mut inbound = Inbound::default();
        inbound.set_framing(Framing::Segments(format));
        inbound.push(&wire);
        assert_eq!(inbound.next_envelope(), Err(FramingError::Interleaved));

        let mut wire = Vec::new();
        segment::encode(format, &[large, envelope(2, b"")].concat(), &mut wire);
        let mut inbound = Inbound::default();
        inbound.set_framing(Framing::Segments(format));
        inbound.push(&wire);
        assert_eq!(inbound.next_envelope(), Err(FramingError::Overrun));
    }

    #[test]
    fn refuses_a_bad_crc_and_an_oversized_body() {
        let format = Format::Lz4;
        let mut wire = Vec::new();
        segment::encode(format, &envelope(1, b"SELECT 1"), &mut wire);
        let last = wire.len() - 1;
        wire[last] ^= 0x01;
        let mut inbound = Inbound::default();
        inbound.set_framing(Framing::Segments(format));
        inbound.push(&wire);
        assert!(matches!(
            inbound.next_envelope(),
            Err(FramingError::Segment(SegmentError::PayloadCrc { .. }))
        ));

        let mut header = envelope(1, b"")[..5].to_vec();
        header.extend_from_slice(&(MAX_BODY as u32 + 1).to_be_bytes());
        let mut inbound = Inbound::default();
        inbound.push(&header);
        assert_eq!(
            inbound.next_envelope(),
            Err(FramingError::TooLong(MAX_BODY + 1))
        );
    }
}
