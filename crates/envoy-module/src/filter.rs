//! One connection through the filter: the decision when it opens (the endpoint's policy for the
//! client's identity, as `axoneme run` decides it) and then the datapath engine over Envoy's two
//! buffers. Bytes that arrive are taken out of Envoy's buffer whole and handed to the engine
//! chunk by chunk, as Envoy chunked them; what the engine passes or injects on the same flow
//! replaces them in the buffer for the next filter, what it injects toward the other side goes
//! past this filter in that direction. While more than the connection's buffer limit waits to be
//! written to the client, nothing more is read from it: the denials the engine writes itself
//! answer requests that never reach the upstream, so Envoy's own flow control (the upstream
//! stops being read) would not hold the client back. A datapath error (protocol error, parser
//! panic, contract violation) closes this connection only; the engine has logged it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axoneme_datapath::{Connection, Env, Limits, Output};
use axoneme_policy::{ConnectionVerdict, PortPolicy, Snapshot};
use axoneme_sdk::{AccessLog, ConnectionMeta, Direction, EntryType, Field, Flow, LogEntry};

use crate::abi::{self, DataStatus};
use crate::config::FilterConfig;
use crate::envoy::{Buffer, EnvoyConnection};

/// The state of one connection.
enum State {
    /// Created, not yet told of its connection.
    New,
    /// Parsed with the engine under the request-level policy of `snapshot` for the connection's
    /// `remote` and `port`.
    Parsing {
        engine: Box<Connection>,
        policy: Arc<PortPolicy>,
        snapshot: Arc<Snapshot>,
        remote: IpAddr,
        port: u16,
    },
    /// Refused or closed: nothing more passes.
    Closed,
}

/// The filter of one connection.
pub(crate) struct Filter {
    config: Arc<FilterConfig>,
    state: State,
    /// Reading from the client is stopped until it reads what waits for it.
    client_backlogged: bool,
}

/// The engine's output for one hook, per flow.
#[derive(Default)]
struct Collected {
    upstream: Vec<u8>,
    client: Vec<u8>,
}

impl Output for Collected {
    fn emit(&mut self, flow: Flow, bytes: &[u8]) {
        match flow {
            Flow::Request => self.upstream.extend_from_slice(bytes),
            Flow::Reply => self.client.extend_from_slice(bytes),
        }
    }
}

impl Filter {
    pub(crate) fn new(config: Arc<FilterConfig>) -> Filter {
        Filter {
            config,
            state: State::New,
            client_backlogged: false,
        }
    }

    /// Decides the new connection: parsed, or refused and closed.
    pub(crate) fn on_new_connection(&mut self, envoy: &mut EnvoyConnection) -> DataStatus {
        let id = envoy.id();
        let snapshot = self.config.snapshot.load_full();
        let Some(client) = envoy.remote_address() else {
            let meta = self.meta(&snapshot, id, SocketAddr::from(([0, 0, 0, 0], 0)));
            self.refuse(
                envoy,
                &meta,
                "",
                "the client's address is not an IP address",
            );
            return abi::STOP_ITERATION;
        };
        let meta = self.meta(&snapshot, id, client);
        let config = &*self.config;
        let remote = match config.direction {
            Direction::Ingress => client.ip(),
            Direction::Egress => config.upstream.ip(),
        };
        let port = config.upstream.port();
        let verdict = snapshot.decide_connection(&config.endpoint, config.direction, remote, port);
        let proto = config.protocol.name();
        match verdict {
            ConnectionVerdict::Refused {
                policy_name,
                reason,
            } => {
                self.refuse(envoy, &meta, &policy_name, &reason);
                return abi::STOP_ITERATION;
            }
            ConnectionVerdict::Allowed {
                policy_name,
                l7: Some(l7),
            } if l7.proto().is_some_and(|required| required != proto) => {
                let reason = format!(
                    "the filter parses {proto:?} but policy requires l7proto {:?} on port {port}",
                    l7.proto().unwrap_or_default()
                );
                self.refuse(envoy, &meta, &policy_name, &reason);
                return abi::STOP_ITERATION;
            }
            ConnectionVerdict::Unrestricted | ConnectionVerdict::Allowed { .. } => {}
        }
        let policy = snapshot.request_policy(&config.endpoint, config.direction, remote, port);
        let parser = config.protocol.new_parser(&meta);
        let engine = Connection::new(parser, meta, proto, Limits::default());
        self.state = State::Parsing {
            engine: Box::new(engine),
            policy,
            snapshot,
            remote,
            port,
        };
        abi::CONTINUE
    }

    /// Bytes from the client (`Buffer::Read`) or toward it (`Buffer::Write`).
    pub(crate) fn on_data(
        &mut self,
        envoy: &mut EnvoyConnection,
        buffer: Buffer,
        end_stream: bool,
    ) -> DataStatus {
        let State::Parsing {
            engine,
            policy,
            snapshot,
            remote,
            port,
        } = &mut self.state
        else {
            let held: usize = envoy.chunks(buffer).iter().map(|c| c.len()).sum();
            envoy.drain(buffer, held);
            return abi::STOP_ITERATION;
        };
        let config = &*self.config;
        // A new policy (from the agent) applies from the next bytes on, as in the agent.
        let in_force = config.snapshot.load();
        if !Arc::ptr_eq(&in_force, snapshot) {
            *policy = in_force.request_policy(&config.endpoint, config.direction, *remote, *port);
            *snapshot = Arc::clone(&in_force);
        }
        let flow = match buffer {
            Buffer::Read => Flow::Request,
            Buffer::Write => Flow::Reply,
        };
        let env = Env {
            policy: &**policy,
            log: &config.log,
        };
        let mut out = Collected::default();
        let chunks = envoy.chunks(buffer);
        let total: usize = chunks.iter().map(|c| c.len()).sum();
        let mut result = Ok(());
        if chunks.is_empty() {
            result = engine.on_data(flow, &[], end_stream, &env, &mut out);
        }
        let last = chunks.len().saturating_sub(1);
        for (i, chunk) in chunks.iter().enumerate() {
            result = engine.on_data(flow, chunk, end_stream && i == last, &env, &mut out);
            if result.is_err() {
                break;
            }
        }
        envoy.drain(buffer, total);
        let (same_way, other_way) = match flow {
            Flow::Request => (&out.upstream, &out.client),
            Flow::Reply => (&out.client, &out.upstream),
        };
        let other_buffer = match buffer {
            Buffer::Read => Buffer::Write,
            Buffer::Write => Buffer::Read,
        };
        if !other_way.is_empty() {
            envoy.inject(other_buffer, other_way, false);
        }
        if result.is_err() {
            self.state = State::Closed;
            envoy.close(abi::CLOSE_FLUSH_WRITE);
            return abi::STOP_ITERATION;
        }
        if same_way.is_empty() && !end_stream {
            return abi::STOP_ITERATION;
        }
        envoy.append(buffer, same_way);
        abi::CONTINUE
    }

    /// What waits to be written to the client went above (`true`) or back below (`false`) the
    /// connection's buffer limit: reading from the client stops until it is below again. Each
    /// stop is paired with one resume, as Envoy counts them.
    pub(crate) fn on_client_backlog(&mut self, envoy: &mut EnvoyConnection, backlogged: bool) {
        if backlogged != self.client_backlogged {
            self.client_backlogged = backlogged;
            envoy.read_disable(backlogged);
        }
    }

    /// The connection closed (either side): nothing more is parsed.
    pub(crate) fn on_close(&mut self) {
        self.state = State::Closed;
    }

    /// Closes the connection after something outside the engine failed (a panic in this
    /// module's own code or in making the connection's parser, caught at the hook) and logs
    /// why; the close is asked for first, so that a failure while logging cannot leave it open.
    pub(crate) fn fail(&mut self, envoy: &mut EnvoyConnection, why: &str) {
        let state = std::mem::replace(&mut self.state, State::Closed);
        envoy.close(abi::CLOSE_ABORT);
        let status = format!("Panic: {why}");
        let fields = [Field::text("status", &status)];
        let log = |meta: &ConnectionMeta, proto: &str| {
            self.config.log.log(&LogEntry {
                entry_type: EntryType::Denied,
                meta,
                policy_name: "",
                proto: Some(proto),
                fields: &fields,
            });
        };
        match &state {
            State::Parsing { engine, .. } => log(engine.meta(), engine.proto()),
            State::New => {
                let snapshot = self.config.snapshot.load_full();
                let client = envoy
                    .remote_address()
                    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                let meta = self.meta(&snapshot, envoy.id(), client);
                log(&meta, self.config.protocol.name());
            }
            State::Closed => {}
        }
    }

    /// Logs the refusal of the connection and closes it.
    fn refuse(
        &mut self,
        envoy: &mut EnvoyConnection,
        meta: &ConnectionMeta,
        policy_name: &str,
        reason: &str,
    ) {
        self.config.log.log(&LogEntry {
            entry_type: EntryType::Denied,
            meta,
            policy_name,
            proto: Some(self.config.protocol.name()),
            fields: &[Field::text("status", reason)],
        });
        self.state = State::Closed;
        envoy.close(abi::CLOSE_ABORT);
    }

    /// The connection from `client` as the guarded endpoint's policy sees it.
    fn meta(&self, snapshot: &Snapshot, id: u64, client: SocketAddr) -> ConnectionMeta {
        let config = &*self.config;
        let guarded = snapshot
            .endpoint(&config.endpoint)
            .map(|e| e.identity.clone());
        let identity = |addr: SocketAddr| snapshot.identity_of(addr.ip()).clone();
        let (source, destination) = match config.direction {
            Direction::Ingress => (
                identity(client),
                guarded.unwrap_or_else(|| identity(config.upstream)),
            ),
            Direction::Egress => (
                guarded.unwrap_or_else(|| identity(client)),
                identity(config.upstream),
            ),
        };
        ConnectionMeta {
            id,
            listener: Arc::clone(&config.listener),
            endpoint: Arc::from(config.endpoint.as_str()),
            direction: config.direction,
            source: client,
            destination: config.upstream,
            source_identity: source.id,
            destination_identity: destination.id,
            source_labels: source.labels,
            destination_labels: destination.labels,
        }
    }
}
