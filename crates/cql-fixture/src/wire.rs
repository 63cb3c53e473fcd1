//! Request bodies as the fixture reads them (with their bound values, which policy parsing
//! skips) and the response bodies it writes, in protocol v4's notation: [short], [int],
//! [string], [long string], [short bytes], [bytes], [string map], [string multimap].

use axoneme_cassandra::frame::{self, opcode, Body};

use crate::store::{Bound, CqlError, Outcome, Prepared, Spec};

/// Opcodes the fixture answers that `axoneme_cassandra::frame::opcode` does not name.
pub const SUPPORTED: u8 = 0x06;
pub const REGISTER: u8 = 0x0b;

/// A body shorter than what it announces, or otherwise unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl From<frame::Malformed> for Malformed {
    fn from(error: frame::Malformed) -> Self {
        Malformed(format!("truncated or malformed {}", error.what))
    }
}

/// A bound [value]: -1 is null, -2 "not set".
fn value(body: &mut Body<'_>) -> Result<Bound, Malformed> {
    match body.int()? {
        -1 => Ok(Bound::Null),
        -2 => Ok(Bound::Unset),
        n if n < 0 => Err(Malformed(format!("value length {n}"))),
        n => Ok(Bound::Value(body.take(n as usize, "value")?.to_vec())),
    }
}

/// A [short] count of bound values, then the values.
fn values(body: &mut Body<'_>) -> Result<Vec<Bound>, Malformed> {
    (0..body.short()?).map(|_| value(body)).collect()
}

/// What QUERY and EXECUTE add to a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub values: Vec<Bound>,
    /// The client knows the result metadata: Rows come without it.
    pub skip_metadata: bool,
}

/// One entry of a BATCH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchItem<'b> {
    Query(&'b str),
    Prepared(&'b [u8]),
}

/// A request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'b> {
    Options,
    Startup { compression: Option<&'b str> },
    Register,
    Query { query: &'b str, params: Params },
    Prepare { query: &'b str },
    Execute { id: &'b [u8], params: Params },
    Batch(Vec<(BatchItem<'b>, Vec<Bound>)>),
    Other(u8),
}

/// Query flags.
const VALUES: u8 = 0x01;
const SKIP_METADATA: u8 = 0x02;
const PAGE_SIZE: u8 = 0x04;
const PAGING_STATE: u8 = 0x08;
const SERIAL_CONSISTENCY: u8 = 0x10;
const TIMESTAMP: u8 = 0x20;
const NAMES: u8 = 0x40;

/// Reads `<consistency><flags>…` (v4).
fn params(body: &mut Body<'_>) -> Result<Params, Malformed> {
    body.short()?;
    let flags = body.byte()?;
    if flags & NAMES != 0 {
        return Err(Malformed("named values are not supported".into()));
    }
    let values = match flags & VALUES != 0 {
        true => values(body)?,
        false => Vec::new(),
    };
    if flags & PAGE_SIZE != 0 {
        body.int()?;
    }
    if flags & PAGING_STATE != 0 {
        value(body)?;
    }
    if flags & SERIAL_CONSISTENCY != 0 {
        body.short()?;
    }
    if flags & TIMESTAMP != 0 {
        body.take(8, "timestamp")?;
    }
    Ok(Params {
        values,
        skip_metadata: flags & SKIP_METADATA != 0,
    })
}

impl<'b> Request<'b> {
    /// Reads an uncompressed request body.
    pub fn parse(
        opcode: u8,
        custom_payload: bool,
        body: &'b [u8],
    ) -> Result<Request<'b>, Malformed> {
        let mut body = Body::new(body);
        if custom_payload {
            body.skip_bytes_map()?;
        }
        Ok(match opcode {
            opcode::OPTIONS => Request::Options,
            opcode::STARTUP => {
                let mut compression = None;
                for _ in 0..body.short()? {
                    let (key, value) = (body.string()?, body.string()?);
                    if key.eq_ignore_ascii_case("COMPRESSION") {
                        compression = Some(value);
                    }
                }
                Request::Startup { compression }
            }
            REGISTER => Request::Register,
            opcode::QUERY => Request::Query {
                query: body.long_string()?,
                params: params(&mut body)?,
            },
            opcode::PREPARE => Request::Prepare {
                query: body.long_string()?,
            },
            opcode::EXECUTE => Request::Execute {
                id: body.short_bytes()?,
                params: params(&mut body)?,
            },
            opcode::BATCH => {
                body.byte()?;
                let mut entries = Vec::new();
                for _ in 0..body.short()? {
                    let item = match body.byte()? {
                        0 => BatchItem::Query(body.long_string()?),
                        1 => BatchItem::Prepared(body.short_bytes()?),
                        kind => return Err(Malformed(format!("batch entry kind {kind}"))),
                    };
                    entries.push((item, values(&mut body)?));
                }
                body.short()?;
                if body.byte()? & NAMES != 0 {
                    return Err(Malformed("named values are not supported".into()));
                }
                Request::Batch(entries)
            }
            other => Request::Other(other),
        })
    }
}

/// A response body under construction.
#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn short(&mut self, n: u16) {
        self.0.extend_from_slice(&n.to_be_bytes());
    }

    fn int(&mut self, n: i32) {
        self.0.extend_from_slice(&n.to_be_bytes());
    }

    fn string(&mut self, s: &str) {
        self.short(s.len() as u16);
        self.0.extend_from_slice(s.as_bytes());
    }

    fn short_bytes(&mut self, b: &[u8]) {
        self.short(b.len() as u16);
        self.0.extend_from_slice(b);
    }

    fn bytes(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => {
                self.int(b.len() as i32);
                self.0.extend_from_slice(b);
            }
            None => self.int(-1),
        }
    }

    /// Metadata: flags, column count, `extra` (Prepared's key indexes), then the global table
    /// spec and the columns; only the count, flagged No_metadata, when `skip`.
    fn metadata(&mut self, spec: &Spec, skip: bool, extra: impl FnOnce(&mut Writer)) {
        let described = !skip && !spec.columns.is_empty();
        self.int(match (described, skip) {
            (true, _) => 0x0001,
            (false, true) => 0x0004,
            (false, false) => 0,
        });
        self.int(spec.columns.len() as i32);
        extra(self);
        if described {
            self.string(&spec.keyspace);
            self.string(&spec.table);
            for column in &spec.columns {
                self.string(&column.name);
                column.ty.write_option(&mut self.0);
            }
        }
    }
}

/// SUPPORTED's body: the CQL version and the compressions.
pub fn supported(cql_version: &str) -> Vec<u8> {
    let mut w = Writer::default();
    w.short(2);
    w.string("CQL_VERSION");
    w.short(1);
    w.string(cql_version);
    w.string("COMPRESSION");
    w.short(2);
    w.string("lz4");
    w.string("snappy");
    w.0
}

/// An ERROR body.
pub fn error(code: u32, message: &str, error: Option<&CqlError>) -> Vec<u8> {
    let mut w = Writer::default();
    w.int(code as i32);
    w.string(message);
    match error {
        Some(CqlError::AlreadyExists {
            keyspace, table, ..
        }) => {
            w.string(keyspace);
            w.string(table);
        }
        Some(CqlError::Unprepared(id)) => w.short_bytes(id),
        _ => {}
    }
    w.0
}

/// A RESULT body.
pub fn result(outcome: &Outcome, skip_metadata: bool) -> Vec<u8> {
    let mut w = Writer::default();
    match outcome {
        Outcome::Void => w.int(0x0001),
        Outcome::Rows(spec, rows) => {
            w.int(0x0002);
            w.metadata(spec, skip_metadata, |_| {});
            w.int(rows.len() as i32);
            for row in rows {
                for value in row {
                    w.bytes(value.as_deref());
                }
            }
        }
        Outcome::SetKeyspace(keyspace) => {
            w.int(0x0003);
            w.string(keyspace);
        }
        Outcome::SchemaChange {
            change,
            keyspace,
            table,
        } => {
            w.int(0x0005);
            w.string(change);
            w.string(if table.is_some() { "TABLE" } else { "KEYSPACE" });
            w.string(keyspace);
            if let Some(table) = table {
                w.string(table);
            }
        }
    }
    w.0
}

/// A Prepared RESULT body.
pub fn prepared(prepared: &Prepared) -> Vec<u8> {
    let mut w = Writer::default();
    w.int(0x0004);
    w.short_bytes(&prepared.id);
    w.metadata(&prepared.bind, false, |w| {
        w.int(prepared.pk_indexes.len() as i32);
        for &index in &prepared.pk_indexes {
            w.short(index);
        }
    });
    match &prepared.result {
        Some(spec) => w.metadata(spec, false, |_| {}),
        None => {
            w.int(0x0004);
            w.int(0);
        }
    }
    w.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Column;
    use crate::types::CqlType;

    #[test]
    fn reads_query_with_values_and_flags() {
        let mut body = Vec::new();
        body.extend_from_slice(&8i32.to_be_bytes());
        body.extend_from_slice(b"SELECT 1");
        body.extend_from_slice(&[0, 1, VALUES | SKIP_METADATA | PAGE_SIZE, 0, 3]);
        body.extend_from_slice(&[0, 0, 0, 1, 9]);
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&(-2i32).to_be_bytes());
        body.extend_from_slice(&5000i32.to_be_bytes());
        assert_eq!(
            Request::parse(opcode::QUERY, false, &body),
            Ok(Request::Query {
                query: "SELECT 1",
                params: Params {
                    values: vec![Bound::Value(vec![9]), Bound::Null, Bound::Unset],
                    skip_metadata: true,
                },
            })
        );
        assert!(Request::parse(opcode::QUERY, false, &body[..body.len() - 1]).is_err());
    }

    #[test]
    fn writes_rows_with_global_spec() {
        let spec = Spec {
            keyspace: "ks".into(),
            table: "t".into(),
            columns: vec![Column {
                name: "k".into(),
                ty: CqlType::Int,
            }],
        };
        let rows = vec![vec![Some(vec![0, 0, 0, 5])], vec![None]];
        let body = result(&Outcome::Rows(spec.clone(), rows.clone()), false);
        let mut expected = vec![0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1];
        expected.extend_from_slice(&[0, 2, b'k', b's', 0, 1, b't', 0, 1, b'k', 0, 9]);
        expected.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(body, expected);
        let skipped = result(&Outcome::Rows(spec, rows), true);
        assert_eq!(skipped[..12], [0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 1]);
        assert_eq!(skipped.len(), expected.len() - 12);
    }
}
