//! Kafka through `axoneme run` over real sockets, with policy written as Cilium's `rules.kafka`:
//! allowed requests reach the broker byte for byte, denied ones are answered in their place
//! with the response Kafka's message definitions give for TOPIC_AUTHORIZATION_FAILED (29), in
//! correlation order among the broker's responses, and `policy trace` agrees.
//!
//! The requests and the expected denial are encoded here by hand from Kafka's
//! `ProduceRequest.json` / `ProduceResponse.json` (version 3) and `ApiVersionsRequest.json`
//! (version 0); the broker is a stand-in that records each request and answers it with its
//! correlation id, which is all the proxy reads of a response.

mod common;

use std::net::SocketAddr;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{agent_cli, connect_from, free_port, spawn_agent, temp_dir, wait_for_api, LUKE};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const C3PO: &str = "127.0.0.3";

/// A broker stand-in: records every request frame and answers each with a response carrying
/// its correlation id and the body `0xAB 0xCD`.
struct Broker {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Broker {
    async fn start() -> Broker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let all = Arc::clone(&requests);
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let all = Arc::clone(&all);
                tokio::spawn(async move {
                    while let Some(frame) = read_frame(&mut stream).await {
                        let mut response = 6u32.to_be_bytes().to_vec();
                        response.extend_from_slice(&frame[8..12]);
                        response.extend_from_slice(&[0xAB, 0xCD]);
                        all.lock().unwrap().push(frame);
                        if stream.write_all(&response).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Broker { addr, requests }
    }

    fn requests(&self) -> Vec<Vec<u8>> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads one length-prefixed frame, length included; `None` at the end of the stream.
async fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).await.ok()?;
    let mut frame = length.to_vec();
    frame.resize(4 + u32::from_be_bytes(length) as usize, 0);
    stream.read_exact(&mut frame[4..]).await.ok()?;
    Some(frame)
}

/// Reads one frame within 5 s, failing the test otherwise.
async fn response(stream: &mut TcpStream) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(5), read_frame(stream))
        .await
        .expect("no response within 5 s")
        .expect("the connection was closed")
}

/// The broker stand-in's answer to the request with `correlation_id`.
fn broker_answer(correlation_id: i32) -> Vec<u8> {
    let mut answer = 6u32.to_be_bytes().to_vec();
    answer.extend_from_slice(&correlation_id.to_be_bytes());
    answer.extend_from_slice(&[0xAB, 0xCD]);
    answer
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// `body` behind a request header v1 (key, version, correlation id, client id), framed.
fn request(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::new();
    message.extend_from_slice(&api_key.to_be_bytes());
    message.extend_from_slice(&version.to_be_bytes());
    message.extend_from_slice(&correlation_id.to_be_bytes());
    string(&mut message, "luke");
    message.extend_from_slice(body);
    let mut frame = (message.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&message);
    frame
}

fn api_versions(correlation_id: i32) -> Vec<u8> {
    request(18, 0, correlation_id, &[])
}

/// Produce v3 with `acks`, one record batch (opaque bytes) on partition 0 of each topic.
fn produce(correlation_id: i32, acks: i16, topics: &[&str]) -> Vec<u8> {
    let mut body = (-1i16).to_be_bytes().to_vec(); // transactional_id: null
    body.extend_from_slice(&acks.to_be_bytes());
    body.extend_from_slice(&30_000i32.to_be_bytes());
    body.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for topic in topics {
        string(&mut body, topic);
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&0i32.to_be_bytes());
        let batch = b"a record batch the proxy passes unread";
        body.extend_from_slice(&(batch.len() as i32).to_be_bytes());
        body.extend_from_slice(batch);
    }
    request(0, 3, correlation_id, &body)
}

/// The Produce v3 response a broker sends when every partition is refused with
/// TOPIC_AUTHORIZATION_FAILED: base offset and log append time -1, no throttle.
fn produce_denied(correlation_id: i32, topics: &[&str]) -> Vec<u8> {
    let mut body = correlation_id.to_be_bytes().to_vec();
    body.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for topic in topics {
        string(&mut body, topic);
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&0i32.to_be_bytes());
        body.extend_from_slice(&29i16.to_be_bytes());
        body.extend_from_slice(&(-1i64).to_be_bytes());
        body.extend_from_slice(&(-1i64).to_be_bytes());
    }
    body.extend_from_slice(&0i32.to_be_bytes());
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

struct Agent {
    child: Child,
    dir: std::path::PathBuf,
    port: u16,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `axoneme run` guarding the broker (endpoint `kafka`): luke may produce to
/// `deathstar-plans` and ask for API versions; c3po has no rule.
async fn start(broker: &Broker) -> Agent {
    let dir = temp_dir("kafka");
    let upstream = broker.addr;
    let policy = format!(
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: empire}}
spec:
  endpointSelector: {{matchLabels: {{app: kafka}}}}
  ingress:
    - fromEndpoints: [{{matchLabels: {{app: luke}}}}]
      toPorts:
        - ports: [{{port: "{}", protocol: TCP}}]
          rules:
            kafka:
              - {{role: produce, topic: deathstar-plans}}
              - {{apiKey: apiversions}}
"#,
        upstream.port()
    );
    std::fs::write(dir.join("policy.yaml"), policy).unwrap();
    let port = free_port();
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            r#"accessLog: {{path: access.log}}
api: {{socket: api.sock}}
endpoints:
  - {{name: kafka, ips: ["127.0.0.1"], labels: {{app: kafka}}}}
  - {{name: luke, ips: ["{LUKE}"], labels: {{app: luke}}}}
  - {{name: c3po, ips: ["{C3PO}"], labels: {{app: c3po}}}}
policies: [policy.yaml]
listeners:
  - {{name: kafka, listen: "127.0.0.1:{port}", upstream: "{upstream}", endpoint: kafka, direction: ingress}}
"#
        ),
    )
    .unwrap();
    let agent = Agent {
        child: spawn_agent(&dir),
        dir,
        port,
    };
    wait_for_api(&agent.dir).await;
    agent
}

/// The access log's entries, once it holds `n`.
async fn log_entries(dir: &std::path::Path, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let entries: Vec<Value> = std::fs::read_to_string(dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        if entries.len() >= n || std::time::Instant::now() > deadline {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_rules_pass_allowed_requests_and_answer_denied_ones_in_order() {
    let broker = Broker::start().await;
    let agent = start(&broker).await;
    let listener: SocketAddr = format!("127.0.0.1:{}", agent.port).parse().unwrap();
    let mut client = connect_from(LUKE, listener).await;

    // Pipelined: an allowed Produce, a denied one, another denied one naming an allowed and a
    // denied topic, and an allowed ApiVersions. The denials come in their places.
    let allowed = produce(1, 1, &["deathstar-plans"]);
    let mixed = ["deathstar-plans", "empire-announce"];
    let mut pipeline = allowed.clone();
    pipeline.extend(produce(2, 1, &["empire-announce"]));
    pipeline.extend(produce(3, -1, &mixed));
    pipeline.extend(api_versions(4));
    client.write_all(&pipeline).await.unwrap();
    assert_eq!(response(&mut client).await, broker_answer(1));
    assert_eq!(
        response(&mut client).await,
        produce_denied(2, &["empire-announce"])
    );
    assert_eq!(response(&mut client).await, produce_denied(3, &mixed));
    assert_eq!(response(&mut client).await, broker_answer(4));

    // A denied Produce with acks 0 gets no response; the connection goes on.
    client
        .write_all(&produce(5, 0, &["empire-announce"]))
        .await
        .unwrap();
    client.write_all(&api_versions(6)).await.unwrap();
    assert_eq!(response(&mut client).await, broker_answer(6));
    assert_eq!(
        broker.requests(),
        [allowed, api_versions(4), api_versions(6)]
    );

    let entries = log_entries(&agent.dir, 6).await;
    let seen: Vec<(String, Value)> = entries
        .iter()
        .map(|e| {
            (
                e["entry_type"].as_str().unwrap().to_owned(),
                e["generic_l7"].clone(),
            )
        })
        .collect();
    let l7 = |fields: Value| serde_json::json!({"proto": "kafka", "fields": fields});
    assert_eq!(
        seen,
        [
            (
                "Request".to_owned(),
                l7(
                    serde_json::json!({"api_key": "produce", "api_version": "3", "correlation_id": "1", "topic": "deathstar-plans"})
                )
            ),
            (
                "Denied".to_owned(),
                l7(
                    serde_json::json!({"api_key": "produce", "api_version": "3", "correlation_id": "2", "topic": "empire-announce"})
                )
            ),
            (
                "Denied".to_owned(),
                l7(
                    serde_json::json!({"api_key": "produce", "api_version": "3", "correlation_id": "3", "topic": "deathstar-plans, empire-announce"})
                )
            ),
            (
                "Request".to_owned(),
                l7(
                    serde_json::json!({"api_key": "apiversions", "api_version": "0", "correlation_id": "4"})
                )
            ),
            (
                "Denied".to_owned(),
                l7(
                    serde_json::json!({"api_key": "produce", "api_version": "3", "correlation_id": "5", "topic": "empire-announce"})
                )
            ),
            (
                "Request".to_owned(),
                l7(
                    serde_json::json!({"api_key": "apiversions", "api_version": "0", "correlation_id": "6"})
                )
            ),
        ]
    );
    assert_eq!(entries[1]["reason"], "no-allow");
    assert_eq!(entries[0]["policy_name"], "empire");

    // A remote no rule names is refused at connect.
    let mut c3po = connect_from(C3PO, listener).await;
    c3po.write_all(&api_versions(1)).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), c3po.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?} {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_trace_judges_kafka_requests_as_connections_do() {
    let broker = Broker::start().await;
    let agent = start(&broker).await;
    let port = broker.addr.port().to_string();
    let trace = |source: &str, fields: &[&str]| {
        let mut args = vec![
            "policy",
            "trace",
            "-o",
            "json",
            "--src-address",
            source,
            "--dst-endpoint",
            "kafka",
            "--dport",
            &port,
        ];
        args.extend(fields);
        let output = agent_cli(&agent.dir, &args);
        let answer: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
            panic!(
                "{args:?}: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        match (answer["allowed"].as_bool(), answer["stage"].as_str()) {
            (Some(true), _) => "allowed",
            (Some(false), Some("l7")) => "denied",
            (Some(false), Some("l3l4")) => "refused",
            _ => panic!("unexpected answer {answer}"),
        }
    };
    let cases: [(&str, &[&str], &str); 7] = [
        (
            LUKE,
            &["apiKey=produce", "topic=deathstar-plans"],
            "allowed",
        ),
        (LUKE, &["apiKey=produce", "topic=empire-announce"], "denied"),
        (
            LUKE,
            &["apiKey=produce", "topic=deathstar-plans,empire-announce"],
            "denied",
        ),
        (
            LUKE,
            &["apiKey=metadata", "topic=deathstar-plans"],
            "allowed",
        ),
        (LUKE, &["apiKey=fetch", "topic=deathstar-plans"], "denied"),
        (LUKE, &["apiKey=apiversions", "apiVersion=3"], "allowed"),
        (C3PO, &["apiKey=apiversions"], "refused"),
    ];
    for (source, fields, expected) in cases {
        assert_eq!(trace(source, fields), expected, "{source} {fields:?}");
    }
    let output = agent_cli(
        &agent.dir,
        &[
            "policy",
            "trace",
            "--src-address",
            LUKE,
            "--dst-endpoint",
            "kafka",
            "--dport",
            &port,
            "apiKey=listoffsets",
        ],
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("unknown Kafka apiKey \"listoffsets\""),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
