//! Protocol v5 connections once STARTUP has been answered: envelopes carried in segments (see
//! [`crate::segment`]), both ways.
//!
//! A request segment is read whole (its CRCs checked) and each envelope in it is decided on.
//! When all pass, the segment passes as it came; when some are denied, the segment is dropped,
//! a segment of the envelopes that pass is injected in its place, and the denials are answered
//! in segments of their own. An envelope spread over several segments is held until all of them
//! are at hand (bounded by the frame limit) and passes or is dropped whole.
//!
//! While a USE is unanswered, request segments are held unread (see the parser's module doc).
//!
//! Response segments pass one by one once their CRCs check; only the answers to PREPAREs and
//! USEs are decoded. A denial must not land between the segments of a split response envelope (drivers
//! join payloads), so while one is in flight denials wait here and go out after its last
//! segment.

use axoneme_sdk::{Context, Flow, Input, Op, ParseError, TrimCapacity};

use super::{need_header, CassandraParser, MALFORMED, NO_ROOM};
use crate::frame::{Header, HEADER_LEN};
use crate::segment::{self, Format, SegmentError, SegmentHeader};

/// Most bytes of denials that may wait for a split response envelope to end.
const MAX_DEFERRED: usize = 64 * 1024;

const BAD_HEADER_CRC: ParseError = ParseError::new(
    axoneme_sdk::ErrorCode::MalformedFrame,
    "segment header CRC24 mismatch",
);
const BAD_PAYLOAD_CRC: ParseError = ParseError::new(
    axoneme_sdk::ErrorCode::MalformedFrame,
    "segment payload CRC32 mismatch",
);
const BAD_PAYLOAD: ParseError = ParseError::new(
    axoneme_sdk::ErrorCode::MalformedFrame,
    "segment payload that does not decompress",
);
const CUT_ENVELOPE: ParseError = ParseError::new(
    axoneme_sdk::ErrorCode::MalformedFrame,
    "envelope not ending where its segment does",
);
const SPLIT_SELF_CONTAINED: ParseError = ParseError::new(
    axoneme_sdk::ErrorCode::MalformedFrame,
    "self-contained segment inside a split envelope",
);

fn segment_error(error: SegmentError) -> ParseError {
    match error {
        SegmentError::HeaderCrc { .. } => BAD_HEADER_CRC,
        SegmentError::PayloadCrc { .. } => BAD_PAYLOAD_CRC,
        SegmentError::Truncated | SegmentError::Decompress(_) => BAD_PAYLOAD,
    }
}

/// The segment state of a v5 connection.
#[derive(Debug, Default)]
pub(super) struct State {
    /// Request side: a segment to inject in place of the one being dropped, and how much of it
    /// went out.
    rewrite: Vec<u8>,
    rewritten: usize,
    /// Request side: the length of the segment the rewrite replaces, dropped once it is out.
    replaced: usize,
    /// Request side: the decoded length of the split envelope being gathered, once known.
    gathering: Option<usize>,
    /// Reply side: decoded bytes still to come of a split response envelope.
    reply_left: usize,
    /// Reply side: that envelope so far, when it answers a PREPARE.
    reply_envelope: Option<Vec<u8>>,
    /// Denials waiting for the split response envelope to end.
    deferred: Vec<u8>,
    /// Scratch: the joined payloads of a split envelope.
    joined: Vec<u8>,
}

impl State {
    /// Gives back what a large segment made the buffers take, once they hold little again.
    pub(super) fn trim_capacity(&mut self) {
        self.rewrite.trim_capacity();
        self.deferred.trim_capacity();
        self.joined.trim_capacity();
    }

    /// Sends `error` toward the client in a segment of its own, at once or, while a split
    /// response envelope is in flight, after its last segment.
    pub(super) fn answer(
        &mut self,
        ctx: &mut Context<'_>,
        format: Format,
        error: &[u8],
    ) -> Result<(), ParseError> {
        let mut framed = Vec::with_capacity(error.len() + 16);
        segment::encode(format, error, &mut framed);
        if self.reply_left > 0 || !self.deferred.is_empty() {
            if self.deferred.len() + framed.len() > MAX_DEFERRED {
                return Err(NO_ROOM);
            }
            self.deferred.extend_from_slice(&framed);
            return Ok(());
        }
        if ctx.inject_room(Flow::Reply) < framed.len() {
            return Err(NO_ROOM);
        }
        ctx.inject(Flow::Reply, &framed);
        Ok(())
    }

    /// The next step of replacing a request segment: a piece of the rewrite to inject, then the
    /// original to drop; `None` when no replacement is under way.
    fn continue_rewrite(&mut self, ctx: &mut Context<'_>) -> Option<Op> {
        if self.rewritten < self.rewrite.len() {
            let n = ctx
                .inject_room(Flow::Request)
                .min(self.rewrite.len() - self.rewritten);
            if n == 0 {
                return Some(Op::Error(NO_ROOM));
            }
            ctx.inject(
                Flow::Request,
                &self.rewrite[self.rewritten..self.rewritten + n],
            );
            self.rewritten += n;
            return Some(Op::Inject(n));
        }
        if self.replaced == 0 {
            return None;
        }
        self.rewrite.clear();
        self.rewritten = 0;
        Some(Op::Drop(std::mem::take(&mut self.replaced)))
    }

    /// Denials that waited for a split response envelope, once it has ended: as much as the
    /// inject buffer takes.
    fn release_deferred(&mut self, ctx: &mut Context<'_>) -> Option<Op> {
        if self.reply_left > 0 || self.deferred.is_empty() {
            return None;
        }
        let n = ctx.inject_room(Flow::Reply).min(self.deferred.len());
        if n == 0 {
            return Some(Op::Error(NO_ROOM));
        }
        ctx.inject(Flow::Reply, &self.deferred[..n]);
        self.deferred.drain(..n);
        Some(Op::Inject(n))
    }
}

/// The header of the segment at `at` in `input`; `None` when it is not all at hand.
fn segment_header(
    input: Input<'_>,
    at: usize,
    format: Format,
) -> Result<Option<SegmentHeader>, ParseError> {
    let mut bytes = [0u8; 8];
    let bytes = &mut bytes[..format.header_len()];
    if !input.copy_to(at, bytes) {
        return Ok(None);
    }
    segment::parse_header(format, bytes)
        .transpose()
        .map_err(segment_error)
}

/// The envelope header at the start of `payload`.
fn envelope_bytes(payload: &[u8]) -> Result<&[u8; HEADER_LEN], ParseError> {
    payload
        .get(..HEADER_LEN)
        .and_then(|b| b.try_into().ok())
        .ok_or(CUT_ENVELOPE)
}

impl CassandraParser {
    /// A v5 request segment, or the run of segments of a split envelope.
    pub(super) fn on_request_segments(
        &mut self,
        ctx: &mut Context<'_>,
        input: Input<'_>,
        format: Format,
    ) -> Result<Op, ParseError> {
        if let Some(op) = self.segments.continue_rewrite(ctx) {
            return Ok(op);
        }
        if self.holds_requests() && self.segments.gathering.is_none() {
            return Ok(Op::Nop);
        }
        let Some(first) = segment_header(input, 0, format)? else {
            return Ok(need_header(input, format.header_len()));
        };
        if !first.self_contained {
            return self.request_split_envelope(ctx, input, format);
        }
        let len = first.segment_len();
        if input.len() < len {
            return Ok(Op::More(len - input.len()));
        }
        let (mut raw, mut decompressed) = (
            std::mem::take(&mut self.raw),
            std::mem::take(&mut self.decompressed),
        );
        let result = input
            .contiguous(0..len, &mut raw)
            .ok_or(MALFORMED)
            .and_then(|bytes| {
                segment::decode_payload(&first, bytes, &mut decompressed).map_err(segment_error)
            })
            .and_then(|payload| self.request_envelopes(ctx, payload, format, len));
        self.raw = raw;
        self.decompressed = decompressed;
        result
    }

    /// Decides on every envelope of a self-contained request segment of `len` bytes.
    fn request_envelopes(
        &mut self,
        ctx: &mut Context<'_>,
        payload: &[u8],
        format: Format,
        len: usize,
    ) -> Result<Op, ParseError> {
        // The envelopes that pass, gathered once one is denied.
        let mut passing: Option<Vec<u8>> = None;
        let mut at = 0;
        while at < payload.len() {
            let header = self.envelope_header(envelope_bytes(&payload[at..])?, false)?;
            self.check_stream_free(&header)?;
            let end = at + HEADER_LEN + header.length as usize;
            let body = payload.get(at + HEADER_LEN..end).ok_or(CUT_ENVELOPE)?;
            match self.inspect(ctx, &header, body)? {
                None => {
                    if let Some(passing) = &mut passing {
                        passing.extend_from_slice(&payload[at..end]);
                    }
                }
                Some(error) => {
                    passing.get_or_insert_with(|| payload[..at].to_vec());
                    self.answer(ctx, &error)?;
                }
            }
            at = end;
        }
        match passing {
            None => Ok(Op::Pass(len)),
            Some(passing) if passing.is_empty() => Ok(Op::Drop(len)),
            Some(passing) => {
                let state = &mut self.segments;
                segment::encode(format, &passing, &mut state.rewrite);
                state.replaced = len;
                Ok(state.continue_rewrite(ctx).unwrap_or(Op::Error(MALFORMED)))
            }
        }
    }

    /// A request envelope split over several segments: held until all are at hand, then
    /// passed or dropped whole.
    fn request_split_envelope(
        &mut self,
        ctx: &mut Context<'_>,
        input: Input<'_>,
        format: Format,
    ) -> Result<Op, ParseError> {
        let envelope_len = match self.segments.gathering {
            Some(len) => len,
            None => {
                let len = self.split_envelope_len(input, format, false)?;
                match len {
                    Some(len) => {
                        self.check_held(len - HEADER_LEN)?;
                        self.segments.gathering = Some(len);
                        len
                    }
                    None => return Ok(self.more_for_first_segment(input, format)),
                }
            }
        };
        // Walk the segment headers until they carry the whole envelope.
        let (mut at, mut decoded) = (0, 0);
        while decoded < envelope_len {
            let Some(header) = segment_header(input, at, format)? else {
                return Ok(Op::More(at + format.header_len() - input.len()));
            };
            if header.self_contained {
                return Err(SPLIT_SELF_CONTAINED);
            }
            decoded += header.decoded_len();
            at += header.segment_len();
        }
        if decoded != envelope_len {
            return Err(CUT_ENVELOPE);
        }
        if input.len() < at {
            return Ok(Op::More(at - input.len()));
        }
        self.segments.gathering = None;
        let mut joined = std::mem::take(&mut self.segments.joined);
        let result = self
            .join_segments(input, at, format, &mut joined)
            .and_then(|()| {
                let header = self.envelope_header(envelope_bytes(&joined)?, false)?;
                self.check_stream_free(&header)?;
                self.inspect(ctx, &header, &joined[HEADER_LEN..])
            });
        joined.clear();
        self.segments.joined = joined;
        match result? {
            None => Ok(Op::Pass(at)),
            Some(error) => {
                self.answer(ctx, &error)?;
                Ok(Op::Drop(at))
            }
        }
    }

    /// More input for the first segment of a split envelope.
    fn more_for_first_segment(&self, input: Input<'_>, format: Format) -> Op {
        let len = segment_header(input, 0, format)
            .ok()
            .flatten()
            .map_or(format.header_len(), |h| h.segment_len());
        Op::More(len.saturating_sub(input.len()).max(1))
    }

    /// The decoded length of the envelope whose split begins with the segment at the start of
    /// `input`; `None` until that segment is all at hand.
    fn split_envelope_len(
        &mut self,
        input: Input<'_>,
        format: Format,
        response: bool,
    ) -> Result<Option<usize>, ParseError> {
        let Some(first) = segment_header(input, 0, format)? else {
            return Ok(None);
        };
        let len = first.segment_len();
        if input.len() < len {
            return Ok(None);
        }
        let (mut raw, mut decompressed) = (
            std::mem::take(&mut self.raw),
            std::mem::take(&mut self.decompressed),
        );
        let result = input
            .contiguous(0..len, &mut raw)
            .ok_or(MALFORMED)
            .and_then(|bytes| {
                segment::decode_payload(&first, bytes, &mut decompressed).map_err(segment_error)
            })
            .and_then(|payload| self.envelope_header(envelope_bytes(payload)?, response))
            .map(|header| HEADER_LEN + header.length as usize);
        self.raw = raw;
        self.decompressed = decompressed;
        result.map(Some)
    }

    /// Decodes the segments in the first `len` bytes of `input` into `joined`.
    fn join_segments(
        &mut self,
        input: Input<'_>,
        len: usize,
        format: Format,
        joined: &mut Vec<u8>,
    ) -> Result<(), ParseError> {
        let mut at = 0;
        while at < len {
            let header = segment_header(input, at, format)?.ok_or(MALFORMED)?;
            let end = at + header.segment_len();
            let bytes = input
                .skip(at)
                .contiguous(0..end - at, &mut self.raw)
                .ok_or(MALFORMED)?;
            let payload = segment::decode_payload(&header, bytes, &mut self.decompressed)
                .map_err(segment_error)?;
            joined.extend_from_slice(payload);
            at = end;
        }
        Ok(())
    }

    /// A v5 response segment: checked, passed, and read when it answers a PREPARE.
    pub(super) fn on_reply_segments(
        &mut self,
        ctx: &mut Context<'_>,
        input: Input<'_>,
        format: Format,
    ) -> Result<Op, ParseError> {
        if let Some(op) = self.segments.release_deferred(ctx) {
            return Ok(op);
        }
        let Some(header) = segment_header(input, 0, format)? else {
            return Ok(need_header(input, format.header_len()));
        };
        let len = header.segment_len();
        if input.len() < len {
            return Ok(Op::More(len - input.len()));
        }
        let (mut raw, mut decompressed) = (
            std::mem::take(&mut self.raw),
            std::mem::take(&mut self.decompressed),
        );
        let result = input
            .contiguous(0..len, &mut raw)
            .ok_or(MALFORMED)
            .and_then(|bytes| self.reply_segment(&header, bytes, &mut decompressed));
        self.raw = raw;
        self.decompressed = decompressed;
        result.map(|()| Op::Pass(len))
    }

    /// Reads the response segment `bytes` as far as policy needs.
    fn reply_segment(
        &mut self,
        header: &SegmentHeader,
        bytes: &[u8],
        scratch: &mut Vec<u8>,
    ) -> Result<(), ParseError> {
        if header.self_contained {
            if self.segments.reply_left > 0 {
                return Err(SPLIT_SELF_CONTAINED);
            }
            if self.pending_prepares.is_empty() && self.pending_uses.is_empty() {
                return segment::checked_payload(header, bytes)
                    .map(drop)
                    .map_err(segment_error);
            }
            let payload = segment::decode_payload(header, bytes, scratch).map_err(segment_error)?;
            return self.reply_envelopes(payload);
        }
        if self.segments.reply_left == 0 {
            // The first segment of a split envelope: its header says how much is to come.
            let payload = segment::decode_payload(header, bytes, scratch).map_err(segment_error)?;
            let envelope = self.envelope_header(envelope_bytes(payload)?, true)?;
            let total = HEADER_LEN + envelope.length as usize;
            if payload.len() > total {
                return Err(CUT_ENVELOPE);
            }
            self.segments.reply_left = total - payload.len();
            if self.awaits_answer(envelope.stream) {
                self.check_held(envelope.length as usize)?;
                self.segments.reply_envelope = Some(payload.to_vec());
            }
        } else {
            let decoded_len = header.decoded_len();
            if decoded_len > self.segments.reply_left {
                return Err(CUT_ENVELOPE);
            }
            self.segments.reply_left -= decoded_len;
            match &mut self.segments.reply_envelope {
                Some(envelope) => {
                    let payload =
                        segment::decode_payload(header, bytes, scratch).map_err(segment_error)?;
                    envelope.extend_from_slice(payload);
                }
                None => {
                    segment::checked_payload(header, bytes).map_err(segment_error)?;
                }
            }
        }
        if self.segments.reply_left == 0 {
            if let Some(envelope) = self.segments.reply_envelope.take() {
                return self.reply_envelopes(&envelope);
            }
        }
        Ok(())
    }

    /// Reads the whole response envelopes in `payload`.
    fn reply_envelopes(&mut self, payload: &[u8]) -> Result<(), ParseError> {
        let mut at = 0;
        while at < payload.len() {
            let header: Header = self.envelope_header(envelope_bytes(&payload[at..])?, true)?;
            let end = at + HEADER_LEN + header.length as usize;
            let body = payload.get(at + HEADER_LEN..end).ok_or(CUT_ENVELOPE)?;
            self.on_response(&header, body)?;
            at = end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
