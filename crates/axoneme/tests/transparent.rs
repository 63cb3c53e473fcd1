//! Transparent redirection across network namespaces: two client hosts (luke and vader), a
//! server host running a real memcached (cache), and a node routing between them. Clients dial
//! memcached at its real address; the rules the agent derives from policy steer them through
//! the proxy, per node (TPROXY or REDIRECT, in the node namespace) or as an egress sidecar
//! (REDIRECT, in a client's namespace), over IPv4 and IPv6.
//!
//! Needs root, `ip`, `nft` and `memcached` (scripts/test.sh installs them). Where the kernel
//! refuses network namespaces, TPROXY or NAT rules, a test says so loudly and passes without
//! checking.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const AXONEME: &str = env!("CARGO_BIN_EXE_axoneme");

const LUKE: [&str; 2] = ["10.71.1.2", "fd71:1::2"];
const VADER: [&str; 2] = ["10.71.2.2", "fd71:2::2"];
const CACHE: [&str; 2] = ["10.71.3.2", "fd71:3::2"];

/// Says loudly why a test checks nothing.
fn skip(test: &str, why: &str) {
    eprintln!();
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!("!!! SKIPPED {test}: {why}");
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!();
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn must(program: &str, args: &[&str]) -> String {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The namespaces of one test, the processes running in them, and its files; all removed on
/// drop, also when the test fails.
struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    agent: Option<Child>,
    dir: PathBuf,
}

impl Lab {
    /// Builds the hosts `c1` (luke), `c2` (vader) and `srv` (cache), each linked to `node` by a
    /// veth pair with IPv4 and IPv6 addresses, `node` forwarding between them. `None` when the
    /// kernel refuses network namespaces.
    fn new(tag: &str) -> Result<Lab, String> {
        let prefix = format!("axt{}{tag}", std::process::id());
        let dir = std::env::temp_dir().join(format!("{prefix}-files"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut lab = Lab {
            prefix,
            namespaces: Vec::new(),
            children: Vec::new(),
            agent: None,
            dir,
        };
        for host in ["node", "c1", "c2", "srv"] {
            let name = lab.ns(host);
            let output = run("ip", &["netns", "add", &name]);
            if !output.status.success() {
                return Err(format!(
                    "`ip netns add` failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
            lab.namespaces.push(name);
            lab.exec(host, &["ip", "link", "set", "lo", "up"]);
        }
        lab.exec("node", &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        lab.exec("node", &["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        for (index, host) in ["c1", "c2", "srv"].iter().enumerate() {
            let net = index + 1;
            let peer = lab.ns(host);
            lab.exec(
                "node",
                &[
                    "ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns",
                    &peer,
                ],
            );
            for (ns, dev, v4, v6) in [
                (
                    "node",
                    *host,
                    format!("10.71.{net}.1/24"),
                    format!("fd71:{net}::1/64"),
                ),
                (
                    *host,
                    "eth0",
                    format!("10.71.{net}.2/24"),
                    format!("fd71:{net}::2/64"),
                ),
            ] {
                lab.exec(ns, &["ip", "addr", "add", &v4, "dev", dev]);
                lab.exec(ns, &["ip", "-6", "addr", "add", &v6, "dev", dev, "nodad"]);
                lab.exec(ns, &["ip", "link", "set", dev, "up"]);
            }
            lab.exec(
                host,
                &[
                    "ip",
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("10.71.{net}.1"),
                ],
            );
            lab.exec(
                host,
                &[
                    "ip",
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("fd71:{net}::1"),
                ],
            );
        }
        Ok(lab)
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// Runs a command in a host's namespace; it must succeed. Its output.
    fn exec(&self, host: &str, args: &[&str]) -> String {
        let ns = self.ns(host);
        let mut full = vec!["netns", "exec", &ns];
        full.extend_from_slice(args);
        must("ip", &full)
    }

    /// Runs a command in a host's namespace, whatever its outcome.
    fn try_exec(&self, host: &str, args: &[&str]) -> Output {
        let ns = self.ns(host);
        let mut full = vec!["netns", "exec", &ns];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Starts a long-running process in a host's namespace, its output going to `log`.
    fn spawn(&self, host: &str, args: &[&str], log: &str) -> Child {
        let log = File::create(self.dir.join(log)).unwrap();
        Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Starts memcached on the server host and waits until it answers.
    fn start_memcached(&mut self) {
        assert!(
            Command::new("memcached").arg("-V").output().is_ok(),
            "memcached is required (scripts/test.sh installs it)"
        );
        let memcached = self.spawn(
            "srv",
            &["memcached", "-u", "root", "-p", "11211", "-U", "0"],
            "memcached.log",
        );
        self.children.push(memcached);
        wait_for("memcached to answer", || {
            self.in_host("node", || {
                connect(&format!("{}:11211", CACHE[0]))
                    .is_some_and(|mut s| exchange(&mut s, "version\r\n").starts_with("VERSION"))
            })
        });
    }

    /// Starts the agent in a host's namespace with `config`. `Err` with its log when it exits
    /// before its redirect rules are installed.
    fn start_agent(&mut self, host: &str, config: &str) -> Result<(), String> {
        std::fs::write(self.dir.join("config.yaml"), config).unwrap();
        let config_path = self.dir.join("config.yaml");
        let agent = self.spawn(
            host,
            &[AXONEME, "run", "--config", config_path.to_str().unwrap()],
            "agent.log",
        );
        self.agent = Some(agent);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let exited = self.agent.as_mut().unwrap().try_wait().unwrap();
            if exited.is_none() && self.table(host).is_some() && self.api().exists() {
                return Ok(());
            }
            if exited.is_some() || Instant::now() > deadline {
                return Err(self.agent_log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    fn api(&self) -> PathBuf {
        self.dir.join("api.sock")
    }

    /// Runs the CLI against the agent; its output, or its error.
    fn cli(&self, args: &[&str]) -> Result<String, String> {
        let api = self.api();
        let mut full = vec!["--api", api.to_str().unwrap()];
        full.extend_from_slice(args);
        let output = run(AXONEME, &full);
        match output.status.success() {
            true => Ok(String::from_utf8_lossy(&output.stdout).into_owned()),
            false => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
        }
    }

    /// The table `inet axoneme` of a host, as `nft` lists it; `None` when it is absent.
    fn table(&self, host: &str) -> Option<String> {
        let output = self.try_exec(host, &["nft", "list", "table", "inet", "axoneme"]);
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Waits until the host's table satisfies `check`.
    fn wait_table(&self, host: &str, what: &str, check: impl Fn(Option<&str>) -> bool) {
        wait_for(what, || check(self.table(host).as_deref()));
    }

    /// Stops the agent with SIGTERM and waits for it to exit; its exit status must be success.
    fn stop_agent(&mut self) {
        let mut agent = self.agent.take().expect("the agent runs");
        must("kill", &["-TERM", &agent.id().to_string()]);
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = agent.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the agent did not stop");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "agent exit: {status}\n{}",
            self.agent_log()
        );
    }

    /// Runs `work` on a thread inside a host's network namespace: its sockets live there.
    #[allow(unsafe_code)] // setns has no safe wrapper in the standard library
    fn in_host<T: Send>(&self, host: &str, work: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.ns(host));
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let ns = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                    // SAFETY: the descriptor is an open network namespace file for the whole
                    // call; setns only changes the namespace of this thread, which ends with
                    // the scope.
                    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                    work()
                })
                .join()
                .unwrap()
        })
    }

    /// One connection from a host to `to`, each request followed by its reply.
    fn session(&self, host: &str, to: &str, requests: &[&str]) -> Vec<String> {
        self.in_host(host, || {
            let mut stream = connect(to).unwrap_or_else(|| panic!("{host} cannot connect to {to}"));
            requests.iter().map(|r| exchange(&mut stream, r)).collect()
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in self.children.iter_mut().chain(&mut self.agent) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}", self.agent_log());
        }
        for ns in &self.namespaces {
            let _ = run("ip", &["netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn connect(to: &str) -> Option<TcpStream> {
    let addr: SocketAddr = to.parse().unwrap();
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    Some(stream)
}

/// Sends a request and reads its whole reply: up to `END` after `VALUE` or `STAT` lines,
/// otherwise one line; empty when the connection was closed.
fn exchange(stream: &mut TcpStream, request: &str) -> String {
    if stream.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&reply);
        let multi = text.starts_with("VALUE") || text.starts_with("STAT");
        if (multi && text.ends_with("END\r\n")) || (!multi && text.ends_with("\r\n")) {
            return text.into_owned();
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return text.into_owned(),
            Ok(n) => reply.extend_from_slice(&buf[..n]),
        }
    }
}

fn addr(ip: &str, port: u16) -> String {
    SocketAddr::new(ip.parse().unwrap(), port).to_string()
}

fn endpoints() -> String {
    let list = |ips: [&str; 2]| format!("[\"{}\", \"{}\"]", ips[0], ips[1]);
    format!(
        "endpoints:\n  - {{name: cache, ips: {}, labels: {{app: cache}}}}\n  - {{name: luke, ips: {}, labels: {{app: luke}}}}\n  - {{name: vader, ips: {}, labels: {{app: vader}}}}\n",
        list(CACHE),
        list(LUKE),
        list(VADER)
    )
}

const HEAD: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n";

/// cache's ingress on 11211: luke may set, get and read stats; vader may only get.
fn ingress_policy() -> String {
    format!(
        "{HEAD}metadata: {{name: cache-ingress}}\nspec:\n  endpointSelector: {{matchLabels: {{app: cache}}}}\n  ingress:\n\
         \x20   - fromEndpoints: [{{matchLabels: {{app: luke}}}}]\n\
         \x20     toPorts: [{{ports: [{{port: \"11211\"}}], rules: {{l7proto: memcache, l7: [{{command: set, keyPrefix: alliance/}}, {{command: get, keyPrefix: alliance/}}, {{command: stats}}]}}}}]\n\
         \x20   - fromEndpoints: [{{matchLabels: {{app: vader}}}}]\n\
         \x20     toPorts: [{{ports: [{{port: \"11211\"}}], rules: {{l7proto: memcache, l7: [{{command: get, keyPrefix: alliance/}}]}}}}]\n"
    )
}

const DENIED: &str = "CLIENT_ERROR access denied\r\n";

#[test]
fn per_node_tproxy_follows_policy_and_keeps_client_addresses() {
    let name = "per_node_tproxy_follows_policy_and_keeps_client_addresses";
    let mut lab = match Lab::new("tp") {
        Ok(lab) => lab,
        Err(why) => {
            return skip(
                name,
                &format!("the kernel refuses network namespaces: {why}"),
            )
        }
    };
    lab.start_memcached();
    std::fs::write(lab.dir.join("policy.yaml"), ingress_policy()).unwrap();
    let config = format!(
        "api: {{socket: api.sock}}\ndrainTimeout: 1\nredirect: {{manage: true}}\n{}policies: [policy.yaml]\n\
         listeners:\n  - {{name: cache-in, listen: \"[::]:15001\", mode: tproxy, direction: ingress, keepClientAddress: true}}\n",
        endpoints()
    );
    if let Err(log) = lab.start_agent("node", &config) {
        if log.contains("tproxy") && log.contains("nft") {
            return skip(name, &format!("the kernel refuses TPROXY rules:\n{log}"));
        }
        panic!("the agent did not start:\n{log}");
    }
    let table = lab.table("node").unwrap();
    assert!(
        table.contains("ip daddr 10.71.3.2 tcp dport 11211"),
        "{table}"
    );
    assert!(
        table.contains("ip6 daddr fd71:3::2 tcp dport 11211"),
        "{table}"
    );
    assert!(table.contains("tproxy"), "{table}");

    for family in 0..2 {
        let memcached = addr(CACHE[family], 11211);
        // No proxy address anywhere: the clients dial memcached itself.
        let luke = lab.session(
            "c1",
            &memcached,
            &[
                "set alliance/plans 0 0 5\r\nr2-d2\r\n",
                "get alliance/plans\r\n",
                "stats conns\r\n",
            ],
        );
        assert_eq!(luke[0], "STORED\r\n");
        assert_eq!(luke[1], "VALUE alliance/plans 0 5\r\nr2-d2\r\nEND\r\n");
        // memcached sees luke's own address, not the node's.
        assert!(luke[2].contains(LUKE[family]), "{}", luke[2]);
        let node = ["10.71.3.1", "fd71:3::1"][family];
        assert!(!luke[2].contains(node), "{}", luke[2]);

        let vader = lab.session(
            "c2",
            &memcached,
            &[
                "set alliance/plans 0 0 4\r\ndark\r\n",
                "get alliance/plans\r\n",
                "stats conns\r\n",
            ],
        );
        assert_eq!(vader[0], DENIED);
        assert_eq!(vader[1], "VALUE alliance/plans 0 5\r\nr2-d2\r\nEND\r\n");
        assert_eq!(vader[2], DENIED);
    }

    // Policy changes move the rules: a new port, a new endpoint address, and back.
    let extra = lab.dir.join("extra.yaml");
    std::fs::write(
        &extra,
        format!(
            "{HEAD}metadata: {{name: cache-extra}}\nspec:\n  endpointSelector: {{matchLabels: {{app: cache}}}}\n\
             \x20 ingress: [{{toPorts: [{{ports: [{{port: \"11311\"}}], rules: {{l7proto: memcache}}}}]}}]\n"
        ),
    )
    .unwrap();
    lab.cli(&["policy", "import", extra.to_str().unwrap()])
        .unwrap();
    lab.wait_table("node", "the rule for port 11311", |t| {
        t.is_some_and(|t| t.contains("tcp dport 11311"))
    });
    lab.cli(&[
        "endpoint",
        "add",
        "cache2",
        "--ip",
        "10.71.3.3",
        "--label",
        "app=cache",
    ])
    .unwrap();
    lab.wait_table("node", "the rule for the new endpoint", |t| {
        t.is_some_and(|t| t.contains("10.71.3.3"))
    });
    lab.cli(&["policy", "delete", "cache-extra"]).unwrap();
    lab.cli(&["endpoint", "delete", "cache2"]).unwrap();
    lab.wait_table("node", "the rules to go back", |t| {
        t.is_some_and(|t| !t.contains("11311") && !t.contains("10.71.3.3"))
    });

    // The CLI shows, removes and reinstalls the rules.
    let list = lab.cli(&["-o", "json", "redirect", "list"]).unwrap();
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["managed"], true);
    assert_eq!(list["redirects"][0]["endpoint"], "cache");
    assert_eq!(list["redirects"][0]["port"], 11211);
    assert_eq!(list["redirects"][0]["listener"]["name"], "cache-in");
    lab.cli(&["redirect", "flush"]).unwrap();
    assert_eq!(lab.table("node"), None);
    assert!(lab
        .exec("node", &["ip", "rule", "list", "fwmark", "0x4159"])
        .trim()
        .is_empty());
    lab.cli(&["redirect", "apply"]).unwrap();
    assert!(lab.table("node").is_some_and(|t| t.contains("dport 11211")));
    let luke = lab.session("c1", &addr(CACHE[0], 11211), &["get alliance/plans\r\n"]);
    assert_eq!(luke[0], "VALUE alliance/plans 0 5\r\nr2-d2\r\nEND\r\n");

    // Shutdown removes the rules and the TPROXY route.
    lab.stop_agent();
    assert_eq!(lab.table("node"), None);
    for family in ["-4", "-6"] {
        assert!(lab
            .exec("node", &["ip", family, "rule", "list", "fwmark", "0x4159"])
            .trim()
            .is_empty());
    }
    // And traffic flows directly again, unchecked.
    let vader = lab.session(
        "c2",
        &addr(CACHE[0], 11211),
        &["set alliance/plans 0 0 4\r\ndark\r\n"],
    );
    assert_eq!(vader[0], "STORED\r\n");
}

#[test]
fn egress_sidecar_with_redirect_enforces_its_endpoints_policy() {
    let name = "egress_sidecar_with_redirect_enforces_its_endpoints_policy";
    let mut lab = match Lab::new("sc") {
        Ok(lab) => lab,
        Err(why) => {
            return skip(
                name,
                &format!("the kernel refuses network namespaces: {why}"),
            )
        }
    };
    lab.start_memcached();
    // vader has no sidecar: it writes directly.
    for key in ["alliance/base", "empire/base"] {
        let vader = lab.session(
            "c2",
            &addr(CACHE[0], 11211),
            &[&format!("set {key} 0 0 4\r\nhoth\r\n")],
        );
        assert_eq!(vader[0], "STORED\r\n");
    }
    std::fs::write(
        lab.dir.join("policy.yaml"),
        format!(
            "{HEAD}metadata: {{name: luke-egress}}\nspec:\n  endpointSelector: {{matchLabels: {{app: luke}}}}\n  egress:\n\
             \x20   - toEndpoints: [{{matchLabels: {{app: cache}}}}]\n\
             \x20     toPorts: [{{ports: [{{port: \"11211\"}}], rules: {{l7proto: memcache, l7: [{{command: get, keyPrefix: alliance/}}]}}}}]\n"
        ),
    )
    .unwrap();
    let config = format!(
        "api: {{socket: api.sock}}\ndrainTimeout: 1\naccessLog: {{path: {}}}\nredirect: {{manage: true}}\n{}policies: [policy.yaml]\n\
         listeners:\n  - {{name: luke-out, listen: \"[::]:15002\", mode: redirect, endpoint: luke, direction: egress}}\n",
        lab.dir.join("access.log").display(),
        endpoints()
    );
    if let Err(log) = lab.start_agent("c1", &config) {
        panic!("the agent did not start:\n{log}");
    }
    let table = lab.table("c1").unwrap();
    assert!(
        table.contains("ip saddr 10.71.1.2 tcp dport 11211"),
        "{table}"
    );
    assert!(table.contains("redirect to :15002"), "{table}");

    for ip in CACHE {
        let luke = lab.session(
            "c1",
            &addr(ip, 11211),
            &[
                "get alliance/base\r\n",
                "get empire/base\r\n",
                "set alliance/base 0 0 4\r\nfarm\r\n",
            ],
        );
        assert_eq!(luke[0], "VALUE alliance/base 0 4\r\nhoth\r\nEND\r\n");
        assert_eq!(luke[1], DENIED);
        assert_eq!(luke[2], DENIED);
    }
    let denied = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(lab.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|e: &serde_json::Value| e["entry_type"] == "Denied")
            .collect()
    };
    wait_for("four denials in the access log", || denied().len() == 4);
    let denied = denied();
    assert!(denied[0]["source_address"]
        .as_str()
        .unwrap()
        .starts_with("10.71.1.2:"));
    assert_eq!(denied[0]["destination_address"], "10.71.3.2:11211");
    assert_eq!(denied[2]["destination_address"], "[fd71:3::2]:11211");

    lab.stop_agent();
    assert_eq!(lab.table("c1"), None);
    let luke = lab.session("c1", &addr(CACHE[0], 11211), &["get empire/base\r\n"]);
    assert_eq!(luke[0], "VALUE empire/base 0 4\r\nhoth\r\nEND\r\n");
}

#[test]
fn per_node_redirect_follows_policy_with_original_destinations() {
    let name = "per_node_redirect_follows_policy_with_original_destinations";
    let mut lab = match Lab::new("rd") {
        Ok(lab) => lab,
        Err(why) => {
            return skip(
                name,
                &format!("the kernel refuses network namespaces: {why}"),
            )
        }
    };
    lab.start_memcached();
    std::fs::write(lab.dir.join("policy.yaml"), ingress_policy()).unwrap();
    let access_log = lab.dir.join("access.log");
    let config = format!(
        "api: {{socket: api.sock}}\ndrainTimeout: 1\naccessLog: {{path: {}}}\nredirect: {{manage: true}}\n{}policies: [policy.yaml]\n\
         listeners:\n  - {{name: cache-in, listen: \"[::]:15003\", mode: redirect, direction: ingress}}\n",
        access_log.display(),
        endpoints()
    );
    if let Err(log) = lab.start_agent("node", &config) {
        // nft reports what the kernel refuses as "Could not process rule"; other failures
        // (a bad ruleset, a missing listener) are bugs.
        if log.contains("nft -f") && log.contains("Could not process rule") {
            return skip(name, &format!("the kernel refuses NAT rules:\n{log}"));
        }
        panic!("the agent did not start:\n{log}");
    }
    let table = lab.table("node").unwrap();
    assert!(
        table.contains("ip daddr 10.71.3.2 tcp dport 11211"),
        "{table}"
    );
    assert!(
        table.contains("ip6 daddr fd71:3::2 tcp dport 11211"),
        "{table}"
    );
    assert!(table.contains("redirect to :15003"), "{table}");
    assert!(!table.contains("tproxy ip"), "{table}");
    let list = lab.cli(&["-o", "json", "redirect", "list"]).unwrap();
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["redirects"][0]["listener"]["name"], "cache-in");
    assert_eq!(list["redirects"][0]["listener"]["mode"], "redirect");

    for family in 0..2 {
        let memcached = addr(CACHE[family], 11211);
        // The clients dial memcached itself; the node's prerouting hands them to the proxy.
        let luke = lab.session(
            "c1",
            &memcached,
            &[
                "set alliance/plans 0 0 5\r\nr2-d2\r\n",
                "get alliance/plans\r\n",
                "stats conns\r\n",
            ],
        );
        assert_eq!(luke[0], "STORED\r\n");
        assert_eq!(luke[1], "VALUE alliance/plans 0 5\r\nr2-d2\r\nEND\r\n");
        // memcached sees the proxy on the node, not luke: the connection went through it.
        let node = ["10.71.3.1", "fd71:3::1"][family];
        assert!(luke[2].contains(node), "{}", luke[2]);
        assert!(!luke[2].contains(LUKE[family]), "{}", luke[2]);

        let vader = lab.session(
            "c2",
            &memcached,
            &[
                "set alliance/plans 0 0 4\r\ndark\r\n",
                "get alliance/plans\r\n",
            ],
        );
        assert_eq!(vader[0], DENIED);
        assert_eq!(vader[1], "VALUE alliance/plans 0 5\r\nr2-d2\r\nEND\r\n");
    }

    // The access log names each client's real address and the destination it dialed.
    let entries = |kind: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(&access_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|e: &serde_json::Value| e["entry_type"] == kind)
            .collect()
    };
    wait_for("two denials in the access log", || {
        entries("Denied").len() == 2
    });
    let denied = entries("Denied");
    for (family, entry) in denied.iter().enumerate() {
        let source = entry["source_address"].as_str().unwrap();
        let source: SocketAddr = source.parse().unwrap();
        assert_eq!(source.ip().to_string(), VADER[family], "{entry}");
        assert_eq!(
            entry["destination_address"],
            addr(CACHE[family], 11211),
            "{entry}"
        );
    }
    let allowed = entries("Request");
    for family in 0..2 {
        let luke = allowed.iter().any(|e| {
            e["source_address"]
                .as_str()
                .and_then(|s| s.parse::<SocketAddr>().ok())
                .is_some_and(|s| s.ip().to_string() == LUKE[family])
                && e["destination_address"] == addr(CACHE[family], 11211)
        });
        assert!(luke, "no request of luke over {}", CACHE[family]);
    }

    // Shutdown removes the rules; traffic flows directly again, unchecked.
    lab.stop_agent();
    assert_eq!(lab.table("node"), None);
    for family in 0..2 {
        let vader = lab.session(
            "c2",
            &addr(CACHE[family], 11211),
            &["set alliance/plans 0 0 4\r\ndark\r\n", "stats conns\r\n"],
        );
        assert_eq!(vader[0], "STORED\r\n");
        // memcached sees vader itself now.
        assert!(vader[1].contains(VADER[family]), "{}", vader[1]);
    }
}

/// The access log's entries so far.
fn access_log(lab: &Lab) -> Vec<serde_json::Value> {
    std::fs::read_to_string(lab.dir.join("access.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Starts a per-node agent with an access log, `policy` and `listeners` (YAML list items);
/// `Err` with why the test checks nothing when the kernel refuses the rules of `mode`.
fn start_per_node(lab: &mut Lab, mode: &str, policy: &str, listeners: &str) -> Result<(), String> {
    std::fs::write(lab.dir.join("policy.yaml"), policy).unwrap();
    let config = format!(
        "api: {{socket: api.sock}}\ndrainTimeout: 1\naccessLog: {{path: {}}}\nredirect: {{manage: true}}\n{}policies: [policy.yaml]\nlisteners:\n{listeners}",
        lab.dir.join("access.log").display(),
        endpoints()
    );
    match lab.start_agent("node", &config) {
        Ok(()) => Ok(()),
        Err(log) if mode == "tproxy" && log.contains("tproxy") && log.contains("nft") => {
            Err(format!("the kernel refuses TPROXY rules:\n{log}"))
        }
        Err(log) if log.contains("nft -f") && log.contains("Could not process rule") => {
            Err(format!("the kernel refuses NAT rules:\n{log}"))
        }
        Err(log) => panic!("the agent did not start:\n{log}"),
    }
}

/// luke's egress to cache on 11211 allows get and set under alliance/; cache's ingress from luke
/// allows get under alliance/ and empire/. So `get empire/...` is denied by luke's egress only,
/// `set alliance/...` by cache's ingress only, and `get alliance/...` allowed by both.
fn both_ends_policy() -> String {
    format!(
        "{HEAD}metadata: {{name: luke-egress}}\nspec:\n  endpointSelector: {{matchLabels: {{app: luke}}}}\n  egress:\n\
         \x20   - toEndpoints: [{{matchLabels: {{app: cache}}}}]\n\
         \x20     toPorts: [{{ports: [{{port: \"11211\"}}], rules: {{l7proto: memcache, l7: [{{command: get, keyPrefix: alliance/}}, {{command: set, keyPrefix: alliance/}}]}}}}]\n\
         ---\n\
         {HEAD}metadata: {{name: cache-ingress}}\nspec:\n  endpointSelector: {{matchLabels: {{app: cache}}}}\n  ingress:\n\
         \x20   - fromEndpoints: [{{matchLabels: {{app: luke}}}}]\n\
         \x20     toPorts: [{{ports: [{{port: \"11211\"}}], rules: {{l7proto: memcache, l7: [{{command: get, keyPrefix: alliance/}}, {{command: get, keyPrefix: empire/}}]}}}}]\n"
    )
}

/// A per-node agent in `mode` with an ingress and an egress listener: every request of luke to
/// cache needs luke's egress and cache's ingress policy to allow it, over IPv4 and IPv6; each
/// end that decided is logged under its own direction, and a denial is answered once.
fn per_node_checks_both_ends(name: &str, tag: &str, mode: &str) {
    let mut lab = match Lab::new(tag) {
        Ok(lab) => lab,
        Err(why) => {
            return skip(
                name,
                &format!("the kernel refuses network namespaces: {why}"),
            )
        }
    };
    lab.start_memcached();
    let listeners = format!(
        "  - {{name: in, listen: \"[::]:15011\", mode: {mode}, direction: ingress}}\n\
         \x20 - {{name: out, listen: \"[::]:15012\", mode: {mode}, direction: egress}}\n"
    );
    if let Err(why) = start_per_node(&mut lab, mode, &both_ends_policy(), &listeners) {
        return skip(name, &why);
    }
    let table = lab.table("node").unwrap();
    for rule in [
        "ip daddr 10.71.3.2 tcp dport 11211",
        "ip6 saddr fd71:1::2 tcp dport 11211",
    ] {
        assert!(table.contains(rule), "{rule} not in\n{table}");
    }

    for ip in CACHE {
        let luke = lab.session(
            "c1",
            &addr(ip, 11211),
            &[
                "get empire/plans\r\n",
                "set alliance/plans 0 0 5\r\nr2-d2\r\n",
                "get alliance/plans\r\n",
                "get alliance/plans\r\n",
            ],
        );
        // One denial each: a second one would stand in for the reply that follows.
        assert_eq!(luke, [DENIED, DENIED, "END\r\n", "END\r\n"], "over {ip}");
    }

    let summary = |entry: &serde_json::Value| {
        let fields = &entry["generic_l7"]["fields"];
        format!(
            "{} {} {} {} {} {}",
            entry["entry_type"].as_str().unwrap(),
            entry["endpoint"].as_str().unwrap(),
            if entry["is_ingress"] == true {
                "ingress"
            } else {
                "egress"
            },
            entry["policy_name"].as_str().unwrap(),
            fields["command"].as_str().unwrap_or_default(),
            fields["keys"].as_str().unwrap_or_default(),
        )
    };
    wait_for("fourteen entries in the access log", || {
        access_log(&lab).len() >= 14
    });
    let entries = access_log(&lab);
    assert_eq!(entries.len(), 14, "{entries:#?}");
    for (family, ip) in CACHE.iter().enumerate() {
        let of_family: Vec<String> = entries
            .iter()
            .filter(|e| e["destination_address"] == addr(ip, 11211))
            .inspect(|e| {
                let source: SocketAddr = e["source_address"].as_str().unwrap().parse().unwrap();
                assert_eq!(source.ip().to_string(), LUKE[family], "{e}");
            })
            .map(summary)
            .collect();
        let both = [
            "Request luke egress luke-egress get alliance/plans",
            "Request cache ingress cache-ingress get alliance/plans",
        ];
        let expected = [
            &["Denied luke egress  get empire/plans"][..],
            &[
                "Request luke egress luke-egress set alliance/plans",
                "Denied cache ingress  set alliance/plans",
            ],
            &both,
            &both,
        ]
        .concat();
        assert_eq!(of_family, expected, "over {ip}");
    }
}

#[test]
fn per_node_tproxy_checks_both_ends_of_a_flow() {
    per_node_checks_both_ends("per_node_tproxy_checks_both_ends_of_a_flow", "bt", "tproxy");
}

#[test]
fn per_node_redirect_checks_both_ends_of_a_flow() {
    per_node_checks_both_ends(
        "per_node_redirect_checks_both_ends_of_a_flow",
        "br",
        "redirect",
    );
}

#[test]
fn per_node_traffic_no_listener_can_parse_is_refused() {
    let name = "per_node_traffic_no_listener_can_parse_is_refused";
    let mut lab = match Lab::new("fc") {
        Ok(lab) => lab,
        Err(why) => {
            return skip(
                name,
                &format!("the kernel refuses network namespaces: {why}"),
            )
        }
    };
    lab.start_memcached();
    // cache's ingress must be parsed as r2d2, which neither listener parses.
    let policy = format!(
        "{HEAD}metadata: {{name: luke-egress}}\nspec:\n  endpointSelector: {{matchLabels: {{app: luke}}}}\n  egress:\n\
         \x20   - toEndpoints: [{{matchLabels: {{app: cache}}}}]\n\
         \x20     toPorts: [{{ports: [{{port: \"11211\"}}], rules: {{l7proto: memcache}}}}]\n\
         ---\n\
         {HEAD}metadata: {{name: cache-ingress}}\nspec:\n  endpointSelector: {{matchLabels: {{app: cache}}}}\n  ingress:\n\
         \x20   - toPorts: [{{ports: [{{port: \"11211\"}}], rules: {{l7proto: r2d2, l7: [{{cmd: READ}}]}}}}]\n"
    );
    let listeners = "  - {name: in, listen: \"[::]:15021\", mode: tproxy, direction: ingress, l7proto: memcache}\n\
                     \x20 - {name: out, listen: \"[::]:15022\", mode: tproxy, direction: egress, l7proto: memcache}\n";
    if let Err(why) = start_per_node(&mut lab, "tproxy", &policy, listeners) {
        return skip(name, &why);
    }
    let table = lab.table("node").unwrap();
    assert!(
        table.contains("ip daddr 10.71.3.2 tcp dport 11211 log prefix \"axoneme-refused: \" drop"),
        "{table}"
    );
    let list = lab.cli(&["-o", "json", "redirect", "list"]).unwrap();
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["redirects"][0]["endpoint"], "cache");
    assert!(list["redirects"][0].get("listener").is_none(), "{list}");

    for ip in CACHE {
        let memcached = addr(ip, 11211);
        // vader's traffic matches no rule but the refusal: it never reaches memcached.
        assert!(
            lab.in_host("c2", || connect(&memcached)).is_none(),
            "vader reached {memcached} unchecked:\n{table}"
        );
        // luke's egress steers it to `out`, which cannot parse what cache's ingress requires.
        let luke = lab.session("c1", &memcached, &["version\r\n"]);
        assert_eq!(luke, [""], "over {ip}");
    }
    wait_for("two refusals in the access log", || {
        access_log(&lab).len() >= 2
    });
    let entries = access_log(&lab);
    assert_eq!(entries.len(), 2, "{entries:#?}");
    for (entry, ip) in entries.iter().zip(CACHE) {
        assert_eq!(entry["entry_type"], "Denied", "{entry}");
        assert_eq!(entry["endpoint"], "cache", "{entry}");
        assert_eq!(entry["is_ingress"], true, "{entry}");
        assert_eq!(entry["listener"], "out", "{entry}");
        assert_eq!(entry["destination_address"], addr(ip, 11211), "{entry}");
        let status = entry["generic_l7"]["fields"]["status"].as_str().unwrap();
        assert!(status.contains("requires l7proto \"r2d2\""), "{entry}");
    }
}
