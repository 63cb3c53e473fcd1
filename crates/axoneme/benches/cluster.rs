//! Cluster mode's figures, measured end to end against a real three-member etcd: the time from
//! a policy import on one node until luke's requests get the new verdict through all three
//! `axoneme run` agents; identity allocations per second with three nodes racing; an agent's
//! resident memory per endpoint it follows from etcd; the time until etcd, wiped and restarted
//! empty, holds again everything the nodes own and the cluster's policies; and the import and
//! the wipe again with simulated nodes publishing 1,000 endpoints and 100 policies.
//!
//! Simulated nodes are sessions of the cluster crate in this process (`Session::connect`,
//! `publish_endpoints`, `allocate_identity`, `put_policy`), each with its own lease and its own
//! connection to etcd, as an agent's session would be; their policies are written as the agents
//! write theirs (the document as JSON). For the memory figure the endpoints of simulated nodes
//! are written straight to etcd in the format the nodes publish, so that ten thousand of them
//! cost nothing but etcd and the agent measured. What is judged is read from outside: verdicts
//! through the agents' listeners (a recording R2-D2 upstream behind them), keys read from etcd
//! with a client of this bench's own, resident memory from `/proc`.
//!
//! `cargo bench -p axoneme --bench cluster` measures at full scale and prints the tables of
//! BENCHMARKS.md's "Cluster" section; without `--bench` (as `cargo test --benches` runs it) the
//! same runs at a small scale, as a check that every measurement still completes.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "shared/simulated.rs"]
mod simulated;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axoneme_cluster::{ClusterConfig, ClusterError, Session};
use axoneme_policy::EndpointSpec;
use axoneme_testkit::etcd::{Etcd, EtcdOptions};
use common::{agent_cli, connect_from, free_port, raw_api, request, spawn_agent, temp_dir};
use common::{wait_for_api, Upstream, LUKE};
use etcd_client::{Client, GetOptions, PutOptions, Txn, TxnOp};
use serde_json::Value;

/// How much each measurement does.
#[derive(Debug, Clone, Copy)]
struct Scale {
    /// Whether this is the measurement (which reports a wipe that did not converge) rather
    /// than the check (which fails on it).
    full: bool,
    /// Policy imports timed, for each of the two cluster loads.
    imports: usize,
    /// Label sets each node allocates in each allocation race.
    allocations: usize,
    /// Endpoints one agent follows for the memory figure.
    memory_endpoints: usize,
    /// Simulated endpoints and policies of the loaded cluster.
    simulated_endpoints: usize,
    simulated_policies: usize,
}

const FULL: Scale = Scale {
    full: true,
    imports: 100,
    allocations: 500,
    memory_endpoints: 10_000,
    simulated_endpoints: 1_000,
    simulated_policies: 100,
};

const SMOKE: Scale = Scale {
    full: false,
    imports: 3,
    allocations: 20,
    memory_endpoints: 200,
    simulated_endpoints: 50,
    simulated_policies: 5,
};

/// Endpoints published by each simulated node (pods on a Kubernetes node), and endpoints
/// sharing one label set (as the pods of one deployment do).
const ENDPOINTS_PER_SIMULATED_NODE: usize = 100;
const ENDPOINTS_PER_LABEL_SET: usize = 10;

/// The three agents.
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

/// The endpoints the agents host between them: r2d2 on each, luke on node A.
const AGENT_ENDPOINTS: usize = 4;

const DENIED: &str = "ERROR\r\n";

/// How long any awaited state may take before the bench gives up.
const PATIENCE: Duration = Duration::from_secs(120);

fn main() {
    let scale = if std::env::args().any(|arg| arg == "--bench") {
        FULL
    } else {
        SMOKE
    };
    // The simulated nodes' sessions say on the standard error what goes wrong with etcd.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(measure(scale));
}

async fn measure(scale: Scale) {
    let started = Instant::now();
    println!("scale: {scale:?}");
    println!("load average at start: {}", load_average());
    let mut etcd = Etcd::start_with(EtcdOptions {
        members: 3,
        ..EtcdOptions::default()
    });
    let oracle = Client::connect(etcd.endpoints(), None)
        .await
        .expect("the bench's own etcd client");

    let race = allocation_race(&etcd, &oracle, scale.allocations).await;
    println!("{race}");

    let upstream = Upstream::start().await;
    let nodes = start_agents(&etcd, &upstream).await;
    let mut imports = Imports::start(&nodes, upstream.addr.port()).await;

    let plain = imports.time(scale.imports).await;
    println!("{}", plain.table("3 agents, no other load"));
    let wipe = wipe_convergence(&mut etcd, &oracle, &nodes, &imports, None).await;
    println!("{}\n{}", Wipe::header(), wipe.line("3 agents"));

    let simulated = SimulatedCluster::start(
        &etcd,
        "galaxy",
        scale.simulated_endpoints,
        scale.simulated_policies,
        upstream.addr.port(),
    )
    .await;
    wait_remote_endpoints(&nodes, scale.simulated_endpoints + AGENT_ENDPOINTS).await;
    let loaded = imports.time(scale.imports).await;
    let load = format!(
        "3 agents, {} simulated endpoints and {} policies",
        scale.simulated_endpoints, scale.simulated_policies
    );
    println!("{}", loaded.table(&load));
    let loaded_wipe =
        wipe_convergence(&mut etcd, &oracle, &nodes, &imports, Some(&simulated)).await;
    println!("{}\n{}", Wipe::header(), loaded_wipe.line(&load));
    simulated.close().await;
    drop(nodes);

    let memory = memory_per_endpoint(&etcd, &oracle, &upstream, scale.memory_endpoints).await;
    println!("{memory}");
    println!(
        "simulated nodes' requests sent again after etcd did not answer in time: {}",
        RETRIES.load(Ordering::Relaxed)
    );
    println!("load average at end: {}", load_average());
    if !scale.full {
        for wipe in [&wipe, &loaded_wipe] {
            assert_eq!(wipe.unfinished, None, "etcd wiped did not converge");
        }
    }
    println!("total: {:.0} s", started.elapsed().as_secs_f64());
}

/// The machine's load averages, from `/proc/loadavg`.
fn load_average() -> String {
    let loadavg = std::fs::read_to_string("/proc/loadavg").expect("/proc/loadavg");
    loadavg
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `q` quantile (0..=1) of sorted `samples`: the smallest sample at or above that rank.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

// ---------------------------------------------------------------------------------------------
// Identity allocations with three nodes racing.

/// What an allocation race measured.
struct Race {
    label_sets: usize,
    /// Wall time when all three nodes allocate the same label sets in the same order.
    same: Duration,
    /// Wall time when each allocates label sets of its own.
    disjoint: Duration,
}

impl std::fmt::Display for Race {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.label_sets as f64;
        writeln!(
            f,
            "| three nodes racing | allocations (calls) | identities created | wall time | calls/s | identities/s |"
        )?;
        writeln!(f, "|---|---:|---:|---:|---:|---:|")?;
        writeln!(
            f,
            "| the same {} label sets, same order | {} | {} | {:.2} s | {:.0} | {:.0} |",
            self.label_sets,
            3 * self.label_sets,
            self.label_sets,
            self.same.as_secs_f64(),
            3.0 * n / self.same.as_secs_f64(),
            n / self.same.as_secs_f64()
        )?;
        write!(
            f,
            "| {} label sets of its own each | {} | {} | {:.2} s | {:.0} | {:.0} |",
            self.label_sets,
            3 * self.label_sets,
            3 * self.label_sets,
            self.disjoint.as_secs_f64(),
            3.0 * n / self.disjoint.as_secs_f64(),
            3.0 * n / self.disjoint.as_secs_f64()
        )
    }
}

/// Three nodes (sessions of their own) allocate `label_sets` label sets each, first the same
/// ones, then each its own; every node must get the same number for the same labels, and etcd
/// must hold one master key per label set.
async fn allocation_race(etcd: &Etcd, oracle: &Client, label_sets: usize) -> Race {
    let same = race_once(etcd, oracle, "race-same", label_sets, |_, j| {
        format!("app=shared-{j}")
    })
    .await;
    let disjoint = race_once(etcd, oracle, "race-own", label_sets, |node, j| {
        format!("app=node{node}-{j}")
    })
    .await;
    Race {
        label_sets,
        same,
        disjoint,
    }
}

async fn race_once(
    etcd: &Etcd,
    oracle: &Client,
    cluster: &str,
    label_sets: usize,
    label: fn(usize, usize) -> String,
) -> Duration {
    let mut sessions = Vec::new();
    for node in NODES {
        let config = ClusterConfig::new(cluster, node, etcd.endpoints());
        sessions.push(Arc::new(Session::connect(config).await.expect("a session")));
    }
    let started = Instant::now();
    let mut racers = Vec::new();
    for (i, session) in sessions.iter().enumerate() {
        let session = Arc::clone(session);
        racers.push(tokio::spawn(async move {
            let mut numbers = BTreeMap::new();
            for j in 0..label_sets {
                let labels = [label(i, j)];
                let id = session
                    .allocate_identity(&labels)
                    .await
                    .unwrap_or_else(|e| panic!("allocating {labels:?} on node {i}: {e}"));
                numbers.insert(labels[0].clone(), id);
            }
            numbers
        }));
    }
    let mut all: BTreeMap<String, u32> = BTreeMap::new();
    for racer in racers {
        for (labels, id) in racer.await.expect("a racer") {
            let known = *all.entry(labels.clone()).or_insert(id);
            assert_eq!(known, id, "{labels} has two numbers: {known} and {id}");
        }
    }
    let elapsed = started.elapsed();
    let distinct: BTreeSet<u32> = all.values().copied().collect();
    assert_eq!(distinct.len(), all.len(), "two label sets share a number");
    let masters = count_keys(oracle, &format!("axoneme/{cluster}/identities/id/")).await;
    assert_eq!(masters, all.len(), "master keys in etcd");
    for session in sessions {
        Arc::into_inner(session)
            .expect("the racers are done")
            .close()
            .await
            .expect("closing a session");
    }
    elapsed
}

async fn count_keys(oracle: &Client, prefix: &str) -> usize {
    let answer = oracle
        .kv_client()
        .get(
            prefix,
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .expect("counting keys");
    usize::try_from(answer.count()).expect("a count")
}

// ---------------------------------------------------------------------------------------------
// Agents.

/// One `axoneme run` agent.
struct Node {
    name: &'static str,
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

impl Node {
    /// Starts agent `index` of cluster `cluster`: it hosts r2d2 (at an address of its own)
    /// behind a listener, node A also luke, whose address the others learn from etcd.
    async fn start(index: usize, cluster: &str, etcd: &Etcd, upstream: &Upstream) -> Node {
        let name = NODES[index];
        let dir = temp_dir(&format!("bench-{cluster}-{name}"));
        let proxy_port = free_port();
        let luke = if index == 0 {
            format!("  - {{name: luke, ips: [\"{LUKE}\"], labels: {{app: luke}}}}\n")
        } else {
            String::new()
        };
        let config = format!(
            r#"accessLog: {{path: access.log}}
api: {{socket: api.sock}}
endpoints:
  - {{name: r2d2, ips: ["127.0.1.{host}"], labels: {{app: r2d2}}}}
{luke}policies: []
listeners:
  - {{name: r2d2, listen: "127.0.0.1:{proxy_port}", upstream: "{upstream}", endpoint: r2d2, direction: ingress}}
cluster:
  name: {cluster}
  node: {name}
  kvstore: {{endpoints: {endpoints:?}}}
"#,
            host = index + 1,
            upstream = upstream.addr,
            endpoints = etcd.endpoints(),
        );
        std::fs::write(dir.join("config.yaml"), config).expect("writing the configuration");
        let child = spawn_agent(&dir);
        wait_for_api(&dir).await;
        Node {
            name,
            child,
            dir,
            proxy_port,
        }
    }

    /// luke's R2-D2 `line` through this node's listener, on a new connection; the reply line
    /// (empty when the connection was refused).
    async fn r2d2(&self, line: &str) -> String {
        let proxy = format!("127.0.0.1:{}", self.proxy_port)
            .parse()
            .expect("an address");
        let mut stream = connect_from(LUKE, proxy).await;
        request(&mut stream, line).await
    }

    /// `cluster status` as JSON.
    fn cluster_status(&self) -> Value {
        let output = agent_cli(&self.dir, &["cluster", "status", "-o", "json"]);
        assert!(
            output.status.success(),
            "{} cluster status: {}",
            self.name,
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("cluster status as JSON")
    }

    /// The agent's resident and peak resident memory, in KiB, from `/proc`.
    fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the agent's /proc status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

/// The three agents of cluster `galaxy`.
async fn start_agents(etcd: &Etcd, upstream: &Upstream) -> Vec<Node> {
    let mut nodes = Vec::new();
    for index in 0..NODES.len() {
        nodes.push(Node::start(index, "galaxy", etcd, upstream).await);
    }
    // Every node knows the others' endpoints: A's luke and the three r2d2.
    wait_remote_endpoints(&nodes, AGENT_ENDPOINTS).await;
    nodes
}

/// Waits until every node follows the cluster's `total` endpoints but its own, as `cluster
/// status` counts them.
async fn wait_remote_endpoints(nodes: &[Node], total: usize) {
    let deadline = Instant::now() + PATIENCE;
    for node in nodes {
        let own = if node.name == NODES[0] { 2 } else { 1 };
        loop {
            let status = node.cluster_status();
            if status["remoteEndpoints"].as_u64() == Some((total - own) as u64) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} follows {} remote endpoints, not {}: {status}",
                node.name,
                status["remoteEndpoints"],
                total - own
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Policy import to enforcement.

/// Successive imports of the policy `bench` through node A's API (`PUT /v1/policy`, what
/// `axoneme policy import` sends): import `i` lets luke READ
/// files under `/import-i/` only, so a READ there changes from denied to allowed on each node
/// when the node enforces it.
struct Imports<'n> {
    nodes: &'n [Node],
    port: u16,
    done: usize,
}

/// What a series of imports measured: per import, the time until node A answered and until
/// each node gave the new verdict.
struct ImportTimes {
    answered: Vec<Duration>,
    enforced: Vec<[Duration; 3]>,
}

impl<'n> Imports<'n> {
    /// Starts the series with a first import, untimed: until a node applies it, r2d2 has no
    /// policy there and every request is allowed, so the series starts once every node
    /// denies the next import's request.
    async fn start(nodes: &'n [Node], port: u16) -> Imports<'n> {
        let mut imports = Imports {
            nodes,
            port,
            done: 0,
        };
        imports.import().await;
        let next = Self::allowed(imports.done + 1);
        let deadline = Instant::now() + PATIENCE;
        for node in nodes {
            while node.r2d2(&next).await != DENIED {
                assert!(Instant::now() < deadline, "{} has no policy", node.name);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        imports
    }

    fn policy(&self, import: usize) -> String {
        common::r2d2_policy(
            "bench",
            self.port,
            &format!(r#"{{cmd: READ, file: "/import-{import}/.*"}}"#),
        )
    }

    /// The request that import `import` allows.
    fn allowed(import: usize) -> String {
        format!("READ /import-{import}/plans\r\n")
    }

    /// The last import's request, which every node must allow, and the next one's, which
    /// every node must deny.
    async fn check_in_force(&self) {
        let (allowed, next) = (Self::allowed(self.done), Self::allowed(self.done + 1));
        for node in self.nodes {
            assert_eq!(
                node.r2d2(&allowed).await,
                format!("OK {allowed}"),
                "{} does not enforce import {}",
                node.name,
                self.done
            );
            assert_eq!(node.r2d2(&next).await, DENIED, "{}", node.name);
        }
    }

    /// Imports the next policy and times until node A answered and until each node allows
    /// its request.
    async fn import(&mut self) -> (Duration, [Duration; 3]) {
        let import = self.done + 1;
        let body = self.policy(import);
        let line = Self::allowed(import);
        let started = Instant::now();
        let watchers: Vec<_> = self
            .nodes
            .iter()
            .map(|node| wait_allowed(node, &line, started))
            .collect();
        let put = async {
            let (status, answer) = raw_api(
                &self.nodes[0].dir,
                &format!(
                    "PUT /v1/policy HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                ),
            )
            .await;
            assert!(
                status.contains(" 200 "),
                "import {import}: {status} {answer}"
            );
            started.elapsed()
        };
        let (answered, enforced) = tokio::join!(put, futures_util::future::join_all(watchers));
        self.done = import;
        (answered, enforced.try_into().expect("three nodes"))
    }

    /// Times `count` imports, each after checking that the one before is in force.
    async fn time(&mut self, count: usize) -> ImportTimes {
        let mut times = ImportTimes {
            answered: Vec::new(),
            enforced: Vec::new(),
        };
        for _ in 0..count {
            self.check_in_force().await;
            let (answered, enforced) = self.import().await;
            times.answered.push(answered);
            times.enforced.push(enforced);
        }
        self.check_in_force().await;
        times
    }
}

/// Sends luke's `line` through `node` until it is allowed; the time since `started`.
async fn wait_allowed(node: &Node, line: &str, started: Instant) -> Duration {
    let allowed = format!("OK {line}");
    loop {
        if node.r2d2(line).await == allowed {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{} does not allow {line:?}",
            node.name
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

impl ImportTimes {
    fn table(&self, load: &str) -> String {
        let mut rows = vec![
            format!("{load}, {} imports:", self.answered.len()),
            "| from the import through node A's API until | p50 | p99 | max |".to_owned(),
            "|---|---:|---:|---:|".to_owned(),
        ];
        let mut row = |what: &str, mut samples: Vec<Duration>| {
            samples.sort_unstable();
            rows.push(format!(
                "| {what} | {} | {} | {} |",
                ms(quantile(&samples, 0.5)),
                ms(quantile(&samples, 0.99)),
                ms(*samples.last().expect("samples"))
            ));
        };
        row("node A answered (applied there)", self.answered.clone());
        for (i, name) in NODES.iter().enumerate() {
            row(
                &format!("{name} allows the request"),
                self.enforced.iter().map(|times| times[i]).collect(),
            );
        }
        row(
            "**all three nodes allow it**",
            self.enforced
                .iter()
                .map(|times| *times.iter().max().expect("three"))
                .collect(),
        );
        rows.join("\n")
    }
}

// ---------------------------------------------------------------------------------------------
// Simulated nodes.

/// Simulated nodes: sessions publishing endpoints (and allocating their label sets' numbers,
/// as an agent does for its own endpoints), one of them also the cluster's policies.
struct SimulatedCluster {
    sessions: Vec<Session>,
}

/// The endpoint `i` of a simulated node `node`: an address of its own in 10.0.0.0/8, labels
/// shared with the other endpoints of its group.
fn simulated_endpoint(node: usize, i: usize) -> EndpointSpec {
    let global = node * ENDPOINTS_PER_SIMULATED_NODE + i;
    let [_, b, c, d] = u32::try_from(global + 1)
        .expect("a small index")
        .to_be_bytes();
    EndpointSpec {
        name: format!("pod-{i}"),
        ips: vec![IpAddr::V4(Ipv4Addr::new(10, b, c, d))],
        labels: BTreeMap::from([(
            "app".to_owned(),
            format!("sim-{}", global / ENDPOINTS_PER_LABEL_SET),
        )]),
        namespace: None,
        policy_audit_mode: false,
    }
}

/// Policy `k` of the simulated ones: r2d2 takes READs under `/sim-k/` from the endpoints of
/// label set `k`.
fn simulated_policy(k: usize, port: u16) -> String {
    simulated::policy(k, port, &format!("/sim-{k}/.*"))
}

/// Requests of simulated nodes that etcd did not answer in time and that were sent again.
static RETRIES: AtomicUsize = AtomicUsize::new(0);

/// How often a simulated node sends a request again (an agent retries its publication until
/// it succeeds).
const ATTEMPTS: usize = 5;

/// Runs a simulated node's request until it succeeds, at most [`ATTEMPTS`] times; each
/// failure is counted in [`RETRIES`] and said on the standard error.
async fn retried<T, F, Fut>(what: &str, mut request: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClusterError>>,
{
    let mut attempt = 1;
    loop {
        match request().await {
            Ok(answer) => return answer,
            Err(error) if attempt < ATTEMPTS => {
                eprintln!("{what}: {error}; sending it again");
                RETRIES.fetch_add(1, Ordering::Relaxed);
                attempt += 1;
            }
            Err(error) => panic!("{what}: {error} ({ATTEMPTS} attempts)"),
        }
    }
}

impl SimulatedCluster {
    /// Starts enough simulated nodes of `cluster` to publish `endpoints` endpoints, and has
    /// the first write `policies` policies guarding r2d2 on `port`.
    async fn start(
        etcd: &Etcd,
        cluster: &str,
        endpoints: usize,
        policies: usize,
        port: u16,
    ) -> SimulatedCluster {
        let node_count = endpoints.div_ceil(ENDPOINTS_PER_SIMULATED_NODE);
        let mut publishing = Vec::new();
        for node in 0..node_count {
            let config = ClusterConfig::new(cluster, &format!("sim-{node}"), etcd.endpoints());
            let count =
                (endpoints - node * ENDPOINTS_PER_SIMULATED_NODE).min(ENDPOINTS_PER_SIMULATED_NODE);
            publishing.push(tokio::spawn(async move {
                let session = Session::connect(config).await.expect("a simulated node");
                let specs: Vec<EndpointSpec> =
                    (0..count).map(|i| simulated_endpoint(node, i)).collect();
                let label_sets: BTreeSet<Vec<String>> = specs
                    .iter()
                    .map(|spec| {
                        spec.labels
                            .iter()
                            .map(|(key, value)| format!("{key}={value}"))
                            .collect()
                    })
                    .collect();
                for labels in &label_sets {
                    retried("allocating a simulated node's identity", || {
                        session.allocate_identity(labels)
                    })
                    .await;
                }
                retried("publishing simulated endpoints", || {
                    session.publish_endpoints(&specs)
                })
                .await;
                session
            }));
        }
        let mut sessions = Vec::new();
        for node in publishing {
            sessions.push(node.await.expect("a simulated node"));
        }
        for k in 0..policies {
            let (name, text) = (format!("sim-{k}"), simulated_policy(k, port));
            retried("writing a simulated policy", || {
                sessions[0].put_policy(&name, &text)
            })
            .await;
        }
        SimulatedCluster { sessions }
    }

    /// Stops the simulated nodes and revokes their leases; a node whose lease is already gone
    /// (etcd lost it) is said so on the standard error.
    async fn close(self) {
        for session in self.sessions {
            let node = session.config().node.clone();
            if let Err(error) = session.close().await {
                eprintln!("closing simulated node {node}: {error}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Convergence after a wipe.

/// The kinds of keys a wipe loses, in the order the table shows them.
const KINDS: [&str; 6] = [
    "policies",
    "agents' endpoints",
    "simulated endpoints",
    "identity references",
    "identity master keys",
    "heartbeats",
];

/// The kind of a key of cluster `galaxy` (the epoch aside).
fn kind(key: &str) -> &'static str {
    let key = key.strip_prefix("axoneme/galaxy/").unwrap_or(key);
    if key.starts_with("policies/") {
        KINDS[0]
    } else if key.starts_with("endpoints/sim-") {
        KINDS[2]
    } else if key.starts_with("endpoints/") {
        KINDS[1]
    } else if key.starts_with("identities/value/") {
        KINDS[3]
    } else if key.starts_with("nodes/") {
        KINDS[5]
    } else {
        KINDS[4]
    }
}

/// What a wipe measured.
struct Wipe {
    keys: usize,
    /// From the wipe's start until etcd answered again, empty.
    restarted: Duration,
    /// From then until etcd held every key of each kind it held before (none when it held
    /// none of that kind).
    back: BTreeMap<&'static str, Duration>,
    /// From then until etcd held every key it held before.
    converged: Duration,
    /// Keys back with another value than before (an identity renumbered); heartbeats aside,
    /// whose value is the time of the node's last renewal.
    changed: usize,
    /// What was still missing when the bench stopped waiting, if anything was.
    unfinished: Option<String>,
}

impl Wipe {
    fn header() -> String {
        let kinds: Vec<&str> = KINDS.to_vec();
        format!(
            "| cluster | keys | etcd back, empty | {} | **all back** | values changed |\n|---|---:|---:|{}---:|---:|",
            kinds.join(" | "),
            "---:|".repeat(KINDS.len())
        )
    }

    fn line(&self, load: &str) -> String {
        let kinds: Vec<String> = KINDS
            .iter()
            .map(|kind| {
                self.back.get(kind).map_or("–".to_owned(), |back| {
                    format!("{:.2} s", back.as_secs_f64())
                })
            })
            .collect();
        let converged = match &self.unfinished {
            None => format!("**{:.2} s**", self.converged.as_secs_f64()),
            Some(unfinished) => format!("**not converged**: {unfinished}"),
        };
        format!(
            "| {load} | {} | {:.2} s | {} | {converged} | {} |",
            self.keys,
            self.restarted.as_secs_f64(),
            kinds.join(" | "),
            self.changed
        )
    }
}

/// Every key of cluster `galaxy` but the epoch (which is created anew), with its value (empty
/// unless `values`).
async fn cluster_keys(
    oracle: &Client,
    values: bool,
) -> Result<BTreeMap<String, Vec<u8>>, etcd_client::Error> {
    let mut options = GetOptions::new().with_prefix();
    if !values {
        options = options.with_keys_only();
    }
    let answer = oracle
        .kv_client()
        .get("axoneme/galaxy/", Some(options))
        .await?;
    Ok(answer
        .kvs()
        .iter()
        .filter_map(|kv| {
            let key = kv.key_str().ok()?;
            (key != "axoneme/galaxy/epoch").then(|| (key.to_owned(), kv.value().to_vec()))
        })
        .collect())
}

/// The node that owns a key: the segment after `endpoints/` or `nodes/`, or the last segment
/// of an identity reference; `cluster` for policies and master keys.
fn owner(key: &str) -> &str {
    let key = key.strip_prefix("axoneme/galaxy/").unwrap_or(key);
    if let Some(node) = key.strip_prefix("nodes/") {
        node
    } else if let Some(rest) = key.strip_prefix("endpoints/") {
        rest.split('/').next().unwrap_or(rest)
    } else if key.starts_with("identities/value/") {
        key.rsplit('/').next().unwrap_or(key)
    } else {
        "cluster"
    }
}

/// How long a wipe may take to converge before the bench reports what is still missing.
const WIPE_PATIENCE: Duration = Duration::from_secs(90);

/// Wipes etcd (all members stopped, their data deleted, started empty) and times until it
/// holds again every key of the cluster it held before: every node's endpoints and identity
/// references, the identities' master keys and the policies. Etcd is polled every 100 ms
/// (keys only). The policy in force must be enforced on every node afterwards.
async fn wipe_convergence(
    etcd: &mut Etcd,
    oracle: &Client,
    nodes: &[Node],
    imports: &Imports<'_>,
    simulated: Option<&SimulatedCluster>,
) -> Wipe {
    let before = cluster_keys(oracle, true)
        .await
        .expect("the keys before the wipe");
    let started = Instant::now();
    tokio::task::block_in_place(|| etcd.wipe());
    let restarted = started.elapsed();
    let answering = Instant::now();
    let mut back = BTreeMap::new();
    let unfinished = loop {
        if let Ok(now) = cluster_keys(oracle, false).await {
            let missing: Vec<&String> = before
                .keys()
                .filter(|key| !now.contains_key(*key))
                .collect();
            let missing_kinds: BTreeSet<&str> = missing.iter().map(|key| kind(key)).collect();
            for key in before.keys() {
                if !missing_kinds.contains(kind(key)) {
                    back.entry(kind(key)).or_insert_with(|| answering.elapsed());
                }
            }
            if missing.is_empty() {
                break None;
            }
            if answering.elapsed() > WIPE_PATIENCE {
                let mut by_owner: BTreeMap<&str, usize> = BTreeMap::new();
                for key in &missing {
                    *by_owner.entry(owner(key)).or_default() += 1;
                }
                let by_owner: Vec<String> = by_owner
                    .iter()
                    .map(|(owner, count)| format!("{owner}: {count}"))
                    .collect();
                break Some(format!(
                    "{} keys missing after {} s ({})",
                    missing.len(),
                    WIPE_PATIENCE.as_secs(),
                    by_owner.join(", ")
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let converged = answering.elapsed();
    if let (Some(unfinished), Some(simulated)) = (&unfinished, simulated) {
        println!("wipe not converged: {unfinished}");
        for session in &simulated.sessions {
            let health = session.health().borrow().clone();
            println!(
                "  {}: stale {}, data losses {}, lease losses {}, repairs {}, revision {}",
                session.config().node,
                health.stale_since.is_some(),
                health.data_losses,
                health.lease_losses,
                health.repairs,
                health.revision
            );
        }
    }
    let after = cluster_keys(oracle, true)
        .await
        .expect("the keys after the wipe");
    let changed = before
        .iter()
        .filter(|(key, _)| kind(key) != KINDS[5])
        .filter(|(key, value)| after.get(*key).is_some_and(|now| now != *value))
        .count();
    imports.check_in_force().await;
    for node in nodes {
        println!("  {}: {}", node.name, node.cluster_status());
    }
    Wipe {
        keys: before.len(),
        restarted,
        back,
        converged,
        changed,
        unfinished,
    }
}

// ---------------------------------------------------------------------------------------------
// Memory per endpoint followed.

/// What the memory measurement found.
struct Memory {
    endpoints: usize,
    label_sets: usize,
    before_kib: u64,
    after_kib: u64,
    peak_kib: u64,
    applied: Duration,
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let grown = self.after_kib.saturating_sub(self.before_kib);
        writeln!(
            f,
            "| one agent following | RSS before | RSS after | peak RSS | per endpoint | all applied after |"
        )?;
        writeln!(f, "|---|---:|---:|---:|---:|---:|")?;
        write!(
            f,
            "| {} remote endpoints ({} label sets) | {:.1} MiB | {:.1} MiB | {:.1} MiB | **{:.0} B** | {:.1} s |",
            self.endpoints,
            self.label_sets,
            self.before_kib as f64 / 1024.0,
            self.after_kib as f64 / 1024.0,
            self.peak_kib as f64 / 1024.0,
            grown as f64 * 1024.0 / self.endpoints as f64,
            self.applied.as_secs_f64()
        )
    }
}

/// Writes `count` endpoints of simulated nodes of `cluster` straight to etcd, as the nodes
/// publish them (the endpoint as JSON under `endpoints/<node>/<name>`, attached to the node's
/// lease), a hundred keys per transaction; the nodes' leases, granted for ten minutes.
async fn write_endpoints(oracle: &Client, cluster: &str, count: usize) -> Vec<i64> {
    let mut client = oracle.clone();
    let mut leases = Vec::new();
    for node in 0..count.div_ceil(ENDPOINTS_PER_SIMULATED_NODE) {
        let lease = client
            .lease_grant(600, None)
            .await
            .expect("a simulated node's lease")
            .id();
        leases.push(lease);
        let endpoints =
            (count - node * ENDPOINTS_PER_SIMULATED_NODE).min(ENDPOINTS_PER_SIMULATED_NODE);
        let puts: Vec<TxnOp> = (0..endpoints)
            .map(|i| {
                let spec = simulated_endpoint(node, i);
                TxnOp::put(
                    format!("axoneme/{cluster}/endpoints/sim-{node}/{}", spec.name),
                    serde_json::to_string(&spec).expect("an endpoint as JSON"),
                    Some(PutOptions::new().with_lease(lease)),
                )
            })
            .collect();
        for batch in puts.chunks(100) {
            client
                .txn(Txn::new().and_then(batch.to_vec()))
                .await
                .expect("writing simulated endpoints");
        }
    }
    leases
}

/// One agent alone in cluster `memory`; `endpoints` endpoints of simulated nodes written to
/// etcd; its resident memory before they are and once it follows them all (and has settled
/// for 5 s).
async fn memory_per_endpoint(
    etcd: &Etcd,
    oracle: &Client,
    upstream: &Upstream,
    endpoints: usize,
) -> Memory {
    let node = Node::start(0, "memory", etcd, upstream).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (before_kib, _) = node.memory_kib();
    let started = Instant::now();
    let leases = write_endpoints(oracle, "memory", endpoints).await;
    loop {
        let status = node.cluster_status();
        if status["remoteEndpoints"].as_u64() == Some(endpoints as u64) {
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the agent follows {} endpoints, not {endpoints}",
            status["remoteEndpoints"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let applied = started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (after_kib, peak_kib) = node.memory_kib();
    for lease in leases {
        oracle
            .lease_client()
            .revoke(lease)
            .await
            .expect("revoking a simulated node's lease");
    }
    Memory {
        endpoints,
        label_sets: endpoints.div_ceil(ENDPOINTS_PER_LABEL_SET),
        before_kib,
        after_kib,
        peak_kib,
        applied,
    }
}
