use super::*;
use axoneme_cassandra::segment::{self, SegmentError};

use crate::framing::Envelope;

fn session() -> Session {
    Session::new("127.0.0.1:9042".parse().unwrap())
}

fn envelope(version: u8, op: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![version, 0, 0, 3, op];
    bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
    bytes.extend_from_slice(body);
    bytes
}

/// The envelopes in `bytes`, as `framing` carries them.
fn decode(framing: Framing, bytes: &[u8]) -> Vec<Envelope> {
    let mut inbound = Inbound::default();
    inbound.set_framing(framing);
    inbound.push(bytes);
    let envelopes = std::iter::from_fn(|| inbound.next_envelope().unwrap()).collect();
    assert!(!inbound.is_partial());
    envelopes
}

/// Sends the request envelopes as the session expects them, all at once, and returns the
/// responses.
fn send(session: &mut Session, store: &Mutex<Store>, requests: &[Vec<u8>]) -> Vec<Envelope> {
    let framing = session.inbound.framing();
    let mut bytes = Vec::new();
    for request in requests {
        framing::write(framing, request, &mut bytes);
    }
    let mut out = Vec::new();
    session.receive(&bytes, store, &mut out).unwrap();
    decode(framing, &out)
}

/// Sends one request and returns its response.
fn request(
    session: &mut Session,
    store: &Mutex<Store>,
    version: u8,
    op: u8,
    body: &[u8],
) -> Envelope {
    let mut responses = send(session, store, &[envelope(version, op, body)]);
    assert_eq!(responses.len(), 1);
    responses.remove(0)
}

fn string(s: &str) -> Vec<u8> {
    let mut bytes = (s.len() as u16).to_be_bytes().to_vec();
    bytes.extend_from_slice(s.as_bytes());
    bytes
}

/// A QUERY body: the query, consistency ONE, `flags` (a byte in v4, an int in v5), `tail`.
fn query(version: u8, text: &str, flags: u32, tail: &[u8]) -> Vec<u8> {
    let mut body = (text.len() as i32).to_be_bytes().to_vec();
    body.extend_from_slice(text.as_bytes());
    body.extend_from_slice(&[0, 1]);
    match version {
        4 => body.push(flags as u8),
        _ => body.extend_from_slice(&flags.to_be_bytes()),
    }
    body.extend_from_slice(tail);
    body
}

fn startup(compression: Option<&str>) -> Vec<u8> {
    let mut body = vec![0, compression.map_or(0, |_| 1)];
    if let Some(name) = compression {
        body.extend_from_slice(&string("COMPRESSION"));
        body.extend_from_slice(&string(name));
    }
    body
}

/// A v5 session after STARTUP, with the keyspaces `a` and `b`, each with a table `t`.
fn v5_session(store: &Mutex<Store>) -> Session {
    let mut session = session();
    let ready = request(&mut session, store, 5, opcode::STARTUP, &startup(None));
    assert_eq!(ready.header.opcode, opcode::READY);
    for statement in [
        "CREATE KEYSPACE a WITH replication = {}",
        "CREATE KEYSPACE b WITH replication = {}",
        "CREATE TABLE a.t (k int PRIMARY KEY, v text)",
        "CREATE TABLE b.t (k int PRIMARY KEY, v text)",
    ] {
        let response = request(
            &mut session,
            store,
            5,
            opcode::QUERY,
            &query(5, statement, 0, &[]),
        );
        assert_eq!(response.header.opcode, opcode::RESULT, "{statement}");
    }
    session
}

/// The number of rows of `table`.
fn count(session: &mut Session, store: &Mutex<Store>, table: &str) -> i64 {
    let select = query(5, &format!("SELECT COUNT(*) FROM {table}"), 0, &[]);
    let body = request(session, store, 5, opcode::QUERY, &select).body;
    i64::from_be_bytes(body[body.len() - 8..].try_into().unwrap())
}

#[test]
fn refuses_other_versions_on_the_same_stream() {
    let store = Mutex::new(Store::new());
    for version in [3, 6, 0x42] {
        let response = request(&mut session(), &store, version, opcode::OPTIONS, &[]);
        let header = response.header;
        assert_eq!(
            (header.version, header.stream, header.opcode),
            (version, 3, opcode::ERROR)
        );
        assert_eq!(response.body[..4], 0x000a_u32.to_be_bytes());
        let message = String::from_utf8_lossy(&response.body).into_owned();
        assert!(message.contains("Invalid or unsupported protocol version"));
        assert!(message.contains("(4/v4, 5/v5)"));
    }
}

#[test]
fn compresses_after_startup_and_keeps_the_keyspace() {
    for (name, compression) in [("lz4", Compression::Lz4), ("snappy", Compression::Snappy)] {
        let store = Mutex::new(Store::new());
        let mut session = session();
        let ready = request(
            &mut session,
            &store,
            4,
            opcode::STARTUP,
            &startup(Some(name)),
        );
        assert_eq!(
            (ready.header.opcode, ready.header.flags, ready.body.len()),
            (opcode::READY, 0, 0)
        );
        let create = query(4, "CREATE KEYSPACE k WITH replication = {}", 0, &[]);
        let response = request(&mut session, &store, 4, opcode::QUERY, &create);
        let header = response.header;
        assert_eq!((header.version, header.opcode), (4, opcode::RESULT));
        assert_eq!(header.flags, FLAG_COMPRESSED, "{name}");
        let mut plain = Vec::new();
        compression
            .decompress(&response.body, &mut plain, 1 << 20)
            .unwrap();
        assert_eq!(plain[..4], [0, 0, 0, 5]);
        let mut use_k = envelope(
            4,
            opcode::QUERY,
            &compression.compress(&query(4, "USE k", 0, &[])),
        );
        use_k[1] = FLAG_COMPRESSED;
        send(&mut session, &store, &[use_k]);
        assert_eq!(session.keyspace.as_deref(), Some("k"));
        let drop = query(4, "DROP INDEX i", 0, &[]);
        let response = request(&mut session, &store, 4, opcode::QUERY, &drop);
        assert_eq!(response.header.opcode, opcode::ERROR);
        compression
            .decompress(&response.body, &mut plain, 1 << 20)
            .unwrap();
        assert_eq!(plain[..4], 0x2000_u32.to_be_bytes());
        assert!(String::from_utf8_lossy(&plain).contains("does not support drop-index"));
    }
}

#[test]
fn v5_handshake_then_segments_both_ways() {
    let value: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for (name, format) in [(None, Format::Plain), (Some("lz4"), Format::Lz4)] {
        let store = Mutex::new(Store::new());
        let mut session = session();
        let supported = request(&mut session, &store, 5, opcode::OPTIONS, &[]);
        assert_eq!(
            (supported.header.version, supported.header.opcode),
            (5, wire::SUPPORTED)
        );
        let body = String::from_utf8_lossy(&supported.body).into_owned();
        assert!(body.contains("PROTOCOL_VERSIONS") && body.contains("5/v5"));

        let mut out = Vec::new();
        let startup = envelope(5, opcode::STARTUP, &startup(name));
        session.receive(&startup, &store, &mut out).unwrap();
        assert_eq!(out, [0x85, 0, 0, 3, opcode::READY, 0, 0, 0, 0], "{name:?}");
        assert_eq!(session.inbound.framing(), Framing::Segments(format));

        let mut insert_tail = vec![0, 1];
        insert_tail.extend_from_slice(&(value.len() as i32).to_be_bytes());
        insert_tail.extend_from_slice(&value);
        let requests = [
            query(5, "CREATE KEYSPACE k WITH replication = {}", 0, &[]),
            query(5, "CREATE TABLE k.t (id int PRIMARY KEY, v blob)", 0, &[]),
            query(
                5,
                "INSERT INTO k.t (id, v) VALUES (1, ?)",
                0x01,
                &insert_tail,
            ),
            query(5, "SELECT v FROM k.t WHERE id = 1", 0, &[]),
        ]
        .map(|body| envelope(5, opcode::QUERY, &body));
        let mut bytes = Vec::new();
        segment::encode(format, &requests[..2].concat(), &mut bytes);
        for request in &requests[2..] {
            framing::write(Framing::Segments(format), request, &mut bytes);
        }
        let mut out = Vec::new();
        for chunk in bytes.chunks(10_000) {
            session.receive(chunk, &store, &mut out).unwrap();
        }
        let responses = decode(Framing::Segments(format), &out);
        let kinds: Vec<_> = responses
            .iter()
            .map(|r| (r.header.version, r.header.flags, r.header.opcode, r.body[3]))
            .collect();
        assert_eq!(
            kinds,
            [
                (5, 0, opcode::RESULT, 5),
                (5, 0, opcode::RESULT, 5),
                (5, 0, opcode::RESULT, 1),
                (5, 0, opcode::RESULT, 2),
            ],
            "{name:?}"
        );
        assert!(responses[3].body.ends_with(&value));
        assert_eq!(
            self_contained(format, &out),
            [true, true, true, false, false],
            "{name:?}"
        );
    }
}

/// Whether each segment in `bytes` is self-contained.
fn self_contained(format: Format, mut bytes: &[u8]) -> Vec<bool> {
    let mut flags = Vec::new();
    while !bytes.is_empty() {
        let header = segment::parse_header(format, bytes).unwrap().unwrap();
        flags.push(header.self_contained);
        bytes = &bytes[header.segment_len()..];
    }
    flags
}

/// A v5 PREPARE body, with a keyspace when one is given.
fn prepare(text: &str, keyspace: Option<&str>) -> Vec<u8> {
    let mut body = (text.len() as i32).to_be_bytes().to_vec();
    body.extend_from_slice(text.as_bytes());
    body.extend_from_slice(&i32::from(keyspace.is_some()).to_be_bytes());
    if let Some(keyspace) = keyspace {
        body.extend_from_slice(&string(keyspace));
    }
    body
}

#[test]
fn keyspace_per_request_leaves_the_connection_keyspace() {
    let store = Mutex::new(Store::new());
    let mut session = v5_session(&store);
    request(
        &mut session,
        &store,
        5,
        opcode::QUERY,
        &query(5, "USE a", 0, &[]),
    );
    let with_b = |text: &str| query(5, text, 0x80, &string("b"));
    let insert = with_b("INSERT INTO t (k, v) VALUES (1, 'one')");
    request(&mut session, &store, 5, opcode::QUERY, &insert);
    assert_eq!(session.keyspace.as_deref(), Some("a"));
    assert_eq!(
        (
            count(&mut session, &store, "a.t"),
            count(&mut session, &store, "b.t")
        ),
        (0, 1)
    );

    let select = prepare("SELECT v FROM t WHERE k = ?", Some("b"));
    let prepared = request(&mut session, &store, 5, opcode::PREPARE, &select).body;
    assert_eq!(prepared[..4], [0, 0, 0, 4]);
    let mut execute = prepared[4..40].to_vec();
    execute.extend_from_slice(&[0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 4, 0, 0, 0, 1]);
    let rows = request(&mut session, &store, 5, opcode::EXECUTE, &execute).body;
    assert!(rows.ends_with(b"one"));

    let mut batch = vec![1, 0, 1, 0];
    let text = "INSERT INTO t (k, v) VALUES (2, 'two')";
    batch.extend_from_slice(&(text.len() as i32).to_be_bytes());
    batch.extend_from_slice(text.as_bytes());
    batch.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0x80]);
    batch.extend_from_slice(&string("b"));
    let done = request(&mut session, &store, 5, opcode::BATCH, &batch);
    assert_eq!(done.body, [0, 0, 0, 1]);
    assert_eq!(
        (
            count(&mut session, &store, "a.t"),
            count(&mut session, &store, "b.t")
        ),
        (0, 2)
    );
}

#[test]
fn execute_reports_changed_result_metadata() {
    let store = Mutex::new(Store::new());
    let mut session = v5_session(&store);
    let select = prepare("SELECT * FROM a.t", None);
    let prepared = request(&mut session, &store, 5, opcode::PREPARE, &select).body;
    let metadata_id = &prepared[24..40];
    let mut execute = prepared[4..40].to_vec();
    execute.extend_from_slice(&[0, 1, 0, 0, 0, 0x02]);
    let rows = request(&mut session, &store, 5, opcode::EXECUTE, &execute).body;
    assert_eq!(rows[4..12], [0, 0, 0, 4, 0, 0, 0, 2]);

    for statement in [
        "DROP TABLE a.t",
        "CREATE TABLE a.t (k int PRIMARY KEY, v text, w int)",
    ] {
        request(
            &mut session,
            &store,
            5,
            opcode::QUERY,
            &query(5, statement, 0, &[]),
        );
    }
    let rows = request(&mut session, &store, 5, opcode::EXECUTE, &execute).body;
    assert_eq!(rows[4..12], [0, 0, 0, 9, 0, 0, 0, 3]);
    assert_eq!(rows[12..14], [0, 16]);
    assert_ne!(&rows[14..30], metadata_id);
}

#[test]
fn the_connection_keeps_the_version_of_its_startup() {
    let store = Mutex::new(Store::new());
    let mut session = session();
    let refused = request(
        &mut session,
        &store,
        5,
        opcode::STARTUP,
        &startup(Some("snappy")),
    );
    assert_eq!(refused.header.opcode, opcode::ERROR);
    assert!(String::from_utf8_lossy(&refused.body).contains("only compresses with lz4"));
    assert_eq!(session.inbound.framing(), Framing::Unframed);

    let ready = request(
        &mut session,
        &store,
        5,
        opcode::STARTUP,
        &startup(Some("lz4")),
    );
    assert_eq!(ready.header.opcode, opcode::READY);
    let v4 = request(
        &mut session,
        &store,
        4,
        opcode::QUERY,
        &query(4, "USE system", 0, &[]),
    );
    assert_eq!((v4.header.version, v4.header.opcode), (4, opcode::ERROR));
    assert!(String::from_utf8_lossy(&v4.body).contains("had version 5"));
    let again = request(&mut session, &store, 5, opcode::STARTUP, &startup(None));
    assert_eq!(again.header.opcode, opcode::ERROR);
    assert_eq!(session.inbound.framing(), Framing::Segments(Format::Lz4));
}

#[test]
fn a_broken_segment_is_an_error() {
    let store = Mutex::new(Store::new());
    let mut session = v5_session(&store);
    let mut bytes = Vec::new();
    let use_a = envelope(5, opcode::QUERY, &query(5, "USE a", 0, &[]));
    segment::encode(Format::Plain, &use_a, &mut bytes);
    bytes[7] ^= 0x01;
    let mut out = Vec::new();
    assert!(matches!(
        session.receive(&bytes, &store, &mut out),
        Err(FramingError::Segment(SegmentError::PayloadCrc { .. }))
    ));
    assert!(out.is_empty());
}

#[test]
fn journals_what_each_request_read_before_evaluating_it() {
    let journal = Arc::new(Journal::in_memory());
    let mut session = Session::journaled("127.0.0.1:9042".parse().unwrap(), Arc::clone(&journal));
    let store = Mutex::new(Store::new());
    request(&mut session, &store, 4, opcode::STARTUP, &startup(None));
    let ask = |session: &mut Session, text: &str| {
        let response = request(session, &store, 4, opcode::QUERY, &query(4, text, 0, &[]));
        (response.header.opcode, response.body)
    };
    let checked = |action, table: &str| cql::Checked {
        action,
        table: table.to_string(),
    };

    let (op, body) = ask(&mut session, "SELECT * FROM local");
    assert_eq!(
        (op, &body[..4]),
        (opcode::ERROR, &0x2200_u32.to_be_bytes()[..])
    );
    let (op, _) = ask(&mut session, "USE nowhere");
    assert_eq!(op, opcode::ERROR);
    let (op, body) = ask(&mut session, "USE system--\r");
    assert_eq!((op, &body[..4]), (opcode::RESULT, &[0, 0, 0, 3][..]));
    ask(&mut session, "SELECT * FROM local WHERE key = 'x'--;\n");
    ask(
        &mut session,
        "BEGIN BATCH INSERT INTO t (k) VALUES (1) DELETE FROM ks.u WHERE k = 1 APPLY BATCH",
    );
    let (op, body) = ask(&mut session, "SELECT * FROM local --");
    assert_eq!(
        (op, &body[..4]),
        (opcode::ERROR, &0x2000_u32.to_be_bytes()[..])
    );

    let entries = journal.of_connection(1);
    let verdicts: Vec<&Verdict> = entries.iter().map(|e| &e.verdict).collect();
    assert!(matches!(verdicts[0], Verdict::Refused(reason) if reason.contains("No keyspace")));
    assert_eq!(
        verdicts[1..5],
        [
            &Verdict::Accepted(vec![checked(cql::Action::Use, "")]),
            &Verdict::Accepted(vec![checked(cql::Action::Use, "")]),
            &Verdict::Accepted(vec![checked(cql::Action::Select, "system.local")]),
            &Verdict::Accepted(vec![
                checked(cql::Action::Insert, "system.t"),
                checked(cql::Action::Delete, "ks.u"),
            ]),
        ]
    );
    assert!(matches!(verdicts[5], Verdict::Refused(reason) if reason.contains("line comment")));
    assert_eq!(entries.len(), 6);
    assert_eq!(entries[2].queries, ["USE system--\r"]);
}
