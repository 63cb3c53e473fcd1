//! CQL native protocol frames (v3 to v5 frame format): the 9-byte header, the request bodies
//! policy needs to read (QUERY, PREPARE, EXECUTE, BATCH, STARTUP), and the error frames the
//! proxy composes.
//!
//! Parsing and composing only, over an uncompressed body; compression and v5 segments are the
//! codec's business. Every length read from the wire is checked against what is at hand, so
//! no input can make it index out of bounds.

/// Length of a frame header.
pub const HEADER_LEN: usize = 9;

/// Header flag: the body is compressed.
pub const FLAG_COMPRESSED: u8 = 0x01;

/// Header flag: a response's body starts with a tracing id.
pub const FLAG_TRACING: u8 = 0x02;

/// Header flag: a custom payload ([bytes map]) precedes the body.
pub const FLAG_CUSTOM_PAYLOAD: u8 = 0x04;

/// Header flag: a response's body starts with warnings (after a tracing id).
pub const FLAG_WARNING: u8 = 0x08;

/// Request and response opcodes.
pub mod opcode {
    pub const ERROR: u8 = 0x00;
    pub const STARTUP: u8 = 0x01;
    pub const READY: u8 = 0x02;
    pub const AUTHENTICATE: u8 = 0x03;
    pub const OPTIONS: u8 = 0x05;
    pub const QUERY: u8 = 0x07;
    pub const RESULT: u8 = 0x08;
    pub const PREPARE: u8 = 0x09;
    pub const EXECUTE: u8 = 0x0a;
    pub const BATCH: u8 = 0x0d;
    pub const AUTH_SUCCESS: u8 = 0x10;
}

/// Error code of a protocol error (also an unsupported protocol version).
pub const PROTOCOL_ERROR: u32 = 0x000A;

/// Error code of a denial: Unauthorized.
pub const UNAUTHORIZED: u32 = 0x2100;

/// Error code of an unknown prepared statement: Unprepared.
pub const UNPREPARED: u32 = 0x2500;

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The protocol version (without the response bit).
    pub version: u8,
    /// Whether the frame is a response.
    pub response: bool,
    pub flags: u8,
    pub stream: i16,
    pub opcode: u8,
    /// Length of the body.
    pub length: u32,
}

impl Header {
    /// Reads a header.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Header {
        Header {
            version: bytes[0] & 0x7f,
            response: bytes[0] & 0x80 != 0,
            flags: bytes[1],
            stream: i16::from_be_bytes([bytes[2], bytes[3]]),
            opcode: bytes[4],
            length: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]),
        }
    }
}

/// A body that does not hold what its opcode promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what} in a frame body")]
pub struct Malformed {
    /// What could not be read.
    pub what: &'static str,
}

/// A cursor over a frame body, reading the protocol's notation ([byte], [short], [int],
/// [string], [long string], [short bytes], [bytes], [bytes map]); each read checks the length
/// against what is left.
pub struct Body<'b> {
    bytes: &'b [u8],
}

impl<'b> Body<'b> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'b [u8]) -> Self {
        Body { bytes }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'b [u8], Malformed> {
        if n > self.bytes.len() {
            return Err(Malformed { what });
        }
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(taken)
    }

    /// A [byte].
    pub fn byte(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1, "byte")?[0])
    }

    /// A [short].
    pub fn short(&mut self) -> Result<u16, Malformed> {
        let b = self.take(2, "short")?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// An [int].
    pub fn int(&mut self) -> Result<i32, Malformed> {
        let b = self.take(4, "int")?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A [string].
    pub fn string(&mut self) -> Result<&'b str, Malformed> {
        let len = usize::from(self.short()?);
        std::str::from_utf8(self.take(len, "string")?).map_err(|_| Malformed { what: "string" })
    }

    /// A [long string].
    pub fn long_string(&mut self) -> Result<&'b str, Malformed> {
        let len = usize::try_from(self.int()?).map_err(|_| Malformed {
            what: "long string",
        })?;
        std::str::from_utf8(self.take(len, "long string")?).map_err(|_| Malformed {
            what: "long string",
        })
    }

    /// A [short bytes].
    pub fn short_bytes(&mut self) -> Result<&'b [u8], Malformed> {
        let len = usize::from(self.short()?);
        self.take(len, "short bytes")
    }

    /// A [bytes] or [value]: an [int] length, negative for null (or "not set").
    pub fn skip_bytes(&mut self) -> Result<(), Malformed> {
        let len = self.int()?;
        if len > 0 {
            self.take(len as usize, "bytes")?;
        }
        Ok(())
    }

    /// Skips a [bytes map].
    pub fn skip_bytes_map(&mut self) -> Result<(), Malformed> {
        for _ in 0..self.short()? {
            self.string()?;
            self.skip_bytes()?;
        }
        Ok(())
    }
}

/// One entry of a BATCH request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchEntry<'b> {
    /// A query string.
    Query(&'b str),
    /// A prepared statement id.
    Prepared(&'b [u8]),
}

/// The entries of a BATCH request, read as they are iterated (they were checked when the request
/// was parsed, so iterating them never fails).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchEntries<'b> {
    /// The body from the first entry on.
    bytes: &'b [u8],
    count: u16,
}

impl<'b> BatchEntries<'b> {
    /// The entries, in order.
    pub fn iter(&self) -> impl Iterator<Item = BatchEntry<'b>> {
        let mut body = Body::new(self.bytes);
        (0..self.count).map_while(move |_| batch_entry(&mut body).ok())
    }
}

/// Reads one batch entry and skips its values. Their names would come only with the 0x40 flag,
/// which follows all entries: batches with named values are refused when the flags are read.
fn batch_entry<'b>(body: &mut Body<'b>) -> Result<BatchEntry<'b>, Malformed> {
    let entry = match body.byte()? {
        0 => BatchEntry::Query(body.long_string()?),
        1 => BatchEntry::Prepared(body.short_bytes()?),
        _ => {
            return Err(Malformed {
                what: "batch entry kind",
            })
        }
    };
    for _ in 0..body.short()? {
        body.skip_bytes()?;
    }
    Ok(entry)
}

/// The parts of a request that policy reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'b> {
    /// STARTUP, with the compression it asks for.
    Startup { compression: Option<&'b str> },
    /// QUERY: the query and the keyspace it names for itself (flag 0x80).
    Query {
        query: &'b str,
        keyspace: Option<&'b str>,
    },
    /// PREPARE: the query and, in v5, its keyspace.
    Prepare {
        query: &'b str,
        keyspace: Option<&'b str>,
    },
    /// EXECUTE of a prepared statement, which may name a keyspace (flag 0x80).
    Execute {
        id: &'b [u8],
        keyspace: Option<&'b str>,
    },
    /// BATCH: its entries and the keyspace it names for itself (flag 0x80).
    Batch {
        entries: BatchEntries<'b>,
        keyspace: Option<&'b str>,
    },
    /// Any other request (OPTIONS, REGISTER, AUTH_RESPONSE, …), which passes once the
    /// connection is allowed.
    Other(u8),
}

/// Query parameter flags (v3, v4: a byte; v5: an int).
mod params {
    pub(super) const VALUES: u32 = 0x01;
    pub(super) const PAGE_SIZE: u32 = 0x04;
    pub(super) const PAGING_STATE: u32 = 0x08;
    pub(super) const SERIAL_CONSISTENCY: u32 = 0x10;
    pub(super) const TIMESTAMP: u32 = 0x20;
    pub(super) const NAMES: u32 = 0x40;
    pub(super) const KEYSPACE: u32 = 0x80;
}

/// The query parameters policy reads: the flags, and the keyspace the request names for itself.
struct Parameters<'b> {
    flags: u32,
    keyspace: Option<&'b str>,
}

/// Reads `<consistency><flags>…` of a QUERY, EXECUTE or BATCH as Cassandra's codec reads them,
/// one codec for the three: a BATCH's flags may announce values, a page size or a paging state
/// before its keyspace just as a QUERY's do, and the keyspace flag (0x80), which only the v5
/// specification defines, is read in every version, as Cassandra reads it from a v3 or v4 flags
/// byte too.
fn query_parameters<'b>(body: &mut Body<'b>, version: u8) -> Result<Parameters<'b>, Malformed> {
    body.short()?;
    let flags = if version >= 5 {
        body.int()? as u32
    } else {
        u32::from(body.byte()?)
    };
    if flags & params::VALUES != 0 {
        for _ in 0..body.short()? {
            if flags & params::NAMES != 0 {
                body.string()?;
            }
            body.skip_bytes()?;
        }
    }
    if flags & params::PAGE_SIZE != 0 {
        body.int()?;
    }
    if flags & params::PAGING_STATE != 0 {
        body.skip_bytes()?;
    }
    if flags & params::SERIAL_CONSISTENCY != 0 {
        body.short()?;
    }
    if flags & params::TIMESTAMP != 0 {
        body.take(8, "timestamp")?;
    }
    let keyspace = match flags & params::KEYSPACE != 0 {
        true => Some(body.string()?),
        false => None,
    };
    Ok(Parameters { flags, keyspace })
}

impl<'b> Request<'b> {
    /// Reads the body of a request frame with `header`, uncompressed.
    pub fn parse(header: &Header, body: &'b [u8]) -> Result<Request<'b>, Malformed> {
        let mut body = Body::new(body);
        if header.flags & FLAG_CUSTOM_PAYLOAD != 0 {
            body.skip_bytes_map()?;
        }
        let version = header.version;
        Ok(match header.opcode {
            opcode::STARTUP => {
                let mut compression = None;
                for _ in 0..body.short()? {
                    let (key, value) = (body.string()?, body.string()?);
                    // Cassandra looks the option up under this exact name.
                    if key == "COMPRESSION" {
                        compression = Some(value);
                    }
                }
                Request::Startup { compression }
            }
            opcode::QUERY => {
                let query = body.long_string()?;
                Request::Query {
                    query,
                    keyspace: query_parameters(&mut body, version)?.keyspace,
                }
            }
            opcode::PREPARE => {
                let query = body.long_string()?;
                let keyspace = match version >= 5 && body.int()? & 0x01 != 0 {
                    true => Some(body.string()?),
                    false => None,
                };
                Request::Prepare { query, keyspace }
            }
            opcode::EXECUTE => {
                let id = body.short_bytes()?;
                if version >= 5 {
                    body.short_bytes()?;
                }
                Request::Execute {
                    id,
                    keyspace: query_parameters(&mut body, version)?.keyspace,
                }
            }
            opcode::BATCH => {
                body.byte()?;
                let count = body.short()?;
                let entries = BatchEntries {
                    bytes: body.bytes,
                    count,
                };
                for _ in 0..count {
                    batch_entry(&mut body)?;
                }
                let parameters = query_parameters(&mut body, version)?;
                if parameters.flags & params::NAMES != 0 {
                    return Err(Malformed {
                        what: "batch with named values",
                    });
                }
                let keyspace = parameters.keyspace;
                Request::Batch { entries, keyspace }
            }
            other => Request::Other(other),
        })
    }
}

/// What a RESULT tells the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'b> {
    /// A Prepared result (kind 0x0004): the statement's id.
    Prepared(&'b [u8]),
    /// A Set_keyspace result (kind 0x0003): the keyspace a USE switched the connection to.
    SetKeyspace(&'b str),
    /// Any other result.
    Other,
}

/// What the RESULT `body` says, reading past what the response flags put before it.
pub fn result_outcome<'b>(header: &Header, body: &'b [u8]) -> Result<Outcome<'b>, Malformed> {
    let mut body = Body::new(body);
    if header.flags & FLAG_TRACING != 0 {
        body.take(16, "tracing id")?;
    }
    if header.flags & FLAG_WARNING != 0 {
        for _ in 0..body.short()? {
            body.string()?;
        }
    }
    if header.flags & FLAG_CUSTOM_PAYLOAD != 0 {
        body.skip_bytes_map()?;
    }
    match body.int()? {
        RESULT_PREPARED => Ok(Outcome::Prepared(body.short_bytes()?)),
        RESULT_SET_KEYSPACE => Ok(Outcome::SetKeyspace(body.string()?)),
        _ => Ok(Outcome::Other),
    }
}

/// RESULT kind of a Set_keyspace result.
const RESULT_SET_KEYSPACE: i32 = 0x0003;

/// RESULT kind of a Prepared result.
const RESULT_PREPARED: i32 = 0x0004;

/// An ERROR frame answering the request on `stream`: `code`, `message`, and for Unprepared the
/// statement id.
pub fn error_frame(
    version: u8,
    stream: i16,
    code: u32,
    message: &str,
    unprepared_id: Option<&[u8]>,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + message.len());
    body.extend_from_slice(&code.to_be_bytes());
    body.extend_from_slice(&(message.len() as u16).to_be_bytes());
    body.extend_from_slice(message.as_bytes());
    if let Some(id) = unprepared_id {
        body.extend_from_slice(&(id.len() as u16).to_be_bytes());
        body.extend_from_slice(id);
    }
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    frame.push(0x80 | version);
    frame.push(0);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.push(opcode::ERROR);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

#[cfg(test)]
mod tests;
