//! Differential test of the Cassandra parser: CQL sent through the real `axoneme run` binary
//! (ingress, `l7proto: cassandra`, a policy that allows every statement) to `cql-fixture`,
//! whose reader is written apart from the proxy's. For every request, what the proxy checked
//! (its access-log entries: `query_action` and `query_table`, or a refusal with an `error`)
//! must be what the fixture's reader accepted (its journal), or both must refuse it.
//!
//! The cases are the committed corpus of hard cases (`cql_corpus.txt`) and at least
//! [`GENERATED`] statements from a proptest strategy: every statement kind over allowed and
//! other tables, comments of three kinds ending at '\r', '\n', "\r\n" or the end of the text
//! between any tokens, numbers of every form against `--`, `//` and `/*`, escaped strings and
//! names, batches with and without `;`, and USE followed by unqualified statements, pipelined
//! in one write or sent one after the other. Each case has a connection of its own from a
//! loopback address of its own, which is how its access-log entries are found; each of the
//! [`WORKERS`] has its own fixture, which runs one case at a time, so its journal entries
//! are those added while the case ran.
//!
//! `CQL_DIFFERENTIAL_SEED` replays a run (the seed is printed); `CQL_DIFFERENTIAL_CASES` sets
//! how many statements are generated.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cql_fixture::cql::{self, Checked};
use cql_fixture::journal::{Journal, Verdict};
use cql_fixture::server;
use cql_fixture::store::Store;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// How many statements the strategy generates by default.
const GENERATED: usize = 10_000;

/// Connections run in parallel, each worker with its own listener and fixture.
const WORKERS: usize = 4;

/// How long to wait for an answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// Requests left unanswered after which no more cases are started (each costs
/// [`ANSWER_TIMEOUT`]); the ones that ran are still compared.
const MOST_UNANSWERED: usize = 12;

/// The schema every case starts from: statements that may drop these are generated too.
const SCHEMA: [&str; 4] = [
    "CREATE KEYSPACE IF NOT EXISTS secret WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
    "CREATE TABLE IF NOT EXISTS secret.vault (k int PRIMARY KEY, v text)",
    "CREATE KEYSPACE IF NOT EXISTS attendance WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
    "CREATE TABLE IF NOT EXISTS attendance.daily_records (k int PRIMARY KEY, v text)",
];

// Cases.

/// How a case's requests travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Send {
    /// All in one write.
    Pipelined,
    /// Each after the answer to the one before.
    InTurn,
}

/// The requests of one connection.
#[derive(Debug, Clone)]
struct Case {
    requests: Vec<String>,
    send: Send,
}

/// Reads the corpus: one case a line, `#` comments and blank lines skipped; `\n`, `\r`,
/// `\t`, `\u{…}` and `\\` escapes; requests separated by ` ⏎ ` travel in one write, by ` ⏸ ` one
/// after the other's answer.
fn corpus(text: &str) -> Vec<Case> {
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let send = match line.contains(" ⏸ ") {
                true => Send::InTurn,
                false => Send::Pipelined,
            };
            let requests = line
                .replace(" ⏸ ", " ⏎ ")
                .split(" ⏎ ")
                .map(unescape)
                .collect();
            Case { requests, send }
        })
        .collect()
}

fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some('u') => {
                    let code: String = chars.by_ref().skip(1).take_while(|c| *c != '}').collect();
                    let c = u32::from_str_radix(&code, 16).ok().and_then(char::from_u32);
                    out.push(c.expect("a \\u{…} escape names a character"));
                }
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

/// Statement templates: tokens separated by single spaces, joined by generated gaps.
/// `{t}` is a table (qualified or not), `{tn}` a table name, `{ks}` a keyspace, `{n}` a
/// number of any form, `{i}` an integer, `{s}` a string and `{;}` a `;` or nothing.
const TEMPLATES: &[&str] = &[
    "SELECT * FROM {t}",
    "SELECT * FROM {t} WHERE k = {n}",
    "SELECT k , v FROM {t} WHERE k = {n} LIMIT 1",
    "SELECT count ( * ) FROM {t}",
    "SELECT JSON * FROM {t}",
    "SELECT k FROM {t} WHERE k IN ( {n} , {n} ) ALLOW FILTERING",
    "SELECT * FROM {t} WHERE v = {s}",
    "SELECT {n} FROM {t}",
    "SELECT * FROM {t} WHERE k = {n} AND v = {s}",
    "SELECT \"FROM\" , v AS \"from\" FROM {t}",
    "SELECT DISTINCT k FROM {t} WHERE token ( k ) > {n} PER PARTITION LIMIT 2",
    "SELECT k , writetime ( v ) , ttl ( v ) , now ( ) , CAST ( k AS text ) FROM {t} WHERE k = {n} ORDER BY v DESC",
    "SELECT count ( 1 ) , max ( k ) FROM {t} WHERE ( k , v ) IN ( ( {n} , {s} ) ) GROUP BY k",
    "SELECT * FROM {t} WHERE v = 'FROM secret.vault' AND k = {n}",
    "SELECT * FROM {t} WHERE m [ {s} ] = {n} AND l CONTAINS {n} AND v LIKE {s}",
    "SELECT * FROM {t} WHERE k = ( int ) {n} AND v IN ? AND c = { {n} , {n} }",
    "SELECT * FROM {t} LIMIT ? ALLOW FILTERING",
    "SELECT * FROM {t} WHERE expr ( idx , {s} )",
    "INSERT INTO {t} ( k , v ) VALUES ( {n} , 'DELETE FROM secret.vault' ) IF NOT EXISTS",
    "INSERT INTO {t} ( k , l , m , s , u ) VALUES ( {n} , [ {n} ] , { {s} : {n} } , { } , { a : {n} } )",
    "UPDATE {t} SET l = l + [ {n} ] , m [ {s} ] = {n} , c = c - {n} WHERE k = {n} IF v = {s}",
    "DELETE l [ {n} ] , u . a FROM {t} USING TIMESTAMP {i} WHERE k = {n} IF EXISTS",
    "BEGIN BATCH UPDATE {t} SET v = 'APPLY BATCH' WHERE k = {n} {;} DELETE FROM {t} WHERE k = {n} {;} APPLY BATCH",
    "INSERT INTO {t} ( k , v ) VALUES ( {n} , {s} )",
    "INSERT INTO {t} ( k ) VALUES ( {n} ) USING TIMESTAMP {i}",
    "INSERT INTO {t} JSON {s}",
    "UPDATE {t} SET v = {s} WHERE k = {n}",
    "UPDATE {t} USING TTL 5 SET v = {s} WHERE k = {n} IF EXISTS",
    "DELETE FROM {t} WHERE k = {n}",
    "DELETE v FROM {t} WHERE k = {n}",
    "BEGIN BATCH INSERT INTO {t} ( k ) VALUES ( {n} ) {;} DELETE FROM {t} WHERE k = {n} {;} APPLY BATCH",
    "BEGIN UNLOGGED BATCH UPDATE {t} SET v = {s} WHERE k = {n} {;} INSERT INTO {t} ( k , v ) VALUES ( {n} , {s} ) {;} APPLY BATCH",
    "BEGIN BATCH USING TIMESTAMP {i} INSERT INTO {t} ( k ) VALUES ( {n} ) {;} APPLY BATCH",
    "BEGIN COUNTER BATCH UPDATE {t} SET v = v + 1 WHERE k = {n} {;} APPLY BATCH",
    "BEGIN BATCH DELETE FROM {t} WHERE k = {n} {;} DELETE FROM {t} WHERE k = {n} {;} UPDATE {t} SET v = {s} WHERE k = {n} {;} APPLY BATCH",
    "BEGIN BATCH APPLY BATCH",
    "BEGIN BATCH SELECT * FROM {t} APPLY BATCH",
    "BEGIN BATCH INSERT INTO {t} ( k ) VALUES ( {n} )",
    "CREATE TABLE {t} ( k int PRIMARY KEY , v text )",
    "CREATE TABLE IF NOT EXISTS {t} ( k int , v text , PRIMARY KEY ( k ) ) WITH comment = {s}",
    "DROP TABLE {t}",
    "DROP TABLE IF EXISTS {t}",
    "ALTER TABLE {t} ADD x int",
    "ALTER TABLE {t} WITH comment = {s}",
    "TRUNCATE {t}",
    "TRUNCATE TABLE {t}",
    "CREATE KEYSPACE {ks} WITH replication = { 'class' : 'SimpleStrategy' , 'replication_factor' : 1 }",
    "ALTER KEYSPACE {ks} WITH durable_writes = false",
    "DROP KEYSPACE {ks}",
    "DROP KEYSPACE IF EXISTS {ks}",
    "DROP SCHEMA {ks}",
    "DROP INDEX {ks} . idx",
    "DROP INDEX idx",
    "CREATE INDEX ON {t} ( v )",
    "CREATE INDEX IF NOT EXISTS idx ON {t} ( v )",
    "CREATE MATERIALIZED VIEW {t} AS SELECT k FROM {t} WHERE k IS NOT NULL PRIMARY KEY ( k )",
    "DROP MATERIALIZED VIEW {t}",
    "ALTER MATERIALIZED VIEW {t} WITH comment = {s}",
    "CREATE ROLE r WITH PASSWORD = {s} AND LOGIN = true",
    "ALTER ROLE r WITH SUPERUSER = false",
    "DROP ROLE IF EXISTS r",
    "GRANT r TO s",
    "REVOKE r FROM s",
    "LIST ROLES",
    "GRANT SELECT ON {t} TO r",
    "REVOKE MODIFY ON KEYSPACE {ks} FROM r",
    "LIST ALL PERMISSIONS OF r",
    "LIST SUPERUSERS",
    "CREATE USER bob WITH PASSWORD {s}",
    "ALTER USER bob SUPERUSER",
    "DROP USER bob",
    "LIST USERS",
    "CREATE FUNCTION {ks} . f ( a int ) RETURNS NULL ON NULL INPUT RETURNS int LANGUAGE java AS {s}",
    "DROP FUNCTION {ks} . f",
    "CREATE AGGREGATE {ks} . agg ( int ) SFUNC f STYPE int INITCOND {n}",
    "DROP AGGREGATE agg",
    "CREATE TYPE {ks} . ty ( a int )",
    "ALTER TYPE {ks} . ty ADD b text",
    "DROP TYPE ty",
    "CREATE TRIGGER tr ON {t} USING {s}",
    "DROP TRIGGER tr ON {t}",
    "DESCRIBE KEYSPACES",
    "DESC TABLE {t}",
    "DESCRIBE {t}",
    "ADD IDENTITY {s} TO ROLE r",
    "DROP IDENTITY {s}",
    "USE {ks}",
    "USE {ks} . {tn}",
    "USE {ks} {ks}",
    "SELECT * FROM {t} junk",
    "SELECT FROM {t}",
    "FROBNICATE {t}",
];

const KEYSPACES: &[&str] = &[
    "system",
    "secret",
    "attendance",
    "nowhere",
    "SECRET",
    "System",
    "\"secret\"",
    "\"Secret\"",
    "\"se\"\"cret\"",
    "\"se.cret\"",
    "keys",
    "ks_1",
];

const TABLES: &[&str] = &[
    "local",
    "vault",
    "daily_records",
    "peers",
    "Vault",
    "\"vault\"",
    "\"Vault\"",
    "\"va\"\"ult\"",
    "\"va.ult\"",
    "ttl",
    "select",
    "\"select\"",
];

const NUMBERS: &[&str] = &[
    "1",
    "-1",
    "42",
    "1.5",
    "1.",
    "-2.5e3",
    "1e5",
    "0x1f",
    "0x",
    "3h",
    "1h30m",
    "-5d",
    "P1D",
    "PT4H",
    "a1b2c3d4-0000-4000-8000-00000000000f",
    "12345678-1234-1234-1234-123456789abc",
    "NaN",
    "-Infinity",
    "true",
    "?",
    ":name",
];

const INTEGERS: &[&str] = &["1", "-1", "0", "1700000000", "-9"];

const STRINGS: &[&str] = &[
    "'x'",
    "'it''s'",
    "''",
    "'--not a comment'",
    "'/*x*/'",
    "'a\r\nb'",
    "'é☃'",
    "$$a--b$$",
    "$$it's$$",
    "$$$$",
    "'//'",
];

/// What separates tokens: mostly a space, often nothing or a comment of any kind ending at
/// any line end.
const GAPS: &[&str] = &[
    " ",
    " ",
    " ",
    " ",
    " ",
    "",
    "",
    "\t",
    "\n",
    "\r",
    "\r\n",
    "--c\n",
    "--c\r",
    "--c\r\n",
    "//c\n",
    "//c\r",
    "//\r\n",
    "/*c*/",
    "/**/",
    "/*\n*/",
    "/*--*/",
    "--/*\n",
    "-- é☃\n",
    "/* ☃ */",
    " /*a*/ --b\r ",
    "--\r",
    "//*/\n",
];

/// What ends a query: nothing, `;`s, comments, or a comment with no end.
const ENDINGS: &[&str] = &[
    "", "", "", ";", ";;", " ; ", "--end", "--end\n", "--end\r", "//end", "/*end*/", "/*end",
    ";--x", "; /*x*/", "\n", "--;\r\n",
];

/// Random choices for one statement's placeholders, used in turn.
#[derive(Debug, Clone)]
struct Palette {
    qualified: Vec<bool>,
    keyspaces: Vec<usize>,
    tables: Vec<usize>,
    numbers: Vec<usize>,
    integers: Vec<usize>,
    strings: Vec<usize>,
    semicolons: Vec<bool>,
    gaps: Vec<usize>,
    leading: bool,
    ending: usize,
}

fn palette() -> impl Strategy<Value = Palette> {
    let indexes = |n: usize| prop::collection::vec(0..n, 8);
    (
        prop::collection::vec(prop::bool::weighted(0.7), 8),
        indexes(KEYSPACES.len()),
        indexes(TABLES.len()),
        indexes(NUMBERS.len()),
        indexes(INTEGERS.len()),
        indexes(STRINGS.len()),
        prop::collection::vec(any::<bool>(), 8),
        prop::collection::vec(0..GAPS.len(), 24),
        prop::bool::weighted(0.1),
        0..ENDINGS.len(),
    )
        .prop_map(
            |(
                qualified,
                keyspaces,
                tables,
                numbers,
                integers,
                strings,
                semicolons,
                gaps,
                leading,
                ending,
            )| Palette {
                qualified,
                keyspaces,
                tables,
                numbers,
                integers,
                strings,
                semicolons,
                gaps,
                leading,
                ending,
            },
        )
}

/// Renders a template with the palette's choices; `unqualified` names every table alone.
fn render(template: &str, palette: &Palette, unqualified: bool) -> String {
    let mut turn: HashMap<&str, usize> = HashMap::new();
    let mut next = |kind: &'static str, len: usize| {
        let n = turn.entry(kind).or_default();
        *n += 1;
        (*n - 1) % len
    };
    let mut tokens: Vec<&str> = Vec::new();
    for token in template.split(' ') {
        match token {
            "{t}" => {
                let qualified = palette.qualified[next("q", 8)] && !unqualified;
                if qualified {
                    tokens.push(KEYSPACES[palette.keyspaces[next("ks", 8)]]);
                    tokens.push(".");
                }
                tokens.push(TABLES[palette.tables[next("tn", 8)]]);
            }
            "{tn}" => tokens.push(TABLES[palette.tables[next("tn", 8)]]),
            "{ks}" => tokens.push(KEYSPACES[palette.keyspaces[next("ks", 8)]]),
            "{n}" => tokens.push(NUMBERS[palette.numbers[next("n", 8)]]),
            "{i}" => tokens.push(INTEGERS[palette.integers[next("i", 8)]]),
            "{s}" => tokens.push(STRINGS[palette.strings[next("s", 8)]]),
            "{;}" => {
                if palette.semicolons[next(";", 8)] {
                    tokens.push(";");
                }
            }
            other => tokens.push(other),
        }
    }
    let mut text = String::new();
    if palette.leading {
        text.push_str(GAPS[palette.gaps[0]]);
    }
    for (i, token) in tokens.iter().enumerate() {
        if i > 0 {
            text.push_str(GAPS[palette.gaps[i % palette.gaps.len()]]);
        }
        text.push_str(token);
    }
    text.push_str(ENDINGS[palette.ending]);
    text
}

fn statement(unqualified: bool) -> impl Strategy<Value = String> {
    (0..TEMPLATES.len(), palette())
        .prop_map(move |(template, palette)| render(TEMPLATES[template], &palette, unqualified))
}

/// A USE, as the cases that follow one write it.
fn use_statement() -> impl Strategy<Value = String> {
    let templates = [
        "USE {ks}",
        "USE {ks}",
        "USE {ks}",
        "USE {ks} . {tn}",
        "USE {ks} {ks}",
    ];
    (0..templates.len(), palette())
        .prop_map(move |(template, palette)| render(templates[template], &palette, true))
}

fn case() -> impl Strategy<Value = Case> {
    let send = prop_oneof![Just(Send::Pipelined), Just(Send::InTurn)];
    prop_oneof![
        7 => statement(false).prop_map(|query| Case {
            requests: vec![query],
            send: Send::InTurn,
        }),
        2 => (
            prop::collection::vec(use_statement(), 1..3),
            prop::collection::vec(statement(true), 1..3),
            send,
        )
            .prop_map(|(mut requests, then, send)| {
                requests.extend(then);
                Case { requests, send }
            }),
        1 => (statement(false), statement(false)).prop_map(|(first, second)| Case {
            requests: vec![format!("{first};{second}")],
            send: Send::InTurn,
        }),
    ]
}

/// `n` cases from the strategy, deterministic for a seed.
fn generated(seed: u64, statements: usize) -> Vec<Case> {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    let strategy = case();
    let mut cases = Vec::new();
    let mut count = 0;
    while count < statements {
        let case = strategy
            .new_tree(&mut runner)
            .expect("the strategy generates")
            .current();
        count += case.requests.len();
        cases.push(case);
    }
    cases
}

// The wire.

/// A v4 request frame.
fn frame(stream: i16, opcode: u8, body: &[u8]) -> Vec<u8> {
    let mut frame = vec![4, 0];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.push(opcode);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

fn startup() -> Vec<u8> {
    let mut body = 1u16.to_be_bytes().to_vec();
    for s in ["CQL_VERSION", "3.0.0"] {
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(s.as_bytes());
    }
    frame(0, 0x01, &body)
}

/// A QUERY at consistency ONE, without values.
fn query(stream: i16, text: &str) -> Vec<u8> {
    let mut body = (text.len() as u32).to_be_bytes().to_vec();
    body.extend_from_slice(text.as_bytes());
    body.extend_from_slice(&[0, 1, 0]);
    frame(stream, 0x07, &body)
}

/// An answer as the test tells them apart.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Result,
    SetKeyspace(String),
    Error(u32, String),
    /// No answer in time, or the connection closed first.
    Missing(String),
}

async fn read_frame(stream: &mut TcpStream) -> Result<(i16, u8, Vec<u8>), String> {
    let mut header = [0u8; 9];
    let read = async {
        stream.read_exact(&mut header).await?;
        let len = u32::from_be_bytes(header[5..9].try_into().expect("four bytes")) as usize;
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    };
    match tokio::time::timeout(ANSWER_TIMEOUT, read).await {
        Err(_) => Err(format!("no answer within {} s", ANSWER_TIMEOUT.as_secs())),
        Ok(Err(error)) => Err(format!("connection ended: {error}")),
        Ok(Ok(body)) => Ok((i16::from_be_bytes([header[2], header[3]]), header[4], body)),
    }
}

fn answer(opcode: u8, body: &[u8]) -> Answer {
    let int = |at: usize| {
        body.get(at..at + 4)
            .map_or(0, |b| u32::from_be_bytes(b.try_into().expect("four bytes")))
    };
    let string = |at: usize| {
        let len = body
            .get(at..at + 2)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]) as usize);
        String::from_utf8_lossy(body.get(at + 2..at + 2 + len).unwrap_or_default()).into_owned()
    };
    match (opcode, int(0)) {
        (0x00, code) => Answer::Error(code, string(4)),
        (0x08, 3) => Answer::SetKeyspace(string(4)),
        _ => Answer::Result,
    }
}

// Running.

/// A fixture serving one worker, with the store the test resets the schema of.
struct Fixture {
    addr: SocketAddr,
    store: Arc<Mutex<Store>>,
    journal: Arc<Journal>,
}

async fn start_fixture() -> Fixture {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = Arc::new(Mutex::new(Store::new()));
    let journal = Arc::new(Journal::in_memory());
    tokio::spawn(server::serve(
        listener,
        Arc::clone(&store),
        Arc::clone(&journal),
    ));
    let fixture = Fixture {
        addr,
        store,
        journal,
    };
    fixture.reset_schema();
    fixture
}

impl Fixture {
    /// Creates the keyspaces and tables every case starts from, where a case dropped them.
    fn reset_schema(&self) {
        let mut store = self.store.lock().unwrap();
        for statement in SCHEMA {
            let stmt = cql_fixture::store::parse(statement).unwrap();
            store.execute(&stmt, None, &[], self.addr).unwrap();
        }
    }
}

/// What happened to one request.
#[derive(Debug, Clone)]
struct Sent {
    query: String,
    answer: Answer,
    /// The keyspace of the connection when the fixture read (or would have read) it.
    keyspace: Option<String>,
    /// What the fixture journaled for it, when it reached the fixture.
    journaled: Option<Verdict>,
}

/// A case as it ran.
struct Ran {
    case: Case,
    client: Ipv4Addr,
    sent: Vec<Sent>,
}

/// The loopback address of the `n`th case.
fn client_address(n: usize) -> Ipv4Addr {
    let n = n as u32;
    Ipv4Addr::new(
        127,
        10 + (n / 62_500) as u8,
        (n / 250 % 250) as u8,
        (n % 250 + 1) as u8,
    )
}

async fn run_case(proxy: SocketAddr, fixture: &Fixture, case: Case, client: Ipv4Addr) -> Ran {
    fixture.reset_schema();
    let journaled_before = fixture.journal.len();
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(client), 0)).unwrap();
    let mut stream = socket.connect(proxy).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream.write_all(&startup()).await.unwrap();
    let ready = read_frame(&mut stream).await;
    assert!(
        matches!(ready, Ok((0, 0x02, _))),
        "STARTUP through the proxy: {ready:?}"
    );
    let mut answers: Vec<Answer> = Vec::new();
    match case.send {
        Send::Pipelined => {
            let mut write = Vec::new();
            for (i, request) in case.requests.iter().enumerate() {
                write.extend(query(i as i16 + 1, request));
            }
            stream.write_all(&write).await.unwrap();
            read_answers(&mut stream, case.requests.len(), &mut answers).await;
        }
        Send::InTurn => {
            for (i, request) in case.requests.iter().enumerate() {
                if stream
                    .write_all(&query(i as i16 + 1, request))
                    .await
                    .is_err()
                {
                    break;
                }
                read_answers(&mut stream, 1, &mut answers).await;
                if matches!(answers.last(), Some(Answer::Missing(_))) {
                    break;
                }
            }
        }
    }
    drop(stream);
    let journal = fixture.journal.since(journaled_before);
    let mut keyspace: Option<String> = None;
    let mut sent = Vec::new();
    for (i, request) in case.requests.iter().enumerate() {
        let answer = answers.get(i).cloned().unwrap_or_else(|| {
            Answer::Missing("not sent: an earlier request had no answer".into())
        });
        let journaled = journal
            .iter()
            .find(|e| e.stream == i as i16 + 1)
            .map(|e| e.verdict.clone());
        let forwarded_use = journaled.is_some() && begins_with_use(request);
        sent.push(Sent {
            query: request.clone(),
            answer: answer.clone(),
            keyspace: keyspace.clone(),
            journaled,
        });
        match answer {
            Answer::SetKeyspace(name) => keyspace = Some(name),
            // The proxy cannot tell a USE's error from another request's answer on its
            // stream: it forgets the keyspace, and refuses unqualified names until a USE
            // succeeds.
            _ if forwarded_use => keyspace = None,
            _ => {}
        }
    }
    Ran { case, client, sent }
}

/// Whether `query`'s first token, as the fixture lexes it, is the word USE.
fn begins_with_use(query: &str) -> bool {
    let Ok(tokens) = cql::lexer::tokenize(query) else {
        return false;
    };
    matches!(tokens.first().map(|t| &t.token),
        Some(cql::lexer::Token::Word(word)) if word.eq_ignore_ascii_case("USE"))
}

/// Reads `n` answers in stream order (they come in request order).
async fn read_answers(stream: &mut TcpStream, n: usize, answers: &mut Vec<Answer>) {
    for _ in 0..n {
        match read_frame(stream).await {
            Ok((_, opcode, body)) => answers.push(answer(opcode, &body)),
            Err(error) => {
                answers.push(Answer::Missing(error));
                return;
            }
        }
    }
}

/// The proxy process, killed when the test ends.
struct Proxy {
    child: Child,
    listeners: Vec<SocketAddr>,
    log: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `axoneme run` with a listener per fixture and a policy that allows every statement.
async fn start_proxy(dir: &Path, fixtures: &[Fixture]) -> Proxy {
    let listeners: Vec<SocketAddr> = fixtures
        .iter()
        .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
        .collect();
    let ports: Vec<String> = fixtures
        .iter()
        .map(|f| format!("{{port: \"{}\"}}", f.addr.port()))
        .collect();
    std::fs::write(
        dir.join("policy.yaml"),
        format!(
            r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: every-statement}}
spec:
  endpointSelector: {{matchLabels: {{app: cassandra}}}}
  ingress:
    - toPorts:
        - ports: [{}]
          rules: {{l7proto: cassandra, l7: [{{}}]}}
"#,
            ports.join(", ")
        ),
    )
    .unwrap();
    let log = dir.join("access.log");
    let mut config = format!(
        "accessLog: {{path: {:?}}}\napi: {{socket: {:?}}}\ndrainTimeout: 0\n\
         endpoints: [{{name: cassandra, ips: [\"127.0.0.1\"], labels: {{app: cassandra}}}}]\n\
         policies: [policy.yaml]\nlisteners:\n",
        log.display().to_string(),
        dir.join("api.sock").display().to_string(),
    );
    for (i, (listen, fixture)) in listeners.iter().zip(fixtures).enumerate() {
        let _ = writeln!(
            config,
            "  - {{name: cql{i}, listen: \"{listen}\", upstream: \"{}\", endpoint: cassandra, direction: ingress, l7proto: cassandra}}",
            fixture.addr
        );
    }
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    let stderr = std::fs::File::create(dir.join("axoneme.stderr")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_axoneme"))
        .args(["run", "--config"])
        .arg(dir.join("config.yaml"))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let proxy = Proxy {
        child,
        listeners,
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    for listener in &proxy.listeners {
        while TcpStream::connect(listener).await.is_err() {
            assert!(Instant::now() < deadline, "the proxy did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    proxy
}

// Comparing.

/// What the proxy logged for a request: a checked statement or a refusal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Logged {
    Checked(String, String),
    Refused(String),
}

/// The access log's entries by client address, in order.
fn log_by_client(path: &Path) -> HashMap<Ipv4Addr, Vec<Logged>> {
    let mut by_client: HashMap<Ipv4Addr, Vec<Logged>> = HashMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        if entry["entry_type"] == "Response" {
            continue;
        }
        let Some(client) = entry["source_address"]
            .as_str()
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .and_then(|a| match a.ip() {
                IpAddr::V4(ip) => Some(ip),
                IpAddr::V6(_) => None,
            })
        else {
            continue;
        };
        let fields = &entry["generic_l7"]["fields"];
        let logged = match fields["error"].as_str() {
            Some(error) => Logged::Refused(error.to_string()),
            None => Logged::Checked(
                fields["query_action"].as_str().unwrap_or("").to_string(),
                fields["query_table"].as_str().unwrap_or("").to_string(),
            ),
        };
        by_client.entry(client).or_default().push(logged);
    }
    by_client
}

/// Waits until the access log stops growing and holds at least `least` entries.
async fn settled_log(path: &Path, least: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = usize::MAX;
    loop {
        let lines = std::fs::read_to_string(path)
            .map(|text| text.lines().count())
            .unwrap_or(0);
        if (lines == last && lines >= least) || Instant::now() > deadline {
            return;
        }
        last = lines;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The fixture's verdict on a request: its journal's, or, for a request that never reached
/// it, its reader's on the query with the keyspace the connection had.
fn fixture_verdict(sent: &Sent) -> Verdict {
    if let Some(verdict) = &sent.journaled {
        return verdict.clone();
    }
    match cql::parse(&sent.query) {
        Err(error) => Verdict::Refused(error.to_string()),
        Ok(stmt) => match stmt.checked(sent.keyspace.as_deref()) {
            Ok(checked) => Verdict::Accepted(checked),
            Err(error) => Verdict::Refused(error.to_string()),
        },
    }
}

fn show_checked(checked: &[Checked]) -> String {
    let items: Vec<String> = checked
        .iter()
        .map(|c| format!("({} {:?})", c.action.name(), c.table))
        .collect();
    format!("{{{}}}", items.join(", "))
}

fn show_logged(logged: &[Logged]) -> String {
    let items: Vec<String> = logged
        .iter()
        .map(|l| match l {
            Logged::Checked(action, table) => format!("({action} {table:?})"),
            Logged::Refused(error) => format!("refused: {error}"),
        })
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// A disagreement on one request (or on a run of requests the proxy forwarded, whose log
/// entries cannot be told apart otherwise).
struct Mismatch {
    kind: &'static str,
    report: String,
}

/// What comparing a case found.
#[derive(Default)]
struct Comparison {
    mismatches: Vec<Mismatch>,
    /// Requests the proxy forwarded and the fixture refuses for their grammar (not their
    /// lexing, not a missing keyspace): the proxy judges statements by the words that decide
    /// policy and does not check the rest of Cassandra's grammar, so the server is the one to
    /// refuse them, and nothing runs. Not a disagreement; counted and shown.
    left_to_server: usize,
}

/// Compares what the proxy logged for a case with the fixture's verdicts, request by request.
///
/// A request the proxy refused has one entry, with an `error`, and never reaches the fixture.
/// The entries of requests it forwarded one after the other cannot be told apart: they are
/// shared out by the number of statements the fixture read in each (none for a request it
/// refused), and shown together when that does not add up. Where such a group holds a request
/// left to the server (see [`Comparison::left_to_server`]), whose entries the proxy logged
/// but the fixture read none of, the group's entries must hold every statement the fixture
/// read in it.
fn compare(ran: &Ran, logged: &[Logged]) -> Comparison {
    let mut comparison = Comparison::default();
    let mismatches = &mut comparison.mismatches;
    let mut rest = logged;
    let mut at = 0;
    while at < ran.sent.len() {
        let sent = &ran.sent[at];
        if sent.journaled.is_none() {
            let verdict = fixture_verdict(sent);
            let entry = match rest.split_first() {
                Some((entry, tail)) if matches!(entry, Logged::Refused(_)) => {
                    rest = tail;
                    Some(entry)
                }
                _ => None,
            };
            let kind = match (&sent.answer, entry, &verdict) {
                (Answer::Missing(_), _, _) => Some("the proxy did not answer"),
                (_, Some(_), Verdict::Refused(_)) => None,
                (_, _, Verdict::Accepted(_)) => {
                    Some("the proxy refused a request the fixture accepts")
                }
                (_, None, Verdict::Refused(_)) => {
                    Some("the proxy answered a request without forwarding it or logging a refusal")
                }
            };
            if let Some(kind) = kind {
                mismatches.push(Mismatch {
                    kind,
                    report: format!(
                        "query {:?}\n  proxy: {} (answer {:?})\n  fixture: {}",
                        sent.query,
                        entry.map_or("no refusal logged".to_string(), |e| show_logged(
                            std::slice::from_ref(e)
                        )),
                        sent.answer,
                        show_verdict(&verdict)
                    ),
                });
            }
            at += 1;
            continue;
        }
        // A run of forwarded requests, and the entries up to the next refusal.
        let run_end = ran.sent[at..]
            .iter()
            .position(|s| s.journaled.is_none())
            .map_or(ran.sent.len(), |n| at + n);
        let run = &ran.sent[at..run_end];
        let taken = match run_end == ran.sent.len() {
            true => rest.len(),
            false => rest
                .iter()
                .position(|l| matches!(l, Logged::Refused(_)))
                .unwrap_or(rest.len()),
        };
        let (entries, tail) = rest.split_at(taken);
        rest = tail;
        let verdicts: Vec<Verdict> = run.iter().map(fixture_verdict).collect();
        let left_to_server = |n: usize| {
            matches!(verdicts[n], Verdict::Refused(_))
                && matches!(
                    cql::parse(&run[n].query),
                    Err(cql::SyntaxError::Grammar { .. })
                )
        };
        let shares = share_out(&verdicts, entries);
        let group_left_to_server = shares
            .iter()
            .any(|&(n, _, together)| together && left_to_server(n));
        for (n, mine, together) in shares {
            let (sent, verdict) = (&run[n], &verdicts[n]);
            let kind = match verdict {
                Verdict::Refused(_) => match cql::parse(&sent.query) {
                    Err(cql::SyntaxError::Lexical(_)) => Some(
                        "the proxy forwarded a request the fixture refuses: a lexical error",
                    ),
                    Err(cql::SyntaxError::Grammar { .. }) => {
                        comparison.left_to_server += 1;
                        None
                    }
                    Ok(_) => Some(
                        "the proxy forwarded a request the fixture refuses: a table with no keyspace",
                    ),
                },
                Verdict::Accepted(checked) => {
                    let agrees = match (together, group_left_to_server) {
                        (false, _) => same(mine, checked),
                        (true, true) => covers(mine, checked),
                        (true, false) => false,
                    };
                    (!agrees).then_some("the proxy checked other statements than the fixture read")
                }
            };
            if let Some(kind) = kind {
                let together = match together {
                    false => String::new(),
                    true => format!(
                        "\n  (entries of requests forwarded in a row that cannot be told apart: {})",
                        show_logged(mine)
                    ),
                };
                mismatches.push(Mismatch {
                    kind,
                    report: format!(
                        "query {:?}\n  proxy: forwarded, logged {}\n  fixture: {}{together}",
                        sent.query,
                        match together.is_empty() {
                            true => show_logged(mine),
                            false => "?".to_string(),
                        },
                        show_verdict(verdict)
                    ),
                });
            }
        }
        at = run_end;
    }
    comparison
}

/// Whether every statement the fixture read is among the proxy's entries.
fn covers(logged: &[Logged], checked: &[Checked]) -> bool {
    checked.iter().all(|c| {
        logged.contains(&Logged::Checked(
            c.action.name().to_string(),
            c.table.clone(),
        ))
    })
}

/// Whether the proxy's entries are the statements the fixture read, as sets.
fn same(logged: &[Logged], checked: &[Checked]) -> bool {
    let mut proxy: Vec<Logged> = logged.to_vec();
    proxy.sort();
    proxy.dedup();
    let mut fixture: Vec<Logged> = checked
        .iter()
        .map(|c| Logged::Checked(c.action.name().to_string(), c.table.clone()))
        .collect();
    fixture.sort();
    fixture.dedup();
    proxy == fixture
}

/// Shares the entries of requests forwarded in a row out among them: from the front and from
/// the back, each request the fixture accepted takes as many entries as it read statements
/// while they match; what is left goes to the one request in the middle, or to the requests
/// in the middle together. Yields each request's index, its entries and whether they are
/// shared with others.
fn share_out<'l>(verdicts: &[Verdict], entries: &'l [Logged]) -> Vec<(usize, &'l [Logged], bool)> {
    let fits = |verdict: &Verdict, slice: Option<&[Logged]>| match (verdict, slice) {
        (Verdict::Accepted(checked), Some(slice)) => same(slice, checked),
        _ => false,
    };
    let len = |verdict: &Verdict| match verdict {
        Verdict::Accepted(checked) => checked.len(),
        Verdict::Refused(_) => 0,
    };
    let mut shared = Vec::new();
    let (mut first, mut last) = (0, verdicts.len());
    let (mut from, mut to) = (0, entries.len());
    while first + 1 < last {
        let n = len(&verdicts[first]);
        if !fits(
            &verdicts[first],
            entries.get(from..from + n).filter(|_| from + n <= to),
        ) {
            break;
        }
        shared.push((first, &entries[from..from + n], false));
        first += 1;
        from += n;
    }
    while first + 1 < last {
        let n = len(&verdicts[last - 1]);
        let slice = to
            .checked_sub(n)
            .filter(|start| *start >= from)
            .map(|start| &entries[start..to]);
        if !fits(&verdicts[last - 1], slice) {
            break;
        }
        shared.push((last - 1, &entries[to - n..to], false));
        last -= 1;
        to -= n;
    }
    for n in first..last {
        shared.push((n, &entries[from..to], last - first > 1));
    }
    shared.sort_by_key(|(n, _, _)| *n);
    shared
}

fn show_verdict(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Accepted(checked) => show_checked(checked),
        Verdict::Refused(reason) => format!("refused: {reason}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_and_fixture_read_cql_alike() {
    let seed = std::env::var("CQL_DIFFERENTIAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let statements = std::env::var("CQL_DIFFERENTIAL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(GENERATED);
    let corpus = corpus(include_str!("cql_corpus.txt"));
    let corpus_len = corpus.len();
    let mut cases = corpus;
    cases.extend(generated(seed, statements));
    let cases_total = cases.len();
    println!(
        "seed {seed}: {corpus_len} corpus cases and {} generated cases",
        cases.len() - corpus_len
    );

    let dir = std::env::temp_dir().join(format!("axoneme-cql-differential-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut fixtures = Vec::new();
    for _ in 0..WORKERS {
        fixtures.push(start_fixture().await);
    }
    let proxy = start_proxy(&dir, &fixtures).await;

    let started = Instant::now();
    let mut queues: Vec<Vec<(usize, Case)>> = vec![Vec::new(); WORKERS];
    for (n, case) in cases.into_iter().enumerate() {
        queues[n % WORKERS].push((n, case));
    }
    let fixtures: Vec<Arc<Fixture>> = fixtures.into_iter().map(Arc::new).collect();
    let unanswered = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for (w, queue) in queues.into_iter().enumerate() {
        let fixture = Arc::clone(&fixtures[w]);
        let listener = proxy.listeners[w];
        let unanswered = Arc::clone(&unanswered);
        workers.push(tokio::spawn(async move {
            let mut ran = Vec::new();
            for (n, case) in queue {
                if unanswered.load(Ordering::Relaxed) >= MOST_UNANSWERED {
                    break;
                }
                let case = run_case(listener, &fixture, case, client_address(n)).await;
                let missing = case
                    .sent
                    .iter()
                    .filter(|s| matches!(s.answer, Answer::Missing(_)))
                    .count();
                unanswered.fetch_add(missing, Ordering::Relaxed);
                ran.push((n, case));
            }
            ran
        }));
    }
    let mut ran: Vec<(usize, Ran)> = Vec::new();
    for worker in workers {
        ran.extend(worker.await.unwrap());
    }
    ran.sort_by_key(|(n, _)| *n);
    let requests: usize = ran.iter().map(|(_, r)| r.sent.len()).sum();
    // At least an entry for each request refused by the proxy or read as a statement or more.
    let least = ran
        .iter()
        .flat_map(|(_, r)| &r.sent)
        .filter(|s| !matches!(&s.journaled, Some(Verdict::Accepted(checked)) if checked.is_empty()))
        .count();
    settled_log(&proxy.log, least).await;
    println!(
        "{} cases, {requests} requests in {:.1} s",
        ran.len(),
        started.elapsed().as_secs_f64()
    );
    let skipped = cases_total - ran.len();

    let logged = log_by_client(&proxy.log);
    let mut by_kind: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut left_to_server = 0;
    for (n, ran) in &ran {
        let entries = logged.get(&ran.client).map_or(&[][..], Vec::as_slice);
        let comparison = compare(ran, entries);
        left_to_server += comparison.left_to_server;
        for mismatch in comparison.mismatches {
            let case = match ran.case.requests.len() {
                1 => String::new(),
                _ => format!(
                    "\n  in case #{n} ({:?}): {:?}",
                    ran.case.send, ran.case.requests
                ),
            };
            by_kind
                .entry(mismatch.kind)
                .or_default()
                .push(format!("{}{case}", mismatch.report));
        }
    }
    println!(
        "{left_to_server} requests the fixture refuses for their grammar were forwarded, for the \
         server to refuse"
    );
    if by_kind.is_empty() && skipped == 0 {
        drop(proxy);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let mut report = format!("the proxy and the fixture disagree (seed {seed}):\n");
    if skipped > 0 {
        let _ = writeln!(
            report,
            "{skipped} cases were not run: {MOST_UNANSWERED} requests went unanswered"
        );
    }
    for (kind, examples) in &by_kind {
        let _ = writeln!(
            report,
            "\n== {kind}: {} requests; for example:",
            examples.len()
        );
        for example in examples.iter().take(12) {
            let _ = writeln!(report, "- {example}");
        }
    }
    let total: usize = by_kind.values().map(Vec::len).sum();
    let mut all = String::new();
    for (kind, examples) in &by_kind {
        let _ = writeln!(all, "== {kind}: {} requests", examples.len());
        for example in examples {
            let _ = writeln!(all, "- {example}");
        }
    }
    let path = dir.join("disagreements.txt");
    std::fs::write(&path, all).unwrap();
    panic!(
        "{report}\n{total} disagreements in all, every one in {}",
        path.display()
    );
}

// The comparison itself.

fn checked(action: cql::Action, table: &str) -> Checked {
    Checked {
        action,
        table: table.to_string(),
    }
}

fn sent(query: &str, answer: Answer, journaled: Option<Verdict>) -> Sent {
    Sent {
        query: query.to_string(),
        answer,
        keyspace: None,
        journaled,
    }
}

fn ran(sent: Vec<Sent>) -> Ran {
    Ran {
        case: Case {
            requests: sent.iter().map(|s| s.query.clone()).collect(),
            send: Send::Pipelined,
        },
        client: Ipv4Addr::LOCALHOST,
        sent,
    }
}

fn logged(action: &str, table: &str) -> Logged {
    Logged::Checked(action.to_string(), table.to_string())
}

#[test]
fn agreeing_requests_are_no_mismatch() {
    let case = ran(vec![
        sent(
            "USE secret",
            Answer::SetKeyspace("secret".into()),
            Some(Verdict::Accepted(vec![checked(cql::Action::Use, "")])),
        ),
        sent(
            "USE system x",
            Answer::Error(0x2100, "Request Unauthorized".into()),
            None,
        ),
        sent(
            "BEGIN BATCH INSERT INTO t (k) VALUES (1) DELETE FROM u WHERE k = 1 APPLY BATCH",
            Answer::Result,
            Some(Verdict::Accepted(vec![
                checked(cql::Action::Insert, "secret.t"),
                checked(cql::Action::Delete, "secret.u"),
            ])),
        ),
    ]);
    let entries = [
        logged("use", ""),
        Logged::Refused("syntax".into()),
        logged("delete", "secret.u"),
        logged("insert", "secret.t"),
    ];
    assert!(compare(&case, &entries).mismatches.is_empty());
}

#[test]
fn disagreements_are_found_request_by_request() {
    let case = ran(vec![
        sent(
            "USE secret",
            Answer::SetKeyspace("secret".into()),
            Some(Verdict::Accepted(vec![checked(cql::Action::Use, "")])),
        ),
        sent(
            "BEGIN BATCH INSERT INTO t (k) VALUES (1) DELETE FROM u WHERE k = 1 APPLY BATCH",
            Answer::Result,
            Some(Verdict::Accepted(vec![
                checked(cql::Action::Insert, "secret.t"),
                checked(cql::Action::Delete, "secret.u"),
            ])),
        ),
        sent(
            "SELECT * FROM local",
            Answer::Result,
            Some(Verdict::Accepted(vec![checked(
                cql::Action::Select,
                "secret.local",
            )])),
        ),
        sent(
            "SELECT * FROM system.local",
            Answer::Error(0x2100, "x".into()),
            None,
        ),
    ]);
    // The batch logged its first statement only, and a request the fixture accepts was refused.
    let entries = [
        logged("use", ""),
        logged("insert", "secret.t"),
        logged("select", "secret.local"),
        Logged::Refused("no".into()),
    ];
    let mismatches = compare(&case, &entries).mismatches;
    let kinds: Vec<&str> = mismatches.iter().map(|m| m.kind).collect();
    assert_eq!(
        kinds,
        [
            "the proxy checked other statements than the fixture read",
            "the proxy refused a request the fixture accepts"
        ]
    );
    assert!(
        mismatches[0].report.contains("BEGIN BATCH"),
        "{}",
        mismatches[0].report
    );
    assert!(mismatches[1].report.contains("(select \"system.local\")"));
}

#[test]
fn the_corpus_reads_escapes_and_sends() {
    let cases = corpus("# c\n\nSELECT 1--\\r\\u{0c} ⏎ USE x\nUSE a ⏸ B\\\\\n");
    assert_eq!(cases.len(), 2);
    assert_eq!(cases[0].requests, ["SELECT 1--\r\u{c}", "USE x"]);
    assert_eq!(cases[0].send, Send::Pipelined);
    assert_eq!(cases[1].requests, ["USE a", "B\\"]);
    assert_eq!(cases[1].send, Send::InTurn);
}

#[test]
fn requests_left_to_the_server_are_counted_not_matched() {
    let refused = || Some(Verdict::Refused("grammar".into()));
    let case = ran(vec![
        sent(
            "SELECT * FROM system.local WHERE k = 1-1",
            Answer::Error(0x2000, "x".into()),
            refused(),
        ),
        sent(
            "SELECT * FROM system.local",
            Answer::Result,
            Some(Verdict::Accepted(vec![checked(
                cql::Action::Select,
                "system.local",
            )])),
        ),
    ]);
    // Both were forwarded: the proxy's entries hold the refused one's statement too.
    let entries = [
        logged("select", "system.local"),
        logged("select", "system.local"),
    ];
    let comparison = compare(&case, &entries);
    assert!(comparison.mismatches.is_empty());
    assert_eq!(comparison.left_to_server, 1);
    // A request the proxy forwarded that the fixture cannot even lex is a disagreement, and so
    // is one whose statement the proxy never checked.
    let lexical = ran(vec![sent(
        "SELECT 'x",
        Answer::Error(0x2000, "x".into()),
        refused(),
    )]);
    assert_eq!(
        compare(&lexical, &[logged("select", "t")]).mismatches.len(),
        1
    );
    let unchecked = [
        logged("select", "system.local"),
        logged("select", "secret.vault"),
    ];
    let case = ran(vec![
        sent(
            "SELECT * FROM x WHERE k IN (1..2)",
            Answer::Error(0x2000, "x".into()),
            refused(),
        ),
        sent(
            "SELECT * FROM ks.t",
            Answer::Result,
            Some(Verdict::Accepted(vec![checked(
                cql::Action::Select,
                "ks.t",
            )])),
        ),
        sent(
            "SELECT * FROM ks.u",
            Answer::Result,
            Some(Verdict::Accepted(vec![checked(
                cql::Action::Select,
                "ks.u",
            )])),
        ),
    ]);
    assert!(!compare(&case, &unchecked).mismatches.is_empty());
}
