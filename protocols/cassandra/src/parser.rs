//! The Cassandra parser (protocol v3 and v4 framing, LZ4 and Snappy compression): checks every
//! QUERY, PREPARE, EXECUTE and BATCH against policy and answers a denied one with an
//! Unauthorized error on its stream.
//!
//! Frames that policy inspects are read whole (bounded by the frame limit); the others stream
//! through. Prepared statements are remembered by id when the server's Prepared result comes
//! back, in a bounded table, so EXECUTE and batch entries are checked against the policy in
//! force when they run. Responses carry stream ids, so a denial needs no place among the other
//! replies beyond a frame boundary.

use std::collections::{HashMap, VecDeque};

use axoneme_sdk::{Context, EntryType, ErrorCode, Field, Flow, Input, Op, ParseError, Parser};

use crate::compression::Compression;
use crate::frame::{
    self, opcode, BatchEntry, Header, Request, HEADER_LEN, UNAUTHORIZED, UNPREPARED,
};
use crate::rules::RuleSet;
use crate::statement::{classify, Action};

/// Prepared statements remembered per connection; the oldest is forgotten first.
pub const MAX_PREPARED: usize = 4096;

/// PREPAREs awaiting their result per connection.
pub const MAX_PENDING_PREPARES: usize = 1024;

/// What a statement does to which table, resolved when it was read or prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Checked {
    action: Action,
    /// `keyspace.table`, when the action has a table and its keyspace is known.
    table: Option<String>,
    /// For USE: the keyspace it switches to.
    keyspace: Option<String>,
}

/// What to do with an inspected request.
enum Outcome {
    /// Check these statements; pass if all are allowed.
    Check(Vec<Checked>),
    /// A PREPARE: check, and remember the statements for its result.
    Prepare(Vec<Checked>),
    /// The query cannot be classified: refused, with the reason logged.
    Refuse(String),
    /// An EXECUTE or batch entry of an id this connection never saw prepared.
    Unprepared(Vec<u8>),
}

/// Parser state for one Cassandra connection.
#[derive(Debug)]
pub struct CassandraParser {
    max_frame: usize,
    /// Compression asked for in STARTUP, in force from the server's answer on.
    requested: Option<Compression>,
    compression: Option<Compression>,
    keyspace: Option<String>,
    pending_prepares: HashMap<i16, Vec<Checked>>,
    prepared: HashMap<Vec<u8>, Vec<Checked>>,
    /// Prepared ids, oldest first.
    prepared_order: VecDeque<Vec<u8>>,
    /// Scratch: a frame body that straddles input slices.
    raw: Vec<u8>,
    /// Scratch: a decompressed frame body.
    decompressed: Vec<u8>,
}

const UNSUPPORTED_VERSION: ParseError = ParseError::new(
    ErrorCode::Unsupported,
    "CQL protocol version other than 3 or 4",
);
const TOO_LARGE: ParseError = ParseError::new(
    ErrorCode::FrameTooLarge,
    "frame longer than the configured maximum",
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
        let result = match flow {
            Flow::Request => self.on_request(ctx, input),
            Flow::Reply => self.on_reply(input),
        };
        result.unwrap_or_else(Op::Error)
    }
}

/// Classifies `query` and resolves its tables against `keyspace`.
fn statements(query: &str, keyspace: Option<&str>) -> Result<Vec<Checked>, String> {
    let statements = classify(query).map_err(|e| e.to_string())?;
    Ok(statements
        .into_iter()
        .map(|s| Checked {
            action: s.action,
            table: s.table.and_then(|t| t.qualified(keyspace)),
            keyspace: s.keyspace,
        })
        .collect())
}

/// The body of a complete frame at the start of `input`, decompressed when the frame says so.
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

impl CassandraParser {
    /// A parser refusing frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        CassandraParser {
            max_frame,
            requested: None,
            compression: None,
            keyspace: None,
            pending_prepares: HashMap::new(),
            prepared: HashMap::new(),
            prepared_order: VecDeque::new(),
            raw: Vec::new(),
            decompressed: Vec::new(),
        }
    }

    /// Reads a frame's header, checking version, direction and length; `None` when more bytes
    /// are needed.
    fn header(&self, input: Input<'_>, response: bool) -> Result<Option<Header>, ParseError> {
        let Some(bytes) = input.peek::<HEADER_LEN>(0) else {
            return Ok(None);
        };
        let header = Header::parse(&bytes);
        if !(3..=4).contains(&header.version) {
            return Err(UNSUPPORTED_VERSION);
        }
        if header.response != response {
            return Err(WRONG_DIRECTION);
        }
        if header.length as usize > self.max_frame {
            return Err(TOO_LARGE);
        }
        Ok(Some(header))
    }

    fn on_request(&mut self, ctx: &mut Context<'_>, input: Input<'_>) -> Result<Op, ParseError> {
        let Some(header) = self.header(input, false)? else {
            return Ok(if input.is_empty() {
                Op::Nop
            } else {
                Op::More(HEADER_LEN - input.len())
            });
        };
        let frame_len = HEADER_LEN + header.length as usize;
        let inspected = matches!(
            header.opcode,
            opcode::STARTUP | opcode::QUERY | opcode::PREPARE | opcode::EXECUTE | opcode::BATCH
        );
        if !inspected {
            return Ok(Op::Pass(frame_len));
        }
        if input.len() < frame_len {
            return Ok(Op::More(frame_len - input.len()));
        }
        let (mut raw, mut decompressed) = (
            std::mem::take(&mut self.raw),
            std::mem::take(&mut self.decompressed),
        );
        let outcome = frame_body(
            &header,
            input,
            &mut raw,
            &mut decompressed,
            self.compression,
            self.max_frame,
        )
        .and_then(|body| self.outcome(&header, body));
        self.raw = raw;
        self.decompressed = decompressed;
        match outcome? {
            None => Ok(Op::Pass(frame_len)),
            Some(outcome) => match self.decide(ctx, &header, outcome)? {
                true => Ok(Op::Pass(frame_len)),
                false => Ok(Op::Drop(frame_len)),
            },
        }
    }

    /// What an inspected request asks; `None` for requests that simply pass.
    fn outcome(&mut self, header: &Header, body: &[u8]) -> Result<Option<Outcome>, ParseError> {
        let request = Request::parse(header, body).map_err(|_| MALFORMED)?;
        let current = self.keyspace.clone();
        let resolve =
            |query: &str, own: Option<&str>| statements(query, own.or(current.as_deref()));
        Ok(Some(match request {
            Request::Startup { compression } => {
                self.requested = compression.and_then(Compression::from_name);
                return Ok(None);
            }
            Request::Other(_) => return Ok(None),
            Request::Query { query, keyspace } => match resolve(query, keyspace) {
                Ok(checked) => Outcome::Check(checked),
                Err(error) => Outcome::Refuse(error),
            },
            Request::Prepare { query, keyspace } => match resolve(query, keyspace) {
                Ok(checked) => Outcome::Prepare(checked),
                Err(error) => Outcome::Refuse(error),
            },
            Request::Execute { id, .. } => match self.prepared.get(id) {
                Some(checked) => Outcome::Check(checked.clone()),
                None => Outcome::Unprepared(id.to_vec()),
            },
            Request::Batch { entries, keyspace } => {
                let mut all = Vec::with_capacity(entries.len());
                for entry in entries {
                    match entry {
                        BatchEntry::Query(query) => match resolve(query, keyspace) {
                            Ok(checked) => all.extend(checked),
                            Err(error) => return Ok(Some(Outcome::Refuse(error))),
                        },
                        BatchEntry::Prepared(id) => match self.prepared.get(id) {
                            Some(checked) => all.extend(checked.iter().cloned()),
                            None => return Ok(Some(Outcome::Unprepared(id.to_vec()))),
                        },
                    }
                }
                Outcome::Check(all)
            }
        }))
    }

    /// Checks, logs and answers an inspected request; true when it may pass.
    fn decide(
        &mut self,
        ctx: &mut Context<'_>,
        header: &Header,
        outcome: Outcome,
    ) -> Result<bool, ParseError> {
        let (checked, prepare) = match outcome {
            Outcome::Check(checked) => (checked, false),
            Outcome::Prepare(checked) => (checked, true),
            Outcome::Refuse(reason) => {
                ctx.log(EntryType::Denied, "", &[Field::text("error", &reason)]);
                self.deny(ctx, header, UNAUTHORIZED, "Request Unauthorized", None)?;
                return Ok(false);
            }
            Outcome::Unprepared(id) => {
                ctx.log(
                    EntryType::Denied,
                    "",
                    &[Field::text("error", "unknown prepared statement id")],
                );
                self.deny(
                    ctx,
                    header,
                    UNPREPARED,
                    "Unknown prepared statement",
                    Some(&id),
                )?;
                return Ok(false);
            }
        };
        let mut policy_name = "";
        let mut denied = None;
        for statement in &checked {
            // USE always passes: it only sets the keyspace unqualified names resolve against,
            // so clients that connect with a keyspace keep working under table rules.
            if statement.action == Action::Use {
                continue;
            }
            let verdict = ctx.check::<RuleSet>(|rules| {
                rules.any(|rule| rule.matches(statement.action, statement.table.as_deref()))
            });
            policy_name = verdict.policy_name;
            if !verdict.allowed {
                denied = Some(statement);
                break;
            }
        }
        let shown = denied.or(checked.first());
        let action = shown.map_or("", |s| s.action.name());
        let table = shown.and_then(|s| s.table.as_deref()).unwrap_or_default();
        let fields = [
            Field::text("query_action", action),
            Field::text("query_table", table),
        ];
        if denied.is_some() {
            ctx.log(EntryType::Denied, policy_name, &fields);
            self.deny(ctx, header, UNAUTHORIZED, "Request Unauthorized", None)?;
            return Ok(false);
        }
        ctx.log(EntryType::Request, policy_name, &fields);
        if !prepare {
            if let Some(keyspace) = checked.iter().rev().find_map(|s| s.keyspace.clone()) {
                self.keyspace = Some(keyspace);
            }
        } else if self.pending_prepares.len() >= MAX_PENDING_PREPARES
            && !self.pending_prepares.contains_key(&header.stream)
        {
            return Err(TOO_MANY);
        } else {
            self.pending_prepares.insert(header.stream, checked);
        }
        Ok(true)
    }

    /// Injects an error answering the request of `header` toward the client.
    fn deny(
        &mut self,
        ctx: &mut Context<'_>,
        header: &Header,
        code: u32,
        message: &str,
        id: Option<&[u8]>,
    ) -> Result<(), ParseError> {
        let frame = frame::error_frame(header.version, header.stream, code, message, id);
        if ctx.inject_room(Flow::Reply) < frame.len() {
            return Err(NO_ROOM);
        }
        ctx.inject(Flow::Reply, &frame);
        Ok(())
    }

    fn on_reply(&mut self, input: Input<'_>) -> Result<Op, ParseError> {
        let Some(header) = self.header(input, true)? else {
            return Ok(if input.is_empty() {
                Op::Nop
            } else {
                Op::More(HEADER_LEN - input.len())
            });
        };
        let frame_len = HEADER_LEN + header.length as usize;
        // Compression applies from the server's first answer to STARTUP on, unless it refused.
        if let Some(requested) = self.requested {
            if header.opcode != opcode::ERROR {
                self.compression = Some(requested);
            }
            self.requested = None;
        }
        if !self.pending_prepares.contains_key(&header.stream) {
            return Ok(Op::Pass(frame_len));
        }
        if input.len() < frame_len {
            return Ok(Op::More(frame_len - input.len()));
        }
        let checked = self
            .pending_prepares
            .remove(&header.stream)
            .unwrap_or_default();
        if header.opcode == opcode::RESULT {
            let (mut raw, mut decompressed) = (
                std::mem::take(&mut self.raw),
                std::mem::take(&mut self.decompressed),
            );
            let id = frame_body(
                &header,
                input,
                &mut raw,
                &mut decompressed,
                self.compression,
                self.max_frame,
            )
            .and_then(|body| frame::prepared_id(&header, body).map_err(|_| MALFORMED))
            .map(|id| id.map(<[u8]>::to_vec));
            self.raw = raw;
            self.decompressed = decompressed;
            if let Some(id) = id? {
                self.remember(id, checked);
            }
        }
        Ok(Op::Pass(frame_len))
    }

    /// Remembers a prepared statement, forgetting the oldest one when the table is full.
    fn remember(&mut self, id: Vec<u8>, checked: Vec<Checked>) {
        if self.prepared.insert(id.clone(), checked).is_none() {
            self.prepared_order.push_back(id);
            if self.prepared_order.len() > MAX_PREPARED {
                if let Some(oldest) = self.prepared_order.pop_front() {
                    self.prepared.remove(&oldest);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
