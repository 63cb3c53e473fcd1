//! The access-log and monitor queues of a running `axoneme run` in front of a real memcached,
//! under multigets of many long keys: the access log's queue is smaller than one such entry,
//! so each is dropped and counted while short entries are still written; a watcher that never
//! reads holds no more than `monitor.queueBytes` and its losses are counted; a watcher that
//! reads sees long values truncated and marked; and both losses are reported in the agent's
//! log. Needs `memcached` (scripts/test.sh installs it).

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    connect_from, free_port, read_line, spawn_agent, start_memcached, temp_dir, Children,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LUKE: &str = "127.0.0.21";

/// Bytes of access-log entries the agent may hold: less than one entry with 4 KiB of keys.
const LOG_QUEUE: usize = 4096;

/// Bytes of entries each monitor watcher may lag behind.
const MONITOR_QUEUE: usize = 64 << 10;

/// Writes the configuration and starts the agent; returns its directory, proxy port and
/// metrics port once its API answers.
fn start_agent(children: &mut Children, memcached: u16) -> (PathBuf, u16, u16) {
    let dir = temp_dir("log-queues");
    let (proxy_port, metrics_port) = (free_port(), free_port());
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            r#"accessLog: {{path: access.log, queueBytes: {LOG_QUEUE}}}
monitor: {{queueBytes: {MONITOR_QUEUE}}}
api: {{socket: api.sock}}
metrics: {{listen: "127.0.0.1:{metrics_port}"}}
endpoints:
  - {{name: cache, ips: ["127.0.0.1"], labels: {{app: cache}}}}
  - {{name: luke, ips: ["{LUKE}"], labels: {{app: luke}}}}
listeners:
  - {{name: cache, listen: "127.0.0.1:{proxy_port}", upstream: "127.0.0.1:{memcached}",
      endpoint: cache, direction: ingress, l7proto: memcache}}
"#
        ),
    )
    .unwrap();
    children.0.push(spawn_agent(&dir));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", metrics_port)).is_err()
        || !dir.join("api.sock").exists()
    {
        assert!(Instant::now() < deadline, "the agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (dir, proxy_port, metrics_port)
}

/// The value of the metric sample named `name` (with its labels, if any).
async fn metric(port: u16, name: &str) -> u64 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let line = response
        .lines()
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' '))
        })
        .unwrap_or_else(|| panic!("no {name} in\n{response}"));
    line[name.len() + 1..].parse().unwrap()
}

/// A multiget of `n` keys of 250 bytes each.
fn multiget(n: usize) -> String {
    let keys: Vec<String> = (0..n).map(|i| format!("{i:0250}")).collect();
    format!("get {}\r\n", keys.join(" "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_multigets_are_dropped_from_a_full_log_and_an_unread_monitor_stays_bounded() {
    let mut children = Children(Vec::new());
    let memcached = start_memcached(&mut children);
    let (dir, proxy_port, metrics_port) = start_agent(&mut children, memcached);

    // One watcher asks for the stream and never reads it; another reads it.
    let mut unread = tokio::net::UnixStream::connect(dir.join("api.sock"))
        .await
        .unwrap();
    unread
        .write_all(b"GET /v1/monitor HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut reader = Command::new(env!("CARGO_BIN_EXE_axoneme"))
        .arg("--api")
        .arg(dir.join("api.sock"))
        .args(["monitor", "-o", "json", "--proto", "memcache"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = reader.stdout.take().unwrap();
    children.0.push(reader);
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(metrics_port, "axoneme_monitor_watchers").await < 2 {
        assert!(Instant::now() < deadline, "the watchers did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let proxy = format!("127.0.0.1:{proxy_port}").parse().unwrap();
    let mut luke: TcpStream = connect_from(LUKE, proxy).await;
    let short = "get short-key\r\n";
    luke.write_all(short.as_bytes()).await.unwrap();
    assert_eq!(read_line(&mut luke).await, "END\r\n");
    // 10 KiB and 500 KiB of keys: each entry is over the log's queue even with its keys cut.
    let (small, large) = (multiget(40), multiget(2000));
    let mut long = 0;
    for i in 0..600 {
        let request = if i % 60 == 0 { &large } else { &small };
        luke.write_all(request.as_bytes()).await.unwrap();
        assert_eq!(read_line(&mut luke).await, "END\r\n", "request {i}");
        long += 1;
    }
    luke.write_all(short.as_bytes()).await.unwrap();
    assert_eq!(read_line(&mut luke).await, "END\r\n");

    // The reading watcher sees the long keys cut to 4 KiB, with their length.
    let deadline = Instant::now() + Duration::from_secs(10);
    let cut = loop {
        let line = lines_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the reading watcher shows a truncated entry");
        let Ok(entry) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if entry["generic_l7"].get("truncated").is_some() {
            break entry;
        }
    };
    let keys = cut["generic_l7"]["fields"]["keys"].as_str().unwrap();
    assert_eq!(keys.len(), 4096);
    let length = cut["generic_l7"]["truncated"]["keys"].as_u64().unwrap();
    // The keys are logged joined by ", ".
    let joined = |n: u64| n * 250 + (n - 1) * 2;
    assert!(length == joined(40) || length == joined(2000), "{cut}");

    // Every long entry was dropped from the log and counted; the short ones were written.
    assert_eq!(
        metric(metrics_port, "axoneme_access_log_dropped_total").await,
        long
    );
    assert!(metric(metrics_port, "axoneme_access_log_queue_bytes").await <= LOG_QUEUE as u64);
    let deadline = Instant::now() + Duration::from_secs(5);
    let written = loop {
        let text = std::fs::read_to_string(dir.join("access.log")).unwrap_or_default();
        let entries: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if entries.len() >= 2 || Instant::now() > deadline {
            break entries;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let keys: Vec<&Value> = written
        .iter()
        .map(|e| &e["generic_l7"]["fields"]["keys"])
        .collect();
    assert_eq!(keys, ["short-key", "short-key"]);

    // The watcher that never reads holds at most its share; the rest of its entries are lost.
    let held = metric(metrics_port, "axoneme_monitor_queue_bytes").await;
    assert!(held <= 2 * MONITOR_QUEUE as u64, "{held} bytes held");
    assert!(
        held > (MONITOR_QUEUE - 5000) as u64,
        "the unread watcher's backlog is full: {held}"
    );
    let lost = metric(metrics_port, "axoneme_monitor_dropped_total").await;
    assert!(lost > 100, "{lost} monitor entries lost");

    // Both losses are said in the agent's log, every report period while they grow.
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
        let reported = |what: &str| -> u64 {
            log.lines()
                .filter_map(|line| line.find(what).map(|at| &line[..at]))
                .map(|before| {
                    let digits =
                        before.len() - before.trim_end_matches(|c: char| c.is_ascii_digit()).len();
                    before[before.len() - digits..].parse::<u64>().unwrap()
                })
                .sum()
        };
        let dropped = reported(" access-log entries dropped in the last 10 s: queue full (");
        if dropped == long && reported(" monitor entries dropped in the last 10 s") > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the losses were not reported:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(unread);
}
