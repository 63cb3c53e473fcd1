//! The Cassandra parser: checks every QUERY, PREPARE, EXECUTE and BATCH against policy and
//! answers a denied one with an Unauthorized error on its stream.
//!
//! This module owns the connection's state (the handshake, compression, keyspace, prepared
//! statements), the decision on one request envelope, and the reading of protocol v3 and v4
//! frames (and of v5 before its handshake completes); [`segments`] reads v5 connections once
//! STARTUP has been answered. Frames that policy inspects are read whole (bounded by the frame
//! limit); the others stream through. Prepared statements are remembered by id when the server's
//! Prepared result comes back, in a bounded table, so EXECUTE and batch entries are checked
//! against the policy in force when they run. Responses carry stream ids, so a denial needs no
//! place among the other replies beyond an envelope boundary.
//!
//! Frames that straddle reads and compressed bodies are read through scratch buffers kept from
//! one request to the next; what a large frame made them take beyond
//! [`axoneme_sdk::KEPT_CAPACITY`] is given back once it has been read.
//!
//! Every statement of a request is read before any is judged (a request one of whose statements
//! cannot be read is refused whole, with no verdict logged for the others); then each is checked
//! and logged, and the request passes only when all are allowed. When one of several is
//! denied, the others are logged as denied too, dropped with it.
//!
//! On v5, nothing may follow the STARTUP before the server answers it: what does is refused
//! (the connection is closed), as the server may read it as segments.
//!
//! The keyspace unqualified names resolve against follows the server, never the request: it changes
//! when the server answers a USE with a Set_keyspace result; any other answer on the USE's stream
//! (an error, or another request's answer) leaves it unknown, so that unqualified names are refused
//! until a USE succeeds. No request may share its stream with a USE or PREPARE whose answer has not
//! come: the connection is closed. While a USE is unanswered, the requests behind it are held,
//! unread, so that none is judged against a keyspace the server may not be using; within one v5
//! segment, where holding would split the segment, an unqualified name after a USE is judged
//! against both keyspaces.
//! A v3 or v4 QUERY or BATCH naming its own keyspace (flag 0x80, read by Cassandra in every
//! version) is refused.

mod segments;

use std::collections::HashMap;
use std::ops::Range;

use axoneme_sdk::{
    Context, EntryType, ErrorCode, Field, Flow, Input, Op, ParseError, Parser, TrimCapacity,
    Verdict,
};

use crate::compression::Compression;
use crate::frame::{
    self, opcode, BatchEntry, Header, Outcome, Request, HEADER_LEN, PROTOCOL_ERROR, UNAUTHORIZED,
    UNPREPARED,
};
use crate::prepared::Prepared;
use crate::rules::RuleSet;
use crate::segment::Format;
use crate::statement::{statements, Action, TableName};

/// Prepared statements remembered per connection; the least recently used is forgotten first.
pub const MAX_PREPARED: usize = 4096;

/// PREPAREs awaiting their result per connection.
pub const MAX_PENDING_PREPARES: usize = 1024;

/// The longest frame body the protocol allows (256 MiB).
const PROTOCOL_MAX_FRAME: usize = 256 * 1024 * 1024;

/// What a statement does to which table, resolved when it was read or prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Checked {
    action: Action,
    /// `keyspace.table`, when the action has a table and its keyspace is known.
    table: Option<String>,
    /// For USE: the keyspace it switches to.
    keyspace: Option<String>,
}

/// Why a request is refused before policy is asked.
enum Refusal<'b> {
    /// The query cannot be classified; the reason is logged.
    Unclassified(String),
    /// An EXECUTE or batch entry of an id this connection never saw prepared.
    Unprepared(&'b [u8]),
}

/// A request's statements, resolved before any is judged: actions and `keyspace.table` names.
/// Its buffers are kept from one request to the next.
#[derive(Debug, Default)]
struct Resolution {
    /// Each statement's action and, for actions on a table, where its name is in `tables`.
    statements: Vec<(Action, Option<Range<usize>>)>,
    tables: String,
    /// The keyspace a USE among them names.
    use_target: Option<String>,
}

impl Resolution {
    fn clear(&mut self) {
        self.statements.clear();
        self.tables.clear();
        self.use_target = None;
    }

    fn trim_capacity(&mut self) {
        self.statements.trim_capacity();
        self.tables.trim_capacity();
    }

    /// Adds a statement whose table, if any, is `table` (`keyspace.table`).
    fn push(&mut self, action: Action, table: Option<&str>) {
        let range = table.map(|table| {
            let start = self.tables.len();
            self.tables.push_str(table);
            start..self.tables.len()
        });
        self.statements.push((action, range));
    }

    /// Adds a statement on `name`, resolved against each of `keyspaces` that it needs (an
    /// unqualified name against each, a qualified one once); false when it is unqualified
    /// and there is no keyspace.
    fn push_on_table(
        &mut self,
        action: Action,
        name: &TableName<'_>,
        keyspaces: [Option<&str>; 2],
    ) -> bool {
        let mut pushed = false;
        for keyspace in keyspaces {
            if pushed && (name.keyspace.is_some() || keyspace.is_none()) {
                break;
            }
            let start = self.tables.len();
            if name.push_qualified(keyspace, &mut self.tables) {
                self.statements
                    .push((action, Some(start..self.tables.len())));
                pushed = true;
            }
        }
        pushed
    }

    /// Each statement's action and table.
    fn iter(&self) -> impl Iterator<Item = (Action, Option<&str>)> {
        self.statements
            .iter()
            .map(|(action, range)| (*action, range.clone().map(|r| &self.tables[r])))
    }
}

/// A STARTUP on its way to the server.
#[derive(Debug, Clone, Copy)]
struct Startup {
    stream: i16,
    version: u8,
    compression: Option<Compression>,
}

/// Parser state for one Cassandra connection.
#[derive(Debug)]
pub struct CassandraParser {
    max_frame: usize,
    /// The STARTUP awaiting the server's answer.
    startup: Option<Startup>,
    /// The protocol version an answered STARTUP fixed for the connection.
    version: Option<u8>,
    /// v3 and v4: how frame bodies flagged as compressed are compressed.
    compression: Option<Compression>,
    /// v5 after the handshake: how segments are framed, both ways.
    framing: Option<Format>,
    /// The keyspace the server last set for the connection.
    keyspace: Option<String>,
    pending_prepares: HashMap<i16, Vec<Checked>>,
    /// USEs on their way to the server, by stream, with the keyspace each names.
    pending_uses: Vec<(i16, String)>,
    prepared: Prepared<Vec<Checked>>,
    /// A protocol version this parser cannot police was refused: every later request is
    /// dropped (the driver retries with a lower version on a new connection).
    refused_version: bool,
    /// The state of a v5 connection's segments.
    segments: segments::State,
    /// Scratch: the statements of the request being judged.
    resolution: Resolution,
    /// Scratch: a frame or segment that straddles input slices.
    raw: Vec<u8>,
    /// Scratch: a decompressed frame body or segment payload.
    decompressed: Vec<u8>,
}

const UNSUPPORTED_VERSION: ParseError = ParseError::new(
    ErrorCode::Unsupported,
    "CQL protocol version other than 3, 4 or 5",
);
const VERSION_CHANGED: ParseError = ParseError::new(
    ErrorCode::Unsupported,
    "frame of another protocol version than the connection's",
);
const SNAPPY_V5: ParseError = ParseError::new(
    ErrorCode::Unsupported,
    "Snappy compression on protocol v5 (only LZ4 exists there)",
);
const TOO_LARGE: ParseError = ParseError::new(
    ErrorCode::FrameTooLarge,
    "frame longer than the configured maximum",
);
const BEYOND_PROTOCOL: ParseError = ParseError::new(
    ErrorCode::InvalidFrameLength,
    "frame longer than the protocol allows (256 MiB)",
);
const WRONG_DIRECTION: ParseError =
    ParseError::new(ErrorCode::InvalidFrameType, "frame flowing the wrong way");
const MALFORMED: ParseError = ParseError::new(ErrorCode::MalformedFrame, "malformed frame body");
const TOO_MANY: ParseError =
    ParseError::new(ErrorCode::StateLimit, "too many statements being prepared");
const STREAM_IN_USE: ParseError = ParseError::new(
    ErrorCode::MalformedFrame,
    "request on the stream of a USE or PREPARE not yet answered",
);
const BEFORE_READY: ParseError = ParseError::new(
    ErrorCode::MalformedFrame,
    "request sent before the answer to a v5 STARTUP",
);
const NO_ROOM: ParseError = ParseError::new(ErrorCode::StateLimit, "too many denials waiting");

impl Parser for CassandraParser {
    fn on_data(
        &mut self,
        ctx: &mut Context<'_>,
        flow: Flow,
        _end_stream: bool,
        input: Input<'_>,
    ) -> Op {
        let result = match (flow, self.framing) {
            (Flow::Request, None) => self.on_request(ctx, input),
            (Flow::Request, Some(format)) => self.on_request_segments(ctx, input, format),
            (Flow::Reply, None) => self.on_reply(input),
            (Flow::Reply, Some(format)) => self.on_reply_segments(ctx, input, format),
        };
        for scratch in [&mut self.raw, &mut self.decompressed] {
            scratch.clear();
            scratch.trim_capacity();
        }
        self.resolution.clear();
        self.resolution.trim_capacity();
        self.segments.trim_capacity();
        // Unframed (v3, v4), nothing is injected into the flow being parsed: denials and
        // refusals go to the other flow at once, so no call with no input is needed after a
        // frame. Segments (v5) may have to be injected after one.
        if self.framing.is_none() && matches!(result, Ok(Op::Pass(_) | Op::Drop(_))) {
            ctx.nothing_to_inject_at_end();
        }
        result.unwrap_or_else(Op::Error)
    }
}

/// The body of a complete v3/v4 frame at the start of `input`, decompressed when the frame
/// says so.
fn frame_body<'s>(
    header: &Header,
    input: Input<'s>,
    raw: &'s mut Vec<u8>,
    decompressed: &'s mut Vec<u8>,
    compression: Option<Compression>,
    limit: usize,
) -> Result<&'s [u8], ParseError> {
    let end = HEADER_LEN + header.length as usize;
    let body = input.contiguous(HEADER_LEN..end, raw).ok_or(MALFORMED)?;
    match (header.flags & frame::FLAG_COMPRESSED != 0, compression) {
        (false, _) => Ok(body),
        (true, Some(compression)) => {
            compression
                .decompress(body, decompressed, limit)
                .map_err(|_| MALFORMED)?;
            Ok(decompressed)
        }
        (true, None) => Err(ParseError::new(
            ErrorCode::MalformedFrame,
            "compressed frame before compression was agreed",
        )),
    }
}

/// The answer to input shorter than a header of `header_len` bytes.
fn need_header(input: Input<'_>, header_len: usize) -> Op {
    match input.len() {
        0 => Op::Nop,
        n => Op::More(header_len - n),
    }
}

impl CassandraParser {
    /// A parser refusing frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        CassandraParser {
            max_frame,
            startup: None,
            version: None,
            compression: None,
            framing: None,
            keyspace: None,
            pending_prepares: HashMap::new(),
            pending_uses: Vec::new(),
            prepared: Prepared::new(MAX_PREPARED),
            refused_version: false,
            segments: segments::State::default(),
            resolution: Resolution::default(),
            raw: Vec::new(),
            decompressed: Vec::new(),
        }
    }

    /// Reads an envelope's header, checking its version and direction.
    fn envelope_header(
        &self,
        bytes: &[u8; HEADER_LEN],
        response: bool,
    ) -> Result<Header, ParseError> {
        let header = Header::parse(bytes);
        match self.version {
            Some(version) if header.version != version => return Err(VERSION_CHANGED),
            None if !(3..=5).contains(&header.version) => return Err(UNSUPPORTED_VERSION),
            _ => {}
        }
        if header.response != response {
            return Err(WRONG_DIRECTION);
        }
        if header.length as usize > PROTOCOL_MAX_FRAME {
            return Err(BEYOND_PROTOCOL);
        }
        Ok(header)
    }

    /// Reads the header of a frame at the start of `input`; `None` when more bytes are needed.
    fn frame_header(&self, input: Input<'_>, response: bool) -> Result<Option<Header>, ParseError> {
        match input.peek::<HEADER_LEN>(0) {
            Some(bytes) => self.envelope_header(&bytes, response).map(Some),
            None => Ok(None),
        }
    }

    /// Fails when a frame of `length` bytes would have to be held whole beyond the limit.
    fn check_held(&self, length: usize) -> Result<(), ParseError> {
        match length > self.max_frame {
            true => Err(TOO_LARGE),
            false => Ok(()),
        }
    }

    /// A v3/v4 request frame, or a v5 one before the handshake completes.
    fn on_request(&mut self, ctx: &mut Context<'_>, input: Input<'_>) -> Result<Op, ParseError> {
        if self.refused_version {
            return Ok(match input.len() {
                0 => Op::Nop,
                n => Op::Drop(n),
            });
        }
        if let Some(op) = self.refuse_newer_version(ctx, input)? {
            return Ok(op);
        }
        // After a v5 STARTUP, a client sends segments, and only once READY has come: bytes
        // before it may be read by the server as a segment, here as a frame.
        if self.startup.is_some_and(|s| s.version >= 5) && !input.is_empty() {
            return Err(BEFORE_READY);
        }
        let Some(header) = self.frame_header(input, false)? else {
            return Ok(need_header(input, HEADER_LEN));
        };
        self.check_held(header.length as usize)?;
        // Every request waits behind an unanswered USE, so that no answer on the USE's
        // stream can be another request's.
        if self.holds_requests() {
            return Ok(Op::Nop);
        }
        self.check_stream_free(&header)?;
        let frame_len = HEADER_LEN + header.length as usize;
        if !inspected(header.opcode) {
            return Ok(Op::Pass(frame_len));
        }
        if input.len() < frame_len {
            return Ok(Op::More(frame_len - input.len()));
        }
        let (mut raw, mut decompressed) = (
            std::mem::take(&mut self.raw),
            std::mem::take(&mut self.decompressed),
        );
        let denial = frame_body(
            &header,
            input,
            &mut raw,
            &mut decompressed,
            self.compression,
            self.max_frame,
        )
        .and_then(|body| self.inspect(ctx, &header, body));
        self.raw = raw;
        self.decompressed = decompressed;
        match denial? {
            None => Ok(Op::Pass(frame_len)),
            Some(error) => {
                self.answer(ctx, &error)?;
                Ok(Op::Drop(frame_len))
            }
        }
    }

    /// Fails when the request with `header` would share its stream with a USE or PREPARE whose
    /// answer has not come: its answer would come on that stream too and could be taken for
    /// theirs (an answer before the Set_keyspace would let the Set_keyspace pass unread, a
    /// second Prepared result would give the first PREPARE's id the second's statement).
    fn check_stream_free(&self, header: &Header) -> Result<(), ParseError> {
        match self.awaits_answer(header.stream) {
            true => Err(STREAM_IN_USE),
            false => Ok(()),
        }
    }

    /// Whether requests must wait: a USE is unanswered, so the keyspace they would resolve
    /// against is not known yet. Holding them costs a round trip only to
    /// clients that pipeline behind a USE.
    fn holds_requests(&self) -> bool {
        !self.pending_uses.is_empty()
    }

    /// Answers a first request in a protocol version newer than v5 as Cassandra does, with a
    /// protocol error naming the versions it supports, so that drivers that start high (the
    /// Python driver starts at the DataStax versions 0x41 and 0x42) retry with v5 or lower.
    fn refuse_newer_version(
        &mut self,
        ctx: &mut Context<'_>,
        input: Input<'_>,
    ) -> Result<Option<Op>, ParseError> {
        let Some(bytes) = input.peek::<HEADER_LEN>(0) else {
            return Ok(None);
        };
        let header = Header::parse(&bytes);
        if self.version.is_some() || header.response || header.version <= 5 {
            return Ok(None);
        }
        let message = format!(
            "Invalid or unsupported protocol version ({}); supported versions are \
             (3/v3, 4/v4, 5/v5)",
            header.version
        );
        // Version negotiation, not a policy decision: the driver steps down and goes on.
        ctx.log(EntryType::Response, "", &[Field::text("error", &message)]);
        let error = frame::error_frame(
            header.version,
            header.stream,
            PROTOCOL_ERROR,
            &message,
            None,
        );
        self.answer(ctx, &error)?;
        self.refused_version = true;
        Ok(Some(Op::Drop(input.len())))
    }

    /// Checks one request envelope (body uncompressed) against policy and logs the verdict;
    /// the error envelope that answers it when it is denied.
    fn inspect(
        &mut self,
        ctx: &mut Context<'_>,
        header: &Header,
        body: &[u8],
    ) -> Result<Option<Vec<u8>>, ParseError> {
        if !inspected(header.opcode) {
            return Ok(None);
        }
        let request = Request::parse(header, body).map_err(|_| MALFORMED)?;
        let mut resolution = std::mem::take(&mut self.resolution);
        resolution.clear();
        let mut prepared = None;
        let resolved = match request {
            Request::Startup { compression } => {
                if self.version.is_none() {
                    self.startup = Some(Startup {
                        stream: header.stream,
                        version: header.version,
                        compression: compression.and_then(Compression::from_name),
                    });
                }
                Ok(())
            }
            Request::Other(_) => Ok(()),
            Request::Query { query, keyspace } => own_keyspace(header, keyspace)
                .and_then(|own| self.resolve_query(&mut resolution, query, own)),
            Request::Prepare { query, keyspace } => self
                .resolve_query(&mut resolution, query, keyspace)
                .map(|()| prepared = Some(checked(&resolution))),
            Request::Execute { id, .. } => self.resolve_prepared(&mut resolution, id),
            Request::Batch { entries, keyspace } => {
                own_keyspace(header, keyspace).and_then(|own| {
                    entries.iter().try_for_each(|entry| match entry {
                        BatchEntry::Query(query) => self.resolve_query(&mut resolution, query, own),
                        BatchEntry::Prepared(id) => self.resolve_prepared(&mut resolution, id),
                    })
                })
            }
        };
        // Two USEs unanswered at once (in one v5 segment) may be answered in another order
        // than the server ran them: the keyspace it ends in would not be known.
        let resolved = resolved.and_then(|()| match (&prepared, &resolution.use_target) {
            (None, Some(_)) if !self.pending_uses.is_empty() => Err(Refusal::Unclassified(
                "use: another USE is not yet answered".into(),
            )),
            _ => Ok(()),
        });
        let answer = self.judge(ctx, header, &resolution, resolved, prepared);
        self.resolution = resolution;
        answer
    }

    /// Judges the statements `resolution` holds (or the refusal `resolved` is), logging a
    /// verdict for each; the error envelope that answers the request when it is denied.
    fn judge(
        &mut self,
        ctx: &mut Context<'_>,
        header: &Header,
        resolution: &Resolution,
        resolved: Result<(), Refusal<'_>>,
        prepared: Option<Vec<Checked>>,
    ) -> Result<Option<Vec<u8>>, ParseError> {
        let unauthorized = || {
            frame::error_frame(
                header.version,
                header.stream,
                UNAUTHORIZED,
                "Request Unauthorized",
                None,
            )
        };
        match resolved {
            Ok(()) => {}
            Err(Refusal::Unclassified(reason)) => {
                ctx.log(EntryType::Denied, "", &[Field::text("error", &reason)]);
                return Ok(Some(unauthorized()));
            }
            Err(Refusal::Unprepared(id)) => {
                ctx.log(
                    EntryType::Denied,
                    "",
                    &[Field::text("error", "unknown prepared statement id")],
                );
                return Ok(Some(frame::error_frame(
                    header.version,
                    header.stream,
                    UNPREPARED,
                    "Unknown prepared statement",
                    Some(id),
                )));
            }
        }
        // A request passes only when all its statements are allowed. When one of several is
        // denied, none reaches the server, and every one is logged as denied (as Cilium did):
        // the ones policy denied with their verdict, the others as dropped with them. Verdicts
        // are remembered between deciding and logging; a denied request's are asked again as
        // each is logged, so that each entry says why it was denied.
        let mut verdicts = [None; REMEMBERED_VERDICTS];
        let mut denied = false;
        for (i, (action, table)) in resolution.iter().enumerate() {
            let verdict = verdict(ctx, action, table);
            denied |= verdict.is_some_and(|v| !v.allowed);
            if let Some(remembered) = verdicts.get_mut(i) {
                *remembered = verdict;
            }
        }
        for (i, (action, table)) in resolution.iter().enumerate() {
            let verdict = match (denied, verdicts.get(i)) {
                (false, Some(&remembered)) => remembered,
                _ => verdict(ctx, action, table),
            };
            let fields = [
                Field::text("query_action", action.name()),
                Field::text("query_table", table.unwrap_or_default()),
                Field::text("status", DROPPED_WITH_REQUEST),
            ];
            let policy_name = verdict.map_or("", |v| v.policy_name);
            match (verdict.is_none_or(|v| v.allowed), denied) {
                (true, false) => {
                    ctx.mark_next_request(verdict.as_ref());
                    ctx.log(EntryType::Request, policy_name, &fields[..2]);
                }
                (true, true) => ctx.log(EntryType::Denied, "", &fields),
                (false, _) => ctx.log(EntryType::Denied, policy_name, &fields[..2]),
            }
        }
        if denied {
            return Ok(Some(unauthorized()));
        }
        if let Some(statements) = prepared {
            if self.pending_prepares.len() >= MAX_PENDING_PREPARES
                && !self.pending_prepares.contains_key(&header.stream)
            {
                return Err(TOO_MANY);
            }
            self.pending_prepares.insert(header.stream, statements);
        } else if let Some(keyspace) = &resolution.use_target {
            if self.pending_uses.len() >= MAX_PENDING_PREPARES {
                return Err(TOO_MANY);
            }
            self.pending_uses.push((header.stream, keyspace.clone()));
        }
        Ok(None)
    }

    /// Reads the statements of `query` into `resolution`, unqualified tables resolving
    /// against `own` (a v5 request's keyspace) or else the connection's keyspace and, after a
    /// USE not yet answered, that USE's keyspace as well.
    fn resolve_query<'b>(
        &self,
        resolution: &mut Resolution,
        query: &str,
        own: Option<&str>,
    ) -> Result<(), Refusal<'b>> {
        let keyspaces = match own {
            Some(own) => [Some(own), None],
            None => {
                let current = self.keyspace.as_deref();
                let pending = self
                    .pending_uses
                    .last()
                    .map(|(_, keyspace)| keyspace.as_str());
                [current, pending.filter(|&pending| Some(pending) != current)]
            }
        };
        for statement in statements(query) {
            let statement = statement.map_err(|e| Refusal::Unclassified(e.to_string()))?;
            match (statement.table, statement.keyspace) {
                (Some(name), _) => {
                    if !resolution.push_on_table(statement.action, &name, keyspaces) {
                        return Err(Refusal::Unclassified(format!(
                            "{}: unqualified table {name} and no keyspace set",
                            statement.action.name()
                        )));
                    }
                }
                (None, Some(keyspace)) => {
                    resolution.push(statement.action, None);
                    resolution.use_target = Some(keyspace.to_string());
                }
                (None, None) => resolution.push(statement.action, None),
            }
        }
        Ok(())
    }

    /// Adds the statements prepared as `id` to `resolution`.
    fn resolve_prepared<'b>(
        &mut self,
        resolution: &mut Resolution,
        id: &'b [u8],
    ) -> Result<(), Refusal<'b>> {
        let checked = self.prepared.get(id).ok_or(Refusal::Unprepared(id))?;
        for statement in checked {
            resolution.push(statement.action, statement.table.as_deref());
            if statement.keyspace.is_some() {
                resolution.use_target.clone_from(&statement.keyspace);
            }
        }
        Ok(())
    }

    /// Sends `error` (an error envelope) toward the client, framed as the connection requires.
    fn answer(&mut self, ctx: &mut Context<'_>, error: &[u8]) -> Result<(), ParseError> {
        if let Some(format) = self.framing {
            return self.segments.answer(ctx, format, error);
        }
        if ctx.inject_room(Flow::Reply) < error.len() {
            return Err(NO_ROOM);
        }
        ctx.inject(Flow::Reply, error);
        Ok(())
    }

    /// A v3/v4 response frame, or a v5 one before the handshake completes.
    fn on_reply(&mut self, input: Input<'_>) -> Result<Op, ParseError> {
        let Some(header) = self.frame_header(input, true)? else {
            return Ok(need_header(input, HEADER_LEN));
        };
        let frame_len = HEADER_LEN + header.length as usize;
        self.on_startup_answer(&header)?;
        if !self.awaits_answer(header.stream) {
            return Ok(Op::Pass(frame_len));
        }
        self.check_held(header.length as usize)?;
        if input.len() < frame_len {
            return Ok(Op::More(frame_len - input.len()));
        }
        let (mut raw, mut decompressed) = (
            std::mem::take(&mut self.raw),
            std::mem::take(&mut self.decompressed),
        );
        let result = frame_body(
            &header,
            input,
            &mut raw,
            &mut decompressed,
            self.compression,
            self.max_frame,
        )
        .and_then(|body| self.on_response(&header, body));
        self.raw = raw;
        self.decompressed = decompressed;
        result?;
        Ok(Op::Pass(frame_len))
    }

    /// Completes the handshake when `header` answers the STARTUP: READY or AUTHENTICATE fix
    /// the version and compression (and, for v5, switch both ways to segments after this
    /// frame); an ERROR leaves the connection as it was.
    fn on_startup_answer(&mut self, header: &Header) -> Result<(), ParseError> {
        let Some(startup) = self.startup.filter(|s| s.stream == header.stream) else {
            return Ok(());
        };
        self.startup = None;
        if !matches!(header.opcode, opcode::READY | opcode::AUTHENTICATE) {
            return Ok(());
        }
        self.version = Some(startup.version);
        if startup.version < 5 {
            self.compression = startup.compression;
            return Ok(());
        }
        self.framing = Some(match startup.compression {
            None => Format::Plain,
            Some(Compression::Lz4) => Format::Lz4,
            Some(Compression::Snappy) => return Err(SNAPPY_V5),
        });
        Ok(())
    }

    /// Whether the response on `stream` answers a PREPARE or a USE, and so must be read.
    fn awaits_answer(&self, stream: i16) -> bool {
        self.pending_prepares.contains_key(&stream)
            || self.pending_uses.iter().any(|(s, _)| *s == stream)
    }

    /// Reads a response envelope (body uncompressed): the answer to a PREPARE gives the
    /// statement its id, the answer to a USE sets the keyspace when it is a Set_keyspace
    /// result, and otherwise (an error) leaves no keyspace known.
    fn on_response(&mut self, header: &Header, body: &[u8]) -> Result<(), ParseError> {
        let prepare = self.pending_prepares.remove(&header.stream);
        let position = self
            .pending_uses
            .iter()
            .position(|(s, _)| *s == header.stream);
        let answers_use = position.map(|at| self.pending_uses.remove(at)).is_some();
        let outcome = match header.opcode == opcode::RESULT && (prepare.is_some() || answers_use) {
            true => Some(frame::result_outcome(header, body).map_err(|_| MALFORMED)?),
            false => None,
        };
        match outcome {
            Some(Outcome::SetKeyspace(keyspace)) if answers_use => {
                self.keyspace = Some(keyspace.to_owned());
            }
            outcome => {
                if let (Some(Outcome::Prepared(id)), Some(checked)) = (outcome, prepare) {
                    self.prepared.insert(id, checked);
                }
                // Any other answer on a USE's stream may be another request's, the USE's own
                // Set_keyspace still to come unread: the server's keyspace is no longer known.
                if answers_use {
                    self.keyspace = None;
                }
            }
        }
        Ok(())
    }
}

/// Verdicts a request's judging remembers between deciding and logging (beyond, they are asked
/// again).
const REMEMBERED_VERDICTS: usize = 16;

/// The `status` of an allowed statement dropped because another of its request was denied.
const DROPPED_WITH_REQUEST: &str = "dropped: another statement of the request was denied";

/// The verdict of policy on `action` on `table`; none for USE, which always passes: it only
/// sets the keyspace unqualified names resolve against, so clients that connect with a
/// keyspace keep working under table rules.
fn verdict<'c>(ctx: &Context<'c>, action: Action, table: Option<&str>) -> Option<Verdict<'c>> {
    (action != Action::Use).then(|| ctx.check::<RuleSet>(|rules| rules.allows(action, table)))
}

/// The statements of a PREPARE, kept until its id comes back.
fn checked(resolution: &Resolution) -> Vec<Checked> {
    resolution
        .iter()
        .map(|(action, table)| Checked {
            action,
            table: table.map(str::to_owned),
            keyspace: match action {
                Action::Use => resolution.use_target.clone(),
                _ => None,
            },
        })
        .collect()
}

/// The keyspace a QUERY or BATCH names for itself, which its unqualified names resolve against.
/// Only v5 defines the flag that names it, but Cassandra reads it from a v3 or v4 request's
/// flags too, and other servers may not: such a request is refused, as no one keyspace can be
/// known to be the one the server uses.
fn own_keyspace<'k>(
    header: &Header,
    keyspace: Option<&'k str>,
) -> Result<Option<&'k str>, Refusal<'static>> {
    match (header.version, keyspace) {
        (5.., _) | (_, None) => Ok(keyspace),
        (version, Some(keyspace)) => Err(Refusal::Unclassified(format!(
            "keyspace {keyspace:?} named by a protocol v{version} request (flag 0x80 is v5's)"
        ))),
    }
}

/// Whether requests with `opcode` are read before they pass.
fn inspected(opcode: u8) -> bool {
    matches!(
        opcode,
        opcode::STARTUP | opcode::QUERY | opcode::PREPARE | opcode::EXECUTE | opcode::BATCH
    )
}

#[cfg(test)]
mod tests;
