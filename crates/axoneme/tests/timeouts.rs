//! Timeouts over real sockets, each set to a second: a client holding a partial request, an
//! idle client, an upstream that never answers, an upstream that never completes the
//! connection, and API clients that send half a request head are closed at the configured time,
//! counted in `axoneme_timeouts_total` by kind, while clients that keep moving stay connected.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axoneme::telemetry::metrics::Timeout;
use common::{connect_from, request, TestProxy, Upstream, LUKE};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixStream};

/// The earliest and latest a one-second timeout may close a connection, counted from the
/// moment it started running.
const EARLIEST: Duration = Duration::from_millis(900);
const LATEST: Duration = Duration::from_millis(2500);

/// A proxy with `timeouts` and two listeners toward `upstream`: `r2d2` parses R2-D2, `plain`
/// forwards bytes unparsed (no policy selects its endpoint).
async fn proxy(name: &str, upstream: SocketAddr, timeouts: &str) -> TestProxy {
    let config = format!(
        r#"
endpoints:
  - {{name: r2d2, ips: ["127.0.0.1"], labels: {{app: r2d2}}}}
  - {{name: luke, ips: ["{LUKE}"], labels: {{app: luke}}}}
  - {{name: c3po, ips: ["127.0.0.3"], labels: {{app: c3po}}}}
listeners:
  - {{name: r2d2, listen: "127.0.0.1:0", upstream: "{upstream}", endpoint: r2d2, direction: ingress, l7proto: r2d2}}
  - {{name: plain, listen: "127.0.0.1:0", upstream: "{upstream}", endpoint: c3po, direction: ingress}}
timeouts: {timeouts}
"#
    );
    TestProxy::reading_public(name, &config, upstream).await
}

/// Reads until the peer closes; what arrived, and when the close came. Fails after 5 s.
async fn closed<S: AsyncRead + Unpin>(stream: &mut S) -> (Vec<u8>, Instant) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (received, Instant::now()),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => panic!(
                "still open after 5 s (got {:?})",
                String::from_utf8_lossy(&received)
            ),
        }
    }
}

fn assert_about_one_second(from: Instant, to: Instant, what: &str) {
    let elapsed = to - from;
    assert!(
        (EARLIEST..=LATEST).contains(&elapsed),
        "{what} after {elapsed:?}, expected about 1 s"
    );
}

/// Waits (up to 2 s) until the agent has counted `n` timeouts of `kind`, then checks that no
/// other kind was counted and that the metrics text shows the count.
async fn assert_counted(proxy: &TestProxy, kind: Timeout, n: u64) {
    let metrics = proxy.agent.metrics();
    let deadline = Instant::now() + Duration::from_secs(2);
    while metrics.timeouts(kind) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for other in Timeout::ALL {
        let expected = if other == kind { n } else { 0 };
        assert_eq!(metrics.timeouts(other), expected, "{}", other.name());
    }
    let line = format!("axoneme_timeouts_total{{kind=\"{}\"}} {n}", kind.name());
    assert!(
        proxy.agent.metrics_text().lines().any(|l| l == line),
        "missing {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_holding_a_partial_request_is_closed_after_request_progress() {
    let upstream = Upstream::start().await;
    let proxy = proxy(
        "slowloris",
        upstream.addr,
        "{requestProgress: 1, clientIdle: 30}",
    )
    .await;
    let mut luke = connect_from(LUKE, proxy.addr("r2d2")).await;
    assert_eq!(
        request(&mut luke, "READ /public/a\r\n").await,
        "OK READ /public/a\r\n"
    );
    // Trickling keeps bytes moving (so the client is not idle), but the request never ends.
    let started = Instant::now();
    luke.write_all(b"READ /pub").await.unwrap();
    for part in [&b"lic/"[..], b"plans"] {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let _ = luke.write_all(part).await;
    }
    let (rest, at) = closed(&mut luke).await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert_about_one_second(started, at, "closed");
    assert_eq!(upstream.received(), b"READ /public/a\r\n");
    assert_counted(&proxy, Timeout::RequestProgress, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_is_closed_after_client_idle_and_a_busy_one_is_not() {
    let upstream = Upstream::start().await;
    let proxy = proxy("idle", upstream.addr, "{clientIdle: 1}").await;
    let mut luke = connect_from(LUKE, proxy.addr("r2d2")).await;
    // Requests every 400 ms for longer than the idle timeout keep the connection open.
    for i in 0..5 {
        let line = format!("READ /public/{i}\r\n");
        assert_eq!(request(&mut luke, &line).await, format!("OK {line}"));
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let quiet_since = Instant::now() - Duration::from_millis(400);
    let (rest, at) = closed(&mut luke).await;
    assert!(rest.is_empty());
    assert_about_one_second(quiet_since, at, "closed");
    assert_counted(&proxy, Timeout::ClientIdle, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_plain_connection_is_closed_after_client_idle_and_a_busy_one_is_not() {
    let upstream = Upstream::start().await;
    let proxy = proxy("idle-plain", upstream.addr, "{clientIdle: 1}").await;
    let mut luke = connect_from(LUKE, proxy.addr("plain")).await;
    for i in 0..5 {
        let line = format!("ANYTHING {i}\r\n");
        assert_eq!(request(&mut luke, &line).await, format!("OK {line}"));
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let quiet_since = Instant::now() - Duration::from_millis(400);
    let (rest, at) = closed(&mut luke).await;
    assert!(rest.is_empty());
    assert_about_one_second(quiet_since, at, "closed");
    assert_counted(&proxy, Timeout::ClientIdle, 1).await;
}

/// An upstream that accepts connections and never reads or answers.
async fn silent_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_answers_closes_the_connection_after_upstream_response() {
    let upstream = silent_upstream().await;
    let proxy = proxy("silent", upstream, "{upstreamResponse: 1, clientIdle: 30}").await;
    let mut luke = connect_from(LUKE, proxy.addr("r2d2")).await;
    // Quiet before any request: nothing is owed, so only the idle timeout could apply.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let started = Instant::now();
    luke.write_all(b"READ /public/plans\r\n").await.unwrap();
    let (rest, at) = closed(&mut luke).await;
    assert!(rest.is_empty());
    assert_about_one_second(started, at, "closed");
    assert_counted(&proxy, Timeout::UpstreamResponse, 1).await;
}

/// A loopback listener that never accepts, its accept queue filled so that a further
/// connection attempt is never completed.
async fn full_listener() -> (TcpListener, Vec<TcpStream>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => queued.push(stream),
            Ok(Err(error)) => panic!("connect to the filling listener failed: {error}"),
            Err(_) => return (listener, queued),
        }
    }
    panic!("the accept queue of a listener with backlog 1 never filled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_completes_the_connection_closes_the_client_after_upstream_connect()
{
    let (black_hole, _queued) = full_listener().await;
    let proxy = proxy(
        "black-hole",
        black_hole.local_addr().unwrap(),
        "{upstreamConnect: 1}",
    )
    .await;
    let started = Instant::now();
    let mut luke = connect_from(LUKE, proxy.addr("r2d2")).await;
    let (rest, at) = closed(&mut luke).await;
    assert!(rest.is_empty());
    assert_about_one_second(started, at, "closed");
    assert_counted(&proxy, Timeout::UpstreamConnect, 1).await;
}

const HALF_A_HEAD: &[u8] = b"GET /v1/health HTTP/1.1\r\nHost: axoneme\r\n";

/// Sends half a request head and checks that the API closes the connection about a second
/// later.
async fn half_a_head_is_closed<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let started = Instant::now();
    stream.write_all(HALF_A_HEAD).await.unwrap();
    let (_, at) = closed(&mut stream).await;
    assert_about_one_second(started, at, "closed");
}

async fn api_proxy(name: &str) -> (TestProxy, SocketAddr, std::path::PathBuf) {
    let upstream = Upstream::start().await;
    let proxy = proxy(name, upstream.addr, "{apiHeader: 1}").await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = listener.local_addr().unwrap();
    tokio::spawn(axoneme::control::api::serve_tcp(
        Arc::clone(&proxy.agent),
        listener,
        "s3cret".into(),
    ));
    let socket = proxy.dir.join("api.sock");
    let (agent, path) = (Arc::clone(&proxy.agent), socket.clone());
    tokio::spawn(async move { axoneme::control::api::serve_unix(agent, &path).await });
    wait_for_socket(&socket).await;
    (proxy, tcp, socket)
}

/// Waits until the API has bound its socket (connections made from then on are served).
async fn wait_for_socket(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !path.exists() {
        assert!(Instant::now() < deadline, "the API socket never appeared");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_clients_sending_half_a_request_head_are_closed_after_api_header() {
    let (proxy, tcp, socket) = api_proxy("api-header").await;
    let (over_tcp, over_unix) = tokio::join!(
        half_a_head_is_closed(TcpStream::connect(tcp).await.unwrap()),
        half_a_head_is_closed(UnixStream::connect(&socket).await.unwrap()),
    );
    let ((), ()) = (over_tcp, over_unix);
    assert_counted(&proxy, Timeout::ApiHeader, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_connection_left_idle_after_its_requests_is_closed_without_counting() {
    let (proxy, tcp, _socket) = api_proxy("api-keep-alive").await;
    let mut client = TcpStream::connect(tcp).await.unwrap();
    client
        .write_all(
            b"GET /v1/health HTTP/1.1\r\nHost: axoneme\r\nAuthorization: Bearer s3cret\r\n\r\n",
        )
        .await
        .unwrap();
    let answered = Instant::now();
    let (response, at) = closed(&mut client).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(r#"{"status":"ok"}"#), "{response}");
    assert_about_one_second(answered, at, "closed");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(proxy.agent.metrics().timeouts(Timeout::ApiHeader), 0);
}
