//! Request bodies as the fixture reads them (with their bound values, which policy parsing
//! skips) and the response bodies it writes, in protocol v4 or v5 as the envelope's version
//! says: [short], [int], [string], [long string], [short bytes], [bytes], [string map],
//! [string multimap]. v5 widens query flags to an [int], lets QUERY, PREPARE and BATCH name a
//! keyspace (Cassandra reads the keyspace flag of a QUERY's or BATCH's parameters in v3 and v4
//! too, and so does the fixture), and identifies result metadata (Prepared results, EXECUTE,
//! Metadata_changed).
//!
//! Bodies only: envelopes and segments are `framing`'s business.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use axoneme_cassandra::frame::{self, opcode, Body, Header, FLAG_CUSTOM_PAYLOAD};

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
pub struct Params<'b> {
    pub values: Vec<Bound>,
    /// The client knows the result metadata: Rows come without it.
    pub skip_metadata: bool,
    /// The keyspace unqualified names resolve against, for this request only (flag 0x80).
    pub keyspace: Option<&'b str>,
}

/// One entry of a BATCH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchItem<'b> {
    Query(&'b str),
    Prepared(&'b [u8]),
}

/// A BATCH: its entries with their bound values and the keyspace its query strings resolve
/// against (flag 0x80).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch<'b> {
    pub entries: Vec<(BatchItem<'b>, Vec<Bound>)>,
    pub keyspace: Option<&'b str>,
}

/// A request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'b> {
    Options,
    Startup {
        compression: Option<&'b str>,
    },
    Register,
    Query {
        query: &'b str,
        params: Params<'b>,
    },
    /// PREPARE and, in v5, the keyspace to prepare it in.
    Prepare {
        query: &'b str,
        keyspace: Option<&'b str>,
    },
    /// EXECUTE and, in v5, the id of the result metadata the client holds.
    Execute {
        id: &'b [u8],
        result_metadata_id: Option<&'b [u8]>,
        params: Params<'b>,
    },
    Batch(Batch<'b>),
    Other(u8),
}

/// Query and batch flags: a [byte] in v4, an [int] in v5.
const VALUES: u32 = 0x01;
const SKIP_METADATA: u32 = 0x02;
const PAGE_SIZE: u32 = 0x04;
const PAGING_STATE: u32 = 0x08;
const SERIAL_CONSISTENCY: u32 = 0x10;
const TIMESTAMP: u32 = 0x20;
const NAMES: u32 = 0x40;
/// Defined by v5; read by Cassandra in every version.
const KEYSPACE: u32 = 0x80;
const NOW_IN_SECONDS: u32 = 0x100;

/// PREPARE flag (v5): a keyspace follows the query.
const PREPARE_KEYSPACE: i32 = 0x01;

/// Reads query or batch flags.
fn flags(body: &mut Body<'_>, version: u8) -> Result<u32, Malformed> {
    let flags = match version >= 5 {
        true => body.int()? as u32,
        false => u32::from(body.byte()?),
    };
    match flags & NAMES != 0 {
        true => Err(Malformed("named values are not supported".into())),
        false => Ok(flags),
    }
}

/// Reads what follows the timestamp: the keyspace, whose flag only the v5 specification
/// defines but Cassandra's codec reads from a v3 or v4 flags byte too, and (v5) the time of the
/// request in seconds, which the fixture (without TTLs) does not use.
fn keyspace_and_now<'b>(
    body: &mut Body<'b>,
    version: u8,
    flags: u32,
) -> Result<Option<&'b str>, Malformed> {
    let keyspace = match flags & KEYSPACE != 0 {
        true => Some(body.string()?),
        false => None,
    };
    if version >= 5 && flags & NOW_IN_SECONDS != 0 {
        body.int()?;
    }
    Ok(keyspace)
}

/// Reads `<consistency><flags>…`.
fn params<'b>(body: &mut Body<'b>, version: u8) -> Result<Params<'b>, Malformed> {
    body.short()?;
    let flags = flags(body, version)?;
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
        keyspace: keyspace_and_now(body, version, flags)?,
    })
}

/// Reads a BATCH body.
fn batch<'b>(body: &mut Body<'b>, version: u8) -> Result<Batch<'b>, Malformed> {
    body.byte()?;
    let mut entries = Vec::new();
    for _ in 0..body.short()? {
        let item = match body.byte()? {
            0 => BatchItem::Query(body.long_string()?),
            1 => BatchItem::Prepared(body.short_bytes()?),
            kind => return Err(Malformed(format!("batch entry kind {kind}"))),
        };
        entries.push((item, values(body)?));
    }
    // Cassandra reads a BATCH's parameters with a QUERY's codec.
    let params = params(body, version)?;
    Ok(Batch {
        entries,
        keyspace: params.keyspace,
    })
}

impl<'b> Request<'b> {
    /// Reads the uncompressed body of a request envelope with `header`.
    pub fn parse(header: &Header, body: &'b [u8]) -> Result<Request<'b>, Malformed> {
        let version = header.version;
        let mut body = Body::new(body);
        if header.flags & FLAG_CUSTOM_PAYLOAD != 0 {
            body.skip_bytes_map()?;
        }
        Ok(match header.opcode {
            opcode::OPTIONS => Request::Options,
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
            REGISTER => Request::Register,
            opcode::QUERY => Request::Query {
                query: body.long_string()?,
                params: params(&mut body, version)?,
            },
            opcode::PREPARE => {
                let query = body.long_string()?;
                let keyspace = match version >= 5 && body.int()? & PREPARE_KEYSPACE != 0 {
                    true => Some(body.string()?),
                    false => None,
                };
                Request::Prepare { query, keyspace }
            }
            opcode::EXECUTE => Request::Execute {
                id: body.short_bytes()?,
                result_metadata_id: match version >= 5 {
                    true => Some(body.short_bytes()?),
                    false => None,
                },
                params: params(&mut body, version)?,
            },
            opcode::BATCH => Request::Batch(batch(&mut body, version)?),
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

    /// Metadata: flags, column count, `extra` (Prepared's key indexes), the new metadata id
    /// when `columns` says it changed, then the global table spec and the columns unless they
    /// are skipped.
    fn metadata(&mut self, spec: &Spec, columns: Columns<'_>, extra: impl FnOnce(&mut Writer)) {
        let skip = columns == Columns::Skipped;
        let described = !skip && !spec.columns.is_empty();
        let mut flags = match (described, skip) {
            (true, _) => GLOBAL_TABLES_SPEC,
            (false, true) => NO_METADATA,
            (false, false) => 0,
        };
        if let Columns::Changed(_) = columns {
            flags |= METADATA_CHANGED;
        }
        self.int(flags);
        self.int(spec.columns.len() as i32);
        extra(self);
        if let Columns::Changed(id) = columns {
            self.short_bytes(id);
        }
        if described {
            self.string(&spec.keyspace);
            self.string(&spec.table);
            for column in &spec.columns {
                self.string(&column.name);
                column.ty.write_option(&mut self.0);
            }
        }
    }

    /// The metadata of what a prepared statement returns: none (No_metadata, no columns)
    /// unless it is a SELECT.
    fn result_metadata(&mut self, result: Option<&Spec>) {
        match result {
            Some(spec) => self.metadata(spec, Columns::Described, |_| {}),
            None => {
                self.int(NO_METADATA);
                self.int(0);
            }
        }
    }
}

/// How metadata describes its columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Columns<'a> {
    /// With the global table spec and every column.
    Described,
    /// Only their count: the client knows them.
    Skipped,
    /// Described, with the new metadata id, because the client knows other ones (v5).
    Changed(&'a [u8]),
}

/// Metadata flags.
const GLOBAL_TABLES_SPEC: i32 = 0x0001;
const NO_METADATA: i32 = 0x0004;
const METADATA_CHANGED: i32 = 0x0008;

/// The id of the metadata of what a prepared statement returns (v5): a digest of its encoding,
/// so another keyspace, table, column name or type gives another id.
pub fn metadata_id(result: Option<&Spec>) -> Vec<u8> {
    let mut w = Writer::default();
    w.result_metadata(result);
    let mut hasher = DefaultHasher::new();
    w.0.hash(&mut hasher);
    let first = hasher.finish();
    w.0.len().hash(&mut hasher);
    [first.to_be_bytes(), hasher.finish().to_be_bytes()].concat()
}

/// SUPPORTED's body: the CQL version, the protocol versions and the compressions.
pub fn supported(cql_version: &str) -> Vec<u8> {
    let mut w = Writer::default();
    w.short(3);
    w.string("CQL_VERSION");
    w.short(1);
    w.string(cql_version);
    w.string("PROTOCOL_VERSIONS");
    w.short(2);
    w.string("4/v4");
    w.string("5/v5");
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

/// A RESULT body. Rows come without their metadata when `skip_metadata`, unless `known` (the
/// result metadata id a v5 EXECUTE names) differs from theirs: then they carry their metadata
/// and its new id, flagged Metadata_changed.
pub fn result(outcome: &Outcome, skip_metadata: bool, known: Option<&[u8]>) -> Vec<u8> {
    let mut w = Writer::default();
    match outcome {
        Outcome::Void => w.int(0x0001),
        Outcome::Rows(spec, rows) => {
            w.int(0x0002);
            let current = known.map(|_| metadata_id(Some(spec)));
            let columns = match &current {
                Some(current) if known != Some(current.as_slice()) => Columns::Changed(current),
                _ if skip_metadata => Columns::Skipped,
                _ => Columns::Described,
            };
            w.metadata(spec, columns, |_| {});
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

/// A Prepared RESULT body; from v5 with the id of the result metadata.
pub fn prepared(prepared: &Prepared, version: u8) -> Vec<u8> {
    let mut w = Writer::default();
    w.int(0x0004);
    w.short_bytes(&prepared.id);
    if version >= 5 {
        w.short_bytes(&metadata_id(prepared.result.as_ref()));
    }
    w.metadata(&prepared.bind, Columns::Described, |w| {
        w.int(prepared.pk_indexes.len() as i32);
        for &index in &prepared.pk_indexes {
            w.short(index);
        }
    });
    w.result_metadata(prepared.result.as_ref());
    w.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Column, Store};
    use crate::types::CqlType;

    fn header(version: u8, op: u8) -> Header {
        Header {
            version,
            response: false,
            flags: 0,
            stream: 1,
            opcode: op,
            length: 0,
        }
    }

    fn string(s: &str) -> Vec<u8> {
        let mut bytes = (s.len() as u16).to_be_bytes().to_vec();
        bytes.extend_from_slice(s.as_bytes());
        bytes
    }

    fn long_string(s: &str) -> Vec<u8> {
        let mut bytes = (s.len() as i32).to_be_bytes().to_vec();
        bytes.extend_from_slice(s.as_bytes());
        bytes
    }

    fn spec() -> Spec {
        Spec {
            keyspace: "ks".into(),
            table: "t".into(),
            columns: vec![Column {
                name: "k".into(),
                ty: CqlType::Int,
            }],
        }
    }

    #[test]
    fn reads_query_with_values_and_flags() {
        let mut body = long_string("SELECT 1");
        let flags = (VALUES | SKIP_METADATA | PAGE_SIZE) as u8;
        body.extend_from_slice(&[0, 1, flags, 0, 3]);
        body.extend_from_slice(&[0, 0, 0, 1, 9]);
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&(-2i32).to_be_bytes());
        body.extend_from_slice(&5000i32.to_be_bytes());
        let query = header(4, opcode::QUERY);
        assert_eq!(
            Request::parse(&query, &body),
            Ok(Request::Query {
                query: "SELECT 1",
                params: Params {
                    values: vec![Bound::Value(vec![9]), Bound::Null, Bound::Unset],
                    skip_metadata: true,
                    keyspace: None,
                },
            })
        );
        assert!(Request::parse(&query, &body[..body.len() - 1]).is_err());
    }

    #[test]
    fn reads_v5_int_flags_keyspace_and_now_in_seconds() {
        let mut body = long_string("SELECT * FROM t");
        body.extend_from_slice(&[0, 1]);
        let flags = VALUES | TIMESTAMP | KEYSPACE | NOW_IN_SECONDS;
        body.extend_from_slice(&flags.to_be_bytes());
        body.extend_from_slice(&[0, 1, 0, 0, 0, 1, 7]);
        body.extend_from_slice(&42i64.to_be_bytes());
        body.extend_from_slice(&string("ks"));
        body.extend_from_slice(&1_700_000_000i32.to_be_bytes());
        let params = Params {
            values: vec![Bound::Value(vec![7])],
            skip_metadata: false,
            keyspace: Some("ks"),
        };
        assert_eq!(
            Request::parse(&header(5, opcode::QUERY), &body),
            Ok(Request::Query {
                query: "SELECT * FROM t",
                params: params.clone(),
            })
        );
        assert!(Request::parse(&header(5, opcode::QUERY), &body[..body.len() - 1]).is_err());

        let mut execute = vec![0, 2, 0xab, 0xcd, 0, 1, 0xef];
        execute.extend_from_slice(&body[4 + 15..]);
        assert_eq!(
            Request::parse(&header(5, opcode::EXECUTE), &execute),
            Ok(Request::Execute {
                id: &[0xab, 0xcd],
                result_metadata_id: Some(&[0xef]),
                params,
            })
        );

        let mut prepare = long_string("SELECT * FROM t");
        prepare.extend_from_slice(&PREPARE_KEYSPACE.to_be_bytes());
        prepare.extend_from_slice(&string("ks"));
        assert_eq!(
            Request::parse(&header(5, opcode::PREPARE), &prepare),
            Ok(Request::Prepare {
                query: "SELECT * FROM t",
                keyspace: Some("ks"),
            })
        );
        assert_eq!(
            Request::parse(&header(4, opcode::PREPARE), &prepare),
            Ok(Request::Prepare {
                query: "SELECT * FROM t",
                keyspace: None,
            })
        );
    }

    #[test]
    fn reads_batches_of_both_versions() {
        let mut entries = vec![1, 0, 2];
        entries.extend_from_slice(&[0]);
        entries.extend_from_slice(&long_string("INSERT INTO t (k) VALUES (?)"));
        entries.extend_from_slice(&[0, 1, 0, 0, 0, 1, 5]);
        entries.extend_from_slice(&[1, 0, 1, 0x11, 0, 0]);
        entries.extend_from_slice(&[0, 1]);
        let expected = vec![
            (
                BatchItem::Query("INSERT INTO t (k) VALUES (?)"),
                vec![Bound::Value(vec![5])],
            ),
            (BatchItem::Prepared(&[0x11][..]), vec![]),
        ];
        let mut v4 = entries.clone();
        v4.extend_from_slice(&[TIMESTAMP as u8]);
        v4.extend_from_slice(&7i64.to_be_bytes());
        assert_eq!(
            Request::parse(&header(4, opcode::BATCH), &v4),
            Ok(Request::Batch(Batch {
                entries: expected.clone(),
                keyspace: None,
            }))
        );
        let mut v5 = entries;
        v5.extend_from_slice(&(SERIAL_CONSISTENCY | KEYSPACE | NOW_IN_SECONDS).to_be_bytes());
        v5.extend_from_slice(&[0, 8]);
        v5.extend_from_slice(&string("ks"));
        v5.extend_from_slice(&0i32.to_be_bytes());
        assert_eq!(
            Request::parse(&header(5, opcode::BATCH), &v5),
            Ok(Request::Batch(Batch {
                entries: expected,
                keyspace: Some("ks"),
            }))
        );
        let mut named = v5.clone();
        let at = named.len() - 11;
        named[at] |= NAMES as u8;
        assert!(Request::parse(&header(5, opcode::BATCH), &named).is_err());
    }

    #[test]
    fn writes_rows_with_global_spec() {
        let rows = vec![vec![Some(vec![0, 0, 0, 5])], vec![None]];
        let body = result(&Outcome::Rows(spec(), rows.clone()), false, None);
        let mut expected = vec![0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1];
        expected.extend_from_slice(&[0, 2, b'k', b's', 0, 1, b't', 0, 1, b'k', 0, 9]);
        expected.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(body, expected);
        let skipped = result(&Outcome::Rows(spec(), rows), true, None);
        assert_eq!(skipped[..12], [0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 1]);
        assert_eq!(skipped.len(), expected.len() - 12);
    }

    #[test]
    fn writes_v5_prepared_results_and_changed_metadata() {
        let mut store = Store::new();
        let node = "127.0.0.1:9042".parse().unwrap();
        for query in [
            "CREATE KEYSPACE ks WITH replication = {}",
            "CREATE TABLE ks.t (k int PRIMARY KEY)",
        ] {
            let stmt = crate::store::parse(query).unwrap();
            store.execute(&stmt, None, &[], node).unwrap();
        }
        let statement = store.prepare("SELECT * FROM ks.t", None).unwrap();
        let id = metadata_id(Some(&spec()));
        let v4 = prepared(&statement, 4);
        let mut expected = v4[..22].to_vec();
        expected.extend_from_slice(&[0, 16]);
        expected.extend_from_slice(&id);
        expected.extend_from_slice(&v4[22..]);
        assert_eq!(prepared(&statement, 5), expected);
        assert_ne!(id, metadata_id(None));

        let rows = Outcome::Rows(spec(), vec![vec![None]]);
        let same = result(&rows, true, Some(&id));
        assert_eq!(same, result(&rows, true, None));
        let other = Spec {
            table: "u".into(),
            ..spec()
        };
        let changed = result(&rows, true, Some(&metadata_id(Some(&other))));
        assert_eq!(changed[4..12], [0, 0, 0, 9, 0, 0, 0, 1]);
        assert_eq!(changed[12..14], [0, 16]);
        assert_eq!(changed[14..30], id);
        assert_eq!(changed[30..], result(&rows, false, None)[12..]);
    }
}
