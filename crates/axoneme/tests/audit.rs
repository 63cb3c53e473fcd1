//! Audit mode and `axoneme policy suggest` through `axoneme run` in front of a real memcached:
//! a request the policy would deny reaches memcached under audit (checked on memcached itself),
//! is logged with verdict `Audit` and counted apart, and is denied once audit is switched off,
//! per endpoint (through the API) and per policy (its annotation, reloaded by SIGHUP); and the
//! walk from audit to enforcement: traffic observed with no L7 rules, a policy suggested from
//! the access log and imported, audit switched off in the configuration file, and the client
//! keeps working while requests it never made are denied. Needs `memcached` (scripts/test.sh
//! installs it).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    agent_cli, connect_from, free_port, signal, spawn_agent, start_memcached, temp_dir,
    wait_for_api, Children,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LUKE: &str = "127.0.0.21";

/// The agent of a test: its directory, the proxy's and the metrics' ports.
struct Agent {
    dir: PathBuf,
    proxy: u16,
    metrics: u16,
}

/// Starts the agent in front of memcached: endpoints cache (in audit mode when `audit`) and
/// luke, the policy files `policies` (already written in the directory `dir`).
async fn start_agent(
    children: &mut Children,
    dir: PathBuf,
    memcached: u16,
    audit: bool,
    policies: &str,
) -> Agent {
    let (proxy, metrics) = (free_port(), free_port());
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            r#"accessLog: {{path: access.log}}
api: {{socket: api.sock}}
metrics: {{listen: "127.0.0.1:{metrics}"}}
policies: [{policies}]
endpoints:
  - {{name: cache, ips: ["127.0.0.1"], labels: {{app: cache}}, policyAuditMode: {audit}}}
  - {{name: luke, ips: ["{LUKE}"], labels: {{app: luke}}}}
listeners:
  - {{name: cache, listen: "127.0.0.1:{proxy}", upstream: "127.0.0.1:{memcached}",
      endpoint: cache, direction: ingress, l7proto: memcache}}
"#
        ),
    )
    .unwrap();
    children.0.push(spawn_agent(&dir));
    wait_for_api(&dir).await;
    Agent {
        dir,
        proxy,
        metrics,
    }
}

/// A policy letting luke get (only) from cache on `port`, in audit mode when `audit`.
fn gets_only(port: u16, audit: bool) -> String {
    format!(
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: cache-gets
  annotations: {{axoneme.io/audit: "{audit}"}}
spec:
  endpointSelector: {{matchLabels: {{app: cache}}}}
  ingress:
    - fromEndpoints: [{{matchLabels: {{app: luke}}}}]
      toPorts:
        - ports: [{{port: "{port}"}}]
          rules: {{l7proto: memcache, l7: [{{command: get}}]}}
"#
    )
}

/// Sends `request` and reads until the answer ends with one of `ends`.
async fn exchange(stream: &mut TcpStream, request: &str, ends: &[&str]) -> String {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if ends.iter().any(|end| text.ends_with(end)) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no answer to {request:?}: {text:?}"
        );
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "closed after {request:?}: {text:?}");
        answer.extend_from_slice(&buf[..n]);
    }
}

/// The proxy's answer to a denied request.
const DENIED: &str = "CLIENT_ERROR access denied\r\n";

/// Every answer a storage or retrieval command may end with.
const ENDS: [&str; 7] = [
    "STORED\r\n",
    DENIED,
    "END\r\n",
    "DELETED\r\n",
    "NOT_FOUND\r\n",
    "ERROR\r\n",
    "OK\r\n",
];

/// `set key` with `value` through `stream`; the answer.
async fn set(stream: &mut TcpStream, key: &str, value: &str) -> String {
    let request = format!("set {key} 0 0 {}\r\n{value}\r\n", value.len());
    exchange(stream, &request, &ENDS).await
}

/// What memcached itself holds under `key`, asked directly, not through the proxy.
async fn held(memcached: u16, key: &str) -> Option<String> {
    let mut direct = TcpStream::connect(("127.0.0.1", memcached)).await.unwrap();
    let answer = exchange(&mut direct, &format!("get {key}\r\n"), &["END\r\n"]).await;
    let value = answer
        .lines()
        .nth(1)
        .filter(|_| answer.starts_with("VALUE"));
    value.map(str::to_owned)
}

/// The access log's entries.
fn log_entries(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("access.log"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

/// Waits until the access log has an entry of type `entry_type` about `command` on `key`, and
/// returns the last.
async fn entry_about(dir: &Path, entry_type: &str, command: &str, key: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = log_entries(dir).into_iter().rfind(|e| {
            e["entry_type"] == entry_type
                && e["generic_l7"]["fields"]["command"] == command
                && e["generic_l7"]["fields"]["keys"] == key
        });
        if let Some(entry) = found {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "no {entry_type} entry about {command} {key}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the metric sample `name` (with its labels).
async fn metric(port: u16, name: &str) -> u64 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in\n{response}"))
        .parse()
        .unwrap()
}

/// Runs the CLI against the agent and fails the test with its error if it fails.
fn cli(dir: &Path, args: &[&str]) -> String {
    let output = agent_cli(dir, args);
    assert!(
        output.status.success(),
        "axoneme {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Waits until a new connection from luke gets `expected` for a `set` of a key starting with
/// `key` (a key of its own for each attempt, so that what an earlier attempt stored cannot be
/// mistaken for the last one's); the key that got it.
async fn until_set_answers(agent: &Agent, key: &str, expected: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    let proxy = format!("127.0.0.1:{}", agent.proxy).parse().unwrap();
    let mut attempt = 0;
    loop {
        let attempt_key = format!("{key}-{attempt}");
        let mut luke = connect_from(LUKE, proxy).await;
        if set(&mut luke, &attempt_key, "x").await == expected {
            return attempt_key;
        }
        assert!(
            Instant::now() < deadline,
            "set {key} never got {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        attempt += 1;
    }
}

const AUDIT_METRIC: &str =
    "axoneme_l7_requests_total{protocol=\"memcache\",verdict=\"audit\",direction=\"ingress\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_audit_lets_through_reaches_memcached_and_is_denied_once_audit_is_off() {
    let mut children = Children(Vec::new());
    let memcached = start_memcached(&mut children);
    let dir = temp_dir("audit");
    std::fs::write(dir.join("policy.yaml"), gets_only(memcached, false)).unwrap();
    let agent = start_agent(&mut children, dir, memcached, true, "policy.yaml").await;
    let proxy = format!("127.0.0.1:{}", agent.proxy).parse().unwrap();

    let mut luke = connect_from(LUKE, proxy).await;
    assert_eq!(set(&mut luke, "audited", "hi").await, "STORED\r\n");
    assert_eq!(held(memcached, "audited").await.as_deref(), Some("hi"));
    let get = exchange(&mut luke, "get audited\r\n", &["END\r\n"]).await;
    assert_eq!(get, "VALUE audited 0 2\r\nhi\r\nEND\r\n");

    let audited = entry_about(&agent.dir, "Request", "set", "audited").await;
    assert_eq!(audited["entry_type"], "Request");
    assert_eq!(audited["verdict"], "Audit");
    assert_eq!(audited["reason"], "no-allow");
    assert_eq!(audited["policy_name"], "");
    let allowed = entry_about(&agent.dir, "Request", "get", "audited").await;
    assert_eq!(allowed["entry_type"], "Request");
    assert_eq!(allowed["policy_name"], "cache-gets");
    assert!(allowed.get("verdict").is_none(), "{allowed}");
    assert_eq!(metric(agent.metrics, AUDIT_METRIC).await, 1);
    let memcached_port = memcached.to_string();
    let trace: Value = serde_json::from_str(&cli(
        &agent.dir,
        &[
            "policy",
            "trace",
            "--src-labels",
            "app=luke",
            "--dst-endpoint",
            "cache",
            "--dport",
            &memcached_port,
            "command=set",
            "key=audited",
            "-o",
            "json",
        ],
    ))
    .unwrap();
    assert_eq!(trace["allowed"], true, "{trace}");
    assert!(
        trace["reason"]
            .as_str()
            .unwrap()
            .starts_with("audit mode: no memcache rule of cache's ingress policy"),
        "{trace}"
    );

    let endpoints: Value =
        serde_json::from_str(&cli(&agent.dir, &["endpoint", "list", "-o", "json"])).unwrap();
    let cache = endpoints
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "cache")
        .unwrap();
    assert_eq!(cache["policyAuditMode"], true);

    // Audit off for the endpoint, through the API: the same request is denied.
    cli(
        &agent.dir,
        &[
            "endpoint",
            "add",
            "cache",
            "--ip",
            "127.0.0.1",
            "--label",
            "app=cache",
        ],
    );
    let key = until_set_answers(&agent, "enforced", DENIED).await;
    assert_eq!(held(memcached, &key).await, None);
    let denied = entry_about(&agent.dir, "Denied", "set", &key).await;
    assert_eq!(denied["entry_type"], "Denied");
    assert!(denied.get("verdict").is_none(), "{denied}");

    // Audit on for the policy, by its annotation: let through again; off again: denied.
    std::fs::write(agent.dir.join("policy.yaml"), gets_only(memcached, true)).unwrap();
    signal(&children.0[1], "HUP");
    let key = until_set_answers(&agent, "policy-audited", "STORED\r\n").await;
    assert_eq!(held(memcached, &key).await.as_deref(), Some("x"));
    let audited = entry_about(&agent.dir, "Request", "set", &key).await;
    assert_eq!(audited["verdict"], "Audit");
    std::fs::write(agent.dir.join("policy.yaml"), gets_only(memcached, false)).unwrap();
    signal(&children.0[1], "HUP");
    let key = until_set_answers(&agent, "policy-enforced", DENIED).await;
    assert_eq!(held(memcached, &key).await, None);
}

/// The client of the walk from audit to enforcement: what it sends, and the answers it got.
async fn workload(agent: &Agent) -> Vec<String> {
    let proxy = format!("127.0.0.1:{}", agent.proxy).parse().unwrap();
    let mut luke = connect_from(LUKE, proxy).await;
    let mut answers = vec![
        set(&mut luke, "user:1", "a").await,
        set(&mut luke, "user:2", "b").await,
        set(&mut luke, "motd", "hello").await,
    ];
    for request in ["get user:1 user:2\r\n", "get motd\r\n", "delete user:2\r\n"] {
        answers.push(exchange(&mut luke, request, &ENDS).await);
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_audit_to_enforcement_the_client_keeps_working_and_what_it_never_did_is_denied() {
    let mut children = Children(Vec::new());
    let memcached = start_memcached(&mut children);
    let agent = start_agent(&mut children, temp_dir("audit-walk"), memcached, true, "").await;
    let observed = workload(&agent).await;
    assert_eq!(
        observed,
        [
            "STORED\r\n",
            "STORED\r\n",
            "STORED\r\n",
            "VALUE user:1 0 1\r\na\r\nVALUE user:2 0 1\r\nb\r\nEND\r\n",
            "VALUE motd 0 5\r\nhello\r\nEND\r\n",
            "DELETED\r\n"
        ]
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while log_entries(&agent.dir).len() < observed.len() {
        assert!(
            Instant::now() < deadline,
            "the requests were not all logged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let suggested = cli(
        &agent.dir,
        &[
            "policy",
            "suggest",
            "--from-log",
            "access.log",
            "--endpoint",
            "cache",
        ],
    );
    for expected in [
        "keyPrefix: \"user:\"",
        "keyExact: motd",
        "# 2 requests",
        "fromEndpoints:",
        "app: luke",
    ] {
        assert!(suggested.contains(expected), "{expected} in\n{suggested}");
    }
    // Without log files, the same requests come from the agent's recent flows.
    let live = cli(&agent.dir, &["policy", "suggest", "--endpoint", "cache"]);
    assert!(live.contains("the agent's recent flows"), "{live}");
    assert_eq!(
        live.replace("the agent's recent flows", "access.log"),
        suggested
    );
    std::fs::write(agent.dir.join("suggested.yaml"), &suggested).unwrap();
    cli(&agent.dir, &["policy", "import", "suggested.yaml"]);
    // Audit off in the configuration file, which the agent follows without a restart.
    let config = std::fs::read_to_string(agent.dir.join("config.yaml")).unwrap();
    let enforcing = config.replace("policyAuditMode: true", "policyAuditMode: false");
    assert_ne!(config, enforcing);
    std::fs::write(agent.dir.join("config.yaml"), enforcing).unwrap();
    let never_made = until_set_answers(&agent, "admin", DENIED).await;
    assert_eq!(held(memcached, &never_made).await, None);

    assert_eq!(workload(&agent).await, observed, "the client keeps working");
    let proxy = format!("127.0.0.1:{}", agent.proxy).parse().unwrap();
    let mut luke = connect_from(LUKE, proxy).await;
    assert_eq!(
        exchange(&mut luke, "delete user:1\r\n", &ENDS).await,
        DENIED,
        "user:2 was the only key deleted"
    );
    assert_eq!(held(memcached, "user:1").await.as_deref(), Some("a"));
}
