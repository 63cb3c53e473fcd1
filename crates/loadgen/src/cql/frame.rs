//! The part of the CQL native protocol v4 the load generator speaks, uncompressed: it encodes
//! STARTUP, QUERY, PREPARE and EXECUTE requests, cuts the stream of responses into whole frames
//! ([`cut`]) and reads their bodies ([`Response::parse`]).
//!
//! A frame is a 9-byte header (version, flags, stream id, opcode, body length) and a body made
//! of the protocol's notations: [short] and [int] big-endian, [string] a [short] length and
//! UTF-8, [long string] an [int] length, [short bytes] and [bytes] likewise (a negative [bytes]
//! length is null).

use std::fmt;
use std::io::Write;

/// Requests carry this version byte; responses the same with the top bit set.
const VERSION: u8 = 0x04;
const RESPONSE: u8 = 0x80;
const HEADER_LEN: usize = 9;
/// A response larger than this is not a CQL server answering this load generator.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Header flags.
const FLAG_COMPRESSION: u8 = 0x01;
const FLAG_WARNING: u8 = 0x08;

/// Opcodes.
const ERROR: u8 = 0x00;
const STARTUP: u8 = 0x01;
const READY: u8 = 0x02;
const QUERY: u8 = 0x07;
const RESULT: u8 = 0x08;
const PREPARE: u8 = 0x09;
const EXECUTE: u8 = 0x0a;

/// Every statement runs at consistency ONE.
const CONSISTENCY_ONE: u16 = 0x0001;
/// Query parameter flags: values follow; the client knows the result metadata.
const FLAG_VALUES: u8 = 0x01;
const FLAG_SKIP_METADATA: u8 = 0x02;

/// RESULT kinds.
const VOID: i32 = 0x0001;
const ROWS: i32 = 0x0002;
const SET_KEYSPACE: i32 = 0x0003;
const PREPARED: i32 = 0x0004;
const SCHEMA_CHANGE: i32 = 0x0005;

/// Rows metadata flags.
const GLOBAL_TABLES_SPEC: i32 = 0x0001;
const HAS_MORE_PAGES: i32 = 0x0002;
const NO_METADATA: i32 = 0x0004;

/// Appends STARTUP, which asks for CQL 3.0.0 and no compression, on `stream`.
pub(super) fn encode_startup(out: &mut Vec<u8>, stream: i16) {
    let start = begin(out, stream, STARTUP);
    put_short(out, 1);
    put_string(out, "CQL_VERSION");
    put_string(out, "3.0.0");
    end(out, start);
}

/// Appends QUERY of `query`, without bound values, on `stream`.
pub(super) fn encode_query(out: &mut Vec<u8>, stream: i16, query: impl fmt::Display) {
    let start = begin(out, stream, QUERY);
    put_long_string(out, query);
    put_short(out, CONSISTENCY_ONE);
    out.push(0);
    end(out, start);
}

/// Appends PREPARE of `query` on `stream`.
pub(super) fn encode_prepare(out: &mut Vec<u8>, stream: i16, query: &str) {
    let start = begin(out, stream, PREPARE);
    put_long_string(out, query);
    end(out, start);
}

/// Appends EXECUTE of the prepared statement `id` with `values` bound to its markers in order,
/// on `stream`. Rows come without their metadata: the load knows their columns.
pub(super) fn encode_execute(out: &mut Vec<u8>, stream: i16, id: &[u8], values: &[&[u8]]) {
    let start = begin(out, stream, EXECUTE);
    put_short(out, id.len() as u16);
    out.extend_from_slice(id);
    put_short(out, CONSISTENCY_ONE);
    out.push(FLAG_VALUES | FLAG_SKIP_METADATA);
    put_short(out, values.len() as u16);
    for value in values {
        out.extend_from_slice(&(value.len() as i32).to_be_bytes());
        out.extend_from_slice(value);
    }
    end(out, start);
}

/// Appends a request header with a length of 0, to be set by [`end`]; returns where it starts.
fn begin(out: &mut Vec<u8>, stream: i16, opcode: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[VERSION, 0]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.push(opcode);
    out.extend_from_slice(&[0; 4]);
    start
}

/// Sets the body length of the frame starting at `start` to what follows its header.
fn end(out: &mut [u8], start: usize) {
    let len = (out.len() - start - HEADER_LEN) as u32;
    out[start + 5..start + HEADER_LEN].copy_from_slice(&len.to_be_bytes());
}

fn put_short(out: &mut Vec<u8>, n: u16) {
    out.extend_from_slice(&n.to_be_bytes());
}

fn put_string(out: &mut Vec<u8>, text: &str) {
    put_short(out, text.len() as u16);
    out.extend_from_slice(text.as_bytes());
}

/// Writes `text` as a [long string]: its length is set once it is written.
fn put_long_string(out: &mut Vec<u8>, text: impl fmt::Display) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{text}");
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// A whole response frame, its body borrowed from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Frame<'a> {
    pub stream: i16,
    flags: u8,
    opcode: u8,
    body: &'a [u8],
}

/// The responses cannot be read any more; the connection is lost.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct FrameError(String);

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FrameError {}

/// Cuts the first whole frame off `buf`: the frame and how many bytes it takes, or `None` when
/// more bytes are needed.
pub(super) fn cut(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    if header[0] != RESPONSE | VERSION {
        return Err(FrameError(format!(
            "a frame of version byte 0x{:02x} where a v4 response (0x84) was expected",
            header[0]
        )));
    }
    let len = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) as usize;
    if len > MAX_BODY {
        return Err(FrameError(format!("a response body of {len} bytes")));
    }
    let Some(body) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(None);
    };
    let frame = Frame {
        stream: i16::from_be_bytes([header[2], header[3]]),
        flags: header[1],
        opcode: header[4],
        body,
    };
    Ok(Some((frame, HEADER_LEN + len)))
}

/// A response, borrowing from its frame.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Response<'a> {
    Ready,
    Error {
        code: i32,
        message: &'a str,
    },
    /// RESULT Void: the answer to INSERT.
    Void,
    /// RESULT Rows: every row, each a value per column (`None` is null).
    Rows(Vec<Vec<Option<&'a [u8]>>>),
    /// RESULT Prepared: the id EXECUTE names.
    Prepared {
        id: &'a [u8],
    },
    /// RESULT Set_keyspace or Schema_change: the answers to USE and to CREATE.
    Done,
    /// Any other opcode, such as AUTHENTICATE or EVENT.
    Other(u8),
}

impl<'a> Response<'a> {
    /// Reads the body of `frame`.
    pub(super) fn parse(frame: &Frame<'a>) -> Result<Response<'a>, FrameError> {
        if frame.flags & FLAG_COMPRESSION != 0 {
            return Err(FrameError("a compressed response, never asked for".into()));
        }
        let mut body = Body(frame.body);
        if frame.flags & FLAG_WARNING != 0 {
            for _ in 0..body.short()? {
                body.string()?;
            }
        }
        Ok(match frame.opcode {
            READY => Response::Ready,
            ERROR => Response::Error {
                code: body.int()?,
                message: body.string()?,
            },
            RESULT => match body.int()? {
                VOID => Response::Void,
                ROWS => Response::Rows(rows(&mut body)?),
                PREPARED => Response::Prepared {
                    id: body.short_bytes()?,
                },
                SET_KEYSPACE | SCHEMA_CHANGE => Response::Done,
                kind => return Err(FrameError(format!("a RESULT of unknown kind {kind}"))),
            },
            other => Response::Other(other),
        })
    }
}

/// Reads a Rows result after its kind: the metadata, then the rows.
fn rows<'a>(body: &mut Body<'a>) -> Result<Vec<Vec<Option<&'a [u8]>>>, FrameError> {
    let flags = body.int()?;
    let columns = body.count()?;
    if flags & HAS_MORE_PAGES != 0 {
        body.bytes()?;
    }
    if flags & NO_METADATA == 0 {
        let global = flags & GLOBAL_TABLES_SPEC != 0;
        if global {
            body.string()?;
            body.string()?;
        }
        for _ in 0..columns {
            if !global {
                body.string()?;
                body.string()?;
            }
            body.string()?;
            body.skip_type()?;
        }
    }
    let count = body.count()?;
    (0..count)
        .map(|_| (0..columns).map(|_| body.bytes()).collect())
        .collect()
}

/// A response body being read from the front.
struct Body<'a>(&'a [u8]);

impl<'a> Body<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.0.len() < n {
            return Err(FrameError("a response body shorter than it says".into()));
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn short(&mut self) -> Result<u16, FrameError> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn int(&mut self) -> Result<i32, FrameError> {
        let bytes = self.take(4)?;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// An [int] that counts something, so cannot be negative.
    fn count(&mut self) -> Result<usize, FrameError> {
        let n = self.int()?;
        usize::try_from(n).map_err(|_| FrameError(format!("a count of {n}")))
    }

    fn string(&mut self) -> Result<&'a str, FrameError> {
        let len = self.short()?;
        std::str::from_utf8(self.take(usize::from(len))?)
            .map_err(|_| FrameError("a [string] that is not UTF-8".into()))
    }

    fn short_bytes(&mut self) -> Result<&'a [u8], FrameError> {
        let len = self.short()?;
        self.take(usize::from(len))
    }

    /// [bytes]: `None` for a negative length, which is null.
    fn bytes(&mut self) -> Result<Option<&'a [u8]>, FrameError> {
        match usize::try_from(self.int()?) {
            Ok(len) => self.take(len).map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Skips an [option] describing a column's type, with the types inside it.
    fn skip_type(&mut self) -> Result<(), FrameError> {
        match self.short()? {
            // Custom: a class name.
            0x0000 => {
                self.string()?;
            }
            // List and set: the element type.
            0x0020 | 0x0022 => self.skip_type()?,
            // Map: the key and value types.
            0x0021 => {
                self.skip_type()?;
                self.skip_type()?;
            }
            // User type: keyspace, name, then named fields.
            0x0030 => {
                self.string()?;
                self.string()?;
                for _ in 0..self.short()? {
                    self.string()?;
                    self.skip_type()?;
                }
            }
            // Tuple: its element types.
            0x0031 => {
                for _ in 0..self.short()? {
                    self.skip_type()?;
                }
            }
            // Every other type is its id alone.
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response frame on `stream` with `opcode` and `body`.
    fn response(stream: i16, flags: u8, opcode: u8, body: &[u8]) -> Vec<u8> {
        let mut frame = vec![RESPONSE | VERSION, flags];
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.push(opcode);
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(body);
        frame
    }

    fn parsed(bytes: &[u8]) -> Response<'_> {
        let (frame, len) = cut(bytes).unwrap().unwrap();
        assert_eq!(len, bytes.len());
        Response::parse(&frame).unwrap()
    }

    #[test]
    fn encodes_startup() {
        let mut out = Vec::new();
        encode_startup(&mut out, 0);
        let mut expected = vec![0x04, 0, 0, 0, 0x01, 0, 0, 0, 22, 0, 1, 0, 11];
        expected.extend_from_slice(b"CQL_VERSION");
        expected.extend_from_slice(&[0, 5]);
        expected.extend_from_slice(b"3.0.0");
        assert_eq!(out, expected);
    }

    #[test]
    fn encodes_a_query_with_its_text_written_in_place() {
        let mut out = vec![0xaa];
        encode_query(&mut out, 258, format_args!("SELECT {} FROM t", 7));
        // After what was there: the header (stream 258, 22 bytes of body), the text's length and
        // the text, consistency ONE and no flags.
        let mut expected = vec![0xaa, 0x04, 0, 1, 2, 0x07, 0, 0, 0, 22, 0, 0, 0, 15];
        expected.extend_from_slice(b"SELECT 7 FROM t");
        expected.extend_from_slice(&[0, 1, 0]);
        assert_eq!(out, expected);
    }

    #[test]
    fn encodes_prepare_and_execute() {
        let mut out = Vec::new();
        encode_prepare(&mut out, 3, "SELECT ?");
        assert_eq!(
            out,
            [
                &[0x04, 0, 0, 3, 0x09, 0, 0, 0, 12, 0, 0, 0, 8][..],
                b"SELECT ?"
            ]
            .concat()
        );
        out.clear();
        encode_execute(&mut out, -1, b"id", &[b"ab", b""]);
        let body = [
            &[0, 2][..],
            b"id",
            &[0, 1, 0x03, 0, 2],
            &[0, 0, 0, 2],
            b"ab",
            &[0, 0, 0, 0],
        ]
        .concat();
        let mut expected = vec![0x04, 0, 0xff, 0xff, 0x0a, 0, 0, 0, body.len() as u8];
        expected.extend_from_slice(&body);
        assert_eq!(out, expected);
    }

    #[test]
    fn waits_for_every_byte_of_a_frame() {
        let frame = response(5, 0, RESULT, &VOID.to_be_bytes());
        for cut_at in 0..frame.len() {
            assert_eq!(cut(&frame[..cut_at]), Ok(None), "cut at {cut_at}");
        }
        let mut two = frame.clone();
        two.extend(response(6, 0, READY, &[]));
        let (first, len) = cut(&two).unwrap().unwrap();
        assert_eq!((first.stream, len), (5, frame.len()));
        let (second, _) = cut(&two[len..]).unwrap().unwrap();
        assert_eq!(Response::parse(&second), Ok(Response::Ready));
    }

    #[test]
    fn rejects_what_is_no_v4_response() {
        let request = {
            let mut out = Vec::new();
            encode_startup(&mut out, 0);
            out
        };
        assert!(cut(&request).is_err());
        let v5 = [0x85, 0, 0, 0, READY, 0, 0, 0, 0];
        assert!(cut(&v5).is_err());
        let huge = [0x84, 0, 0, 0, RESULT, 0x7f, 0, 0, 0];
        assert!(cut(&huge).is_err());
        let compressed = response(0, FLAG_COMPRESSION, RESULT, &VOID.to_be_bytes());
        let (frame, _) = cut(&compressed).unwrap().unwrap();
        assert!(Response::parse(&frame).is_err());
    }

    #[test]
    fn reads_errors_and_results() {
        let mut error = 0x2200i32.to_be_bytes().to_vec();
        error.extend_from_slice(&[0, 7]);
        error.extend_from_slice(b"no such");
        assert_eq!(
            parsed(&response(1, 0, ERROR, &error)),
            Response::Error {
                code: 0x2200,
                message: "no such"
            }
        );
        assert_eq!(
            parsed(&response(1, 0, RESULT, &VOID.to_be_bytes())),
            Response::Void
        );
        let prepared = [&PREPARED.to_be_bytes()[..], &[0, 2, 0xab, 0xcd], &[0; 12]].concat();
        assert_eq!(
            parsed(&response(1, 0, RESULT, &prepared)),
            Response::Prepared { id: &[0xab, 0xcd] }
        );
        let keyspace = [&SET_KEYSPACE.to_be_bytes()[..], &[0, 2], b"ks"].concat();
        assert_eq!(parsed(&response(1, 0, RESULT, &keyspace)), Response::Done);
        assert_eq!(parsed(&response(1, 0, 0x0c, &[])), Response::Other(0x0c));
    }

    #[test]
    fn skips_warnings() {
        let body = [&[0, 1, 0, 4][..], b"slow", &VOID.to_be_bytes()].concat();
        assert_eq!(
            parsed(&response(1, FLAG_WARNING, RESULT, &body)),
            Response::Void
        );
    }

    /// A Rows body with `flags`, two columns and the given metadata, then one row: 'a' and
    /// null.
    fn rows_body(flags: i32, metadata: &[u8]) -> Vec<u8> {
        [
            &ROWS.to_be_bytes()[..],
            &flags.to_be_bytes(),
            &2i32.to_be_bytes(),
            metadata,
            &1i32.to_be_bytes(),
            &1i32.to_be_bytes(),
            b"a",
            &(-1i32).to_be_bytes(),
        ]
        .concat()
    }

    #[test]
    fn reads_rows_with_and_without_metadata() {
        let expected = Response::Rows(vec![vec![Some(&b"a"[..]), None]]);
        let bare = rows_body(NO_METADATA, &[]);
        assert_eq!(parsed(&response(2, 0, RESULT, &bare)), expected);
        // Global table spec; columns: text, and map<text, list<int>>.
        let global = [
            &[0, 2][..],
            b"ks",
            &[0, 1],
            b"t",
            &[0, 1],
            b"k",
            &[0, 0x0d],
            &[0, 1],
            b"v",
            &[0, 0x21, 0, 0x0d, 0, 0x20, 0, 0x09],
        ]
        .concat();
        let described = rows_body(GLOBAL_TABLES_SPEC, &global);
        assert_eq!(parsed(&response(2, 0, RESULT, &described)), expected);
        // A table spec per column, a paging state; a tuple<int, text> and a custom type.
        let per_column = [
            &[0, 0, 0, 3][..],
            b"abc",
            &[0, 2],
            b"ks",
            &[0, 1],
            b"t",
            &[0, 1],
            b"k",
            &[0, 0x31, 0, 2, 0, 0x09, 0, 0x0d],
            &[0, 2],
            b"ks",
            &[0, 1],
            b"t",
            &[0, 1],
            b"v",
            &[0, 0, 0, 1],
            b"C",
        ]
        .concat();
        let paged = rows_body(HAS_MORE_PAGES, &per_column);
        assert_eq!(parsed(&response(2, 0, RESULT, &paged)), expected);
        // A user type: keyspace, name, and one field of type int.
        let udt = [
            &[0, 2][..],
            b"ks",
            &[0, 1],
            b"t",
            &[0, 1],
            b"k",
            &[0, 0x30, 0, 2],
            b"ks",
            &[0, 1],
            b"u",
            &[0, 1, 0, 1],
            b"f",
            &[0, 0x09],
            &[0, 1],
            b"v",
            &[0, 0x04],
        ]
        .concat();
        let with_udt = rows_body(GLOBAL_TABLES_SPEC, &udt);
        assert_eq!(parsed(&response(2, 0, RESULT, &with_udt)), expected);
    }

    #[test]
    fn rejects_truncated_bodies() {
        let body = rows_body(NO_METADATA, &[]);
        for len in 0..body.len() {
            let frame = response(1, 0, RESULT, &body[..len]);
            let (frame, _) = cut(&frame).unwrap().unwrap();
            assert!(Response::parse(&frame).is_err(), "cut at {len}");
        }
    }
}
