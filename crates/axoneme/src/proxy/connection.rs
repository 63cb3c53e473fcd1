//! One proxied connection, from accept to close: the L3/L4 decision, the upstream connection,
//! and forwarding, either as plain bytes or through the datapath engine and a parser.
//!
//! One task serves both directions of a connection, so its parser needs no locks. Reads stop
//! while too much output is waiting (backpressure); each side's end of stream is passed on as a
//! half-close once what precedes it is written. A connection ends early on an error, when its
//! listener's drain time is over, or when a peer keeps it waiting longer than a timeout allows
//! ([`Timeouts`]).
//!
//! A parsed connection reads into a buffer only once a socket has bytes for it, and gives the
//! buffer back while it waits ([`crate::proxy::read_buffers`]); with the engine's and the parser's
//! buffers giving back what a large request made them take, an idle connection holds little
//! whatever it carried before.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axoneme_datapath::{Connection, ConnectionError, Env, Limits};
use axoneme_policy::Snapshot;
use axoneme_sdk::{AccessLog, ConnectionMeta, Direction, EntryType, Field, Flow, LogEntry};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::TimeoutsConfig;
use crate::control::state::State;
use crate::proxy::decision::{decide, Decision, Outcome};
use crate::proxy::guards::RequestChecks;
use crate::proxy::outbox::{OutBuf, Outbox};
use crate::proxy::overload::{Overload, Registered};
use crate::proxy::read_buffers::ReadBuffer;
use crate::proxy::sockets::{self, UpstreamOptions};
use crate::telemetry::metrics::{Metrics, ProtocolMetrics, SocketError, Timeout};
use crate::telemetry::throttle::{throttled_warn, Throttle};

/// Output waiting toward one side above which no more input is read.
const HIGH_WATER: usize = 256 * 1024;

/// What every connection of an agent shares.
pub(crate) struct Shared {
    pub state: Arc<State>,
    pub log: Arc<dyn AccessLog>,
    pub metrics: Arc<Metrics>,
    pub overload: Arc<Overload>,
    /// Limits the log lines of events that can come in floods.
    pub throttle: Arc<Throttle>,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub next_id: AtomicU64,
}

/// How long a connection may wait on its peers; see [`TimeoutsConfig`] for what each bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub client_idle: Duration,
    pub request_progress: Duration,
    pub upstream_response: Duration,
    pub upstream_connect: Duration,
}

impl From<&TimeoutsConfig> for Timeouts {
    fn from(config: &TimeoutsConfig) -> Self {
        Timeouts {
            client_idle: Duration::from_secs(config.client_idle),
            request_progress: Duration::from_secs(config.request_progress),
            upstream_response: Duration::from_secs(config.upstream_response),
            upstream_connect: Duration::from_secs(config.upstream_connect),
        }
    }
}

/// What a listener tells its connections. Where each connection goes is decided per connection
/// by the listener and handed to [`serve`], so a listener may send every connection to one
/// upstream or each to its own original destination.
#[derive(Debug)]
pub(crate) struct Route {
    pub listener: Arc<str>,
    pub guards: Guards,
    pub direction: Direction,
    pub l7proto: Option<String>,
    pub upstream: UpstreamOptions,
}

/// The endpoint whose policy a listener's connections fall under.
#[derive(Debug)]
pub(crate) enum Guards {
    /// Always this one.
    Endpoint(Arc<str>),
    /// The one owning the connection's local end: the destination for ingress, the client for
    /// egress (a transparent listener guarding many endpoints).
    ByAddress,
}

/// The two ends of one proxied connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ends {
    pub client: SocketAddr,
    pub upstream: SocketAddr,
}

/// Serves one accepted connection until both sides are done, an error closes it, or `closing`
/// says its drain time is over. What it is handed by reference stays in the caller's task
/// instead of being stored twice in this one (as an argument and as a local).
pub(crate) async fn serve(
    client: TcpStream,
    ends: Ends,
    route: &Route,
    shared: &Shared,
    closing: &mut watch::Receiver<bool>,
) {
    let metrics = &shared.metrics;
    metrics.connections_total.fetch_add(1, Ordering::Relaxed);
    let snapshot = shared.state.snapshot();
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let registry = shared.state.registry();
    let decision = decide(&snapshot, registry, route, ends, id);
    if let Outcome::Refuse {
        policy_name,
        reason,
        ..
    } = &decision.outcome
    {
        refused(shared, route, decision.refusing_meta(), policy_name, reason);
        return;
    }
    let Some(upstream) = connect_upstream(id, route, ends, shared).await else {
        return;
    };
    metrics.connections_active.fetch_add(1, Ordering::Relaxed);
    let _ = client.set_nodelay(true);
    let other_meta = decision.other_meta().cloned();
    // What the connection lives on is moved out; the rest of the decision is freed now rather
    // than held for the connection's life.
    let Decision {
        meta,
        outcome,
        ends: decided,
    } = decision;
    drop(decided);
    let result = match outcome {
        Outcome::Parse(protocol) => {
            let parser = protocol.new_parser(&meta);
            let protocol_metrics = metrics.protocol(protocol.name());
            // One copy of the metadata, shared by the engine and the checks.
            let meta = Arc::new(meta);
            let checks = RequestChecks::new(
                Arc::clone(&meta),
                other_meta,
                &snapshot,
                shared.log.as_ref(),
                protocol_metrics,
            );
            let engine = Connection::new(parser, meta, protocol.name(), shared.limits);
            let mut connection = ParsedConnection::new(engine, checks, shared, &snapshot);
            // A live connection follows policy through `shared.state`; the snapshot it started
            // under is not kept.
            drop(snapshot);
            let mut io = Sockets::new(client, upstream);
            let mut clock = Clock::new(&shared.timeouts, Instant::now());
            let load = shared.overload.register(id);
            connection.run(&mut io, &mut clock, &load, closing).await
        }
        _ => {
            // A plain connection ends when a policy change would no longer let it through as
            // plain bytes (refused, or its port now has L7 rules): it cannot start parsing
            // mid-stream, and the client reconnects under the new policy.
            drop(snapshot);
            let port = ends.upstream.port();
            let still_plain = || {
                let snapshot = shared.state.snapshot();
                match decide(&snapshot, registry, route, ends, id).outcome {
                    Outcome::Forward => None,
                    Outcome::Refuse { reason, .. } => Some(reason),
                    Outcome::Parse(protocol) => {
                        Some(format!("port {port} now has {} rules", protocol.name()))
                    }
                }
            };
            // On the heap: held in place, it would make the task of every parsed connection
            // as large as a plain one's.
            let plain = forward_plain(client, upstream, shared, still_plain, closing);
            let result = Box::pin(plain).await;
            if let Err(Closed::PolicyChanged(reason)) = &result {
                let status = format!("closed by a policy change: {reason}");
                shared.log.log(&LogEntry {
                    entry_type: EntryType::Denied,
                    meta: &meta,
                    policy_name: "",
                    proto: None,
                    fields: &[Field::text("status", &status)],
                });
            }
            result
        }
    };
    metrics.connections_active.fetch_sub(1, Ordering::Relaxed);
    match result {
        Ok(()) => tracing::debug!(conn = id, "connection closed"),
        Err(Closed::Drained) => tracing::info!(
            conn = id,
            "connection closed: its listener's drain time is over"
        ),
        Err(Closed::Io(error)) => {
            tracing::debug!(conn = id, %error, "connection ended by a socket error")
        }
        Err(Closed::PolicyChanged(reason)) => {
            tracing::info!(conn = id, reason, "connection closed by a policy change")
        }
        Err(Closed::TimedOut(kind)) => timed_out(shared, route, ends, id, kind),
        Err(Closed::Overloaded) => tracing::debug!(
            conn = id,
            "connection closed: the agent buffered more than limits.bufferedBytes"
        ),
        Err(Closed::Engine(error)) => {
            match &error {
                ConnectionError::Panic(_) => metrics.parser_panics.fetch_add(1, Ordering::Relaxed),
                ConnectionError::Parse(e) => {
                    metrics.parser_error(e.code.as_str());
                    0
                }
                ConnectionError::Contract(_) => {
                    metrics.parser_error("contract_violation");
                    0
                }
                ConnectionError::BufferLimit { .. } => {
                    metrics.parser_error("buffer_limit");
                    0
                }
                ConnectionError::Closed => 0,
            };
            throttled_warn!(
                shared.throttle,
                "datapath",
                conn = id,
                listener = %route.listener,
                client = %ends.client,
                %error,
                "connection closed by the datapath"
            );
        }
    }
}

/// Counts and logs a connection refused at L3/L4, under the guarded end in `meta`.
fn refused(shared: &Shared, route: &Route, meta: &ConnectionMeta, policy_name: &str, reason: &str) {
    shared
        .metrics
        .connections_refused
        .fetch_add(1, Ordering::Relaxed);
    shared.log.log(&LogEntry {
        entry_type: EntryType::Denied,
        meta,
        policy_name,
        proto: route.l7proto.as_deref(),
        fields: &[Field::text("status", reason)],
    });
    tracing::debug!(conn = meta.id, client = %meta.source, reason, "connection refused");
}

/// Counts and logs a connection closed for the timeout `kind`.
fn timed_out(shared: &Shared, route: &Route, ends: Ends, id: u64, kind: Timeout) {
    shared.metrics.timed_out(kind);
    throttled_warn!(
        shared.throttle,
        kind.name(),
        conn = id,
        listener = %route.listener,
        client = %ends.client,
        upstream = %ends.upstream,
        kind = kind.name(),
        "connection closed: timeout"
    );
}

/// Connects to the upstream; on failure the client is closed (by dropping it) and it is logged.
async fn connect_upstream(
    id: u64,
    route: &Route,
    ends: Ends,
    shared: &Shared,
) -> Option<TcpStream> {
    let upstream = ends.upstream;
    let connect = sockets::connect(upstream, ends.client, route.upstream);
    match tokio::time::timeout(shared.timeouts.upstream_connect, connect).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Some(stream)
        }
        Ok(Err(error)) => {
            shared.metrics.socket_error(SocketError::UpstreamConnect);
            throttled_warn!(
                shared.throttle,
                SocketError::UpstreamConnect.name(),
                conn = id,
                listener = %route.listener,
                %upstream,
                %error,
                "upstream unreachable; closing client"
            );
            None
        }
        Err(_) => {
            timed_out(shared, route, ends, id, Timeout::UpstreamConnect);
            None
        }
    }
}

/// Why a connection ended early.
enum Closed {
    Io(std::io::Error),
    Engine(ConnectionError),
    Drained,
    /// A plain connection the policy in force no longer lets through as plain bytes.
    PolicyChanged(String),
    /// A peer kept the connection waiting longer than this timeout allows.
    TimedOut(Timeout),
    /// The agent buffered more than its budget and this connection held the most.
    Overloaded,
}

impl From<std::io::Error> for Closed {
    fn from(error: std::io::Error) -> Self {
        Closed::Io(error)
    }
}

/// Copies bytes both ways, passing on half-closes; for connections that are not parsed. After
/// every policy change `still_plain` says why the connection may no longer continue, if so.
/// A connection on which no byte arrives from either side for the client idle timeout is
/// closed; its timer is moved on only when it fires, to the last read's time plus the timeout.
async fn forward_plain(
    client: TcpStream,
    upstream: TcpStream,
    shared: &Shared,
    still_plain: impl Fn() -> Option<String>,
    closing: &mut watch::Receiver<bool>,
) -> Result<(), Closed> {
    let mut revisions = shared.state.subscribe();
    let started = Instant::now();
    let last_read = AtomicU64::new(0);
    let (mut client, mut upstream) = (
        Noting::new(client, started, &last_read),
        Noting::new(upstream, started, &last_read),
    );
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    let idle = shared.timeouts.client_idle;
    let timer = tokio::time::sleep_until(started + idle);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            copied = &mut copy => {
                let (to_upstream, to_client) = copied?;
                shared.metrics.bytes_to_upstream.fetch_add(to_upstream, Ordering::Relaxed);
                shared.metrics.bytes_to_client.fetch_add(to_client, Ordering::Relaxed);
                return Ok(());
            }
            () = drained(closing) => return Err(Closed::Drained),
            Ok(()) = revisions.changed() => {
                if let Some(reason) = still_plain() {
                    return Err(Closed::PolicyChanged(reason));
                }
            }
            () = &mut timer => {
                let quiet_since = started + Duration::from_nanos(last_read.load(Ordering::Relaxed));
                if quiet_since.elapsed() >= idle {
                    return Err(Closed::TimedOut(Timeout::ClientIdle));
                }
                timer.as_mut().reset(quiet_since + idle);
            }
        }
    }
}

/// A socket of a plain connection that notes when it last delivered bytes: nanoseconds after
/// `started`, in `last_read` (shared by both sockets of the connection).
struct Noting<'a> {
    stream: TcpStream,
    started: Instant,
    last_read: &'a AtomicU64,
}

impl<'a> Noting<'a> {
    fn new(stream: TcpStream, started: Instant, last_read: &'a AtomicU64) -> Self {
        Noting {
            stream,
            started,
            last_read,
        }
    }
}

impl AsyncRead for Noting<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let at = self.started.elapsed().as_nanos();
            self.last_read
                .store(u64::try_from(at).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Noting<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Completes when the listener's drain time is over; never if the listener is gone.
async fn drained(closing: &mut watch::Receiver<bool>) {
    if closing.wait_for(|closing| *closing).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A connection forwarded through the datapath engine.
struct ParsedConnection<'s> {
    engine: Connection,
    shared: &'s Shared,
    /// The request-level policy and log of every guarded end as of `revision`; refreshed when
    /// policy changes, so that a live connection follows the new policy from its next request
    /// on.
    checks: RequestChecks<'s>,
    revision: u64,
    protocol_metrics: Option<&'s ProtocolMetrics>,
    /// When the oldest request not yet answered arrived.
    waiting_since: Option<Instant>,
}

impl<'s> ParsedConnection<'s> {
    fn new(
        engine: Connection,
        checks: RequestChecks<'s>,
        shared: &'s Shared,
        snapshot: &Snapshot,
    ) -> Self {
        let protocol_metrics = shared.metrics.protocol(engine.proto());
        ParsedConnection {
            engine,
            shared,
            checks,
            revision: snapshot.revision(),
            protocol_metrics,
            waiting_since: None,
        }
    }

    /// Hands bytes from one side to the engine.
    fn feed(
        &mut self,
        flow: Flow,
        data: &[u8],
        end_stream: bool,
        outbox: &mut Outbox,
    ) -> Result<(), Closed> {
        if self.shared.state.revision() != self.revision {
            let snapshot = self.shared.state.snapshot();
            self.checks.refresh(&snapshot);
            self.revision = snapshot.revision();
        }
        let env = Env {
            policy: &self.checks,
            log: &self.checks,
        };
        self.engine
            .on_data(flow, data, end_stream, &env, outbox)
            .map_err(Closed::Engine)
    }

    /// Counts bytes that arrived on `flow` and starts the latency clock for a request.
    fn arrived(&mut self, flow: Flow, n: usize) {
        let metrics = &self.shared.metrics;
        match flow {
            Flow::Request => {
                metrics
                    .bytes_to_upstream
                    .fetch_add(n as u64, Ordering::Relaxed);
                self.waiting_since.get_or_insert_with(Instant::now);
            }
            Flow::Reply => {
                metrics
                    .bytes_to_client
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    }

    /// Stops the latency clock when an answer reached the client.
    fn answered(&mut self) {
        if let (Some(since), Some(metrics)) = (self.waiting_since.take(), self.protocol_metrics) {
            metrics.latency.observe(since.elapsed());
        }
    }

    /// Moves bytes between the two sockets through the engine until both directions have
    /// ended, an error closes the connection, the drain time is over, a timeout of `clock`
    /// expires, or the agent sheds `load` to relieve its buffered-bytes budget. After every poll
    /// `load` is told what the connection buffers.
    ///
    /// One timer serves every timeout. It is moved only to an earlier deadline when one
    /// appears; activity that pushes deadlines later only updates `clock`, and when the timer
    /// fires early it is set to the deadline `clock` gives then. So most reads cost no timer
    /// update, and the clock is read once per poll that moved something.
    ///
    /// Everything the connection keeps lives in the caller's frame and is lent here, so that
    /// the task holds it once (an `async fn` stores what it takes by value twice: as its
    /// argument and as its local).
    async fn run(
        &mut self,
        io: &mut Sockets,
        clock: &mut Clock<'_>,
        load: &Registered,
        closing: &mut watch::Receiver<bool>,
    ) -> Result<(), Closed> {
        let drained = drained(closing);
        tokio::pin!(drained);
        let shed = load.shed();
        tokio::pin!(shed);
        let timer = tokio::time::sleep_until(clock.deadline());
        tokio::pin!(timer);
        std::future::poll_fn(|cx| {
            if drained.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(Closed::Drained));
            }
            if shed.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(Closed::Overloaded));
            }
            let mut moved = Moved::default();
            let pumped = self.pump(cx, io, &mut moved);
            load.set(self.engine.buffered_bytes() + io.outbox.len());
            if let Poll::Ready(result) = pumped {
                return Poll::Ready(result);
            }
            // While output waits, the client is not read: an unfinished request is then not
            // its sender's doing.
            let reading_client = io.outbox.has_room(HIGH_WATER);
            if moved.any() {
                let frames = Unfinished::of(&self.engine);
                clock.note(moved, frames, reading_client, Instant::now());
                let deadline = clock.deadline();
                if deadline < timer.deadline() {
                    timer.as_mut().reset(deadline);
                }
            }
            while timer.as_mut().poll(cx).is_ready() {
                let now = Instant::now();
                let frames = Unfinished::of(&self.engine);
                clock.note(Moved::default(), frames, reading_client, now);
                if let Some(kind) = clock.expired(now) {
                    return Poll::Ready(Err(Closed::TimedOut(kind)));
                }
                timer.as_mut().reset(clock.deadline());
            }
            Poll::Pending
        })
        .await
    }

    /// Does all the work the sockets allow now: writes what waits, passes on half-closes, and
    /// reads (while not too much output waits) and feeds the engine, until nothing moves; notes
    /// in `noted` what moved. Pending means every socket it waits on will wake the task.
    fn pump(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut Sockets,
        noted: &mut Moved,
    ) -> Poll<Result<(), Closed>> {
        loop {
            let Sockets {
                client,
                upstream,
                outbox,
            } = io;
            let mut moved = flush(
                cx,
                &mut upstream.stream,
                &mut outbox.to_upstream,
                client.bytes(),
            )?;
            noted.to_upstream |= moved;
            if flush(
                cx,
                &mut client.stream,
                &mut outbox.to_client,
                upstream.bytes(),
            )? {
                self.answered();
                moved = true;
            }
            // A side that has finished sending is passed on as a half-close once everything
            // before it has been written.
            if !client.reading && outbox.to_upstream.is_empty() {
                upstream.shut_down(cx)?;
            }
            if !upstream.reading && outbox.to_client.is_empty() {
                client.shut_down(cx)?;
            }
            if client.shut && upstream.shut {
                return Poll::Ready(Ok(()));
            }
            for flow in [Flow::Request, Flow::Reply] {
                if !outbox.has_room(HIGH_WATER) {
                    break;
                }
                let (side, borrowed_from_it) = match flow {
                    Flow::Request => (&mut *client, &mut outbox.to_upstream),
                    Flow::Reply => (&mut *upstream, &mut outbox.to_client),
                };
                if !side.reading {
                    continue;
                }
                // What still waits in the buffer must be copied before the read overwrites it.
                borrowed_from_it.release(side.bytes());
                let Poll::Ready(n) = side.poll_read(cx)? else {
                    continue;
                };
                match flow {
                    Flow::Request => noted.from_client = true,
                    Flow::Reply => noted.from_upstream = true,
                }
                self.arrived(flow, n);
                let read = match flow {
                    Flow::Request => client.bytes(),
                    Flow::Reply => upstream.bytes(),
                };
                self.feed(flow, &read[..n], n == 0, outbox)?;
                moved = true;
            }
            if !moved {
                // Waiting for the sockets: a read buffer none of whose bytes waits goes back.
                client.give_back(&outbox.to_upstream);
                upstream.give_back(&outbox.to_client);
                return Poll::Pending;
            }
        }
    }
}

/// What moved during one poll of a parsed connection.
#[derive(Debug, Default, Clone, Copy)]
struct Moved {
    /// Bytes or an end of stream were read from the client.
    from_client: bool,
    /// Bytes or an end of stream were read from the upstream.
    from_upstream: bool,
    /// Request bytes were written to the upstream.
    to_upstream: bool,
}

impl Moved {
    fn any(self) -> bool {
        self.from_client || self.from_upstream || self.to_upstream
    }
}

/// What the engine says of each flow's unfinished frame ([`Connection::unfinished_frame`]).
#[derive(Debug, Default, Clone, Copy)]
struct Unfinished {
    request: Option<u64>,
    reply: Option<u64>,
}

impl Unfinished {
    fn of(engine: &Connection) -> Unfinished {
        Unfinished {
            request: engine.unfinished_frame(Flow::Request),
            reply: engine.unfinished_frame(Flow::Reply),
        }
    }
}

/// The timeouts of a parsed connection and the instants they count from. Knows nothing of
/// sockets or timers: it is told what moved when, and says when the next timeout may expire
/// and which one has.
#[derive(Debug)]
struct Clock<'t> {
    /// The agent's, shared by every connection.
    timeouts: &'t Timeouts,
    /// When a byte last arrived from either side (at first, when the connection began).
    last_byte: Instant,
    /// The client's unfinished request: the engine's count of frames decided on the request
    /// flow when it was seen, and since when the request has not moved on.
    request: Option<(u64, Instant)>,
    /// Since when the upstream owes an answer: a request was forwarded, or a reply begun, and
    /// no byte came from the upstream since.
    upstream_owes: Option<Instant>,
}

impl<'t> Clock<'t> {
    fn new(timeouts: &'t Timeouts, now: Instant) -> Clock<'t> {
        Clock {
            timeouts,
            last_byte: now,
            request: None,
            upstream_owes: None,
        }
    }

    /// Takes in what `moved` at `now`, and the engine's `frames` after it. `reading_client`:
    /// the client is being read; while it is not, an unfinished request's time does not run.
    fn note(&mut self, moved: Moved, frames: Unfinished, reading_client: bool, now: Instant) {
        if moved.from_client || moved.from_upstream {
            self.last_byte = now;
        }
        self.request = match (frames.request, self.request) {
            (None, _) => None,
            (Some(frame), Some((seen, since))) if frame == seen && reading_client => {
                Some((seen, since))
            }
            (Some(frame), _) => Some((frame, now)),
        };
        if moved.from_upstream {
            self.upstream_owes = frames.reply.map(|_| now);
        }
        if moved.to_upstream {
            self.upstream_owes.get_or_insert(now);
        }
    }

    /// The earliest instant at which a timeout may expire.
    fn deadline(&self) -> Instant {
        let idle = self.last_byte + self.timeouts.client_idle;
        let request = self
            .request
            .map(|(_, since)| since + self.timeouts.request_progress);
        let upstream = self
            .upstream_owes
            .map(|since| since + self.timeouts.upstream_response);
        [request, upstream]
            .into_iter()
            .flatten()
            .fold(idle, Instant::min)
    }

    /// The timeout that has expired at `now`, if any.
    fn expired(&self, now: Instant) -> Option<Timeout> {
        let over = |since: Instant, timeout: Duration| now.duration_since(since) >= timeout;
        if let Some((_, since)) = self.request {
            if over(since, self.timeouts.request_progress) {
                return Some(Timeout::RequestProgress);
            }
        }
        if let Some(since) = self.upstream_owes {
            if over(since, self.timeouts.upstream_response) {
                return Some(Timeout::UpstreamResponse);
            }
        }
        over(self.last_byte, self.timeouts.client_idle).then_some(Timeout::ClientIdle)
    }
}

/// The two sockets of a parsed connection and the output waiting for them.
struct Sockets {
    client: Side,
    upstream: Side,
    outbox: Outbox,
}

impl Sockets {
    fn new(client: TcpStream, upstream: TcpStream) -> Sockets {
        Sockets {
            client: Side::new(client),
            upstream: Side::new(upstream),
            outbox: Outbox::new(),
        }
    }
}

/// One socket of a parsed connection.
struct Side {
    stream: TcpStream,
    /// Where bytes from this socket are read into: taken once the socket has bytes to read,
    /// given back while the connection waits and none of them waits to be written.
    buffer: Option<ReadBuffer>,
    /// The peer may still send: no end of stream was read yet.
    reading: bool,
    /// Our sending side toward this peer is closed.
    shut: bool,
}

impl Side {
    fn new(stream: TcpStream) -> Side {
        Side {
            stream,
            buffer: None,
            reading: true,
            shut: false,
        }
    }

    /// The read buffer, empty when the side holds none.
    fn bytes(&self) -> &[u8] {
        self.buffer.as_deref().unwrap_or_default()
    }

    /// Reads what the socket has into the read buffer, which is taken only once the socket is
    /// readable if the side holds none: the byte count (0 at end of stream, after which it is
    /// not to be called again), or Pending with the task woken when there is more.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        ready!(self.stream.poll_read_ready(cx))?;
        let buffer = self.buffer.get_or_insert_with(ReadBuffer::take);
        // Read as AsyncRead does, not with try_read: a read shorter than the buffer clears the
        // readiness, so the next poll waits instead of making a read that finds nothing.
        let mut buffer = ReadBuf::new(buffer);
        ready!(Pin::new(&mut self.stream).poll_read(cx, &mut buffer))?;
        let n = buffer.filled().len();
        self.reading = n > 0;
        Poll::Ready(Ok(n))
    }

    /// Gives the read buffer back unless `out` still waits to write a run of it.
    fn give_back(&mut self, out: &OutBuf) {
        if !out.borrows() {
            self.buffer = None;
        }
    }

    /// Closes our sending side toward this peer, once.
    fn shut_down(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        if !self.shut {
            // A TCP socket's shutdown completes at once; Pending cannot happen.
            if let Poll::Ready(result) = Pin::new(&mut self.stream).poll_shutdown(cx) {
                result?;
                self.shut = true;
            }
        }
        Ok(())
    }
}

/// Writes as much of `out` (whose borrowed runs are in `source`) to `stream` as it takes now;
/// whether anything was written. A socket that cannot take more wakes the task when it can.
fn flush(
    cx: &mut Context<'_>,
    stream: &mut TcpStream,
    out: &mut OutBuf,
    source: &[u8],
) -> std::io::Result<bool> {
    let mut wrote = false;
    while !out.is_empty() {
        match Pin::new(&mut *stream).poll_write(cx, out.pending(source)) {
            Poll::Ready(written) => {
                out.advance(nonzero(written?)?);
                wrote = true;
            }
            Poll::Pending => break,
        }
    }
    Ok(wrote)
}

/// A write that accepted no bytes means the socket can take no more.
fn nonzero(written: usize) -> std::io::Result<usize> {
    match written {
        0 => Err(std::io::ErrorKind::WriteZero.into()),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    const TIMEOUTS: Timeouts = Timeouts {
        client_idle: Duration::from_secs(10),
        request_progress: Duration::from_secs(3),
        upstream_response: Duration::from_secs(5),
        upstream_connect: SECOND,
    };

    fn clock(start: Instant) -> Clock<'static> {
        Clock::new(&TIMEOUTS, start)
    }

    const FROM_CLIENT: Moved = Moved {
        from_client: true,
        from_upstream: false,
        to_upstream: false,
    };

    fn request_at(frame: u64) -> Unfinished {
        Unfinished {
            request: Some(frame),
            reply: None,
        }
    }

    #[test]
    fn idle_counts_from_the_last_byte_either_way() {
        let t0 = Instant::now();
        let mut clock = clock(t0);
        assert_eq!(clock.deadline(), t0 + 10 * SECOND);
        let reply = Moved {
            from_upstream: true,
            ..Moved::default()
        };
        clock.note(reply, Unfinished::default(), true, t0 + 4 * SECOND);
        assert_eq!(clock.deadline(), t0 + 14 * SECOND);
        assert_eq!(clock.expired(t0 + 13 * SECOND), None);
        assert_eq!(clock.expired(t0 + 14 * SECOND), Some(Timeout::ClientIdle));
    }

    #[test]
    fn a_request_runs_from_its_first_byte_until_another_is_decided() {
        let t0 = Instant::now();
        let mut clock = clock(t0);
        clock.note(FROM_CLIENT, request_at(0), true, t0);
        // More bytes of the same request do not restart its time.
        clock.note(FROM_CLIENT, request_at(0), true, t0 + 2 * SECOND);
        assert_eq!(clock.deadline(), t0 + 3 * SECOND);
        assert_eq!(
            clock.expired(t0 + 3 * SECOND),
            Some(Timeout::RequestProgress)
        );
        // A request decided meanwhile (the count moved on) starts the time afresh.
        clock.note(FROM_CLIENT, request_at(1), true, t0 + 2 * SECOND);
        assert_eq!(clock.expired(t0 + 3 * SECOND), None);
        assert_eq!(clock.deadline(), t0 + 5 * SECOND);
        // At a frame boundary nothing runs but the idle time.
        clock.note(FROM_CLIENT, Unfinished::default(), true, t0 + 4 * SECOND);
        assert_eq!(clock.deadline(), t0 + 14 * SECOND);
    }

    #[test]
    fn a_request_does_not_run_while_the_client_is_not_read() {
        let t0 = Instant::now();
        let mut clock = clock(t0);
        clock.note(FROM_CLIENT, request_at(0), true, t0);
        // Output waits: the client is not read, and the request's time starts over at each
        // look until reading resumes.
        clock.note(Moved::default(), request_at(0), false, t0 + 2 * SECOND);
        clock.note(Moved::default(), request_at(0), false, t0 + 4 * SECOND);
        clock.note(Moved::default(), request_at(0), true, t0 + 5 * SECOND);
        assert_eq!(clock.expired(t0 + 6 * SECOND), None);
        assert_eq!(clock.deadline(), t0 + 7 * SECOND);
    }

    #[test]
    fn the_upstream_owes_from_a_forwarded_request_until_it_sends_a_byte() {
        let t0 = Instant::now();
        let mut clock = clock(t0);
        let forwarded = Moved {
            to_upstream: true,
            ..Moved::default()
        };
        clock.note(forwarded, Unfinished::default(), true, t0);
        clock.note(forwarded, Unfinished::default(), true, t0 + SECOND);
        assert_eq!(clock.deadline(), t0 + 5 * SECOND);
        assert_eq!(
            clock.expired(t0 + 5 * SECOND),
            Some(Timeout::UpstreamResponse)
        );
        let replied = Moved {
            from_upstream: true,
            ..Moved::default()
        };
        // A reply begun but not whole: the upstream still owes the rest.
        let reply_begun = Unfinished {
            request: None,
            reply: Some(0),
        };
        clock.note(replied, reply_begun, true, t0 + 2 * SECOND);
        assert_eq!(clock.deadline(), t0 + 7 * SECOND);
        clock.note(replied, Unfinished::default(), true, t0 + 3 * SECOND);
        assert_eq!(clock.upstream_owes, None);
        assert_eq!(clock.expired(t0 + 12 * SECOND), None);
        assert_eq!(clock.deadline(), t0 + 13 * SECOND);
    }
}
