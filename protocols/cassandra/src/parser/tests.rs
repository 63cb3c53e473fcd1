//! The Cassandra parser through the real datapath engine: the Empire's rules on queries,
//! prepared statements (including a policy change between PREPARE and EXECUTE), batches,
//! USE, compression, and malformed input.

use axoneme_datapath::ConnectionError;
use axoneme_sdk::{Context, ErrorCode, Flow, InjectBuffer, Input, Op, Parser, KEPT_CAPACITY};
use axoneme_testkit::{NullLog, RulesPolicy, Session};

use crate::compression::Compression;
use crate::frame::{opcode, Header, HEADER_LEN, PROTOCOL_ERROR, UNAUTHORIZED, UNPREPARED};
use crate::{Cassandra, CassandraParser};

fn outpost_rules() -> RulesPolicy {
    RulesPolicy::compile(
        &Cassandra::default(),
        "empire",
        &[
            &[("query_action", "select"), ("query_table", "system\\..*")],
            &[
                ("query_action", "select"),
                ("query_table", "system_schema\\..*"),
            ],
            &[
                ("query_action", "insert"),
                ("query_table", "attendance.daily_records"),
            ],
        ],
    )
}

fn outpost() -> Session {
    Session::new(&Cassandra::default(), outpost_rules())
}

fn frame(version: u8, flags: u8, stream: i16, opcode: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![version, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.push(opcode);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(body);
    f
}

fn long_string(s: &str) -> Vec<u8> {
    [&(s.len() as i32).to_be_bytes()[..], s.as_bytes()].concat()
}

fn query(stream: i16, cql: &str) -> Vec<u8> {
    frame(
        4,
        0,
        stream,
        opcode::QUERY,
        &[long_string(cql), vec![0, 1, 0]].concat(),
    )
}

fn prepare(stream: i16, cql: &str) -> Vec<u8> {
    frame(4, 0, stream, opcode::PREPARE, &long_string(cql))
}

fn execute(stream: i16, id: &[u8]) -> Vec<u8> {
    let body = [&(id.len() as u16).to_be_bytes()[..], id, &[0, 1, 0]].concat();
    frame(4, 0, stream, opcode::EXECUTE, &body)
}

fn prepared_result(stream: i16, id: &[u8]) -> Vec<u8> {
    let body = [
        &4i32.to_be_bytes()[..],
        &(id.len() as u16).to_be_bytes(),
        id,
        &[0; 12],
    ]
    .concat();
    frame(0x84, 0, stream, opcode::RESULT, &body)
}

fn void_result(stream: i16) -> Vec<u8> {
    frame(0x84, 0, stream, opcode::RESULT, &1i32.to_be_bytes())
}

/// The error code and stream of an ERROR frame.
fn error_of(bytes: &[u8]) -> (i16, u32) {
    let header = Header::parse(bytes[..HEADER_LEN].try_into().unwrap());
    assert_eq!((header.opcode, header.response), (opcode::ERROR, true));
    (
        header.stream,
        u32::from_be_bytes(bytes[HEADER_LEN..HEADER_LEN + 4].try_into().unwrap()),
    )
}

#[test]
fn queries_are_checked_by_action_and_table() {
    let mut s = outpost();
    let allowed = query(1, "SELECT * FROM system.local WHERE key = 'local'");
    let denied = query(2, "SELECT * FROM attendance.daily_records");
    let insert = query(3, "INSERT INTO attendance.daily_records(creation, loc, present) VALUES (now(), 'Endor', true)");
    s.send(
        Flow::Request,
        &[allowed.clone(), denied, insert.clone()].concat(),
    )
    .unwrap();
    assert_eq!(s.sent.upstream, [allowed, insert].concat());
    assert_eq!(error_of(&s.sent.client), (2, UNAUTHORIZED));
    assert_eq!(
        s.log(),
        vec![
            "Request empire query_action=select query_table=system.local",
            "Denied  query_action=select query_table=attendance.daily_records",
            "Request empire query_action=insert query_table=attendance.daily_records",
        ]
    );
}

fn set_keyspace_result(stream: i16, keyspace: &str) -> Vec<u8> {
    let body = [
        &3i32.to_be_bytes()[..],
        &(keyspace.len() as u16).to_be_bytes(),
        keyspace.as_bytes(),
    ]
    .concat();
    frame(0x84, 0, stream, opcode::RESULT, &body)
}

fn invalid_error(stream: i16) -> Vec<u8> {
    let message = "Keyspace 'nowhere' does not exist";
    let body = [
        &0x2200u32.to_be_bytes()[..],
        &(message.len() as u16).to_be_bytes(),
        message.as_bytes(),
    ]
    .concat();
    frame(0x84, 0, stream, opcode::ERROR, &body)
}

#[test]
fn the_keyspace_is_the_one_the_server_sets() {
    let mut s = outpost();
    s.send(Flow::Request, &query(1, "USE Attendance")).unwrap();
    s.send(Flow::Reply, &set_keyspace_result(1, "attendance"))
        .unwrap();
    s.send(
        Flow::Request,
        &query(2, "INSERT INTO daily_records (a) VALUES (1)"),
    )
    .unwrap();
    s.send(Flow::Request, &query(3, "INSERT INTO other (a) VALUES (1)"))
        .unwrap();
    assert_eq!(
        s.sent.upstream,
        [
            query(1, "USE Attendance"),
            query(2, "INSERT INTO daily_records (a) VALUES (1)")
        ]
        .concat()
    );
    let client = &s.sent.client[set_keyspace_result(1, "attendance").len()..];
    assert_eq!(error_of(client), (3, UNAUTHORIZED));
    // A USE the server refuses leaves no keyspace known: its answer cannot be told from the
    // answer to another request on its stream.
    s.send(Flow::Request, &query(4, "USE nowhere")).unwrap();
    s.send(Flow::Reply, &invalid_error(4)).unwrap();
    s.send(
        Flow::Request,
        &query(5, "INSERT INTO daily_records (a) VALUES (2)"),
    )
    .unwrap();
    s.send(
        Flow::Request,
        &query(6, "INSERT INTO attendance.daily_records (a) VALUES (2)"),
    )
    .unwrap();
    assert!(s.sent.upstream.ends_with(
        &[
            query(4, "USE nowhere"),
            query(6, "INSERT INTO attendance.daily_records (a) VALUES (2)")
        ]
        .concat()
    ));
    assert_eq!(
        s.log()[3..],
        [
            "Request  query_action=use query_table=",
            "Denied  error=insert: unqualified table daily_records and no keyspace set",
            "Request empire query_action=insert query_table=attendance.daily_records",
        ]
    );
}

#[test]
fn requests_behind_an_unanswered_use_wait_for_its_answer() {
    let mut s = outpost();
    // USE secret; USE system x (refused by the server, and by the proxy); SELECT * FROM vault.
    let pipelined = [
        query(1, "USE secret"),
        query(2, "USE system x"),
        query(3, "SELECT * FROM vault"),
    ];
    s.send(Flow::Request, &pipelined.concat()).unwrap();
    assert_eq!(s.sent.upstream, pipelined[0], "held behind the USE");
    s.send(Flow::Reply, &set_keyspace_result(1, "secret"))
        .unwrap();
    // The second USE cannot be read: refused; the SELECT is judged against `secret`.
    assert_eq!(s.sent.upstream, pipelined[0]);
    let client = &s.sent.client[set_keyspace_result(1, "secret").len()..];
    assert_eq!(error_of(client), (2, UNAUTHORIZED));
    let client = &client[client.len() / 2..];
    assert_eq!(error_of(client).0, 3);
    assert_eq!(
        s.log()[1..],
        [
            "Denied  error=use: unexpected text after the statement",
            "Denied  query_action=select query_table=secret.vault",
        ]
    );
}

/// A v4 QUERY whose flags byte sets 0x80 and names `keyspace`, as Cassandra's codec reads it.
fn query_naming_keyspace(stream: i16, cql: &str, keyspace: &str) -> Vec<u8> {
    let body = [
        long_string(cql),
        vec![0, 1, 0x80],
        (keyspace.len() as u16).to_be_bytes().to_vec(),
        keyspace.as_bytes().to_vec(),
    ]
    .concat();
    frame(4, 0, stream, opcode::QUERY, &body)
}

#[test]
fn a_v4_request_naming_its_own_keyspace_is_refused() {
    // Cassandra reads flag 0x80 of a v4 QUERY or BATCH as the v5 keyspace flag: after `USE
    // system`, `SELECT * FROM vault` naming `secret` reads secret.vault there.
    let mut s = outpost();
    s.send(Flow::Request, &query(1, "USE system")).unwrap();
    s.send(Flow::Reply, &set_keyspace_result(1, "system"))
        .unwrap();
    s.send(
        Flow::Request,
        &query_naming_keyspace(2, "SELECT * FROM vault", "secret"),
    )
    .unwrap();
    let mut batch = batch(&["DELETE FROM vault WHERE k = 1"]);
    let flags = batch.len() - 1;
    batch[flags] = 0x80;
    batch.extend_from_slice(&6u16.to_be_bytes());
    batch.extend_from_slice(b"secret");
    let length = (batch.len() - HEADER_LEN) as u32;
    batch[5..HEADER_LEN].copy_from_slice(&length.to_be_bytes());
    s.send(Flow::Request, &batch).unwrap();
    assert_eq!(s.sent.upstream, query(1, "USE system"));
    let client = &s.sent.client[set_keyspace_result(1, "system").len()..];
    assert_eq!(error_of(client), (2, UNAUTHORIZED));
    assert_eq!(error_of(&client[client.len() / 2..]), (4, UNAUTHORIZED));
    assert_eq!(
        s.log()[1..],
        [
            "Denied  error=keyspace \"secret\" named by a protocol v4 request (flag 0x80 is v5's)",
            "Denied  error=keyspace \"secret\" named by a protocol v4 request (flag 0x80 is v5's)",
        ]
    );
}

#[test]
fn a_use_whose_stream_carried_another_request_cannot_hide_its_answer() {
    // SELECT and USE pipelined on stream 5: the SELECT's answer comes first on that stream, so
    // an answer there is no sign of the USE failing, and the Set_keyspace after it may pass
    // unread. The keyspace is unknown from then on, as Cassandra may be using `secret`.
    let mut s = outpost();
    s.send(Flow::Request, &query(1, "USE system")).unwrap();
    s.send(Flow::Reply, &set_keyspace_result(1, "system"))
        .unwrap();
    let pipelined = [
        query(5, "SELECT * FROM system.local"),
        query(5, "USE secret"),
    ];
    s.send(Flow::Request, &pipelined.concat()).unwrap();
    s.send(Flow::Reply, &void_result(5)).unwrap();
    s.send(Flow::Reply, &set_keyspace_result(5, "secret"))
        .unwrap();
    s.send(Flow::Request, &query(6, "SELECT * FROM vault"))
        .unwrap();
    assert!(!s.sent.upstream.ends_with(&query(6, "SELECT * FROM vault")));
    let answered = [
        set_keyspace_result(1, "system"),
        void_result(5),
        set_keyspace_result(5, "secret"),
    ]
    .concat();
    assert_eq!(
        error_of(&s.sent.client[answered.len()..]),
        (6, UNAUTHORIZED)
    );
    assert_eq!(
        s.log()[3..],
        ["Denied  error=select: unqualified table vault and no keyspace set"]
    );
}

#[test]
fn every_request_waits_behind_an_unanswered_use() {
    // An OPTIONS on the USE's stream, answered first, would otherwise be taken for the USE's
    // answer and let the Set_keyspace pass unread.
    let mut s = outpost();
    let options = frame(4, 0, 5, opcode::OPTIONS, &[]);
    s.send(
        Flow::Request,
        &[query(5, "USE secret"), options.clone()].concat(),
    )
    .unwrap();
    assert_eq!(s.sent.upstream, query(5, "USE secret"));
    s.send(Flow::Reply, &set_keyspace_result(5, "secret"))
        .unwrap();
    assert_eq!(s.sent.upstream, [query(5, "USE secret"), options].concat());
    s.send(Flow::Request, &query(6, "SELECT * FROM vault"))
        .unwrap();
    assert_eq!(
        s.log()[1..],
        ["Denied  query_action=select query_table=secret.vault"]
    );
}

#[test]
fn a_request_on_the_stream_of_an_unanswered_prepare_closes_the_connection() {
    // Its answer would come on the same stream and could be taken for the PREPARE's: a second
    // PREPARE's would give the first one's id its statement. (Requests behind an unanswered
    // USE wait, whatever their stream.)
    let options = frame(4, 0, 5, opcode::OPTIONS, &[]);
    for (first, second) in [
        (prepare(5, "SELECT * FROM system.local"), options),
        (
            prepare(5, "SELECT * FROM system.local"),
            prepare(5, "SELECT * FROM system.peers"),
        ),
    ] {
        let mut s = outpost();
        let error = s
            .send(Flow::Request, &[first.clone(), second].concat())
            .unwrap_err();
        assert!(
            matches!(error, ConnectionError::Parse(e) if e.code == ErrorCode::MalformedFrame),
            "{error:?}"
        );
        assert_eq!(s.sent.upstream, first);
    }
}

#[test]
fn an_unqualified_table_without_a_keyspace_is_refused() {
    let mut s = outpost();
    s.send(Flow::Request, &query(1, "SELECT * FROM local"))
        .unwrap();
    assert!(s.sent.upstream.is_empty());
    assert_eq!(error_of(&s.sent.client), (1, UNAUTHORIZED));
    assert_eq!(
        s.log(),
        ["Denied  error=select: unqualified table local and no keyspace set"]
    );
}

#[test]
fn statements_that_hid_another_are_read_as_cassandra_reads_them() {
    let cases = [
        "SELECT*FROM--\rsecret.vault/*\nsystem.local*/",
        "SELECT 1--/*\nFROM secret.vault--*/FROM system.local\n",
        "--\rDROP KEYSPACE secret/*\nSELECT*FROM system.local*/",
        "BEGIN BATCH INSERT INTO attendance.daily_records(k)VALUES(1)DELETE FROM secret.vault WHERE k=1 APPLY BATCH",
    ];
    for cql in cases {
        for request in [query(1, cql), prepare(1, cql)] {
            let mut s = outpost();
            s.send(Flow::Request, &request).unwrap();
            assert!(s.sent.upstream.is_empty(), "{cql:?} passed");
            assert_eq!(error_of(&s.sent.client), (1, UNAUTHORIZED), "{cql:?}");
        }
    }
    for cql in [
        "SELECT*FROM system.local WHERE k=1--;x\n",
        "SELECT*--\rFROM system.local",
        "SELECT * FROM system.local WHERE t = -1 -- c\r\n",
    ] {
        let mut s = outpost();
        s.send(Flow::Request, &query(1, cql)).unwrap();
        assert_eq!(s.sent.upstream, query(1, cql), "{cql:?}");
    }
}

#[test]
fn a_denied_batch_logs_every_statement_as_denied() {
    let mut s = outpost();
    let batch = "BEGIN BATCH USING TIMESTAMP -1 INSERT INTO attendance.daily_records(k) VALUES(1) \
                 DELETE FROM secret.vault WHERE k=1 APPLY BATCH";
    s.send(Flow::Request, &query(1, batch)).unwrap();
    assert!(s.sent.upstream.is_empty());
    assert_eq!(
        s.log(),
        [
            "Denied  query_action=insert query_table=attendance.daily_records \
             status=dropped: another statement of the request was denied",
            "Denied  query_action=delete query_table=secret.vault",
        ]
    );
}

#[test]
fn prepared_statements_are_checked_against_the_policy_in_force_at_execution() {
    let mut s = outpost();
    let insert = "INSERT INTO attendance.daily_records (a) VALUES (?)";
    s.send(Flow::Request, &prepare(5, insert)).unwrap();
    s.send(Flow::Reply, &prepared_result(5, b"\x0a\x0b"))
        .unwrap();
    s.send(Flow::Request, &execute(6, b"\x0a\x0b")).unwrap();
    assert!(s.sent.upstream.ends_with(&execute(6, b"\x0a\x0b")));
    // The policy changes: inserts are no longer allowed, and the next EXECUTE is denied.
    s.policy = RulesPolicy::compile(
        &Cassandra::default(),
        "empire",
        &[&[("query_action", "select")]],
    );
    s.send(Flow::Request, &execute(7, b"\x0a\x0b")).unwrap();
    let client = s.sent.client[prepared_result(5, b"\x0a\x0b").len()..].to_vec();
    assert_eq!(error_of(&client), (7, UNAUTHORIZED));
}

#[test]
fn an_unknown_prepared_id_gets_unprepared_with_the_id() {
    let mut s = outpost();
    s.send(Flow::Request, &execute(9, b"\x01\x02\x03")).unwrap();
    assert!(s.sent.upstream.is_empty());
    assert_eq!(error_of(&s.sent.client), (9, UNPREPARED));
    assert!(s.sent.client.ends_with(&[0, 3, 1, 2, 3]));
    assert_eq!(s.log(), vec!["Denied  error=unknown prepared statement id"]);
}

#[test]
fn a_denied_prepare_is_answered_and_never_remembered() {
    let mut s = outpost();
    s.send(
        Flow::Request,
        &prepare(1, "DELETE FROM attendance.daily_records WHERE k = ?"),
    )
    .unwrap();
    assert_eq!(error_of(&s.sent.client), (1, UNAUTHORIZED));
    assert!(s.sent.upstream.is_empty());
}

fn batch(entries: &[&str]) -> Vec<u8> {
    let mut body = vec![0u8];
    body.extend_from_slice(&(entries.len() as u16).to_be_bytes());
    for entry in entries {
        body.push(0);
        body.extend(long_string(entry));
        body.extend_from_slice(&0u16.to_be_bytes());
    }
    body.extend_from_slice(&[0, 1, 0]);
    frame(4, 0, 4, opcode::BATCH, &body)
}

#[test]
fn under_audit_a_batch_passes_and_only_the_statements_policy_would_deny_are_marked() {
    let mut s = Session::new(&Cassandra::default(), outpost_rules().in_audit_mode());
    let mixed = batch(&[
        "INSERT INTO attendance.daily_records (a) VALUES (1)",
        "DELETE FROM attendance.daily_records WHERE a = 1",
        "SELECT * FROM system.local",
    ]);
    s.send(Flow::Request, &mixed).unwrap();
    assert_eq!(s.sent.upstream, mixed, "the whole batch reaches the server");
    assert_eq!(
        s.log(),
        [
            "Request empire query_action=insert query_table=attendance.daily_records",
            "Request  query_action=delete query_table=attendance.daily_records (audit: no-allow)",
            "Request empire query_action=select query_table=system.local",
        ]
    );
}

#[test]
fn a_batch_with_one_denied_statement_is_denied_whole() {
    let mut s = outpost();
    let allowed = batch(&["INSERT INTO attendance.daily_records (a) VALUES (1)"]);
    s.send(Flow::Request, &allowed).unwrap();
    assert_eq!(s.sent.upstream, allowed);
    let mixed = batch(&[
        "INSERT INTO attendance.daily_records (a) VALUES (1)",
        "DELETE FROM attendance.daily_records WHERE a = 1",
    ]);
    s.send(Flow::Request, &mixed).unwrap();
    assert_eq!(
        s.sent.upstream, allowed,
        "nothing of the mixed batch reaches the server"
    );
    assert_eq!(error_of(&s.sent.client), (4, UNAUTHORIZED));
    let text = query(8, "BEGIN BATCH INSERT INTO attendance.daily_records (a) VALUES (1); UPDATE attendance.daily_records SET b = 2 WHERE a = 1; APPLY BATCH");
    s.send(Flow::Request, &text).unwrap();
    assert_eq!(s.sent.upstream, allowed);
}

#[test]
fn batch_entries_are_read_as_cassandra_reads_them() {
    for entry in [
        "INSERT INTO attendance.daily_records(k)VALUES(1)--\rDELETE FROM secret.vault WHERE k=1",
        "INSERT INTO attendance.daily_records(k)VALUES(1--)\n)",
        "INSERT INTO attendance.daily_records(k)VALUES(0x1f--/*\n)*/)",
    ] {
        let mut s = outpost();
        let request = batch(&["INSERT INTO attendance.daily_records (a) VALUES (1)", entry]);
        s.send(Flow::Request, &request).unwrap();
        let passed = !s.sent.upstream.is_empty();
        let expected = !entry.contains("secret");
        assert_eq!(passed, expected, "{entry:?}: {:?}", s.log());
    }
}

#[test]
fn queries_that_cannot_be_classified_are_refused() {
    let mut s = outpost();
    s.send(
        Flow::Request,
        &query(
            1,
            "SELECT * FROM system.local; DROP TABLE attendance.daily_records",
        ),
    )
    .unwrap();
    assert!(s.sent.upstream.is_empty());
    assert_eq!(error_of(&s.sent.client), (1, UNAUTHORIZED));
    assert_eq!(
        s.log(),
        vec!["Denied  error=more than one statement in a query"]
    );
}

#[test]
fn compressed_connections_are_inspected() {
    for (name, compression) in [("lz4", Compression::Lz4), ("snappy", Compression::Snappy)] {
        let mut s = outpost();
        let mut startup = 2u16.to_be_bytes().to_vec();
        for (k, v) in [("CQL_VERSION", "3.0.0"), ("COMPRESSION", name)] {
            startup.extend_from_slice(&(k.len() as u16).to_be_bytes());
            startup.extend_from_slice(k.as_bytes());
            startup.extend_from_slice(&(v.len() as u16).to_be_bytes());
            startup.extend_from_slice(v.as_bytes());
        }
        s.send(Flow::Request, &frame(4, 0, 0, opcode::STARTUP, &startup))
            .unwrap();
        s.send(Flow::Reply, &frame(0x84, 0, 0, opcode::READY, &[]))
            .unwrap();
        let body = [
            long_string("SELECT * FROM attendance.daily_records"),
            vec![0, 1, 0],
        ]
        .concat();
        let compressed = frame(4, 1, 3, opcode::QUERY, &compression.compress(&body));
        s.send(Flow::Request, &compressed).unwrap();
        assert!(!s.sent.upstream.ends_with(&compressed), "{name}: denied");
        let reply = &s.sent.client[HEADER_LEN..];
        assert_eq!(error_of(reply), (3, UNAUTHORIZED), "{name}");
        let allowed = [long_string("SELECT * FROM system.peers"), vec![0, 1, 0]].concat();
        let allowed = frame(4, 1, 4, opcode::QUERY, &compression.compress(&allowed));
        s.send(Flow::Request, &allowed).unwrap();
        assert!(
            s.sent.upstream.ends_with(&allowed),
            "{name}: the original bytes are forwarded"
        );
    }
}

#[test]
fn a_compression_option_cassandra_does_not_read_compresses_nothing() {
    // Cassandra reads `COMPRESSION` only: after `compression: lz4` it reads a frame flagged as
    // compressed as it is, not decompressed as the flag would have it. Such a frame closes the
    // connection.
    let mut s = outpost();
    let mut startup = 2u16.to_be_bytes().to_vec();
    for (k, v) in [("CQL_VERSION", "3.0.0"), ("compression", "lz4")] {
        startup.extend_from_slice(&(k.len() as u16).to_be_bytes());
        startup.extend_from_slice(k.as_bytes());
        startup.extend_from_slice(&(v.len() as u16).to_be_bytes());
        startup.extend_from_slice(v.as_bytes());
    }
    s.send(Flow::Request, &frame(4, 0, 0, opcode::STARTUP, &startup))
        .unwrap();
    s.send(Flow::Reply, &frame(0x84, 0, 0, opcode::READY, &[]))
        .unwrap();
    let body = [long_string("SELECT * FROM system.peers"), vec![0, 1, 0]].concat();
    let flagged = frame(4, 1, 3, opcode::QUERY, &Compression::Lz4.compress(&body));
    let error = s.send(Flow::Request, &flagged).unwrap_err();
    assert!(
        matches!(error, ConnectionError::Parse(e) if e.code == ErrorCode::MalformedFrame),
        "{error:?}"
    );
    assert!(!s.sent.upstream.ends_with(&flagged));
}

#[test]
fn other_requests_and_results_pass_untouched() {
    let mut s = outpost();
    let options = frame(4, 0, 0, opcode::OPTIONS, &[]);
    s.send(Flow::Request, &options).unwrap();
    s.send(Flow::Reply, &void_result(0)).unwrap();
    assert_eq!(
        (s.sent.upstream.clone(), s.sent.client.clone()),
        (options, void_result(0))
    );
}

#[test]
fn bad_frames_close_the_connection() {
    let cases: [(Vec<u8>, ErrorCode); 3] = [
        (frame(2, 0, 0, opcode::QUERY, &[]), ErrorCode::Unsupported),
        (
            frame(0x84, 0, 0, opcode::RESULT, &[]),
            ErrorCode::InvalidFrameType,
        ),
        (
            frame(4, 0, 0, opcode::QUERY, &[0, 0, 0, 9, b'x']),
            ErrorCode::MalformedFrame,
        ),
    ];
    for (bytes, code) in cases {
        let mut s = outpost();
        let error = s.send(Flow::Request, &bytes).unwrap_err();
        assert!(
            matches!(error, ConnectionError::Parse(e) if e.code == code),
            "{error:?}"
        );
    }
    let mut s = outpost();
    let mut huge = frame(4, 0, 0, opcode::QUERY, &[]);
    huge[5..9].copy_from_slice(&(64u32 << 20).to_be_bytes());
    let error = s.send(Flow::Request, &huge).unwrap_err();
    assert!(matches!(error, ConnectionError::Parse(e) if e.code == ErrorCode::FrameTooLarge));
}

#[test]
fn a_newer_protocol_version_is_answered_so_that_drivers_step_down() {
    let mut s = outpost();
    let options = frame(0x42, 0, 0, opcode::OPTIONS, &[]);
    s.send(Flow::Request, &options).unwrap();
    assert!(s.sent.upstream.is_empty(), "nothing reaches the server");
    let header = Header::parse(s.sent.client[..HEADER_LEN].try_into().unwrap());
    assert_eq!(header.version, 0x42);
    assert_eq!(error_of(&s.sent.client), (0, PROTOCOL_ERROR));
    let message = String::from_utf8_lossy(&s.sent.client[HEADER_LEN + 6..]).into_owned();
    assert_eq!(
        message,
        "Invalid or unsupported protocol version (66); supported versions are (3/v3, 4/v4, 5/v5)"
    );
    // Whatever else the client sends on this connection goes nowhere.
    s.send(Flow::Request, &query(1, "SELECT * FROM system.local"))
        .unwrap();
    assert!(s.sent.upstream.is_empty());
}

#[test]
fn scratch_grown_by_a_large_compressed_frame_is_given_back() {
    let rules = RulesPolicy::compile(&Cassandra::default(), "all", &[&[]]);
    let meta = axoneme_testkit::meta("127.0.0.31:40000", "127.0.0.1:9042");
    let mut inject = [InjectBuffer::new(1024), InjectBuffer::new(1024)];
    let mut parser = CassandraParser::new(1 << 20);
    let mut call = |parser: &mut CassandraParser, flow: Flow, slices: &[&[u8]]| {
        let mut ctx = Context::new(&meta, "cassandra", &rules, &NullLog, &mut inject);
        parser.on_data(&mut ctx, flow, false, Input::new(slices))
    };
    let mut startup = 2u16.to_be_bytes().to_vec();
    for text in ["CQL_VERSION", "3.0.0", "COMPRESSION", "lz4"] {
        startup.extend_from_slice(&(text.len() as u16).to_be_bytes());
        startup.extend_from_slice(text.as_bytes());
    }
    let startup = frame(4, 0, 0, opcode::STARTUP, &startup);
    assert_eq!(
        call(&mut parser, Flow::Request, &[&startup]),
        Op::Pass(startup.len())
    );
    let ready = frame(0x84, 0, 0, opcode::READY, &[]);
    assert_eq!(
        call(&mut parser, Flow::Reply, &[&ready]),
        Op::Pass(ready.len())
    );
    let value = "x".repeat(1_000_000);
    let cql = format!("INSERT INTO attendance.daily_records (k, v) VALUES (1, '{value}')");
    let body = [long_string(&cql), vec![0, 1, 0]].concat();
    let query = frame(4, 1, 1, opcode::QUERY, &Compression::Lz4.compress(&body));
    assert!(query.len() < 8 * 1024, "a small frame on the wire");
    // Split across two reads: the frame is copied whole into scratch, then decompressed.
    let halves: [&[u8]; 2] = [&query[..query.len() / 2], &query[query.len() / 2..]];
    assert_eq!(
        call(&mut parser, Flow::Request, &halves),
        Op::Pass(query.len())
    );
    for (name, scratch) in [("raw", &parser.raw), ("decompressed", &parser.decompressed)] {
        assert!(
            scratch.capacity() <= KEPT_CAPACITY,
            "{name} keeps {} bytes",
            scratch.capacity()
        );
    }
}
