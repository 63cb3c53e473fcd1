//! Cluster mode under etcd's faults, end to end: three `axoneme run` agents as three nodes,
//! each in its own network namespace joined to the others and to a three-member etcd by a
//! bridge. Node A hosts a real memcached behind its listener and a fleet-maintenance client of
//! its own; node B hosts another fleet-maintenance client and node C a fleet-monitoring one,
//! so A resolves B's and C's client addresses through the endpoints B and C publish. A load of
//! allowed and denied memcached requests runs from all three clients throughout, while each
//! fault of the cluster design is injected in turn: one etcd member stopped, two stopped
//! (quorum lost), node A's link cut, etcd's data wiped, node A killed with SIGKILL and
//! restarted. memcached itself is the oracle: no key a denied `set` named is ever in it, and
//! every stored key holds what the allowed `set` wrote.
//!
//! The README's cluster example (`examples/cluster/run.sh --check`) runs here too, with the
//! binary under test: every fault in turn, its checks, and nothing of it left afterwards.
//!
//! Needs root (namespaces, veth pairs, a bridge), `ip`, `memcached`, `etcd` and `etcdctl`.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axoneme_testkit::etcd::{Etcd, EtcdOptions};
use common::{agent_cli, temp_dir};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

/// How long a node's keys outlive it in etcd.
const LEASE_TTL: &str = "5s";
/// memcached's port on node A (on its loopback), and the agent's listener port.
const MEMCACHED_PORT: u16 = 11211;
const LISTENER_PORT: u16 = 11212;
/// The nodes, by index into the network's namespaces.
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// The last octet of each node's address, and of the client node A hosts besides memcached.
const NODE_HOST: [u8; 3] = [11, 12, 13];
const A_CLIENT_HOST: u8 = 21;

/// Runs `program` with `args`, which must succeed.
fn run(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Three network namespaces, each with a veth pair whose other end is a port of one bridge in
/// the host's namespace; the bridge has the subnet's `.1`. Names and the subnet are unique to
/// this process; everything is deleted on drop.
struct Network {
    prefix: [u8; 3],
    bridge: Option<String>,
    namespaces: Vec<String>,
    /// The host-side end of each namespace's veth pair: down cuts that node off.
    links: Vec<String>,
}

impl Network {
    fn create() -> Network {
        let pid = std::process::id();
        let routes = String::from_utf8(
            Command::new("ip")
                .args(["-4", "route", "show", "table", "all"])
                .output()
                .expect("ip (iproute2) must be installed")
                .stdout,
        )
        .unwrap();
        // A /24 under 10.200.0.0/13 no route on this host uses yet.
        let prefix = (0..2048u32)
            .map(|i| {
                let n = (pid + i) % 2048;
                [10, 200 + (n / 256) as u8, (n % 256) as u8]
            })
            .find(|p| !routes.contains(&format!("{}.{}.{}.", p[0], p[1], p[2])))
            .expect("a free 10.200.0.0/13 subnet");
        let mut network = Network {
            prefix,
            bridge: None,
            namespaces: Vec::new(),
            links: Vec::new(),
        };
        let bridge = format!("axb{pid}");
        run("ip", &["link", "add", &bridge, "type", "bridge"]);
        network.bridge = Some(bridge.clone());
        let cidr = format!("{}/24", network.host_ip());
        run("ip", &["addr", "add", &cidr, "dev", &bridge]);
        run("ip", &["link", "set", &bridge, "up"]);
        for (node, host) in NODE_HOST.iter().enumerate() {
            let namespace = format!("axoneme-{pid}-{}", NODES[node]);
            run("ip", &["netns", "add", &namespace]);
            network.namespaces.push(namespace.clone());
            let link = format!("axv{pid}{node}");
            run(
                "ip",
                &[
                    "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns",
                    &namespace,
                ],
            );
            network.links.push(link.clone());
            run("ip", &["link", "set", &link, "master", &bridge, "up"]);
            let mut addresses = vec![network.ip(*host)];
            if node == A {
                addresses.push(network.ip(A_CLIENT_HOST));
            }
            for address in addresses {
                let cidr = format!("{address}/24");
                run(
                    "ip",
                    &["-n", &namespace, "addr", "add", &cidr, "dev", "eth0"],
                );
            }
            run("ip", &["-n", &namespace, "link", "set", "eth0", "up"]);
            run("ip", &["-n", &namespace, "link", "set", "lo", "up"]);
        }
        network
    }

    fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.prefix[0], self.prefix[1], self.prefix[2], host)
    }

    /// The bridge's address in the host's namespace, where etcd listens.
    fn host_ip(&self) -> Ipv4Addr {
        self.ip(1)
    }

    fn node_ip(&self, node: usize) -> Ipv4Addr {
        self.ip(NODE_HOST[node])
    }

    /// Sets `node`'s link to the bridge up or down.
    fn set_link(&self, node: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        run("ip", &["link", "set", &self.links[node], state]);
    }

    /// A command running `program` inside `node`'s namespace.
    fn command_in(&self, node: usize, program: &str) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespaces[node]])
            .arg(program);
        command
    }

    /// A TCP socket of `node`'s namespace: a socket belongs to the namespace of the thread
    /// that made it, so a thread enters the namespace to make it.
    #[allow(unsafe_code)] // setns has no safe wrapper in the standard library
    fn socket_in(&self, node: usize) -> std::io::Result<TcpSocket> {
        let path = format!("/var/run/netns/{}", self.namespaces[node]);
        std::thread::spawn(move || {
            let namespace = File::open(path)?;
            // SAFETY: the descriptor is an open network namespace file for the whole call;
            // setns only changes the namespace of this thread, which ends here.
            if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            TcpSocket::new_v4()
        })
        .join()
        .unwrap()
    }

    /// A connection from `source` in `node`'s namespace to `to`, within `timeout`.
    async fn connect(
        &self,
        node: usize,
        source: Ipv4Addr,
        to: SocketAddrV4,
        timeout: Duration,
    ) -> std::io::Result<TcpStream> {
        let socket = self.socket_in(node)?;
        socket.bind(SocketAddr::new(source.into(), 0))?;
        tokio::time::timeout(timeout, socket.connect(to.into()))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth end, and so the pair.
        for namespace in &self.namespaces {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .status();
        }
        if let Some(bridge) = &self.bridge {
            let _ = Command::new("ip").args(["link", "del", bridge]).status();
        }
    }
}

/// A process killed (SIGKILL) when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One node's agent: `axoneme run` inside the node's namespace, with its directory holding its
/// configuration, API socket, access log and log (appended to across restarts).
struct Agent {
    node: usize,
    dir: PathBuf,
    process: Option<Process>,
}

impl Agent {
    fn new(network: &Network, etcd: &Etcd, node: usize) -> Agent {
        let dir = temp_dir(&format!("faults-{}", NODES[node]));
        std::fs::write(dir.join("config.yaml"), node_config(network, etcd, node)).unwrap();
        Agent {
            node,
            dir,
            process: None,
        }
    }

    fn spawn(&mut self, network: &Network) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .unwrap();
        let child = network
            .command_in(self.node, env!("CARGO_BIN_EXE_axoneme"))
            .args(["run", "--config", "config.yaml"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.process = Some(Process(child));
    }

    /// Waits (up to 20 s) until the agent answers `status`.
    async fn wait_started(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.dir.join("api.sock").exists() || !self.cli(&["status"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "{} did not start:\n{}",
                NODES[self.node],
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no lease revoked, no key deleted, nothing flushed.
    fn kill(&mut self) {
        let mut process = self.process.take().expect("the agent runs");
        process.0.kill().unwrap();
        process.0.wait().unwrap();
        let _ = std::fs::remove_file(self.dir.join("api.sock"));
    }

    fn cli(&self, args: &[&str]) -> Output {
        agent_cli(&self.dir, args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "{}: axoneme {args:?} failed: {}\nagent log:\n{}",
            NODES[self.node],
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

    /// Waits (up to `seconds`) until `cluster status` says `stale`; the status.
    async fn wait_stale(&self, stale: bool, seconds: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let status = self.json(&["cluster", "status"]);
            if status["stale"] == stale {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{}: stale is not {stale} after {seconds} s: {status}\n{}",
                NODES[self.node],
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The value of the metric `name` (`metrics list`).
    fn metric(&self, name: &str) -> f64 {
        let metrics = self.json(&["metrics", "list"]);
        let sample = metrics
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["metric"] == name)
            .unwrap_or_else(|| panic!("no {name}: {metrics}"));
        sample["value"].as_str().unwrap().parse().unwrap()
    }

    /// The names of the policies in force on this node.
    fn policies(&self) -> Vec<String> {
        self.json(&["policy", "get"])["policies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Writes `text` to `name` in the agent's directory; the path, for `policy import`.
    fn policy_file(&self, name: &str, text: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// The identity number of each label set in this node's access log, from verdicts logged
    /// after line `from`: sources and destinations alike.
    fn identities_logged(&self, from: usize) -> BTreeMap<String, u64> {
        let log = std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        let mut identities = BTreeMap::new();
        for line in log.lines().skip(from) {
            let entry: Value = serde_json::from_str(line).unwrap();
            for side in ["source", "destination"] {
                let labels = &entry[format!("{side}_labels")];
                let id = &entry[format!("{side}_security_id")];
                if let (Some(labels), Some(id)) = (labels.as_array(), id.as_u64()) {
                    let labels: Vec<&str> = labels.iter().filter_map(Value::as_str).collect();
                    identities.insert(labels.join(","), id);
                }
            }
        }
        identities
    }

    fn access_log_lines(&self) -> usize {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .count()
    }
}

/// Node `node`'s configuration: A hosts memcached (behind its listener) and a maintenance
/// client, B a maintenance client, C a monitoring client. No node has a policy file: the
/// cluster's policies are all there is.
fn node_config(network: &Network, etcd: &Etcd, node: usize) -> String {
    let ip = network.node_ip(node);
    let (endpoints, listeners) = match node {
        A => (
            format!(
                "  - {{name: memcached, ips: [\"{ip}\"], labels: {{app: memcached}}}}\n  \
                 - {{name: maintenance-a, ips: [\"{}\"], labels: {{function: fleet-maintenance}}}}\n",
                network.ip(A_CLIENT_HOST)
            ),
            format!(
                "  - {{name: memcached, listen: \"{ip}:{LISTENER_PORT}\", upstream: \"127.0.0.1:{MEMCACHED_PORT}\", endpoint: memcached, direction: ingress}}\n"
            ),
        ),
        B => (
            format!("  - {{name: maintenance-b, ips: [\"{ip}\"], labels: {{function: fleet-maintenance}}}}\n"),
            String::new(),
        ),
        _ => (
            format!("  - {{name: monitoring-c, ips: [\"{ip}\"], labels: {{function: fleet-monitoring}}}}\n"),
            String::new(),
        ),
    };
    let listeners = if listeners.is_empty() {
        " []\n".to_owned()
    } else {
        format!("\n{listeners}")
    };
    format!(
        "accessLog: {{path: access.log}}\napi: {{socket: api.sock}}\nendpoints:\n{endpoints}\
         policies: []\nlisteners:{listeners}cluster:\n  name: galaxy\n  node: {}\n  \
         kvstore: {{endpoints: {:?}}}\n  leaseTTL: {LEASE_TTL}\n",
        NODES[node],
        etcd.endpoints()
    )
}

/// The Rebels' fleet cache: maintenance may write and read `alliance/fleet/`, monitoring may
/// only read it; nobody else may reach memcached.
const SECURE_FLEET: &str = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: secure-fleet}
spec:
  endpointSelector: {matchLabels: {app: memcached}}
  ingress:
    - fromEndpoints: [{matchLabels: {function: fleet-maintenance}}]
      toPorts:
        - ports: [{port: "11211", protocol: TCP}]
          rules:
            l7proto: memcache
            l7: [{command: writeGroup, keyPrefix: alliance/fleet/}, {command: get, keyPrefix: alliance/fleet/}]
    - fromEndpoints: [{matchLabels: {function: fleet-monitoring}}]
      toPorts:
        - ports: [{port: "11211", protocol: TCP}]
          rules:
            l7proto: memcache
            l7: [{command: get, keyPrefix: alliance/fleet/}]
"#;

/// A policy named `probe-<step>` letting maintenance write keys under `probe/<step>/`: a
/// change that shows where it is enforced, and that no load request depends on.
fn probe_policy(step: &str) -> String {
    format!(
        r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: probe-{step}}}
spec:
  endpointSelector: {{matchLabels: {{app: memcached}}}}
  ingress:
    - fromEndpoints: [{{matchLabels: {{function: fleet-maintenance}}}}]
      toPorts:
        - ports: [{{port: "11211", protocol: TCP}}]
          rules: {{l7proto: memcache, l7: [{{command: writeGroup, keyPrefix: probe/{step}/}}]}}
"#
    )
}

const DENIED: &str = "CLIENT_ERROR access denied";

/// One client of the load: where it lives and what it may do.
#[derive(Clone, Copy, Debug)]
struct Client {
    name: &'static str,
    node: usize,
    host: u8,
    /// Maintenance (may `set` under `alliance/fleet/`, may not under `empire/`) or monitoring
    /// (may `get` under `alliance/fleet/`, may not `set` there).
    maintenance: bool,
}

const CLIENTS: [Client; 3] = [
    Client {
        name: "maintenance-a",
        node: A,
        host: A_CLIENT_HOST,
        maintenance: true,
    },
    Client {
        name: "maintenance-b",
        node: B,
        host: NODE_HOST[B],
        maintenance: true,
    },
    Client {
        name: "monitoring-c",
        node: C,
        host: NODE_HOST[C],
        maintenance: false,
    },
];

/// What one client saw during one phase.
#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    allowed_ok: u32,
    allowed_failed: u32,
    denied_refused: u32,
    denied_other: u32,
    unreachable: u32,
}

/// The load's shared state: the current phase and which clients must be served in it, the
/// tallies per phase and client, the violations, and the keys to check in memcached.
#[derive(Default)]
struct LoadState {
    phase: String,
    /// Clients whose node is reachable in this phase: an allowed request of theirs must
    /// succeed and a denied one must be answered `CLIENT_ERROR access denied`.
    served: Vec<&'static str>,
    tallies: BTreeMap<(String, &'static str), Tally>,
    violations: Vec<String>,
    /// Every key a denied `set` named, whatever its answer.
    denied_keys: Vec<String>,
    /// Every key an allowed `set` stored, and its value.
    stored: Vec<(String, String)>,
    /// Per client, whether its last allowed request succeeded.
    last_allowed_ok: BTreeMap<&'static str, bool>,
}

struct Load {
    state: Mutex<LoadState>,
    stop: AtomicBool,
}

impl Load {
    fn begin(&self, phase: &str, served: &[&'static str]) {
        let mut state = self.state.lock().unwrap();
        state.phase = phase.to_owned();
        state.served = served.to_vec();
        state.last_allowed_ok.clear();
    }

    /// Waits (up to `seconds`) until each of `clients` had an allowed request succeed since
    /// the phase began.
    async fn wait_served(&self, clients: &[&'static str], seconds: u64) {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let pending: Vec<&str> = {
                let state = self.state.lock().unwrap();
                clients
                    .iter()
                    .copied()
                    .filter(|c| state.last_allowed_ok.get(c) != Some(&true))
                    .collect()
            };
            if pending.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not served within {seconds} s: {pending:?}; {:?}",
                self.state.lock().unwrap().tallies
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fails the test on any violation so far, and unless each client served in `phase` had
    /// allowed requests succeed and denied ones refused in it.
    fn check(&self, phase: &str) {
        let state = self.state.lock().unwrap();
        assert!(
            state.violations.is_empty(),
            "violations (first in step {:?}):\n{}",
            phase,
            state.violations.join("\n")
        );
        for client in &state.served {
            let tally = state
                .tallies
                .get(&(phase.to_owned(), *client))
                .copied()
                .unwrap_or_default();
            assert!(
                tally.allowed_ok >= 2 && tally.denied_refused >= 2,
                "step {phase:?}: too little load from {client}: {tally:?}"
            );
        }
    }

    fn record(&self, client: &Client, allowed: bool, key: &str, value: &str, reply: Reply) {
        let mut state = self.state.lock().unwrap();
        let phase = state.phase.clone();
        let served = state.served.contains(&client.name);
        let tally = state
            .tallies
            .entry((phase.clone(), client.name))
            .or_default();
        let mut violation = None;
        match (&reply, allowed) {
            (Reply::Unreachable(_), _) => tally.unreachable += 1,
            (Reply::Line(line), true) if allowed_ok(client, line) => tally.allowed_ok += 1,
            (_, true) => {
                tally.allowed_failed += 1;
                if served {
                    violation = Some(format!(
                        "step {phase:?}: {}'s allowed request on {key} got {}",
                        client.name,
                        reply.describe()
                    ));
                }
            }
            (Reply::Line(line), false) if line == DENIED => tally.denied_refused += 1,
            (_, false) => {
                tally.denied_other += 1;
                if served || reply.is_line("STORED") {
                    violation = Some(format!(
                        "step {phase:?}: {}'s denied set of {key} got {}",
                        client.name,
                        reply.describe()
                    ));
                }
            }
        }
        if let Some(violation) = violation {
            state.violations.push(violation);
        }
        if allowed {
            let ok = matches!(&reply, Reply::Line(line) if allowed_ok(client, line));
            state.last_allowed_ok.insert(client.name, ok);
            if ok && client.maintenance {
                state.stored.push((key.to_owned(), value.to_owned()));
            }
        } else if !matches!(reply, Reply::Unreachable(_)) {
            state.denied_keys.push(key.to_owned());
        }
    }
}

/// What a request got: the reply's first line (empty when the connection closed first), or no
/// connection, or no answer in time.
enum Reply {
    Line(String),
    Unreachable(String),
    NoAnswer(String),
}

impl Reply {
    fn describe(&self) -> String {
        match self {
            Reply::Line(line) if line.is_empty() => "the connection closed".to_owned(),
            Reply::Line(line) => format!("{line:?}"),
            Reply::Unreachable(error) => format!("no connection: {error}"),
            Reply::NoAnswer(error) => format!("no answer: {error}"),
        }
    }

    fn is_line(&self, expected: &str) -> bool {
        matches!(self, Reply::Line(line) if line == expected)
    }
}

fn allowed_ok(client: &Client, line: &str) -> bool {
    if client.maintenance {
        line == "STORED"
    } else {
        line == "END" || line.starts_with("VALUE ")
    }
}

/// Reads one line without its `\r\n`; empty at end of stream.
async fn read_line(stream: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    Ok(line.trim_end_matches("\r\n").to_owned())
}

/// Sends `request` and reads the reply's first line; for a `get`, reads the rest of the reply
/// too (up to `END`).
async fn exchange(stream: &mut BufReader<TcpStream>, request: &str) -> std::io::Result<String> {
    stream.get_mut().write_all(request.as_bytes()).await?;
    let first = read_line(stream).await?;
    if first.starts_with("VALUE ") {
        loop {
            let line = read_line(stream).await?;
            if line == "END" || line.is_empty() {
                break;
            }
        }
    }
    Ok(first)
}

/// One client's loop: alternately an allowed and a denied request through node A's listener,
/// reconnecting whenever the connection fails, until the load stops.
async fn client_loop(load: Arc<Load>, network: Arc<Network>, client: Client) {
    let proxy = SocketAddrV4::new(network.node_ip(A), LISTENER_PORT);
    let source = network.ip(client.host);
    let mut connection: Option<BufReader<TcpStream>> = None;
    let mut sequence = 0u64;
    while !load.stop.load(Ordering::Relaxed) {
        sequence += 1;
        let allowed = sequence.is_multiple_of(2);
        let value = format!("v{sequence}");
        let key = match (client.maintenance, allowed) {
            (true, true) => format!("alliance/fleet/{}-{sequence}", client.name),
            (true, false) => format!("empire/{}-{sequence}", client.name),
            (false, true) => "alliance/fleet/maintenance-b-2".to_owned(),
            (false, false) => format!("alliance/fleet/{}-{sequence}", client.name),
        };
        let request = if !client.maintenance && allowed {
            format!("get {key}\r\n")
        } else {
            format!("set {key} 0 0 {}\r\n{value}\r\n", value.len())
        };
        if connection.is_none() {
            match network
                .connect(client.node, source, proxy, Duration::from_secs(1))
                .await
            {
                Ok(stream) => connection = Some(BufReader::new(stream)),
                Err(error) => {
                    load.record(
                        &client,
                        allowed,
                        &key,
                        &value,
                        Reply::Unreachable(error.to_string()),
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let stream = connection.as_mut().unwrap();
        let reply =
            match tokio::time::timeout(Duration::from_secs(2), exchange(stream, &request)).await {
                Ok(Ok(line)) => Reply::Line(line),
                Ok(Err(error)) => Reply::NoAnswer(error.to_string()),
                Err(_) => Reply::NoAnswer("no answer within 2 s".into()),
            };
        if !matches!(&reply, Reply::Line(line) if !line.is_empty()) {
            connection = None;
        }
        load.record(&client, allowed, &key, &value, reply);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A direct connection to memcached, inside node A's namespace: the oracle.
async fn memcached(network: &Network) -> BufReader<TcpStream> {
    let address = SocketAddrV4::new(Ipv4Addr::LOCALHOST, MEMCACHED_PORT);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match network
            .connect(A, Ipv4Addr::LOCALHOST, address, Duration::from_secs(1))
            .await
        {
            Ok(stream) => return BufReader::new(stream),
            Err(error) => assert!(
                Instant::now() < deadline,
                "memcached does not answer: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What memcached holds for `keys`, asked directly.
async fn memcached_values(
    stream: &mut BufReader<TcpStream>,
    keys: &[String],
) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    for batch in keys.chunks(50) {
        stream
            .get_mut()
            .write_all(format!("get {}\r\n", batch.join(" ")).as_bytes())
            .await
            .unwrap();
        loop {
            let line = read_line(stream).await.unwrap();
            if line == "END" {
                break;
            }
            let key = line
                .strip_prefix("VALUE ")
                .unwrap_or_else(|| panic!("memcached answered {line:?}"))
                .split(' ')
                .next()
                .unwrap()
                .to_owned();
            values.insert(key, read_line(stream).await.unwrap());
        }
    }
    values
}

/// The oracle: no key a denied `set` named is in memcached, and every stored key holds the
/// value its `set` wrote.
async fn check_memcached(network: &Network, load: &Load, step: &str) {
    let (denied, stored) = {
        let state = load.state.lock().unwrap();
        (state.denied_keys.clone(), state.stored.clone())
    };
    let mut oracle = memcached(network).await;
    let leaked = memcached_values(&mut oracle, &denied).await;
    assert!(
        leaked.is_empty(),
        "step {step:?}: denied sets reached memcached: {leaked:?}"
    );
    let keys: Vec<String> = stored.iter().map(|(k, _)| k.clone()).collect();
    let held = memcached_values(&mut oracle, &keys).await;
    for (key, value) in &stored {
        assert_eq!(
            held.get(key),
            Some(value),
            "step {step:?}: memcached lost {key}"
        );
    }
    assert!(!stored.is_empty() && !denied.is_empty());
}

/// Waits (up to 20 s) until etcd holds endpoints of `node`'s.
async fn wait_published(etcd: &Etcd, node: &str) {
    let prefix = format!("axoneme/galaxy/endpoints/{node}/");
    let deadline = Instant::now() + Duration::from_secs(20);
    while etcd
        .etcdctl(&["get", "--prefix", "--keys-only", &prefix])
        .trim()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "{node}'s endpoints not in etcd after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The whole setup; fields drop in order: agents, memcached, etcd, then the network.
struct Galaxy {
    agents: Vec<Agent>,
    _memcached: Process,
    etcd: Etcd,
    network: Arc<Network>,
}

impl Galaxy {
    /// A maintenance request `line` from node A's own client, and the reply's first line.
    async fn request_on_a(&self, line: &str) -> String {
        let proxy = SocketAddrV4::new(self.network.node_ip(A), LISTENER_PORT);
        let stream = self
            .network
            .connect(
                A,
                self.network.ip(A_CLIENT_HOST),
                proxy,
                Duration::from_secs(1),
            )
            .await
            .unwrap();
        let mut stream = BufReader::new(stream);
        tokio::time::timeout(Duration::from_secs(2), exchange(&mut stream, line))
            .await
            .expect("an answer within 2 s")
            .unwrap()
    }

    /// Imports `probe-<step>` through node `through`'s CLI; then every node lists it and node
    /// A enforces it (within `seconds`).
    async fn import_probe(&self, step: &str, through: usize, seconds: u64) {
        let set = format!("set probe/{step}/x 0 0 1\r\nx\r\n");
        assert_eq!(self.request_on_a(&set).await, DENIED, "probe-{step} is new");
        let agent = &self.agents[through];
        let file = agent.policy_file(&format!("probe-{step}.yaml"), &probe_policy(step));
        agent.ok(&["policy", "import", &file]);
        let name = format!("probe-{step}");
        let deadline = Instant::now() + Duration::from_secs(seconds);
        for agent in &self.agents {
            while !agent.policies().contains(&name) {
                assert!(
                    Instant::now() < deadline,
                    "{name} imported on {} not in force on {} after {seconds} s",
                    NODES[through],
                    NODES[agent.node]
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        assert_eq!(
            self.request_on_a(&set).await,
            "STORED",
            "{name} is enforced on node-a"
        );
    }

    async fn wait_all_stale(&self, stale: bool, seconds: u64) {
        for agent in &self.agents {
            agent.wait_stale(stale, seconds).await;
        }
    }

    /// The identity numbers node A logged from line `from` on.
    fn identities_on_a(&self, from: usize) -> BTreeMap<String, u64> {
        self.agents[A].identities_logged(from)
    }
}

/// Checks that node A's verdicts in `after` name the memcached endpoint and both kinds of
/// client, each label set with the number it had in `before` (when it was there).
fn assert_same_numbers(what: &str, after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) {
    for labels in [
        "function=fleet-maintenance",
        "function=fleet-monitoring",
        "app=memcached",
    ] {
        assert!(
            after.keys().any(|l| l.contains(labels)),
            "after {what}: {labels} not seen on node-a: {after:?}"
        );
    }
    for (labels, id) in after {
        if let Some(old) = before.get(labels) {
            assert_eq!(id, old, "{labels} changed its number over {what}");
        }
    }
}

static STEP: AtomicU32 = AtomicU32::new(0);

/// Begins the next step of the scenario, with the clients that must be served in it.
fn step(load: &Load, name: &str, served: &[&'static str]) -> String {
    let n = STEP.fetch_add(1, Ordering::Relaxed);
    let phase = format!("{n}: {name}");
    eprintln!("step {phase}");
    load.begin(&phase, served);
    phase
}

const ALL: [&str; 3] = ["maintenance-a", "maintenance-b", "monitoring-c"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_enforce_through_every_etcd_fault() {
    let started = Instant::now();
    let network = Arc::new(Network::create());
    let etcd = Etcd::start_with(EtcdOptions {
        members: 3,
        tls: false,
        host: network.host_ip().into(),
    });
    let mut memcached_command = network.command_in(A, "memcached");
    memcached_command
        .args([
            "-l",
            "127.0.0.1",
            "-p",
            &MEMCACHED_PORT.to_string(),
            "-U",
            "0",
        ])
        .args(["-u", "root"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let memcached_process = Process(
        memcached_command
            .spawn()
            .expect("memcached must be installed"),
    );
    let mut agents: Vec<Agent> = (0..3).map(|n| Agent::new(&network, &etcd, n)).collect();
    for agent in &mut agents {
        agent.spawn(&network);
    }
    for agent in &agents {
        agent.wait_started().await;
    }
    let mut galaxy = Galaxy {
        agents,
        _memcached: memcached_process,
        etcd,
        network: Arc::clone(&network),
    };
    drop(memcached(&network).await);

    // The fleet policy, imported through C, is in force on A before the load begins.
    let file = galaxy.agents[C].policy_file("secure-fleet.yaml", SECURE_FLEET);
    galaxy.agents[C].ok(&["policy", "import", &file]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !galaxy.agents[A]
        .policies()
        .contains(&"secure-fleet".to_owned())
    {
        assert!(Instant::now() < deadline, "secure-fleet not on node-a");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for agent in &galaxy.agents {
        let status = agent.json(&["cluster", "status"]);
        assert_eq!(status["stale"], false, "{status}");
        assert_eq!(status["members"].as_array().unwrap().len(), 3, "{status}");
    }

    let load = Arc::new(Load {
        state: Mutex::new(LoadState::default()),
        stop: AtomicBool::new(false),
    });
    let phase = step(&load, "remote identities resolved on node-a", &ALL);
    let clients: Vec<_> = CLIENTS
        .iter()
        .map(|client| {
            tokio::spawn(client_loop(
                Arc::clone(&load),
                Arc::clone(&network),
                *client,
            ))
        })
        .collect();
    load.wait_served(&ALL, 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    load.check(&phase);
    assert_same_numbers("the start", &galaxy.identities_on_a(0), &BTreeMap::new());

    // One member lost, the quorum kept: no effect.
    let phase = step(&load, "one etcd member stopped", &ALL);
    galaxy.etcd.stop(0);
    galaxy.import_probe("one-member-down", A, 10).await;
    galaxy.import_probe("one-member-down-c", C, 10).await;
    for agent in &galaxy.agents {
        assert_eq!(agent.json(&["cluster", "status"])["stale"], false);
    }
    load.check(&phase);
    galaxy.etcd.start(0);
    galaxy.etcd.wait_healthy(&galaxy.etcd.all());

    // Two members lost: no quorum. Every node keeps enforcing, says it is stale, and refuses
    // policy changes with a clear error.
    let phase = step(&load, "quorum lost", &ALL);
    galaxy.etcd.stop(1);
    galaxy.etcd.stop(2);
    galaxy.wait_all_stale(true, 30).await;
    for agent in &galaxy.agents {
        assert_eq!(agent.metric("axoneme_kvstore_stale"), 1.0);
        assert_eq!(agent.json(&["status"])["cluster"]["stale"], true);
    }
    let file = galaxy.agents[B].policy_file("probe-refused.yaml", &probe_policy("refused"));
    let refused = galaxy.agents[B].cli(&["policy", "import", &file]);
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && error.starts_with("axoneme: the kvstore has not answered since ")
            && error.contains("policy changes are refused until it is back"),
        "{error}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.check(&phase);
    check_memcached(&network, &load, &phase).await;

    let phase = step(&load, "quorum restored", &ALL);
    galaxy.etcd.start(1);
    galaxy.etcd.start(2);
    galaxy.etcd.wait_healthy(&galaxy.etcd.all());
    galaxy.wait_all_stale(false, 30).await;
    galaxy.import_probe("quorum-back", B, 10).await;
    load.check(&phase);

    // Node A cut off: it keeps enforcing for its own client, says it is stale, and applies
    // what changed meanwhile once its link is back.
    let phase = step(&load, "node-a cut off", &["maintenance-a"]);
    network.set_link(A, false);
    let status = galaxy.agents[A].wait_stale(true, 30).await;
    assert!(
        status["staleSince"].as_str().unwrap().ends_with('Z'),
        "{status}"
    );
    assert!(galaxy.agents[A].metric("axoneme_kvstore_stale_seconds") > 0.0);
    let file = galaxy.agents[C].policy_file("probe-cut.yaml", &probe_policy("while-cut"));
    galaxy.agents[C].ok(&["policy", "import", &file]);
    let set = "set probe/while-cut/x 0 0 1\r\nx\r\n";
    assert_eq!(
        galaxy.request_on_a(set).await,
        DENIED,
        "node-a cannot know it yet"
    );
    // Longer than the lease: node A's keys expire in etcd while it is away.
    tokio::time::sleep(Duration::from_secs(6)).await;
    load.check(&phase);

    let phase = step(&load, "node-a link back", &["maintenance-a"]);
    network.set_link(A, true);
    galaxy.agents[A].wait_stale(false, 30).await;
    wait_published(&galaxy.etcd, NODES[A]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while galaxy.request_on_a(set).await != "STORED" {
        assert!(
            Instant::now() < deadline,
            "probe-while-cut not enforced on node-a after its link came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    load.wait_served(&ALL, 10).await;
    load.check(&phase);
    let phase = step(&load, "converged after the cut", &ALL);
    galaxy.import_probe("after-cut", A, 10).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.check(&phase);
    check_memcached(&network, &load, &phase).await;

    // etcd loses its data: every node re-creates what it owns, enforcement never changes.
    let before_wipe = galaxy.agents[A].access_log_lines();
    let identities_before = galaxy.identities_on_a(0);
    let phase = step(&load, "etcd wiped", &ALL);
    galaxy.etcd.wipe();
    galaxy.wait_all_stale(false, 30).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let keys = galaxy
            .etcd
            .etcdctl(&["get", "--prefix", "--keys-only", "axoneme/galaxy/"]);
        let recreated = NODES
            .iter()
            .all(|node| keys.contains(&format!("axoneme/galaxy/endpoints/{node}/")))
            && keys.contains("axoneme/galaxy/policies/secure-fleet");
        if recreated {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "etcd not repopulated after the wipe:\n{keys}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ids = galaxy
        .etcd
        .etcdctl(&["get", "--prefix", "axoneme/galaxy/identities/id/"]);
    for (labels, id) in &identities_before {
        let wanted = [
            "function=fleet-maintenance",
            "function=fleet-monitoring",
            "app=memcached",
        ];
        if wanted.iter().any(|w| labels.contains(w)) {
            assert!(
                ids.contains(&format!("axoneme/galaxy/identities/id/{id}\n")),
                "identity {id} ({labels}) not re-created after the wipe:\n{ids}"
            );
        }
    }
    galaxy.import_probe("after-wipe", B, 10).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.check(&phase);
    assert_same_numbers(
        "the wipe",
        &galaxy.identities_on_a(before_wipe),
        &identities_before,
    );

    // Node A killed without a word and started again: its identities keep their numbers.
    let before_kill = galaxy.agents[A].access_log_lines();
    let identities_before = galaxy.identities_on_a(0);
    let phase = step(&load, "node-a killed", &[]);
    galaxy.agents[A].kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    galaxy.agents[A].spawn(&network);
    galaxy.agents[A].wait_started().await;
    load.wait_served(&ALL, 20).await;
    load.check(&phase);
    let phase = step(&load, "node-a restarted", &ALL);
    load.wait_served(&ALL, 10).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.check(&phase);
    assert_same_numbers(
        "the restart",
        &galaxy.identities_on_a(before_kill),
        &identities_before,
    );

    load.stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    check_memcached(&network, &load, "the end").await;
    let tallies = load.state.lock().unwrap().tallies.clone();
    for ((phase, client), tally) in &tallies {
        eprintln!("{phase:<40} {client:<14} {tally:?}");
    }
    eprintln!("took {:?}", started.elapsed());
    drop(galaxy);
}

#[test]
fn the_cluster_example_checks_every_fault_and_leaves_nothing_behind() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let routes = String::from_utf8(
        Command::new("ip")
            .args(["-4", "route", "show", "table", "all"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    // A /24 under 10.192.0.0/13, apart from the other test's.
    let pid = std::process::id();
    let subnet = (0..2048u32)
        .map(|i| {
            let n = (pid + i) % 2048;
            format!("10.{}.{}", 192 + n / 256, n % 256)
        })
        .find(|s| !routes.contains(&format!("{s}.")))
        .expect("a free 10.192.0.0/13 subnet");
    let child = Command::new("bash")
        .arg(format!("{root}/examples/cluster/run.sh"))
        .arg("--check")
        .env("AXONEME_BIN", env!("CARGO_BIN_EXE_axoneme"))
        .env("AXONEME_CLUSTER_SUBNET", &subnet)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the example");
    let script = child.id();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the example failed: {stdout}\n{stderr}"
    );
    assert!(stdout.ends_with("all checks passed\n"), "{stdout}");
    for shown in [
        "set empire/deathstar stolen                      -> CLIENT_ERROR access denied",
        "get alliance/fleet/x-wing                        -> connection closed by the proxy",
        "node-a: stale=True",
        "axoneme: the kvstore has not answered since ",
        "axoneme/galaxy/policies/secure-fleet",
    ] {
        assert!(stdout.contains(shown), "{shown:?} not in:\n{stdout}");
    }
    let namespaces = String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        !namespaces.contains(&format!("axoneme-cluster-{script}-")),
        "{namespaces}"
    );
    let links = Command::new("ip")
        .args(["link", "show", &format!("axc{script}")])
        .output()
        .unwrap();
    assert!(!links.status.success(), "the bridge is left behind");
}
