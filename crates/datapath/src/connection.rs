//! The per-connection engine: two flow state machines and the parser they share.
//!
//! It owns pass and drop countdowns, the bytes a parser asked to keep (MORE), the inject buffers,
//! and the loop that calls the parser and applies its operations. A flow whose parser answered
//! NOP while input was at hand holds that input: it is handed to the parser again when more
//! arrives or when the other flow has moved (a request may wait for a reply). The kept bytes
//! and the inject buffers give back what a large frame made them take once it is done
//! ([`axoneme_sdk::TrimCapacity`]). It never touches a socket or a clock: callers hand it bytes
//! and receive output through [`Output`].

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use axoneme_sdk::{
    AccessLog, ConnectionMeta, Context, EntryType, Field, Flow, InjectBuffer, Input, LogEntry, Op,
    Parser, RequestPolicy, TrimCapacity,
};

use crate::error::{ConnectionError, ContractViolation};

/// Operations a parser may answer in a row without consuming any input (INJECT only) before the
/// engine gives up on it. Bounds the work of one call whatever the parser does.
pub const MAX_OPS_WITHOUT_PROGRESS: usize = 256;

/// Per-connection memory bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Capacity of each flow's inject buffer.
    pub inject_capacity: usize,
    /// Most bytes one flow may keep buffered for its parser (a frame larger than this that the
    /// parser wants whole closes the connection).
    pub max_buffered: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            inject_capacity: 16 * 1024,
            max_buffered: 1024 * 1024 + 4096,
        }
    }
}

/// What the engine needs from its caller for one call: the policy in force for this connection
/// and the access log.
#[derive(Clone, Copy)]
pub struct Env<'e> {
    /// The request-level policy for this connection, as of now.
    pub policy: &'e dyn RequestPolicy,
    /// Where access-log entries go.
    pub log: &'e dyn AccessLog,
}

/// Receives the bytes the engine emits, in order, per flow, saying of each run where it comes
/// from: the input of the current [`Connection::on_data`] call, or bytes the engine holds itself.
pub trait Output {
    /// Appends `bytes`, held by the engine (kept input, injected replies) and gone after the
    /// call, to what is to be sent on `flow` (toward the upstream for [`Flow::Request`], toward
    /// the client for [`Flow::Reply`]).
    fn emit(&mut self, flow: Flow, bytes: &[u8]);

    /// Appends `bytes`, which are `data[at..at + bytes.len()]` of the current `on_data` call's
    /// input (that call's flow is `flow`), to what is to be sent on `flow`. A caller that keeps
    /// that input where it is until the bytes are written may send them from there instead of
    /// copying them; by default they are treated as [`Output::emit`] treats bytes.
    fn pass_input(&mut self, flow: Flow, at: usize, bytes: &[u8]) {
        let _ = at;
        self.emit(flow, bytes);
    }
}

/// One flow's state between calls.
#[derive(Debug, Default)]
struct FlowState {
    /// Bytes of the current frame still to be forwarded as they arrive.
    pass: usize,
    /// Bytes of the current frame still to be discarded as they arrive.
    drop: usize,
    /// Total bytes `kept` must reach before the parser is called again (0: any new byte).
    need: usize,
    /// Unconsumed input the parser asked to keep, starting at a frame boundary.
    kept: Vec<u8>,
    /// The parser answered NOP with `kept` non-empty: it waits for the other flow.
    held: bool,
    /// Frames decided (passed or dropped) so far.
    decided: u64,
}

/// How a run of the parser over some input ended.
enum Stop {
    /// Keep the unconsumed input; call again when `need` bytes are buffered.
    Keep { consumed: usize, need: usize },
    /// A pass or drop reached past the input; everything at hand was consumed.
    Countdown,
}

/// A proxied connection as the datapath sees it: a parser and the state of both flows.
pub struct Connection {
    parser: Box<dyn Parser>,
    /// Shared with whoever else needs the connection's metadata for as long as it lives (the
    /// proxy's request checks), so that a connection holds one copy.
    meta: Arc<ConnectionMeta>,
    proto: &'static str,
    flows: [FlowState; 2],
    inject: [InjectBuffer; 2],
    limits: Limits,
    closed: bool,
}

impl Connection {
    /// A connection parsed by `parser` of protocol `proto`, described by `meta` (the metadata
    /// itself or a shared copy).
    pub fn new(
        parser: Box<dyn Parser>,
        meta: impl Into<Arc<ConnectionMeta>>,
        proto: &'static str,
        limits: Limits,
    ) -> Self {
        Connection {
            parser,
            meta: meta.into(),
            proto,
            flows: Default::default(),
            inject: [
                InjectBuffer::new(limits.inject_capacity),
                InjectBuffer::new(limits.inject_capacity),
            ],
            limits,
            closed: false,
        }
    }

    /// The connection's metadata.
    pub fn meta(&self) -> &ConnectionMeta {
        &self.meta
    }

    /// The name of the protocol parsing this connection.
    pub fn proto(&self) -> &'static str {
        self.proto
    }

    /// Whether `flow` is inside a frame that has not arrived whole: some of it was passed,
    /// dropped or kept, and the rest is still to come. `None` at a frame boundary (which
    /// includes input held until the other flow moves); otherwise the number of frames decided
    /// on the flow so far, which changes whenever the flow moves on to a later frame. Lets a
    /// caller bound how long a frame may take to arrive without the engine knowing of time.
    pub fn unfinished_frame(&self, flow: Flow) -> Option<u64> {
        let state = &self.flows[flow.index()];
        let inside = state.pass > 0 || state.drop > 0 || (!state.kept.is_empty() && !state.held);
        inside.then_some(state.decided)
    }

    /// Bytes the engine holds for this connection now: input kept for the parser and injected
    /// bytes not yet emitted, both flows.
    pub fn buffered_bytes(&self) -> usize {
        self.flows.iter().map(|flow| flow.kept.len()).sum::<usize>()
            + self.inject.iter().map(InjectBuffer::len).sum::<usize>()
    }

    /// Heap the engine's own buffers take now (at least [`Connection::buffered_bytes`]); the
    /// parser's state is not included.
    pub fn buffer_capacity(&self) -> usize {
        self.flows
            .iter()
            .map(|flow| flow.kept.capacity())
            .sum::<usize>()
            + self
                .inject
                .iter()
                .map(InjectBuffer::allocated)
                .sum::<usize>()
    }

    /// Processes bytes that arrived on `flow` (`end_stream`: the sender closed its side after
    /// them) and emits what is to be forwarded or injected, on either flow. On error the
    /// connection is closed for good: an access-log entry says why and every later call fails.
    pub fn on_data(
        &mut self,
        flow: Flow,
        data: &[u8],
        end_stream: bool,
        env: &Env<'_>,
        out: &mut dyn Output,
    ) -> Result<(), ConnectionError> {
        if self.closed {
            return Err(ConnectionError::Closed);
        }
        let result = self.process(flow, data, end_stream, env, out);
        if let Err(error) = &result {
            self.closed = true;
            self.log_close(error, env.log);
        }
        result
    }

    fn process(
        &mut self,
        flow: Flow,
        mut data: &[u8],
        end_stream: bool,
        env: &Env<'_>,
        out: &mut dyn Output,
    ) -> Result<(), ConnectionError> {
        let state = &mut self.flows[flow.index()];
        let mut countdown_completed = false;
        // Where `data` now starts in the call's input.
        let mut at = 0;
        if state.pass > 0 {
            let n = state.pass.min(data.len());
            out.pass_input(flow, 0, &data[..n]);
            state.pass -= n;
            data = &data[n..];
            at = n;
            countdown_completed = state.pass == 0;
        } else if state.drop > 0 {
            let n = state.drop.min(data.len());
            state.drop -= n;
            data = &data[n..];
            at = n;
            countdown_completed = state.drop == 0;
        }
        if state.pass > 0 || state.drop > 0 {
            return Ok(());
        }
        let buffered = state.kept.len() + data.len();
        let waiting = buffered < state.need || (data.is_empty() && !countdown_completed);
        if waiting && !end_stream {
            state.kept.extend_from_slice(data);
            self.flush_injected(flow, out);
            return Ok(());
        }
        self.flush_injected(flow, out);
        self.run_parser(flow, (data, at), end_stream, env, out)?;
        self.flush_injected(flow.other(), out);
        // The other flow may have held its input until this one moved.
        let other = flow.other();
        if self.flows[other.index()].held {
            self.flush_injected(other, out);
            self.run_parser(other, (&[], 0), false, env, out)?;
            self.flush_injected(flow, out);
        }
        Ok(())
    }

    /// Emits the bytes waiting in `flow`'s inject buffer if that flow is at a frame boundary.
    fn flush_injected(&mut self, flow: Flow, out: &mut dyn Output) {
        let buffer = &mut self.inject[flow.index()];
        if self.flows[flow.index()].pass == 0 && !buffer.is_empty() {
            out.emit(flow, buffer.as_slice());
            let n = buffer.len();
            buffer.consume(n);
        }
    }

    /// Calls the parser over the kept bytes followed by `data` (the call's input from offset
    /// `at` on) until it stops, applying each operation, then stores what must be kept.
    fn run_parser(
        &mut self,
        flow: Flow,
        (data, at): (&[u8], usize),
        end_stream: bool,
        env: &Env<'_>,
        out: &mut dyn Output,
    ) -> Result<(), ConnectionError> {
        let mut kept = std::mem::take(&mut self.flows[flow.index()].kept);
        let stop = self.apply_ops(flow, &kept, (data, at), end_stream, env, out);
        let state = &mut self.flows[flow.index()];
        match stop? {
            Stop::Countdown => {
                kept.clear();
                state.held = false;
            }
            Stop::Keep { consumed, need } => {
                let from_kept = consumed.min(kept.len());
                kept.drain(..from_kept);
                kept.extend_from_slice(&data[consumed - from_kept..]);
                state.need = need;
                state.held = need == 0 && !kept.is_empty();
            }
        }
        kept.trim_capacity();
        state.kept = kept;
        Ok(())
    }

    fn apply_ops(
        &mut self,
        flow: Flow,
        kept: &[u8],
        (data, at): (&[u8], usize),
        end_stream: bool,
        env: &Env<'_>,
        out: &mut dyn Output,
    ) -> Result<Stop, ConnectionError> {
        let slices = [kept, data];
        // Usually nothing was kept: the parser then sees one slice.
        let whole = Input::new(if kept.is_empty() {
            &slices[1..]
        } else {
            &slices
        });
        let mut consumed = 0;
        let mut without_progress = 0;
        loop {
            // Bytes injected toward the other flow go out as soon as it is at a frame boundary,
            // so a long batch of denials never fills its inject buffer.
            self.flush_injected(flow.other(), out);
            let input = whole.skip(consumed);
            let (op, nothing_at_end) = self.call_parser(flow, end_stream, input, env)?;
            match op {
                Op::More(0) | Op::Pass(0) | Op::Drop(0) | Op::Inject(0) => {
                    return Err(ContractViolation::ZeroLength(op).into());
                }
                Op::Inject(n) => {
                    without_progress += 1;
                    if without_progress > MAX_OPS_WITHOUT_PROGRESS {
                        return Err(ContractViolation::NoProgress(MAX_OPS_WITHOUT_PROGRESS).into());
                    }
                    let buffer = &mut self.inject[flow.index()];
                    if n > buffer.len() {
                        return Err(ContractViolation::InjectTooLong {
                            requested: n,
                            available: buffer.len(),
                        }
                        .into());
                    }
                    out.emit(flow, &buffer.as_slice()[..n]);
                    buffer.consume(n);
                    continue;
                }
                Op::Error(error) => return Err(ConnectionError::Parse(error)),
                _ => {}
            }
            self.check_inject_drained(flow)?;
            without_progress = 0;
            match op {
                Op::Pass(n) | Op::Drop(n) => {
                    self.flows[flow.index()].decided += 1;
                    let at_hand = n.min(input.len());
                    if matches!(op, Op::Pass(_)) {
                        pass_on(out, flow, (kept, data, at), consumed, at_hand);
                    }
                    consumed += at_hand;
                    if n == input.len() && nothing_at_end && !end_stream {
                        // All at hand is decided and the parser has nothing to inject after
                        // it: the call with no input would only answer that it waits.
                        return Ok(Stop::Keep { consumed, need: 0 });
                    }
                    if n > at_hand {
                        let state = &mut self.flows[flow.index()];
                        if matches!(op, Op::Pass(_)) {
                            state.pass = n - at_hand;
                        } else {
                            state.drop = n - at_hand;
                        }
                        state.need = 0;
                        return Ok(Stop::Countdown);
                    }
                }
                Op::More(n) => {
                    let need = input.len().saturating_add(n);
                    if need > self.limits.max_buffered {
                        return Err(ConnectionError::BufferLimit {
                            needed: need,
                            limit: self.limits.max_buffered,
                        });
                    }
                    return Ok(Stop::Keep { consumed, need });
                }
                Op::Nop => {
                    if input.len() > self.limits.max_buffered {
                        return Err(ConnectionError::BufferLimit {
                            needed: input.len(),
                            limit: self.limits.max_buffered,
                        });
                    }
                    return Ok(Stop::Keep { consumed, need: 0 });
                }
                Op::Inject(_) | Op::Error(_) => unreachable!("handled above"),
            }
        }
    }

    /// Runs the parser once, turning a panic into an error that closes only this connection;
    /// with its answer, whether it said it has nothing to inject where the answer ends the input.
    fn call_parser(
        &mut self,
        flow: Flow,
        end_stream: bool,
        input: Input<'_>,
        env: &Env<'_>,
    ) -> Result<(Op, bool), ConnectionError> {
        let mut ctx = Context::new(
            &self.meta,
            self.proto,
            env.policy,
            env.log,
            &mut self.inject,
        );
        let parser = &mut self.parser;
        catch_unwind(AssertUnwindSafe(|| {
            let op = parser.on_data(&mut ctx, flow, end_stream, input);
            (op, ctx.said_nothing_at_end())
        }))
        .map_err(|payload| ConnectionError::Panic(panic_message(payload.as_ref())))
    }

    fn check_inject_drained(&self, flow: Flow) -> Result<(), ContractViolation> {
        match self.inject[flow.index()].len() {
            0 => Ok(()),
            left => Err(ContractViolation::InjectLeftBehind(left)),
        }
    }

    fn log_close(&self, error: &ConnectionError, log: &dyn AccessLog) {
        let status = match error {
            ConnectionError::Panic(message) => format!("Panic: {message}"),
            other => format!("Error: {other}"),
        };
        log.log(&LogEntry {
            entry_type: EntryType::Denied,
            meta: &self.meta,
            policy_name: "",
            proto: Some(self.proto),
            fields: &[Field::text("status", &status)],
        });
    }
}

/// Passes on `n` bytes of `kept` followed by `data` (the call's input from offset `at` on),
/// starting `from` bytes in: those of `kept` as the engine's own, those of `data` as the call's
/// input, with their place in it.
fn pass_on(
    out: &mut dyn Output,
    flow: Flow,
    (kept, data, at): (&[u8], &[u8], usize),
    from: usize,
    n: usize,
) {
    let end = from + n;
    if from < kept.len() {
        out.emit(flow, &kept[from..end.min(kept.len())]);
    }
    if end > kept.len() {
        let start = from.max(kept.len()) - kept.len();
        let stop = end - kept.len();
        out.pass_input(flow, at + start, &data[start..stop]);
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests;
