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

mod segments;

use std::collections::HashMap;

use axoneme_sdk::{Context, EntryType, ErrorCode, Field, Flow, Input, Op, ParseError, Parser};

use crate::compression::Compression;
use crate::frame::{
    self, opcode, BatchEntry, Header, Request, HEADER_LEN, PROTOCOL_ERROR, UNAUTHORIZED, UNPREPARED,
};
use crate::prepared::Prepared;
use crate::rules::RuleSet;
use crate::segment::Format;
use crate::statement::{statements, Action};

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

/// The verdict on a request's statements, gathered one statement at a time.
struct Judgement<'c> {
    policy_name: &'c str,
    /// The action the access log shows: the denied statement's, else the first one's.
    shown: Option<Action>,
    denied: bool,
}

impl<'c> Judgement<'c> {
    fn new() -> Self {
        Judgement {
            policy_name: "",
            shown: None,
            denied: false,
        }
    }

    /// Checks a statement on `table`, unless one was denied already; `shown_table` keeps the
    /// table the access log shows.
    fn statement(
        &mut self,
        ctx: &Context<'c>,
        action: Action,
        table: Option<&str>,
        shown_table: &mut String,
    ) {
        if self.denied {
            return;
        }
        // USE always passes: it only sets the keyspace unqualified names resolve against,
        // so clients that connect with a keyspace keep working under table rules.
        if action != Action::Use {
            let verdict =
                ctx.check::<RuleSet>(|rules| rules.any(|rule| rule.matches(action, table)));
            self.policy_name = verdict.policy_name;
            self.denied = !verdict.allowed;
        }
        if self.shown.is_none() || self.denied {
            self.shown = Some(action);
            shown_table.clear();
            shown_table.push_str(table.unwrap_or_default());
        }
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
    keyspace: Option<String>,
    pending_prepares: HashMap<i16, Vec<Checked>>,
    prepared: Prepared<Vec<Checked>>,
    /// A protocol version this parser cannot police was refused: every later request is
    /// dropped (the driver retries with a lower version on a new connection).
    refused_version: bool,
    /// The keyspace a USE being checked switches to, once it passes.
    next_keyspace: Option<String>,
    /// The state of a v5 connection's segments.
    segments: segments::State,
    /// Scratch: the table of the statement being checked, `keyspace.table`.
    table: String,
    /// Scratch: the table the access log shows for the request being checked.
    shown_table: String,
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
            prepared: Prepared::new(MAX_PREPARED),
            refused_version: false,
            next_keyspace: None,
            segments: segments::State::default(),
            table: String::new(),
            shown_table: String::new(),
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
        let Some(header) = self.frame_header(input, false)? else {
            return Ok(need_header(input, HEADER_LEN));
        };
        self.check_held(header.length as usize)?;
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
        ctx.log(EntryType::Denied, "", &[Field::text("error", &message)]);
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
        let mut judgement = Judgement::new();
        self.next_keyspace = None;
        let mut prepared = None;
        let judged = match request {
            Request::Startup { compression } => {
                if self.version.is_none() {
                    self.startup = Some(Startup {
                        stream: header.stream,
                        version: header.version,
                        compression: compression.and_then(Compression::from_name),
                    });
                }
                return Ok(None);
            }
            Request::Other(_) => return Ok(None),
            Request::Query { query, keyspace } => {
                self.judge_query(ctx, &mut judgement, query, keyspace, None)
            }
            Request::Prepare { query, keyspace } => {
                let statements = prepared.insert(Vec::new());
                self.judge_query(ctx, &mut judgement, query, keyspace, Some(statements))
            }
            Request::Execute { id, .. } => self.judge_prepared(ctx, &mut judgement, id),
            Request::Batch { entries, keyspace } => {
                entries.iter().try_for_each(|entry| match entry {
                    BatchEntry::Query(query) => {
                        self.judge_query(ctx, &mut judgement, query, keyspace, None)
                    }
                    BatchEntry::Prepared(id) => self.judge_prepared(ctx, &mut judgement, id),
                })
            }
        };
        let unauthorized = || {
            frame::error_frame(
                header.version,
                header.stream,
                UNAUTHORIZED,
                "Request Unauthorized",
                None,
            )
        };
        match judged {
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
        let fields = [
            Field::text("query_action", judgement.shown.map_or("", Action::name)),
            Field::text("query_table", &self.shown_table),
        ];
        if judgement.denied {
            ctx.log(EntryType::Denied, judgement.policy_name, &fields);
            return Ok(Some(unauthorized()));
        }
        ctx.log(EntryType::Request, judgement.policy_name, &fields);
        match prepared {
            None => {
                if let Some(keyspace) = self.next_keyspace.take() {
                    self.keyspace = Some(keyspace);
                }
            }
            Some(_)
                if self.pending_prepares.len() >= MAX_PENDING_PREPARES
                    && !self.pending_prepares.contains_key(&header.stream) =>
            {
                return Err(TOO_MANY)
            }
            Some(statements) => {
                self.pending_prepares.insert(header.stream, statements);
            }
        }
        Ok(None)
    }

    /// Judges the statements of `query`, unqualified tables resolving against `own` (a v5
    /// request's keyspace) or else the connection's; a PREPARE's statements are kept in
    /// `prepared`.
    fn judge_query<'b, 'c>(
        &mut self,
        ctx: &Context<'c>,
        judgement: &mut Judgement<'c>,
        query: &str,
        own: Option<&str>,
        mut prepared: Option<&mut Vec<Checked>>,
    ) -> Result<(), Refusal<'b>> {
        for statement in statements(query) {
            let statement = statement.map_err(|e| Refusal::Unclassified(e.to_string()))?;
            let current = own.or(self.keyspace.as_deref());
            let table = match statement.table {
                Some(name) if name.qualify_into(current, &mut self.table) => {
                    Some(self.table.as_str())
                }
                _ => None,
            };
            judgement.statement(ctx, statement.action, table, &mut self.shown_table);
            let keyspace = statement.keyspace.map(|name| name.to_string());
            match &mut prepared {
                Some(prepared) => prepared.push(Checked {
                    action: statement.action,
                    table: table.map(str::to_owned),
                    keyspace,
                }),
                None if keyspace.is_some() => self.next_keyspace = keyspace,
                None => {}
            }
        }
        Ok(())
    }

    /// Judges the statements prepared as `id`.
    fn judge_prepared<'b, 'c>(
        &mut self,
        ctx: &Context<'c>,
        judgement: &mut Judgement<'c>,
        id: &'b [u8],
    ) -> Result<(), Refusal<'b>> {
        let checked = self.prepared.get(id).ok_or(Refusal::Unprepared(id))?;
        for statement in checked {
            judgement.statement(
                ctx,
                statement.action,
                statement.table.as_deref(),
                &mut self.shown_table,
            );
            if statement.keyspace.is_some() {
                self.next_keyspace.clone_from(&statement.keyspace);
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
        if !self.pending_prepares.contains_key(&header.stream) {
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

    /// Reads a response envelope (body uncompressed) that answers a pending PREPARE.
    fn on_response(&mut self, header: &Header, body: &[u8]) -> Result<(), ParseError> {
        let Some(checked) = self.pending_prepares.remove(&header.stream) else {
            return Ok(());
        };
        if header.opcode == opcode::RESULT {
            if let Some(id) = frame::prepared_id(header, body).map_err(|_| MALFORMED)? {
                self.prepared.insert(id, checked);
            }
        }
        Ok(())
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
