//! The Kafka parser: frames requests and responses by their length, checks each request
//! against policy, and answers denied ones where the broker's response would have been.
//!
//! A request of an API whose body names topics is kept until it has arrived whole and read in
//! place ([`Request::parse`]); any other request is judged by its header as soon as that has
//! arrived, and passed or dropped as it streams. Topics a request names by id are judged by
//! the names the upstream's Metadata responses gave them ([`TopicIds`]), and an incremental
//! Fetch also by the topics its fetch session holds ([`FetchSessions`]). Responses are read no
//! further than their length and correlation id, which [`Pending`] matches against the
//! requests owed, except the answers to allowed Metadata requests (v10+, up to 1 MiB), which
//! are held whole and read for their topic ids before they pass, and the answers to the
//! Fetch requests a fetch session awaits, of which the top-level error and session id are
//! read (never the records). A denied Metadata request is narrowed to the topics the rules
//! allow (from v1, to none when it names no allowed topic and the rules allow asking about
//! none), as Kafka's authorizer answers per topic, so that clients asking about all their
//! topics at once keep learning the allowed ones; the broker's response to it (held whole)
//! goes to the client with an entry failing each topic
//! left out with TOPIC_AUTHORIZATION_FAILED, every topic entry in the order the client's
//! request named its topic (and none for a topic it did not name), and the broker's own
//! brokers, cluster id and controller, which clients need to go on; the answer to an allowed
//! Metadata request naming no topic (which brokers answer with every topic) is held whole
//! too, unless the rules let the client see every topic, and goes on with only the topics a
//! request naming them would be allowed, as Kafka's authorizer lists all topics; a held
//! answer longer than the datapath buffers closes the connection; and a Metadata request
//! that would have the broker create topics the rules do not let it create (`createtopics`)
//! goes on with auto-creation turned off (v4+), or is denied (v0 to v3, which have no flag).
//! A request that cannot be read, a denied one whose response this crate cannot compose, or
//! anything after an allowed version 0 SaslHandshake (raw SASL tokens, which the broker does
//! not read as requests), closes the connection.
//! Log fields and denials are written into buffers the parser keeps, so a warm parser does
//! not allocate per request.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use axoneme_sdk::{Context, EntryType, ErrorCode, Field, Flow, Input, Op, ParseError, Parser};

use crate::api::{Api, FETCH, METADATA, SASL_HANDSHAKE};
use crate::apis::{metadata, Body, Denial, Request};
use crate::error::Error;
use crate::fetch_sessions::FetchSessions;
use crate::header::{frame_len, peek, write_request, RequestHeader, LENGTH_LEN};
use crate::pending::{DenyAction, Pending, PendingError, ResponseAction};
use crate::rules::RuleSet;
use crate::topic_ids::{Known, LastLearned, TopicIds, FIRST_VERSION_WITH_IDS};
use crate::topics::{TopicRef, TOPIC_AUTHORIZATION_FAILED};
use crate::wire::{Reader, Uuid, WireError, Writer};

/// How many more bytes a request whose header has not arrived whole waits for at a time.
const HEADER_STEP: usize = 256;

/// The longest request header waited for before its request has arrived whole (a client id
/// may take 32 KiB; tagged fields the rest).
const MAX_HEADER_LEN: usize = 64 * 1024;

/// Bytes of a response's length and correlation id.
const RESPONSE_HEAD: usize = 8;

/// Most bytes of a Fetch response's header tagged fields read to reach its session id.
const MAX_FETCH_HEAD_TAGS: usize = 64;

/// The longest Metadata response held to learn topic ids; a longer one passes unread (its ids
/// stay unknown). Within the datapath's default `maxBuffered`.
const MAX_LEARNED_RESPONSE: usize = 1024 * 1024;

/// Parser state for one Kafka connection.
#[derive(Debug)]
pub struct KafkaParser {
    max_request: usize,
    pending: Pending,
    /// The topic ids of the upstream, shared with its other connections.
    topic_ids: Arc<TopicIds>,
    /// The Metadata response this connection last learned topic ids from.
    last_learned: LastLearned,
    /// A request that straddles input slices, joined.
    scratch: Vec<u8>,
    /// A Metadata response that straddles input slices, joined.
    reply_scratch: Vec<u8>,
    /// The denial, or the narrowed Metadata request, being composed.
    denial: Vec<u8>,
    /// A narrowed Metadata request waits in `denial`, to be injected toward the broker.
    narrowed_due: bool,
    /// The text of the log fields.
    text: Vec<u8>,
    /// A version 0 SaslHandshake passed: what follows are raw SASL tokens, no Kafka requests.
    raw_tokens: bool,
    /// The fetch sessions this connection created.
    sessions: FetchSessions,
    /// How each Metadata response owed that is to be rewritten is rewritten, in response
    /// order.
    rewrites: VecDeque<Rewrite>,
    /// A narrowed Metadata request's response with the topics left out added, being injected.
    rewritten: Vec<u8>,
    /// Bytes of `rewritten` injected so far.
    rewritten_sent: usize,
    /// What rewriting a Metadata response works in.
    rewrite_buffers: metadata::RewriteBuffers,
    /// The buffers of rewrites done, for the next ones.
    spare: SpareBuffers,
}

/// How the broker's answer to a Metadata request is rewritten before the client sees it.
#[derive(Debug)]
enum Rewrite {
    /// A narrowed request's: the topics it named, placed in its order.
    Narrowed(LeftOut),
    /// An allowed request's that names no topic, under rules that do not allow every topic:
    /// only the topics the client may ask about by name are kept.
    Filtered(Asker),
}

/// Who sent a Metadata request naming no topic: the header its answer's topics are judged
/// with, as if a request had named each of them.
#[derive(Debug)]
struct Asker {
    api_version: i16,
    correlation_id: i32,
    client_id: Option<Vec<u8>>,
}

impl Asker {
    /// Whether the rules in force let this client ask about `name` by name.
    fn may_see(&self, ctx: &Context<'_>, name: &[u8]) -> bool {
        let header = RequestHeader {
            api: Api::by_key(METADATA).expect("Metadata is in the API table"),
            api_version: self.api_version,
            correlation_id: self.correlation_id,
            client_id: self.client_id.as_deref(),
        };
        ctx.check::<RuleSet>(|rules| rules.allows(&header, std::iter::once(TopicRef::Name(name))))
            .allowed
    }
}

/// The topics a Metadata request named, in its order, when it was narrowed: those it kept, to
/// be answered by the broker, and those it left out, to be failed with
/// TOPIC_AUTHORIZATION_FAILED.
#[derive(Debug, Default)]
struct LeftOut {
    /// The names of the kept topics and the entries failing those left out, in the
    /// response's encoding, one after another.
    bytes: Vec<u8>,
    /// The topics, in the request's order.
    order: Vec<Slot>,
}

/// A topic of a narrowed Metadata request, by the bytes of [`LeftOut::bytes`] it owns.
#[derive(Debug)]
enum Slot {
    /// Kept, named by the name at this range.
    KeptName(Range<usize>),
    /// Kept, named by this id.
    KeptId(Uuid),
    /// Left out, failed by the entry at this range.
    Failed(Range<usize>),
}

impl LeftOut {
    /// The topics as [`metadata::add_topics`] places them.
    fn placed(&self) -> impl Iterator<Item = metadata::Placed<'_>> + Clone {
        self.order.iter().map(|slot| match slot {
            Slot::KeptName(at) => metadata::Placed::Kept(TopicRef::Name(&self.bytes[at.clone()])),
            Slot::KeptId(id) => metadata::Placed::Kept(TopicRef::Id(*id)),
            Slot::Failed(at) => metadata::Placed::Failed(&self.bytes[at.clone()]),
        })
    }
}

/// How many buffers of each kind [`SpareBuffers`] keeps: a burst of rewrites waiting at once
/// leaves no more than these behind.
const MAX_SPARE: usize = 8;

/// The buffers of the rewrites done, kept for the next ones so that a warm parser does not
/// allocate for them (up to [`MAX_SPARE`] of each).
#[derive(Debug, Default)]
struct SpareBuffers {
    bytes: Vec<Vec<u8>>,
    orders: Vec<Vec<Slot>>,
}

impl SpareBuffers {
    /// An empty [`LeftOut`].
    fn left_out(&mut self) -> LeftOut {
        LeftOut {
            bytes: self.bytes.pop().unwrap_or_default(),
            order: self.orders.pop().unwrap_or_default(),
        }
    }

    /// The [`Asker`] of the request with `header`.
    fn asker(&mut self, header: &RequestHeader<'_>) -> Asker {
        let client_id = header.client_id.map(|id| {
            let mut bytes = self.bytes.pop().unwrap_or_default();
            bytes.extend_from_slice(id);
            bytes
        });
        Asker {
            api_version: header.api_version,
            correlation_id: header.correlation_id,
            client_id,
        }
    }

    /// Keeps the buffers of `rewrite`, done, emptied.
    fn keep(&mut self, rewrite: Rewrite) {
        let (bytes, order) = match rewrite {
            Rewrite::Narrowed(left_out) => (Some(left_out.bytes), Some(left_out.order)),
            Rewrite::Filtered(asker) => (asker.client_id, None),
        };
        if let Some(mut bytes) = bytes.filter(|_| self.bytes.len() < MAX_SPARE) {
            bytes.clear();
            self.bytes.push(bytes);
        }
        if let Some(mut order) = order.filter(|_| self.orders.len() < MAX_SPARE) {
            order.clear();
            self.orders.push(order);
        }
    }
}

/// What [`KafkaParser::decide`] made of a request.
enum Judged {
    /// Allowed as it is.
    Allowed,
    /// A Metadata request narrowed to its allowed topics, waiting to be injected; `left_out`
    /// when it names fewer topics than the original (whose entries then wait at the back of
    /// [`KafkaParser::rewrites`]).
    Narrowed { left_out: bool },
    /// A Metadata request naming no topic, allowed, whose answer is to keep only the topics
    /// the client may see (its [`Rewrite::Filtered`] waits at the back of
    /// [`KafkaParser::rewrites`]).
    Filtered,
    /// Denied.
    Denied,
}

const NO_COMPOSED_DENIAL: ParseError = ParseError::new(
    ErrorCode::Unsupported,
    "denied request of an API whose denial cannot be composed",
);
const HEADER_TOO_LONG: ParseError = ParseError::new(
    ErrorCode::MalformedFrame,
    "request header longer than 64 KiB",
);
const RAW_SASL_TOKENS: ParseError = ParseError::new(
    ErrorCode::Unsupported,
    "raw SASL tokens after a version 0 SaslHandshake",
);
const DENIAL_TOO_LARGE: ParseError = ParseError::new(
    ErrorCode::StateLimit,
    "denial larger than the inject buffer",
);
const UNREADABLE_REWRITTEN_RESPONSE: ParseError = ParseError::new(
    ErrorCode::MalformedFrame,
    "Metadata response to rewrite that does not follow its message definition",
);

impl KafkaParser {
    /// A parser refusing requests longer than `max_request` bytes (without their length),
    /// resolving topic ids with `topic_ids` and adding to it what the upstream's Metadata
    /// responses teach.
    pub fn new(max_request: usize, topic_ids: Arc<TopicIds>) -> Self {
        KafkaParser {
            max_request,
            pending: Pending::default(),
            topic_ids,
            last_learned: LastLearned::default(),
            scratch: Vec::new(),
            reply_scratch: Vec::new(),
            narrowed_due: false,
            denial: Vec::new(),
            text: Vec::new(),
            raw_tokens: false,
            sessions: FetchSessions::default(),
            rewrites: VecDeque::new(),
            rewritten: Vec::new(),
            rewritten_sent: 0,
            rewrite_buffers: metadata::RewriteBuffers::default(),
            spare: SpareBuffers::default(),
        }
    }
}

impl Parser for KafkaParser {
    fn on_data(
        &mut self,
        ctx: &mut Context<'_>,
        flow: Flow,
        _end_stream: bool,
        input: Input<'_>,
    ) -> Op {
        let op = match flow {
            Flow::Request => self.on_request(ctx, input),
            Flow::Reply => self.on_reply(ctx, input),
        };
        // What a call with no input after this answer would inject: a narrowed request in
        // place of the one dropped, a rewritten response, or denials due after a response.
        let due_at_end = match flow {
            Flow::Request => self.narrowed_due,
            Flow::Reply => {
                self.rewritten_sent < self.rewritten.len() || self.pending.has_due_denial()
            }
        };
        if matches!(op, Ok(Op::Pass(_) | Op::Drop(_))) && !due_at_end {
            ctx.nothing_to_inject_at_end();
        }
        op.unwrap_or_else(Op::Error)
    }
}

impl KafkaParser {
    fn on_request(&mut self, ctx: &mut Context<'_>, input: Input<'_>) -> Result<Op, ParseError> {
        if self.narrowed_due {
            self.narrowed_due = false;
            // `narrow` checked that it fits.
            let n = ctx.inject(Flow::Request, &self.denial);
            return Ok(Op::Inject(n));
        }
        if input.is_empty() {
            return Ok(Op::Nop);
        }
        if self.raw_tokens {
            return Err(RAW_SASL_TOKENS);
        }
        let Some(frame) = frame_len(&input, self.max_request).map_err(parse_error)? else {
            return Ok(Op::More(LENGTH_LEN - input.len()));
        };
        let at_hand = input.len().min(frame);
        let mut scratch = std::mem::take(&mut self.scratch);
        let op = self.request(ctx, input, frame, at_hand, &mut scratch);
        self.scratch = scratch;
        op
    }

    fn request(
        &mut self,
        ctx: &mut Context<'_>,
        input: Input<'_>,
        frame: usize,
        at_hand: usize,
        scratch: &mut Vec<u8>,
    ) -> Result<Op, ParseError> {
        // A whole request of an API whose body is read: header and body read in one pass.
        let key = peek::<2>(&input, LENGTH_LEN).map(i16::from_be_bytes);
        if at_hand == frame && key.is_some_and(reads_body) {
            let Some(message) = input.contiguous(LENGTH_LEN..frame, scratch) else {
                return Ok(Op::More(1));
            };
            // Judged where it was built: a request is a few hundred bytes, not worth moving.
            return match Request::parse_in(message, &mut None) {
                Ok(request) => self.judge(ctx, request, frame),
                Err(error) => Err(parse_error(error)),
            };
        }
        let head_end = at_hand.min(LENGTH_LEN + MAX_HEADER_LEN);
        let Some(head) = input.contiguous(LENGTH_LEN..head_end, scratch) else {
            return Ok(Op::More(1));
        };
        let header = match RequestHeader::parse(head) {
            Ok((header, _)) => header,
            Err(Error::Wire(WireError::Truncated(_))) if head_end < frame => {
                if head_end < at_hand {
                    return Err(HEADER_TOO_LONG);
                }
                return Ok(Op::More((frame - at_hand).min(HEADER_STEP)));
            }
            Err(error) => return Err(parse_error(error)),
        };
        if !reads_body(header.api.key) {
            return self.judge(ctx, &Request::unread(header), frame);
        }
        if at_hand < frame {
            return Ok(Op::More(frame - at_hand));
        }
        let Some(message) = input.contiguous(LENGTH_LEN..frame, scratch) else {
            return Ok(Op::More(1));
        };
        match Request::parse_in(message, &mut None) {
            Ok(request) => self.judge(ctx, request, frame),
            Err(error) => Err(parse_error(error)),
        }
    }

    /// Checks a request, logs the verdict, and passes it, or drops it and answers the denial.
    fn judge(
        &mut self,
        ctx: &mut Context<'_>,
        request: &Request<'_>,
        frame: usize,
    ) -> Result<Op, ParseError> {
        // Only a Fetch reads or changes the fetch sessions.
        let Body::Fetch(_) = request.body else {
            return self.judge_with(ctx, request, frame, None);
        };
        let mut sessions = std::mem::take(&mut self.sessions);
        let op = self.judge_with(ctx, request, frame, Some(&mut sessions));
        self.sessions = sessions;
        op
    }

    /// [`KafkaParser::judge`], with the fetch sessions taken out of the parser for a Fetch: an
    /// incremental Fetch is judged on the topics of its session too, and a Fetch let through
    /// updates the sessions.
    fn judge_with(
        &mut self,
        ctx: &mut Context<'_>,
        request: &Request<'_>,
        frame: usize,
        sessions: Option<&mut FetchSessions>,
    ) -> Result<Op, ParseError> {
        let header = request.header;
        let fetch = match &request.body {
            Body::Fetch(fetch) => Some(fetch),
            _ => None,
        };
        let is_id = |topic: &TopicRef<'_>| matches!(topic, TopicRef::Id(_));
        let incremental = fetch.is_some_and(|fetch| fetch.is_incremental());
        let judged = match request.kept_topics() {
            // Most requests: their topics at hand, no session's topics to add.
            Some(kept) if !incremental => {
                let ids = kept.iter().any(is_id).then(|| Arc::clone(&self.topic_ids));
                let known = Known::of(ids.as_deref());
                let topics = kept.iter().map(|topic| known.resolve(*topic));
                self.decide(ctx, request, topics, &known)
            }
            _ => {
                // The session's topics that the request does not name itself.
                let held = fetch
                    .iter()
                    .zip(sessions.as_deref())
                    .flat_map(|(fetch, sessions)| sessions.topics(fetch))
                    .filter(|held| !request.topics().any(|named| named == *held));
                let by_id = request.topics().any(|topic| is_id(&topic))
                    || held.clone().any(|topic| is_id(&topic));
                let ids = by_id.then(|| Arc::clone(&self.topic_ids));
                let known = Known::of(ids.as_deref());
                let topics = request
                    .topics()
                    .map(|topic| known.resolve(topic))
                    .chain(held.map(|topic| known.resolve(topic)));
                self.decide(ctx, request, topics, &known)
            }
        };
        match judged {
            Judged::Allowed => {
                let ticket = fetch
                    .zip(sessions)
                    .and_then(|(fetch, sessions)| sessions.forwarded(fetch));
                self.owe(request, ticket)?;
                self.raw_tokens = header.api.key == SASL_HANDSHAKE && header.api_version == 0;
                return Ok(Op::Pass(frame));
            }
            Judged::Narrowed { left_out } => {
                match left_out {
                    true => self
                        .pending
                        .expect_rewritten_metadata(header.correlation_id, header.api_version)
                        .map_err(pending_error)?,
                    false => self.owe(request, None)?,
                }
                self.narrowed_due = true;
                return Ok(Op::Drop(frame));
            }
            Judged::Filtered => {
                self.pending
                    .expect_rewritten_metadata(header.correlation_id, header.api_version)
                    .map_err(pending_error)?;
                let asker = self.spare.asker(&header);
                self.rewrites.push_back(Rewrite::Filtered(asker));
                return Ok(Op::Pass(frame));
            }
            Judged::Denied => {}
        }
        if let Some(fetch) = fetch.filter(|fetch| fetch.is_incremental()) {
            if let Some(sessions) = sessions {
                sessions.refused(fetch.session_id);
            }
        }
        self.denial.clear();
        match request.write_denial(&mut self.denial) {
            Denial::Written => {}
            Denial::NoResponse => return Ok(Op::Drop(frame)),
            Denial::Unsupported => return Err(NO_COMPOSED_DENIAL),
        }
        if self.pending.deny(&self.denial).map_err(pending_error)? == DenyAction::InjectNow {
            if ctx.inject_room(Flow::Reply) < self.denial.len() {
                return Err(DENIAL_TOO_LARGE);
            }
            ctx.inject(Flow::Reply, &self.denial);
        }
        Ok(Op::Drop(frame))
    }

    /// Checks `request`, whose `topics` (by name where `known` names them) are those it
    /// names and those its fetch session holds, and logs the verdict; a denied Metadata
    /// request is narrowed when it can be ([`KafkaParser::narrow`]).
    fn decide<'t>(
        &mut self,
        ctx: &Context<'_>,
        request: &Request<'_>,
        topics: impl Iterator<Item = TopicRef<'t>> + Clone,
        known: &Known<'_>,
    ) -> Judged {
        let header = request.header;
        let verdict = ctx.check::<RuleSet>(|rules| rules.allows(&header, topics.clone()));
        let metadata = match &request.body {
            Body::Metadata(metadata) => Some(metadata),
            _ => None,
        };
        let creates = metadata.is_some_and(metadata::Request::creates_topics);
        let may_create = |rules: &RuleSet| rules.allows_creating(&header, topics.clone());
        if verdict.allowed && (!creates || ctx.check::<RuleSet>(may_create).allowed) {
            // A Metadata request naming no topic is answered with every topic (v0 and null
            // arrays ask for all; some brokers answer an empty array v1+ so too): unless the
            // rules let this client see every topic, the answer keeps only those it may.
            let filtered = metadata.is_some()
                && request.topics().next().is_none()
                && !ctx
                    .check::<RuleSet>(|rules| rules.allows(&header, std::iter::once(TopicRef::Any)))
                    .allowed;
            ctx.mark_next_request(Some(&verdict));
            self.log(
                ctx,
                &header,
                topics,
                EntryType::Request,
                verdict.policy_name,
            );
            return match filtered {
                true => Judged::Filtered,
                false => Judged::Allowed,
            };
        }
        if let Some(metadata) = metadata {
            if let Some(left_out) = self.narrow(ctx, request, metadata, known) {
                return Judged::Narrowed { left_out };
            }
        }
        let verdict = match metadata {
            // Checked again, for the reason the log gives: narrowing checked single topics
            // since. A Metadata request the rules allow is denied here for the topics it
            // would create.
            Some(_) => {
                let verdict = ctx.check::<RuleSet>(|rules| rules.allows(&header, topics.clone()));
                match verdict.allowed {
                    true => ctx.check::<RuleSet>(may_create),
                    false => verdict,
                }
            }
            None => verdict,
        };
        self.log(ctx, &header, topics, EntryType::Denied, verdict.policy_name);
        Judged::Denied
    }

    /// Records the response an allowed (or narrowed) request is owed, if any; `fetch_ticket`
    /// when a fetch session awaits it.
    fn owe(&mut self, request: &Request<'_>, fetch_ticket: Option<u64>) -> Result<(), ParseError> {
        let header = &request.header;
        let owed = match (&request.body, fetch_ticket) {
            (_, Some(ticket)) => {
                self.pending
                    .expect_fetch(header.correlation_id, header.api_version, ticket)
            }
            (Body::Metadata(_), _) if header.api_version >= FIRST_VERSION_WITH_IDS => self
                .pending
                .expect_metadata(header.correlation_id, header.api_version),
            _ if expects_response(request) => self.pending.expect(header.correlation_id),
            _ => {
                self.pending.expect_none(header.correlation_id);
                Ok(())
            }
        };
        owed.map_err(pending_error)
    }

    /// Rewrites a Metadata request the rules do not allow as it is: narrowed to the topics
    /// they allow (none, from v1, where an empty topic array asks for no topic, when the rules
    /// allow a Metadata request naming none), as Kafka's authorizer answers per topic, and
    /// without leave to create them unless the rules allow creating every one (as Kafka's
    /// authorizer asks Create of each topic it would create). Composes that request (to be
    /// injected toward the broker in place of the original), and logs a `Request` entry for
    /// the kept topics, if any, and, when some are left out, a `Denied` one for those, whose
    /// entries failing them with TOPIC_AUTHORIZATION_FAILED are queued to be placed among the
    /// broker's entries in the order of the request (so the client hears of every topic it
    /// asked about, with the broker's brokers, cluster id and controller). Topics that do not exist are not created but
    /// reported unknown. `Some(true)` when topics were left out, `Some(false)` when only
    /// auto-creation was turned off; `None` when the request cannot be narrowed: no topic is
    /// allowed and v0 (whose empty array asks for all) or the rules do not allow naming none,
    /// the kept topics would be created without leave (v0 to v3 have no flag to clear), or
    /// the rewritten request would not fit the inject buffer: the request is then denied whole.
    fn narrow(
        &mut self,
        ctx: &Context<'_>,
        request: &Request<'_>,
        metadata: &metadata::Request<'_>,
        known: &Known<'_>,
    ) -> Option<bool> {
        let header = request.header;
        let allows = |topic: TopicRef<'_>| {
            ctx.check::<RuleSet>(|rules| {
                rules.allows(&header, std::iter::once(known.resolve(topic)))
            })
            .allowed
        };
        let kept = request
            .topics()
            .filter(|topic| allows(*topic))
            .map(|topic| known.resolve(topic));
        let keeps_some = kept.clone().next().is_some();
        if !keeps_some
            && (header.api_version == 0
                || !ctx
                    .check::<RuleSet>(|rules| rules.allows(&header, std::iter::empty()))
                    .allowed)
        {
            return None;
        }
        let create = metadata.creates_topics()
            && ctx
                .check::<RuleSet>(|rules| rules.allows_creating(&header, kept.clone()))
                .allowed;
        if keeps_some && metadata.creates_topics() && !create && header.api_version < 4 {
            return None;
        }
        self.denial.clear();
        write_request(&mut self.denial, &header, |w| {
            metadata::write_request(metadata, header.api_version, allows, create, w);
        });
        if ctx.inject_room(Flow::Request) < self.denial.len() {
            return None;
        }
        if keeps_some {
            let verdict = ctx.check::<RuleSet>(|rules| rules.allows(&header, kept.clone()));
            self.log(ctx, &header, kept, EntryType::Request, verdict.policy_name);
        }
        let mut dropped = request
            .topics()
            .filter(|topic| !allows(*topic))
            .map(|topic| known.resolve(topic))
            .peekable();
        if dropped.peek().is_none() {
            return Some(false);
        }
        let verdict = ctx.check::<RuleSet>(|rules| rules.allows(&header, dropped.clone()));
        self.log(
            ctx,
            &header,
            dropped,
            EntryType::Denied,
            verdict.policy_name,
        );
        let mut left_out = self.spare.left_out();
        for topic in request.topics() {
            let start = left_out.bytes.len();
            let slot = match (allows(topic), topic) {
                (true, TopicRef::Id(id)) => Slot::KeptId(id),
                (true, TopicRef::Name(name)) => {
                    left_out.bytes.extend_from_slice(name);
                    Slot::KeptName(start..left_out.bytes.len())
                }
                // A Metadata request names no such topic; the broker answers for none.
                (true, TopicRef::Any) => continue,
                (false, _) => {
                    let mut w = Writer::new(&mut left_out.bytes, header.is_flexible());
                    metadata::write_failed_topic(
                        topic,
                        header.api_version,
                        TOPIC_AUTHORIZATION_FAILED,
                        &mut w,
                    );
                    Slot::Failed(start..left_out.bytes.len())
                }
            };
            left_out.order.push(slot);
        }
        self.rewrites.push_back(Rewrite::Narrowed(left_out));
        Some(true)
    }

    fn on_reply(&mut self, ctx: &mut Context<'_>, input: Input<'_>) -> Result<Op, ParseError> {
        if let Some(op) = self.inject_rewritten(ctx)? {
            return Ok(op);
        }
        if let Some(op) = self.inject_due(ctx)? {
            return Ok(op);
        }
        if input.is_empty() {
            return Ok(Op::Nop);
        }
        let Some(head) = peek::<RESPONSE_HEAD>(&input, 0) else {
            return Ok(Op::More(RESPONSE_HEAD - input.len()));
        };
        let [l0, l1, l2, l3, c0, c1, c2, c3] = head;
        let length = i32::from_be_bytes([l0, l1, l2, l3]);
        if length < 4 {
            return Err(ParseError::new(
                ErrorCode::InvalidFrameLength,
                "response shorter than its correlation id",
            ));
        }
        let frame = LENGTH_LEN + length as usize;
        let correlation_id = i32::from_be_bytes([c0, c1, c2, c3]);
        let due = self.pending.due(correlation_id);
        if let Some(version) = due.rewrite {
            return self.rewrite(ctx, input, frame, correlation_id, version);
        }
        if let Some(version) = due.metadata {
            if frame - LENGTH_LEN <= MAX_LEARNED_RESPONSE {
                if input.len() < frame {
                    return Ok(Op::More(frame - input.len()));
                }
                let mut scratch = std::mem::take(&mut self.reply_scratch);
                if let Some(message) = input.contiguous(LENGTH_LEN..frame, &mut scratch) {
                    // A response that does not follow its definition teaches what came before
                    // the fault and still goes to the client, whose business it is.
                    let _ = self
                        .topic_ids
                        .learn_new(message, version, &mut self.last_learned);
                }
                self.reply_scratch = scratch;
            }
        }
        if let Some((ticket, version)) = due.fetch {
            let head_end = frame.min(RESPONSE_HEAD + MAX_FETCH_HEAD_TAGS + FETCH_OUTCOME_LEN);
            if input.len() < head_end {
                return Ok(Op::More(head_end - input.len()));
            }
            let mut scratch = std::mem::take(&mut self.reply_scratch);
            let outcome = input
                .contiguous(RESPONSE_HEAD..head_end, &mut scratch)
                .and_then(|head| fetch_outcome(head, version));
            self.reply_scratch = scratch;
            self.sessions.answered(ticket, outcome);
        }
        match self
            .pending
            .response(correlation_id)
            .map_err(pending_error)?
        {
            ResponseAction::Pass => Ok(Op::Pass(frame)),
            ResponseAction::Discard => Ok(Op::Drop(frame)),
        }
    }

    /// Holds the response (a whole `frame` with `correlation_id`, within the datapath's
    /// `maxBuffered`) to a Metadata request of `version` whose answer is rewritten, learns its
    /// topic ids, and drops it, to inject it rewritten ([`KafkaParser::inject_rewritten`]):
    /// with the topics a narrowed request left out added, or with only the topics the client
    /// may see. A response that cannot be read closes the connection: passing it as it is
    /// would leave the client waiting on the topics left out, or tell it of topics it may not
    /// see.
    fn rewrite(
        &mut self,
        ctx: &Context<'_>,
        input: Input<'_>,
        frame: usize,
        correlation_id: i32,
        version: i16,
    ) -> Result<Op, ParseError> {
        if input.len() < frame {
            return Ok(Op::More(frame - input.len()));
        }
        let Some(rewrite) = self.rewrites.pop_front() else {
            return Err(UNREADABLE_REWRITTEN_RESPONSE);
        };
        let mut scratch = std::mem::take(&mut self.reply_scratch);
        let written = match input.contiguous(LENGTH_LEN..frame, &mut scratch) {
            Some(message) => {
                if self.pending.metadata_due(correlation_id).is_some() {
                    let _ = self
                        .topic_ids
                        .learn_new(message, version, &mut self.last_learned);
                }
                self.rewritten.clear();
                self.rewritten_sent = 0;
                let (out, buffers) = (&mut self.rewritten, &mut self.rewrite_buffers);
                let written = match &rewrite {
                    Rewrite::Narrowed(left_out) => {
                        metadata::add_topics(message, version, left_out.placed(), buffers, out)
                    }
                    Rewrite::Filtered(asker) => metadata::keep_topics(
                        message,
                        version,
                        |name| asker.may_see(ctx, name),
                        buffers,
                        out,
                    ),
                };
                // The checks of the topics answered mark no request's entry.
                ctx.mark_next_request(None);
                written.is_ok()
            }
            None => false,
        };
        self.reply_scratch = scratch;
        self.spare.keep(rewrite);
        if !written {
            return Err(UNREADABLE_REWRITTEN_RESPONSE);
        }
        self.pending
            .response(correlation_id)
            .map_err(pending_error)?;
        Ok(Op::Drop(frame))
    }

    /// Injects as much of the rewritten response not yet sent as the inject buffer takes.
    fn inject_rewritten(&mut self, ctx: &mut Context<'_>) -> Result<Option<Op>, ParseError> {
        let rest = &self.rewritten[self.rewritten_sent..];
        if rest.is_empty() {
            return Ok(None);
        }
        let n = rest.len().min(ctx.inject_room(Flow::Reply));
        if n == 0 {
            return Err(DENIAL_TOO_LARGE);
        }
        ctx.inject(Flow::Reply, &rest[..n]);
        self.rewritten_sent += n;
        if self.rewritten_sent == self.rewritten.len() {
            self.rewritten.clear();
            self.rewritten_sent = 0;
        }
        Ok(Some(Op::Inject(n)))
    }

    /// Injects as much of the denial now due as the inject buffer takes.
    fn inject_due(&mut self, ctx: &mut Context<'_>) -> Result<Option<Op>, ParseError> {
        let Some(due) = self.pending.due_denial() else {
            return Ok(None);
        };
        let n = due.len().min(ctx.inject_room(Flow::Reply));
        if n == 0 {
            return Err(DENIAL_TOO_LARGE);
        }
        ctx.inject(Flow::Reply, &due[..n]);
        self.pending.denial_sent(n);
        Ok(Some(Op::Inject(n)))
    }

    /// Logs a request with Cilium's Kafka fields: `api_key` (the policy name), `api_version`,
    /// `correlation_id` and, when it names topics, `topic` (joined with ", "; a topic named by
    /// an id the upstream never named shows the id as Kafka prints it).
    fn log<'t>(
        &mut self,
        ctx: &Context<'_>,
        header: &RequestHeader<'_>,
        topics: impl Iterator<Item = TopicRef<'t>>,
        entry: EntryType,
        policy: &str,
    ) {
        self.text.clear();
        write_decimal(&mut self.text, header.api_version.into());
        let version_end = self.text.len();
        write_decimal(&mut self.text, header.correlation_id);
        let correlation_end = self.text.len();
        for (i, topic) in topics.enumerate() {
            if i > 0 {
                self.text.extend_from_slice(b", ");
            }
            match topic {
                TopicRef::Name(name) => self.text.extend_from_slice(name),
                TopicRef::Id(id) => write_topic_id(&mut self.text, &id),
                TopicRef::Any => self.text.push(b'*'),
            }
        }
        let fields = [
            Field::text("api_key", header.api.policy_name),
            Field::bytes("api_version", &self.text[..version_end]),
            Field::bytes("correlation_id", &self.text[version_end..correlation_end]),
            Field::bytes("topic", &self.text[correlation_end..]),
        ];
        let named = if correlation_end < self.text.len() {
            4
        } else {
            3
        };
        ctx.log(entry, policy, &fields[..named]);
    }
}

/// Whether requests of API `key` are read whole: those whose bodies name topics, and
/// FindCoordinator, whose denial answers its keys.
pub(crate) fn reads_body(key: i16) -> bool {
    use crate::api::*;
    matches!(
        key,
        PRODUCE
            | FETCH
            | LIST_OFFSETS
            | METADATA
            | OFFSET_COMMIT
            | OFFSET_FETCH
            | CREATE_TOPICS
            | DELETE_TOPICS
            | DELETE_RECORDS
            | OFFSET_FOR_LEADER_EPOCH
            | ADD_PARTITIONS_TO_TXN
            | TXN_OFFSET_COMMIT
            | FIND_COORDINATOR
            | DESCRIBE_ACLS
            | CREATE_ACLS
            | DELETE_ACLS
            | DESCRIBE_CONFIGS
            | ALTER_CONFIGS
            | INCREMENTAL_ALTER_CONFIGS
    )
}

/// Bytes of a Fetch response's throttle time, error code and session id.
const FETCH_OUTCOME_LEN: usize = 10;

/// The top-level error code and session id of a Fetch response of `version` (v7+), from
/// `head`, its bytes after the correlation id; `None` when they are not there.
pub(crate) fn fetch_outcome(head: &[u8], version: i16) -> Option<(i16, i32)> {
    let fetch = Api::by_key(FETCH)?;
    let mut r = Reader::new(head, fetch.is_flexible(version));
    r.tagged_fields().ok()?;
    r.i32("the throttle time").ok()?;
    let error = r.i16("the error code").ok()?;
    let session_id = r.i32("the session id").ok()?;
    Some((error, session_id))
}

/// Whether the broker answers `request`: all but Produce with `acks` 0.
fn expects_response(request: &Request<'_>) -> bool {
    !matches!(request.body, Body::Produce(produce) if produce.acks == 0)
}

/// Appends `value` in decimal.
fn write_decimal(out: &mut Vec<u8>, value: i32) {
    // A sign and ten digits at most, written into a buffer of that size appended whole (a
    // copy of a known size, done without a call), then cut to the digits written.
    let mut text = [0u8; 11];
    let mut rest = value.unsigned_abs();
    let sign = usize::from(value < 0);
    let mut len = sign + 1;
    let mut tens = rest / 10;
    while tens > 0 {
        len += 1;
        tens /= 10;
    }
    text[0] = b'-';
    for at in (sign..len).rev() {
        text[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let start = out.len();
    out.extend_from_slice(&text);
    out.truncate(start + len);
}

/// Kafka's text form of a topic id: URL-safe base64 without padding.
fn write_topic_id(out: &mut Vec<u8>, id: &[u8; 16]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for chunk in id.chunks(3) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |bits, (i, &b)| bits | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(bits >> (18 - 6 * i) & 0x3f) as usize]);
        }
    }
}

fn parse_error(error: Error) -> ParseError {
    match error {
        Error::NegativeLength(_) => {
            ParseError::new(ErrorCode::InvalidFrameLength, "negative request length")
        }
        Error::TooLarge { .. } => ParseError::new(
            ErrorCode::FrameTooLarge,
            "request longer than the configured maximum",
        ),
        Error::UnknownApiKey(_) => ParseError::new(ErrorCode::InvalidFrameType, "unknown API key"),
        Error::UnsupportedVersion { .. } => ParseError::new(
            ErrorCode::Unsupported,
            "API version the broker does not accept",
        ),
        Error::Wire(WireError::Ambiguous(_)) => ParseError::new(
            ErrorCode::MalformedFrame,
            "request naming a topic by both an id and a name, which brokers read differently",
        ),
        Error::Wire(_) => ParseError::new(
            ErrorCode::MalformedFrame,
            "request that does not follow its message definition",
        ),
    }
}

fn pending_error(error: PendingError) -> ParseError {
    match error {
        PendingError::Full => ParseError::new(
            ErrorCode::StateLimit,
            "too many requests awaiting responses",
        ),
        PendingError::OutOfOrder { .. } => ParseError::new(
            ErrorCode::MalformedFrame,
            "response out of correlation id order",
        ),
    }
}

#[cfg(test)]
mod tests;
