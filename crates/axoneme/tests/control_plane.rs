//! The control plane against a running `axoneme run`, driven through the CLI as an operator
//! would: policy import/get/delete/validate/trace changing verdicts on open connections, a bad
//! policy refused with a 400 and no change, endpoints and identities, listeners added and
//! drained at runtime, the live monitor, metrics, edits of a watched policy file (an emptied one
//! changes nothing), policy enforcement per endpoint and its loss, namespaces, and the document
//! forms Cilium users have (kubectl lists, JSON, empty rule values).

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    agent_cli, connect_from, free_port, r2d2_policy, request, spawn_agent, temp_dir, Upstream, LUKE,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running agent process and how to reach it.
struct Running {
    child: Child,
    dir: PathBuf,
    proxy_port: u16,
    metrics_port: u16,
    upstream_port: u16,
    /// The mode of the API socket when it was first seen.
    socket_mode: u32,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    async fn start(name: &str, upstream: &Upstream) -> Running {
        Running::start_with_api(name, upstream, "{socket: api.sock}").await
    }

    /// Starts an agent whose configuration has `api: <api>`.
    async fn start_with_api(name: &str, upstream: &Upstream, api: &str) -> Running {
        let dir = temp_dir(name);
        let (proxy_port, metrics_port) = (free_port(), free_port());
        let upstream_port = upstream.addr.port();
        std::fs::write(
            dir.join("policy.yaml"),
            r2d2_policy("base", upstream_port, "{cmd: HALT}"),
        )
        .unwrap();
        std::fs::write(
            dir.join("config.yaml"),
            format!(
                r#"accessLog: {{path: access.log}}
api: {api}
metrics: {{listen: "127.0.0.1:{metrics_port}"}}
drainTimeout: 2
endpoints:
  - {{name: r2d2, ips: ["127.0.0.1"], labels: {{app: r2d2}}}}
  - {{name: luke, ips: ["{LUKE}"], labels: {{app: luke}}}}
policies: [policy.yaml]
listeners:
  - {{name: r2d2, listen: "127.0.0.1:{proxy_port}", upstream: "{}", endpoint: r2d2, direction: ingress}}
"#,
                upstream.addr
            ),
        )
        .unwrap();
        let child = spawn_agent(&dir);
        let socket = dir.join("api.sock");
        let deadline = Instant::now() + Duration::from_secs(10);
        // Looked at as often as possible, to see the socket as soon as it has a name.
        let socket_mode = loop {
            if let Ok(metadata) = std::fs::symlink_metadata(&socket) {
                break metadata.permissions().mode() & 0o777;
            }
            assert!(Instant::now() < deadline, "the agent made no socket");
            std::thread::yield_now();
        };
        let running = Running {
            child,
            dir,
            proxy_port,
            metrics_port,
            upstream_port,
            socket_mode,
        };
        while !running.dir.join("api.sock").exists()
            || running.cli(&["status"]).status.code() != Some(0)
        {
            assert!(Instant::now() < deadline, "the agent did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        running
    }

    fn proxy(&self) -> std::net::SocketAddr {
        format!("127.0.0.1:{}", self.proxy_port).parse().unwrap()
    }

    fn cli(&self, args: &[&str]) -> Output {
        agent_cli(&self.dir, args)
    }

    /// Runs a CLI command that must succeed, returning its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "axoneme {args:?} failed: {stderr}");
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs a CLI command that must fail, returning its one-line error.
    fn fails(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(!output.status.success(), "axoneme {args:?} should fail");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        stderr
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// What the agent has logged so far (plain text: its log is no terminal).
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    fn revision(&self) -> u64 {
        self.json(&["status"])["policy_revision"].as_u64().unwrap()
    }

    fn write(&self, file: &str, text: &str) -> String {
        std::fs::write(self.dir.join(file), text).unwrap();
        file.to_owned()
    }

    async fn metrics(&self) -> String {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
            .await
            .unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }
}

/// Sends one raw HTTP request to the API's Unix socket and returns the status line and body.
async fn raw_api(running: &Running, request: &str) -> (String, String) {
    common::raw_api(&running.dir, request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_import_get_delete_and_trace_apply_to_open_connections() {
    let upstream = Upstream::start().await;
    let agent = Running::start("cp-policy", &upstream).await;
    let port = agent.upstream_port.to_string();
    let mut luke = connect_from(LUKE, agent.proxy()).await;
    assert_eq!(request(&mut luke, "WRITE /plans\r\n").await, "ERROR\r\n");
    assert_eq!(agent.revision(), 1);

    let writers = agent.write(
        "writers.yaml",
        &r2d2_policy("writers", agent.upstream_port, "{cmd: WRITE}"),
    );
    let imported = agent.json(&["policy", "import", &writers]);
    assert_eq!(imported["revision"], 2);
    assert_eq!(
        request(&mut luke, "WRITE /plans\r\n").await,
        "OK WRITE /plans\r\n",
        "same connection, new policy"
    );

    let table = agent.ok(&["policy", "get"]);
    assert!(table.lines().any(|l| l.starts_with("NAME ")), "{table}");
    assert!(
        table.contains("writers") && table.contains("base"),
        "{table}"
    );
    let one = agent.json(&["policy", "get", "writers"]);
    assert_eq!(one["source"], "writers.yaml", "the file the CLI imported");
    assert_eq!(one["document"]["metadata"]["name"], "writers");

    let trace = agent.json(&[
        "policy",
        "trace",
        "--src-labels",
        "app=luke",
        "--dst-endpoint",
        "r2d2",
        "--dport",
        &port,
        "cmd=WRITE",
        "file=/plans",
    ]);
    assert_eq!(
        (trace["allowed"].as_bool(), trace["policy_name"].as_str()),
        (Some(true), Some("writers"))
    );
    let trace = agent.json(&[
        "policy",
        "trace",
        "--src-address",
        "127.0.0.99",
        "--dst-endpoint",
        "r2d2",
        "--dport",
        &port,
    ]);
    assert_eq!(
        (trace["allowed"].as_bool(), trace["stage"].as_str()),
        (Some(false), Some("l3l4"))
    );

    agent.ok(&["policy", "delete", "writers"]);
    assert_eq!(agent.revision(), 3);
    assert_eq!(
        request(&mut luke, "WRITE /plans\r\n").await,
        "ERROR\r\n",
        "and back"
    );
    let error = agent.fails(&["policy", "delete", "base"]);
    assert!(
        error.contains("is defined in") && error.contains("policy.yaml"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_policy_is_refused_with_its_reason_and_changes_nothing() {
    let upstream = Upstream::start().await;
    let agent = Running::start("cp-bad", &upstream).await;
    let bad = agent.write(
        "bad.yaml",
        &r2d2_policy("bad", agent.upstream_port, "{cmd: FLY}"),
    );
    let error = agent.fails(&["policy", "import", &bad]);
    assert!(
        error.contains("policy \"bad\"") && error.contains("l7[0].cmd") && error.contains("FLY"),
        "{error}"
    );
    let error = agent.fails(&["policy", "validate", &bad]);
    assert!(error.contains("l7[0].cmd"), "{error}");
    let good = agent.write(
        "good.yaml",
        &r2d2_policy("good", agent.upstream_port, "{cmd: RESET}"),
    );
    assert_eq!(
        agent.json(&["policy", "validate", &good])["revision"],
        1,
        "validation changes nothing"
    );
    assert_eq!(agent.revision(), 1);

    let (status, body) = raw_api(
        &agent,
        "PUT /v1/policy HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 17\r\n\r\nkind: [unclosed\n\n",
    )
    .await;
    assert!(status.contains(" 400 "), "{status}");
    assert!(
        body.contains("\"error\"") && body.contains("line"),
        "{body}"
    );
    assert_eq!(agent.revision(), 1);
    let (status, _) = raw_api(
        &agent,
        "GET /v1/policy/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status.contains(" 404 "), "{status}");
    let (status, body) = raw_api(
        &agent,
        "GET /v1/openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        status.contains(" 200 ") && body.contains("\"openapi\""),
        "{status}"
    );
    let (status, body) = raw_api(
        &agent,
        "GET /v1/cluster HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status.contains(" 409 "), "{status}");
    assert_eq!(
        body,
        r#"{"error":"cluster mode is off: the configuration has no cluster section"}"#
    );
    assert_eq!(
        agent.fails(&["cluster", "status"]).trim_end(),
        "axoneme: cluster mode is off: the configuration has no cluster section"
    );
    assert_eq!(agent.json(&["status"])["cluster"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_identities_and_listeners_change_at_runtime() {
    let upstream = Upstream::start().await;
    let agent = Running::start("cp-listeners", &upstream).await;
    agent.ok(&[
        "endpoint",
        "add",
        "leia",
        "--ip",
        "127.0.0.22",
        "--label",
        "app=luke",
        "--label",
        "tier=royal",
    ]);
    let endpoints = agent.json(&["endpoint", "list"]);
    assert!(endpoints
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "leia"));
    let identities = agent.json(&["identity", "list"]);
    assert!(identities
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["endpoints"][0] == "leia"));
    assert!(identities
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["labels"][0] == "reserved:world"));
    let error = agent.fails(&["endpoint", "delete", "r2d2"]);
    assert!(error.contains("guarded by listener"), "{error}");
    agent.ok(&["endpoint", "delete", "leia"]);

    let extra_port = free_port();
    let listen = format!("127.0.0.1:{extra_port}");
    let upstream_address = upstream.addr.to_string();
    agent.ok(&[
        "listener",
        "add",
        "extra",
        "--listen",
        &listen,
        "--upstream",
        &upstream_address,
        "--endpoint",
        "r2d2",
    ]);
    let mut luke = connect_from(LUKE, listen.parse().unwrap()).await;
    assert_eq!(request(&mut luke, "HALT\r\n").await, "OK HALT\r\n");
    assert!(agent.ok(&["listener", "list"]).contains("extra"));

    agent.ok(&["listener", "delete", "extra"]);
    let refused = tokio::net::TcpStream::connect(&listen).await;
    assert!(refused.is_err(), "a deleted listener accepts no more");
    assert_eq!(
        request(&mut luke, "HALT\r\n").await,
        "OK HALT\r\n",
        "its open connection drains"
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), luke.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "closed when the drain time (2 s) is over: {closed:?}"
    );
    let error = agent.fails(&["listener", "delete", "extra"]);
    assert!(error.contains("no listener is named"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_metrics_and_a_watched_policy_file() {
    let upstream = Upstream::start().await;
    let agent = Running::start("cp-monitor", &upstream).await;
    let mut monitor = Command::new(env!("CARGO_BIN_EXE_axoneme"))
        .arg("--api")
        .arg(agent.dir.join("api.sock"))
        .args(["monitor", "-o", "json", "--type", "denied"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = monitor.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut luke = connect_from(LUKE, agent.proxy()).await;
    assert_eq!(request(&mut luke, "HALT\r\n").await, "OK HALT\r\n");
    assert_eq!(request(&mut luke, "RESET\r\n").await, "ERROR\r\n");
    let line = lines_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the monitor shows the denial");
    let entry: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["entry_type"], "Denied");
    assert_eq!(entry["generic_l7"]["fields"]["cmd"], "RESET");
    let _ = monitor.kill();
    let _ = monitor.wait();

    let metrics = agent.metrics().await;
    for sample in [
        "axoneme_l7_requests_total{protocol=\"r2d2\",verdict=\"allowed\",direction=\"ingress\"} 1",
        "axoneme_l7_requests_total{protocol=\"r2d2\",verdict=\"denied\",direction=\"ingress\"} 1",
        "axoneme_policy_verdicts_total{protocol=\"r2d2\",endpoint=\"r2d2\",direction=\"ingress\",policy=\"base\",verdict=\"allowed\"} 1",
        "axoneme_policy_verdicts_total{protocol=\"r2d2\",endpoint=\"r2d2\",direction=\"ingress\",policy=\"\",verdict=\"denied\"} 1",
        "axoneme_policy_verdicts_total{protocol=\"r2d2\",endpoint=\"r2d2\",direction=\"ingress\",policy=\"base\",verdict=\"denied\"} 0",
        "axoneme_connections_active 1",
        "axoneme_policy_revision 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == sample),
            "missing {sample} in\n{metrics}"
        );
    }
    let listed = agent.ok(&["metrics", "list"]);
    assert!(listed.contains("axoneme_connections_total"), "{listed}");

    agent.write(
        "policy.yaml",
        &r2d2_policy("base", agent.upstream_port, "{cmd: HALT}, {cmd: RESET}"),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while request(&mut luke, "RESET\r\n").await != "OK RESET\r\n" {
        assert!(
            Instant::now() < deadline,
            "the edit of the watched file did not apply"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The open connection's RESET is now counted under the policy that allows it.
    let sample = "axoneme_policy_verdicts_total{protocol=\"r2d2\",endpoint=\"r2d2\",direction=\"ingress\",policy=\"base\",verdict=\"allowed\"} 2";
    let metrics = agent.metrics().await;
    assert!(
        metrics.lines().any(|l| l == sample),
        "missing {sample} in\n{metrics}"
    );
    agent.write("policy.yaml", "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: base}\nspec: [broken");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        request(&mut luke, "RESET\r\n").await,
        "OK RESET\r\n",
        "a bad edit leaves the last good policy"
    );
    let metrics = agent.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "axoneme_policy_import_errors_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_of_the_watched_configuration_applies_without_a_restart() {
    let upstream = Upstream::start().await;
    let agent = Running::start("cp-config", &upstream).await;
    let config = std::fs::read_to_string(agent.dir.join("config.yaml")).unwrap();
    let extra_port = free_port();
    let edited = config
        .replace(
            "policies: [policy.yaml]",
            "  - {name: han, ips: [\"127.0.0.30\"], labels: {app: luke}}\npolicies: [policy.yaml]",
        )
        .replace(
            "listeners:\n",
            &format!(
                "listeners:\n  - {{name: second, listen: \"127.0.0.1:{extra_port}\", upstream: \"{}\", endpoint: r2d2, direction: ingress}}\n",
                upstream.addr
            ),
        );
    agent.write("config.yaml", &edited);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !agent.ok(&["listener", "list"]).contains("second") {
        assert!(
            Instant::now() < deadline,
            "the edited configuration did not apply"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let endpoints = agent.json(&["endpoint", "list"]);
    assert!(endpoints
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "han"));
    let mut han = connect_from(
        "127.0.0.30",
        format!("127.0.0.1:{extra_port}").parse().unwrap(),
    )
    .await;
    assert_eq!(
        request(&mut han, "HALT\r\n").await,
        "OK HALT\r\n",
        "han has luke's labels"
    );

    agent.write(
        "config.yaml",
        &edited.replace("listeners:", "listeners: [oops"),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        agent.ok(&["listener", "list"]).contains("second"),
        "a bad edit leaves the last good state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_replaced_on_its_own_address_keeps_listening() {
    let upstream = Upstream::start().await;
    let agent = Running::start("cp-replace", &upstream).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let upstream_address = upstream.addr.to_string();
    for _ in 0..5 {
        agent.ok(&[
            "listener",
            "add",
            "same",
            "--listen",
            &listen,
            "--upstream",
            &upstream_address,
            "--endpoint",
            "r2d2",
        ]);
        let mut luke = connect_from(LUKE, listen.parse().unwrap()).await;
        assert_eq!(request(&mut luke, "HALT\r\n").await, "OK HALT\r\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_connection_ends_when_policy_no_longer_lets_it_through() {
    let upstream = Upstream::start().await;
    let agent = Running::start("cp-plain", &upstream).await;
    agent.ok(&[
        "endpoint",
        "add",
        "c3po",
        "--ip",
        "127.0.0.3",
        "--label",
        "app=c3po",
    ]);
    let listen = format!("127.0.0.1:{}", free_port());
    let upstream_address = upstream.addr.to_string();
    agent.ok(&[
        "listener",
        "add",
        "plain",
        "--listen",
        &listen,
        "--upstream",
        &upstream_address,
        "--endpoint",
        "c3po",
    ]);
    let mut anyone = connect_from(LUKE, listen.parse().unwrap()).await;
    assert_eq!(
        request(&mut anyone, "anything\r\n").await,
        "OK anything\r\n",
        "unselected: plain bytes"
    );
    let lockdown = agent.write(
        "lockdown.yaml",
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: lockdown}\nspec:\n  endpointSelector: {matchLabels: {app: c3po}}\n  ingress: [{}]\n",
    );
    agent.ok(&["policy", "import", &lockdown]);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), anyone.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "closed by the policy change: {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_policy_file_that_becomes_empty_changes_nothing() {
    let upstream = Upstream::start().await;
    let agent = Running::start("cp-emptied", &upstream).await;
    let mut luke = connect_from(LUKE, agent.proxy()).await;
    assert_eq!(request(&mut luke, "RESET\r\n").await, "ERROR\r\n");
    for truncated in [
        "",
        "  \n",
        "# apiVersion: cilium.io/v2\n# kind: CiliumNetworkPolicy\n",
    ] {
        agent.write("policy.yaml", truncated);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            request(&mut luke, "RESET\r\n").await,
            "ERROR\r\n",
            "{truncated:?} is no policy change: the last good policy stays"
        );
    }
    assert_eq!(agent.revision(), 1);
    let log = agent.log();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("policy.yaml: holds no policy")),
        "{log}"
    );
    let error = agent.fails(&["policy", "import", "policy.yaml"]);
    assert!(error.contains("policy.yaml: holds no policy"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_list_shows_enforcement_and_losing_it_is_a_warning() {
    let upstream = Upstream::start().await;
    let agent = Running::start("cp-enforcement", &upstream).await;
    let table = agent.ok(&["endpoint", "list"]);
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.contains("POLICY (ingress) ENFORCEMENT")
            && header.contains("POLICY (egress) ENFORCEMENT"),
        "{table}"
    );
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row("r2d2")[1..4],
        ["default", "Enabled", "Disabled"],
        "{table}"
    );
    assert_eq!(
        row("luke")[1..4],
        ["default", "Disabled", "Disabled"],
        "{table}"
    );
    let endpoints = agent.json(&["endpoint", "list"]);
    let luke = endpoints
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "luke")
        .unwrap();
    assert_eq!(
        (
            luke["policy_ingress_enforcement"].as_str(),
            luke["policy_egress_enforcement"].as_str()
        ),
        (Some("Disabled"), Some("Disabled"))
    );

    let egress = agent.write(
        "egress.yaml",
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: luke-out}\nspec:\n  endpointSelector: {matchLabels: {app: luke}}\n  egress: [{toEndpoints: [{matchLabels: {app: r2d2}}]}]\n",
    );
    agent.ok(&["policy", "import", &egress]);
    let endpoints = agent.json(&["endpoint", "list"]);
    assert!(endpoints
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "luke" && e["policy_egress_enforcement"] == "Enabled"));
    assert!(!agent.log().contains("WARN"), "{}", agent.log());
    agent.ok(&["policy", "delete", "luke-out"]);
    let log = agent.log();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("endpoint=\"luke\"")
            && l.contains("direction=\"egress\"")
            && l.contains("all its egress traffic is allowed")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_name_their_files_and_warn_about_empty_values() {
    let upstream = Upstream::start().await;
    let agent = Running::start("cp-files", &upstream).await;
    let bad = agent.write(
        "bad.yaml",
        &r2d2_policy("bad", agent.upstream_port, "{cmd: FLY}"),
    );
    let error = agent.fails(&["policy", "validate", &bad]);
    assert!(
        error.starts_with("axoneme: bad.yaml: policy \"bad\": "),
        "{error}"
    );
    assert!(!error.contains("<api>"), "{error}");
    let empty = agent.write("empty.yaml", "# to do\n");
    let error = agent.fails(&["policy", "import", &empty]);
    assert!(error.contains("empty.yaml: holds no policy"), "{error}");

    let reads = agent.write(
        "reads.yaml",
        &r2d2_policy("reads", agent.upstream_port, "{cmd: READ, file: ''}"),
    );
    let output = agent.cli(&["policy", "import", &reads]);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim_end(),
        "warning: reads.yaml: policy \"reads\": spec.ingress[0].toPorts[0].rules.l7[0].file: the empty value puts no constraint on file (as in Cilium)"
    );
    let mut luke = connect_from(LUKE, agent.proxy()).await;
    assert_eq!(
        request(&mut luke, "READ /any/file\r\n").await,
        "OK READ /any/file\r\n",
        "file: '' allows every READ"
    );
    assert!(agent.log().contains("no constraint on file"));

    let list = agent.write(
        "cnp.json",
        &format!(
            "{{\n\t\"apiVersion\": \"v1\", \"kind\": \"List\", \"metadata\": {{\"resourceVersion\": \"\"}},\n\t\"items\": [{{\"apiVersion\": \"cilium.io/v2\", \"kind\": \"CiliumNetworkPolicy\", \"description\": \"resets\",\n\t\t\"metadata\": {{\"name\": \"resets\", \"namespace\": \"default\", \"uid\": \"0f\", \"generation\": 2, \"creationTimestamp\": \"2024-01-01T00:00:00Z\"}},\n\t\t\"spec\": {{\"endpointSelector\": {{\"matchLabels\": {{\"k8s:app\": \"r2d2\"}}}}, \"ingress\": [{{\"fromEndpoints\": [{{\"matchLabels\": {{\"app\": \"luke\"}}}}], \"toPorts\": [{{\"ports\": [{{\"port\": \"{}\"}}], \"rules\": {{\"l7proto\": \"r2d2\", \"l7\": [{{\"cmd\": \"RESET\"}}]}}}}]}}]}},\n\t\t\"status\": {{\"conditions\": []}}}}]\n}}\n",
            agent.upstream_port
        ),
    );
    agent.ok(&["policy", "import", &list]);
    assert_eq!(request(&mut luke, "RESET\r\n").await, "OK RESET\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_scope_policies_as_in_cilium() {
    let upstream = Upstream::start().await;
    let agent = Running::start("cp-namespaces", &upstream).await;
    agent.ok(&[
        "endpoint",
        "add",
        "leia",
        "--ip",
        "127.0.0.22",
        "--label",
        "app=luke",
        "--namespace",
        "rebels",
    ]);
    let identities = agent.json(&["identity", "list"]);
    let leia = identities
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["endpoints"][0] == "leia")
        .unwrap();
    assert_eq!(
        leia["labels"],
        serde_json::json!(["app=luke", "k8s:io.kubernetes.pod.namespace=rebels"])
    );
    let endpoints = agent.json(&["endpoint", "list"]);
    assert!(endpoints
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "leia" && e["namespace"] == "rebels"));

    let mut leia = connect_from("127.0.0.22", agent.proxy()).await;
    assert_eq!(
        request(&mut leia, "HALT\r\n").await,
        "",
        "app=luke of another namespace is not admitted by a policy of default"
    );
    let port = agent.upstream_port.to_string();
    let trace = agent.json(&[
        "policy",
        "trace",
        "--src-labels",
        "k8s:app=luke,k8s:io.kubernetes.pod.namespace=default",
        "--dst-endpoint",
        "r2d2",
        "--dport",
        &port,
        "cmd=HALT",
    ]);
    assert_eq!(trace["allowed"], true, "{trace}");
    let trace = agent.json(&[
        "policy",
        "trace",
        "--src-labels",
        "app=luke,io.kubernetes.pod.namespace=rebels",
        "--dst-endpoint",
        "r2d2",
        "--dport",
        &port,
        "cmd=HALT",
    ]);
    assert_eq!(
        (trace["allowed"].as_bool(), trace["stage"].as_str()),
        (Some(false), Some("l3l4")),
        "{trace}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_entries_name_the_deny_rule_or_say_nothing_allowed() {
    let upstream = Upstream::start().await;
    let agent = Running::start("cp-reason", &upstream).await;
    let mut luke = connect_from(LUKE, agent.proxy()).await;
    assert_eq!(request(&mut luke, "RESET\r\n").await, "ERROR\r\n");
    let deny = agent.write(
        "deny.yaml",
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: no-luke}\nspec:\n  endpointSelector: {matchLabels: {app: r2d2}}\n  ingressDeny: [{fromEndpoints: [{matchLabels: {app: luke}}]}]\n",
    );
    agent.ok(&["policy", "import", &deny]);
    assert_eq!(request(&mut luke, "HALT\r\n").await, "ERROR\r\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    let denied = loop {
        let log = std::fs::read_to_string(agent.dir.join("access.log")).unwrap_or_default();
        let denied: Vec<Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["entry_type"] == "Denied")
            .collect();
        if denied.len() >= 2 {
            break denied;
        }
        assert!(Instant::now() < deadline, "two Denied entries: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let summary: Vec<(&str, &str, &str)> = denied
        .iter()
        .map(|e| {
            (
                e["generic_l7"]["fields"]["cmd"]
                    .as_str()
                    .unwrap_or_default(),
                e["policy_name"].as_str().unwrap_or_default(),
                e["reason"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [("RESET", "", "no-allow"), ("HALT", "no-luke", "deny-rule")]
    );
}

/// A `PUT /v1/policy` request carrying `body`.
fn put_policy(body: &str) -> String {
    format!(
        "PUT /v1/policy HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_policy_is_refused_at_once_without_holding_up_other_imports() {
    let upstream = Upstream::start().await;
    let agent = Running::start("cp-nested", &upstream).await;
    let sequences = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let mappings = format!("{}{}", "{a: ".repeat(40_000), "}".repeat(40_000));
    let json = format!("{}1{}", "{\"a\":".repeat(30_000), "}".repeat(30_000));
    let files = serde_json::json!({"files": [{"source": "deep.json", "text": json}]}).to_string();
    let good = put_policy(&r2d2_policy("good", agent.upstream_port, "{cmd: WRITE}"));
    let hostile = [&sequences, &mappings, &files].map(|body| put_policy(body));
    let started = Instant::now();
    let (a, b, c, imported) = tokio::join!(
        raw_api(&agent, &hostile[0]),
        raw_api(&agent, &hostile[1]),
        raw_api(&agent, &hostile[2]),
        raw_api(&agent, &good),
    );
    let elapsed = started.elapsed();
    for (source, (status, body)) in [("<api>", a), ("<api>", b), ("deep.json", c)] {
        assert!(status.contains(" 400 "), "{status}");
        let error: Value = serde_json::from_str(&body).unwrap();
        let error = error["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!("{source}: line 1 column "))
                && error
                    .ends_with("nested deeper than 64 levels, the most a policy document may have"),
            "{error}"
        );
    }
    assert!(imported.0.contains(" 200 "), "{imported:?}");
    assert!(
        elapsed < Duration::from_millis(500),
        "four imports, three of them hostile, took {elapsed:?}"
    );
    assert_eq!(agent.revision(), 2);
    let status = agent.json(&["status"]);
    assert_eq!(status["counters"]["policy_import_errors"], 3);
}

/// A policy of `rules` memcache rules, each an exact key.
fn many_rules(rules: usize) -> String {
    let mut text = String::from(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: many}\nspec:\n  \
         endpointSelector: {matchLabels: {app: r2d2}}\n  ingress:\n  - toPorts:\n    - ports: \
         [{port: '11211'}]\n      rules:\n        l7proto: memcache\n        l7:\n",
    );
    for rule in 0..rules {
        text.push_str(&format!(
            "        - {{command: get, keyExact: key-{rule:07}}}\n"
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_takes_bodies_up_to_its_configured_limit_and_names_it_beyond() {
    let upstream = Upstream::start().await;
    let agent = Running::start_with_api(
        "cp-body",
        &upstream,
        "{socket: api.sock, maxBodyBytes: 3000000}",
    )
    .await;
    let large = many_rules(50_000);
    assert!(
        large.len() > 2 << 20 && large.len() < 3_000_000,
        "{}",
        large.len()
    );
    let (status, body) = raw_api(&agent, &put_policy(&large)).await;
    assert!(status.contains(" 200 "), "{status} {body}");
    assert_eq!(agent.revision(), 2);

    let (status, body) = raw_api(
        &agent,
        "PUT /v1/policy HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3000001\r\n\r\n",
    )
    .await;
    assert!(status.contains(" 413 "), "{status}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        error["error"],
        "the request body is longer than api.maxBodyBytes (3000000 bytes)"
    );

    // Without a length announced, the body is read up to the limit and no further.
    let mut stream = tokio::net::UnixStream::connect(agent.dir.join("api.sock"))
        .await
        .unwrap();
    let chunked = format!(
        "PUT /v1/policy HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        3_000_001,
        "#".repeat(3_000_001)
    );
    // The agent stops reading at the limit, so the rest may not be written.
    let _ = stream.write_all(chunked.as_bytes()).await;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 413 "), "{response}");
    assert!(
        response.contains("api.maxBodyBytes (3000000 bytes)"),
        "{response}"
    );
    assert_eq!(agent.revision(), 2);
}

/// Sends one request to the agent's TCP API with `authorization` and returns the status line.
async fn tcp_api(port: u16, authorization: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!(
        "GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {authorization}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_socket_is_private_from_the_start_and_the_token_must_match_whole() {
    let upstream = Upstream::start().await;
    let port = free_port();
    let agent = Running::start_with_api(
        "cp-private",
        &upstream,
        &format!("{{socket: api.sock, listen: \"127.0.0.1:{port}\", token: s3cret-token}}"),
    )
    .await;
    assert_eq!(agent.socket_mode, 0o600, "{:o}", agent.socket_mode);
    let mode = std::fs::metadata(agent.dir.join("api.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let leftovers: Vec<_> = std::fs::read_dir(&agent.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("api.sock."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(tcp_api(port, "Bearer s3cret-token").await.contains(" 200 "));
    for wrong in [
        "Bearer s3cret-tokeN",
        "Bearer S3cret-token",
        "Bearer s3cret-toke",
        "Bearer s3cret-tokenX",
        "s3cret-token",
    ] {
        let status = tcp_api(port, wrong).await;
        assert!(status.contains(" 401 "), "{wrong:?}: {status}");
    }
    let metrics = agent.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "axoneme_api_unauthorized_total 5"),
        "{metrics}"
    );
    let refusals = agent
        .log()
        .matches("API request refused: missing or wrong bearer token")
        .count();
    assert_eq!(refusals, 1, "one line for five refusals within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_policy_file_is_refused_at_once_and_the_last_good_one_stays() {
    let upstream = Upstream::start().await;
    let agent = Running::start("cp-nested-file", &upstream).await;
    agent.write(
        "policy.yaml",
        &format!("{}{}", "{a: ".repeat(50_000), "}".repeat(50_000)),
    );
    let expected = "policy.yaml: line 1 column 257: nested deeper than 64 levels, the most a \
                    policy document may have";
    let deadline = Instant::now() + Duration::from_secs(3);
    while !agent.log().contains(expected) {
        assert!(
            Instant::now() < deadline,
            "the change was not refused in time: {}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(agent.revision(), 1, "the last good policy stays");
    let good = agent.write(
        "good.yaml",
        &r2d2_policy("good", agent.upstream_port, "{cmd: WRITE}"),
    );
    assert_eq!(agent.json(&["policy", "import", &good])["revision"], 2);
}
