//! A connection's protocol state and its answers, without I/O: bytes from the client in,
//! response bytes out, one request at a time and in order, against the store shared by all
//! connections.
//!
//! A session accepts protocol v4 and v5. STARTUP fixes the version of the connection and what
//! it negotiates: for v4 the compression of envelope bodies (LZ4 or Snappy), for v5 the
//! segments every later envelope travels in, both ways (LZ4 or none). It also keeps the
//! keyspace USE sets. Envelopes are split and wrapped by [`framing`], bodies read and written
//! by [`wire`], statements read by [`cql`] and evaluated by [`store`]; what the reader made of
//! each request goes to the [`Journal`] before evaluation. Sockets belong to `server`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axoneme_cassandra::compression::Compression;
use axoneme_cassandra::frame::{self, opcode, Header, FLAG_COMPRESSED, HEADER_LEN};
use axoneme_cassandra::segment::Format;
use tracing::{debug, info, warn};

use crate::cql::{self, Stmt};
use crate::framing::{self, Framing, FramingError, Inbound, MAX_BODY};
use crate::journal::{Entry, Journal, Verdict};
use crate::store::{self, CqlError, Outcome, Store, CQL_VERSION};
use crate::wire::{self, BatchItem, Request};

/// The protocol versions the fixture speaks.
pub const VERSIONS: [u8; 2] = [4, 5];

/// Error code: Protocol error.
const PROTOCOL_ERROR: u32 = 0x000a;

/// A connection's state.
pub struct Session {
    /// The address the client reached.
    node: SocketAddr,
    /// The version STARTUP fixed; until then each request's own.
    version: Option<u8>,
    keyspace: Option<String>,
    /// v4: how envelope bodies are compressed once STARTUP is answered.
    compression: Option<Compression>,
    inbound: Inbound,
    journal: Arc<Journal>,
    /// This connection's number in the journal.
    connection: u64,
}

impl Session {
    /// A session for a client that reached `node`, recording nothing.
    pub fn new(node: SocketAddr) -> Session {
        Session::journaled(node, Arc::new(Journal::off()))
    }

    /// A session for a client that reached `node`, recording what it reads in `journal`.
    pub fn journaled(node: SocketAddr, journal: Arc<Journal>) -> Session {
        Session {
            node,
            version: None,
            keyspace: None,
            compression: None,
            inbound: Inbound::default(),
            connection: journal.connection(),
            journal,
        }
    }

    /// Takes bytes the client sent and appends to `out` the responses to the requests they
    /// complete. An error means the bytes cannot be split into envelopes (a bad CRC, a broken
    /// segment): the connection cannot go on.
    pub fn receive(
        &mut self,
        bytes: &[u8],
        store: &Mutex<Store>,
        out: &mut Vec<u8>,
    ) -> Result<(), FramingError> {
        self.inbound.push(bytes);
        while let Some(envelope) = self.inbound.next_envelope()? {
            // A response travels as its request did: READY to a v5 STARTUP goes unframed,
            // everything after it in segments.
            let framing = self.inbound.framing();
            let response = self.respond(&envelope.header, envelope.body, store);
            framing::write(framing, &response, out);
        }
        Ok(())
    }

    /// Whether the client sent part of an envelope, or of a segment, and no more.
    pub fn is_partial(&self) -> bool {
        self.inbound.is_partial()
    }

    /// The response envelope to a request envelope.
    fn respond(&mut self, header: &Header, mut body: Vec<u8>, store: &Mutex<Store>) -> Vec<u8> {
        if !VERSIONS.contains(&header.version) {
            debug!(version = header.version, "unsupported protocol version");
            let message = format!(
                "Invalid or unsupported protocol version ({}); supported versions are (4/v4, 5/v5)",
                header.version
            );
            return frame::error_frame(
                header.version,
                header.stream,
                PROTOCOL_ERROR,
                &message,
                None,
            );
        }
        if let Some(version) = self.version.filter(|&v| v != header.version) {
            let message = format!(
                "Invalid message version. Got {} but previous messages on this connection had version {version}",
                header.version
            );
            return self.protocol_error(header, &message);
        }
        if header.response {
            return self.protocol_error(header, "a response frame where a request was expected");
        }
        // v5 ignores the flag: segments carry the compression.
        if header.version == 4 && header.flags & FLAG_COMPRESSED != 0 {
            let Some(compression) = self.compression else {
                return self
                    .protocol_error(header, "compressed frame before compression was negotiated");
            };
            let mut plain = Vec::new();
            if let Err(error) = compression.decompress(&body, &mut plain, MAX_BODY) {
                return self.protocol_error(header, &error.to_string());
            }
            body = plain;
        }
        let request = match Request::parse(header, &body) {
            Ok(request) => request,
            Err(error) => return self.protocol_error(header, &error.0),
        };
        let (opcode, body) = match request {
            Request::Options => (wire::SUPPORTED, wire::supported(CQL_VERSION)),
            Request::Startup { compression } => return self.startup(header, compression),
            Request::Register => (opcode::READY, Vec::new()),
            Request::Query { query, params } => {
                debug!(query, keyspace = params.keyspace, "query");
                let keyspace = params.keyspace.or(self.keyspace.as_deref());
                let outcome = self
                    .read(header.stream, &[(query, keyspace)])
                    .and_then(|stmts| {
                        let mut store = lock(store);
                        stmts.iter().try_fold(Outcome::Void, |_, stmt| {
                            store.execute(stmt, keyspace, &params.values, self.node)
                        })
                    });
                self.result(outcome, params.skip_metadata, None)
            }
            Request::Prepare { query, keyspace } => {
                debug!(query, keyspace, "prepare");
                let keyspace = keyspace.or(self.keyspace.as_deref());
                let prepared = self
                    .read(header.stream, &[(query, keyspace)])
                    .and_then(|_| lock(store).prepare(query, keyspace));
                match prepared {
                    Ok(prepared) => (opcode::RESULT, wire::prepared(&prepared, header.version)),
                    Err(error) => self.error(&error),
                }
            }
            // A prepared statement keeps the keyspace it was prepared in, whatever EXECUTE names.
            Request::Execute {
                id,
                result_metadata_id,
                params,
            } => {
                let mut store = lock(store);
                let outcome = match store.prepared_query(id) {
                    Some(prepared) => self
                        .read(header.stream, &[prepared])
                        .and_then(|_| store.execute_prepared(id, &params.values, self.node)),
                    None => {
                        let error = CqlError::Unprepared(id.to_vec());
                        self.journal(header.stream, Vec::new(), Verdict::Refused(error.message()));
                        Err(error)
                    }
                };
                drop(store);
                self.result(outcome, params.skip_metadata, result_metadata_id)
            }
            Request::Batch(batch) => {
                let keyspace = batch.keyspace.or(self.keyspace.as_deref());
                let mut store = lock(store);
                let queries: Option<Vec<(&str, Option<&str>)>> = batch
                    .entries
                    .iter()
                    .map(|(item, _)| match item {
                        BatchItem::Query(query) => Some((*query, keyspace)),
                        BatchItem::Prepared(id) => store.prepared_query(id),
                    })
                    .collect();
                let outcome = match queries {
                    Some(queries) => self.read(header.stream, &queries).map(drop),
                    None => {
                        let message = "a batch names an unknown prepared statement".to_string();
                        self.journal(header.stream, Vec::new(), Verdict::Refused(message));
                        Ok(())
                    }
                };
                let outcome = outcome.and_then(|()| {
                    batch
                        .entries
                        .into_iter()
                        .try_for_each(|(item, values)| {
                            match item {
                                BatchItem::Query(query) => {
                                    debug!(query, keyspace, "batch query");
                                    let stmt = store::parse(query)?;
                                    store.execute(&stmt, keyspace, &values, self.node)
                                }
                                BatchItem::Prepared(id) => {
                                    store.execute_prepared(id, &values, self.node)
                                }
                            }
                            .map(drop)
                        })
                        .map(|()| Outcome::Void)
                });
                drop(store);
                self.result(outcome, false, None)
            }
            Request::Other(other) => {
                return self.protocol_error(header, &format!("unsupported opcode 0x{other:02x}"))
            }
        };
        self.frame(header, opcode, body)
    }

    /// Reads a request's queries, each with the keyspace its unqualified tables resolve
    /// against, and journals what the reader made of them: the statements, or the error that
    /// refuses the request.
    fn read(&self, stream: i16, queries: &[(&str, Option<&str>)]) -> Result<Vec<Stmt>, CqlError> {
        let texts = queries.iter().map(|(q, _)| q.to_string()).collect();
        let read = queries
            .iter()
            .map(|&(query, keyspace)| {
                let stmt = store::parse(query)?;
                let checked = stmt
                    .checked(keyspace)
                    .map_err(|error| CqlError::Invalid(error.to_string()))?;
                Ok((stmt, checked))
            })
            .collect::<Result<Vec<(Stmt, Vec<cql::Checked>)>, CqlError>>();
        match read {
            Ok(read) => {
                let (stmts, checked): (Vec<_>, Vec<_>) = read.into_iter().unzip();
                let checked = checked.into_iter().flatten().collect();
                self.journal(stream, texts, Verdict::Accepted(checked));
                Ok(stmts)
            }
            Err(error) => {
                self.journal(stream, texts, Verdict::Refused(error.message()));
                Err(error)
            }
        }
    }

    fn journal(&self, stream: i16, queries: Vec<String>, verdict: Verdict) {
        let entry = Entry {
            connection: self.connection,
            stream,
            queries,
            verdict,
        };
        if let Err(error) = self.journal.record(entry) {
            warn!(%error, "cannot write the journal");
        }
    }

    /// Answers STARTUP, which fixes the version of the connection: READY, after which v4
    /// bodies are compressed as asked, or v5 envelopes travel in segments (LZ4 or plain).
    fn startup(&mut self, header: &Header, compression: Option<&str>) -> Vec<u8> {
        if self.inbound.framing() != Framing::Unframed {
            return self.protocol_error(header, "STARTUP in a segment: the connection is started");
        }
        let chosen = match compression.map(|name| (name, Compression::from_name(name))) {
            None => None,
            Some((_, Some(chosen))) => Some(chosen),
            Some((name, None)) => {
                return self
                    .protocol_error(header, &format!("Unknown compression algorithm: {name}"))
            }
        };
        let framing = match (header.version, chosen) {
            (4, _) => Framing::Unframed,
            (_, None) => Framing::Segments(Format::Plain),
            (_, Some(Compression::Lz4)) => Framing::Segments(Format::Lz4),
            (_, Some(Compression::Snappy)) => {
                return self.protocol_error(
                    header,
                    "snappy is not supported in protocol v5, which only compresses with lz4",
                )
            }
        };
        // READY itself goes uncompressed and unframed; what follows does not.
        let ready = self.frame(header, opcode::READY, Vec::new());
        if header.version == 4 {
            self.compression = chosen;
        }
        self.inbound.set_framing(framing);
        self.version = Some(header.version);
        info!(version = header.version, compression = ?chosen, "startup");
        ready
    }

    /// A RESULT, or the ERROR the statement failed with; see [`wire::result`] for
    /// `skip_metadata` and `known`.
    fn result(
        &mut self,
        outcome: Result<Outcome, CqlError>,
        skip_metadata: bool,
        known: Option<&[u8]>,
    ) -> (u8, Vec<u8>) {
        match outcome {
            Ok(outcome) => {
                if let Outcome::SetKeyspace(keyspace) = &outcome {
                    self.keyspace = Some(keyspace.clone());
                }
                (opcode::RESULT, wire::result(&outcome, skip_metadata, known))
            }
            Err(error) => self.error(&error),
        }
    }

    fn error(&self, error: &CqlError) -> (u8, Vec<u8>) {
        let message = error.message();
        info!(code = error.code(), message, "error");
        (
            opcode::ERROR,
            wire::error(error.code(), &message, Some(error)),
        )
    }

    fn protocol_error(&self, header: &Header, message: &str) -> Vec<u8> {
        warn!(message, "protocol error");
        self.frame(
            header,
            opcode::ERROR,
            wire::error(PROTOCOL_ERROR, message, None),
        )
    }

    /// The response envelope to the request with `header`, in its version and on its stream;
    /// in v4 its body compressed once compression is negotiated.
    fn frame(&self, header: &Header, opcode: u8, body: Vec<u8>) -> Vec<u8> {
        let (flags, body) = match self.compression {
            Some(compression) => (FLAG_COMPRESSED, compression.compress(&body)),
            None => (0, body),
        };
        let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
        frame.extend_from_slice(&[0x80 | header.version, flags]);
        frame.extend_from_slice(&header.stream.to_be_bytes());
        frame.push(opcode);
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&body);
        frame
    }
}

/// The store, even if a task panicked while holding it.
fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    store
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests;
