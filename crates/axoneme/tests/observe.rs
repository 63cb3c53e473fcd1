//! `axoneme observe` and the CLI's Cilium-like commands against a running `axoneme run` in front
//! of a real memcached: luke may set and get the fleet's keys, vader only get them, and a
//! stranger is refused at connect. Checked: the human line of each flow (names, identities,
//! protocol, verdict, L7 summary, UTC and local RFC 3339 times), every filter (each compared
//! with the same selection made here from the unfiltered entries), repeats of a filter taken
//! as alternatives, `--last` alone and with `--follow`, live filtering, errors for unknown
//! values, audited requests (an endpoint in audit mode) shown as AUDIT and filtered by
//! `--verdict AUDIT`, a compact access log (`accessLog.format: compact`) read as the same flows
//! as Cilium's, and `version`, `completion`, misspelt commands, `--no-headers`, `-o yaml`, `policy
//! get NAME`, `endpoint get`, `identity get` and the help. Needs `memcached` (scripts/test.sh
//! installs it).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use common::{free_port, start_memcached, temp_dir, Children};
use serde_json::Value;

const LUKE: &str = "127.0.0.21";
const VADER: &str = "127.0.0.22";
const STRANGER: &str = "127.0.0.99";

const POLICY: &str = r#"apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: fleet-cache}
spec:
  endpointSelector: {matchLabels: {app: cache}}
  ingress:
    - fromEndpoints: [{matchLabels: {app: luke}}]
      toPorts:
        - ports: [{port: "PORT"}]
          rules: {l7proto: memcache, l7: [{command: get, keyPrefix: alliance/}, {command: set, keyPrefix: alliance/}]}
    - fromEndpoints: [{matchLabels: {app: vader}}]
      toPorts:
        - ports: [{port: "PORT"}]
          rules: {l7proto: memcache, l7: [{command: get, keyPrefix: alliance/}]}
"#;

/// A running agent guarding a memcached of its own.
struct Agent {
    dir: PathBuf,
    proxy: SocketAddr,
    _children: Children,
}

impl Agent {
    fn start(name: &str) -> Agent {
        Agent::start_with(name, false)
    }

    /// An agent whose endpoint cache is in audit mode when `audit`.
    fn start_with(name: &str, audit: bool) -> Agent {
        Agent::start_configured(name, audit, "cilium")
    }

    /// An agent writing its access log in `format` (`accessLog.format`), its endpoint cache in
    /// audit mode when `audit`.
    fn start_configured(name: &str, audit: bool, format: &str) -> Agent {
        let mut children = Children(Vec::new());
        let memcached = start_memcached(&mut children);
        let dir = temp_dir(name);
        let proxy_port = free_port();
        std::fs::write(
            dir.join("policy.yaml"),
            POLICY.replace("PORT", &memcached.to_string()),
        )
        .unwrap();
        std::fs::write(
            dir.join("config.yaml"),
            format!(
                r#"accessLog: {{path: access.log, format: {format}}}
api: {{socket: api.sock}}
monitor: {{recentBytes: 65536}}
endpoints:
  - {{name: cache, ips: ["127.0.0.1"], labels: {{app: cache}}, policyAuditMode: {audit}}}
  - {{name: luke, ips: ["{LUKE}"], labels: {{app: luke}}}}
  - {{name: vader, ips: ["{VADER}"], labels: {{app: vader}}}}
policies: [policy.yaml]
listeners:
  - {{name: cache, listen: "127.0.0.1:{proxy_port}", upstream: "127.0.0.1:{memcached}",
      endpoint: cache, direction: ingress, l7proto: memcache}}
"#
            ),
        )
        .unwrap();
        children.0.push(common::spawn_agent(&dir));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", memcached)).is_err()
            || !dir.join("api.sock").exists()
            || !common::agent_cli(&dir, &["status"]).status.success()
        {
            assert!(
                Instant::now() < deadline,
                "the agent or memcached did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Agent {
            dir,
            proxy: SocketAddr::from(([127, 0, 0, 1], proxy_port)),
            _children: children,
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        common::agent_cli(&self.dir, args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "axoneme {args:?} failed: {stderr}");
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs a command that must fail; its standard error.
    fn fails(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(!output.status.success(), "axoneme {args:?} should fail");
        String::from_utf8(output.stderr).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// The entries `observe --last 1000 -o json` and `filters` give.
    fn replay(&self, filters: &[&str]) -> Vec<Value> {
        let mut args = vec!["observe", "--last", "1000", "-o", "json"];
        args.extend(filters);
        self.ok(&args)
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// The security identity of the endpoint `name`.
    fn identity(&self, name: &str) -> u64 {
        self.json(&["endpoint", "get", name])["identity"]
            .as_u64()
            .unwrap()
    }

    /// `axoneme observe ARGS` running, its standard output's lines and its standard error's.
    fn observe(&self, args: &[&str]) -> (Child, Receiver<String>, Receiver<String>) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_axoneme"))
            .arg("--api")
            .arg(self.dir.join("api.sock"))
            .arg("observe")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = |stream: Box<dyn Read + Send>| {
            let (tx, rx) = channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().unwrap()));
        let stderr = lines(Box::new(child.stderr.take().unwrap()));
        (child, stdout, stderr)
    }
}

/// Sends one memcached text command from `source` through the proxy; the first reply line
/// (empty when the connection was closed).
async fn memcached(proxy: SocketAddr, source: &str, request: &str) -> String {
    let mut stream = common::connect_from(source, proxy).await;
    common::request(&mut stream, request).await
}

/// Luke sets and gets a key, vader gets it and is denied a set, and a stranger is refused at
/// connect.
async fn traffic(agent: &Agent) {
    let proxy = agent.proxy;
    let set = "set alliance/fleet/a 0 0 1\r\nx\r\n";
    assert_eq!(memcached(proxy, LUKE, set).await, "STORED\r\n");
    let got = memcached(proxy, LUKE, "get alliance/fleet/a\r\n").await;
    assert_eq!(got, "VALUE alliance/fleet/a 0 1\r\n");
    let got = memcached(proxy, VADER, "get alliance/fleet/a\r\n").await;
    assert_eq!(got, "VALUE alliance/fleet/a 0 1\r\n");
    let denied = memcached(proxy, VADER, "set alliance/fleet/b 0 0 1\r\ny\r\n").await;
    assert_eq!(denied, "CLIENT_ERROR access denied\r\n");
    assert_eq!(
        memcached(proxy, STRANGER, "get alliance/fleet/a\r\n").await,
        ""
    );
}

/// Waits until the agent's ring holds an entry that `wanted` takes; all entries then.
async fn entries_once(agent: &Agent, wanted: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let all = agent.replay(&[]);
        if all.iter().any(&wanted) {
            return all;
        }
        assert!(Instant::now() < deadline, "no such entry among {all:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn command(entry: &Value) -> &str {
    entry["generic_l7"]["fields"]["command"]
        .as_str()
        .unwrap_or_default()
}

fn source_ip(entry: &Value) -> &str {
    let address = entry["source_address"].as_str().unwrap();
    address.rsplit_once(':').unwrap().0
}

fn has_label(entry: &Value, side: &str, label: &str) -> bool {
    entry[format!("{side}_labels")]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l == label)
}

/// Receives the next line within 5 s.
fn next_line(lines: &Receiver<String>, what: &str) -> String {
    lines
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("no line: {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_lines_filters_and_replay() {
    let agent = Agent::start("observe");
    traffic(&agent).await;
    let all = entries_once(&agent, |e| source_ip(e) == STRANGER).await;
    let (luke, vader, cache) = (
        agent.identity("luke"),
        agent.identity("vader"),
        agent.identity("cache"),
    );

    // Each filter gives what the same selection made here from every entry gives.
    let expect = |filters: &[&str], wanted: &dyn Fn(&Value) -> bool| {
        let got = agent.replay(filters);
        let expected: Vec<&Value> = all.iter().filter(|e| wanted(e)).collect();
        assert!(
            !expected.is_empty(),
            "{filters:?} is tried on entries it takes"
        );
        assert!(expected.len() < all.len(), "{filters:?} leaves some out");
        assert_eq!(got.iter().collect::<Vec<_>>(), expected, "{filters:?}");
    };
    let (luke_id, vader_id, cache_id) = (luke.to_string(), vader.to_string(), cache.to_string());
    expect(&["--from-label", "app=vader"], &|e| {
        has_label(e, "source", "app=vader")
    });
    expect(&["--from-label", "app"], &|e| {
        [LUKE, VADER].contains(&source_ip(e))
    });
    expect(
        &["--from-label", "app=vader", "--from-label", "app=luke"],
        &|e| [LUKE, VADER].contains(&source_ip(e)),
    );
    expect(
        &["--to-label", "app=cache", "--from-label", "app=luke"],
        &|e| source_ip(e) == LUKE && has_label(e, "destination", "app=cache"),
    );
    expect(&["--from-identity", &luke_id], &|e| {
        e["source_security_id"] == luke
    });
    expect(
        &["--from-identity", &luke_id, "--from-identity", &vader_id],
        &|e| e["source_security_id"] == luke || e["source_security_id"] == vader,
    );
    expect(&["--to-identity", &cache_id, "--type", "request"], &|e| {
        e["destination_security_id"] == cache && e["entry_type"] == "Request"
    });
    expect(&["--from-endpoint", "vader"], &|e| source_ip(e) == VADER);
    expect(&["--to-endpoint", "cache", "--verdict", "DENIED"], &|e| {
        e["entry_type"] == "Denied"
    });
    expect(&["--verdict", "forwarded"], &|e| {
        e["entry_type"] != "Denied"
    });
    expect(&["--protocol", "memcache", "--type", "denied"], &|e| {
        e["generic_l7"]["proto"] == "memcache" && e["entry_type"] == "Denied"
    });
    expect(&["--type", "denied"], &|e| e["entry_type"] == "Denied");
    // memcached's replies are not logged: responses add nothing to the denials.
    expect(&["--type", "response", "--type", "denied"], &|e| {
        e["entry_type"] == "Denied"
    });
    expect(&["--l7", "command=set"], &|e| command(e) == "set");
    expect(&["--l7", "command=set", "--l7", "command=get"], &|e| {
        ["set", "get"].contains(&command(e))
    });
    expect(&["--l7", "command=get", "--from-endpoint", "vader"], &|e| {
        command(e) == "get" && source_ip(e) == VADER
    });
    expect(
        &["--endpoint", "cache", "--l7", "keys=alliance/fleet/b"],
        &|e| e["generic_l7"]["fields"]["keys"] == "alliance/fleet/b",
    );
    assert!(agent.replay(&["--to-endpoint", "vader"]).is_empty());
    assert!(agent.replay(&["--from-identity", "99999"]).is_empty());

    // The ring is bounded by monitor.recentBytes, and its size is a metric.
    let metrics = agent.json(&["metrics", "list"]);
    let ring = metrics
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"] == "axoneme_monitor_recent_bytes")
        .expect("the ring's metric");
    let ring: usize = ring["value"].as_str().unwrap().parse().unwrap();
    let lines_bytes: usize = agent.ok(&["observe", "--last", "1000", "-o", "json"]).len();
    assert_eq!(ring, lines_bytes, "every kept line, and nothing else");
    assert!(ring <= 65536);

    // --last N alone: the newest N entries, then the command ends.
    assert_eq!(agent.replay(&[]), all);
    let last_two = agent.ok(&["observe", "--last", "2", "-o", "json"]);
    let last_two: Vec<Value> = last_two
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(last_two, all[all.len() - 2..]);

    // One line per flow, for people: times to the millisecond of the entry's own `time`.
    let lines = agent.ok(&["observe", "--last", "1000", "--utc"]);
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines.len(), all.len(), "{lines:#?}");
    for (line, entry) in lines.iter().zip(&all) {
        let time = entry["time"].as_str().unwrap();
        assert!(
            line.starts_with(&format!("{}Z: ", &time[..23])),
            "{line} for {time}"
        );
    }
    let human = |line: &str| line.split_once(": ").unwrap().1.to_owned();
    let luke_set = all
        .iter()
        .position(|e| command(e) == "set" && source_ip(e) == LUKE);
    assert_eq!(
        human(lines[luke_set.unwrap()]),
        format!(
            "default/luke ({luke}) -> default/cache ({cache}) memcache-request FORWARDED \
             (set alliance/fleet/a)"
        )
    );
    let vader_denied = all
        .iter()
        .position(|e| e["entry_type"] == "Denied" && source_ip(e) == VADER);
    assert_eq!(
        human(lines[vader_denied.unwrap()]),
        format!(
            "default/vader ({vader}) -> default/cache ({cache}) memcache-denied DENIED \
             (set alliance/fleet/b)"
        )
    );
    let refused = all.iter().position(|e| source_ip(e) == STRANGER).unwrap();
    let refused_line = human(lines[refused]);
    let stranger = all[refused]["source_address"].as_str().unwrap();
    let reason = all[refused]["generic_l7"]["fields"]["status"]
        .as_str()
        .unwrap();
    assert_eq!(
        refused_line,
        format!(
            "{stranger} ({}) -> default/cache ({cache}) memcache-denied DENIED (status={reason})",
            all[refused]["source_security_id"]
        )
    );

    // Local time carries the zone's offset.
    let output = Command::new(env!("CARGO_BIN_EXE_axoneme"))
        .env("TZ", "XST-05:30")
        .arg("--api")
        .arg(agent.dir.join("api.sock"))
        .args(["observe", "--last", "1"])
        .output()
        .unwrap();
    let local = String::from_utf8(output.stdout).unwrap();
    let utc_time = all.last().unwrap()["time"].as_str().unwrap();
    let minutes = |hh_mm: &str| -> i64 {
        hh_mm[..2].parse::<i64>().unwrap() * 60 + hh_mm[3..5].parse::<i64>().unwrap()
    };
    assert_eq!(&local[23..30], "+05:30:", "{local}");
    assert_eq!(
        minutes(&local[11..16]),
        (minutes(&utc_time[11..16]) + 330) % (24 * 60),
        "{local} for {utc_time}"
    );
    assert_eq!(&local[16..23], &utc_time[16..23]);

    // --last with --follow: the replay, the banner, then new flows the filter takes, live.
    let (mut follow, lines, banner) = agent.observe(&[
        "--last",
        "1",
        "--follow",
        "-o",
        "json",
        "--l7",
        "command=get",
    ]);
    let replayed: Value = serde_json::from_str(&next_line(&lines, "the replay")).unwrap();
    let last_get = all.iter().rev().find(|e| command(e) == "get").unwrap();
    assert_eq!(&replayed, last_get);
    assert!(next_line(&banner, "the banner").starts_with("Listening for flows"));
    // Live human lines, filtered in the agent: only vader's denials.
    let (mut denials, human_lines, _) =
        agent.observe(&["--from-label", "app=vader", "--verdict", "DENIED", "--utc"]);
    std::thread::sleep(Duration::from_millis(300));
    let set = "set alliance/fleet/c 0 0 1\r\nz\r\n";
    assert_eq!(memcached(agent.proxy, LUKE, set).await, "STORED\r\n");
    assert_eq!(
        memcached(agent.proxy, VADER, set).await,
        "CLIENT_ERROR access denied\r\n"
    );
    let got = memcached(agent.proxy, VADER, "get alliance/fleet/c\r\n").await;
    assert_eq!(got, "VALUE alliance/fleet/c 0 1\r\n");
    let live: Value = serde_json::from_str(&next_line(&lines, "the live get")).unwrap();
    assert_eq!(command(&live), "get");
    assert_eq!(source_ip(&live), VADER);
    assert_eq!(live["generic_l7"]["fields"]["keys"], "alliance/fleet/c");
    let denial = next_line(&human_lines, "vader's live denial");
    assert_eq!(
        human(&denial),
        format!(
            "default/vader ({vader}) -> default/cache ({cache}) memcache-denied DENIED \
             (set alliance/fleet/c)"
        )
    );
    assert!(
        human_lines
            .recv_timeout(Duration::from_millis(300))
            .is_err(),
        "luke's set and vader's get are not denials of vader's"
    );
    assert!(
        lines.recv_timeout(Duration::from_millis(100)).is_err(),
        "one get only"
    );
    for child in [&mut follow, &mut denials] {
        let _ = child.kill();
        let _ = child.wait();
    }

    // Unknown values are errors that list the valid ones.
    let error = agent.fails(&["observe", "--protocol", "http"]);
    assert!(
        error.contains("protocol: \"http\" is not one of cassandra, kafka, memcache, r2d2"),
        "{error}"
    );
    let error = agent.fails(&["observe", "--verdict", "DROPPED"]);
    assert!(
        error.contains("FORWARDED") && error.contains("DENIED") && error.contains("AUDIT"),
        "{error}"
    );
    let error = agent.fails(&["observe", "--type", "reply"]);
    assert!(
        error.contains("request") && error.contains("response"),
        "{error}"
    );
    let error = agent.fails(&["observe", "--from-endpoint", "yoda"]);
    assert!(
        error.contains("\"yoda\" is not a known endpoint (known: cache, luke, vader)"),
        "{error}"
    );
    let error = agent.fails(&["observe", "--l7", "command"]);
    assert!(error.contains("expected field=value"), "{error}");
    let error = agent.fails(&["observe", "--from-identity", "luke"]);
    assert!(error.contains("invalid value 'luke'"), "{error}");

    // -o yaml: one document per entry.
    let yaml = agent.ok(&["observe", "--last", "2", "-o", "yaml"]);
    let documents: Vec<Value> = yaml
        .split("---\n")
        .filter(|d| !d.is_empty())
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect();
    let now = agent.replay(&[]);
    assert_eq!(documents, now[now.len() - 2..]);

    // `monitor` is still the same command.
    let monitor = agent.ok(&["monitor", "--last", "1", "-o", "json"]);
    let monitor: Value = serde_json::from_str(monitor.trim()).unwrap();
    assert_eq!(monitor["generic_l7"]["fields"]["keys"], "alliance/fleet/c");
}

/// `observe --input-file` over the agent's own access log: each filter takes from the file
/// what the agent's ring gives for it, and lines name the guarded endpoint from the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_reads_an_access_log_file_as_the_agent_filters_its_ring() {
    let agent = Agent::start("observe-file");
    traffic(&agent).await;
    let all = entries_once(&agent, |e| source_ip(e) == STRANGER).await;
    let log = agent.dir.join("access.log");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count()
        < all.len()
    {
        assert!(Instant::now() < deadline, "the access log lacks entries");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log_text = log.to_str().unwrap();
    let from_file = |filters: &[&str]| observed_in_file(&agent, &log, filters);
    let vader = agent.identity("vader").to_string();
    let filter_sets: [&[&str]; 7] = [
        &[],
        &["--from-label", "app=vader"],
        &["--from-identity", &vader, "--type", "request"],
        &["--verdict", "DENIED"],
        &["--protocol", "memcache", "--l7", "command=get"],
        &["--endpoint", "cache", "--l7", "keys=alliance/fleet/b"],
        &["--to-endpoint", "cache", "--verdict", "forwarded"],
    ];
    for filters in filter_sets {
        assert_eq!(from_file(filters), agent.replay(filters), "{filters:?}");
    }
    assert_eq!(from_file(&["--last", "2"]), all[all.len() - 2..]);
    assert!(from_file(&["--from-identity", "99999"]).is_empty());

    // For people: the guarded endpoint is named from the entry and its labels' namespace; the
    // other side, with no agent to name it, by its address.
    let lines = agent.ok(&["observe", "--input-file", log_text, "--utc"]);
    let denied = all
        .iter()
        .position(|e| e["entry_type"] == "Denied" && source_ip(e) == VADER)
        .unwrap();
    let line = lines.lines().nth(denied).unwrap();
    let cache = agent.identity("cache");
    assert!(
        line.ends_with(&format!(
            ": {} ({vader}) -> default/cache ({cache}) memcache-denied DENIED \
             (set alliance/fleet/b)",
            all[denied]["source_address"].as_str().unwrap()
        )),
        "{line}"
    );

    // Standard input too; a bad line is an error naming where it is; unknown values and
    // --follow are refused.
    let mut child = Command::new(env!("CARGO_BIN_EXE_axoneme"))
        .args([
            "observe",
            "--input-file",
            "-",
            "-o",
            "json",
            "--type",
            "denied",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        std::fs::read(&log).unwrap().as_slice(),
    )
    .unwrap();
    let piped = child.wait_with_output().unwrap();
    assert!(piped.status.success());
    let piped: Vec<Value> = String::from_utf8(piped.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(piped, agent.replay(&["--type", "denied"]));
    let bad = agent.dir.join("bad.log");
    std::fs::write(&bad, format!("{}\nnot json\n", all[0])).unwrap();
    let error = agent.fails(&["observe", "--input-file", bad.to_str().unwrap()]);
    assert!(
        error.contains("bad.log:2: not an access-log entry"),
        "{error}"
    );
    let error = agent.fails(&["observe", "--input-file", log_text, "--protocol", "nfs"]);
    assert!(error.contains("\"nfs\" is not one of"), "{error}");
    let error = agent.fails(&["observe", "--input-file", log_text, "--follow"]);
    assert!(error.contains("--follow"), "{error}");
}

/// The lines of the agent's access-log file once it has `count` of them (within 5 s).
/// The flows `observe --input-file LOG -o json` with `filters` gives, run by `agent`'s CLI.
fn observed_in_file(agent: &Agent, log: &std::path::Path, filters: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "observe",
        "--input-file",
        log.to_str().unwrap(),
        "-o",
        "json",
    ];
    args.extend(filters);
    agent
        .ok(&args)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

async fn logged_lines(agent: &Agent, count: usize) -> Vec<String> {
    let log = agent.dir.join("access.log");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= count {
            return text.lines().map(str::to_owned).collect();
        }
        assert!(Instant::now() < deadline, "the access log lacks entries");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a flow says but when it was and the ports its connection happened to get (its own and
/// its memcached's): compared between two agents given the same traffic.
fn flow_facts(entry: &Value) -> Value {
    let ip_and_port = |key: &str| {
        let address = entry[key].as_str().unwrap();
        address.rsplit_once(':').unwrap()
    };
    // A refusal's status names the memcached's port.
    let memcached_port = ip_and_port("destination_address").1;
    let l7 = entry["generic_l7"]
        .to_string()
        .replace(memcached_port, "PORT");
    serde_json::json!([
        entry["entry_type"],
        entry["is_ingress"],
        entry["policy_name"],
        entry.get("verdict"),
        entry.get("reason"),
        entry["source_security_id"],
        entry["destination_security_id"],
        ip_and_port("source_address").0,
        ip_and_port("destination_address").0,
        entry["listener"],
        entry["endpoint"],
        l7,
    ])
}

/// `accessLog.format: compact` against a real memcached: one JSON object per line with the
/// compact keys only and no labels; `observe --input-file` (and the agent's replay) give the
/// same flows as from an agent writing Cilium's form given the same traffic, filters included,
/// and the lines for people differ in nothing but times and ports; a label filter on a compact
/// file is refused with what to use instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compact_access_log_reads_as_the_same_flows_as_a_cilium_one() {
    let cilium = Agent::start_configured("compact-log-cilium", false, "cilium");
    let compact = Agent::start_configured("compact-log-compact", false, "compact");
    for agent in [&cilium, &compact] {
        traffic(agent).await;
    }
    let all = entries_once(&cilium, |e| source_ip(e) == STRANGER).await;
    entries_once(&compact, |e| source_ip(e) == STRANGER).await;
    let cilium_lines = logged_lines(&cilium, all.len()).await;
    let compact_lines = logged_lines(&compact, all.len()).await;
    assert_eq!(compact_lines.len(), cilium_lines.len());

    // The file: one compact object per line, its identities the agent's.
    let keys = [
        "ts", "in", "t", "p", "v", "rs", "si", "di", "sa", "da", "l", "e", "pr", "f", "tr",
    ];
    let cache = compact.identity("cache");
    for (line, cilium_line) in compact_lines.iter().zip(&cilium_lines) {
        let entry: Value = serde_json::from_str(line).unwrap();
        for key in entry.as_object().unwrap().keys() {
            assert!(keys.contains(&key.as_str()), "{key} in {line}");
        }
        assert!(
            ["q", "r", "d"].contains(&entry["t"].as_str().unwrap()),
            "{line}"
        );
        assert_eq!(entry["di"], cache, "{line}");
        assert_eq!(entry["e"], "cache");
        assert!(line.len() < cilium_line.len(), "{line} vs {cilium_line}");
    }
    let luke = compact.identity("luke");
    let from_luke = compact_lines
        .iter()
        .filter(|line| line.contains(&format!(r#""sa":"{LUKE}:"#)))
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .collect::<Vec<_>>();
    assert!(!from_luke.is_empty());
    assert!(from_luke.iter().all(|entry| entry["si"] == luke));

    let from_file = |agent: &Agent, filters: &[&str]| {
        observed_in_file(agent, &agent.dir.join("access.log"), filters)
    };
    let facts = |entries: Vec<Value>| entries.iter().map(flow_facts).collect::<Vec<_>>();
    let vader = compact.identity("vader").to_string();
    assert_eq!(vader, cilium.identity("vader").to_string());
    let filter_sets: [&[&str]; 6] = [
        &[],
        &["--from-identity", &vader, "--type", "request"],
        &["--verdict", "DENIED"],
        &["--protocol", "memcache", "--l7", "command=get"],
        &["--to-endpoint", "cache", "--verdict", "forwarded"],
        &["--last", "2"],
    ];
    for filters in filter_sets {
        let expected = facts(from_file(&cilium, filters));
        assert!(!expected.is_empty(), "{filters:?}");
        assert_eq!(facts(from_file(&compact, filters)), expected, "{filters:?}");
        if !filters.contains(&"--last") {
            assert_eq!(
                from_file(&compact, filters),
                compact.replay(filters),
                "{filters:?}"
            );
        }
    }

    // For people: the same lines but for times and ports.
    let for_people = |agent: &Agent| -> Vec<String> {
        let log = agent.dir.join("access.log");
        agent
            .ok(&["observe", "--input-file", log.to_str().unwrap(), "--utc"])
            .lines()
            .map(|line| {
                let (_, flow) = line.split_once("Z: ").unwrap();
                flow.split(' ')
                    .map(|word| match word.rsplit_once(':') {
                        Some((ip, port)) if port.parse::<u16>().is_ok() => ip.to_owned(),
                        _ if word.trim_end_matches(')').parse::<u16>().is_ok() => "PORT".into(),
                        _ => word.to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    assert_eq!(for_people(&compact), for_people(&cilium));

    let log = compact.dir.join("access.log");
    let error = compact.fails(&[
        "observe",
        "--input-file",
        log.to_str().unwrap(),
        "--from-label",
        "app=vader",
    ]);
    assert!(
        error.contains("access.log:1: a compact access-log entry")
            && error.contains("--from-identity"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audited_requests_show_as_audit_and_filter_apart() {
    let agent = Agent::start_with("observe-audit", true);
    let (vader, cache) = (agent.identity("vader"), agent.identity("cache"));
    let (mut watching, live, _) = agent.observe(&["--verdict", "audit", "--utc"]);
    std::thread::sleep(Duration::from_millis(300));
    // Vader's set would be denied: audit mode lets it through; luke's set and vader's get are
    // allowed.
    let set = "set alliance/fleet/b 0 0 1\r\ny\r\n";
    assert_eq!(memcached(agent.proxy, VADER, set).await, "STORED\r\n");
    let set = "set alliance/fleet/a 0 0 1\r\nx\r\n";
    assert_eq!(memcached(agent.proxy, LUKE, set).await, "STORED\r\n");
    let got = memcached(agent.proxy, VADER, "get alliance/fleet/b\r\n").await;
    assert_eq!(got, "VALUE alliance/fleet/b 0 1\r\n");
    let all = entries_once(&agent, |e| command(e) == "get").await;
    let audited: Vec<&Value> = all.iter().filter(|e| e["verdict"] == "Audit").collect();
    assert_eq!(audited.len(), 1, "{all:#?}");
    assert_eq!(
        audited[0]["generic_l7"]["fields"]["keys"],
        "alliance/fleet/b"
    );
    assert_eq!(source_ip(audited[0]), VADER);

    // Live, filtered in the agent: only the audited set, as AUDIT.
    let line = next_line(&live, "the audited set, live");
    assert_eq!(
        line.split_once(": ").unwrap().1,
        format!(
            "default/vader ({vader}) -> default/cache ({cache}) memcache-request AUDIT \
             (set alliance/fleet/b)"
        )
    );
    assert!(
        live.recv_timeout(Duration::from_millis(300)).is_err(),
        "luke's set and vader's get are not audited"
    );
    let _ = watching.kill();
    let _ = watching.wait();

    // Replayed: AUDIT takes the audited entry, FORWARDED the others, both any case.
    assert_eq!(agent.replay(&["--verdict", "AUDIT"]), [audited[0].clone()]);
    let forwarded: Vec<Value> = all
        .iter()
        .filter(|e| e["verdict"] != "Audit")
        .cloned()
        .collect();
    assert_eq!(forwarded.len(), 2, "{all:#?}");
    assert_eq!(agent.replay(&["--verdict", "Forwarded"]), forwarded);
    assert_eq!(
        agent.replay(&["--verdict", "audit", "--verdict", "forwarded"]),
        all
    );
    assert!(agent.replay(&["--verdict", "denied"]).is_empty());
    let lines = agent.ok(&["observe", "--last", "1000", "--utc"]);
    let marked: Vec<&str> = lines.lines().filter(|l| l.contains(" AUDIT ")).collect();
    assert_eq!(marked.len(), 1, "{lines}");
    assert!(
        marked[0].ends_with("AUDIT (set alliance/fleet/b)"),
        "{lines}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cilium_like_commands() {
    let agent = Agent::start("observe-cli");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        agent.json(&["version"]),
        serde_json::json!({"client": version, "agent": version})
    );
    assert_eq!(
        agent.ok(&["version", "--client"]),
        format!("client: {version}\n")
    );
    assert_eq!(
        agent.ok(&["version"]),
        format!("client: {version}\nagent: {version}\n")
    );
    // status opens with its verdict (its value aligned with the lines after it); the JSON stays
    // the API's.
    let status = agent.ok(&["status"]);
    let verdict = status.lines().next().and_then(|line| line.split_once(':'));
    assert_eq!(
        verdict.map(|(key, value)| (key, value.trim())),
        Some(("Status", "OK")),
        "{status}"
    );
    assert!(agent.json(&["status"]).get("counters").is_some());
    let output = Command::new(env!("CARGO_BIN_EXE_axoneme"))
        .args(["--api", "/nonexistent/api.sock", "version"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8(output.stderr).unwrap();
    assert!(
        error.contains(&format!(
            "client version {version}; the agent's version is unknown"
        )) && error
            .contains("no agent is listening at /nonexistent/api.sock: the socket does not exist"),
        "{error}"
    );

    for (shell, marker) in [
        ("bash", "_axoneme()"),
        ("zsh", "#compdef axoneme"),
        ("fish", "complete -c axoneme"),
    ] {
        let script = agent.ok(&["completion", shell]);
        assert!(script.contains(marker), "{shell}");
        assert!(
            script.contains("observe") && script.contains("from-label"),
            "{shell}"
        );
    }
    let error = agent.fails(&["obsreve"]);
    assert!(
        error.contains("a similar subcommand exists: 'observe'"),
        "{error}"
    );
    let error = agent.fails(&["policy", "imprt"]);
    assert!(
        error.contains("a similar subcommand exists: 'import'"),
        "{error}"
    );

    let with = agent.ok(&["endpoint", "list"]);
    let without = agent.ok(&["endpoint", "list", "--no-headers"]);
    assert!(with.starts_with("ENDPOINT "), "{with}");
    assert_eq!(
        with.lines().skip(1).collect::<Vec<_>>(),
        without.lines().collect::<Vec<_>>()
    );
    assert_eq!(without.lines().count(), 3);
    let identities = agent.ok(&["identity", "list", "--no-headers"]);
    assert!(
        !identities.contains("LABELS") && identities.contains("app=luke"),
        "{identities}"
    );

    let yaml: Value =
        serde_yaml::from_str(&agent.ok(&["endpoint", "get", "luke", "-o", "yaml"])).unwrap();
    assert_eq!(yaml, agent.json(&["endpoint", "get", "luke"]));
    assert_eq!(yaml["ips"], serde_json::json!([LUKE]));
    let table = agent.ok(&["endpoint", "get", "vader"]);
    assert!(table.lines().any(|l| l == "name: vader"), "{table}");
    let error = agent.fails(&["endpoint", "get", "yoda"]);
    assert!(error.contains("yoda"), "{error}");

    let luke = yaml["identity"].as_u64().unwrap();
    let identity = agent.json(&["identity", "get", &luke.to_string()]);
    assert_eq!(identity["id"], luke);
    assert_eq!(identity["endpoints"], serde_json::json!(["luke"]));
    assert!(identity["labels"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l == "app=luke"));
    let listed = agent.json(&["identity", "list"]);
    assert!(listed.as_array().unwrap().contains(&identity));
    let error = agent.fails(&["identity", "get", "99999"]);
    assert!(error.contains("no identity 99999 is known"), "{error}");

    let policy = agent.json(&["policy", "get", "fleet-cache"]);
    let revision = agent.json(&["status"])["policy_revision"].clone();
    assert_eq!(policy["revision"], revision);
    let shown = agent.ok(&["policy", "get", "fleet-cache"]);
    assert!(
        shown.starts_with(&format!("# revision: {revision}\n# source: ")),
        "{shown}"
    );
    let document: Value = serde_yaml::from_str(&shown).unwrap();
    assert_eq!(document, policy["document"]);
    assert_eq!(document["metadata"]["name"], "fleet-cache");
    let as_yaml: Value =
        serde_yaml::from_str(&agent.ok(&["policy", "get", "fleet-cache", "-o", "yaml"])).unwrap();
    assert_eq!(as_yaml, policy);
    let status: Value = serde_yaml::from_str(&agent.ok(&["status", "-o", "yaml"])).unwrap();
    assert_eq!(status["version"], version);

    let help = agent.ok(&["--help"]);
    let global = help
        .split_once("Global options:")
        .expect("a heading of its own")
        .1;
    assert!(
        global.contains("--api <API>") && global.contains("--no-headers"),
        "{help}"
    );
    for command in [
        &["endpoint", "--help"][..],
        &["observe", "--help"],
        &["policy", "get", "--help"],
    ] {
        let help = agent.ok(command);
        let listed = |option: &str| help.lines().any(|l| l.trim_start().starts_with(option));
        assert!(
            !listed("--api") && !listed("--no-headers"),
            "{command:?}: {help}"
        );
    }
    let observe_help = agent.ok(&["observe", "--help"]);
    assert!(observe_help.contains("Examples:\n  # Every flow, live\n  axoneme observe\n"));
    assert!(observe_help.contains("see `axoneme --help`"));
    // Global options still work after a subcommand.
    let after = agent.ok(&["endpoint", "list", "--no-headers", "-o", "json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&after)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        3
    );
}
