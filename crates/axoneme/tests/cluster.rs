//! Cluster mode between two `axoneme run` processes sharing a real etcd: a policy imported
//! through node A's API is enforced on node B (R2-D2 requests allowed and denied through B),
//! node-local policy files are merged with the cluster's and shown with their source; with
//! etcd stopped both nodes say they are stale, keep enforcing the last state, and refuse
//! imports with a clear error; with etcd back they converge. A bad policy text in etcd is
//! refused as a whole set, the last good state staying in force, and no node starts on it.
//! Without etcd an agent in cluster mode does not start. An endpoint hosted on node A is
//! known on node B by its labels, which B's policy admits it by, with the same identity number
//! on both nodes (the cluster's); deleted, its labels are no longer referenced; and when A dies
//! it is forgotten on B once A's lease expires. `cluster status` lists the nodes with their
//! endpoint counts and heartbeats, and a node that stops revokes its lease, so its keys vanish
//! at once. With `identitySource: cilium` and a real memcached, a client known only to
//! Cilium's IP cache (keys written as Cilium writes them) gets the policy of its labels, an
//! endpoint whose labels Cilium has no identity for is refused until Cilium has one, and
//! Cilium's keys are never written.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use axoneme_testkit::etcd::Etcd;
use common::{
    agent_cli, connect_from, free_port, r2d2_policy, raw_api, request, signal, spawn_agent,
    start_memcached, temp_dir, wait_for_api, Children, Upstream, LUKE,
};
use serde_json::Value;

/// One node: an agent process with its own directory, API socket and listener.
struct Node {
    child: Child,
    dir: PathBuf,
    proxy_port: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a node hosts: which of r2d2 (behind a listener) and luke are its endpoints.
#[derive(Clone, Copy)]
enum Hosts {
    /// Both, as every node of the first tests: each knows luke as its own endpoint.
    Both,
    /// r2d2 only: luke, when known, is another node's endpoint.
    R2d2,
}

/// The configuration of node `node`: what it `hosts`, r2d2 behind a listener on
/// `proxy_port`, the policy files `policies`, and the cluster `galaxy` in `etcd`.
fn node_config(
    node: &str,
    hosts: Hosts,
    etcd: &str,
    upstream: &Upstream,
    proxy_port: u16,
    policies: &str,
) -> String {
    let r2d2 = r#"  - {name: r2d2, ips: ["127.0.0.1"], labels: {app: r2d2}}
"#;
    let luke = format!(
        r#"  - {{name: luke, ips: ["{LUKE}"], labels: {{app: luke}}}}
"#
    );
    let listener = format!(
        r#"  - {{name: r2d2, listen: "127.0.0.1:{proxy_port}", upstream: "{}", endpoint: r2d2, direction: ingress}}
"#,
        upstream.addr
    );
    let endpoints = match hosts {
        Hosts::Both => format!("{r2d2}{luke}"),
        Hosts::R2d2 => r2d2.to_owned(),
    };
    format!(
        r#"accessLog: {{path: access.log}}
api: {{socket: api.sock}}
endpoints:
{endpoints}policies: {policies}
listeners:
{listener}cluster:
  name: galaxy
  node: {node}
  kvstore: {{endpoints: ["{etcd}"]}}
  leaseTTL: 3s
"#
    )
}

/// A directory holding node `node`'s configuration and the policy files `files`, and the
/// port of its listener.
fn node_dir(
    node: &str,
    hosts: Hosts,
    etcd: &str,
    upstream: &Upstream,
    files: &[(&str, String)],
) -> (PathBuf, u16) {
    let dir = temp_dir(&format!("cluster-{node}"));
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let names: Vec<&str> = files.iter().map(|(name, _)| *name).collect();
    let proxy_port = free_port();
    let config = node_config(
        node,
        hosts,
        etcd,
        upstream,
        proxy_port,
        &format!("{names:?}"),
    );
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    (dir, proxy_port)
}

/// Starts the agent in `dir`, which must fail to start within 30 s; its log.
async fn start_fails(dir: &Path) -> String {
    let mut child = spawn_agent(dir);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the agent kept running");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success());
    std::fs::read_to_string(dir.join("agent.log")).unwrap()
}

impl Node {
    /// Starts node `node`, hosting both endpoints; `files` are policy files written into its
    /// directory first.
    async fn start(node: &str, etcd: &Etcd, upstream: &Upstream, files: &[(&str, String)]) -> Node {
        Node::start_hosting(node, Hosts::Both, etcd, upstream, files).await
    }

    /// Starts node `node`, hosting what `hosts` says.
    async fn start_hosting(
        node: &str,
        hosts: Hosts,
        etcd: &Etcd,
        upstream: &Upstream,
        files: &[(&str, String)],
    ) -> Node {
        Node::start_leased(node, hosts, etcd, upstream, files, "3s").await
    }

    /// Starts node `node`, hosting what `hosts` says, with a lease of `lease_ttl`.
    async fn start_leased(
        node: &str,
        hosts: Hosts,
        etcd: &Etcd,
        upstream: &Upstream,
        files: &[(&str, String)],
        lease_ttl: &str,
    ) -> Node {
        let (dir, proxy_port) = node_dir(node, hosts, &etcd.endpoint(0), upstream, files);
        let config = std::fs::read_to_string(dir.join("config.yaml")).unwrap();
        let config = config.replace("leaseTTL: 3s", &format!("leaseTTL: {lease_ttl}"));
        std::fs::write(dir.join("config.yaml"), config).unwrap();
        let child = spawn_agent(&dir);
        wait_for_api(&dir).await;
        Node {
            child,
            dir,
            proxy_port,
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        agent_cli(&self.dir, args)
    }

    /// Runs a CLI command that must succeed, returning its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "axoneme {args:?} failed: {}\nagent log:\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// luke's R2-D2 `request` through this node, and the reply line.
    async fn r2d2(&self, line: &str) -> String {
        let proxy = format!("127.0.0.1:{}", self.proxy_port).parse().unwrap();
        let mut stream = connect_from(LUKE, proxy).await;
        request(&mut stream, line).await
    }

    /// Waits (up to `seconds`) until `cluster status` says `stale`.
    async fn wait_stale(&self, stale: bool, seconds: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let status = self.json(&["cluster", "status"]);
            if status["stale"] == stale {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "stale is not {stale} after {seconds} s: {status}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits (up to 10 s) until `cluster status`'s `field` satisfies `done`; the status.
    async fn wait_status(&self, field: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = self.json(&["cluster", "status"]);
            if done(&status[field]) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{field} not as awaited: {status}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (up to 10 s) until luke's `line` through this node gets `reply`.
    async fn wait_reply(&self, line: &str, reply: &str) {
        self.wait_reply_for(line, reply, 10).await;
    }

    /// Waits (up to `seconds`) until luke's `line` through this node gets `reply`.
    async fn wait_reply_for(&self, line: &str, reply: &str, seconds: u64) {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let got = self.r2d2(line).await;
            if got == reply {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{line:?} got {got:?}, not {reply:?} after {seconds} s\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Checks that `status` has exactly the fields the OpenAPI document's `ClusterStatus` lists,
/// all of them required.
fn assert_documented(status: &Value) {
    let document: Value = serde_json::from_str(axoneme::control::api::OPENAPI).unwrap();
    let schema = &document["components"]["schemas"]["ClusterStatus"];
    let mut documented: Vec<&str> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let mut given: Vec<&str> = status
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    documented.sort_unstable();
    required.sort_unstable();
    given.sort_unstable();
    assert_eq!(given, documented, "{status}");
    assert_eq!(required, documented);
}

/// Writes `text` to `name` in `dir` and returns the path, for `policy import`.
fn policy_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

const READ_PUBLIC: &str = "READ /public/plans\r\n";
const READ_SECRET: &str = "READ /secret/plans\r\n";
const DENIED: &str = "ERROR\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_imported_on_one_node_is_enforced_on_another_and_survives_etcd_stopping() {
    let mut etcd = Etcd::single();
    let upstream = Upstream::start().await;
    let port = upstream.addr.port();
    let a = Node::start("node-a", &etcd, &upstream, &[]).await;
    // B has a policy file of its own: luke may HALT.
    let b = Node::start(
        "node-b",
        &etcd,
        &upstream,
        &[("local.yaml", r2d2_policy("local", port, "{cmd: HALT}"))],
    )
    .await;
    assert_eq!(
        b.r2d2(READ_PUBLIC).await,
        DENIED,
        "only HALT is allowed yet"
    );
    assert_eq!(
        a.r2d2(READ_PUBLIC).await,
        format!("OK {READ_PUBLIC}"),
        "A has no policy"
    );

    for (node, name) in [(&a, "node-a"), (&b, "node-b")] {
        let status = node.json(&["cluster", "status"]);
        assert_eq!(status["cluster"], "galaxy");
        assert_eq!(status["node"], name);
        assert_eq!(status["stale"], false, "{status}");
        assert_eq!(status["staleSince"], Value::Null);
        assert_eq!(
            status["members"],
            serde_json::json!([{"name": "m0", "endpoint": etcd.endpoint(0), "healthy": true}])
        );
        assert!(status["revision"].as_i64().unwrap() > 0, "{status}");
        assert_documented(&status);
    }

    // Imported through A's API, written to etcd, enforced on B.
    let read = policy_file(
        &a.dir,
        "read.yaml",
        &r2d2_policy("read", port, r#"{cmd: READ, file: "/public/.*"}"#),
    );
    let imported = a.json(&["policy", "import", &read]);
    assert_eq!(imported["policies"], serde_json::json!(["read"]));
    assert_eq!(
        a.r2d2(READ_SECRET).await,
        DENIED,
        "A applied it before answering"
    );
    b.wait_reply(READ_PUBLIC, &format!("OK {READ_PUBLIC}"))
        .await;
    assert_eq!(b.r2d2(READ_SECRET).await, DENIED);
    assert_eq!(
        b.r2d2("HALT\r\n").await,
        "OK HALT\r\n",
        "B's own file still counts"
    );

    // B shows both, each with its source.
    let listed = b.json(&["policy", "get"]);
    let sources: Vec<(String, String)> = listed["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["source"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        sources,
        [
            ("local".to_owned(), "local.yaml".to_owned()),
            ("read".to_owned(), "kvstore:read".to_owned()),
        ]
    );
    let error = String::from_utf8(b.cli(&["policy", "delete", "local"]).stderr).unwrap();
    assert!(
        error.contains("is defined in") && error.contains("local.yaml"),
        "{error}"
    );

    // etcd stops: both nodes say so, keep enforcing, and refuse imports.
    etcd.stop(0);
    for node in [&a, &b] {
        let status = node.wait_stale(true, 30).await;
        assert!(
            status["staleSince"].as_str().unwrap().ends_with('Z'),
            "{status}"
        );
        let overall = node.json(&["status"]);
        assert_eq!(overall["cluster"]["stale"], true, "{overall}");
        let table = node.ok(&["status"]);
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("KVStore: ") && l.contains("Stale since ")),
            "{table}"
        );
        let metrics = node.json(&["metrics", "list"]);
        let value = |name: &str| {
            let sample = metrics
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["metric"] == name);
            sample.unwrap_or_else(|| panic!("no {name}: {metrics}"))["value"]
                .as_str()
                .unwrap()
                .parse::<f64>()
                .unwrap()
        };
        assert_eq!(value("axoneme_kvstore_stale"), 1.0);
        assert!(value("axoneme_kvstore_stale_seconds") > 0.0);
    }
    b.wait_reply(READ_PUBLIC, &format!("OK {READ_PUBLIC}"))
        .await;
    assert_eq!(
        b.r2d2(READ_SECRET).await,
        DENIED,
        "the last state is enforced"
    );
    let write = policy_file(
        &a.dir,
        "write.yaml",
        &r2d2_policy("write", port, r#"{cmd: WRITE, file: "/public/.*"}"#),
    );
    let validated = a.json(&["policy", "validate", &write]);
    assert_eq!(
        validated["validated_only"], true,
        "checking needs no kvstore"
    );
    let refused = a.cli(&["policy", "import", &write]);
    assert!(!refused.status.success());
    let error = String::from_utf8(refused.stderr).unwrap();
    assert!(
        error.starts_with("axoneme: the kvstore has not answered since ")
            && error.contains(
                ": policy changes are refused until it is back; the policy in force stays"
            ),
        "{error}"
    );
    let body = r2d2_policy("write", port, "{cmd: WRITE}");
    let (status, answer) = raw_api(
        &a.dir,
        &format!(
            "PUT /v1/policy HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(status.contains(" 503 "), "{status} {answer}");
    assert!(
        answer.contains("the kvstore has not answered since"),
        "{answer}"
    );
    let (status, _) = raw_api(
        &b.dir,
        "DELETE /v1/policy/read HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(status.contains(" 503 "), "{status}");

    // etcd is back: both converge, and changes flow again.
    etcd.start(0);
    etcd.wait_healthy(&[0]);
    for node in [&a, &b] {
        node.wait_stale(false, 30).await;
    }
    a.ok(&["policy", "import", &write]);
    b.wait_reply("WRITE /public/plans\r\n", "OK WRITE /public/plans\r\n")
        .await;
    a.ok(&["policy", "delete", "read"]);
    b.wait_reply(READ_PUBLIC, DENIED).await;
    assert_eq!(a.r2d2(READ_PUBLIC).await, DENIED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_in_cluster_mode_does_not_start_without_etcd() {
    let upstream = Upstream::start().await;
    let etcd = format!("http://127.0.0.1:{}", free_port());
    let (dir, _) = node_dir("node-a", Hosts::Both, &etcd, &upstream, &[]);
    let log = start_fails(&dir).await;
    assert!(
        log.contains(&format!(
            "cluster: cannot join cluster \"galaxy\" as node \"node-a\" through the kvstore at {etcd}"
        )),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_policy_in_etcd_leaves_the_last_good_state_and_no_node_starts_on_it() {
    let etcd = Etcd::single();
    let upstream = Upstream::start().await;
    let port = upstream.addr.port();
    let a = Node::start("node-a", &etcd, &upstream, &[]).await;
    let read = policy_file(
        &a.dir,
        "read.yaml",
        &r2d2_policy("read", port, r#"{cmd: READ, file: "/public/.*"}"#),
    );
    a.ok(&["policy", "import", &read]);
    assert_eq!(a.r2d2(READ_SECRET).await, DENIED);

    // Written behind the agents' backs: no agent would write a text that does not parse.
    etcd.etcdctl(&["put", "axoneme/galaxy/policies/bad", "kind: [unclosed"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = a.json(&["cluster", "status"]);
        if !status["policiesRefused"].is_null() {
            break status;
        }
        assert!(Instant::now() < deadline, "not refused: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        status["policiesRefused"]
            .as_str()
            .unwrap()
            .starts_with("kvstore:bad: "),
        "{status}"
    );
    assert!(a
        .log()
        .contains("the cluster's policies are refused; the last good policy stays"));
    assert_eq!(a.r2d2(READ_PUBLIC).await, format!("OK {READ_PUBLIC}"));
    assert_eq!(
        a.r2d2(READ_SECRET).await,
        DENIED,
        "the last good state is enforced"
    );

    // An import is written, but this node cannot apply the cluster's set.
    let body = r2d2_policy("write", port, "{cmd: WRITE}");
    let (status, answer) = raw_api(
        &a.dir,
        &format!(
            "PUT /v1/policy HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(status.contains(" 409 "), "{status} {answer}");
    assert!(
        answer.contains(
            "written to the kvstore, but this node refuses the cluster's policies: kvstore:bad: "
        ),
        "{answer}"
    );
    assert_eq!(a.r2d2("WRITE /x\r\n").await, DENIED);

    // A node starting now does not start without the cluster's policies.
    let (dir, _) = node_dir("node-b", Hosts::Both, &etcd.endpoint(0), &upstream, &[]);
    let log = start_fails(&dir).await;
    assert!(
        log.contains("cluster: the cluster's policies in the kvstore (revision ")
            && log.contains("cannot be applied"),
        "{log}"
    );

    // The bad text removed, the node applies the cluster's policies again.
    etcd.etcdctl(&["del", "axoneme/galaxy/policies/bad"]);
    a.wait_reply("WRITE /x\r\n", "OK WRITE /x\r\n").await;
    assert_eq!(
        a.json(&["cluster", "status"])["policiesRefused"],
        Value::Null
    );
}

/// The last access-log entry of `dir` about the file `file`, waiting (up to 5 s) for the
/// log's writer to write it.
async fn logged(dir: &Path, file: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(dir.join("access.log")).unwrap_or_default();
        let entry = log
            .lines()
            .rev()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|e| e["generic_l7"]["fields"]["file"] == file);
        if let Some(entry) = entry {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "no entry for {file:?} in:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_of_one_node_is_known_by_its_labels_on_another_until_its_lease_expires() {
    let etcd = Etcd::single();
    let upstream = Upstream::start().await;
    let port = upstream.addr.port();
    // Both guard r2d2: luke may READ /public/ only. luke is an endpoint of A's, not of B's.
    let read = r2d2_policy("read", port, r#"{cmd: READ, file: "/public/.*"}"#);
    let b = Node::start_hosting(
        "node-b",
        Hosts::R2d2,
        &etcd,
        &upstream,
        &[("read.yaml", read.clone())],
    )
    .await;
    assert_eq!(
        b.r2d2(READ_PUBLIC).await,
        "",
        "luke's address is the world's on B: refused at connect"
    );

    // A hosts luke: B learns luke's labels from A's endpoints and lets it READ /public/.
    let mut a = Node::start_hosting(
        "node-a",
        Hosts::Both,
        &etcd,
        &upstream,
        &[("read.yaml", read)],
    )
    .await;
    b.wait_reply(READ_PUBLIC, &format!("OK {READ_PUBLIC}"))
        .await;
    assert_eq!(b.r2d2(READ_SECRET).await, DENIED, "L7 rules judge luke");
    assert_eq!(a.r2d2(READ_SECRET).await, DENIED);
    let on_b = logged(&b.dir, "/secret/plans").await;
    let on_a = logged(&a.dir, "/secret/plans").await;
    assert_eq!(on_b["entry_type"], "Denied", "{on_b}");
    assert_eq!(
        on_b["source_labels"],
        serde_json::json!(["app=luke", "k8s:io.kubernetes.pod.namespace=default"]),
        "{on_b}"
    );
    assert_eq!(on_a["source_labels"], on_b["source_labels"]);

    // The same labels have the same number on both nodes: the cluster's.
    for field in ["source_security_id", "destination_security_id"] {
        assert_eq!(on_a[field], on_b[field], "{field}: {on_a} {on_b}");
    }
    let luke = on_b["source_security_id"].as_u64().unwrap();
    let r2d2 = on_b["destination_security_id"].as_u64().unwrap();
    assert_ne!(luke, r2d2);
    for (id, labels) in [(luke, "app=luke;"), (r2d2, "app=r2d2;")] {
        let master = etcd.etcdctl(&["get", &format!("axoneme/galaxy/identities/id/{id}")]);
        assert!(master.contains(labels), "identity {id}: {master:?}");
    }
    let listed = b.json(&["endpoint", "list"]);
    assert!(
        !listed.to_string().contains("luke"),
        "a remote endpoint is not one of B's: {listed}"
    );
    let status = b.json(&["cluster", "status"]);
    assert_eq!(status["remoteEndpoints"], 2, "A's r2d2 and luke: {status}");
    assert_eq!(status["endpointsRefused"], Value::Null);
    assert_documented(&status);

    // Written behind the agents' backs: another node's endpoint claiming luke's address. B
    // refuses the set and keeps the last good one; without it, B applies the set again.
    let leia = format!(r#"{{"name":"leia","ips":["{LUKE}"],"labels":{{"app":"leia"}}}}"#);
    etcd.etcdctl(&["put", "axoneme/galaxy/endpoints/node-x/leia", &leia]);
    let refused = b.wait_status("endpointsRefused", |v| !v.is_null()).await;
    assert!(
        refused["endpointsRefused"]
            .as_str()
            .unwrap()
            .contains("already belongs to remote endpoint"),
        "{refused}"
    );
    assert_eq!(refused["remoteEndpoints"], 2, "{refused}");
    assert_eq!(
        b.r2d2(READ_PUBLIC).await,
        format!("OK {READ_PUBLIC}"),
        "the last good set is in force"
    );
    etcd.etcdctl(&["del", "axoneme/galaxy/endpoints/node-x/leia"]);
    b.wait_status("endpointsRefused", Value::is_null).await;

    // luke deleted through A's API: B denies it, and no node references its labels any more.
    a.ok(&["endpoint", "delete", "luke"]);
    b.wait_reply(READ_PUBLIC, "").await;
    let references = "axoneme/galaxy/identities/value/";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys = etcd.etcdctl(&["get", "--prefix", "--keys-only", references]);
        if !keys.contains("app=luke;") {
            assert!(keys.contains("app=r2d2;"), "r2d2 is still used: {keys}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "luke's labels still referenced: {keys}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    b.wait_status("remoteEndpoints", |v| v == 1).await;

    // Added again, it is known on B again.
    a.ok(&[
        "endpoint", "add", "luke", "--ip", LUKE, "--label", "app=luke",
    ]);
    b.wait_reply(READ_PUBLIC, &format!("OK {READ_PUBLIC}"))
        .await;

    // A dies without a word: its lease expires and luke is the world's again on B.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    b.wait_reply_for(READ_PUBLIC, "", 20).await;
    b.wait_status("remoteEndpoints", |v| v == 0).await;
    assert!(
        b.log().contains("the other nodes' endpoints applied"),
        "{}",
        b.log()
    );
}

/// Seconds since the Unix epoch of an RFC 3339 time, as `date` reads it.
fn epoch_seconds(rfc3339: &str) -> u64 {
    let output = std::process::Command::new("date")
        .args(["-u", "-d", rfc3339, "+%s"])
        .output()
        .unwrap();
    assert!(output.status.success(), "date cannot read {rfc3339:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_show_their_endpoints_and_heartbeats_and_a_stopped_node_vanishes_at_once() {
    let etcd = Etcd::single();
    let upstream = Upstream::start().await;
    // A 30 s lease: a node gone within seconds left the cluster, its lease did not expire.
    let a = Node::start_leased("node-a", Hosts::Both, &etcd, &upstream, &[], "30s").await;
    let mut b = Node::start_leased("node-b", Hosts::R2d2, &etcd, &upstream, &[], "30s").await;

    let status = a
        .wait_status("nodes", |nodes| nodes.as_array().unwrap().len() == 2)
        .await;
    assert_documented(&status);
    assert_eq!(status["identitySource"], "axoneme");
    assert_eq!(status["unidentifiedEndpoints"], serde_json::json!([]));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let nodes = status["nodes"].as_array().unwrap();
    for (node, name, endpoints) in [(&nodes[0], "node-a", 2), (&nodes[1], "node-b", 1)] {
        assert_eq!(node["name"], name, "{status}");
        assert_eq!(node["endpoints"], endpoints, "{status}");
        // Renewed every 10 s with a 30 s lease.
        let beat = epoch_seconds(node["lastHeartbeat"].as_str().unwrap());
        assert!(beat <= now + 1 && now - beat <= 12, "{node} at {now}");
    }
    let table = a.ok(&["cluster", "status"]);
    let header = table
        .lines()
        .position(|l| {
            l.starts_with("NAME") && l.contains("ENDPOINTS") && l.contains("LASTHEARTBEAT")
        })
        .unwrap_or_else(|| panic!("no table of nodes:\n{table}"));
    let rows: Vec<&str> = table.lines().skip(header + 1).take(2).collect();
    assert!(
        rows[0].starts_with("node-a") && rows[1].starts_with("node-b"),
        "{table}"
    );

    // B stops: it revokes its lease, and A sees its heartbeat, endpoints and identity
    // references gone within seconds, not after 30.
    let prefix = "axoneme/galaxy/";
    let owned_by_b = || {
        etcd.etcdctl(&["get", "--prefix", "--keys-only", prefix])
            .lines()
            .filter(|key| key.ends_with("/node-b") || key.contains("/node-b/"))
            .map(str::to_owned)
            .collect::<Vec<String>>()
    };
    let before = owned_by_b();
    assert!(
        before
            .iter()
            .any(|k| k.contains("identities/value/app=r2d2;")),
        "{before:?}"
    );
    assert!(
        before.iter().any(|k| k.contains("endpoints/node-b/r2d2")),
        "{before:?}"
    );
    signal(&b.child, "TERM");
    let stopped = Instant::now();
    assert!(b.child.wait().unwrap().success(), "{}", b.log());
    assert!(b.log().contains("left the cluster"), "{}", b.log());
    assert_eq!(owned_by_b(), Vec::<String>::new(), "revoked with the lease");
    let status = a
        .wait_status("nodes", |nodes| nodes.as_array().unwrap().len() == 1)
        .await;
    assert_eq!(status["nodes"][0]["name"], "node-a");
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "{:?}",
        stopped.elapsed()
    );
    // A still references r2d2's labels: the number stays.
    let references = etcd.etcdctl(&["get", "--prefix", "--keys-only", prefix]);
    assert!(
        references.contains("app=r2d2;k8s:io.kubernetes.pod.namespace=default;/node-a"),
        "{references}"
    );
}

/// Cilium's keys as a Cilium agent in kvstore mode writes them (the formats of
/// Documentation/kvstore.rst, "Layout", in Cilium's repository):
/// - `cilium/state/identities/v1/id/<identity>` → the identity's labels, each
///   `source:key=value;`, sorted (pkg/identity/key/global_identity.go `GlobalIdentity.GetKey`,
///   pkg/labels/labels.go `Labels.SortedList`);
/// - `cilium/state/identities/v1/value/<labels>/<node IP>` → the identity, as text (the
///   kvstore allocator's per-node slave key, pkg/allocator);
/// - `cilium/state/ip/v1/<cluster>/<ip>` → an `IPIdentityPair` as JSON (pkg/identity/
///   identity.go: `IP`, `Mask`, `HostIP`, `ID`, `Key`, `Metadata`, `K8sNamespace`,
///   `K8sPodName`), written by pkg/ipcache/kvstore.go `UpsertIPToKVStore`.
struct CiliumKeys<'e> {
    etcd: &'e Etcd,
    /// Every key written, with its value, to check that the agent never changed them.
    written: std::collections::BTreeMap<String, String>,
}

impl CiliumKeys<'_> {
    fn put(&mut self, key: String, value: String) {
        self.etcd.etcdctl(&["put", &key, &value]);
        self.written.insert(key, value);
    }

    /// An identity and the reference of the Cilium node 192.168.56.11 to it.
    fn identity(&mut self, id: u32, labels: &str) {
        self.put(
            format!("cilium/state/identities/v1/id/{id}"),
            labels.to_owned(),
        );
        self.put(
            format!("cilium/state/identities/v1/value/{labels}/192.168.56.11"),
            id.to_string(),
        );
    }

    /// `ip` of pod `pod` in namespace default, with identity `id`, in cluster `default`.
    fn ip(&mut self, ip: &str, id: u32, pod: &str) {
        self.put(
            format!("cilium/state/ip/v1/default/{ip}"),
            format!(
                r#"{{"IP":"{ip}","Mask":null,"HostIP":"192.168.56.11","ID":{id},"Key":0,"Metadata":"cilium-global:default:k8s1:{id}","K8sNamespace":"default","K8sPodName":"{pod}"}}"#
            ),
        );
    }

    /// What etcd holds under `cilium/`: key → value.
    fn stored(&self) -> std::collections::BTreeMap<String, String> {
        let listing = self.etcd.etcdctl(&["get", "--prefix", "cilium/"]);
        let lines: Vec<&str> = listing.lines().collect();
        lines
            .chunks(2)
            .map(|pair| (pair[0].to_owned(), pair[1].to_owned()))
            .collect()
    }
}

const CACHE_ID: u32 = 40123;
const LUKE_ID: u32 = 31337;
const VADER_ID: u32 = 31338;
const LEIA_ID: u32 = 31400;

/// Cilium's label array for a pod of app `app` in namespace default of cluster default.
fn cilium_labels(app: &str) -> String {
    format!(
        "k8s:app={app};k8s:io.cilium.k8s.policy.cluster=default;k8s:io.kubernetes.pod.namespace=default;"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_cilium_identities_a_client_known_only_to_ciliums_ip_cache_gets_its_labels_policy() {
    let etcd = Etcd::single();
    let mut cilium = CiliumKeys {
        etcd: &etcd,
        written: std::collections::BTreeMap::new(),
    };
    cilium.identity(CACHE_ID, &cilium_labels("cache"));
    cilium.identity(LUKE_ID, &cilium_labels("luke"));
    cilium.identity(VADER_ID, &cilium_labels("vader"));
    // luke's address is in no configuration of the agent: only in Cilium's IP cache.
    cilium.ip(LUKE, LUKE_ID, "luke-7d9c");
    cilium.ip("127.0.0.1", CACHE_ID, "cache-5f2a");

    let mut children = Children(Vec::new());
    let memcached = start_memcached(&mut children);
    let dir = temp_dir("cluster-cilium");
    let (cache_port, leia_port) = (free_port(), free_port());
    // luke may get public/ keys from every endpoint of the Cilium cluster `default`.
    std::fs::write(
        dir.join("cache.yaml"),
        format!(
            r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: cache}}
spec:
  endpointSelector: {{matchLabels: {{io.cilium.k8s.policy.cluster: default}}}}
  ingress:
    - fromEndpoints: [{{matchLabels: {{app: luke}}}}]
      toPorts:
        - ports: [{{port: "{memcached}"}}]
          rules: {{l7proto: memcache, l7: [{{command: get, keyPrefix: public/}}]}}
"#
        ),
    )
    .unwrap();
    // cache's labels are those of a Cilium identity; leia's are not, yet.
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            r#"accessLog: {{path: access.log}}
api: {{socket: api.sock}}
endpoints:
  - {{name: cache, ips: ["127.0.0.1"], labels: {{"k8s:app": cache, io.cilium.k8s.policy.cluster: default}}}}
  - {{name: leia, ips: ["127.0.0.22"], labels: {{app: leia, io.cilium.k8s.policy.cluster: default}}}}
policies: ["cache.yaml"]
listeners:
  - {{name: cache, listen: "127.0.0.1:{cache_port}", upstream: "127.0.0.1:{memcached}", endpoint: cache, direction: ingress, l7proto: memcache}}
  - {{name: leia, listen: "127.0.0.1:{leia_port}", upstream: "127.0.0.1:{memcached}", endpoint: leia, direction: ingress, l7proto: memcache}}
cluster:
  name: default
  node: node-a
  kvstore: {{endpoints: ["{}"]}}
  leaseTTL: 3s
  identitySource: cilium
"#,
            etcd.endpoint(0)
        ),
    )
    .unwrap();
    let node = Node {
        child: spawn_agent(&dir),
        dir,
        proxy_port: cache_port,
    };
    wait_for_api(&node.dir).await;
    let get = |port: u16, line: &'static str| async move {
        let proxy = format!("127.0.0.1:{port}").parse().unwrap();
        let mut stream = connect_from(LUKE, proxy).await;
        request(&mut stream, line).await
    };
    const PUBLIC: &str = "get public/plans\r\n";
    const SECRET: &str = "get secret/plans\r\n";
    const END: &str = "END\r\n";
    const MEMCACHE_DENIED: &str = "CLIENT_ERROR access denied\r\n";

    // luke, by Cilium's IP cache, gets public keys and not secret ones.
    assert_eq!(get(cache_port, PUBLIC).await, END, "{}", node.log());
    assert_eq!(get(cache_port, SECRET).await, MEMCACHE_DENIED);
    let denied = logged_memcache(&node.dir, "secret/plans").await;
    assert_eq!(denied["entry_type"], "Denied", "{denied}");
    assert_eq!(denied["source_security_id"], LUKE_ID, "{denied}");
    assert_eq!(denied["destination_security_id"], CACHE_ID, "{denied}");
    assert_eq!(
        denied["source_labels"],
        serde_json::json!([
            "app=luke",
            "io.cilium.k8s.policy.cluster=default",
            "k8s:io.kubernetes.pod.namespace=default"
        ]),
        "{denied}"
    );

    // leia's labels have no Cilium identity: refused, and said so; no number is made up.
    assert_eq!(get(leia_port, PUBLIC).await, "", "refused at connect");
    let status = node.json(&["cluster", "status"]);
    assert_documented(&status);
    assert_eq!(status["identitySource"], "cilium");
    assert_eq!(status["unidentifiedEndpoints"], serde_json::json!(["leia"]));
    assert_eq!(status["remoteEndpoints"], 2, "{status}");
    assert!(
        node.log()
            .contains("the cluster has no identity for the endpoint's labels"),
        "{}",
        node.log()
    );
    let listed = node.json(&["endpoint", "list"]);
    let leia = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "leia")
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(leia["identity"], Value::Null, "{leia}");

    // Cilium allocates leia's identity: followed live, leia is guarded by its policy.
    cilium.identity(LEIA_ID, &cilium_labels("leia"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(leia_port, PUBLIC).await != END {
        assert!(
            Instant::now() < deadline,
            "leia not guarded: {}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(leia_port, SECRET).await, MEMCACHE_DENIED);
    node.wait_status("unidentifiedEndpoints", |v| v == &serde_json::json!([]))
        .await;

    // Cilium gives luke's address to vader: luke's connections are vader's, and refused.
    cilium.ip(LUKE, VADER_ID, "vader-1b3e");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !get(cache_port, PUBLIC).await.is_empty() {
        assert!(Instant::now() < deadline, "still allowed: {}", node.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The agent only read Cilium's keys.
    assert_eq!(cilium.stored(), cilium.written);
}

/// The last access-log entry of `dir` about the memcache key `key`, waiting (up to 5 s).
async fn logged_memcache(dir: &Path, key: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(dir.join("access.log")).unwrap_or_default();
        let entry = log
            .lines()
            .rev()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|e| e.to_string().contains(key));
        if let Some(entry) = entry {
            return entry;
        }
        assert!(Instant::now() < deadline, "no entry for {key:?} in:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
