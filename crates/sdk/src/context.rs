//! What a parser may see and do besides answering with operations: the connection's metadata,
//! the policy check for a request, injection of bytes, and access logging.
//!
//! This module defines the interfaces only. The policy behind [`RequestPolicy`] and the log
//! behind [`AccessLog`] are supplied by whoever runs the parser (the datapath and the runtime);
//! nothing here performs I/O.

use std::any::Any;
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::trim::TrimCapacity;

/// One of the two byte streams of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flow {
    /// From the connection's client to its upstream (Cilium's "original direction").
    Request,
    /// From the upstream back to the client (Cilium's "reply").
    Reply,
}

impl Flow {
    /// The opposite stream.
    #[inline]
    pub fn other(self) -> Flow {
        match self {
            Flow::Request => Flow::Reply,
            Flow::Reply => Flow::Request,
        }
    }

    /// 0 for `Request`, 1 for `Reply`: for per-flow arrays.
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Which side of the guarded endpoint a connection is on, as policies write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The guarded endpoint is the server; the remote is the client.
    Ingress,
    /// The guarded endpoint is the client; the remote is the upstream.
    Egress,
}

/// Facts about a connection that hold for its whole life.
#[derive(Debug, Clone)]
pub struct ConnectionMeta {
    /// A number unique within the process.
    pub id: u64,
    /// The name of the listener that accepted the connection.
    pub listener: Arc<str>,
    /// The name of the endpoint the listener guards.
    pub endpoint: Arc<str>,
    /// Ingress or egress, seen from the guarded endpoint.
    pub direction: Direction,
    /// The client's address.
    pub source: SocketAddr,
    /// The upstream's address.
    pub destination: SocketAddr,
    /// Numeric security identity of the client.
    pub source_identity: u32,
    /// Numeric security identity of the upstream.
    pub destination_identity: u32,
    /// Labels of the client's identity, as `key=value`.
    pub source_labels: Arc<[String]>,
    /// Labels of the upstream's identity, as `key=value`.
    pub destination_labels: Arc<[String]>,
}

impl ConnectionMeta {
    /// The port that policy is looked up by: the upstream's.
    #[inline]
    pub fn destination_port(&self) -> u16 {
        self.destination.port()
    }
}

/// The outcome of a policy check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict<'p> {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The policy that allowed it, or for a denial the policy that denied it (empty when the
    /// request was denied because nothing allowed it).
    pub policy_name: &'p str,
    /// The request would be denied, but the policy deciding is in audit mode: `allowed` is
    /// true, and `policy_name` names what a denial would (empty for no allowing rule). A
    /// parser treats it as allowed; [`Context::log`] marks the request's entry (see
    /// [`logging_audit`]).
    pub audited: bool,
}

/// Why a request was denied: the access log's `reason` field of a `Denied` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// A deny rule matched; the entry's `policy_name` is the policy holding it.
    DenyRule,
    /// No rule allowed the request; the entry's `policy_name` is empty.
    NoAllow,
}

impl DenyReason {
    /// The reason of a denying verdict.
    #[inline]
    pub fn of(verdict: &Verdict<'_>) -> Option<DenyReason> {
        match verdict.allowed {
            true => None,
            false => Some(DenyReason::named_by(verdict.policy_name)),
        }
    }

    /// Why a request would be denied when an audited verdict lets it through.
    #[inline]
    pub fn of_audited(verdict: &Verdict<'_>) -> Option<DenyReason> {
        match verdict.audited {
            true => Some(DenyReason::named_by(verdict.policy_name)),
            false => None,
        }
    }

    /// The reason of a denial in the name of `policy_name` (empty: nothing allowed).
    #[inline]
    fn named_by(policy_name: &str) -> DenyReason {
        match policy_name.is_empty() {
            true => DenyReason::NoAllow,
            false => DenyReason::DenyRule,
        }
    }

    /// The value of the access log's `reason` field.
    #[inline]
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::DenyRule => "deny-rule",
            DenyReason::NoAllow => "no-allow",
        }
    }
}

/// The L7 part of the policy in force for one connection.
///
/// Implemented by the policy engine; parsers reach it through [`Context::check`].
pub trait RequestPolicy: Send + Sync {
    /// Decides a request. `matches` is called with the compiled L7 rule set of each rule that
    /// could allow the request (the value a protocol's [`crate::Protocol::compile_rules`]
    /// produced) and answers whether the request satisfies it. Rules without L7 constraints
    /// allow without calling `matches`.
    fn check(&self, matches: &mut dyn FnMut(&(dyn Any + Send + Sync)) -> bool) -> Verdict<'_>;
}

/// The kind of an access-log entry, with Cilium's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    /// An allowed request.
    Request,
    /// A reply.
    Response,
    /// A denied request, a refused connection, or a connection closed for a protocol error.
    Denied,
}

impl EntryType {
    /// The name used in the access log.
    #[inline]
    pub fn as_str(self) -> &'static str {
        match self {
            EntryType::Request => "Request",
            EntryType::Response => "Response",
            EntryType::Denied => "Denied",
        }
    }
}

/// One generic key/value field of an access-log entry. Values are bytes because they often come
/// straight from the wire; the log writes them as text, replacing invalid UTF-8.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    /// The field's name.
    pub key: &'a str,
    /// The field's value.
    pub value: &'a [u8],
}

impl<'a> Field<'a> {
    /// A field whose value is text.
    #[inline]
    pub fn text(key: &'a str, value: &'a str) -> Self {
        Field {
            key,
            value: value.as_bytes(),
        }
    }

    /// A field whose value is raw bytes.
    #[inline]
    pub fn bytes(key: &'a str, value: &'a [u8]) -> Self {
        Field { key, value }
    }
}

/// One access-log entry, borrowed for the duration of the call that writes it.
#[derive(Debug, Clone, Copy)]
pub struct LogEntry<'a> {
    /// Request, Response or Denied.
    pub entry_type: EntryType,
    /// The connection the entry is about.
    pub meta: &'a ConnectionMeta,
    /// The policy that decided, if any.
    pub policy_name: &'a str,
    /// The L7 protocol, when the connection is parsed.
    pub proto: Option<&'a str>,
    /// Protocol-defined fields (`generic_l7.fields`).
    pub fields: &'a [Field<'a>],
}

/// Where access-log entries go. Implementations must never block the caller.
pub trait AccessLog: Send + Sync {
    /// Records one entry.
    fn log(&self, entry: &LogEntry<'_>);
}

/// `matches`, over type-erased rule sets as [`RequestPolicy::check`] hands them: a rule set that
/// is not an `R` never matches, so a mix-up fails closed.
#[inline]
pub fn typed<R: Any>(
    mut matches: impl FnMut(&R) -> bool,
) -> impl FnMut(&(dyn Any + Send + Sync)) -> bool {
    move |rules| rules.downcast_ref::<R>().is_some_and(&mut matches)
}

/// A bounded buffer of bytes waiting to be injected into one flow.
///
/// It takes memory only when bytes are pushed, never more than its capacity, and gives back
/// what it took beyond [`crate::KEPT_CAPACITY`] once emptied: a connection that never injects, or
/// injected a burst long ago, holds little.
#[derive(Debug)]
pub struct InjectBuffer {
    bytes: Vec<u8>,
    capacity: usize,
}

impl InjectBuffer {
    /// An empty buffer that holds at most `capacity` bytes.
    #[inline]
    pub fn new(capacity: usize) -> Self {
        InjectBuffer {
            bytes: Vec::new(),
            capacity,
        }
    }

    /// Appends as much of `data` as fits and returns how much that was.
    #[inline]
    pub fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.room());
        let len = self.bytes.len();
        if self.bytes.capacity() < len + n {
            let grown = (2 * self.bytes.capacity()).max(len + n).min(self.capacity);
            self.bytes.reserve_exact(grown - len);
        }
        self.bytes.extend_from_slice(&data[..n]);
        n
    }

    /// Bytes that can still be pushed.
    #[inline]
    pub fn room(&self) -> usize {
        self.capacity - self.bytes.len()
    }

    /// Bytes waiting.
    #[inline]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True when no bytes are waiting.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The waiting bytes.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    /// Forgets the first `n` waiting bytes (after they were emitted).
    #[inline]
    pub fn consume(&mut self, n: usize) {
        self.bytes.drain(..n.min(self.bytes.len()));
        if self.bytes.is_empty() {
            self.bytes.trim_capacity();
        }
    }

    /// Bytes of memory the buffer holds now (at least [`InjectBuffer::len`]).
    #[inline]
    pub fn allocated(&self) -> usize {
        self.bytes.capacity()
    }
}

thread_local! {
    /// The reason of the `Denied` entry a [`Context`] is logging on this thread right now.
    static LOGGING_DENIAL: Cell<Option<DenyReason>> = const { Cell::new(None) };
    /// Why the audited `Request` entry a [`Context`] is logging on this thread right now would
    /// have been denied.
    static LOGGING_AUDIT: Cell<Option<DenyReason>> = const { Cell::new(None) };
}

/// Why the `Denied` entry being written was denied, when a [`Context`] writes it after a
/// denying [`Context::check`]: for an [`AccessLog`] to show as the entry's `reason`. It is set
/// only for the duration of the [`AccessLog::log`] call, on the thread making it, so it reaches
/// the log through any wrapper that forwards the entry, and [`LogEntry`] stays as it is for
/// everyone who builds one.
#[inline]
pub fn logging_denial() -> Option<DenyReason> {
    LOGGING_DENIAL.with(Cell::get)
}

/// When the `Request` entry being written is about a request an audit-mode policy let through
/// (see [`Verdict::audited`]): why it would have been denied. Set, like [`logging_denial`], only
/// for the duration of the [`AccessLog::log`] call a [`Context`] makes after an audited check.
#[inline]
pub fn logging_audit() -> Option<DenyReason> {
    LOGGING_AUDIT.with(Cell::get)
}

/// Runs `log` with [`logging_audit`] saying `reason`, then restores what it said: for an
/// [`AccessLog`] that writes an entry of its own for each of several checks of one request (the
/// two guarded ends of a connection), so that each entry is marked by its own check.
#[inline]
pub fn logging_audit_as<R>(reason: Option<DenyReason>, log: impl FnOnce() -> R) -> R {
    let before = LOGGING_AUDIT.with(|current| current.replace(reason));
    let result = log();
    LOGGING_AUDIT.with(|current| current.set(before));
    result
}

/// The per-call handle a parser gets: metadata, policy, injection and logging.
///
/// It remembers why its last [`Context::check`] denied, and the next `Denied` entry the parser
/// writes carries that reason (`deny-rule` or `no-allow`, see [`logging_denial`]); parsers pass
/// the verdict's `policy_name` and nothing more. A `Denied` entry without a denying check
/// before it (an unknown prepared statement, a malformed request) has no reason. Likewise, the
/// next `Request` entry after one or more audited checks is marked as audited (see
/// [`logging_audit`]).
pub struct Context<'c> {
    meta: &'c ConnectionMeta,
    proto: &'c str,
    policy: &'c dyn RequestPolicy,
    log: &'c dyn AccessLog,
    inject: &'c mut [InjectBuffer; 2],
    denial: Cell<Option<DenyReason>>,
    audit: Cell<Option<DenyReason>>,
    /// The parser said it has nothing to inject where its answer ends the input at hand.
    nothing_at_end: bool,
}

impl<'c> Context<'c> {
    /// Assembles a context; called by the datapath for every parser call.
    #[inline]
    pub fn new(
        meta: &'c ConnectionMeta,
        proto: &'c str,
        policy: &'c dyn RequestPolicy,
        log: &'c dyn AccessLog,
        inject: &'c mut [InjectBuffer; 2],
    ) -> Self {
        Context {
            meta,
            proto,
            policy,
            log,
            inject,
            denial: Cell::new(None),
            audit: Cell::new(None),
            nothing_at_end: false,
        }
    }

    /// Says that if this call's `Pass` or `Drop` takes the last byte at hand, the parser has
    /// nothing to inject after it: the datapath then does not call it again with no input (see
    /// [`crate::Op`]), and calls it next when bytes arrive, the stream ends, or the other flow
    /// moves while this one holds input. Without it, that call is made.
    #[inline]
    pub fn nothing_to_inject_at_end(&mut self) {
        self.nothing_at_end = true;
    }

    /// Whether the parser said [`Context::nothing_to_inject_at_end`] during this call; read by
    /// the datapath after the call.
    #[inline]
    pub fn said_nothing_at_end(&self) -> bool {
        self.nothing_at_end
    }

    /// The connection's metadata.
    #[inline]
    pub fn meta(&self) -> &'c ConnectionMeta {
        self.meta
    }

    /// Checks a request against the policy in force. `R` is the type the protocol's rule compiler
    /// produced; `matches` says whether the request satisfies one such rule set. A rule set of
    /// another type never matches, so a mix-up fails closed.
    #[inline]
    pub fn check<R: Any>(&self, matches: impl FnMut(&R) -> bool) -> Verdict<'c> {
        let verdict = self.policy.check(&mut typed(matches));
        self.denial.set(DenyReason::of(&verdict));
        if verdict.audited && self.audit.get().is_none() {
            self.audit.set(DenyReason::of_audited(&verdict));
        }
        verdict
    }

    /// Makes the next `Request` entry's audit mark that of `verdict` (none for `None`: a part
    /// not checked), instead of the mark of the checks since the last one: for a parser that
    /// decides every part of a request (the statements of a batch) before logging each, so that
    /// each part's entry is marked by its own verdict.
    #[inline]
    pub fn mark_next_request(&self, verdict: Option<&Verdict<'_>>) {
        self.audit.set(verdict.and_then(DenyReason::of_audited));
    }

    /// Places bytes in `flow`'s inject buffer and returns how many fit. Bytes for the flow being
    /// parsed must be emitted with [`crate::Op::Inject`]; bytes for the other flow are emitted by
    /// the datapath at that flow's next frame boundary, at once if it is at one.
    #[inline]
    pub fn inject(&mut self, flow: Flow, bytes: &[u8]) -> usize {
        self.inject[flow.index()].push(bytes)
    }

    /// Room left in `flow`'s inject buffer.
    #[inline]
    pub fn inject_room(&self, flow: Flow) -> usize {
        self.inject[flow.index()].room()
    }

    /// Writes an access-log entry about this connection. While a `Denied` entry after a
    /// denying [`Context::check`] is written, [`logging_denial`] says why; while a `Request`
    /// entry after an audited check is written, [`logging_audit`] does.
    #[inline]
    pub fn log(&self, entry_type: EntryType, policy_name: &str, fields: &[Field<'_>]) {
        let reason = self
            .denial
            .take()
            .filter(|_| entry_type == EntryType::Denied);
        if reason.is_some() {
            LOGGING_DENIAL.with(|current| current.set(reason));
        }
        let audit = match entry_type {
            EntryType::Request => self.audit.take(),
            _ => None,
        };
        if audit.is_some() {
            LOGGING_AUDIT.with(|current| current.set(audit));
        }
        self.log.log(&LogEntry {
            entry_type,
            meta: self.meta,
            policy_name,
            proto: Some(self.proto),
            fields,
        });
        if reason.is_some() {
            LOGGING_DENIAL.with(|current| current.set(None));
        }
        if audit.is_some() {
            LOGGING_AUDIT.with(|current| current.set(None));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::KEPT_CAPACITY;

    /// A policy that denies every request in the name of its policy (empty: nothing allows).
    struct Denying(&'static str);

    impl RequestPolicy for Denying {
        fn check(&self, _: &mut dyn FnMut(&(dyn Any + Send + Sync)) -> bool) -> Verdict<'_> {
            Verdict {
                allowed: false,
                policy_name: self.0,
                audited: false,
            }
        }
    }

    /// Lets every request through in audit mode, as if `.0` (empty: nothing) denied it.
    struct Auditing(&'static str);

    impl RequestPolicy for Auditing {
        fn check(&self, _: &mut dyn FnMut(&(dyn Any + Send + Sync)) -> bool) -> Verdict<'_> {
            Verdict {
                allowed: true,
                policy_name: self.0,
                audited: true,
            }
        }
    }

    /// Keeps `<type> <policy> <reason>` of each entry.
    #[derive(Default)]
    struct Reasons(Mutex<Vec<String>>);

    impl AccessLog for Reasons {
        fn log(&self, entry: &LogEntry<'_>) {
            let reason = logging_denial().map_or("-", DenyReason::as_str);
            let audit = logging_audit().map_or("-", DenyReason::as_str);
            let line = format!(
                "{} {} {reason} {audit}",
                entry.entry_type.as_str(),
                entry.policy_name
            );
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    }

    fn meta() -> ConnectionMeta {
        let addr = "127.0.0.1:1".parse().unwrap();
        ConnectionMeta {
            id: 1,
            listener: "l".into(),
            endpoint: "e".into(),
            direction: Direction::Ingress,
            source: addr,
            destination: addr,
            source_identity: 256,
            destination_identity: 257,
            source_labels: Arc::from(Vec::new()),
            destination_labels: Arc::from(Vec::new()),
        }
    }

    fn logged(policy: &dyn RequestPolicy, run: impl Fn(&Context<'_>)) -> Vec<String> {
        let (meta, log) = (meta(), Reasons::default());
        let mut inject = [InjectBuffer::new(0), InjectBuffer::new(0)];
        let ctx = Context::new(&meta, "p", policy, &log, &mut inject);
        run(&ctx);
        let lines = log.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        lines
    }

    #[test]
    fn an_inject_buffer_takes_memory_when_used_and_gives_a_burst_back() {
        let mut buffer = InjectBuffer::new(16 * 1024);
        assert_eq!(buffer.allocated(), 0);
        assert_eq!(buffer.push(b"DENIED"), 6);
        assert!(buffer.allocated() >= 6);
        buffer.consume(6);
        let small = buffer.allocated();
        assert!(small > 0, "a small buffer is kept for the next denial");
        let burst = vec![b'x'; 20 * 1024];
        assert_eq!(buffer.push(&burst), 16 * 1024, "bounded by its capacity");
        assert_eq!(buffer.allocated(), 16 * 1024);
        assert_eq!(buffer.room(), 0);
        buffer.consume(10 * 1024);
        assert_eq!(buffer.allocated(), 16 * 1024, "still holding bytes");
        buffer.consume(6 * 1024);
        assert!(buffer.allocated() <= KEPT_CAPACITY);
    }

    #[test]
    fn denied_entries_say_why_without_the_parser_saying_it() {
        let denied = |ctx: &Context<'_>| {
            let verdict = ctx.check::<()>(|_| true);
            ctx.log(EntryType::Denied, verdict.policy_name, &[]);
        };
        assert_eq!(logged(&Denying(""), denied), ["Denied  no-allow -"]);
        assert_eq!(
            logged(&Denying("lockdown"), denied),
            ["Denied lockdown deny-rule -"]
        );
        let unchecked = |ctx: &Context<'_>| ctx.log(EntryType::Denied, "", &[]);
        assert_eq!(logged(&Denying(""), unchecked), ["Denied  - -"]);
        let twice = |ctx: &Context<'_>| {
            denied(ctx);
            ctx.log(EntryType::Denied, "", &[]);
        };
        assert_eq!(
            logged(&Denying(""), twice),
            ["Denied  no-allow -", "Denied  - -"],
            "a reason is used once"
        );
        assert_eq!(logging_denial(), None, "and only while logging");
    }

    #[test]
    fn audited_requests_are_marked_on_their_request_entry_only() {
        let allowed = |ctx: &Context<'_>| {
            let verdict = ctx.check::<()>(|_| false);
            assert!(verdict.allowed, "an audited request proceeds");
            ctx.log(EntryType::Response, "", &[]);
            ctx.log(EntryType::Request, verdict.policy_name, &[]);
            ctx.log(EntryType::Request, verdict.policy_name, &[]);
        };
        assert_eq!(
            logged(&Auditing(""), allowed),
            ["Response  - -", "Request  - no-allow", "Request  - -"],
            "the reason goes to the next request entry, once"
        );
        assert_eq!(
            logged(&Auditing("lockdown"), allowed)[1],
            "Request lockdown - deny-rule"
        );
        assert_eq!(logging_audit(), None, "and only while logging");
    }

    #[test]
    fn each_part_of_a_request_can_be_marked_by_its_own_verdict() {
        let audited = Verdict {
            allowed: true,
            policy_name: "",
            audited: true,
        };
        let allowed = Verdict {
            audited: false,
            policy_name: "p",
            ..audited
        };
        let batch = |ctx: &Context<'_>| {
            ctx.check::<()>(|_| false);
            for verdict in [Some(&allowed), Some(&audited), None] {
                ctx.mark_next_request(verdict);
                ctx.log(EntryType::Request, "", &[]);
            }
        };
        assert_eq!(
            logged(&Auditing(""), batch),
            ["Request  - -", "Request  - no-allow", "Request  - -"]
        );
    }
}
