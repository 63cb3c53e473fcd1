//! Connections: frames in, frames out, one request at a time and in order on each
//! connection, against one store shared by all of them.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axoneme_cassandra::compression::Compression;
use axoneme_cassandra::frame::{
    self, opcode, Header, FLAG_COMPRESSED, FLAG_CUSTOM_PAYLOAD, HEADER_LEN,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::store::{self, CqlError, Outcome, Store, CQL_VERSION};
use crate::wire::{self, BatchItem, Request};

/// The protocol version the fixture speaks.
pub const VERSION: u8 = 4;

/// The longest frame body the protocol allows (256 MiB), also the limit on decompression.
const MAX_BODY: usize = 256 << 20;

/// Error code: Protocol error.
const PROTOCOL_ERROR: u32 = 0x000a;

/// Accepts connections on `listener` for ever, each served by its own task.
pub async fn serve(listener: TcpListener, store: Arc<Mutex<Store>>) -> io::Result<()> {
    loop {
        let (socket, peer) = listener.accept().await?;
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            info!(%peer, "connection opened");
            match connection(socket, store).await {
                Ok(()) => info!(%peer, "connection closed"),
                Err(error) => warn!(%peer, %error, "connection ended"),
            }
        });
    }
}

async fn connection(mut socket: TcpStream, store: Arc<Mutex<Store>>) -> io::Result<()> {
    socket.set_nodelay(true)?;
    let mut session = Session {
        node: socket.local_addr()?,
        keyspace: None,
        compression: None,
    };
    let (reader, writer) = socket.split();
    let (mut reader, mut writer) = (BufReader::new(reader), BufWriter::new(writer));
    loop {
        let mut header = [0u8; HEADER_LEN];
        match reader.read_exact(&mut header).await {
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            other => other?,
        };
        let header = Header::parse(&header);
        let length = header.length as usize;
        if length > MAX_BODY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a frame body of {length} bytes"),
            ));
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).await?;
        let response = session.respond(&header, body, &store);
        writer.write_all(&response).await?;
        if reader.buffer().is_empty() {
            writer.flush().await?;
        }
    }
}

/// A connection's state.
struct Session {
    /// The address the client reached.
    node: SocketAddr,
    keyspace: Option<String>,
    compression: Option<Compression>,
}

impl Session {
    /// The response frame to a request frame.
    fn respond(&mut self, header: &Header, mut body: Vec<u8>, store: &Mutex<Store>) -> Vec<u8> {
        if header.version != VERSION {
            debug!(version = header.version, "unsupported protocol version");
            let message = format!(
                "Invalid or unsupported protocol version ({}); supported versions are (4/v4)",
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
        if header.response {
            return self.protocol_error(
                header.stream,
                "a response frame where a request was expected",
            );
        }
        if header.flags & FLAG_COMPRESSED != 0 {
            let Some(compression) = self.compression else {
                return self.protocol_error(
                    header.stream,
                    "compressed frame before compression was negotiated",
                );
            };
            let mut plain = Vec::new();
            if let Err(error) = compression.decompress(&body, &mut plain, MAX_BODY) {
                return self.protocol_error(header.stream, &error.to_string());
            }
            body = plain;
        }
        let request = match Request::parse(
            header.opcode,
            header.flags & FLAG_CUSTOM_PAYLOAD != 0,
            &body,
        ) {
            Ok(request) => request,
            Err(error) => return self.protocol_error(header.stream, &error.0),
        };
        let (opcode, body) = match request {
            Request::Options => (wire::SUPPORTED, wire::supported(CQL_VERSION)),
            Request::Startup { compression } => {
                let chosen = match compression.map(|name| (name, Compression::from_name(name))) {
                    None => None,
                    Some((_, Some(chosen))) => Some(chosen),
                    Some((name, None)) => {
                        return self.protocol_error(
                            header.stream,
                            &format!("Unknown compression algorithm: {name}"),
                        )
                    }
                };
                // READY itself goes uncompressed; what follows is compressed.
                let ready = self.frame(header.stream, opcode::READY, Vec::new());
                self.compression = chosen;
                info!(compression = ?chosen, "startup");
                return ready;
            }
            Request::Register => (opcode::READY, Vec::new()),
            Request::Query { query, params } => {
                debug!(query, "query");
                let outcome = store::parse(query).and_then(|stmt| {
                    lock(store).execute(&stmt, self.keyspace.as_deref(), &params.values, self.node)
                });
                self.result(outcome, params.skip_metadata)
            }
            Request::Prepare { query } => {
                debug!(query, "prepare");
                match lock(store).prepare(query, self.keyspace.as_deref()) {
                    Ok(prepared) => (opcode::RESULT, wire::prepared(&prepared)),
                    Err(error) => self.error(&error),
                }
            }
            Request::Execute { id, params } => {
                let outcome = lock(store).execute_prepared(id, &params.values, self.node);
                self.result(outcome, params.skip_metadata)
            }
            Request::Batch(entries) => {
                let mut store = lock(store);
                let outcome = entries
                    .into_iter()
                    .try_for_each(|(item, values)| {
                        match item {
                            BatchItem::Query(query) => {
                                debug!(query, "batch query");
                                let stmt = store::parse(query)?;
                                store.execute(&stmt, self.keyspace.as_deref(), &values, self.node)
                            }
                            BatchItem::Prepared(id) => {
                                store.execute_prepared(id, &values, self.node)
                            }
                        }
                        .map(drop)
                    })
                    .map(|()| Outcome::Void);
                self.result(outcome, false)
            }
            Request::Other(other) => {
                return self
                    .protocol_error(header.stream, &format!("unsupported opcode 0x{other:02x}"))
            }
        };
        self.frame(header.stream, opcode, body)
    }

    fn result(&mut self, outcome: Result<Outcome, CqlError>, skip_metadata: bool) -> (u8, Vec<u8>) {
        match outcome {
            Ok(outcome) => {
                if let Outcome::SetKeyspace(keyspace) = &outcome {
                    self.keyspace = Some(keyspace.clone());
                }
                (opcode::RESULT, wire::result(&outcome, skip_metadata))
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

    fn protocol_error(&self, stream: i16, message: &str) -> Vec<u8> {
        warn!(message, "protocol error");
        self.frame(
            stream,
            opcode::ERROR,
            wire::error(PROTOCOL_ERROR, message, None),
        )
    }

    /// A response frame, its body compressed once compression is negotiated.
    fn frame(&self, stream: i16, opcode: u8, body: Vec<u8>) -> Vec<u8> {
        let (flags, body) = match self.compression {
            Some(compression) => (FLAG_COMPRESSED, compression.compress(&body)),
            None => (0, body),
        };
        let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
        frame.extend_from_slice(&[0x80 | VERSION, flags]);
        frame.extend_from_slice(&stream.to_be_bytes());
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
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            node: "127.0.0.1:9042".parse().unwrap(),
            keyspace: None,
            compression: None,
        }
    }

    fn request(
        session: &mut Session,
        version: u8,
        flags: u8,
        op: u8,
        body: &[u8],
        store: &Mutex<Store>,
    ) -> (Header, Vec<u8>) {
        let header = Header {
            version,
            response: false,
            flags,
            stream: 3,
            opcode: op,
            length: body.len() as u32,
        };
        let response = session.respond(&header, body.to_vec(), store);
        let parsed = Header::parse(response[..HEADER_LEN].try_into().unwrap());
        (parsed, response[HEADER_LEN..].to_vec())
    }

    fn query(text: &str) -> Vec<u8> {
        let mut body = (text.len() as i32).to_be_bytes().to_vec();
        body.extend_from_slice(text.as_bytes());
        body.extend_from_slice(&[0, 1, 0]);
        body
    }

    #[test]
    fn refuses_other_versions_on_the_same_stream() {
        let store = Mutex::new(Store::new());
        let (header, body) = request(&mut session(), 5, 0, opcode::OPTIONS, &[], &store);
        assert_eq!(
            (header.version, header.stream, header.opcode),
            (5, 3, opcode::ERROR)
        );
        assert_eq!(body[..4], 0x000a_u32.to_be_bytes());
        assert!(String::from_utf8_lossy(&body).contains("Invalid or unsupported protocol version"));
    }

    #[test]
    fn compresses_after_startup_and_keeps_the_keyspace() {
        for (name, compression) in [("lz4", Compression::Lz4), ("snappy", Compression::Snappy)] {
            let store = Mutex::new(Store::new());
            let mut session = session();
            let mut startup = vec![0, 1];
            for s in ["COMPRESSION", name] {
                startup.extend_from_slice(&(s.len() as u16).to_be_bytes());
                startup.extend_from_slice(s.as_bytes());
            }
            let (header, body) =
                request(&mut session, VERSION, 0, opcode::STARTUP, &startup, &store);
            assert_eq!(
                (header.opcode, header.flags, body.len()),
                (opcode::READY, 0, 0)
            );
            let create = query("CREATE KEYSPACE k WITH replication = {}");
            let (header, body) = request(&mut session, VERSION, 0, opcode::QUERY, &create, &store);
            assert_eq!((header.version, header.opcode), (VERSION, opcode::RESULT));
            assert_eq!(header.flags, FLAG_COMPRESSED, "{name}");
            let mut plain = Vec::new();
            compression.decompress(&body, &mut plain, 1 << 20).unwrap();
            assert_eq!(plain[..4], [0, 0, 0, 5]);
            let use_k = compression.compress(&query("USE k"));
            request(
                &mut session,
                VERSION,
                FLAG_COMPRESSED,
                opcode::QUERY,
                &use_k,
                &store,
            );
            assert_eq!(session.keyspace.as_deref(), Some("k"));
            let drop = query("DROP INDEX i");
            let (header, body) = request(&mut session, VERSION, 0, opcode::QUERY, &drop, &store);
            assert_eq!(header.opcode, opcode::ERROR);
            compression.decompress(&body, &mut plain, 1 << 20).unwrap();
            assert_eq!(plain[..4], 0x2000_u32.to_be_bytes());
            assert!(String::from_utf8_lossy(&plain).contains("does not support drop-index"));
        }
    }
}
