//! Request bodies of each version, built by hand as drivers send them, read back.

use super::*;

fn header(version: u8, flags: u8, opcode: u8, body: &[u8]) -> Header {
    let mut bytes = [0u8; HEADER_LEN];
    bytes[0] = version;
    bytes[1] = flags;
    bytes[2..4].copy_from_slice(&7i16.to_be_bytes());
    bytes[4] = opcode;
    bytes[5..9].copy_from_slice(&(body.len() as u32).to_be_bytes());
    Header::parse(&bytes)
}

fn long_string(s: &str) -> Vec<u8> {
    [&(s.len() as i32).to_be_bytes()[..], s.as_bytes()].concat()
}

fn string(s: &str) -> Vec<u8> {
    [&(s.len() as u16).to_be_bytes()[..], s.as_bytes()].concat()
}

fn short_bytes(b: &[u8]) -> Vec<u8> {
    [&(b.len() as u16).to_be_bytes()[..], b].concat()
}

/// `<consistency><flags>` with two values, a page size and, when given, a keyspace (flag 0x80).
fn parameters(version: u8, keyspace: Option<&str>) -> Vec<u8> {
    let mut flags: u32 = 0x01 | 0x04;
    if keyspace.is_some() {
        flags |= 0x80;
    }
    let mut out = 1u16.to_be_bytes().to_vec();
    if version >= 5 {
        out.extend_from_slice(&flags.to_be_bytes());
    } else {
        out.push(flags as u8);
    }
    out.extend_from_slice(&2u16.to_be_bytes());
    out.extend_from_slice(&3i32.to_be_bytes());
    out.extend_from_slice(b"abc");
    out.extend_from_slice(&(-1i32).to_be_bytes());
    out.extend_from_slice(&100i32.to_be_bytes());
    if let Some(keyspace) = keyspace {
        out.extend(string(keyspace));
    }
    out
}

#[test]
fn headers_read_version_direction_stream_and_length() {
    let h = Header::parse(&[0x84, 0x01, 0xff, 0xff, 0x08, 0, 0, 1, 0]);
    assert_eq!(
        (h.version, h.response, h.flags, h.stream, h.opcode, h.length),
        (4, true, 1, -1, 8, 256)
    );
}

#[test]
fn query_prepare_and_execute_of_each_version() {
    for version in [3, 4] {
        let body = [long_string("SELECT * FROM t"), parameters(version, None)].concat();
        let request = Request::parse(&header(version, 0, opcode::QUERY, &body), &body).unwrap();
        assert_eq!(
            request,
            Request::Query {
                query: "SELECT * FROM t",
                keyspace: None
            }
        );
    }
    let body = [long_string("SELECT * FROM t"), parameters(5, Some("ks"))].concat();
    assert_eq!(
        Request::parse(&header(5, 0, opcode::QUERY, &body), &body).unwrap(),
        Request::Query {
            query: "SELECT * FROM t",
            keyspace: Some("ks")
        }
    );
    let body = [
        long_string("INSERT INTO t (a) VALUES (?)"),
        1i32.to_be_bytes().to_vec(),
        string("ks"),
    ]
    .concat();
    assert_eq!(
        Request::parse(&header(5, 0, opcode::PREPARE, &body), &body).unwrap(),
        Request::Prepare {
            query: "INSERT INTO t (a) VALUES (?)",
            keyspace: Some("ks")
        }
    );
    let body = long_string("SELECT 1");
    assert_eq!(
        Request::parse(&header(4, 0, opcode::PREPARE, &body), &body).unwrap(),
        Request::Prepare {
            query: "SELECT 1",
            keyspace: None
        }
    );
    let body = [short_bytes(b"\x01\x02"), parameters(4, None)].concat();
    assert_eq!(
        Request::parse(&header(4, 0, opcode::EXECUTE, &body), &body).unwrap(),
        Request::Execute {
            id: b"\x01\x02",
            keyspace: None
        }
    );
    let body = [
        short_bytes(b"\x01\x02"),
        short_bytes(b"\x09"),
        parameters(5, Some("other")),
    ]
    .concat();
    assert_eq!(
        Request::parse(&header(5, 0, opcode::EXECUTE, &body), &body).unwrap(),
        Request::Execute {
            id: b"\x01\x02",
            keyspace: Some("other")
        }
    );
}

#[test]
fn a_custom_payload_before_the_body_is_skipped() {
    let payload = [
        1u16.to_be_bytes().to_vec(),
        string("k"),
        2i32.to_be_bytes().to_vec(),
        b"vv".to_vec(),
    ]
    .concat();
    let body = [payload, long_string("SELECT * FROM t"), parameters(4, None)].concat();
    let request =
        Request::parse(&header(4, FLAG_CUSTOM_PAYLOAD, opcode::QUERY, &body), &body).unwrap();
    assert_eq!(
        request,
        Request::Query {
            query: "SELECT * FROM t",
            keyspace: None
        }
    );
}

#[test]
fn batches_list_their_entries() {
    let mut body = vec![1u8];
    body.extend_from_slice(&2u16.to_be_bytes());
    body.push(0);
    body.extend(long_string("INSERT INTO a.t (k) VALUES (?)"));
    body.extend_from_slice(&1u16.to_be_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    body.push(b'x');
    body.push(1);
    body.extend(short_bytes(b"\xaa"));
    body.extend_from_slice(&0u16.to_be_bytes());
    body.extend_from_slice(&1u16.to_be_bytes());
    body.push(0);
    let request = Request::parse(&header(4, 0, opcode::BATCH, &body), &body).unwrap();
    let Request::Batch { entries, keyspace } = request else {
        panic!("not a batch: {request:?}");
    };
    assert_eq!(keyspace, None);
    assert_eq!(
        entries.iter().collect::<Vec<_>>(),
        [
            BatchEntry::Query("INSERT INTO a.t (k) VALUES (?)"),
            BatchEntry::Prepared(b"\xaa")
        ]
    );
}

/// A BATCH body of one query entry, then `parameters`.
fn batch_body(parameters: Vec<u8>) -> Vec<u8> {
    let mut body = vec![0u8];
    body.extend_from_slice(&1u16.to_be_bytes());
    body.push(0);
    body.extend(long_string("DELETE FROM vault WHERE k = 1"));
    body.extend_from_slice(&0u16.to_be_bytes());
    body.extend(parameters);
    body
}

#[test]
fn a_batch_keyspace_is_read_past_the_values_page_size_and_paging_state_its_flags_announce() {
    // Cassandra reads a BATCH's parameters with the codec of a QUERY's: values, a page size and
    // a paging state, when the flags say so, come before the keyspace. Read from where the
    // values are, the bytes would name another keyspace ("\0\0").
    for version in [4, 5] {
        let body = batch_body(parameters(version, Some("system")));
        let Request::Batch { keyspace, .. } =
            Request::parse(&header(version, 0, opcode::BATCH, &body), &body).unwrap()
        else {
            panic!("not a batch");
        };
        assert_eq!(keyspace, Some("system"), "v{version}");
    }
}

#[test]
fn the_keyspace_flag_of_a_v3_or_v4_request_is_read_as_cassandra_reads_it() {
    // Only the v5 specification defines flag 0x80, but Cassandra's codec reads the keyspace
    // from a v3 or v4 flags byte too.
    for version in [3, 4] {
        let body = [
            long_string("SELECT * FROM vault"),
            parameters(version, Some("secret")),
        ]
        .concat();
        assert_eq!(
            Request::parse(&header(version, 0, opcode::QUERY, &body), &body).unwrap(),
            Request::Query {
                query: "SELECT * FROM vault",
                keyspace: Some("secret")
            },
            "v{version}"
        );
    }
}

#[test]
fn startup_names_its_compression() {
    let body = [
        2u16.to_be_bytes().to_vec(),
        string("CQL_VERSION"),
        string("3.0.0"),
        string("COMPRESSION"),
        string("lz4"),
    ]
    .concat();
    assert_eq!(
        Request::parse(&header(4, 0, opcode::STARTUP, &body), &body).unwrap(),
        Request::Startup {
            compression: Some("lz4")
        }
    );
}

#[test]
fn only_the_compression_option_cassandra_reads_names_the_compression() {
    // Cassandra looks the option up as `COMPRESSION` exactly: under another case it compresses
    // nothing, and reads a v4 frame flagged as compressed as it is.
    for key in ["compression", "Compression"] {
        let body = [1u16.to_be_bytes().to_vec(), string(key), string("lz4")].concat();
        assert_eq!(
            Request::parse(&header(4, 0, opcode::STARTUP, &body), &body).unwrap(),
            Request::Startup { compression: None },
            "{key}"
        );
    }
    let body = [
        1u16.to_be_bytes().to_vec(),
        string("COMPRESSION"),
        string("LZ4"),
    ]
    .concat();
    assert_eq!(
        Request::parse(&header(5, 0, opcode::STARTUP, &body), &body).unwrap(),
        Request::Startup {
            compression: Some("LZ4")
        }
    );
}

#[test]
fn truncated_bodies_are_malformed_not_panics() {
    let body = [long_string("SELECT * FROM t"), parameters(4, None)].concat();
    for cut in 0..body.len() {
        let short = &body[..cut];
        assert!(
            Request::parse(&header(4, 0, opcode::QUERY, short), short).is_err(),
            "cut at {cut}"
        );
    }
    let lying = (i32::MAX).to_be_bytes();
    assert!(Request::parse(&header(4, 0, opcode::QUERY, &lying), &lying).is_err());
}

#[test]
fn error_frames_answer_on_the_request_stream() {
    let frame = error_frame(4, 7, UNAUTHORIZED, "Request Unauthorized", None);
    let header = Header::parse(frame[..HEADER_LEN].try_into().unwrap());
    assert_eq!(
        (
            header.version,
            header.response,
            header.stream,
            header.opcode
        ),
        (4, true, 7, opcode::ERROR)
    );
    assert_eq!(header.length as usize, frame.len() - HEADER_LEN);
    assert_eq!(&frame[HEADER_LEN..HEADER_LEN + 4], &0x2100u32.to_be_bytes());
    let unprepared = error_frame(4, 1, UNPREPARED, "Unknown prepared id", Some(b"\x01\x02"));
    assert!(unprepared.ends_with(&[0, 2, 1, 2]));
}
