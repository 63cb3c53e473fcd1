//! Agent-wide limits over real sockets: connections over a listener's `maxConnections` or the
//! agent's `limits.maxConnections` are refused, and when parsed connections buffer too much the
//! listeners stop accepting and the connection holding the most is closed, while the others
//! carry on. Each hit is counted in `axoneme_limit_hits_total`; a client whose upstream cannot
//! be reached is closed and counted in `axoneme_socket_errors_total`.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axoneme::telemetry::metrics::{LimitHit, SocketError};
use common::{connect_from, read_line, request, TestProxy, Upstream, LUKE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A proxy parsing R2-D2 toward `upstream` on listener `r2d2`, with `limits` and the listener
/// settings `listener` (YAML flow-mapping entries, may be empty).
async fn proxy(name: &str, upstream: SocketAddr, limits: &str, listener: &str) -> TestProxy {
    let config = format!(
        r#"
endpoints:
  - {{name: r2d2, ips: ["127.0.0.1"], labels: {{app: r2d2}}}}
  - {{name: luke, ips: ["{LUKE}"], labels: {{app: luke}}}}
listeners:
  - {{name: r2d2, listen: "127.0.0.1:0", upstream: "{upstream}", endpoint: r2d2, direction: ingress, l7proto: r2d2 {listener}}}
limits: {limits}
protocols: {{cassandra: {{maxFrameBytes: 8192}}}}
"#
    );
    TestProxy::reading_public(name, &config, upstream).await
}

/// Waits (up to 5 s) until `check` holds.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "not within 5 s: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether the peer closed `stream` without sending anything, within 5 s.
async fn closed_silently(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// Asserts the metrics text shows `n` hits of `kind`.
fn assert_hits(proxy: &TestProxy, kind: LimitHit, n: u64) {
    assert_eq!(proxy.agent.metrics().limit_hits(kind), n, "{}", kind.name());
    let line = format!("axoneme_limit_hits_total{{limit=\"{}\"}} {n}", kind.name());
    assert!(
        proxy.agent.metrics_text().lines().any(|l| l == line),
        "missing {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_a_listeners_maximum_are_refused_until_one_closes() {
    let upstream = Upstream::start().await;
    let proxy = proxy("listener-max", upstream.addr, "{}", ", maxConnections: 2").await;
    let addr = proxy.addr("r2d2");
    let mut first = connect_from(LUKE, addr).await;
    let mut second = connect_from(LUKE, addr).await;
    for luke in [&mut first, &mut second] {
        assert_eq!(
            request(luke, "READ /public/a\r\n").await,
            "OK READ /public/a\r\n"
        );
    }
    let mut third = connect_from(LUKE, addr).await;
    assert!(closed_silently(&mut third).await);
    assert_hits(&proxy, LimitHit::ListenerConnections, 1);
    drop(first);
    eventually("the first connection is counted out", || {
        proxy
            .agent
            .metrics()
            .connections_active
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    })
    .await;
    let mut fourth = connect_from(LUKE, addr).await;
    assert_eq!(
        request(&mut fourth, "READ /public/b\r\n").await,
        "OK READ /public/b\r\n"
    );
    assert_eq!(
        request(&mut second, "READ /public/c\r\n").await,
        "OK READ /public/c\r\n"
    );
    assert_hits(&proxy, LimitHit::ListenerConnections, 1);
    assert_hits(&proxy, LimitHit::AgentConnections, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_agents_maximum_are_refused() {
    let upstream = Upstream::start().await;
    let proxy = proxy("agent-max", upstream.addr, "{maxConnections: 1}", "").await;
    let addr = proxy.addr("r2d2");
    let mut first = connect_from(LUKE, addr).await;
    assert_eq!(
        request(&mut first, "READ /public/a\r\n").await,
        "OK READ /public/a\r\n"
    );
    let mut second = connect_from(LUKE, addr).await;
    assert!(closed_silently(&mut second).await);
    assert_hits(&proxy, LimitHit::AgentConnections, 1);
    assert_hits(&proxy, LimitHit::ListenerConnections, 0);
}

/// Sends `n` bytes of an R2-D2 request line without its end: the parser keeps them all.
async fn partial_line(stream: &mut TcpStream, n: usize) {
    let mut line = b"READ /public/".to_vec();
    line.resize(n, b'x');
    stream.write_all(&line).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_agent_stops_accepting_then_closes_the_connection_holding_the_most() {
    let upstream = Upstream::start().await;
    // Pause at 18,000 buffered bytes, resume below 16,000, close the largest above 20,000.
    let proxy = proxy(
        "overload",
        upstream.addr,
        "{maxBuffered: 16384, bufferedBytes: 20000}",
        "",
    )
    .await;
    let addr = proxy.addr("r2d2");
    let buffered = || proxy.agent.metrics_text();
    let holds = |n: usize| {
        let line = format!("axoneme_buffered_bytes {n}");
        move || buffered().lines().any(|l| l == line)
    };
    let mut largest = connect_from(LUKE, addr).await;
    partial_line(&mut largest, 7500).await;
    let mut kept = connect_from(LUKE, addr).await;
    partial_line(&mut kept, 7000).await;
    eventually("14,500 bytes buffered", holds(14_500)).await;
    assert_hits(&proxy, LimitHit::AcceptPaused, 0);
    let mut third = connect_from(LUKE, addr).await;
    partial_line(&mut third, 4000).await;
    eventually("18,500 bytes buffered", holds(18_500)).await;
    assert_hits(&proxy, LimitHit::AcceptPaused, 1);

    // Accepting is paused: this connection waits in the backlog, its request unread.
    let mut waiting = connect_from(LUKE, addr).await;
    waiting
        .write_all(b"READ /public/waiting\r\n")
        .await
        .unwrap();

    third.write_all(&[b'x'; 2000]).await.unwrap();
    assert!(closed_silently(&mut largest).await, "the largest is closed");
    assert_hits(&proxy, LimitHit::BufferedBytes, 1);
    eventually("13,000 bytes buffered", holds(13_000)).await;

    // Below 80 % the waiting connection is accepted and served; the others were not touched.
    assert_eq!(read_line(&mut waiting).await, "OK READ /public/waiting\r\n");
    kept.write_all(b"\r\n").await.unwrap();
    let reply = read_line(&mut kept).await;
    assert!(
        reply.starts_with("OK READ /public/xx") && reply.len() == 7005,
        "{reply:?}"
    );
    assert_hits(&proxy, LimitHit::BufferedBytes, 1);
    assert_hits(&proxy, LimitHit::AcceptPaused, 1);
}

#[tokio::test]
async fn a_budget_below_one_connections_buffer_is_refused_with_its_reason() {
    let dir = common::temp_dir("budget-config");
    let path = dir.join("config.yaml");
    std::fs::write(&path, "limits: {maxBuffered: 65536, bufferedBytes: 1000}\n").unwrap();
    let error = axoneme::config::Config::load(&path)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("limits.bufferedBytes") && error.contains("65536"),
        "{error}"
    );
    std::fs::write(&path, "limits: {maxConnections: 0}\n").unwrap();
    let error = axoneme::config::Config::load(&path)
        .unwrap_err()
        .to_string();
    assert!(error.contains("limits.maxConnections"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_an_unreachable_upstream_are_closed_and_counted() {
    let closed_port = common::free_port();
    let upstream: SocketAddr = format!("127.0.0.1:{closed_port}").parse().unwrap();
    let proxy = proxy("unreachable", upstream, "{}", "").await;
    for _ in 0..3 {
        let mut luke = connect_from(LUKE, proxy.addr("r2d2")).await;
        assert!(closed_silently(&mut luke).await);
    }
    let metrics = proxy.agent.metrics();
    eventually("three upstream connect errors", || {
        metrics.socket_errors(SocketError::UpstreamConnect) == 3
    })
    .await;
    let line = "axoneme_socket_errors_total{kind=\"upstream_connect\"} 3";
    assert!(proxy.agent.metrics_text().lines().any(|l| l == line));
}
