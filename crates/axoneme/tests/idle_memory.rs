//! What an idle parsed connection costs in heap: the proxy runs in this process under an
//! allocator that counts live bytes; many connections each make their requests and then wait,
//! and the heap they hold between them, over the count taken before they opened, is divided
//! among them. After a request of about 1 MiB ([`CONNECTIONS`] connections) a connection must
//! hold at most [`IDLE_LIMIT`]; after small requests ([`MANY_CONNECTIONS`] connections), what
//! every connection costs whatever it carries, at most [`SMALL_IDLE_LIMIT`].
//!
//! memcached runs as a process of its own. The CQL server (`cql-fixture`) and the clients run
//! on threads of this process whose allocations are not counted: each of them allocates and
//! frees only on its own thread, so what is counted is the proxy (its listeners and its
//! workers) and nothing else.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use axoneme::config::Config;
use axoneme::{builtin_protocols, Agent};
use axoneme_cassandra::compression::Compression;
use axoneme_testkit::CountingAllocator;
use cql_fixture::journal::Journal;
use cql_fixture::store::Store;

/// Connections held open at once.
const CONNECTIONS: usize = 100;

/// The most heap one idle connection may hold after a large request.
const IDLE_LIMIT: usize = 32 * 1024;

/// Connections held open at once after small requests: enough that what the proxy allocates
/// once, or per thousand connections, weighs little on each.
const MANY_CONNECTIONS: usize = 1000;

/// The most heap one idle memcached connection may hold after small requests: its task (in an
/// unoptimised build, whose futures are larger than a release build's), its two sockets'
/// registrations, its parser, engine and policy state.
const SMALL_IDLE_LIMIT: usize = 4 * 1024;

/// How long the count may take to settle once the clients have their answers (the proxy may
/// still be finishing its turn on a connection when the last byte reaches the client).
const SETTLE: Duration = Duration::from_secs(10);

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The tests share the counter: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `work` on a thread of its own whose allocations are not counted.
fn uncounted<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        CountingAllocator::not_this_thread();
        work()
    })
}

/// A proxy in this process: one listener parsing `l7proto` in front of `upstream`, no access
/// log, every request allowed.
struct Proxy {
    runtime: tokio::runtime::Runtime,
    agent: Arc<Agent>,
}

impl Proxy {
    fn start(name: &str, l7proto: &str, upstream: SocketAddr) -> Proxy {
        let text = format!(
            "endpoints:\n  - {{name: server, ips: [\"127.0.0.1\"], labels: {{app: server}}}}\n\
             listeners:\n  - {{name: {name}, listen: \"127.0.0.1:0\", upstream: \"{upstream}\", \
             endpoint: server, direction: ingress, l7proto: {l7proto}}}\n"
        );
        let config = Config::parse(&text, &common::temp_dir(name)).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let registry = builtin_protocols(&config.protocols);
        let agent = runtime
            .block_on(Agent::start(&config, registry, None))
            .unwrap();
        Proxy { runtime, agent }
    }

    fn addr(&self, name: &str) -> SocketAddr {
        self.agent.local_addr(name).unwrap()
    }

    /// Waits until no connection is open.
    fn wait_closed(&self) {
        let deadline = Instant::now() + SETTLE;
        while self
            .agent
            .metrics()
            .connections_active
            .load(Ordering::Relaxed)
            > 0
        {
            assert!(Instant::now() < deadline, "connections stayed open");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.runtime.block_on(self.agent.shutdown());
    }
}

/// Runs `work` once on a first connection (numbered 0), so that what the proxy sets up on
/// first use is there, then on `connections` connections to `proxy`, each opened by `connect`
/// and numbered from 1; with the connections idle, returns the heap each holds beyond the
/// count before they opened, once it is at most `limit` or [`SETTLE`] has passed.
fn idle_bytes_per_connection(
    proxy: &Proxy,
    connections: usize,
    limit: usize,
    connect: impl Fn() -> TcpStream + Send + Sync + 'static,
    work: impl Fn(&mut TcpStream, usize) + Send + Sync + 'static,
) -> usize {
    let turn = Arc::new(Barrier::new(2));
    let client = {
        let turn = Arc::clone(&turn);
        uncounted(move || {
            // Once before counting, so that what the proxy sets up on first use is there.
            let mut first = connect();
            work(&mut first, 0);
            drop(first);
            turn.wait();
            turn.wait();
            let mut open: Vec<TcpStream> = (0..connections).map(|_| connect()).collect();
            for (i, connection) in open.iter_mut().enumerate() {
                work(connection, i + 1);
            }
            turn.wait();
            turn.wait();
        })
    };
    turn.wait();
    proxy.wait_closed();
    let before = CountingAllocator::live_bytes();
    turn.wait();
    turn.wait();
    let deadline = Instant::now() + SETTLE;
    let per_connection = loop {
        let held = CountingAllocator::live_bytes().saturating_sub(before);
        let per_connection = held / connections;
        if per_connection <= limit || Instant::now() > deadline {
            break per_connection;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    turn.wait();
    client.join().unwrap();
    proxy.wait_closed();
    per_connection
}

// memcached.

/// A memcached process on a free port, stopped when dropped.
struct Memcached {
    child: Child,
    addr: SocketAddr,
}

impl Memcached {
    fn start() -> Memcached {
        let port = common::free_port();
        let child = Command::new("memcached")
            .args([
                "-u",
                "root",
                "-l",
                "127.0.0.1",
                "-U",
                "0",
                "-I",
                "2m",
                "-m",
                "64",
                "-c",
                "4096",
            ])
            .args(["-p", &port.to_string()])
            .spawn()
            .expect("memcached is required (scripts/test.sh installs it)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + SETTLE;
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "memcached did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Memcached { child, addr }
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads from `stream` until what was read ends with `end`.
fn read_until_end(stream: &mut TcpStream, end: &[u8]) -> Vec<u8> {
    let mut reply = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while !reply.ends_with(end) {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&reply));
        reply.extend_from_slice(&chunk[..n]);
    }
    reply
}

/// A set of a 512 KiB value, then a get of it among enough other keys to make a command line
/// of about 1 MiB (memcached's limit for a retrieval).
fn memcached_work(stream: &mut TcpStream, _: usize) {
    let value = vec![b'v'; 512 * 1024];
    let mut set = format!("set big 0 0 {}\r\n", value.len()).into_bytes();
    set.extend_from_slice(&value);
    set.extend_from_slice(b"\r\n");
    stream.write_all(&set).unwrap();
    assert_eq!(read_until_end(stream, b"\r\n"), b"STORED\r\n");
    let mut get = b"get big".to_vec();
    let mut key = 0;
    while get.len() < 1_000_000 {
        get.extend_from_slice(format!(" absent-{key:08}").as_bytes());
        key += 1;
    }
    get.extend_from_slice(b"\r\n");
    stream.write_all(&get).unwrap();
    let reply = read_until_end(stream, b"\r\nEND\r\n");
    assert!(reply.starts_with(b"VALUE big 0 524288\r\n"));
    assert_eq!(
        reply.len(),
        "VALUE big 0 524288\r\n\r\nEND\r\n".len() + value.len()
    );
}

#[test]
fn an_idle_memcached_connection_holds_little_after_a_1_mib_multiget() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let memcached = Memcached::start();
    let proxy = Proxy::start("memcached", "memcache", memcached.addr);
    let addr = proxy.addr("memcached");
    let per_connection = idle_bytes_per_connection(
        &proxy,
        CONNECTIONS,
        IDLE_LIMIT,
        move || TcpStream::connect(addr).unwrap(),
        memcached_work,
    );
    eprintln!("memcached: {per_connection} bytes per idle connection after a 1 MiB multiget");
    assert!(
        per_connection <= IDLE_LIMIT,
        "{per_connection} bytes per idle connection"
    );
}

/// Requests of the first connection (numbered 0) before counting: enough access-log entries
/// to fill the agent's ring of recent entries (1 MiB), which then holds no more.
const WARM_UP_REQUESTS: usize = 5000;

/// A set of a 2-byte value and a get of it; the first connection makes
/// [`WARM_UP_REQUESTS`] gets more.
fn small_memcached_work(stream: &mut TcpStream, connection: usize) {
    stream.write_all(b"set small 0 0 2\r\nab\r\n").unwrap();
    assert_eq!(read_until_end(stream, b"\r\n"), b"STORED\r\n");
    let gets = if connection == 0 { WARM_UP_REQUESTS } else { 1 };
    for _ in 0..gets {
        stream.write_all(b"get small\r\n").unwrap();
        assert_eq!(
            read_until_end(stream, b"END\r\n"),
            b"VALUE small 0 2\r\nab\r\nEND\r\n"
        );
    }
}

#[test]
fn an_idle_memcached_connection_after_small_requests_holds_little() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let memcached = Memcached::start();
    let proxy = Proxy::start("small", "memcache", memcached.addr);
    let addr = proxy.addr("small");
    let per_connection = idle_bytes_per_connection(
        &proxy,
        MANY_CONNECTIONS,
        SMALL_IDLE_LIMIT,
        move || TcpStream::connect(addr).unwrap(),
        small_memcached_work,
    );
    eprintln!("memcached: {per_connection} bytes per idle connection after small requests");
    assert!(
        per_connection <= SMALL_IDLE_LIMIT,
        "{per_connection} bytes per idle connection"
    );
}

// CQL.

/// Starts `cql-fixture` on an uncounted thread; its address.
fn start_cql_fixture() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    uncounted(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let store = Arc::new(Mutex::new(Store::new()));
            let _ = cql_fixture::server::serve(listener, store, Arc::new(Journal::off())).await;
        });
    });
    rx.recv().unwrap()
}

/// A protocol v4 envelope.
fn envelope(opcode: u8, stream: i16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![4, flags];
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.push(opcode);
    bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
    bytes.extend_from_slice(body);
    bytes
}

/// Reads one envelope: its opcode and its body, decompressed.
fn read_envelope(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 9];
    stream.read_exact(&mut header).unwrap();
    let length = u32::from_be_bytes(header[5..9].try_into().unwrap()) as usize;
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    if header[1] & 1 != 0 {
        let mut plain = Vec::new();
        Compression::Lz4
            .decompress(&body, &mut plain, 16 << 20)
            .unwrap();
        body = plain;
    }
    (header[4], body)
}

/// A QUERY at consistency ONE, LZ4-compressed; its answer must be a RESULT.
fn query(stream: &mut TcpStream, text: &str) {
    let mut body = (text.len() as u32).to_be_bytes().to_vec();
    body.extend_from_slice(text.as_bytes());
    body.extend_from_slice(&[0, 1, 0]);
    let compressed = Compression::Lz4.compress(&body);
    stream
        .write_all(&envelope(0x07, 1, 1, &compressed))
        .unwrap();
    let (opcode, answer) = read_envelope(stream);
    assert_eq!(opcode, 0x08, "{}", String::from_utf8_lossy(&answer));
}

/// A connection that agreed on LZ4 compression.
fn cql_connect(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut body = vec![0, 2];
    for text in ["CQL_VERSION", "3.0.0", "COMPRESSION", "lz4"] {
        body.extend_from_slice(&(text.len() as u16).to_be_bytes());
        body.extend_from_slice(text.as_bytes());
    }
    stream.write_all(&envelope(0x01, 0, 0, &body)).unwrap();
    assert_eq!(read_envelope(&mut stream).0, 0x02, "READY");
    stream
}

/// An INSERT of a 1,000,000-byte text value: a frame of about 4 KiB that decompresses to
/// about 1 MiB. The first connection creates the table.
fn cql_work(stream: &mut TcpStream, connection: usize) {
    if connection == 0 {
        query(
            stream,
            "CREATE KEYSPACE IF NOT EXISTS store WITH replication = \
             {'class': 'SimpleStrategy', 'replication_factor': 1}",
        );
        query(
            stream,
            "CREATE TABLE IF NOT EXISTS store.blobs (k int PRIMARY KEY, v text)",
        );
    }
    let value = "x".repeat(1_000_000);
    query(
        stream,
        &format!("INSERT INTO store.blobs (k, v) VALUES (1, '{value}')"),
    );
}

#[test]
fn an_idle_cql_connection_holds_little_after_a_frame_decompressing_to_1_mib() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let fixture = start_cql_fixture();
    let proxy = Proxy::start("cql", "cassandra", fixture);
    let addr = proxy.addr("cql");
    let per_connection = idle_bytes_per_connection(
        &proxy,
        CONNECTIONS,
        IDLE_LIMIT,
        move || cql_connect(addr),
        cql_work,
    );
    eprintln!(
        "cql: {per_connection} bytes per idle connection after a frame decompressing to 1 MiB"
    );
    assert!(
        per_connection <= IDLE_LIMIT,
        "{per_connection} bytes per idle connection"
    );
}
